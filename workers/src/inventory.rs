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

use async_nats::jetstream::kv;
use async_nats::{HeaderMap, header};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::batch::{BatchMessage, publish_atomically};
use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{
    Event, InventoryRejected, InventoryReleased, InventoryReserved, OrderCreated, PaymentFailed, Reservation, now,
};
use crate::publish::Publish;

/// The KV bucket of stock and reservations; its stream allows atomic batches.
pub const STOCK_BUCKET: &str = "inventory";

/// How often a reservation re-reads stock that other replicas keep changing before it
/// gives the message back to be retried later.
const ATTEMPTS: usize = 16;

/// Locks a process holds over SKUs, so that its own reservations of one SKU wait for
/// each other instead of racing: a race costs the loser a re-read and a retry, and
/// under a hot SKU nearly every reservation would lose one.
const STRIPES: usize = 64;

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

/// Stock in a JetStream KV bucket.
pub struct KvStock {
    client: async_nats::Client,
    store: kv::Store,
    /// SKUs share these locks by hash; an order takes its SKUs' in index order.
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl KvStock {
    pub fn new(client: async_nats::Client, store: kv::Store) -> Self {
        Self { client, store, stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    /// Holds this process's locks over `lines`' SKUs.
    async fn lock(&self, lines: &[Reservation]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        let mut stripes: Vec<usize> =
            lines.iter().map(|line| hasher.hash_one(&line.sku) as usize % self.stripes.len()).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.stripes[stripe].lock().await);
        }
        guards
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

    /// The order's decision and the revision it was read at.
    async fn decision(&self, order: &str) -> anyhow::Result<Option<(Decision, u64)>> {
        match self.store.entry(reservation_key(order)).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((serde_json::from_slice(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
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

fn reservation_key(order: &str) -> String {
    format!("reservation.{order}")
}

impl Stock for KvStock {
    async fn reserve(&self, order: &str, lines: &[Reservation]) -> anyhow::Result<Decision> {
        let _held = self.lock(lines).await;
        for attempt in 0..ATTEMPTS {
            // A conflict may be this order's decision, taken by an earlier delivery.
            if attempt > 0 {
                if let Some((taken, _)) = self.decision(order).await? {
                    return Ok(taken);
                }
                contended(attempt).await;
            }
            let read = try_join_all(lines.iter().map(|line| self.available(&line.sku))).await?;
            let (available, revisions): (Vec<u64>, Vec<u64>) = read.into_iter().unzip();
            let decision = decide(lines, &available, now());
            // A rejection changes no stock; it is recorded so a redelivery after a
            // restock does not turn it into a reservation.
            let mut batch = vec![self.message(&reservation_key(order), 0, serde_json::to_vec(&decision)?)];
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

    async fn release(&self, order: &str) -> anyhow::Result<Option<Decision>> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                contended(attempt).await;
            }
            let Some((Decision::Reserved { items, .. }, decided_at)) = self.decision(order).await? else {
                // Released already, rejected (nothing held), or never seen.
                return Ok(self.decision(order).await?.map(|(decision, _)| decision));
            };
            let _held = self.lock(&items).await;
            let read = try_join_all(items.iter().map(|line| self.available(&line.sku))).await?;
            let released = Decision::Released { items: items.clone(), at: now() };
            let mut batch = vec![self.message(&reservation_key(order), decided_at, serde_json::to_vec(&released)?)];
            for (line, (quantity, revision)) in items.iter().zip(read) {
                let back = quantity.saturating_add(u64::from(line.quantity));
                batch.push(self.message(&stock_key(&line.sku), revision, back.to_string().into_bytes()));
            }
            match publish_atomically(&self.client, batch).await {
                Ok(()) => return Ok(Some(released)),
                Err(error) if error.is_conflict() => continue,
                Err(error) => return Err(error.into()),
            }
        }
        anyhow::bail!("stock kept changing during {ATTEMPTS} attempts")
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

/// A pause after a conflict with another replica, growing with the attempts, jittered
/// so the racers part.
async fn contended(attempt: usize) {
    use rand::Rng;
    let most = 2u64.saturating_pow(attempt.min(7) as u32);
    let pause = std::time::Duration::from_millis(rand::rng().random_range(1..=most));
    tokio::time::sleep(pause).await;
}

/// The inventory worker's handler.
pub struct Inventory<S, P> {
    pub stock: S,
    pub publisher: P,
}

impl<S: Stock, P: Publish> Handler for Inventory<S, P> {
    type Event = Input;

    async fn handle(&self, input: Input, delivery: &Delivery) -> Outcome {
        let done = match input {
            Input::Order(order) => self.reserve(order, delivery).await,
            Input::PaymentFailed(failed) => self.release(failed, delivery).await,
        };
        match done {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::retry(format!("{error:#}")),
        }
    }
}

impl<S: Stock, P: Publish> Inventory<S, P> {
    async fn reserve(&self, order: OrderCreated, delivery: &Delivery) -> anyhow::Result<()> {
        let key = order.order().to_string();
        let decision = self.stock.reserve(&key, &wanted(&order)).await?;
        let OrderCreated { order_id, customer_id, total_cents, currency, .. } = order;
        match decision {
            Decision::Reserved { items, at } => {
                let (total_cents, currency) = (Some(total_cents), Some(currency));
                let event = InventoryReserved { order_id, customer_id, items, total_cents, currency, reserved_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
            Decision::Rejected { sku, requested, available, at } => {
                let event = InventoryRejected { order_id, customer_id, sku, requested, available, rejected_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
            // Reserved and announced long ago, then released: nothing left to say.
            Decision::Released { .. } => Ok(()),
        }
    }

    async fn release(&self, failed: PaymentFailed, delivery: &Delivery) -> anyhow::Result<()> {
        let key = failed.order().to_string();
        match self.stock.release(&key).await? {
            Some(Decision::Released { items, at }) => {
                let PaymentFailed { order_id, customer_id, .. } = failed;
                let event = InventoryReleased { order_id, customer_id, items, released_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
            other => {
                tracing::warn!(order = %key, decision = ?other, "a failed payment for an order that holds no stock");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
