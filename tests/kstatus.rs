//! Jetway's status under kstatus's rules (what Flux's health checks and `kpt live
//! status` compute): Current, InProgress or Failed, which Argo CD calls Healthy,
//! Progressing and Degraded. The computation below follows kstatus's generic rules
//! for custom resources (sigs.k8s.io/cli-utils/pkg/kstatus/status), which are all it
//! applies to a kind it has no special rules for. Argo CD's health is computed by
//! running examples/argocd/health.lua in gopher-lua, the Lua Argo CD embeds, on the
//! same objects.

mod support;

use jetway::api::connection::NatsConnection;
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::api::workerpool::WorkerPool;
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

/// What Argo CD should show where kstatus (Flux) says `status`.
fn health(status: &KStatus) -> &'static str {
    match status {
        KStatus::Current => "Healthy",
        KStatus::InProgress | KStatus::Terminating => "Progressing",
        KStatus::Failed => "Degraded",
    }
}

const HEALTH_CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/argocd/health.lua");

/// Argo CD's health of `object` (status, message): the check run as Argo CD runs it,
/// with the object as the global `obj`, converted the way Argo CD converts it (JSON
/// objects and arrays to tables, arrays from 1, nulls left out).
fn argocd(object: &Value) -> (String, String) {
    let harness = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua(object),
        lua(&json!(HEALTH_CHECK))
    );
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), harness).unwrap();
    let output = std::process::Command::new(support::tools().path("glua")).arg(script.path()).output().unwrap();
    assert!(output.status.success(), "glua: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (status, message) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    (status.to_owned(), message.to_owned())
}

/// `value` as a Lua expression.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let escaped: String = s
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b' ' | b'.' | b'-' | b'_' | b'/' | b':' => {
                        char::from(b).to_string()
                    }
                    other => format!("\\{other:03}"),
                })
                .collect();
            format!("\"{escaped}\"")
        }
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua(&json!(k)), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Flux's and Argo CD's reading of `object` agree, and Argo CD's is `want`.
fn assert_health(object: &Value, want: &str) {
    assert_eq!(health(&kstatus(object)), want, "kstatus: {object}");
    let (status, message) = argocd(object);
    assert_eq!(status, want, "Argo CD's check ({message}): {object}");
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
    assert_health(&unseen, "Progressing");

    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let ready = wait_kstatus(&streams, "events", KStatus::Current).await;
    assert_health(&ready, "Healthy");
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
    assert_health(&waiting, "Progressing");

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
    assert_health(&refused, "Degraded");
    assert!(argocd(&refused).1.contains("spec.storage"), "Argo CD shows the refused field");
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
    assert_health(&unseen, "Progressing");
}

#[tokio::test]
async fn connections_and_worker_pools_read_the_same_way() {
    let ctx = TestContext::new("kstatus-kinds").await;
    support::install_crds(&ctx.client).await;
    let connections = ctx.api::<NatsConnection>();
    let pools = ctx.api::<WorkerPool>();
    let _operator = Operator::start(&ctx.namespace, |_| {}).await;
    let apply = PatchParams::apply("jetway-tests");
    let connection = json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": "NatsConnection",
        "metadata": { "name": "ground" }, "spec": { "servers": [support::ground().nats_url] } });
    connections.patch("ground", &apply, &Patch::Apply(connection)).await.unwrap();
    let ready = wait_kstatus(&connections, "ground", KStatus::Current).await;
    assert_health(&ready, "Healthy");

    // A pool whose consumer is not declared: not Healthy, and both readings agree.
    let pool = json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": { "name": "orphan" },
        "spec": { "consumerRef": { "name": "nowhere" }, "worker": { "image": "jetway-payment:0.1.0" } } });
    pools.patch("orphan", &apply, &Patch::Apply(pool)).await.unwrap();
    let seen = wait_until("the pool to be seen", EVENTUALLY, POLL, || async {
        let object = serde_json::to_value(pools.get("orphan").await?)?;
        Ok(object["status"]["observedGeneration"].as_i64().is_some_and(|g| g > 0).then_some(object))
    })
    .await
    .unwrap();
    let want = health(&kstatus(&seen));
    assert_ne!(want, "Healthy", "{seen}");
    assert_health(&seen, want);
}

#[test]
fn every_kind_in_the_argocd_config_map_has_the_tested_check() {
    let check = std::fs::read_to_string(HEALTH_CHECK).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/argocd/argocd-cm.yaml");
    let config_map: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for kind in jetway::crds::all().iter().map(|crd| crd.spec.names.kind.clone()) {
        let key = format!("resource.customizations.health.jetway.dev_{kind}");
        assert_eq!(config_map["data"][&key].as_str(), Some(check.as_str()), "{key}");
    }
}

#[test]
fn objects_reach_the_lua_check_as_argo_cd_gives_them() {
    let object = json!({ "metadata": { "generation": 2, "name": "a \"quoted\" name\n" },
        "status": { "observedGeneration": 2, "extra": null,
            "conditions": [{ "type": "Ready", "status": "True", "message": "déjà \\ vu" }] } });
    assert_eq!(argocd(&object), ("Healthy".to_owned(), "déjà \\ vu".to_owned()));
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
