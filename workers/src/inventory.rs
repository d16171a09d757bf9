//! Inventory: reserve every line of an order, or none, exactly once per order; and put
//! the stock back when the order's payment fails.
//!
//! Stock and reservations live in one KV bucket (`stock.<sku>` holds what is
//! available, `reservation.<customerId>.<orderId>` the decision taken for an order). A
//! reservation is one atomic batch: the order's decision written only if absent, and
//! each line's new stock written only if its stock key is still at the revision read.
//! Concurrent workers therefore never oversell (the loser of a race re-reads and tries
//! again), a crash leaves either all of an order's writes or none, and a redelivery
//! finds the decision already taken and only publishes it again (stored once, its
//! subject naming the order).
//!
//! A release (on `payments.failed.v1`) is the same kind of batch: the decision turned
//! from reserved to released at the revision read, and each line's stock given back,
//! so stock is returned once however often the failure is delivered. Payment reads
//! only `inventory.reserved.v1`, so an order without stock is never charged.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{
    Event, InventoryRejected, InventoryReleased, InventoryReserved, OrderCreated, PaymentFailed, Reservation,
};
use crate::publish::Publish;

/// The KV bucket of stock and reservations; its stream allows atomic batches.
pub const STOCK_BUCKET: &str = "inventory";

/// The decision taken for one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Decision {
    #[serde(rename_all = "camelCase")]
    Reserved {
        items: Vec<Reservation>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    #[serde(rename_all = "camelCase")]
    Rejected {
        sku: String,
        requested: u32,
        available: u64,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Reserved, then given back because the payment failed.
    #[serde(rename_all = "camelCase")]
    Released {
        items: Vec<Reservation>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// Stock as the handler sees it. `order` is `<customerId>.<orderId>`.
pub trait Stock: Send + Sync + 'static {
    /// Takes the order's decision, or returns the one already taken.
    fn reserve(&self, order: &str, lines: &[Reservation]) -> impl Future<Output = anyhow::Result<Decision>> + Send;
    /// Gives back what the order reserved; the decision after it (`Released`, or what
    /// held nothing: `Rejected`, or `None` for an order never seen).
    fn release(&self, order: &str) -> impl Future<Output = anyhow::Result<Option<Decision>>> + Send;
}

/// The lines of an order with the same SKU added up, in SKU order.
pub fn wanted(order: &OrderCreated) -> Vec<Reservation> {
    let mut by_sku = BTreeMap::<&str, u32>::new();
    for item in &order.items {
        let quantity = by_sku.entry(&item.sku).or_default();
        *quantity = quantity.saturating_add(item.quantity);
    }
    by_sku.into_iter().map(|(sku, quantity)| Reservation { sku: sku.to_owned(), quantity }).collect()
}

/// The decision for `lines` given what each SKU has: the first short line rejects.
pub fn decide(lines: &[Reservation], available: &[u64], at: OffsetDateTime) -> Decision {
    match lines.iter().zip(available).find(|(line, available)| u64::from(line.quantity) > **available) {
        Some((line, available)) => {
            Decision::Rejected { sku: line.sku.clone(), requested: line.quantity, available: *available, at }
        }
        None => Decision::Reserved { items: lines.to_vec(), at },
    }
}

/// What inventory reads: orders to reserve, failed payments to release.
#[derive(Debug)]
pub enum Input {
    Order(OrderCreated),
    PaymentFailed(PaymentFailed),
}

impl crate::events::Decode for Input {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, crate::events::DecodeError> {
        match crate::events::event_subject(subject) {
            PaymentFailed::SUBJECT => Ok(Self::PaymentFailed(crate::events::Decode::decode(subject, payload)?)),
            _ => Ok(Self::Order(crate::events::Decode::decode(subject, payload)?)),
        }
    }
}

/// The inventory worker's handler.
pub struct Inventory<S, P> {
    pub stock: S,
    pub publisher: P,
}

impl<S: Stock, P: Publish> Handler for Inventory<S, P> {
    type Event = Input;

    async fn handle(&self, input: Input, _: &Delivery) -> Outcome {
        let done = match input {
            Input::Order(order) => self.reserve(order).await,
            Input::PaymentFailed(failed) => self.release(failed).await,
        };
        match done {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::from_error(&error),
        }
    }
}

impl<S: Stock, P: Publish> Inventory<S, P> {
    async fn reserve(&self, order: OrderCreated) -> anyhow::Result<()> {
        let key = order.order().to_string();
        let decision = self.stock.reserve(&key, &wanted(&order)).await?;
        match decision {
            Decision::Reserved { items, at } => self.publisher.publish(&InventoryReserved::of(order, items, at)).await,
            Decision::Rejected { sku, requested, available, at } => {
                let OrderCreated { order_id, customer_id, .. } = order;
                let event = InventoryRejected { order_id, customer_id, sku, requested, available, rejected_at: at };
                self.publisher.publish(&event).await
            }
            // Reserved and announced long ago, then released: nothing left to say.
            Decision::Released { .. } => Ok(()),
        }
    }

    async fn release(&self, failed: PaymentFailed) -> anyhow::Result<()> {
        let key = failed.order().to_string();
        match self.stock.release(&key).await? {
            Some(Decision::Released { items, at }) => {
                let PaymentFailed { order_id, customer_id, .. } = failed;
                let event = InventoryReleased { order_id, customer_id, items, released_at: at };
                self.publisher.publish(&event).await
            }
            other => {
                tracing::warn!(order = %key, decision = ?other, "a failed payment for an order that holds no stock");
                Ok(())
            }
        }
    }
}

mod kv;

pub use kv::KvStock;

#[cfg(test)]
mod tests;
