//! Stock in a JetStream KV bucket: `stock.<sku>` holds what is available,
//! `reservation.<customerId>.<orderId>` the decision taken for an order.
//!
//! Every change is one atomic batch: the order's decision, written only at the
//! revision it was read at (0: absent), and each line's new stock, written only if its
//! key is still at the revision read. Within one process, reservations of one SKU wait
//! for each other (striped locks taken in order) instead of racing, and the process
//! remembers each SKU's stock and revision after its own writes, so under a hot SKU a
//! reservation is one batch and no reads. Another replica's write makes that memory
//! stale: the batch is refused, the memory dropped, the stock read again.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::kv;
use async_nats::{HeaderMap, header};
use futures::future::try_join_all;

use super::{Decision, Reservation, Stock, decide};
use crate::batch::{BatchMessage, publish_atomically};
use crate::events::now;

/// How often a change re-reads stock that other replicas keep changing before it
/// gives the message back to be retried later.
const ATTEMPTS: usize = 16;

/// Locks over SKUs a process holds, by hash.
const STRIPES: usize = 64;

/// The lines a change writes, their stock as seen, and how each line changes it.
type Change<'a> = (&'a [Reservation], &'a [Known], fn(u64, u32) -> u64);

/// A SKU's stock as last read or written, and its revision.
#[derive(Clone, Copy, Debug)]
struct Known {
    available: u64,
    revision: u64,
}

/// Stock in a JetStream KV bucket.
pub struct KvStock {
    client: async_nats::Client,
    store: kv::Store,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// What this process last wrote or read of each SKU; used only under its lock.
    known: Mutex<HashMap<String, Known>>,
}

impl KvStock {
    pub fn new(client: async_nats::Client, store: kv::Store) -> Self {
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { client, store, stripes, known: Mutex::default() }
    }

    /// Sets a SKU's available quantity, whatever it was.
    pub async fn set(&self, sku: &str, quantity: u64) -> anyhow::Result<()> {
        self.forget(&[Reservation { sku: sku.to_owned(), quantity: 0 }]);
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

    /// Each line's stock: remembered, or read. Call under the lines' locks.
    async fn stock(&self, lines: &[Reservation]) -> anyhow::Result<Vec<Known>> {
        let remembered: Vec<Option<Known>> = {
            let known = self.known.lock().expect("stock memory");
            lines.iter().map(|line| known.get(&line.sku).copied()).collect()
        };
        try_join_all(lines.iter().zip(remembered).map(|(line, remembered)| async move {
            match remembered {
                Some(known) => Ok(known),
                None => self.available(&line.sku).await.map(|(available, revision)| Known { available, revision }),
            }
        }))
        .await
    }

    fn forget(&self, lines: &[Reservation]) {
        let mut known = self.known.lock().expect("stock memory");
        for line in lines {
            known.remove(&line.sku);
        }
    }

    /// Writes the order's `decision` at `decided_at` (0: the order has none) and, when
    /// `changed`, each line's new stock at the revision it was seen at; `false` when
    /// another writer came first. Call under the lines' locks.
    async fn commit(
        &self,
        order: &str,
        decision: &Decision,
        decided_at: u64,
        changed: Option<Change<'_>>,
    ) -> anyhow::Result<bool> {
        let mut batch = vec![self.message(&reservation_key(order), decided_at, serde_json::to_vec(decision)?)];
        let mut after = Vec::new();
        if let Some((lines, stock, change)) = changed {
            for (line, known) in lines.iter().zip(stock) {
                let available = change(known.available, line.quantity);
                batch.push(self.message(&stock_key(&line.sku), known.revision, available.to_string().into_bytes()));
                after.push((line.sku.clone(), available));
            }
        }
        let lines: Vec<Reservation> =
            after.iter().map(|(sku, _)| Reservation { sku: sku.clone(), quantity: 0 }).collect();
        match publish_atomically(&self.client, batch).await {
            Ok(last) => {
                // The batch is stored in one piece: the lines' revisions end at `last`.
                let mut known = self.known.lock().expect("stock memory");
                let first = last + 1 - after.len() as u64;
                for (offset, (sku, available)) in after.into_iter().enumerate() {
                    known.insert(sku, Known { available, revision: first + offset as u64 });
                }
                Ok(true)
            }
            Err(error) => {
                self.forget(&lines);
                if error.is_conflict() { Ok(false) } else { Err(error.into()) }
            }
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
            let stock = self.stock(lines).await?;
            let available: Vec<u64> = stock.iter().map(|known| known.available).collect();
            let decision = decide(lines, &available, now());
            // A rejection changes no stock; it is recorded so a redelivery after a
            // restock does not turn it into a reservation.
            let take: fn(u64, u32) -> u64 = |available, quantity| available - u64::from(quantity);
            let changed = matches!(decision, Decision::Reserved { .. }).then_some((lines, &stock[..], take));
            if self.commit(order, &decision, 0, changed).await? {
                return Ok(decision);
            }
        }
        anyhow::bail!("stock kept changing during {ATTEMPTS} attempts")
    }

    async fn release(&self, order: &str) -> anyhow::Result<Option<Decision>> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                contended(attempt).await;
            }
            let (items, decided_at) = match self.decision(order).await? {
                Some((Decision::Reserved { items, .. }, decided_at)) => (items, decided_at),
                // Released already, rejected (nothing held), or never seen.
                other => return Ok(other.map(|(decision, _)| decision)),
            };
            let _held = self.lock(&items).await;
            let stock = self.stock(&items).await?;
            let released = Decision::Released { items: items.clone(), at: now() };
            let give_back: fn(u64, u32) -> u64 = |available, quantity| available.saturating_add(u64::from(quantity));
            if self.commit(order, &released, decided_at, Some((&items, &stock, give_back))).await? {
                return Ok(Some(released));
            }
        }
        anyhow::bail!("stock kept changing during {ATTEMPTS} attempts")
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
