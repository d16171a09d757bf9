//! Builders for unit tests.

use time::macros::datetime;

use crate::consume::Delivery;
use crate::events::{LineItem, OrderCreated};
use crate::trace::TraceContext;

pub fn order(order_id: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.into(),
        customer_id: "customer-1".into(),
        items: vec![
            LineItem { sku: "WIDGET".into(), quantity: 2, unit_price_cents: 1250 },
            LineItem { sku: "GADGET".into(), quantity: 1, unit_price_cents: 499 },
        ],
        currency: "EUR".into(),
        total_cents: 2999,
        created_at: datetime!(2026-11-24 08:00 UTC),
    }
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
