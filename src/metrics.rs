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

pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    /// Pooled NATS connections open besides the default one.
    pub nats_connections: Gauge,
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
            "Reconciles that ended in an error, by kind and reason",
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
        Self { registry, reconciles, reconcile_errors, reconcile_duration, nats_connections }
    }

    /// Counts one reconcile of `kind` that took `seconds` and failed for `error_reason`, if any.
    pub fn reconciled(&self, kind: &'static str, seconds: f64, error_reason: Option<&'static str>) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind }).observe(seconds);
        if let Some(reason) = error_reason {
            self.reconcile_errors.get_or_create(&ErrorLabels { kind, reason }).inc();
        }
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
