//! A real nats-server with JetStream on a free loopback port and a private store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::{Lifeline, Server, ServerCommand};
use crate::tools::Tools;
use crate::wait;

/// The JetStream API request subjects (prefixes) that change a stream or a consumer,
/// for tests and benchmarks that count the writes a server receives.
pub const JETSTREAM_WRITES: [&str; 8] = [
    "$JS.API.STREAM.CREATE.",
    "$JS.API.STREAM.UPDATE.",
    "$JS.API.STREAM.DELETE.",
    "$JS.API.STREAM.PURGE.",
    "$JS.API.CONSUMER.CREATE.",
    "$JS.API.CONSUMER.DURABLE.CREATE.",
    "$JS.API.CONSUMER.DELETE.",
    "$JS.API.CONSUMER.PAUSE.",
];

/// Whether `subject` is a request that changes a stream or a consumer.
pub fn is_jetstream_write(subject: &str) -> bool {
    JETSTREAM_WRITES.iter().any(|w| subject.starts_with(w))
}

const GRACE: Duration = Duration::from_secs(10);

/// One nats-server; stopped, and its directory removed, on drop.
pub struct NatsServer {
    server: Server,
    port: u16,
    monitor_port: u16,
    dir: PathBuf,
    // Dropped after `dir` is no longer needed; the lifeline removes `dir` when it ends.
    lifeline: Arc<Lifeline>,
    _tempdir: Option<TempDir>,
}

impl NatsServer {
    /// Starts a nats-server with JetStream on a free port, in a fresh directory.
    /// `extra_config` is appended to the generated configuration (TLS, accounts, ...).
    pub async fn start(tools: &Tools, extra_config: &str) -> anyhow::Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("jetway-nats-").tempdir()?;
        let dir = tempdir.path().to_owned();
        let lifeline = Arc::new(Lifeline::start(Some(&dir))?);
        let mut nats = Self::start_in(tools, &dir, lifeline, extra_config).await?;
        nats._tempdir = Some(tempdir);
        Ok(nats)
    }

    /// Starts a nats-server whose files live in `dir`, watched by `lifeline`.
    pub async fn start_in(
        tools: &Tools,
        dir: &Path,
        lifeline: Arc<Lifeline>,
        extra_config: &str,
    ) -> anyhow::Result<Self> {
        let [port, monitor_port] = wait::free_ports(2)?[..] else { unreachable!("two ports") };
        let store = dir.join("jetstream");
        let config = dir.join("nats-server.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: jetway_test_{port}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                 jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 1GB\n  max_file_store: 20GB\n}}\n{extra_config}\n"
            ),
        )?;
        let command = ServerCommand {
            name: "nats-server".into(),
            program: tools.path("nats-server"),
            args: vec!["--config".into(), config.display().to_string()],
            log: dir.join("nats-server.log"),
        };
        let server = Server::spawn(command, &lifeline)?;
        let mut nats = Self { server, port, monitor_port, dir: dir.to_owned(), lifeline, _tempdir: None };
        nats.wait_ready(0).await?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// Graceful stop and start on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let seen = self.ready_lines();
        self.server.restart(GRACE, &self.lifeline)?;
        self.wait_ready(seen).await
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.server.kill(&self.lifeline);
    }

    /// Starts the server again after `kill`, on the same port and store.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.restart().await
    }

    /// Lame-duck mode: the server stops accepting clients and sheds the ones it has.
    pub fn enter_lame_duck_mode(&self) -> anyhow::Result<()> {
        self.server.signal(Signal::SIGUSR2)
    }

    fn ready_lines(&self) -> usize {
        ready_lines(self.server.log_path())
    }

    /// Waits for the log, appended to across restarts, to hold more than `seen`
    /// "ready" lines.
    async fn wait_ready(&mut self, seen: usize) -> anyhow::Result<()> {
        let log = self.server.log_path().to_owned();
        wait::until("nats-server to be ready", Duration::from_secs(30), Duration::from_millis(20), || {
            let running = self.server.check_running();
            let log = log.clone();
            async move {
                running?;
                Ok((ready_lines(&log) > seen).then_some(()))
            }
        })
        .await
        .context("starting nats-server")
    }
}

fn ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("Server is ready").count()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.server.stop(GRACE, &self.lifeline);
    }
}

/// Name of the JetStream cluster [`NatsCluster`] forms.
pub const CLUSTER_NAME: &str = "jetway-test";

/// A JetStream cluster of nats-servers on loopback, for replicas and placement.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other, and waits for JetStream's meta
    /// leader, so that streams can be created at once.
    pub async fn start(tools: &Tools, size: usize) -> anyhow::Result<Self> {
        Self::start_with(tools, size, "").await
    }

    /// [`Self::start`], with `extra_config` appended to each server's configuration
    /// (accounts, ...); anonymous clients must still reach JetStream (`no_auth_user`).
    pub async fn start_with(tools: &Tools, size: usize, extra_config: &str) -> anyhow::Result<Self> {
        let route_ports = wait::free_ports(size)?;
        let routes: Vec<String> = route_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let mut servers = Vec::with_capacity(size);
        for port in &route_ports {
            let config = format!(
                "cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n{extra_config}\n",
                routes.join(", ")
            );
            servers.push(NatsServer::start(tools, &config).await?);
        }
        let cluster = Self { servers };
        let url = cluster.servers[0].url();
        wait::until("the JetStream meta leader", Duration::from_secs(60), Duration::from_millis(200), || {
            let url = url.clone();
            async move {
                let client = async_nats::connect(url).await?;
                Ok(async_nats::jetstream::new(client).query_account().await.ok().map(|_| ()))
            }
        })
        .await?;
        Ok(cluster)
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}
