//! Builders for unit tests.

use time::macros::datetime;

use crate::consume::Delivery;
use crate::events::{OrderCreated, sample_order};
use crate::trace::TraceContext;

pub fn order(order_id: &str) -> OrderCreated {
    OrderCreated { created_at: datetime!(2026-11-24 08:00 UTC), ..sample_order(order_id) }
}

/// The `delivered`th delivery of a message on `orders.created.v1`.
pub fn delivery(delivered: u64) -> Delivery {
    Delivery {
        subject: "orders.created.v1".into(),
        stream: "ORDERS".into(),
        stream_sequence: 7,
        delivered,
        published: datetime!(2026-11-24 08:00 UTC),
        trace: TraceContext::root(),
    }
}
