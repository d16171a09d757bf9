//! Jetway: a Kubernetes operator for NATS JetStream.
//!
//! Custom resources declare streams, consumers, connections and worker pools; the
//! operator makes JetStream match them and reports what it found in their status.
//! [`run::run`] wires one operator process; the binary in `main.rs` only parses the
//! command line and calls it.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod connection;
pub mod controller;
pub mod crds;
pub mod deadletter;
pub mod export;
pub mod extmetrics;
pub mod http;
pub mod inventory;
pub mod jetstream;
pub mod jsz;
pub mod leader;
pub mod manifest;
pub mod metrics;
pub mod nack;
pub mod nats;
pub mod plan;
pub mod preview;
pub mod run;
pub use jetway_runtime::shutdown;
pub mod status;
pub use jetway_runtime::telemetry;
pub mod tls;
