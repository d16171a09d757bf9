//! The operator's Prometheus metrics, in the OpenMetrics text format. Labels are
//! bounded: kinds and static reasons, never object names or error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// One consumer, by the namespace of the Consumer object that manages it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub namespace: String,
    pub stream: String,
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub namespace: String,
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    scale_decisions: Family<ScaleLabels, Counter>,
    consumer_pending: Family<ConsumerLabels, Gauge>,
    consumer_ack_pending: Family<ConsumerLabels, Gauge>,
    consumer_redelivered: Family<ConsumerLabels, Gauge>,
    stream_messages: Family<StreamLabels, Gauge>,
    stream_bytes: Family<StreamLabels, Gauge>,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    /// Pooled NATS connections open besides the default one.
    pub nats_connections: Gauge,
    /// 1 while this replica holds the leader Lease (or runs without election).
    pub leader: Gauge,
    /// Events dropped because the queue to the apiserver was full.
    pub events_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jetway");
        registry.register("build", "Jetway's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error (a refusal, a missing stream or connection, NATS or the apiserver unavailable), by kind and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, by kind",
            reconcile_duration.clone(),
        );
        let nats_connections = Gauge::default();
        registry.register(
            "nats_connections",
            "Pooled NATS connections open for NatsConnection objects",
            nats_connections.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 on the replica that holds the leader Lease and writes, 0 on standbys",
            leader.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Kubernetes Events dropped because too many were waiting to be sent",
            events_dropped.clone(),
        );
        let gauges = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ConsumerLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let consumer_pending =
            gauges(&mut registry, "consumer_pending_messages", "Messages the consumer has not delivered yet");
        let consumer_ack_pending =
            gauges(&mut registry, "consumer_ack_pending_messages", "Messages delivered and not acknowledged yet");
        let consumer_redelivered = gauges(
            &mut registry,
            "consumer_redelivered_messages",
            "Messages delivered more than once and not acknowledged",
        );
        let stream_messages = Family::<StreamLabels, Gauge>::default();
        registry.register("stream_messages", "Messages the stream holds", stream_messages.clone());
        let stream_bytes = Family::<StreamLabels, Gauge>::default();
        registry.register("stream_bytes", "Bytes the stream holds", stream_bytes.clone());
        let scale_decisions = Family::<ScaleLabels, Counter>::default();
        registry.register("scale_decisions", "WorkerPool replica changes, by reason", scale_decisions.clone());
        Self {
            registry,
            scale_decisions,
            consumer_pending,
            consumer_ack_pending,
            consumer_redelivered,
            stream_messages,
            stream_bytes,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            nats_connections,
            leader,
            events_dropped,
        }
    }

    /// Counts one change of a pool's replicas.
    pub fn scaled(&self, reason: &'static str) {
        self.scale_decisions.get_or_create(&ScaleLabels { reason }).inc();
    }

    pub fn set_consumer(&self, labels: &ConsumerLabels, lag: &crate::inventory::ConsumerLag) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.consumer_pending.get_or_create(labels).set(gauge(lag.pending));
        self.consumer_ack_pending.get_or_create(labels).set(gauge(lag.ack_pending));
        self.consumer_redelivered.get_or_create(labels).set(gauge(lag.redelivered));
    }

    /// Drops a consumer's series: a consumer that is not there has no lag, not 0.
    pub fn remove_consumer(&self, labels: &ConsumerLabels) {
        self.consumer_pending.remove(labels);
        self.consumer_ack_pending.remove(labels);
        self.consumer_redelivered.remove(labels);
    }

    pub fn set_stream(&self, labels: &StreamLabels, messages: u64, bytes: u64) {
        self.stream_messages.get_or_create(labels).set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.stream_bytes.get_or_create(labels).set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts one reconcile of `kind` that took `seconds` and failed for `error_reason`, if any.
    pub fn reconciled(&self, kind: &'static str, seconds: f64, error_reason: Option<&'static str>) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind }).observe(seconds);
        if let Some(reason) = error_reason {
            self.reconcile_errors.get_or_create(&ErrorLabels { kind, reason }).inc();
        }
    }

    /// A reconcile that ended in an error its status reports and no backoff follows.
    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { kind, reason }).inc();
    }

    /// The exposition text served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
