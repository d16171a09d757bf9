//! The whole pipeline on a real nats-server, through its binaries: an order posted to
//! intake is paid, reserved and audited, with one trace from the HTTP request on, and
//! audit replays it.

mod support;

use std::time::Duration;

use jetway_workers::audit;
use jetway_workers::trace::{TRACEPARENT, TraceContext};
use support::{EVENTUALLY, POLL, Pipeline, Worker, http_get, http_request};

#[tokio::test]
async fn an_order_flows_through_every_worker_with_one_trace() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    let intake = Worker::spawn("intake", &url, &[]).ready().await;
    let payment = Worker::spawn("payment", &url, &["--create-topology"]).ready().await;
    let inventory =
        Worker::spawn("inventory", &url, &["--create-topology", "--seed-stock", "WIDGET=10,GADGET=10"]).ready().await;
    let audit_worker = Worker::spawn("audit", &url, &["--create-topology"]).ready().await;
    let started = time::OffsetDateTime::now_utc();

    let trace = TraceContext::root();
    let headers = [("content-type", "application/json"), (TRACEPARENT, &trace.to_string())];
    let (status, body) =
        http_request("POST", &format!("http://{}/orders", intake.http), &headers, &support::order_request("o-1"))
            .await
            .unwrap();
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((accepted["orderId"].as_str(), accepted["stream"].as_str()), (Some("o-1"), Some("ORDERS")));

    // Orders, payments and inventory: three events, each audited.
    let records = jetway_testground::wait::until("the order's events to be audited", EVENTUALLY, POLL, || async {
        let records = audit::replay(&pipeline.jetstream, started, time::OffsetDateTime::now_utc()).await?;
        Ok((records.len() == 3).then_some(records))
    })
    .await
    .unwrap();
    let mut subjects: Vec<_> = records.iter().map(|record| record.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(subjects, ["inventory.reserved.v1", "orders.created.v1", "payments.completed.v1"]);
    assert!(records.iter().all(|record| record.event["orderId"] == "o-1"));

    for stream in ["ORDERS", "PAYMENTS", "INVENTORY", "AUDIT"] {
        for message in pipeline.read_all(stream).await {
            let header = message.headers.as_ref().and_then(|h| h.get(TRACEPARENT)).expect("a traceparent");
            let context = TraceContext::parse(header.as_str()).expect("a valid traceparent");
            assert_eq!(context.trace_id(), trace.trace_id(), "{} carries the request's trace", message.subject);
        }
    }

    // A replay of a range before the order holds nothing.
    let earlier = audit::replay(&pipeline.jetstream, started - Duration::from_secs(3600), started).await.unwrap();
    assert!(earlier.is_empty(), "{earlier:?}");

    // Each worker counts what it did.
    for (worker, name) in [(&payment, "payment"), (&inventory, "inventory"), (&audit_worker, "audit")] {
        let (_, metrics) = http_get(&format!("http://{}/metrics", worker.http)).await.unwrap();
        let processed = format!("jetway_worker_messages_processed_total{{worker=\"{name}\"}} ");
        assert!(metrics.contains(&processed), "{name}: {metrics}");
        for family in ["messages_failed", "messages_dead_lettered", "processing_duration_seconds", "messages_in_flight"]
        {
            assert!(metrics.contains(&format!("jetway_worker_{family}")), "{name} lacks {family}");
        }
    }
    let (_, metrics) = http_get(&format!("http://{}/metrics", intake.http)).await.unwrap();
    assert!(metrics.contains("jetway_worker_orders_answered_total{status=\"202\"} 1"), "{metrics}");
}

#[tokio::test]
async fn intake_names_the_field_of_a_bad_order_and_stores_nothing() {
    let pipeline = Pipeline::start().await;
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let body = r#"{"orderId":"o-1","customerId":"c-1","currency":"EUR","items":[{"sku":"W","quantity":0,"unitPriceCents":5}]}"#;
    let (status, answer) =
        http_request("POST", &format!("http://{}/orders", intake.http), &[("content-type", "application/json")], body)
            .await
            .unwrap();
    assert_eq!(status, 400);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["field"], "items[0].quantity");
    assert_eq!(pipeline.stream_messages("ORDERS").await, 0);
}

#[tokio::test]
async fn audit_records_cannot_be_deleted() {
    let pipeline = Pipeline::start().await;
    let mut stream = pipeline.stream(audit::STREAM).await;
    pipeline.jetstream.publish("audit.orders.created.v1", "{}".into()).await.unwrap().await.unwrap();
    assert!(stream.delete_message(1).await.is_err(), "deleting a record is refused");
    assert!(stream.purge().await.is_err(), "purging is refused");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}
