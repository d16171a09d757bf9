//! Every worker's Prometheus metrics. Labels are bounded: the worker's name and a
//! static outcome, never an order id or error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub status: u16,
}

/// What the consume loop counts, for one worker: handles on its series.
#[derive(Clone)]
pub struct LoopMetrics {
    processed: Counter,
    failed: Counter,
    dead_lettered: Counter,
    waited: Counter,
    duration: Histogram,
    in_flight: Gauge,
}

impl LoopMetrics {
    /// A message acknowledged as done.
    pub fn processed(&self, seconds: f64) {
        self.processed.inc();
        self.duration.observe(seconds);
    }

    /// A message handed back for a retry (nak with delay, or given back at shutdown).
    pub fn failed(&self, seconds: f64) {
        self.failed.inc();
        self.duration.observe(seconds);
    }

    /// A handler run again in place because a dependency was unavailable.
    pub fn waited(&self) {
        self.waited.inc();
    }

    pub fn dead_lettered(&self, seconds: f64) {
        self.dead_lettered.inc();
        self.duration.observe(seconds);
    }

    /// Counts one message in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A process's registry and the families its parts count into.
pub struct Metrics {
    registry: Registry,
    processed: Family<WorkerLabels, Counter>,
    failed: Family<WorkerLabels, Counter>,
    dead_lettered: Family<WorkerLabels, Counter>,
    waited: Family<WorkerLabels, Counter>,
    duration: Family<WorkerLabels, Histogram>,
    in_flight: Family<WorkerLabels, Gauge>,
    /// Intake's HTTP answers to `POST /orders`, by status code.
    pub orders_answered: Family<RequestLabels, Counter>,
    /// Intake's time from request to JetStream acknowledgement.
    pub order_publish_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jetway_worker");
        registry.register("build", "The workers' version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let histogram = || Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let processed = Family::<WorkerLabels, Counter>::default();
        registry.register("messages_processed", "Messages handled and acknowledged", processed.clone());
        let failed = Family::<WorkerLabels, Counter>::default();
        registry.register("messages_failed", "Messages handed back to be retried later", failed.clone());
        let waited = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "dependency_waits",
            "Handler runs repeated in place because NATS or the gateway was unavailable",
            waited.clone(),
        );
        let dead_lettered = Family::<WorkerLabels, Counter>::default();
        registry.register("messages_dead_lettered", "Messages moved to the dead-letter subject", dead_lettered.clone());
        let duration = Family::<WorkerLabels, Histogram>::new_with_constructor(histogram);
        registry.register(
            "processing_duration_seconds",
            "Time from receiving a message to settling it",
            duration.clone(),
        );
        let in_flight = Family::<WorkerLabels, Gauge>::default();
        registry.register("messages_in_flight", "Messages received and not yet settled", in_flight.clone());
        let orders_answered = Family::<RequestLabels, Counter>::default();
        registry.register("orders_answered", "Intake's answers to POST /orders, by status", orders_answered.clone());
        let order_publish_duration = histogram();
        registry.register(
            "order_publish_duration_seconds",
            "Intake's time from request to JetStream acknowledgement",
            order_publish_duration.clone(),
        );
        Self {
            registry,
            processed,
            failed,
            dead_lettered,
            waited,
            duration,
            in_flight,
            orders_answered,
            order_publish_duration,
        }
    }

    /// The consume loop's counters for one worker, each exported from the start (at 0)
    /// so that rates and alerts see a series before the first failure.
    pub fn for_loop(&self, worker: &'static str) -> LoopMetrics {
        let labels = WorkerLabels { worker };
        LoopMetrics {
            processed: self.processed.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            waited: self.waited.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
