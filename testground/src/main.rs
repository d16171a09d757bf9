//! `jetway-testground`: start the test ground for a command, or until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use jetway_testground::{Ground, GroundOptions, Tools};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(version, about = "Real nats-server and Kubernetes control plane on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Do not start kube-controller-manager.
    #[arg(long, global = true, env = "JETWAY_TESTGROUND_NO_CONTROLLER_MANAGER")]
    no_controller_manager: bool,
    /// Keep logs and data after stopping (their directory is printed).
    #[arg(long, global = true, env = "JETWAY_TESTGROUND_KEEP")]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the servers, write their environment to a file, and run until Ctrl-C.
    Up {
        /// Where to write `export NAME=value` lines for a shell to source.
        #[arg(long, env = "JETWAY_TESTGROUND_ENV_FILE")]
        env_file: Option<PathBuf>,
    },
    /// Start the servers, run a command with their environment, stop them, and exit
    /// with the command's status.
    Exec {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        // kube logs every refused poll of a starting apiserver as an error.
        .with_env_filter("info,kube_client=off")
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("jetway-testground: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = GroundOptions { controller_manager: !cli.no_controller_manager, keep_dir: cli.keep };
    let tools = Tools::locate()?;
    let started = std::time::Instant::now();
    let ground = Ground::start(tools, &options).await?;
    tracing::info!(
        elapsed = ?started.elapsed(),
        nats = %ground.nats.url(),
        kube = %ground.kube.api_url(),
        dir = %ground.dir().display(),
        "test ground is up"
    );
    let code = match cli.command {
        Command::Up { env_file } => {
            if let Some(path) = env_file {
                let lines: String =
                    ground.env().iter().map(|(k, v)| format!("export {k}={}\n", shell_quote(v))).collect();
                std::fs::write(&path, lines).with_context(|| format!("writing {}", path.display()))?;
            }
            let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            ExitCode::SUCCESS
        }
        Command::Exec { command } => {
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .envs(ground.env())
                .spawn()
                .with_context(|| format!("running {}", command[0]))?;
            let status = wait_forwarding_signals(&mut child).await?;
            match status.code() {
                Some(0) => ExitCode::SUCCESS,
                Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                None => ExitCode::FAILURE,
            }
        }
    };
    if cli.keep {
        tracing::info!(dir = %ground.dir().display(), "stopping the test ground; logs and data are kept");
    } else {
        tracing::info!("stopping the test ground");
    }
    drop(ground);
    Ok(code)
}

/// Waits for the command, passing SIGTERM on to it. A Ctrl-C reaches it from the
/// terminal by itself; either way the servers are stopped only after it has exited.
async fn wait_forwarding_signals(child: &mut tokio::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
