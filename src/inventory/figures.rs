//! What the inventory tells the rest of the operator: what is asked to be watched,
//! and what a round found of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};

use crate::jsz::SystemAccess;

/// One consumer's figures at one read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
    pub waiting: u64,
}

impl From<&consumer::Info> for ConsumerLag {
    fn from(info: &consumer::Info) -> Self {
        Self {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
        }
    }
}

/// What a Consumer object asks to have watched.
#[derive(Clone)]
pub struct Watched {
    pub namespace: String,
    /// Which connection: `<namespace>/<NatsConnection>`, or empty for the default one.
    pub connection: String,
    pub jetstream: jetstream::Context,
    /// The connection's system-account client, if it has one (see [`crate::jsz`]).
    pub system: Option<Arc<SystemAccess>>,
    pub stream: String,
    pub consumer: String,
}

/// What a Stream object asks to have watched.
#[derive(Clone)]
pub struct WatchedStream {
    pub namespace: String,
    pub connection: String,
    pub jetstream: jetstream::Context,
    pub system: Option<Arc<SystemAccess>>,
    pub stream: String,
}

/// The kinds of object a round can wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Stream,
    Consumer,
    /// A demanded consumer's pending or unacknowledged count moved: for what scales on it.
    Lag,
}

/// The wall-clock time of a reading taken at `at`, as Kubernetes objects carry it.
pub fn read_at(at: Instant) -> k8s_openapi::jiff::Timestamp {
    let now = k8s_openapi::jiff::Timestamp::now();
    let age = k8s_openapi::jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// The latest word on one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Its figures, known to hold at `at`.
    Found { lag: ConsumerLag, at: Instant },
    /// The server answered and the consumer (or its stream) was not there.
    Missing { at: Instant },
    /// The last figures are older than a few intervals (NATS cut off, the reads
    /// stalled): nothing may act on them.
    Stale { lag: ConsumerLag, at: Instant },
}

impl Observation {
    /// `Stale` once a reading is older than `fresh_for`.
    pub(super) fn aged(self, fresh_for: Duration) -> Self {
        match self {
            Self::Found { lag, at } | Self::Stale { lag, at } if at.elapsed() > fresh_for => Self::Stale { lag, at },
            other => other,
        }
    }
}
