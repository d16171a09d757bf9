//! The autoscaler never acts on what it does not know: a lag reading gone stale (the
//! operator cut off NATS by a proxy the test owns) holds the pool's replicas; work in
//! flight is never scaled to zero; a Deployment the pool did not make is left alone;
//! a paused pool is not touched.

mod support;

use std::time::Duration;

use jetway::api::workerpool::WorkerPool;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use serde_json::json;
use support::{Operator, TestContext, condition, deployment_replicas, wait_condition};

fn pool(name: &str, consumer: &str, cooldown: &str) -> WorkerPool {
    serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": { "name": name },
        "spec": { "consumerRef": { "name": consumer }, "worker": { "image": "jetway/payment:test" },
                  "autoscaling": { "minReplicas": 0, "maxReplicas": 5, "targetPendingPerReplica": 10, "cooldown": cooldown } }
    }))
    .unwrap()
}

/// Replicas the pool's Deployment asks for now.
async fn replicas(ctx: &TestContext, name: &str) -> Option<i32> {
    let deployment = ctx.api::<Deployment>().get_opt(name).await.unwrap()?;
    deployment.spec.and_then(|s| s.replicas)
}

async fn publish(ctx: &TestContext, subject: &str, count: usize) {
    for _ in 0..count {
        ctx.jetstream.publish(subject.to_owned(), "o".into()).await.unwrap().await.unwrap();
    }
}

#[tokio::test]
async fn messages_in_flight_keep_the_pool_from_going_to_zero() {
    let ctx = TestContext::new("pool-in-flight").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("FLIGHT");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;
    ctx.api::<WorkerPool>().create(&PostParams::default(), &pool("payment", "payment", "1s")).await.unwrap();
    deployment_replicas(&ctx, "payment", 0).await;
    publish(&ctx, &format!("{name}.order"), 5).await;
    deployment_replicas(&ctx, "payment", 1).await;

    // A worker takes all five and has not acknowledged them yet: nothing pending.
    let stream = ctx.jetstream.get_stream(&name).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("payment").await.unwrap();
    let mut taken = Vec::new();
    let mut batch = consumer.fetch().max_messages(5).messages().await.unwrap();
    while let Some(message) = futures::StreamExt::next(&mut batch).await {
        taken.push(message.unwrap());
    }
    assert_eq!(taken.len(), 5);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replicas(&ctx, "payment").await, Some(1), "four cooldowns later, work in flight keeps its worker");

    for message in taken {
        message.double_ack().await.unwrap();
    }
    deployment_replicas(&ctx, "payment", 0).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_stale_lag_reading_holds_the_replicas() {
    let ctx = TestContext::new("pool-stale-lag").await;
    support::install_crds(&ctx.client).await;
    let (proxy, operator) = support::operator_behind_proxy(&ctx).await;
    let name = ctx.unique("STALE");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;
    ctx.api::<WorkerPool>().create(&PostParams::default(), &pool("payment", "payment", "1s")).await.unwrap();
    publish(&ctx, &format!("{name}.order"), 30).await;
    deployment_replicas(&ctx, "payment", 3).await;

    // Cut off, the operator must not read the drained consumer's "0" it never saw, nor
    // scale on the 30 it saw last.
    proxy.cut();
    support::drain(&ctx, &name, "payment", 30).await;
    let pools = ctx.api::<WorkerPool>();
    let held = wait_condition(&pools, "payment", "Reconciling", "True").await;
    assert_eq!(condition(&held, "Reconciling").unwrap().reason, "LagStale");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(replicas(&ctx, "payment").await, Some(3), "no scale down on a stale reading");

    proxy.restore();
    deployment_replicas(&ctx, "payment", 0).await;
    operator.stop().await;
}

#[tokio::test]
async fn a_deployment_the_pool_did_not_make_is_left_alone() {
    let ctx = TestContext::new("pool-foreign").await;
    support::install_crds(&ctx.client).await;
    let foreign: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "payment" },
        "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "mine" } },
                  "template": { "metadata": { "labels": { "app": "mine" } },
                                "spec": { "containers": [{ "name": "app", "image": "someone/else:1" }] } } }
    }))
    .unwrap();
    ctx.api::<Deployment>().create(&PostParams::default(), &foreign).await.unwrap();
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("FOREIGN");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;
    let pools = ctx.api::<WorkerPool>();
    pools.create(&PostParams::default(), &pool("payment", "payment", "1s")).await.unwrap();
    let stalled = wait_condition(&pools, "payment", "Stalled", "True").await;
    let ready = condition(&stalled, "Ready").unwrap();
    assert_eq!(ready.reason, "OwnedByAnotherObject");
    assert!(ready.message.contains("Deployment payment"), "{}", ready.message);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = ctx.api::<Deployment>().get("payment").await.unwrap();
    assert_eq!(kept.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let image = kept.spec.unwrap().template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("someone/else:1"), "not taken over");
    operator.stop().await;
}

#[tokio::test]
async fn a_paused_pool_is_not_touched() {
    let ctx = TestContext::new("pool-paused").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("PAUSED");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;
    let mut paused = pool("payment", "payment", "1s");
    paused.metadata.annotations = Some([("jetway.dev/paused".to_owned(), "true".to_owned())].into());
    ctx.api::<WorkerPool>().create(&PostParams::default(), &paused).await.unwrap();
    publish(&ctx, &format!("{name}.order"), 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&ctx, "payment").await, None, "no Deployment made for a paused pool");
    operator.stop().await;
}
