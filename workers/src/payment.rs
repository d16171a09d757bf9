//! Payment: charge each order exactly once.
//!
//! The ledger (a KV bucket keyed by order id, written only if the key is absent)
//! holds the one recorded outcome of each order. A first delivery asks the gateway,
//! records the answer, publishes it, and acks. A redelivery reads the ledger first and,
//! when the order is there, only publishes the recorded outcome again, which JetStream
//! drops as a duplicate (the message id is per order). Two deliveries racing on one
//! order both pass the gateway the order id as idempotency key, as every real payment
//! gateway takes one; the first ledger write wins and both publish the winner's outcome.
//! A crash between the gateway call and the ledger write is covered the same way: the
//! next delivery repeats the call with the same key and the gateway answers with the
//! same charge.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{Cents, OrderCreated, PaymentCompleted, PaymentFailed, now};
use crate::publish::Publish;

/// The KV bucket of the ledger.
pub const LEDGER_BUCKET: &str = "payments-ledger";

/// The one recorded outcome of an order's payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum LedgerEntry {
    #[serde(rename_all = "camelCase")]
    Charged {
        charge_id: String,
        amount_cents: Cents,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    #[serde(rename_all = "camelCase")]
    Declined {
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// What a ledger write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// This write is the order's entry.
    New,
    /// The order already had this entry, which stands.
    Existing(LedgerEntry),
}

pub trait Ledger: Send + Sync + 'static {
    fn find(&self, order_id: &str) -> impl Future<Output = anyhow::Result<Option<LedgerEntry>>> + Send;
    /// Writes `entry` only if the order has none.
    fn record(&self, order_id: &str, entry: &LedgerEntry) -> impl Future<Output = anyhow::Result<Recorded>> + Send;
}

impl Ledger for kv::Store {
    async fn find(&self, order_id: &str) -> anyhow::Result<Option<LedgerEntry>> {
        match self.get(order_id).await? {
            Some(value) => Ok(Some(serde_json::from_slice(&value)?)),
            None => Ok(None),
        }
    }

    async fn record(&self, order_id: &str, entry: &LedgerEntry) -> anyhow::Result<Recorded> {
        match self.create(order_id, serde_json::to_vec(entry)?.into()).await {
            Ok(_) => Ok(Recorded::New),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let existing = self.find(order_id).await?;
                Ok(Recorded::Existing(existing.ok_or_else(|| anyhow::anyhow!("ledger entry vanished"))?))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// A charge request; the gateway answers the same key with the same charge.
#[derive(Clone, Debug)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_cents: Cents,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Approved { charge_id: String },
    Declined { reason: String },
}

/// The gateway could not answer; try again later.
#[derive(Debug, thiserror::Error)]
#[error("payment gateway unavailable: {0}")]
pub struct GatewayUnavailable(pub String);

pub trait Gateway: Send + Sync + 'static {
    fn charge(&self, request: ChargeRequest) -> impl Future<Output = Result<Charge, GatewayUnavailable>> + Send;
}

impl<G: Gateway> Gateway for std::sync::Arc<G> {
    fn charge(&self, request: ChargeRequest) -> impl Future<Output = Result<Charge, GatewayUnavailable>> + Send {
        G::charge(self, request)
    }
}

/// A payment gateway stand-in: a latency, a rate of transient failures, a rate of
/// declines, and idempotency keys remembered (the most recent million).
pub struct SimulatedGateway {
    pub latency: Duration,
    pub failure_rate: f64,
    pub decline_rate: f64,
    remembered: Mutex<(HashMap<String, Charge>, VecDeque<String>)>,
    /// Charges made, not counting answers repeated for a known key.
    pub charges: AtomicU64,
    /// Calls answered with the charge already made for their key.
    pub repeated: AtomicU64,
}

impl SimulatedGateway {
    const REMEMBERED: usize = 1_000_000;

    pub fn new(latency: Duration, failure_rate: f64, decline_rate: f64) -> Self {
        Self {
            latency,
            failure_rate,
            decline_rate,
            remembered: Mutex::default(),
            charges: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
        }
    }
}

impl Gateway for SimulatedGateway {
    async fn charge(&self, request: ChargeRequest) -> Result<Charge, GatewayUnavailable> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let (fails, declines) = {
            let mut rng = rand::rng();
            (rng.random_bool(self.failure_rate), rng.random_bool(self.decline_rate))
        };
        if fails {
            return Err(GatewayUnavailable("simulated outage".into()));
        }
        let mut remembered = self.remembered.lock().expect("gateway lock");
        let (charges, order) = &mut *remembered;
        if let Some(known) = charges.get(&request.idempotency_key) {
            self.repeated.fetch_add(1, Ordering::Relaxed);
            return Ok(known.clone());
        }
        let charge = if declines {
            Charge::Declined { reason: "card declined".into() }
        } else {
            self.charges.fetch_add(1, Ordering::Relaxed);
            Charge::Approved { charge_id: format!("ch_{:016x}", rand::rng().random::<u64>()) }
        };
        if order.len() == Self::REMEMBERED
            && let Some(oldest) = order.pop_front()
        {
            charges.remove(&oldest);
        }
        order.push_back(request.idempotency_key.clone());
        charges.insert(request.idempotency_key, charge.clone());
        Ok(charge)
    }
}

/// The payment worker's handler.
pub struct Payment<G, L, P> {
    pub gateway: G,
    pub ledger: L,
    pub publisher: P,
}

impl<G: Gateway, L: Ledger, P: Publish> Handler for Payment<G, L, P> {
    type Event = OrderCreated;

    async fn handle(&self, order: OrderCreated, delivery: &Delivery) -> Outcome {
        match self.pay(&order, delivery).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::retry(format!("{error:#}")),
        }
    }
}

impl<G: Gateway, L: Ledger, P: Publish> Payment<G, L, P> {
    async fn pay(&self, order: &OrderCreated, delivery: &Delivery) -> anyhow::Result<Outcome> {
        // Only a redelivery can find its order in the ledger; a first delivery saves the read.
        if delivery.delivered > 1
            && let Some(entry) = self.ledger.find(&order.order_id).await?
        {
            self.announce(order, &entry, delivery).await?;
            return Ok(Outcome::Ack);
        }
        let request = ChargeRequest {
            idempotency_key: order.order_id.clone(),
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
        };
        let entry = match self.gateway.charge(request).await {
            Ok(Charge::Approved { charge_id }) => LedgerEntry::Charged {
                charge_id,
                amount_cents: order.total_cents,
                currency: order.currency.clone(),
                at: now(),
            },
            Ok(Charge::Declined { reason }) => LedgerEntry::Declined { reason, at: now() },
            Err(unavailable) => return Ok(Outcome::retry(unavailable)),
        };
        let entry = match self.ledger.record(&order.order_id, &entry).await? {
            Recorded::New => entry,
            Recorded::Existing(first) => first,
        };
        self.announce(order, &entry, delivery).await?;
        Ok(Outcome::Ack)
    }

    async fn announce(&self, order: &OrderCreated, entry: &LedgerEntry, delivery: &Delivery) -> anyhow::Result<()> {
        let order_id = order.order_id.clone();
        match entry.clone() {
            LedgerEntry::Charged { charge_id, amount_cents, currency, at } => {
                let event = PaymentCompleted { order_id, charge_id, amount_cents, currency, charged_at: at };
                self.publisher.publish(&event, &delivery.trace).await
            }
            LedgerEntry::Declined { reason, at } => {
                self.publisher.publish(&PaymentFailed { order_id, reason, failed_at: at }, &delivery.trace).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
