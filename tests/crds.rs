//! The generated CRDs on a real kube-apiserver: NACK's manifests are accepted with
//! only their apiVersion changed, and bad input is refused at once, naming the field.

mod support;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Error};
use serde_json::{Value, json};
use support::TestContext;

/// A dynamic API for one Jetway kind in the test's namespace.
fn api(ctx: &TestContext, plural: &str, kind: &str) -> Api<kube::api::DynamicObject> {
    let gvk = kube::core::GroupVersionKind::gvk(jetway::api::GROUP, "v1alpha1", kind);
    let resource = kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
}

fn object(value: Value) -> kube::api::DynamicObject {
    serde_json::from_value(value).expect("an object")
}

fn refusal(result: Result<impl Sized, Error>) -> String {
    match result {
        Err(Error::Api(status)) if status.code == 422 => status.message,
        Err(other) => panic!("expected 422 Invalid, got {other}"),
        Ok(_) => panic!("expected the apiserver to refuse it"),
    }
}

#[tokio::test]
async fn nack_stream_examples_are_accepted_with_only_their_api_version_changed() {
    let ctx = TestContext::new("nack-streams").await;
    support::install_crds(&ctx.client).await;
    let streams = api(&ctx, "streams", "Stream");
    let examples: Vec<Value> = support::nack_examples().into_iter().filter(|e| e["kind"] == "Stream").collect();
    assert!(examples.len() >= 4, "stream, mirror, placement and sources examples: {}", examples.len());
    for example in examples {
        let name = example["metadata"]["name"].clone();
        streams.create(&PostParams::default(), &object(example)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test]
async fn a_stream_with_bad_values_is_refused_naming_the_field() {
    let ctx = TestContext::new("stream-schema").await;
    support::install_crds(&ctx.client).await;
    let streams = api(&ctx, "streams", "Stream");
    let stream = |spec: Value| {
        object(
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "bad"}, "spec": spec}),
        )
    };
    for (spec, field) in [
        (json!({"storage": "disk"}), "spec.storage"),
        (json!({"maxAge": "1 day"}), "spec.maxAge"),
        (json!({"replicas": 7}), "spec.replicas"),
        (json!({"name": "has.dots"}), "spec.name"),
        (json!({"mirror": {"name": "origin"}, "subjects": ["a"]}), "spec.subjects"),
        (json!({"allowRollup": true, "denyPurge": true}), "spec.allowRollup"),
        (json!({"maxAge": "6000000h"}), "spec.maxAge"),
        (json!({"subjects": ["shop..x"]}), "spec.subjects[0]"),
        (json!({"subjects": ["ok", "shop.>.x"]}), "spec.subjects[1]"),
        (json!({"sources": [{"name": "a", "optStartTime": "tomorrow"}]}), "spec.sources[0].optStartTime"),
        (json!({"republish": {"source": "a.>", "destination": "b c"}}), "spec.republish.destination"),
        (json!({"duplicateWindow": "2562048h"}), "spec.duplicateWindow"),
        (
            json!({"sources": [{"name": "a", "filterSubject": "x", "subjectTransforms": [{"source": "x", "dest": "y"}]}]}),
            "spec.sources[0].filterSubject",
        ),
    ] {
        let message = refusal(streams.create(&PostParams::default(), &stream(spec.clone())).await);
        assert!(message.contains(field), "{spec} is refused naming {field}: {message}");
    }
}

#[tokio::test]
async fn changes_the_server_would_refuse_are_refused_by_kubectl_apply_first() {
    let ctx = TestContext::new("stream-cel").await;
    support::install_crds(&ctx.client).await;
    let streams = api(&ctx, "streams", "Stream");
    let manifest = |name: &str, spec: Value| {
        object(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": spec}))
    };
    let params = PatchParams::apply("jetway-tests");
    for (name, before, after, field) in [
        ("storage", json!({"storage": "file"}), json!({"storage": "memory"}), "spec.storage"),
        ("storage-default", json!({}), json!({"storage": "memory"}), "spec.storage"),
        ("retention", json!({"retention": "limits"}), json!({"retention": "workqueue"}), "spec.retention"),
        ("name", json!({"name": "ONE"}), json!({"name": "TWO"}), "spec.name cannot change"),
        ("sealed", json!({"sealed": true}), json!({"sealed": false}), "spec.sealed"),
        ("deny-delete", json!({"denyDelete": true}), json!({"replicas": 1}), "spec.denyDelete"),
        ("persist", json!({"persistMode": "async"}), json!({"replicas": 1}), "spec.persistMode"),
        ("mirror", json!({}), json!({"mirror": {"name": "origin"}}), "spec.mirror"),
        ("mirror-change", json!({"mirror": {"name": "origin"}}), json!({"mirror": {"name": "other"}}), "spec.mirror"),
        ("first-sequence", json!({"firstSequence": 10}), json!({"firstSequence": 20}), "spec.firstSequence"),
        ("first-sequence-added", json!({}), json!({"firstSequence": 20}), "spec.firstSequence"),
        ("counter", json!({}), json!({"allowMsgCounter": true}), "spec.allowMsgCounter"),
        ("counter-off", json!({"allowMsgCounter": true}), json!({"replicas": 1}), "spec.allowMsgCounter"),
        (
            "schedules",
            json!({"allowMsgSchedules": true}),
            json!({"allowMsgSchedules": false}),
            "spec.allowMsgSchedules",
        ),
    ] {
        streams.patch(name, &params, &Patch::Apply(manifest(name, before))).await.expect("the first apply");
        let message = refusal(streams.patch(name, &params, &Patch::Apply(manifest(name, after.clone()))).await);
        assert!(message.contains(field), "{after} is refused naming {field}: {message}");
    }
    // Changes the server accepts go through: removing a mirror makes it an ordinary stream.
    streams
        .patch("mirror-change", &params, &Patch::Apply(manifest("mirror-change", json!({"replicas": 1}))))
        .await
        .expect("promoted");
    streams
        .patch("storage", &params, &Patch::Apply(manifest("storage", json!({"storage": "file", "replicas": 1}))))
        .await
        .expect("a permitted change");
}

#[tokio::test]
async fn a_consumer_with_bad_values_is_refused_naming_the_field() {
    let ctx = TestContext::new("consumer-schema").await;
    support::install_crds(&ctx.client).await;
    let consumers = api(&ctx, "consumers", "Consumer");
    let consumer = |spec: Value| {
        object(
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "bad"}, "spec": spec}),
        )
    };
    for (spec, field) in [
        (json!({"streamName": "a.b"}), "spec.streamName"),
        (json!({"streamName": "S", "pauseUntil": "tomorrow"}), "spec.pauseUntil"),
        (
            json!({"streamName": "S", "deliverPolicy": "byStartTime", "optStartTime": "2026-13-01T00:00:00Z"}),
            "spec.optStartTime",
        ),
        (json!({"streamName": "S", "filterSubject": "a..b"}), "spec.filterSubject"),
        (json!({"streamName": "S", "filterSubjects": ["a", "b.>.c"]}), "spec.filterSubjects[1]"),
        (json!({"streamName": "S", "deliverSubject": "push.*"}), "spec.deliverSubject"),
        (json!({"streamName": "S", "ackWait": "2562048h"}), "spec.ackWait"),
        (json!({"streamName": "S", "maxDeliver": -2}), "spec.maxDeliver"),
    ] {
        let message = refusal(consumers.create(&PostParams::default(), &consumer(spec.clone())).await);
        assert!(message.contains(field), "{spec} is refused naming {field}: {message}");
    }
    // RFC 3339 with an offset is a time.
    let good = consumer(json!({"streamName": "S", "pauseUntil": "2030-01-01T01:00:00+01:00"}));
    consumers.create(&PostParams::default(), &good).await.expect("an offset time is accepted");
}
