//! The test ground is real: kube-apiserver validates CRDs and objects,
//! kube-controller-manager acts on Deployments, and nats-server keeps JetStream
//! messages across a crash.

mod support;

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use futures::StreamExt;
use jetway_testground::NatsServer;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Error};
use serde_json::json;
use support::{EVENTUALLY, POLL, TestContext, wait_until};

/// A throwaway kind, unique per test, with one required field and one bounded one.
fn widget_crd(group: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
                    }},
                }},
            }],
        },
    }))
    .expect("a CRD")
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    let conditions = crd.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

fn invalid_reason(result: Result<impl Sized, Error>) -> String {
    match result {
        Err(Error::Api(status)) if status.code == 422 => status.message,
        Err(other) => panic!("expected 422 Invalid, got {other}"),
        Ok(_) => panic!("expected the apiserver to refuse it"),
    }
}

#[tokio::test]
async fn a_crd_becomes_established_and_objects_violating_its_schema_are_refused() {
    let ctx = TestContext::new("crd-established").await;
    let group = format!("{}.test.jetway.dev", ctx.namespace);
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd = crds.create(&PostParams::default(), &widget_crd(&group)).await.expect("creating the CRD");
    let name = crd.metadata.name.clone().expect("a name");
    wait_until("the CRD to be Established", EVENTUALLY, POLL, || async {
        Ok(is_established(&crds.get(&name).await?).then_some(()))
    })
    .await
    .expect("Established");

    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    let widget = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": name}, "spec": spec}),
        )
        .expect("a widget")
    };
    // The group's discovery document can lag behind Established by a moment.
    wait_until("a valid object to be accepted", EVENTUALLY, POLL, || async {
        Ok(widgets.create(&PostParams::default(), &widget("good", json!({"size": 3}))).await.ok().map(|_| ()))
    })
    .await
    .expect("a valid object is accepted");

    let too_big = invalid_reason(widgets.create(&PostParams::default(), &widget("too-big", json!({"size": 11}))).await);
    assert!(too_big.contains("spec.size"), "the refusal names the field: {too_big}");
    let missing = invalid_reason(widgets.create(&PostParams::default(), &widget("missing", json!({}))).await);
    assert!(missing.contains("spec.size") && missing.contains("Required"), "{missing}");
}

#[tokio::test]
async fn a_structurally_invalid_crd_is_refused() {
    let ctx = TestContext::new("crd-invalid").await;
    let mut crd = widget_crd(&format!("{}.test.jetway.dev", ctx.namespace));
    // A property without a type is not a structural schema.
    let schema = crd.spec.versions[0].schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).expect("a schema");
    schema.properties.as_mut().expect("properties").get_mut("spec").expect("spec").type_ = None;
    let reason = invalid_reason(
        Api::<CustomResourceDefinition>::all(ctx.client.clone()).create(&PostParams::default(), &crd).await,
    );
    assert!(reason.contains("type: Required value"), "{reason}");
}

#[tokio::test]
async fn a_deployment_gets_a_replicaset_from_the_controller_manager() {
    let ctx = TestContext::new("deployment").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }))
    .expect("a deployment");
    ctx.api::<Deployment>().create(&PostParams::default(), &deployment).await.expect("creating the deployment");

    let replica_sets = ctx.api::<ReplicaSet>();
    let replica_set = wait_until("a ReplicaSet for the Deployment", EVENTUALLY, POLL, || async {
        Ok(replica_sets.list(&ListParams::default().labels("app=web")).await?.items.into_iter().next())
    })
    .await
    .expect("kube-controller-manager creates a ReplicaSet");
    let owner = &replica_set.metadata.owner_references.expect("owner references")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Deployment", "web"));
    assert_eq!(replica_set.spec.and_then(|s| s.replicas), Some(2));
}

#[tokio::test]
async fn a_stream_keeps_every_message_when_nats_server_is_killed_and_restarted() {
    let mut server = NatsServer::start(&support::tools(), "").await.expect("a private nats-server");
    let client = async_nats::connect(server.url()).await.expect("connecting");
    let jetstream = async_nats::jetstream::new(client);
    let config = StreamConfig {
        name: "CRASH".into(),
        subjects: vec!["crash.>".into()],
        storage: StorageType::File,
        ..Default::default()
    };
    jetstream.create_stream(config).await.expect("creating the stream");
    const MESSAGES: u64 = 500;
    for i in 0..MESSAGES {
        jetstream
            .publish(format!("crash.{}", i % 7), i.to_string().into())
            .await
            .expect("publishing")
            .await
            .expect("acked");
    }

    server.kill();
    server.start_again().await.expect("restarting on the same store");

    // The client reconnects by itself; the stream must come back whole.
    let mut stream = wait_until("the stream after the restart", EVENTUALLY, POLL, || async {
        Ok(jetstream.get_stream("CRASH").await.ok())
    })
    .await
    .expect("the stream survives");
    let info = stream.info().await.expect("stream info");
    assert_eq!((info.state.messages, info.state.first_sequence, info.state.last_sequence), (MESSAGES, 1, MESSAGES));

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("an ephemeral consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(MESSAGES as usize)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetching");
    let mut payloads = Vec::new();
    while let Some(message) = messages.next().await {
        payloads.push(String::from_utf8(message.expect("a message").payload.to_vec()).expect("utf-8"));
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected, "every message, in order");
}
