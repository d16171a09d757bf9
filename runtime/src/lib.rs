//! What every Jetway process, the operator and each worker, starts with: logging in
//! the format its environment reads, one cancellation token that SIGTERM or SIGINT
//! cancels, and the `/healthz`, `/readyz` and `/metrics` endpoints.

pub mod http;
pub mod shutdown;
pub mod telemetry;
