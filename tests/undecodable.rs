//! One object the operator cannot read stops nothing: a Warning event (and, where
//! the apiserver lets its status be written, `Ready=False`) names the field, and every
//! other object of its kind keeps reconciling, in a running
//! operator and in one that starts with the bad object already there. The bad object
//! is written straight into etcd, as an object stored under an older schema is.

mod support;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use jetway::api::stream::Stream;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::{Operator, TestContext, wait_condition};

/// Stores the Stream `object` in `namespace` straight into etcd through etcd's JSON
/// gateway, past the apiserver's validation, as an object of an older schema is.
async fn store_past_the_apiserver(etcd: &str, namespace: &str, mut object: Value) {
    let name = object["metadata"]["name"].as_str().expect("a name").to_owned();
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", rand::random::<u64>() >> 16));
    object["metadata"]["generation"] = json!(1);
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let key = format!("/registry/jetway.dev/streams/{namespace}/{name}");
    let engine = base64::engine::general_purpose::STANDARD;
    let body = json!({"key": engine.encode(key), "value": engine.encode(object.to_string())});
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = hyper::Request::post(format!("{etcd}/v3/kv/put"))
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(body.to_string())))
        .expect("a request");
    let response = client.request(request).await.expect("etcd answers");
    let status = response.status();
    let text = response.into_body().collect().await.expect("a body").to_bytes();
    assert!(status.is_success(), "etcd refused the put: {status} {}", String::from_utf8_lossy(&text));
}

fn stream(name: &str, stream: &str) -> Value {
    json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name},
           "spec": {"name": stream, "subjects": [format!("{}.>", stream.to_lowercase())], "deletionPolicy": "Delete"}})
}

#[tokio::test]
async fn an_object_the_operator_cannot_read_is_reported_and_the_others_go_on() {
    let ctx = TestContext::new("undecodable").await;
    support::install_crds(&ctx.client).await;
    let Some(etcd) = support::ground().etcd_url.clone() else {
        panic!(
            "this test needs the ground's etcd: run it through hack/test.sh or a ground that sets JETWAY_TEST_ETCD_URL"
        );
    };
    let streams = ctx.api::<Stream>();
    let params = PatchParams::apply("jetway-tests");
    let apply = |name: &str| {
        let object = stream(name, &ctx.unique(&name.to_uppercase().replace('-', "_")));
        let streams = streams.clone();
        let (name, params) = (name.to_owned(), params.clone());
        async move { streams.patch(&name, &params, &Patch::Apply(&object)).await.expect("applied") }
    };

    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    apply("before").await;
    wait_condition(&streams, "before", "Ready", "True").await;

    // Admitted by no schema of today: a maxAge past what Go durations hold.
    let mut bad = stream("bad", &ctx.unique("BAD"));
    bad["spec"]["maxAge"] = json!("6000000h");
    store_past_the_apiserver(&etcd, &ctx.namespace, bad).await;

    let message = support::wait_event(&ctx.client, &ctx.namespace, "bad", "InvalidSpec").await;
    assert!(message.contains("spec.maxAge") && message.contains("6000000h"), "names the field: {message}");
    assert!(ctx.jetstream.get_stream(ctx.unique("BAD")).await.is_err(), "nothing was done for it");

    apply("beside").await;
    wait_condition(&streams, "beside", "Ready", "True").await;
    operator.stop().await;

    // A new operator meets the bad object in its first list.
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    apply("after-restart").await;
    wait_condition(&streams, "after-restart", "Ready", "True").await;
    operator.stop().await;
}

#[tokio::test]
async fn an_object_of_an_older_schema_is_reported_in_its_status() {
    let ctx = TestContext::new("undecodable-status").await;
    support::install_crds(&ctx.client).await;
    let Some(etcd) = support::ground().etcd_url.clone() else { panic!("this test needs the ground's etcd") };
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    // Past an i32, which today's schema refuses by its range and an older one admitted.
    let mut wide = stream("wide", &ctx.unique("WIDE"));
    wide["spec"]["maxMsgSize"] = json!(3_000_000_000u64);
    store_past_the_apiserver(&etcd, &ctx.namespace, wide).await;

    let resource = kube::api::ApiResource::erase::<Stream>(&());
    let raw: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    let ready = support::wait_until("Ready=False naming the field", support::EVENTUALLY, support::POLL, || async {
        let object = raw.get("wide").await?;
        let conditions = object.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
        Ok(conditions.into_iter().find(|c| c["type"] == "Ready" && c["status"] == "False"))
    })
    .await
    .expect("Ready=False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap_or_default().contains("spec.maxMsgSize"), "{ready}");
    operator.stop().await;
}
