//! The operator's Prometheus metrics, in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jetway");
        registry.register("build", "Jetway's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        Self { registry }
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
