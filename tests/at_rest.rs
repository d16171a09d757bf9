//! Objects at rest cost nothing between resyncs: no reconcile, and no JetStream
//! request but the inventory's stream list. Counted by the operator's reconcile
//! counter and by a nats-server of the test's own.

mod support;

use std::time::Duration;

use jetway_testground::NatsServer;
use support::{Operator, TestContext};

/// `jetway_reconciles_total{kind}` on the operator's /metrics.
async fn reconciles(operator: &Operator, kind: &str) -> f64 {
    let series = format!(r#"jetway_reconciles_total{{kind="{kind}"}}"#);
    support::metric(operator.http_addr, &series).await.unwrap_or(0.0)
}

/// Rounds every half second, and no resync within a test.
fn rounds_without_resyncs(config: &mut jetway::run::Config) {
    config.controllers.resync = Duration::from_secs(600);
    config.controllers.lag_interval = Duration::from_millis(500);
}

#[tokio::test]
async fn streams_and_consumers_at_rest_are_not_reconciled_and_cost_one_list_a_round() {
    let ctx = TestContext::new("at-rest").await;
    support::install_crds(&ctx.client).await;
    let nats = NatsServer::start(&support::tools(), "").await.expect("a nats-server");
    let url = nats.url();
    let operator = Operator::start(&ctx.namespace, |config| {
        config.nats.servers = vec![url];
        rounds_without_resyncs(config);
    })
    .await;
    for n in 0..3 {
        support::stream_with_consumer(&ctx, &format!("rest-{n}"), &format!("REST_{n}"), &format!("work-{n}")).await;
    }
    // Let the first rounds see everything and the news settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = (reconciles(&operator, "Stream").await, reconciles(&operator, "Consumer").await);
    let requests = support::jetstream_requests(&nats).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = (reconciles(&operator, "Stream").await, reconciles(&operator, "Consumer").await);
    let requests = support::jetstream_requests(&nats).await - requests;
    assert_eq!(after, before, "no reconcile of objects at rest (Stream, Consumer)");
    // About ten rounds of one stream list each; nothing else.
    assert!((8..=12).contains(&requests), "{requests} JetStream API requests in 5 s at rest");
    operator.stop().await;
}

#[tokio::test]
async fn a_streams_status_shows_messages_published_behind_its_back_within_a_round() {
    let ctx = TestContext::new("fresh-status").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |config| {
        config.controllers.resync = Duration::from_secs(600);
        config.controllers.metrics_interval = Duration::from_secs(15);
    })
    .await;
    let name = ctx.unique("FRESH");
    support::stream_with_consumer(&ctx, "fresh", &name, "work").await;
    // At rest first: read, and confirmed by a few rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..4 {
        ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }
    let streams = ctx.api::<jetway::api::stream::Stream>();
    support::wait_until("the stream's status to show 4 messages", Duration::from_secs(5), support::POLL, || async {
        let status = streams.get("fresh").await?.status.unwrap_or_default();
        Ok((status.state.is_some_and(|s| s.messages == 4)).then_some(()))
    })
    .await
    .unwrap();
    let consumers = ctx.api::<jetway::api::consumer::Consumer>();
    support::wait_until("the consumer's status to show 4 pending", Duration::from_secs(5), support::POLL, || async {
        let status = consumers.get("work").await?.status.unwrap_or_default();
        Ok((status.state.is_some_and(|s| s.pending == 4)).then_some(()))
    })
    .await
    .unwrap();
    operator.stop().await;
}

#[tokio::test]
async fn a_new_stream_and_its_consumer_take_at_most_two_reconciles_each() {
    let ctx = TestContext::new("few-reconciles").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, rounds_without_resyncs).await;
    for n in 0..3 {
        let stream = ctx.unique(&format!("FEW_{n}"));
        support::stream_with_consumer(&ctx, &format!("few-{n}"), &stream, &format!("work-{n}")).await;
    }
    // The consumers are Ready; let the rounds that follow report what they find.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (streams, consumers) = (reconciles(&operator, "Stream").await, reconciles(&operator, "Consumer").await);
    assert!(streams <= 6.0, "{streams} Stream reconciles for 3 new Streams");
    assert!(consumers <= 6.0, "{consumers} Consumer reconciles for 3 new Consumers");
    operator.stop().await;
}

#[tokio::test]
async fn with_a_system_account_objects_at_rest_cost_no_jetstream_request_and_their_figures_still_move() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let ctx = TestContext::new("at-rest-jsz").await;
    support::install_crds(&ctx.client).await;
    let accounts = "accounts {
  SYS: { users: [ {user: sys, password: sys-pw} ] }
  APP: { jetstream: enabled, users: [ {user: app, password: app-pw} ] }
}
system_account: SYS";
    let nats = NatsServer::start(&support::tools(), accounts).await.expect("a nats-server with accounts");
    let operator = Operator::start(&ctx.namespace, rounds_without_resyncs).await;
    let params = PatchParams::apply("jetway-tests");
    let apply = |kind: &str, name: &str, body: serde_json::Value| {
        let mut object =
            serde_json::json!({"apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": {"name": name}});
        object.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        object
    };
    for (name, user, password) in [("app", "app", "app-pw"), ("sys", "sys", "sys-pw")] {
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"user": user, "password": password}});
        ctx.api::<Secret>().patch(name, &params, &Patch::Apply(secret)).await.expect("a Secret");
    }
    let spec = serde_json::json!({"spec": {"servers": [nats.url()],
        "auth": {"userPassword": {"secretName": "app"}}, "systemAuth": {"userPassword": {"secretName": "sys"}}}});
    let connection = apply("NatsConnection", "held", spec);
    ctx.api::<jetway::api::connection::NatsConnection>()
        .patch("held", &params, &Patch::Apply(connection))
        .await
        .unwrap();
    let name = ctx.unique("HELD");
    let stream = apply(
        "Stream",
        "held",
        serde_json::json!({"spec": {"name": name, "subjects": [format!("{name}.>")], "connectionRef": {"name": "held"}}}),
    );
    ctx.api::<jetway::api::stream::Stream>().patch("held", &params, &Patch::Apply(stream)).await.unwrap();
    let consumer = apply(
        "Consumer",
        "held",
        serde_json::json!({"spec": {"streamName": name, "durableName": "work", "connectionRef": {"name": "held"}}}),
    );
    let consumers = ctx.api::<jetway::api::consumer::Consumer>();
    consumers.patch("held", &params, &Patch::Apply(consumer)).await.unwrap();
    support::wait_all_ready(&consumers).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let requests = support::jetstream_requests(&nats).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = support::jetstream_requests(&nats).await - requests;
    assert_eq!(requests, 0, "JetStream API requests in 5 s at rest: the rounds ask the servers through JSZ");

    let app = async_nats::ConnectOptions::with_user_and_password("app".into(), "app-pw".into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(app);
    for _ in 0..3 {
        js.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }
    support::wait_until("the consumer's status to show 3 pending", Duration::from_secs(5), support::POLL, || async {
        let status = consumers.get("held").await?.status.unwrap_or_default();
        Ok((status.state.is_some_and(|s| s.pending == 3)).then_some(()))
    })
    .await
    .unwrap();
    operator.stop().await;
}
