//! The whole pipeline on a real nats-server, through its binaries: an order posted to
//! intake is reserved, paid and audited, with one trace from the HTTP request on that
//! Jaeger receives as one tree, and audit replays it; orders without stock are never charged, a declined charge gives
//! the stock back, and intake takes each order once, forever.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jetway_testground::jaeger::Jaeger;
use jetway_workers::audit;
use jetway_workers::events::event_subject;
use jetway_workers::trace::TRACEPARENT;
use support::gateway::Gateway;
use support::{EVENTUALLY, POLL, Pipeline, Worker, http_get, http_request};

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn an_order_flows_through_every_worker_with_one_trace() {
    let pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    let gateway = Gateway::start(&[]).await;
    let jaeger = Jaeger::start(&jetway_testground::Tools::locate().unwrap()).await.unwrap();
    let endpoint = jaeger.otlp_endpoint();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let intake = Worker::spawn_with_env("intake", &url, &[], &otel).ready().await;
    let payment_args = ["--create-topology", "--gateway-url", &gateway.url()];
    let payment = Worker::spawn_with_env("payment", &url, &payment_args, &otel).ready().await;
    let inventory_args = ["--create-topology", "--seed-stock", "WIDGET=10,GADGET=10"];
    let inventory = Worker::spawn_with_env("inventory", &url, &inventory_args, &otel).ready().await;
    let audit_worker = Worker::spawn_with_env("audit", &url, &["--create-topology"], &otel).ready().await;
    let started = time::OffsetDateTime::now_utc();

    // The client's own span, in a trace of its own, with vendor state to carry along.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let headers = [JSON, (TRACEPARENT, traceparent.as_str()), ("tracestate", "shop=checkout-7")];
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
            let header = |name| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
            let carried = header(TRACEPARENT).expect("a traceparent");
            assert_eq!(carried.get(3..35), Some(trace_id.as_str()), "{} carries the request's trace", message.subject);
            assert_eq!(header("tracestate").as_deref(), Some("shop=checkout-7"), "{}", message.subject);
        }
    }
    assert_one_tree(&jaeger, &trace_id, client_span).await;

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

/// One span as Jaeger's query API answers it.
#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    parent: Option<String>,
}

/// Jaeger holds the order's trace as one tree: intake's request under the client's
/// span, each worker's handling under the publish it consumed, the gateway call
/// under payment's handling, every span's parent in the trace.
async fn assert_one_tree(jaeger: &Jaeger, trace_id: &str, client_span: &str) {
    let url = format!("{}/api/traces/{trace_id}", jaeger.query_url());
    let spans = jetway_testground::wait::until("Jaeger to hold the order's spans", EVENTUALLY, POLL, || async {
        let (status, body) = http_get(&url).await?;
        if status != 200 {
            return Ok(None);
        }
        let spans = jaeger_spans(&serde_json::from_str(&body)?);
        // Intake 2, inventory 2, payment 3, audit 2 per event audited.
        Ok((spans.len() >= 13).then_some(spans))
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}\nJaeger's log ends with:\n{}", jaeger.log_tail(20)));
    let mut tree = String::new();
    for (id, span) in &spans {
        tree +=
            &format!("{id} {:<17} {:<18} parent {}\n", span.service, span.name, span.parent.as_deref().unwrap_or("-"));
    }
    println!("the order's trace as Jaeger holds it:\n{tree}");
    let parent = |span: &Span| span.parent.as_deref().and_then(|id| spans.get(id));
    let of = |service: &str, name: &str| -> Vec<&Span> {
        spans.values().filter(|span| span.service == service && span.name == name).collect()
    };

    let request = of("jetway-intake", "POST /orders");
    assert_eq!(request.len(), 1, "{tree}");
    assert_eq!(request[0].parent.as_deref(), Some(client_span), "intake continues the client's span\n{tree}");
    for span in spans.values().filter(|span| !std::ptr::eq(*span, request[0])) {
        assert!(parent(span).is_some(), "{span:?} has its parent in the trace\n{tree}");
    }
    let consumed_from = |service: &str| -> Vec<String> {
        let mut publishers: Vec<_> = (of(service, "message").into_iter())
            .map(|span| parent(span).filter(|p| p.name == "publish").map_or("?".into(), |p| p.service.clone()))
            .collect();
        publishers.sort();
        publishers
    };
    assert_eq!(consumed_from("jetway-inventory"), ["jetway-intake"], "{tree}");
    assert_eq!(consumed_from("jetway-payment"), ["jetway-inventory"], "{tree}");
    assert_eq!(consumed_from("jetway-audit"), ["jetway-intake", "jetway-inventory", "jetway-payment"], "{tree}");
    let charge = of("jetway-payment", "POST /v1/charges");
    assert_eq!(charge.len(), 1, "{tree}");
    assert_eq!(parent(charge[0]).map(|p| p.name.as_str()), Some("message"), "{tree}");
}

/// The spans of Jaeger's `/api/traces/{id}` answer, by span id.
fn jaeger_spans(answer: &serde_json::Value) -> BTreeMap<String, Span> {
    let mut spans = BTreeMap::new();
    for trace in answer["data"].as_array().into_iter().flatten() {
        let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        for span in trace["spans"].as_array().into_iter().flatten() {
            let process = span["processID"].as_str().unwrap_or_default();
            let parent = span["references"].as_array().into_iter().flatten().find(|r| r["refType"] == "CHILD_OF");
            spans.insert(
                text(&span["spanID"]),
                Span {
                    service: text(&trace["processes"][process]["serviceName"]),
                    name: text(&span["operationName"]),
                    parent: parent.map(|r| text(&r["spanID"])),
                },
            );
        }
    }
    spans
}
