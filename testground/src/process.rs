//! Server processes that never outlive the program that started them.
//!
//! Every server is registered with a [`Lifeline`]: a small shell process that reads
//! pids on a pipe from us. When this process ends for any reason, `kill -9` included,
//! the pipe closes and the lifeline kills whatever is still registered and removes the
//! ground's directory. A clean shutdown stops the servers first, so it kills nothing.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LIFELINE: &str = r#"
pids=" "
while read -r op pid; do
  case "$op" in
    +) pids="$pids$pid " ;;
    -) pids=$(printf '%s' "$pids" | sed "s/ $pid / /") ;;
  esac
done
for pid in $pids; do kill -9 "$pid" 2>/dev/null; done
if [ -n "$1" ]; then rm -rf "$1"; fi
"#;

/// The watchdog that cleans up after the servers when we cannot.
pub struct Lifeline {
    pipe: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

impl Lifeline {
    /// Starts the watchdog; `remove_on_exit` is deleted after the servers are gone.
    pub fn start(remove_on_exit: Option<&Path>) -> anyhow::Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(LIFELINE)
            .arg("lifeline")
            .arg(remove_on_exit.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own process group, so a Ctrl-C at the terminal leaves it to clean up.
            .process_group(0)
            .spawn()
            .context("starting the lifeline shell")?;
        let pipe = child.stdin.take();
        Ok(Self { pipe: Mutex::new(pipe), child: Mutex::new(child) })
    }

    fn send(&self, line: String) {
        if let Some(pipe) = self.pipe.lock().expect("lifeline lock").as_mut() {
            // A lifeline that died can do nothing for us; the servers are still
            // stopped by `Server::stop` on a clean shutdown.
            let _ = writeln!(pipe, "{line}");
        }
    }

    fn register(&self, pid: u32) {
        self.send(format!("+ {pid}"));
    }

    fn unregister(&self, pid: u32) {
        self.send(format!("- {pid}"));
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        drop(self.pipe.lock().expect("lifeline lock").take());
        let _ = self.child.lock().expect("lifeline lock").wait();
    }
}

/// How to start one server, kept so that it can be started again.
#[derive(Clone, Debug)]
pub struct ServerCommand {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// A running server process, its output appended to a log file.
pub struct Server {
    command: ServerCommand,
    child: Option<Child>,
}

impl Server {
    pub fn spawn(command: ServerCommand, lifeline: &Lifeline) -> anyhow::Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&command.log)
            .with_context(|| format!("opening {}", command.log.display()))?;
        let child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} ({})", command.name, command.program.display()))?;
        lifeline.register(child.id());
        Ok(Self { command, child: Some(child) })
    }

    pub fn name(&self) -> &str {
        &self.command.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.command.log
    }

    /// Fails with the end of the log when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("{} is stopped", self.command.name) };
        if let Some(status) = child.try_wait()? {
            bail!("{} exited ({status}); its log ends with:\n{}", self.command.name, self.log_tail(40));
        }
        Ok(())
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.command.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("the server is not running")?;
        kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("sending {signal} to {}", self.command.name))
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub fn stop(&mut self, grace: Duration, lifeline: &Lifeline) {
        let Some(mut child) = self.child.take() else { return };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        lifeline.unregister(child.id());
    }

    /// SIGKILL: the crash a graceful shutdown never shows.
    pub fn kill(&mut self, lifeline: &Lifeline) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            lifeline.unregister(child.id());
        }
    }

    /// Starts the same command again (same ports, same data).
    pub fn restart(&mut self, grace: Duration, lifeline: &Lifeline) -> anyhow::Result<()> {
        self.stop(grace, lifeline);
        let command = self.command.clone();
        *self = Self::spawn(command, lifeline)?;
        Ok(())
    }
}
