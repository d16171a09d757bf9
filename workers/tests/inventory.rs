//! Inventory on a real nats-server: concurrent workers never oversell, and an order
//! is reserved whole or not at all, once.

mod support;

use std::sync::Arc;

use jetway_workers::events::{LineItem, OrderCreated, event_subject};
use jetway_workers::inventory::{Decision, Inventory, KvStock, Stock};
use jetway_workers::topology::{self, ConsumerSettings};
use support::{InProcess, Pipeline, loop_config};

async fn stock(pipeline: &Pipeline) -> KvStock {
    KvStock::new(pipeline.client.clone(), topology::stock(&pipeline.jetstream, 1).await.unwrap())
}

#[tokio::test]
async fn concurrent_workers_reserve_exactly_the_stock_there_is() {
    let pipeline = Pipeline::start().await;
    let seed = stock(&pipeline).await;
    seed.set("WIDGET", 100).await.unwrap();
    seed.set("GADGET", 1_000).await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let consumer = pipeline.consumer(&topology::INVENTORY[0], ConsumerSettings::default()).await;
        let handler = Arc::new(Inventory { stock: stock(&pipeline).await, publisher: pipeline.jetstream.clone() });
        workers.push(InProcess::start(&pipeline, "inventory", consumer, handler, loop_config("inventory")));
    }
    // 150 orders of 2 widgets and 1 gadget: widgets run out after 50.
    pipeline.publish_orders(support::ids("order", 150)).await;

    pipeline.wait_drained("ORDERS", "inventory").await;
    for worker in workers {
        worker.stop().await;
    }

    assert_eq!(seed.available("WIDGET").await.unwrap().0, 0);
    assert_eq!(seed.available("GADGET").await.unwrap().0, 950, "a rejected order reserved none of its lines");
    let events = pipeline.read_all("INVENTORY").await;
    let count = |subject: &str| events.iter().filter(|m| event_subject(&m.subject) == subject).count();
    assert_eq!(count("inventory.reserved.v1"), 50);
    assert_eq!(count("inventory.rejected.v1"), 100);
}

#[tokio::test]
async fn a_second_reservation_of_an_order_returns_the_first_decision() {
    let pipeline = Pipeline::start().await;
    let stock = stock(&pipeline).await;
    stock.set("WIDGET", 3).await.unwrap();
    let order = OrderCreated {
        items: vec![LineItem { sku: "WIDGET".into(), quantity: 2, unit_price_cents: 1 }],
        ..support::order("o-1")
    };
    let lines = jetway_workers::inventory::wanted(&order);
    let first = stock.reserve("o-1", &lines).await.unwrap();
    assert!(matches!(first, Decision::Reserved { .. }));
    assert_eq!(stock.reserve("o-1", &lines).await.unwrap(), first);
    assert_eq!(stock.available("WIDGET").await.unwrap().0, 1, "reserved once");

    // Rejected once, rejected for good: a restock does not turn a redelivery into a reservation.
    let rejected = stock.reserve("o-2", &lines).await.unwrap();
    assert!(matches!(rejected, Decision::Rejected { available: 1, .. }), "{rejected:?}");
    stock.set("WIDGET", 10).await.unwrap();
    assert_eq!(stock.reserve("o-2", &lines).await.unwrap(), rejected);
}

#[tokio::test]
async fn a_batch_with_one_failed_expectation_stores_none_of_its_messages() {
    use async_nats::{HeaderMap, header};
    use jetway_workers::batch::{BatchMessage, publish_atomically};

    let pipeline = Pipeline::start().await;
    let store = topology::stock(&pipeline.jetstream, 1).await.unwrap();
    store.put("stock.WIDGET", "5".into()).await.unwrap();
    let message = |key: &str, expected: u64| {
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
        BatchMessage { subject: format!("$KV.inventory.{key}").into(), headers, payload: "x".into() }
    };

    let stale =
        publish_atomically(&pipeline.client, vec![message("reservation.o-1", 0), message("stock.WIDGET", 99)]).await;
    assert!(stale.as_ref().is_err_and(|error| error.is_conflict()), "{stale:?}");
    assert_eq!(store.get("reservation.o-1").await.unwrap(), None, "the first message was not stored either");

    publish_atomically(&pipeline.client, vec![message("reservation.o-1", 0), message("stock.WIDGET", 1)])
        .await
        .unwrap();
    assert_eq!(store.get("reservation.o-1").await.unwrap().as_deref(), Some(&b"x"[..]));
}
