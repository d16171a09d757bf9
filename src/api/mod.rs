//! The custom resources: group `jetway.dev`, version `v1alpha1`.
//!
//! Field names and value formats follow NACK's `jetstream.nats.io/v1beta2`, so that a
//! NACK manifest works after changing its `apiVersion`. Every field is optional: unset
//! means the server's default, and a field removed from a spec goes back to it.

pub mod connection;
pub mod consumer;
pub mod duration;
pub mod stream;
pub mod subject;
pub mod workerpool;

pub use duration::GoDuration;

/// The API group of every Jetway kind.
pub const GROUP: &str = "jetway.dev";

/// Condition types, in the shape kstatus, Argo CD and Flux read.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}
