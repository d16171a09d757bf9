use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::*;
use crate::fixtures::{delivery, order};
use crate::publish::outbox::Outbox;

/// A ledger in memory, with the same create-if-absent rule.
#[derive(Default)]
struct MemoryLedger(Mutex<HashMap<String, LedgerEntry>>);

impl Ledger for MemoryLedger {
    async fn find(&self, order_id: &str) -> anyhow::Result<Option<LedgerEntry>> {
        Ok(self.0.lock().unwrap().get(order_id).cloned())
    }

    async fn record(&self, order_id: &str, entry: &LedgerEntry) -> anyhow::Result<Recorded> {
        let mut entries = self.0.lock().unwrap();
        match entries.get(order_id) {
            Some(existing) => Ok(Recorded::Existing(existing.clone())),
            None => {
                entries.insert(order_id.into(), entry.clone());
                Ok(Recorded::New)
            }
        }
    }
}

fn payment(failure_rate: f64, decline_rate: f64) -> Payment<SimulatedGateway, MemoryLedger, Outbox> {
    Payment {
        gateway: SimulatedGateway::new(Duration::ZERO, failure_rate, decline_rate),
        ledger: MemoryLedger::default(),
        publisher: Outbox::default(),
    }
}

#[tokio::test]
async fn a_first_delivery_charges_records_and_announces() {
    let payment = payment(0.0, 0.0);
    assert_eq!(payment.handle(order("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1);
    assert!(matches!(payment.ledger.find("o-1").await.unwrap(), Some(LedgerEntry::Charged { amount_cents: 2999, .. })));
    assert_eq!(payment.publisher.published(), [("payments.completed.v1".to_string(), "payment-o-1".to_string())]);
}

#[tokio::test]
async fn a_redelivery_of_a_recorded_order_does_not_reach_the_gateway() {
    let payment = payment(0.0, 0.0);
    payment.handle(order("o-1"), &delivery(1)).await;
    // The gateway would now fail every call: a redelivery must not need it.
    let payment = Payment { gateway: SimulatedGateway::new(Duration::ZERO, 1.0, 0.0), ..payment };
    assert_eq!(payment.handle(order("o-1"), &delivery(2)).await, Outcome::Ack);
    let published = payment.publisher.published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0], published[1], "the same event, deduplicated by its message id");
    let events = payment.publisher.events.lock().unwrap();
    assert_eq!(events[0].2, events[1].2, "the recorded charge is announced again, not a new one");
}

#[tokio::test]
async fn racing_deliveries_record_one_charge_and_both_announce_it() {
    let payment = payment(0.0, 0.0);
    // The second delivery arrives while the first is still running (its ack wait ran out).
    let (first_delivery, second_delivery) = (delivery(1), delivery(2));
    let (first, second) =
        tokio::join!(payment.handle(order("o-1"), &first_delivery), payment.handle(order("o-1"), &second_delivery));
    assert_eq!((first, second), (Outcome::Ack, Outcome::Ack));
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1, "the idempotency key held");
    let events = payment.publisher.events.lock().unwrap();
    assert!(events.iter().all(|event| event.2 == events[0].2));
}

#[tokio::test]
async fn a_gateway_outage_is_retried_and_records_nothing() {
    let payment = payment(1.0, 0.0);
    assert!(matches!(payment.handle(order("o-1"), &delivery(1)).await, Outcome::Retry { after: None, .. }));
    assert_eq!(payment.ledger.find("o-1").await.unwrap(), None);
    assert!(payment.publisher.published().is_empty());
}

#[tokio::test]
async fn a_decline_is_recorded_and_announced_as_failed() {
    let payment = payment(0.0, 1.0);
    assert_eq!(payment.handle(order("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 0);
    assert!(matches!(payment.ledger.find("o-1").await.unwrap(), Some(LedgerEntry::Declined { .. })));
    assert_eq!(payment.publisher.published(), [("payments.failed.v1".to_string(), "payment-o-1".to_string())]);
}

#[tokio::test]
async fn an_unpublished_outcome_is_retried_and_then_announced_from_the_ledger() {
    let payment = payment(0.0, 0.0);
    payment.publisher.fail.store(true, Ordering::Relaxed);
    assert!(matches!(payment.handle(order("o-1"), &delivery(1)).await, Outcome::Retry { .. }));
    payment.publisher.fail.store(false, Ordering::Relaxed);
    assert_eq!(payment.handle(order("o-1"), &delivery(2)).await, Outcome::Ack);
    assert_eq!(payment.gateway.charges.load(Ordering::Relaxed), 1);
    assert_eq!(payment.publisher.published().len(), 1);
}
