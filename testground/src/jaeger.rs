//! Jaeger v2, the tracing backend, on loopback: an OTLP/HTTP receiver whose spans are
//! kept in memory and answered by Jaeger's query API, for tests that assert what a
//! process really exported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Lifeline, Server, ServerCommand};
use crate::{Tools, wait};

pub struct Jaeger {
    server: Server,
    otlp: SocketAddr,
    query: SocketAddr,
    lifeline: Arc<Lifeline>,
    _dir: TempDir,
}

impl Jaeger {
    /// Starts Jaeger with in-memory storage; ready when its ports accept connections.
    pub async fn start(tools: &Tools) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("jetway-jaeger-").tempdir()?;
        let lifeline = Arc::new(Lifeline::start(Some(dir.path()))?);
        let [otlp, query, query_grpc] = [wait::own_address()?, wait::own_address()?, wait::own_address()?];
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(
            &config,
            format!(
                "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      \
                 receivers: [otlp]\n      exporters: [jaeger_storage_exporter]\n  telemetry:\n    \
                 logs: {{ level: warn }}\n    metrics: {{ level: none }}\n\
                 extensions:\n  jaeger_storage:\n    backends:\n      memstore: {{ memory: {{ max_traces: 10000 }} }}\n  \
                 jaeger_query:\n    storage: {{ traces: memstore }}\n    http: {{ endpoint: \"{query}\" }}\n    \
                 grpc: {{ endpoint: \"{query_grpc}\" }}\n\
                 receivers:\n  otlp:\n    protocols:\n      http: {{ endpoint: \"{otlp}\" }}\n\
                 exporters:\n  jaeger_storage_exporter: {{ trace_storage: memstore }}\n"
            ),
        )?;
        let command = ServerCommand {
            name: "jaeger".into(),
            program: tools.path("jaeger"),
            args: vec!["--config".into(), format!("file:{}", config.display())],
            log: dir.path().join("jaeger.log"),
        };
        let mut server = Server::spawn(command, &lifeline)?;
        for address in [otlp, query] {
            let started = wait::until("Jaeger to listen", Duration::from_secs(60), Duration::from_millis(50), || {
                let running = server.check_running();
                async move {
                    running?;
                    Ok(tokio::net::TcpStream::connect(address).await.is_ok().then_some(()))
                }
            });
            started.await?;
        }
        Ok(Self { server, otlp, query, lifeline, _dir: dir })
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to for a process to export here.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.otlp)
    }

    /// The root of Jaeger's query API (`/api/traces/{trace id}`, `/api/services`).
    pub fn query_url(&self) -> String {
        format!("http://{}", self.query)
    }

    pub fn query_addr(&self) -> SocketAddr {
        self.query
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        self.server.kill(&self.lifeline);
    }
}
