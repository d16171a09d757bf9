//! Every worker's `/healthz`, `/readyz` and `/metrics`; intake adds its routes.

pub use jetway_runtime::http::router;

use crate::metrics::Metrics;

/// What the endpoints report.
pub type Health = jetway_runtime::http::Health<Metrics>;

impl jetway_runtime::http::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}
