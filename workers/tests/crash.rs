//! Worker processes killed, stopped and cut off mid-run on a real nats-server, counted
//! at the gateway: every order is charged, none twice.

mod support;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nix::sys::signal::Signal;
use support::gateway::Gateway;
use support::{EVENTUALLY, Pipeline, Worker, http_request, ids};

/// A payment worker against `gateway`, which answers slowly enough that there is
/// always work in flight.
fn payment(pipeline: &Pipeline, gateway: &Gateway, extra: &[&str]) -> Worker {
    let url = gateway.url();
    let mut args = vec!["--create-topology", "--gateway-url", &url, "--max-in-flight", "64"];
    args.extend_from_slice(extra);
    Worker::spawn("payment", &pipeline.nats.url(), &args)
}

async fn assert_each_order_charged_once(pipeline: &Pipeline, gateway: &Gateway, orders: u64) {
    pipeline.wait_payment_outcomes(orders).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    let payments = pipeline.payments_per_order().await;
    assert_eq!(payments.len() as u64, orders, "every order has its payment event");
    let twice: Vec<_> = payments.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "orders with more than one payment event: {twice:?}");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.orders, stats.duplicate_charges), (orders, orders, 0), "{stats:?}");
}

#[tokio::test]
async fn payment_workers_killed_again_and_again_charge_every_order_once() {
    let pipeline = Pipeline::start().await;
    // 64 in flight at 100 ms each: about 600 orders a second per worker.
    let gateway = Gateway::start(&["--latency", "100ms"]).await;
    let flags = ["--ack-wait", "2s"];
    let mut workers = vec![payment(&pipeline, &gateway, &flags).ready().await, payment(&pipeline, &gateway, &flags)];
    pipeline.publish_reservations(ids("order", 4000)).await;

    // SIGKILL lands wherever a worker is: before a charge, between the gateway's answer
    // and the ledger, between the ledger and the event, before the ack.
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let doomed = workers.remove(round % workers.len());
        doomed.signal(Signal::SIGKILL);
        assert!(!doomed.exit(Duration::from_secs(5)).await.success(), "killed");
        workers.push(payment(&pipeline, &gateway, &flags));
    }
    assert!(pipeline.payment_outcomes().await < 4000, "the kills came mid-run");

    assert_each_order_charged_once(&pipeline, &gateway, 4000).await;
    assert!(gateway.stats().await.replays > 0, "some charges were asked for again after a kill");
}

#[tokio::test]
async fn sigterm_mid_run_settles_in_flight_work_and_loses_nothing() {
    let pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&["--latency", "20ms"]).await;
    // A message left unsettled would wait out this ack wait, longer than the test.
    let first = payment(&pipeline, &gateway, &["--ack-wait", "5m", "--grace-period", "10s"]).ready().await;
    pipeline.publish_reservations(ids("order", 2000)).await;
    pipeline.wait_payment_outcomes(300).await;

    first.signal(Signal::SIGTERM);
    let status = first.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "a clean exit: {status}");
    assert!(pipeline.payment_outcomes().await < 2000, "the stop came mid-run");

    // Anything the first worker took and neither acked nor handed back would wait out
    // the 5 minute ack wait, and this would time out.
    let _second = payment(&pipeline, &gateway, &["--ack-wait", "5m"]).ready().await;
    assert_each_order_charged_once(&pipeline, &gateway, 2000).await;
}

#[tokio::test]
async fn orders_taken_while_nats_restarts_are_all_reserved_and_charged_once() {
    let mut pipeline = Pipeline::start().await;
    let gateway = Gateway::start(&[]).await;
    let nats = pipeline.nats.url();
    let intake = Worker::spawn("intake", &nats, &[]).ready().await;
    let stock = ["--create-topology", "--seed-stock", "WIDGET=1000000,GADGET=1000000", "--ack-wait", "5s"];
    let _inventory = Worker::spawn("inventory", &nats, &stock).ready().await;
    let _payment = payment(&pipeline, &gateway, &["--ack-wait", "5s"]).ready().await;
    let url = format!("http://{}/orders", intake.http);
    let orders: Vec<String> = ids("order", 1000).collect();

    // A client that retries with the same orderId until intake answers 202.
    let submit = |id: String| {
        let url = url.clone();
        async move {
            let body = support::order_request(&id);
            let deadline = tokio::time::Instant::now() + EVENTUALLY;
            loop {
                match http_request("POST", &url, &[("content-type", "application/json")], &body).await {
                    Ok((202, _)) => return,
                    Ok((503, _)) | Err(_) if tokio::time::Instant::now() < deadline => {}
                    other => panic!("order {id}: {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (before, after) = orders.split_at(400);
    let mut submitted: FuturesUnordered<_> = before.iter().cloned().map(submit).collect();
    while submitted.next().await.is_some() {}

    pipeline.nats.kill();
    let mut during: FuturesUnordered<_> = after.iter().cloned().map(submit).collect();
    let restart = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pipeline.nats.start_again().await.unwrap();
    };
    tokio::join!(restart, async { while during.next().await.is_some() {} });

    assert_each_order_charged_once(&pipeline, &gateway, 1000).await;
    assert_eq!(pipeline.stream_messages("ORDERS").await, 1000, "each order stored once, retries included");
}
