#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use jetway::cli::{Cli, Command, RunArgs};
use jetway::{crds, run, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init(&cli.log) {
        eprintln!("jetway: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run_operator(*args).await,
        Command::Crds => crds::print(&mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "jetway stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let config = args.into_config().await.context("finding the Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    Ok(run::run(config, shutdown::on_signals()).await?)
}
