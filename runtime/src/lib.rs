//! What every Jetway process, the operator and each worker, starts with: logging in
//! the format its environment reads, one cancellation token that SIGTERM or SIGINT
//! cancels, the `/healthz`, `/readyz` and `/metrics` endpoints; and the dead-letter
//! contract operator and workers share.

pub mod deadletter;
pub mod http;
pub mod shutdown;
pub mod telemetry;
