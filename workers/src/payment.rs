//! Payment: charge each order exactly once, counted at the gateway, whatever instant a
//! worker dies.
//!
//! Payment reads `inventory.reserved.v1`: an order is charged only once its stock is
//! set aside, and a charge that fails for good is announced so inventory puts the
//! stock back. Each delivery, first or not, goes through the same steps, and the
//! ledger (KV, one key per order) says where the order stands:
//!
//! 1. write the intent, `Pending` with the idempotency key
//!    (`jetway-payment-<customerId>.<orderId>`) and the time, only if the order has no
//!    entry;
//! 2. it has one: read it. An order already settled (charged or declined) is only
//!    announced again, with no call to the gateway; an intent (a racing or an earlier
//!    delivery's) is used as if written here;
//! 3. ask the gateway under that key; the consume loop sends in-progress acks while
//!    it answers, so no second worker gets the order meanwhile. No definite answer:
//!    retry later, under the same key;
//! 4. replace the intent by the outcome, only at the intent's revision (a racing
//!    delivery that settled first is used instead);
//! 5. announce the outcome, `payments.completed.v1` or `payments.failed.v1`, stored
//!    once per order (its subject names the order), then ack.
//!
//! A worker killed before 3 leaves an intent: the next delivery asks under the same
//! key and the gateway charges once. Killed after 3: the gateway answers the repeat
//! with the first charge. Killed after 4 or 5: the ledger has the outcome and it is
//! announced, once. The one limit is the gateway's: it remembers a key for a while
//! (24 h at Stripe); an intent older than `key_retention` is not asked about again but
//! dead-lettered, to be settled by hand from the gateway's records.

mod gateway;
mod ledger;

use std::time::Duration;

use time::OffsetDateTime;

pub use gateway::{Charge, ChargeRequest, Gateway, GatewayUnavailable, HttpGateway};
pub use ledger::{LEDGER_BUCKET, Ledger, LedgerEntry, Versioned};

use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{Event, InventoryReserved, PaymentCompleted, PaymentFailed, now};
use crate::publish::Publish;

/// How long gateways keep an idempotency key, unless told otherwise (Stripe's 24 h).
pub const KEY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The payment worker's handler.
pub struct Payment<G, L, P> {
    pub gateway: G,
    pub ledger: L,
    pub publisher: P,
    /// How long the gateway remembers an idempotency key; an intent older than this,
    /// less a margin, is no longer asked about.
    pub key_retention: Duration,
}

impl<G, L, P> Payment<G, L, P> {
    pub fn new(gateway: G, ledger: L, publisher: P) -> Self {
        Self { gateway, ledger, publisher, key_retention: KEY_RETENTION }
    }
}

impl<G: Gateway, L: Ledger, P: Publish> Handler for Payment<G, L, P> {
    type Event = InventoryReserved;

    async fn handle(&self, reserved: InventoryReserved, _: &Delivery) -> Outcome {
        match self.pay(&reserved).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::from_error(&error),
        }
    }
}

impl<G: Gateway, L: Ledger, P: Publish> Payment<G, L, P> {
    async fn pay(&self, reserved: &InventoryReserved) -> anyhow::Result<Outcome> {
        let order = reserved.order().to_string();
        let (Some(amount_cents), Some(currency)) = (reserved.total_cents, reserved.currency.clone()) else {
            return Ok(Outcome::dead_letter(
                "the reservation carries no total to charge (an inventory older than 0.2)",
            ));
        };
        let (idempotency_key, since, revision) = match self.intent(&order).await? {
            Err(settled) => {
                self.announce(reserved, settled).await?;
                return Ok(Outcome::Ack);
            }
            Ok(intent) => intent,
        };
        if now() - since > self.key_retention.saturating_sub(self.key_retention / 24) {
            return Ok(Outcome::dead_letter(format!(
                "the charge under idempotency key {idempotency_key}, first asked for at {since}, has no recorded \
                 outcome and the gateway may have forgotten the key: settle it by hand from the gateway's records"
            )));
        }
        let request = ChargeRequest { idempotency_key, amount_cents, currency: currency.clone(), order: order.clone() };
        let outcome = match self.gateway.charge(&request).await {
            Ok(Charge::Approved { charge_id }) => LedgerEntry::Charged { charge_id, amount_cents, currency, at: now() },
            Ok(Charge::Declined { reason }) => LedgerEntry::Declined { reason, at: now() },
            Err(unavailable) => return Ok(Outcome::unavailable(unavailable)),
        };
        let settled = match self.ledger.replace(&order, &outcome, revision).await? {
            Some(_) => outcome,
            None => match self.ledger.read(&order).await? {
                Some(Versioned { entry, .. }) if !matches!(entry, LedgerEntry::Pending { .. }) => entry,
                _ => return Ok(Outcome::retry("the ledger entry changed while the gateway answered")),
            },
        };
        self.announce(reserved, settled).await?;
        Ok(Outcome::Ack)
    }

    /// The order's intent (its key, since when, the revision), written now if it had
    /// none; or, as the error, the outcome already settled. The write comes first: on
    /// a first delivery it is the only ledger request, and it fails only for an order
    /// that has an entry, which is then read.
    async fn intent(&self, order: &str) -> anyhow::Result<Result<(String, OffsetDateTime, u64), LedgerEntry>> {
        // Twice at most: the entry could be removed between the failed write and the read.
        for _ in 0..2 {
            let (idempotency_key, since) = (format!("jetway-payment-{order}"), now());
            let intent = LedgerEntry::Pending { idempotency_key: idempotency_key.clone(), since };
            if let Some(revision) = self.ledger.create(order, &intent).await? {
                return Ok(Ok((idempotency_key, since, revision)));
            }
            match self.ledger.read(order).await? {
                Some(Versioned { entry: LedgerEntry::Pending { idempotency_key, since }, revision }) => {
                    return Ok(Ok((idempotency_key, since, revision)));
                }
                Some(Versioned { entry, .. }) => return Ok(Err(entry)),
                None => {}
            }
        }
        anyhow::bail!("the ledger entry of {order} keeps changing")
    }

    async fn announce(&self, reserved: &InventoryReserved, settled: LedgerEntry) -> anyhow::Result<()> {
        let (order_id, customer_id) = (reserved.order_id.clone(), reserved.customer_id.clone());
        match settled {
            LedgerEntry::Charged { charge_id, amount_cents, currency, at } => {
                let event =
                    PaymentCompleted { order_id, customer_id, charge_id, amount_cents, currency, charged_at: at };
                self.publisher.publish(&event).await
            }
            LedgerEntry::Declined { reason, at } => {
                let event = PaymentFailed { order_id, customer_id, reason, failed_at: at };
                self.publisher.publish(&event).await
            }
            LedgerEntry::Pending { .. } => anyhow::bail!("an order without an outcome cannot be announced"),
        }
    }
}

#[cfg(test)]
mod tests;
