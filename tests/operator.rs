//! `jetway run` against the test ground: it connects to both servers, reports ready,
//! serves metrics, and stops cleanly when its shutdown token is cancelled.

mod support;

use jetway::nats::NatsSettings;
use support::{EVENTUALLY, Operator, POLL, TestContext, http_get, wait_until};

#[tokio::test]
async fn the_operator_connects_reports_ready_and_stops_on_cancellation() {
    let ctx = TestContext::new("operator-ready").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let http_addr = operator.http_addr;

    wait_until("/readyz to answer 200", EVENTUALLY, POLL, || async {
        Ok(http_get(http_addr, "/readyz").await.ok().filter(|(status, _)| *status == 200))
    })
    .await
    .expect("the operator becomes ready");
    assert_eq!(http_get(http_addr, "/healthz").await.expect("healthz").0, 200);
    let (status, metrics) = http_get(http_addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("jetway_build_info{version=\""), "{metrics}");

    operator.stop().await;
    assert!(http_get(http_addr, "/healthz").await.is_err(), "the HTTP server is closed");
}

#[tokio::test]
async fn the_operator_keeps_waiting_for_an_unreachable_nats_instead_of_giving_up() {
    let ctx = TestContext::new("operator-no-nats").await;
    support::install_crds(&ctx.client).await;
    let dead_port = jetway_testground::wait::free_port().expect("a port");
    let operator = Operator::start(&ctx.namespace, |config| {
        config.nats = NatsSettings { servers: vec![format!("nats://127.0.0.1:{dead_port}")], ..Default::default() };
    })
    .await;
    let http_addr = operator.http_addr;
    wait_until("/healthz to answer", EVENTUALLY, POLL, || async { Ok(http_get(http_addr, "/healthz").await.ok()) })
        .await
        .expect("the operator is alive");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(http_get(http_addr, "/readyz").await.expect("readyz").0, 503, "not ready without NATS");
    assert!(!operator.is_finished(), "still running, still retrying");
    operator.stop().await;
}
