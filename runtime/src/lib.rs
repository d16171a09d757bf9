//! What every Jetway process, the operator and each worker, starts with: logging in
//! the format its environment reads, and one cancellation token that SIGTERM or
//! SIGINT cancels.

pub mod shutdown;
pub mod telemetry;
