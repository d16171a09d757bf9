//! `/healthz`, `/readyz` and `/metrics`, served the same way by every Jetway process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// A process's metrics in the OpenMetrics text format.
pub trait Exposition: Send + Sync + 'static {
    fn encode(&self) -> String;
}

impl<T: Exposition> Exposition for Arc<T> {
    fn encode(&self) -> String {
        T::encode(self)
    }
}

/// What the endpoints report: readiness, set by the process, and its metrics.
#[derive(Default)]
pub struct Health<M> {
    ready: AtomicBool,
    /// What the process still waits for (a consumer not created yet, say); ready
    /// only once it waits for nothing.
    waiting: AtomicUsize,
    pub metrics: M,
}

impl<M> Health<M> {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed) == 0
    }

    /// Not ready until the returned guard is dropped, whatever `set_ready` says.
    pub fn waiting(self: &Arc<Self>) -> Waiting<M> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }
}

/// Something a process waits for before it is ready; see [`Health::waiting`].
pub struct Waiting<M>(Arc<Health<M>>);

impl<M> Drop for Waiting<M> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn router<M: Exposition>(health: Arc<Health<M>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<M>))
        .route("/metrics", get(metrics::<M>))
        .with_state(health)
}

async fn readyz<M>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    if health.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn metrics<M: Exposition>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], health.metrics.encode())
}
