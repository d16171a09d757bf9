//! Deletion is as careful as apply: a paused object's stream stays, a retained
//! consumer loses Jetway's marks, a mark naming an object that is gone binds nothing,
//! and a Delete-policy object waits out a NATS outage instead of leaking its stream.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream::Config as StreamConfig;
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::plan::stream::OWNER_KEY;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, wait_condition, wait_until};

async fn apply<K>(api: &Api<K>, kind: &str, name: &str, spec: Value, annotations: Value)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": kind,
                        "metadata": {"name": name, "annotations": annotations}, "spec": spec});
    api.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("applied");
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(&format!("{name} to be gone"), EVENTUALLY, POLL, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
    .expect("gone");
}

#[tokio::test]
async fn a_paused_object_is_deleted_without_touching_its_stream() {
    let ctx = TestContext::new("delete-paused").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let streams = ctx.api::<Stream>();
    let name = ctx.unique("PAUSED");
    let spec = json!({"name": name, "deletionPolicy": "Delete"});
    apply(&streams, "Stream", "paused", spec.clone(), json!({})).await;
    wait_condition(&streams, "paused", "Ready", "True").await;
    apply(&streams, "Stream", "paused", spec, json!({"jetway.dev/paused": "true"})).await;
    streams.delete("paused", &DeleteParams::default()).await.expect("deleting");
    gone(&streams, "paused").await;
    assert!(ctx.jetstream.get_stream(&name).await.is_ok(), "a paused object's stream stays");
    operator.stop().await;
}

#[tokio::test]
async fn a_mark_naming_an_object_that_is_gone_is_adopted_by_a_new_one() {
    let ctx = TestContext::new("delete-stale-mark").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("LEFT");
    let metadata = HashMap::from([(OWNER_KEY.to_owned(), format!("{}/deleted-long-ago", ctx.namespace))]);
    ctx.jetstream.create_stream(StreamConfig { name: name.clone(), metadata, ..Default::default() }).await.unwrap();
    let streams = ctx.api::<Stream>();
    apply(&streams, "Stream", "heir", json!({"name": name}), json!({})).await;
    wait_condition(&streams, "heir", "Ready", "True").await;
    support::wait_event(&ctx.client, &ctx.namespace, "heir", "Adopted").await;
    let mut stream = ctx.jetstream.get_stream(&name).await.unwrap();
    let owner = stream.info().await.unwrap().config.metadata.get(OWNER_KEY).cloned();
    assert_eq!(owner, Some(format!("{}/heir", ctx.namespace)));
    operator.stop().await;
}

#[tokio::test]
async fn a_retained_consumer_is_left_without_jetways_marks() {
    let ctx = TestContext::new("delete-retained-consumer").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let name = ctx.unique("KEPT");
    support::stream_with_consumer(&ctx, "kept", &name, "worker").await;
    let consumers = ctx.api::<Consumer>();
    consumers.delete("worker", &DeleteParams::default()).await.expect("deleting");
    gone(&consumers, "worker").await;
    let stream = ctx.jetstream.get_stream(&name).await.unwrap();
    let config = stream.consumer_info("worker").await.expect("the consumer is retained").config;
    assert!(!config.metadata.keys().any(|k| k.starts_with("jetway.dev/")), "{:?}", config.metadata);
    operator.stop().await;
}

#[tokio::test]
async fn a_delete_policy_object_waits_out_a_nats_outage_instead_of_leaking_its_stream() {
    let ctx = TestContext::new("delete-outage").await;
    support::install_crds(&ctx.client).await;
    let (proxy, operator) = support::operator_behind_proxy(&ctx).await;
    let streams = ctx.api::<Stream>();
    let name = ctx.unique("OUTAGE");
    apply(&streams, "Stream", "outage", json!({"name": name, "deletionPolicy": "Delete"}), json!({})).await;
    wait_condition(&streams, "outage", "Ready", "True").await;

    proxy.cut();
    streams.delete("outage", &DeleteParams::default()).await.expect("deleting");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(streams.get_opt("outage").await.unwrap().is_some(), "the object waits while NATS is out of reach");
    assert!(ctx.jetstream.get_stream(&name).await.is_ok());

    proxy.restore();
    gone(&streams, "outage").await;
    assert!(ctx.jetstream.get_stream(&name).await.is_err(), "deleted once NATS answered");
    operator.stop().await;
}
