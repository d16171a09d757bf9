//! Worker processes killed, stopped and cut off mid-run on a real nats-server: every
//! order is charged, none twice.

mod support;

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nix::sys::signal::Signal;
use support::{EVENTUALLY, Pipeline, Worker, http_request, ids};

/// A payment worker with a slow gateway, so there is always work in flight.
fn payment(pipeline: &Pipeline, extra: &[&str]) -> Worker {
    let mut args = vec!["--create-topology", "--gateway-latency", "20ms", "--max-in-flight", "64"];
    args.extend_from_slice(extra);
    Worker::spawn("payment", &pipeline.nats.url(), &args)
}

async fn assert_each_order_paid_once(pipeline: &Pipeline, orders: u64) {
    pipeline.wait_ledger(orders).await;
    pipeline.wait_drained("ORDERS", "payment").await;
    assert_eq!(pipeline.ledger_writes().await, orders, "one ledger write per order, none twice");
    let payments = pipeline.payments_per_order().await;
    assert_eq!(payments.len() as u64, orders, "every order has its payment event");
    let twice: Vec<_> = payments.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "orders with more than one payment event: {twice:?}");
}

#[tokio::test]
async fn a_worker_killed_mid_run_leaves_one_ledger_entry_per_order() {
    let pipeline = Pipeline::start().await;
    let doomed = payment(&pipeline, &["--ack-wait", "2s"]).ready().await;
    let survivor = payment(&pipeline, &["--ack-wait", "2s"]).ready().await;
    pipeline.publish_orders(ids("order", 3000)).await;
    pipeline.wait_ledger(500).await;

    doomed.signal(Signal::SIGKILL);
    let status = doomed.exit(Duration::from_secs(5)).await;
    assert!(!status.success(), "killed: {status}");
    let replacement = payment(&pipeline, &["--ack-wait", "2s"]).ready().await;

    assert_each_order_paid_once(&pipeline, 3000).await;
    drop((survivor, replacement));
}

#[tokio::test]
async fn sigterm_mid_run_settles_in_flight_work_and_loses_nothing() {
    let pipeline = Pipeline::start().await;
    // A message left unsettled would wait out this ack wait, longer than the test.
    let first = payment(&pipeline, &["--ack-wait", "5m", "--grace-period", "10s"]).ready().await;
    pipeline.publish_orders(ids("order", 2000)).await;
    pipeline.wait_ledger(300).await;

    first.signal(Signal::SIGTERM);
    let status = first.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "a clean exit: {status}");
    assert!(pipeline.ledger_writes().await < 2000, "the stop came mid-run");

    // Anything the first worker took and neither acked nor handed back would wait out
    // the 5 minute ack wait, and this would time out.
    let _second = payment(&pipeline, &["--ack-wait", "5m"]).ready().await;
    assert_each_order_paid_once(&pipeline, 2000).await;
}

#[tokio::test]
async fn orders_taken_while_nats_restarts_are_all_paid() {
    let mut pipeline = Pipeline::start().await;
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let _payment = payment(&pipeline, &["--ack-wait", "5s"]).ready().await;
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

    assert_each_order_paid_once(&pipeline, 1000).await;
    assert_eq!(pipeline.stream_messages("ORDERS").await, 1000, "each order stored once, retries included");
}
