//! Builders for unit tests.

use time::macros::datetime;

use crate::consume::Delivery;
use crate::events::{InventoryReserved, OrderCreated, sample_order};
use crate::inventory::wanted;

pub fn order(order_id: &str) -> OrderCreated {
    OrderCreated { created_at: datetime!(2026-11-24 08:00 UTC), ..sample_order(order_id) }
}

/// The reservation inventory announces for [`order`].
pub fn reserved(order_id: &str) -> InventoryReserved {
    let order = order(order_id);
    InventoryReserved::of(order.clone(), wanted(&order), datetime!(2026-11-24 08:00 UTC))
}

/// The `delivered`th delivery of a message on `subject`.
pub fn delivery_of(subject: &str, delivered: u64) -> Delivery {
    Delivery {
        subject: subject.into(),
        stream: "ORDERS".into(),
        stream_sequence: 7,
        delivered,
        published: datetime!(2026-11-24 08:00 UTC),
    }
}

/// The `delivered`th delivery of an order.
pub fn delivery(delivered: u64) -> Delivery {
    delivery_of("orders.created.v1.customer-1.o-1", delivered)
}
