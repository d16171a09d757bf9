//! Payment on a real nats-server: exactly one charge per order whatever the
//! deliveries, and dead letters with their origin.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jetway_workers::consume::dead_letter;
use jetway_workers::events::{Event, OrderCreated};
use jetway_workers::payment::{Payment, SimulatedGateway};
use jetway_workers::topology::{self, ConsumerSettings};
use support::{InProcess, Pipeline, ids, loop_config};

async fn payment(
    pipeline: &Pipeline,
    gateway: Arc<SimulatedGateway>,
) -> Arc<Payment<Arc<SimulatedGateway>, async_nats::jetstream::kv::Store, async_nats::jetstream::Context>> {
    let ledger = topology::ledger(&pipeline.jetstream).await.unwrap();
    Arc::new(Payment { gateway, ledger, publisher: pipeline.jetstream.clone() })
}

#[tokio::test]
async fn redeliveries_and_a_second_worker_never_charge_an_order_twice() {
    let pipeline = Pipeline::start().await;
    // Every charge takes longer than the ack wait, so each order is redelivered, to
    // either worker, while its first delivery is still at the gateway.
    let settings = ConsumerSettings { ack_wait: Duration::from_secs(1), max_deliver: 50, ..Default::default() };
    let gateway = Arc::new(SimulatedGateway::new(Duration::from_millis(1500), 0.0, 0.0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let consumer = pipeline.consumer(&topology::PAYMENT[0], settings.clone()).await;
        let handler = payment(&pipeline, gateway.clone()).await;
        workers.push(InProcess::start(&pipeline, "payment", consumer, handler, loop_config("payment")));
    }
    pipeline.publish_orders(ids("order", 200)).await;
    // The same orders submitted again later (past the stream's duplicate window, so
    // stored again): new messages, the same orders.
    for id in ids("order", 50) {
        let payload = serde_json::to_vec(&support::order(&id)).unwrap();
        pipeline.jetstream.publish(OrderCreated::SUBJECT, payload.into()).await.unwrap().await.unwrap();
    }

    pipeline.wait_ledger(200).await;
    pipeline.wait_drained("ORDERS", "payment").await;
    for worker in workers {
        worker.stop().await;
    }

    assert!(gateway.repeated.load(Ordering::Relaxed) > 0, "deliveries raced to the gateway");
    assert_eq!(gateway.charges.load(Ordering::Relaxed), 200, "one charge per order at the gateway");
    assert_eq!(pipeline.ledger_writes().await, 200, "one ledger write per order");
    let payments = pipeline.payments_per_order().await;
    assert_eq!(payments.len(), 200);
    assert!(payments.values().all(|count| *count == 1), "one payment event per order: {payments:?}");
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_maximum_deliveries() {
    let pipeline = Pipeline::start().await;
    let settings = ConsumerSettings { max_deliver: 3, ..Default::default() };
    let consumer = pipeline.consumer(&topology::PAYMENT[0], settings).await;
    let gateway = Arc::new(SimulatedGateway::new(Duration::ZERO, 1.0, 0.0));
    let worker =
        InProcess::start(&pipeline, "payment", consumer, payment(&pipeline, gateway).await, loop_config("payment"));
    pipeline.publish_orders(ids("poison", 1)).await;

    pipeline.wait_drained("ORDERS", "payment").await;
    worker.stop().await;

    let letters = pipeline.read_all("DEAD_LETTERS").await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.subject.as_str(), "deadletter.payment");
    let header = |name: &str| letter.headers.as_ref().unwrap().get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(dead_letter::ORIGIN_STREAM).as_deref(), Some("ORDERS"));
    assert_eq!(header(dead_letter::ORIGIN_SEQUENCE).as_deref(), Some("1"));
    assert_eq!(header(dead_letter::ORIGIN_SUBJECT).as_deref(), Some(OrderCreated::SUBJECT));
    assert_eq!(header(dead_letter::DELIVERIES).as_deref(), Some("3"));
    let reason = header(dead_letter::REASON).unwrap();
    assert!(reason.contains("gave up after 3 deliveries") && reason.contains("gateway unavailable"), "{reason}");
    let order: OrderCreated = serde_json::from_slice(&letter.payload).expect("the original payload");
    assert_eq!(order.order_id, "poison-000000");
    assert_eq!(pipeline.ledger_writes().await, 0);
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_on_its_first_delivery() {
    let pipeline = Pipeline::start().await;
    let consumer = pipeline.consumer(&topology::PAYMENT[0], ConsumerSettings::default()).await;
    let gateway = Arc::new(SimulatedGateway::new(Duration::ZERO, 0.0, 0.0));
    let worker =
        InProcess::start(&pipeline, "payment", consumer, payment(&pipeline, gateway).await, loop_config("payment"));
    pipeline.jetstream.publish(OrderCreated::SUBJECT, "{\"orderId\": 42".into()).await.unwrap().await.unwrap();
    pipeline.publish_orders(ids("fine", 3)).await;

    pipeline.wait_drained("ORDERS", "payment").await;
    worker.stop().await;

    let letters = pipeline.read_all("DEAD_LETTERS").await;
    assert_eq!(letters.len(), 1);
    let headers = letters[0].headers.as_ref().unwrap();
    assert_eq!(headers.get(dead_letter::DELIVERIES).unwrap().as_str(), "1");
    assert!(headers.get(dead_letter::REASON).unwrap().as_str().contains("not a valid event"));
    assert_eq!(&letters[0].payload[..], b"{\"orderId\": 42");
    assert_eq!(pipeline.ledger_writes().await, 3, "the good orders around it were paid");
}
