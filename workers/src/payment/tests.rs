use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::fixtures::{delivery_of, reserved};
use crate::publish::outbox::Outbox;

/// A ledger in memory, with the same conditional writes.
#[derive(Default)]
struct MemoryLedger(Mutex<HashMap<String, Versioned>>);

impl Ledger for MemoryLedger {
    async fn read(&self, order: &str) -> anyhow::Result<Option<Versioned>> {
        Ok(self.0.lock().unwrap().get(order).cloned())
    }

    async fn create(&self, order: &str, entry: &LedgerEntry) -> anyhow::Result<Option<u64>> {
        let mut entries = self.0.lock().unwrap();
        if entries.contains_key(order) {
            return Ok(None);
        }
        entries.insert(order.into(), Versioned { entry: entry.clone(), revision: 1 });
        Ok(Some(1))
    }

    async fn replace(&self, order: &str, entry: &LedgerEntry, revision: u64) -> anyhow::Result<Option<u64>> {
        let mut entries = self.0.lock().unwrap();
        match entries.get_mut(order) {
            Some(current) if current.revision == revision => {
                *current = Versioned { entry: entry.clone(), revision: revision + 1 };
                Ok(Some(revision + 1))
            }
            _ => Ok(None),
        }
    }
}

/// A gateway in memory that honours idempotency keys; `outage` makes it answer nothing.
#[derive(Default)]
struct MemoryGateway {
    answers: Mutex<HashMap<String, Charge>>,
    calls: Mutex<Vec<String>>,
    charges: AtomicU64,
    outage: AtomicBool,
    declines: AtomicBool,
}

impl Gateway for MemoryGateway {
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayUnavailable> {
        self.calls.lock().unwrap().push(request.idempotency_key.clone());
        if self.outage.load(Ordering::Relaxed) {
            return Err(GatewayUnavailable("HTTP 503".into()));
        }
        tokio::task::yield_now().await;
        let mut answers = self.answers.lock().unwrap();
        let answer = answers.entry(request.idempotency_key.clone()).or_insert_with(|| {
            if self.declines.load(Ordering::Relaxed) {
                return Charge::Declined { reason: "card_declined".into() };
            }
            let n = self.charges.fetch_add(1, Ordering::Relaxed) + 1;
            Charge::Approved { charge_id: format!("ch_{n}") }
        });
        Ok(answer.clone())
    }
}

const ORDER: &str = "customer-1.o-1";
const COMPLETED: &str = "payments.completed.v1.customer-1.o-1";

fn payment() -> Payment<MemoryGateway, MemoryLedger, Outbox> {
    Payment::new(MemoryGateway::default(), MemoryLedger::default(), Outbox::default())
}

fn delivery(delivered: u64) -> crate::consume::Delivery {
    delivery_of("inventory.reserved.v1.customer-1.o-1", delivered)
}

fn entry(payment: &Payment<MemoryGateway, MemoryLedger, Outbox>) -> Option<LedgerEntry> {
    payment.ledger.0.lock().unwrap().get(ORDER).map(|versioned| versioned.entry.clone())
}

#[tokio::test]
async fn a_first_delivery_charges_records_and_announces() {
    let payment = payment();
    assert_eq!(payment.handle(reserved("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1);
    assert_eq!(*payment.gateway.calls.lock().unwrap(), ["jetway-payment-customer-1.o-1"]);
    assert!(matches!(entry(&payment), Some(LedgerEntry::Charged { amount_cents: 2999, .. })));
    assert_eq!(payment.publisher.published(), [COMPLETED]);
}

#[tokio::test]
async fn a_settled_order_is_announced_again_without_the_gateway() {
    let payment = payment();
    payment.handle(reserved("o-1"), &delivery(1)).await;
    payment.gateway.outage.store(true, Ordering::Relaxed);
    // Any delivery, the first included (the same order reserved twice), finds it settled.
    for delivered in [1, 2] {
        assert_eq!(payment.handle(reserved("o-1"), &delivery(delivered)).await, Outcome::Ack);
    }
    assert_eq!(payment.gateway.calls.lock().unwrap().len(), 1, "only the first delivery asked the gateway");
    assert_eq!(payment.publisher.published(), [COMPLETED]);
}

#[tokio::test]
async fn a_worker_that_died_after_its_intent_leaves_the_charge_to_the_next_delivery_under_the_same_key() {
    let payment = payment();
    let intent = LedgerEntry::Pending { idempotency_key: "key-of-the-dead-worker".into(), since: now() };
    payment.ledger.create(ORDER, &intent).await.unwrap();
    assert_eq!(payment.handle(reserved("o-1"), &delivery(2)).await, Outcome::Ack);
    assert_eq!(*payment.gateway.calls.lock().unwrap(), ["key-of-the-dead-worker"]);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1);
    assert!(matches!(entry(&payment), Some(LedgerEntry::Charged { .. })));
}

#[tokio::test]
async fn a_worker_that_died_after_the_charge_is_answered_the_same_charge_on_redelivery() {
    let payment = payment();
    payment.gateway.outage.store(true, Ordering::Relaxed);
    // The charge went through but its answer never came back: the outcome is unknown.
    let first = payment.handle(reserved("o-1"), &delivery(1)).await;
    assert!(matches!(first, Outcome::Unavailable { .. }), "{first:?}");
    payment.gateway.answers.lock().unwrap().insert(
        "jetway-payment-customer-1.o-1".into(),
        Charge::Approved { charge_id: "ch_made_before_the_crash".into() },
    );
    payment.gateway.outage.store(false, Ordering::Relaxed);
    assert_eq!(payment.handle(reserved("o-1"), &delivery(2)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 0, "no second charge");
    assert!(
        matches!(entry(&payment), Some(LedgerEntry::Charged { charge_id, .. }) if charge_id == "ch_made_before_the_crash")
    );
}

#[tokio::test]
async fn racing_deliveries_record_one_charge_and_both_announce_it() {
    let payment = payment();
    let (first_delivery, second_delivery) = (delivery(1), delivery(2));
    let (first, second) = tokio::join!(
        payment.handle(reserved("o-1"), &first_delivery),
        payment.handle(reserved("o-1"), &second_delivery)
    );
    assert_eq!((first, second), (Outcome::Ack, Outcome::Ack));
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1, "the idempotency key held");
    let calls = payment.gateway.calls.lock().unwrap();
    assert!(calls.iter().all(|key| *key == calls[0]), "one key for the order: {calls:?}");
    assert_eq!(payment.publisher.published(), [COMPLETED]);
}

#[tokio::test]
async fn a_gateway_outage_is_waited_for_and_leaves_only_the_intent() {
    let payment = payment();
    payment.gateway.outage.store(true, Ordering::Relaxed);
    assert!(matches!(payment.handle(reserved("o-1"), &delivery(1)).await, Outcome::Unavailable { .. }));
    assert!(matches!(entry(&payment), Some(LedgerEntry::Pending { .. })));
    assert!(payment.publisher.published().is_empty());
}

#[tokio::test]
async fn a_decline_is_recorded_and_announced_as_failed() {
    let payment = payment();
    payment.gateway.declines.store(true, Ordering::Relaxed);
    assert_eq!(payment.handle(reserved("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 0);
    assert!(matches!(entry(&payment), Some(LedgerEntry::Declined { .. })));
    assert_eq!(payment.publisher.published(), ["payments.failed.v1.customer-1.o-1"]);
}

#[tokio::test]
async fn an_unpublished_outcome_is_retried_and_then_announced_from_the_ledger() {
    let payment = payment();
    payment.publisher.fail.store(true, Ordering::Relaxed);
    assert!(matches!(payment.handle(reserved("o-1"), &delivery(1)).await, Outcome::Unavailable { .. }));
    payment.publisher.fail.store(false, Ordering::Relaxed);
    assert_eq!(payment.handle(reserved("o-1"), &delivery(2)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1);
    assert_eq!(payment.publisher.published(), [COMPLETED]);
}

#[tokio::test]
async fn an_intent_older_than_the_gateways_memory_is_dead_lettered_not_charged_again() {
    let payment = payment();
    let since = now() - KEY_RETENTION;
    payment.ledger.create(ORDER, &LedgerEntry::Pending { idempotency_key: "old".into(), since }).await.unwrap();
    let outcome = payment.handle(reserved("o-1"), &delivery(3)).await;
    assert!(matches!(&outcome, Outcome::DeadLetter { error } if error.contains("by hand")), "{outcome:?}");
    assert!(payment.gateway.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_reservation_without_a_total_is_dead_lettered() {
    let payment = payment();
    let old = InventoryReserved { total_cents: None, currency: None, ..reserved("o-1") };
    assert!(matches!(payment.handle(old, &delivery(1)).await, Outcome::DeadLetter { .. }));
    assert!(payment.gateway.calls.lock().unwrap().is_empty());
}
