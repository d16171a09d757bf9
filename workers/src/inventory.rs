//! Inventory: reserve every line of an order, or none, exactly once per order.
//!
//! Stock and reservations live in one KV bucket (`stock.<sku>` holds what is
//! available, `reservation.<order>` the decision taken for an order). A reservation is
//! one atomic batch: the order's decision written only if absent, and each line's new
//! stock written only if its stock key is still at the revision read. Concurrent
//! workers therefore never oversell (the loser of a race re-reads and tries again),
//! a crash leaves either all of an order's writes or none, and a redelivery finds the
//! decision already taken and only publishes it again (deduplicated by message id).

use std::collections::BTreeMap;
use std::future::Future;

use async_nats::jetstream::kv;
use async_nats::{HeaderMap, header};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::batch::{BatchMessage, publish_atomically};
use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{InventoryRejected, InventoryReserved, OrderCreated, Reservation, now};
use crate::publish::Publish;

/// The KV bucket of stock and reservations; its stream allows atomic batches.
pub const STOCK_BUCKET: &str = "inventory";

/// How often a reservation re-reads stock that others keep changing before it gives
/// the message back to be retried later.
const ATTEMPTS: usize = 8;

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
}

/// Stock as the handler sees it.
pub trait Stock: Send + Sync + 'static {
    /// Takes the order's decision, or returns the one already taken.
    fn reserve(&self, order_id: &str, lines: &[Reservation]) -> impl Future<Output = anyhow::Result<Decision>> + Send;
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

/// Stock in a JetStream KV bucket.
pub struct KvStock {
    client: async_nats::Client,
    store: kv::Store,
}

impl KvStock {
    pub fn new(client: async_nats::Client, store: kv::Store) -> Self {
        Self { client, store }
    }

    /// Sets a SKU's available quantity, whatever it was.
    pub async fn set(&self, sku: &str, quantity: u64) -> anyhow::Result<()> {
        self.store.put(stock_key(sku), quantity.to_string().into()).await?;
        Ok(())
    }

    /// Sets a SKU's quantity only if the bucket has none for it yet (seeding at start).
    pub async fn seed(&self, sku: &str, quantity: u64) -> anyhow::Result<()> {
        match self.store.create(stock_key(sku), quantity.to_string().into()).await {
            Err(error) if error.kind() != kv::CreateErrorKind::AlreadyExists => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// A SKU's available quantity and the revision it was read at (0: never written).
    pub async fn available(&self, sku: &str) -> anyhow::Result<(u64, u64)> {
        Ok(match self.store.entry(stock_key(sku)).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                (std::str::from_utf8(&entry.value)?.trim().parse()?, entry.revision)
            }
            Some(entry) => (0, entry.revision),
            None => (0, 0),
        })
    }

    async fn decision(&self, order_id: &str) -> anyhow::Result<Option<Decision>> {
        match self.store.get(reservation_key(order_id)).await? {
            Some(value) => Ok(Some(serde_json::from_slice(&value)?)),
            None => Ok(None),
        }
    }

    fn message(&self, key: &str, expected_revision: u64, value: Vec<u8>) -> BatchMessage {
        let prefix = self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix);
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected_revision.to_string().as_str());
        BatchMessage { subject: format!("{prefix}{key}").into(), headers, payload: value.into() }
    }
}

fn stock_key(sku: &str) -> String {
    format!("stock.{sku}")
}

fn reservation_key(order_id: &str) -> String {
    format!("reservation.{order_id}")
}

impl Stock for KvStock {
    async fn reserve(&self, order_id: &str, lines: &[Reservation]) -> anyhow::Result<Decision> {
        for attempt in 0..ATTEMPTS {
            // A conflict may be this order's decision, taken by an earlier delivery.
            if attempt > 0
                && let Some(taken) = self.decision(order_id).await?
            {
                return Ok(taken);
            }
            let read = try_join_all(lines.iter().map(|line| self.available(&line.sku))).await?;
            let (available, revisions): (Vec<u64>, Vec<u64>) = read.into_iter().unzip();
            let decision = decide(lines, &available, now());
            // A rejection changes no stock; it is recorded so a redelivery after a
            // restock does not turn it into a reservation.
            let mut batch = vec![self.message(&reservation_key(order_id), 0, serde_json::to_vec(&decision)?)];
            if let Decision::Reserved { items, .. } = &decision {
                for ((line, quantity), revision) in items.iter().zip(&available).zip(&revisions) {
                    let left = quantity - u64::from(line.quantity);
                    batch.push(self.message(&stock_key(&line.sku), *revision, left.to_string().into_bytes()));
                }
            }
            match publish_atomically(&self.client, batch).await {
                Ok(()) => return Ok(decision),
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::bail!("stock kept changing during {ATTEMPTS} attempts")
    }
}

/// The inventory worker's handler.
pub struct Inventory<S, P> {
    pub stock: S,
    pub publisher: P,
}

impl<S: Stock, P: Publish> Handler for Inventory<S, P> {
    type Event = OrderCreated;

    async fn handle(&self, order: OrderCreated, delivery: &Delivery) -> Outcome {
        let decision = match self.stock.reserve(&order.order_id, &wanted(&order)).await {
            Ok(decision) => decision,
            Err(error) => return Outcome::retry(format!("{error:#}")),
        };
        let order_id = order.order_id;
        let published = match decision {
            Decision::Reserved { items, at } => {
                let event = InventoryReserved { order_id, items, reserved_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
            Decision::Rejected { sku, requested, available, at } => {
                let event = InventoryRejected { order_id, sku, requested, available, rejected_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
        };
        match published {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::retry(format!("publishing the decision: {error:#}")),
        }
    }
}

#[cfg(test)]
mod tests;
