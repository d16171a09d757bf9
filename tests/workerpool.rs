//! WorkerPools on the test ground with kube-controller-manager, in KEDA-coexistence
//! mode (another adapter owns the external metrics API, so Jetway's own scaler drives
//! each pool's `/scale` and no HPA is made): the Deployment they own, scaling with the
//! consumer's pending messages through 0 -> N -> 0, and a pool whose consumer is
//! missing that says so and does not scale. HPA mode is in `hpa.rs`.

mod support;

use std::time::{Duration, Instant};

use jetway::api::workerpool::WorkerPool;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, deployment_replicas, wait_until};

fn pool(name: &str, consumer: &str, autoscaling: serde_json::Value) -> WorkerPool {
    serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": { "name": name },
        "spec": { "consumerRef": { "name": consumer }, "worker": { "image": "jetway/payment:test", "args": ["--max-in-flight", "64"] }, "autoscaling": autoscaling }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_pool_scales_its_deployment_from_zero_with_pending_messages_and_back_after_the_cooldown() {
    let ctx = TestContext::new("workerpool").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("POOL");
    support::stream_with_consumer(&ctx, "orders", &name, "payment").await;

    let autoscaling = json!({ "minReplicas": 0, "maxReplicas": 5, "targetPendingPerReplica": 10, "cooldown": "2s" });
    let pools = ctx.api::<WorkerPool>();
    pools.create(&PostParams::default(), &pool("payment", "payment", autoscaling)).await.unwrap();
    let idle = deployment_replicas(&ctx, "payment", 0).await;
    let owner = &idle.metadata.owner_references.as_ref().expect("an owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("WorkerPool", "payment", Some(true)));
    let template = idle.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(template.containers[0].image.as_deref(), Some("jetway/payment:test"));

    // An edit by hand is reverted at once: the pool watches what it owns, and is not
    // otherwise looked at while it rests.
    let deployments = ctx.api::<Deployment>();
    let edit = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "worker", "image": "someone/else:1" }] } } } });
    let edited = deployments.patch("payment", &PatchParams::default(), &Patch::Strategic(edit)).await.unwrap();
    let image =
        |d: Deployment| d.spec.unwrap_or_default().template.spec.unwrap_or_default().containers[0].image.clone();
    assert_eq!(image(edited).as_deref(), Some("someone/else:1"));
    wait_until("the edit to be reverted", EVENTUALLY, POLL, || async {
        Ok((image(deployments.get("payment").await?).as_deref() == Some("jetway/payment:test")).then_some(()))
    })
    .await
    .unwrap();

    // Lag appears: 0 -> 1 within about two seconds, then up to ceil(25 / 10) = 3.
    let appeared = Instant::now();
    for _ in 0..25 {
        ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }
    deployment_replicas(&ctx, "payment", 3).await;
    let woke_after = appeared.elapsed();
    eprintln!("0 -> 3 replicas {woke_after:?} after the lag appeared");
    assert!(woke_after < Duration::from_secs(5), "woke after {woke_after:?}");
    let status = wait_until("the pool's status to show the decision", EVENTUALLY, POLL, || async {
        let status = pools.get("payment").await?.status.unwrap_or_default();
        Ok((status.desired_replicas == Some(3)).then_some(status))
    })
    .await
    .unwrap();
    assert_eq!(status.pending, Some(25));
    assert_eq!(status.last_scale_reason.as_deref(), Some("Activated"), "0 -> 3 in one decision");
    assert_eq!(status.selector.as_deref(), Some("jetway.dev/pool=payment"));
    assert!(status.pending_observed_at.is_some());

    // The workers drain the consumer; after the cooldown the pool goes back to 0.
    support::drain(&ctx, &name, "payment", 25).await;
    deployment_replicas(&ctx, "payment", 0).await;
    let status = support::last_scale(&ctx, "payment", "IdleAfterCooldown").await;
    assert!(status.last_scale_time.is_some());
    let hpas = ctx.api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>();
    assert!(hpas.get_opt("payment").await.unwrap().is_none(), "no HPA beside another adapter's");

    // At rest, through several resyncs (2 s here), nothing is written: counted by
    // the apiserver, where a write that changes nothing counts too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = || async {
        let status = support::apiserver_writes(&ctx.client, "workerpools", "status").await;
        status + support::apiserver_writes(&ctx.client, "deployments", "").await
    };
    let before = writes().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(writes().await, before, "a pool at rest writes nothing");
    operator.stop().await;
}

#[tokio::test]
async fn a_pool_whose_consumer_is_missing_says_so_and_keeps_its_replicas() {
    let ctx = TestContext::new("workerpool-missing").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let mut orphan =
        pool("orphan", "nowhere", json!({ "minReplicas": 0, "maxReplicas": 5, "targetPendingPerReplica": 10 }));
    orphan.spec.replicas = Some(2);
    let pools = ctx.api::<WorkerPool>();
    pools.create(&PostParams::default(), &orphan).await.unwrap();
    let stalled = support::wait_condition(&pools, "orphan", "Ready", "False").await;
    let ready = support::condition(&stalled, "Ready").unwrap();
    assert_eq!(ready.reason, "ConsumerNotFound");
    assert!(ready.message.contains("nowhere"), "{}", ready.message);
    // Neither scaled to max nor to 0.
    deployment_replicas(&ctx, "orphan", 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pools.get("orphan").await.unwrap().spec.replicas, Some(2));
    operator.stop().await;
}
