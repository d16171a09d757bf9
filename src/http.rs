//! The operator's HTTP endpoints: `/healthz`, `/readyz` and `/metrics`.

use jetway_runtime::http::{self, Exposition};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints report, shared with the rest of the process.
pub type Health = jetway_runtime::http::Health<Arc<Metrics>>;

impl Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, health: Arc<Health>, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, http::router(health)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
