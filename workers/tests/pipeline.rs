//! The whole pipeline on a real nats-server, through its binaries: an order posted to
//! intake is reserved, paid and audited, with one trace from the HTTP request on, and
//! audit replays it; orders without stock are never charged, a declined charge gives
//! the stock back, and intake takes each order once, forever.

mod support;

use std::time::Duration;

use jetway_workers::audit;
use jetway_workers::events::event_subject;
use jetway_workers::trace::{TRACEPARENT, TraceContext};
use support::gateway::Gateway;
use support::{EVENTUALLY, POLL, Pipeline, Worker, http_get, http_request};

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn an_order_flows_through_every_worker_with_one_trace() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    let gateway = Gateway::start(&[]).await;
    let intake = Worker::spawn("intake", &url, &[]).ready().await;
    let payment = Worker::spawn("payment", &url, &["--create-topology", "--gateway-url", &gateway.url()]).ready().await;
    let inventory =
        Worker::spawn("inventory", &url, &["--create-topology", "--seed-stock", "WIDGET=10,GADGET=10"]).ready().await;
    let audit_worker = Worker::spawn("audit", &url, &["--create-topology"]).ready().await;
    let started = time::OffsetDateTime::now_utc();

    let trace = TraceContext::root();
    let headers = [JSON, (TRACEPARENT, &trace.to_string())];
    let (status, body) =
        http_request("POST", &format!("http://{}/orders", intake.http), &headers, &support::order_request("o-1"))
            .await
            .unwrap();
    assert_eq!(status, 202, "{body}");
    let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((accepted["orderId"].as_str(), accepted["stream"].as_str()), (Some("o-1"), Some("ORDERS")));

    // Orders, payments and inventory: three events, each audited.
    let records = jetway_testground::wait::until("the order's events to be audited", EVENTUALLY, POLL, || async {
        let mut records = Vec::new();
        audit::replay(&pipeline.jetstream, started, time::OffsetDateTime::now_utc(), |record| {
            records.push(record);
            Ok(())
        })
        .await?;
        Ok((records.len() == 3).then_some(records))
    })
    .await
    .unwrap();
    let mut subjects: Vec<_> = records.iter().map(|record| event_subject(&record.subject)).collect();
    subjects.sort();
    assert_eq!(subjects, ["inventory.reserved.v1", "orders.created.v1", "payments.completed.v1"]);
    assert!(records.iter().all(|record| record.subject.ends_with(".customer-1.o-1")), "{records:?}");
    assert!(records.iter().all(|record| record.event["orderId"] == "o-1"));
    assert_eq!(gateway.stats().await.charges, 1);

    for stream in ["ORDERS", "PAYMENTS", "INVENTORY", "AUDIT"] {
        for message in pipeline.read_all(stream).await {
            let header = message.headers.as_ref().and_then(|h| h.get(TRACEPARENT)).expect("a traceparent");
            let context = TraceContext::parse(header.as_str()).expect("a valid traceparent");
            assert_eq!(context.trace_id(), trace.trace_id(), "{} carries the request's trace", message.subject);
        }
    }

    // A replay of a range before the order holds nothing.
    let earlier = audit::replay(&pipeline.jetstream, started - Duration::from_secs(3600), started, |record| {
        anyhow::bail!("nothing was recorded then: {record:?}")
    });
    assert_eq!(earlier.await.unwrap(), 0);

    // Each worker counts what it did.
    for (worker, name) in [(&payment, "payment"), (&inventory, "inventory"), (&audit_worker, "audit")] {
        let (_, metrics) = http_get(&format!("http://{}/metrics", worker.http)).await.unwrap();
        let processed = format!("jetway_worker_messages_processed_total{{worker=\"{name}\"}} ");
        assert!(metrics.contains(&processed), "{name}: {metrics}");
        for family in [
            "messages_failed",
            "messages_dead_lettered",
            "dependency_waits",
            "processing_duration_seconds",
            "messages_in_flight",
        ] {
            assert!(metrics.contains(&format!("jetway_worker_{family}")), "{name} lacks {family}");
        }
    }
    let (_, metrics) = http_get(&format!("http://{}/metrics", intake.http)).await.unwrap();
    assert!(metrics.contains("jetway_worker_orders_answered_total{status=\"202\"} 1"), "{metrics}");

    // The dashboard's worker panels query what these processes export, labels included.
    let mut scraped = String::new();
    for worker in [&intake, &payment, &inventory, &audit_worker] {
        scraped += &http_get(&format!("http://{}/metrics", worker.http)).await.unwrap().1;
    }
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/jetway/dashboards/jetway.json");
    let scrape = jetway_testground::dashboard::Scrape::parse(&scraped);
    let checked = jetway_testground::dashboard::check(dashboard.as_ref(), &scrape, |m| m.starts_with("jetway_worker_"));
    assert!(checked.unwrap() >= 6);
}

#[tokio::test]
async fn intake_names_the_field_of_a_bad_order_and_stores_nothing() {
    let pipeline = Pipeline::start().await;
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let body = r#"{"orderId":"o-1","customerId":"c-1","currency":"EUR","items":[{"sku":"W","quantity":0,"unitPriceCents":5}]}"#;
    let (status, answer) =
        http_request("POST", &format!("http://{}/orders", intake.http), &[JSON], body).await.unwrap();
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

#[tokio::test]
async fn intake_takes_each_order_once_and_refuses_another_order_under_a_used_id() {
    let pipeline = Pipeline::start().await;
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let url = format!("http://{}/orders", intake.http);
    let post = |headers: &'static [(&'static str, &'static str)], body: String| {
        let url = url.clone();
        async move {
            let (status, answer) = http_request("POST", &url, headers, &body).await.unwrap();
            (status, serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default())
        }
    };
    let order = support::order_request("o-1");

    let (status, first) = post(&[JSON], order.clone()).await;
    assert_eq!((status, first["duplicate"].as_bool()), (202, Some(false)), "{first}");
    // The same order again, as a client retrying after a timeout would, gets the original acceptance.
    let (status, again) = post(&[JSON], order.clone()).await;
    assert_eq!((status, again["duplicate"].as_bool()), (202, Some(true)), "{again}");
    assert_eq!(again["sequence"], first["sequence"], "the original acceptance");

    let mut other: serde_json::Value = serde_json::from_str(&order).unwrap();
    other["items"][0]["quantity"] = 7.into();
    let (status, conflict) = post(&[JSON], other.to_string()).await;
    assert_eq!((status, conflict["field"].as_str()), (409, Some("orderId")), "{conflict}");

    // Another customer's order under the same id is another order.
    other["customerId"] = "customer-2".into();
    let (status, accepted) = post(&[JSON], other.to_string()).await;
    assert_eq!((status, accepted["duplicate"].as_bool()), (202, Some(false)), "{accepted}");

    let mut anonymous: serde_json::Value = serde_json::from_str(&order).unwrap();
    anonymous.as_object_mut().unwrap().remove("orderId");
    let (status, missing) = post(&[JSON], anonymous.to_string()).await;
    assert_eq!((status, missing["field"].as_str()), (400, Some("orderId")), "{missing}");
    let (status, _) = post(&[("content-type", "text/plain")], order.clone()).await;
    assert_eq!(status, 415);

    assert_eq!(pipeline.stream_messages("ORDERS").await, 2, "one order per customer");
}

#[tokio::test]
async fn an_order_without_stock_is_not_charged_and_a_declined_charge_gives_its_stock_back() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    // Every charge declined: each reserved order's stock comes back.
    let gateway = Gateway::start(&["--decline-rate", "1"]).await;
    let intake = Worker::spawn("intake", &url, &[]).ready().await;
    let _payment =
        Worker::spawn("payment", &url, &["--create-topology", "--gateway-url", &gateway.url()]).ready().await;
    // Two orders' worth of widgets (each order takes two).
    let _inventory =
        Worker::spawn("inventory", &url, &["--create-topology", "--seed-stock", "WIDGET=4,GADGET=100"]).ready().await;
    let orders = format!("http://{}/orders", intake.http);
    for id in ["o-1", "o-2", "o-3"] {
        let (status, body) = http_request("POST", &orders, &[JSON], &support::order_request(id)).await.unwrap();
        assert_eq!(status, 202, "{body}");
    }

    // o-1 and o-2 reserved, charged (declined) and released; o-3 rejected, never charged.
    let subjects = jetway_testground::wait::until("the saga to end", EVENTUALLY, POLL, || async {
        let events = pipeline.read_all("INVENTORY").await;
        let subjects: Vec<String> = events.iter().map(|event| event.subject.to_string()).collect();
        Ok((subjects.iter().filter(|s| s.starts_with("inventory.released.v1.")).count() == 2).then_some(subjects))
    })
    .await
    .unwrap();
    assert!(subjects.contains(&"inventory.rejected.v1.customer-1.o-3".to_owned()), "{subjects:?}");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.declines), (0, 2), "the rejected order never reached the gateway: {stats:?}");
    pipeline.wait_drained("PAYMENTS", "inventory").await;
    let stock = pipeline.jetstream.get_key_value("inventory").await.unwrap();
    let widgets = stock.get("stock.WIDGET").await.unwrap().unwrap();
    assert_eq!(&widgets[..], b"4", "both declined orders gave their widgets back");
}

#[tokio::test]
async fn a_worker_started_before_nats_and_its_consumer_waits_and_then_works() {
    let mut pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    let gateway = Gateway::start(&[]).await;
    pipeline.nats.kill();
    // NATS is down and the payment consumer does not exist: the worker waits, not ready.
    let payment = Worker::spawn("payment", &url, &["--gateway-url", &gateway.url()]);
    let readyz = format!("http://{}/readyz", payment.http);
    jetway_testground::wait::until("the worker to serve its endpoints", EVENTUALLY, POLL, || async {
        Ok(http_get(&readyz).await.ok().map(|(status, _)| status))
    })
    .await
    .map(|status| assert_eq!(status, 503, "not ready without NATS"))
    .unwrap();
    pipeline.nats.start_again().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(http_get(&readyz).await.unwrap().0, 503, "not ready while its consumer does not exist");

    // The operator (here, the test) creates the consumer: the worker finds it and works.
    pipeline.consumer(&jetway_workers::topology::PAYMENT[0], Default::default()).await;
    let payment = payment.ready().await;
    pipeline.publish_reservations(support::ids("late", 5)).await;
    pipeline.wait_payment_outcomes(5).await;
    assert_eq!(gateway.stats().await.charges, 5);
    drop(payment);
}
