//! Jetway's status under kstatus's rules (what Flux's health checks and `kpt live
//! status` compute): Current, InProgress or Failed, which Argo CD calls Healthy,
//! Progressing and Degraded. The computation below follows kstatus's generic rules
//! for custom resources (sigs.k8s.io/cli-utils/pkg/kstatus/status), which are all it
//! applies to a kind it has no special rules for.

mod support;

use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, wait_until};

#[derive(Debug, PartialEq, Eq)]
enum KStatus {
    Current,
    InProgress,
    Failed,
    Terminating,
}

/// kstatus's computation for a custom resource.
fn kstatus(object: &Value) -> KStatus {
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return KStatus::Terminating;
    }
    let observed = &object["status"]["observedGeneration"];
    if !observed.is_null() && *observed != object["metadata"]["generation"] {
        return KStatus::InProgress;
    }
    let conditions = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let is_true = |type_: &str| conditions.iter().any(|c| c["type"] == type_ && c["status"] == "True");
    if is_true("Reconciling") {
        return KStatus::InProgress;
    }
    if is_true("Stalled") {
        return KStatus::Failed;
    }
    KStatus::Current
}

/// What Argo CD shows with the health check in examples/README.md, and what Flux reports.
fn health(status: &KStatus) -> &'static str {
    match status {
        KStatus::Current => "Healthy",
        KStatus::InProgress | KStatus::Terminating => "Progressing",
        KStatus::Failed => "Degraded",
    }
}

async fn wait_kstatus<K>(api: &kube::Api<K>, name: &str, want: KStatus) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let what = format!("{name} to read as {want:?} once Jetway has seen it");
    wait_until(&what, EVENTUALLY, POLL, || async {
        let object = serde_json::to_value(api.get(name).await?)?;
        let seen = object["status"]["observedGeneration"].as_i64().is_some_and(|g| g > 0);
        Ok((seen && kstatus(&object) == want).then_some(object))
    })
    .await
    .expect("the status")
}

#[tokio::test]
async fn ready_waiting_and_refused_objects_read_as_healthy_progressing_and_degraded() {
    let ctx = TestContext::new("kstatus").await;
    support::install_crds(&ctx.client).await;
    let streams = ctx.api::<Stream>();
    let consumers = ctx.api::<Consumer>();
    let stream_name = ctx.unique("KSTATUS");
    let stream: Stream = serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream",
        "metadata": { "name": "events" },
        "spec": { "name": stream_name, "subjects": [format!("{stream_name}.>")], "deletionPolicy": "Delete" }
    }))
    .unwrap();
    streams.create(&PostParams::default(), &stream).await.unwrap();
    // Before Jetway has seen it, a new object is Progressing, not Healthy.
    let unseen = serde_json::to_value(streams.get("events").await.unwrap()).unwrap();
    assert_eq!(unseen["status"]["observedGeneration"], 0, "{unseen}");
    assert_eq!(kstatus(&unseen), KStatus::InProgress);

    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let ready = wait_kstatus(&streams, "events", KStatus::Current).await;
    assert_eq!(health(&kstatus(&ready)), "Healthy");
    assert!(
        ready["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
    );

    // A consumer whose stream does not exist yet waits: Progressing.
    let missing = ctx.unique("MISSING");
    let consumer: Consumer = serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer",
        "metadata": { "name": "waiting" },
        "spec": { "streamName": missing, "durableName": "waiting" }
    }))
    .unwrap();
    consumers.create(&PostParams::default(), &consumer).await.unwrap();
    let waiting = wait_kstatus(&consumers, "waiting", KStatus::InProgress).await;
    assert_eq!(health(&kstatus(&waiting)), "Progressing");

    // A stream the server already has in memory, declared with file storage: the
    // change is refused and the object stalls: Degraded, naming the field. (Left
    // unset, an adopted stream's storage would simply be kept.)
    let in_memory = ctx.unique("INMEMORY");
    ctx.jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: in_memory.clone(),
            subjects: vec![format!("{in_memory}.>")],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    let refusing: Stream = serde_json::from_value(json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream",
        "metadata": { "name": "refused" },
        "spec": { "name": in_memory, "subjects": [format!("{in_memory}.>")], "storage": "file", "deletionPolicy": "Delete" }
    }))
    .unwrap();
    streams.create(&PostParams::default(), &refusing).await.unwrap();
    let refused = wait_kstatus(&streams, "refused", KStatus::Failed).await;
    assert_eq!(health(&kstatus(&refused)), "Degraded");
    let stalled = refused["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Stalled").cloned();
    assert!(stalled.unwrap()["message"].as_str().unwrap().contains("spec.storage"));

    // A change not yet seen by the operator reads as Progressing through
    // observedGeneration alone.
    operator.stop().await;
    streams
        .patch("events", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "maxAge": "1h" } })))
        .await
        .unwrap();
    let unseen = serde_json::to_value(streams.get("events").await.unwrap()).unwrap();
    assert_eq!(kstatus(&unseen), KStatus::InProgress);
    assert_eq!(health(&kstatus(&unseen)), "Progressing");
}

#[test]
fn the_rules_in_order() {
    let object = |generation: i64, observed: i64, conditions: Value| json!({ "metadata": { "generation": generation }, "status": { "observedGeneration": observed, "conditions": conditions } });
    let ready = json!([{ "type": "Ready", "status": "True" }]);
    let stalled = json!([{ "type": "Ready", "status": "False" }, { "type": "Stalled", "status": "True" }]);
    let reconciling = json!([{ "type": "Ready", "status": "False" }, { "type": "Reconciling", "status": "True" }]);
    assert_eq!(kstatus(&object(1, 1, ready.clone())), KStatus::Current);
    assert_eq!(kstatus(&object(2, 1, ready)), KStatus::InProgress);
    assert_eq!(kstatus(&object(1, 1, stalled)), KStatus::Failed);
    assert_eq!(kstatus(&object(1, 1, reconciling)), KStatus::InProgress);
    let mut deleting = object(1, 1, json!([]));
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-24T08:00:00Z");
    assert_eq!(kstatus(&deleting), KStatus::Terminating);
}
