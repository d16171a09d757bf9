//! Jetway never fights the server: once specs that between them set every field the
//! Stream and Consumer kinds have are Ready, the operator sends no stream or consumer
//! write for as long as nothing changes. Writes are counted on the server's subjects
//! by a core subscriber, not by the operator's own bookkeeping.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_until};

/// Stream specs that together set every field of the Stream kind; `{S}` is replaced by
/// the test's unique suffix, `{P}` by its subject prefix.
fn stream_specs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("plain", "{}"),
        (
            "limits",
            r#"
description: every limit and most switches
subjects: ["{P}.limits.>"]
retention: limits
maxConsumers: 10
maxMsgsPerSubject: 100
maxMsgs: 1000
maxBytes: 1048576
maxAge: 1h
maxMsgSize: 1024
storage: file
replicas: 1
noAck: false
duplicateWindow: 30s
compression: s2
subjectTransform: {source: "{P}.limits.>", dest: "{P}.moved.>"}
republish: {source: "{P}.moved.>", destination: "{P}.copy.>", headers_only: true}
metadata: {team: shop}
consumerLimits: {inactiveThreshold: 1h, maxAckPending: 100}
allowDirect: true
allowRollup: true
denyDelete: true
firstSequence: 10
allowMsgTtl: true
subjectDeleteMarkerTtl: 5m
allowAtomicPublish: true
allowMsgSchedules: true
allowBatched: true
deletionPolicy: Delete
adoptionPolicy: Adopt
"#,
        ),
        (
            "zeros",
            r#"
subjects: ["{P}.zeros.>"]
retention: interest
storage: memory
discard: new
discardPerSubject: true
maxMsgsPerSubject: 10
maxMsgs: 0
maxBytes: 0
maxConsumers: 0
maxMsgSize: 0
duplicateWindow: "0"
denyPurge: true
deletionPolicy: Delete
"#,
        ),
        (
            "work",
            r#"
subjects: ["{P}.work.>"]
retention: workqueue
persistMode: async
noAck: true
maxAge: 30s
deletionPolicy: Delete
"#,
        ),
        ("counter", "subjects: [\"{P}.counter.>\"]\nallowMsgCounter: true\ndeletionPolicy: Delete\n"),
        ("markers", "subjects: [\"{P}.markers.>\"]\nsubjectDeleteMarkerTtl: 1m\ndeletionPolicy: Delete\n"),
        ("schedules", "subjects: [\"{P}.schedules.>\"]\nallowMsgSchedules: true\ndeletionPolicy: Delete\n"),
        ("sealed", "subjects: [\"{P}.sealed.>\"]\nsealed: true\nmaxAge: 1h\ndeletionPolicy: Delete\n"),
        ("mirror", "mirror: {name: LIMITS_{S}, optStartSeq: 1}\ndeletionPolicy: Delete\n"),
        (
            "mirror-direct",
            "mirror: {name: COUNTER_{S}, filterSubject: \"{P}.counter.a\"}\nmirrorDirect: true\ndeletionPolicy: Delete\n",
        ),
        (
            "sourced",
            r#"
sources:
- name: LIMITS_{S}
  optStartTime: "2026-01-01T01:00:00+01:00"
  subjectTransforms: [{source: "{P}.moved.a", dest: "{P}.sourced.a"}]
- name: PLAIN_{S}
  optStartSeq: 5
  filterSubject: "PLAIN_{S}"
- name: REMOTE_{S}
  externalApiPrefix: "$JS.hub.API"
  externalDeliverPrefix: "deliver.hub.{P}"
deletionPolicy: Delete
"#,
        ),
    ]
}

/// Consumer specs that together set every field of the Consumer kind.
fn consumer_specs() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "pull",
            r#"
streamName: LIMITS_{S}
durableName: PULL
description: every pull field
deliverPolicy: byStartSequence
optStartSeq: 3
ackPolicy: explicit
ackWait: 30s
maxDeliver: 5
backoff: [1s, 5s, 10s]
filterSubject: "{P}.moved.a"
replayPolicy: instant
sampleFreq: "50%"
maxAckPending: 100
maxWaiting: 0
headersOnly: true
maxRequestBatch: 10
maxRequestExpires: 30s
maxRequestMaxBytes: 1024
inactiveThreshold: 1h
replicas: 0
memStorage: true
metadata: {owner: billing}
pauseUntil: "2030-01-01T01:00:00+01:00"
priorityPolicy: pinned_client
priorityGroups: [jobs]
pinnedTtl: "0"
deletionPolicy: Delete
adoptionPolicy: Adopt
"#,
        ),
        (
            "push",
            r#"
streamName: LIMITS_{S}
deliverSubject: "{P}.deliver.push"
deliverPolicy: byStartTime
optStartTime: "2026-06-01T12:00:00-05:00"
ackPolicy: all
replayPolicy: original
filterSubjects: ["{P}.moved.a", "{P}.moved.b"]
flowControl: true
heartbeatInterval: 5s
rateLimitBps: 1000000
deliverGroup: ""
deletionPolicy: Delete
"#,
        ),
        (
            "queue",
            r#"
streamName: PLAIN_{S}
deliverSubject: "{P}.deliver.queue"
deliverGroup: workers
deliverPolicy: last
ackPolicy: none
ackWait: "0"
maxDeliver: 0
deadLetter: {subject: "{P}.dead"}
deletionPolicy: Delete
"#,
        ),
        (
            "overflow",
            r#"
streamName: PLAIN_{S}
deliverPolicy: new
ackPolicy: explicit
priorityPolicy: overflow
priorityGroups: [a, b]
maxAckPending: 0
inactiveThreshold: "0"
replicas: 1
deletionPolicy: Delete
"#,
        ),
        (
            "per-subject",
            r#"
streamName: MARKERS_{S}
deliverPolicy: lastPerSubject
filterSubject: "{P}.markers.>"
priorityPolicy: prioritized
priorityGroups: [p]
pauseUntil: "2020-01-01T00:00:00Z"
deletionPolicy: Delete
"#,
        ),
        ("worker", "streamName: WORK_{S}\ndeliverPolicy: all\nreplicas: 1\nmaxDeliver: -1\ndeletionPolicy: Delete\n"),
    ]
}

fn manifest(kind: &str, name: &str, yaml: &str, ctx: &TestContext, prefix: &str) -> Value {
    let suffix = ctx.unique("");
    let suffix = suffix.trim_start_matches('_');
    let text = yaml.replace("{S}", suffix).replace("{P}", prefix);
    let mut spec: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    if kind == "Stream" {
        spec["name"] = json!(ctx.unique(&name.to_uppercase().replace('-', "_")));
    }
    json!({"apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

async fn wait_ready<K>(api: &Api<K>, names: &[&str])
where
    K: support::Conditioned + kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for name in names {
        let found = wait_until(&format!("{name} to be Ready"), EVENTUALLY, POLL, || async {
            let object = api.get(name).await?;
            Ok(condition(&object, "Ready").is_some_and(|c| c.status == "True").then_some(()))
        })
        .await;
        if found.is_err() {
            let object = api.get(name).await.expect("the object");
            panic!("{name} never became Ready: {:#?}", object.conditions());
        }
    }
}

#[tokio::test]
async fn after_convergence_no_stream_or_consumer_is_written_again() {
    let ctx = TestContext::new("no-fighting").await;
    support::install_crds(&ctx.client).await;
    let prefix = format!("nf{}", ctx.unique("").to_lowercase());
    let suffix = ctx.unique("");
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let (streams, consumers): (Api<Stream>, Api<Consumer>) = (ctx.api(), ctx.api());
    let params = PatchParams::apply("jetway-tests");
    for (name, yaml) in stream_specs() {
        let object = manifest("Stream", name, yaml, &ctx, &prefix);
        streams.patch(name, &params, &Patch::Apply(&object)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, yaml) in consumer_specs() {
        let object = manifest("Consumer", name, yaml, &ctx, &prefix);
        consumers.patch(name, &params, &Patch::Apply(&object)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let stream_names: Vec<&str> = stream_specs().iter().map(|(n, _)| *n).collect();
    let consumer_names: Vec<&str> = consumer_specs().iter().map(|(n, _)| *n).collect();
    wait_ready(&streams, &stream_names).await;
    wait_ready(&consumers, &consumer_names).await;

    // Past the last write of convergence, count over three resync intervals (the test
    // operator resyncs every 2 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut api = ctx.nats.subscribe("$JS.API.>").await.expect("a subscription");
    ctx.nats.flush().await.expect("subscribed");
    let mut seen = Vec::new();
    let counting = tokio::time::sleep(Duration::from_secs(7));
    tokio::pin!(counting);
    loop {
        tokio::select! {
            _ = &mut counting => break,
            Some(message) = api.next() => {
                let write = jetway_testground::nats::is_jetstream_write(&message.subject);
                if write && message.subject.contains(&suffix) {
                    seen.push(format!("{}: {}", message.subject, String::from_utf8_lossy(&message.payload)));
                }
            }
        }
    }
    assert!(seen.is_empty(), "{} writes after convergence:\n{}", seen.len(), seen.join("\n"));
    operator.stop().await;
}
