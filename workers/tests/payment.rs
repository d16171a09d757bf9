//! Payment on a real nats-server against the gateway simulator, counted at the
//! gateway: exactly one charge per order whatever the deliveries, and dead letters
//! with their origin.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use jetway_testground::wait::until;
use jetway_workers::consume::dead_letter;
use jetway_workers::events::{Event, InventoryReserved};
use jetway_workers::payment::{HttpGateway, Payment};
use jetway_workers::topology::{self, ConsumerSettings};
use support::gateway::Gateway;
use support::{EVENTUALLY, InProcess, POLL, Pipeline, ids, loop_config, reservation};

type Handler = Payment<HttpGateway, kv::Store, async_nats::jetstream::Context>;

async fn payment(pipeline: &Pipeline, gateway: &Gateway) -> Arc<Handler> {
    let ledger = topology::ledger(&pipeline.jetstream, 1).await.unwrap();
    let client = HttpGateway::new(&gateway.url(), None, Duration::from_secs(10)).unwrap();
    Arc::new(Payment::new(client, ledger, pipeline.jetstream.clone()))
}

/// `workers` payment loops on one consumer with `settings`.
async fn workers(pipeline: &Pipeline, gateway: &Gateway, settings: ConsumerSettings, count: usize) -> Vec<InProcess> {
    let mut workers = Vec::new();
    for _ in 0..count {
        let consumer = pipeline.consumer(&topology::PAYMENT[0], settings.clone()).await;
        let handler = payment(pipeline, gateway).await;
        workers.push(InProcess::start(pipeline, "payment", consumer, handler, loop_config("payment")));
    }
    workers
}

async fn stop(workers: Vec<InProcess>) {
    for worker in workers {
        worker.stop().await;
    }
}

/// Every one of `orders` settled, announced once, and charged once at the gateway.
async fn assert_each_order_charged_once(pipeline: &Pipeline, gateway: &Gateway, orders: u64) {
    let payments = pipeline.payments_per_order().await;
    assert_eq!(payments.len() as u64, orders, "every order has its payment event");
    assert!(payments.values().all(|count| *count == 1), "one payment event per order: {payments:?}");
    let stats = gateway.stats().await;
    assert_eq!(stats.charges, orders, "one charge per order at the gateway: {stats:?}");
    assert_eq!((stats.orders, stats.duplicate_charges), (orders, 0), "{stats:?}");
}

#[tokio::test]
async fn a_charge_slower_than_the_ack_wait_is_kept_in_progress_and_never_started_twice() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&["--latency", "1500ms"]).await;
    // Every charge takes longer than the ack wait: without in-progress acks each order
    // would be redelivered, to either worker, while its first delivery is at the gateway.
    let settings = ConsumerSettings { ack_wait: Duration::from_secs(1), max_deliver: 50, ..Default::default() };
    let running = workers(&pipeline, &gateway, settings, 2).await;
    pipeline.publish_reservations(ids("order", 200)).await;

    pipeline.wait_payment_outcomes(200).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    assert_each_order_charged_once(&pipeline, &gateway, 200).await;
    let info = pipeline.stream("INVENTORY").await.consumer_info("payment").await.unwrap().clone();
    assert_eq!(info.num_redelivered, 0, "no delivery outlived its ack wait");
    assert_eq!(gateway.stats().await.replays, 0, "no order was asked for twice");
}

#[tokio::test]
async fn an_order_reserved_again_long_after_is_charged_once_and_announced_once() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&[]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings::default(), 1).await;
    pipeline.publish_reservations(ids("order", 100)).await;
    pipeline.wait_payment_outcomes(100).await;
    // The same reservations stored again (as after a duplicate window ran out): new
    // messages, the same orders.
    pipeline.publish_reservations(ids("order", 50)).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    assert_eq!(pipeline.stream_messages("INVENTORY").await, 150, "every copy was delivered");
    assert_each_order_charged_once(&pipeline, &gateway, 100).await;
    assert_eq!(gateway.stats().await.replays, 0, "a settled order does not reach the gateway again");
}

#[tokio::test]
async fn answers_lost_after_the_charge_are_settled_by_asking_again_under_the_same_key() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&["--lost-answer-rate", "0.5"]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings { max_deliver: 20, ..Default::default() }, 2).await;
    pipeline.publish_reservations(ids("order", 300)).await;

    pipeline.wait_payment_outcomes(300).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    let stats = gateway.stats().await;
    assert!(stats.lost_answers > 50 && stats.replays >= stats.lost_answers, "answers were lost: {stats:?}");
    assert_each_order_charged_once(&pipeline, &gateway, 300).await;
}

#[tokio::test]
async fn a_declined_charge_is_announced_as_failed_and_nothing_is_taken() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&["--decline-rate", "1"]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings::default(), 1).await;
    pipeline.publish_reservations(ids("order", 20)).await;
    pipeline.wait_payment_outcomes(20).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    let outcomes = pipeline.read_all("PAYMENTS").await;
    assert!(outcomes.iter().all(|m| m.subject.starts_with("payments.failed.v1.customer-1.")), "all failed");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.declines), (0, 20), "{stats:?}");
}

#[tokio::test]
async fn a_gateway_outage_holds_the_order_without_using_deliveries_and_it_is_charged_once_after() {
    let pipeline = Pipeline::start().await;
    let mut gateway = Gateway::start(&["--failure-rate", "1"]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings { max_deliver: 3, ..Default::default() }, 1).await;
    pipeline.publish_reservations(ids("held", 2)).await;

    // Far longer than three deliveries' backoff (20, 40, 80 ms): counted as deliveries,
    // the outage would have made dead letters of both orders by now.
    let stream = pipeline.stream("INVENTORY").await;
    until("the gateway to refuse the orders again and again", EVENTUALLY, POLL, || async {
        Ok((gateway.stats().await.outages >= 20).then_some(()))
    })
    .await
    .unwrap();
    let info = stream.consumer_info("payment").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_redelivered), (2, 0), "held in progress, delivered once: {info:?}");
    assert_eq!(pipeline.stream_messages("DEAD_LETTERS").await, 0);

    gateway.kill().await;
    gateway.start_again(&[]).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;
    assert_each_order_charged_once(&pipeline, &gateway, 2).await;
    assert_eq!(pipeline.stream_messages("DEAD_LETTERS").await, 0);
}

#[tokio::test]
async fn an_unreadable_ledger_entry_is_dead_lettered_after_the_maximum_deliveries() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&[]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings { max_deliver: 3, ..Default::default() }, 1).await;
    // What is in the ledger for the order cannot be read: no delivery will read it better.
    let ledger = pipeline.jetstream.get_key_value(jetway_workers::payment::LEDGER_BUCKET).await.unwrap();
    let order = reservation("poison-000000").order().to_string();
    ledger.put(&order, "not an entry".into()).await.unwrap();
    pipeline.publish_reservations(ids("poison", 1)).await;

    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    let letters = pipeline.read_all("DEAD_LETTERS").await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.subject.as_str(), "deadletter.payment");
    let header = |name: &str| letter.headers.as_ref().unwrap().get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(dead_letter::ORIGIN_STREAM).as_deref(), Some("INVENTORY"));
    assert_eq!(header(dead_letter::ORIGIN_SEQUENCE).as_deref(), Some("1"));
    assert_eq!(header(dead_letter::ORIGIN_SUBJECT), Some(reservation("poison-000000").subject()));
    assert_eq!(header(dead_letter::DELIVERIES).as_deref(), Some("3"));
    let reason = header(dead_letter::REASON).unwrap();
    assert!(reason.contains("gave up after 3 deliveries"), "{reason}");
    let reserved: InventoryReserved = serde_json::from_slice(&letter.payload).expect("the original payload");
    assert_eq!(reserved.order_id, "poison-000000");
    assert_eq!(pipeline.payment_outcomes().await, 0);
    assert_eq!(gateway.stats().await.charges, 0);
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_on_its_first_delivery() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&[]).await;
    let running = workers(&pipeline, &gateway, ConsumerSettings::default(), 1).await;
    let subject = "inventory.reserved.v1.customer-1.broken";
    pipeline.jetstream.publish(subject, "{\"orderId\": 42".into()).await.unwrap().await.unwrap();
    pipeline.publish_reservations(ids("fine", 3)).await;

    pipeline.wait_drained("INVENTORY", "payment").await;
    stop(running).await;

    let letters = pipeline.read_all("DEAD_LETTERS").await;
    assert_eq!(letters.len(), 1);
    let headers = letters[0].headers.as_ref().unwrap();
    assert_eq!(headers.get(dead_letter::DELIVERIES).unwrap().as_str(), "1");
    assert!(headers.get(dead_letter::REASON).unwrap().as_str().contains("not a valid event"));
    assert_eq!(&letters[0].payload[..], b"{\"orderId\": 42");
    assert_eq!(gateway.stats().await.charges, 3, "the good orders around it were charged");
}
