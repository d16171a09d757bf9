//! The planners' change rules, asked of the pinned nats-server field by field: for
//! every row a stream or consumer is created with one value and updated to another
//! through Jetway's own executor, and the planner must refuse exactly the changes the
//! server refuses (or accepts and then ignores). A rule that the server contradicts
//! fails here, not in a user's cluster.

mod support;

use jetway::jetstream::{self, ConsumerLookup};
use serde_json::{Value, json};
use support::TestContext;

/// How the server took an update.
#[derive(Debug, PartialEq)]
enum Taken {
    Accepted,
    Refused(String),
    /// Accepted and stored, with no effect on the stream (`first_seq`).
    Ignored,
}

/// `config` with `key` set to `value`, removed for null.
fn changed(config: &Value, key: &str, value: &Value) -> Value {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        match value {
            Value::Null => map.remove(key),
            _ => map.insert(key.to_owned(), value.clone()),
        };
    }
    config
}

async fn api(ctx: &TestContext, subject: String, body: &Value) -> Result<Value, String> {
    let reply = ctx.nats.request(format!("$JS.API.{subject}"), body.to_string().into()).await;
    let reply: Value = serde_json::from_slice(&reply.map_err(|e| e.to_string())?.payload).expect("JSON");
    match reply.get("error") {
        Some(error) => Err(error.to_string()),
        None => Ok(reply),
    }
}

/// (server key, config around it, value at creation, value asked for by the update).
type Row = (&'static str, Value, Value, Value);

fn stream_rows(prefix: &str, origin: &str, other: &str) -> Vec<Row> {
    let base = json!({"subjects": [format!("{prefix}.>")]});
    let per_subject = json!({"subjects": [format!("{prefix}.>")], "discard": "new", "max_msgs_per_subject": 10});
    let mirror = json!({});
    let source = |name: &str| json!([{"name": name}]);
    vec![
        ("description", base.clone(), json!("a"), json!("b")),
        (
            "subjects",
            base.clone(),
            json!([format!("{prefix}.a")]),
            json!([format!("{prefix}.a"), format!("{prefix}.b")]),
        ),
        ("retention", base.clone(), json!("limits"), json!("interest")),
        ("retention", base.clone(), json!("interest"), json!("limits")),
        ("retention", base.clone(), json!("limits"), json!("workqueue")),
        ("retention", base.clone(), json!("workqueue"), json!("limits")),
        ("max_consumers", base.clone(), json!(10), json!(20)),
        ("max_msgs", base.clone(), json!(10), json!(20)),
        ("max_bytes", base.clone(), json!(1_000_000), json!(2_000_000)),
        ("max_age", base.clone(), json!(60_000_000_000u64), json!(120_000_000_000u64)),
        ("max_msgs_per_subject", base.clone(), json!(10), json!(20)),
        ("max_msg_size", base.clone(), json!(1024), json!(2048)),
        ("discard", base.clone(), json!("old"), json!("new")),
        ("storage", base.clone(), json!("file"), json!("memory")),
        ("no_ack", base.clone(), json!(false), json!(true)),
        ("duplicate_window", base.clone(), json!(60_000_000_000u64), json!(30_000_000_000u64)),
        ("mirror", mirror.clone(), json!({"name": origin}), Value::Null),
        ("mirror", mirror.clone(), json!({"name": origin}), json!({"name": other})),
        ("mirror", base.clone(), Value::Null, json!({"name": origin})),
        ("sources", base.clone(), Value::Null, source(origin)),
        ("sources", base.clone(), source(origin), source(other)),
        ("sealed", base.clone(), json!(false), json!(true)),
        ("deny_delete", base.clone(), json!(false), json!(true)),
        ("deny_delete", base.clone(), json!(true), json!(false)),
        ("deny_purge", base.clone(), json!(false), json!(true)),
        ("deny_purge", base.clone(), json!(true), json!(false)),
        ("allow_rollup_hdrs", base.clone(), json!(false), json!(true)),
        ("allow_rollup_hdrs", base.clone(), json!(true), json!(false)),
        ("allow_direct", base.clone(), json!(false), json!(true)),
        ("allow_direct", base.clone(), json!(true), json!(false)),
        ("mirror_direct", mirror.clone(), json!(false), json!(true)),
        ("discard_new_per_subject", per_subject.clone(), json!(false), json!(true)),
        ("discard_new_per_subject", per_subject, json!(true), json!(false)),
        (
            "republish",
            base.clone(),
            Value::Null,
            json!({"src": format!("{prefix}.>"), "dest": format!("copy.{prefix}.>")}),
        ),
        ("metadata", base.clone(), json!({"a": "b"}), json!({"a": "c"})),
        (
            "subject_transform",
            base.clone(),
            Value::Null,
            json!({"src": format!("{prefix}.>"), "dest": format!("moved.{prefix}.>")}),
        ),
        ("compression", base.clone(), json!("none"), json!("s2")),
        ("compression", base.clone(), json!("s2"), json!("none")),
        ("consumer_limits", base.clone(), Value::Null, json!({"max_ack_pending": 10})),
        ("first_seq", base.clone(), json!(10), json!(20)),
        ("persist_mode", base.clone(), json!("default"), json!("async")),
        ("persist_mode", base.clone(), json!("async"), json!("default")),
        ("allow_msg_ttl", base.clone(), json!(false), json!(true)),
        ("allow_msg_ttl", base.clone(), json!(true), json!(false)),
        (
            "subject_delete_marker_ttl",
            changed(&base, "allow_msg_ttl", &json!(true)),
            Value::Null,
            json!(60_000_000_000u64),
        ),
        ("allow_atomic", base.clone(), json!(false), json!(true)),
        ("allow_atomic", base.clone(), json!(true), json!(false)),
        ("allow_msg_schedules", changed(&base, "allow_rollup_hdrs", &json!(true)), json!(false), json!(true)),
        ("allow_msg_schedules", changed(&base, "allow_rollup_hdrs", &json!(true)), json!(true), json!(false)),
        ("allow_msg_counter", base.clone(), json!(false), json!(true)),
        ("allow_msg_counter", base.clone(), json!(true), json!(false)),
        ("allow_batched", base.clone(), json!(false), json!(true)),
        ("allow_batched", base, json!(true), json!(false)),
    ]
}

/// Fields a single server cannot judge: changing them needs a cluster.
const STREAM_FIELDS_FOR_A_CLUSTER: [&str; 2] = ["num_replicas", "placement"];

async fn take_stream_update(ctx: &TestContext, name: &str, key: &str, before: Value, after: Value) -> Taken {
    let mut before = before;
    before["name"] = json!(name);
    let created = api(ctx, format!("STREAM.CREATE.{name}"), &before).await;
    let created = created.unwrap_or_else(|err| panic!("{key}: creating {before} was refused: {err}"));
    let config = serde_json::from_value(changed(&created["config"], key, &after[key])).expect("a stream config");
    let taken = match jetstream::update_stream(&ctx.jetstream, config).await {
        Err(err) => Taken::Refused(err.to_string()),
        Ok(report) if key == "first_seq" => {
            let first = report.state.first_sequence;
            if first == after["first_seq"].as_u64().unwrap_or_default() { Taken::Accepted } else { Taken::Ignored }
        }
        Ok(_) => Taken::Accepted,
    };
    ctx.jetstream.delete_stream(name).await.expect("deleting the stream");
    taken
}

#[tokio::test]
async fn every_stream_change_rule_agrees_with_the_server() {
    let ctx = TestContext::new("server-rules-stream").await;
    let prefix = format!("rules{}", ctx.unique("").to_lowercase());
    let (origin, other) = (ctx.unique("ORIGIN"), ctx.unique("OTHER"));
    for (name, subject) in [(&origin, "origin"), (&other, "other")] {
        let config = json!({"name": name, "subjects": [format!("{prefix}x.{subject}")], "allow_direct": true});
        api(&ctx, format!("STREAM.CREATE.{name}"), &config).await.expect("an origin stream");
    }
    let rows = stream_rows(&prefix, &origin, &other);
    let mut disagreements = Vec::new();
    for (i, (key, base, from, to)) in rows.iter().enumerate() {
        let name = ctx.unique(&format!("R{i}"));
        let taken = take_stream_update(&ctx, &name, key, changed(base, key, from), changed(base, key, to)).await;
        let believed = jetway::plan::stream::refusal(key, from, to);
        if believed.is_some() == (taken == Taken::Accepted) {
            disagreements.push(format!("{key}: {from} -> {to}: the planner says {believed:?}, the server {taken:?}"));
        }
    }
    let covered: Vec<&str> = rows.iter().filter(|(_, _, from, to)| from != to).map(|(key, ..)| *key).collect();
    for (key, spec) in jetway::plan::stream::fields() {
        assert!(
            covered.contains(&key) || STREAM_FIELDS_FOR_A_CLUSTER.contains(&key),
            "{spec} ({key}) has no row: add one"
        );
    }
    assert!(disagreements.is_empty(), "the server disagrees:\n{}", disagreements.join("\n"));
}

fn consumer_rows(prefix: &str) -> Vec<Row> {
    let pull = json!({"ack_policy": "explicit"});
    let push = json!({"ack_policy": "explicit", "deliver_subject": format!("{prefix}_out.push")});
    let heartbeat = changed(&push, "idle_heartbeat", &json!(5_000_000_000u64));
    let by_sequence = changed(&pull, "deliver_policy", &json!("by_start_sequence"));
    let by_time = changed(&pull, "deliver_policy", &json!("by_start_time"));
    let backoff = changed(&pull, "max_deliver", &json!(5));
    let priority = changed(&pull, "priority_groups", &json!(["a"]));
    let pinned = changed(&priority, "priority_policy", &json!("pinned_client"));
    vec![
        ("description", pull.clone(), json!("a"), json!("b")),
        ("deliver_policy", pull.clone(), json!("all"), json!("last")),
        ("opt_start_seq", by_sequence, json!(1), json!(2)),
        ("opt_start_time", by_time, json!("2026-01-01T00:00:00Z"), json!("2026-02-01T00:00:00Z")),
        ("ack_policy", json!({}), json!("explicit"), json!("none")),
        ("ack_wait", pull.clone(), json!(30_000_000_000u64), json!(60_000_000_000u64)),
        ("max_deliver", pull.clone(), json!(5), json!(10)),
        ("backoff", backoff, json!([1_000_000_000u64]), json!([2_000_000_000u64])),
        ("filter_subject", pull.clone(), json!(format!("{prefix}.a")), json!(format!("{prefix}.b"))),
        (
            "filter_subjects",
            pull.clone(),
            json!([format!("{prefix}.a"), format!("{prefix}.b")]),
            json!([format!("{prefix}.a")]),
        ),
        ("replay_policy", pull.clone(), json!("instant"), json!("original")),
        ("rate_limit_bps", push.clone(), json!(1000), json!(2000)),
        ("sample_freq", pull.clone(), json!("10"), json!("20")),
        ("max_ack_pending", pull.clone(), json!(10), json!(20)),
        ("max_waiting", pull.clone(), json!(10), json!(20)),
        ("headers_only", pull.clone(), json!(false), json!(true)),
        ("flow_control", heartbeat.clone(), json!(false), json!(true)),
        ("idle_heartbeat", push.clone(), json!(5_000_000_000u64), json!(10_000_000_000u64)),
        ("deliver_subject", push.clone(), json!(format!("{prefix}_out.push")), json!(format!("{prefix}_out.other"))),
        ("deliver_subject", pull.clone(), Value::Null, json!(format!("{prefix}_out.push"))),
        ("deliver_subject", push.clone(), json!(format!("{prefix}_out.push")), Value::Null),
        ("deliver_group", push.clone(), json!("a"), json!("b")),
        ("max_batch", pull.clone(), json!(10), json!(20)),
        ("max_expires", pull.clone(), json!(10_000_000_000u64), json!(20_000_000_000u64)),
        ("max_bytes", pull.clone(), json!(1024), json!(2048)),
        ("inactive_threshold", pull.clone(), json!(3_600_000_000_000u64), json!(7_200_000_000_000u64)),
        ("num_replicas", pull.clone(), json!(0), json!(1)),
        ("mem_storage", pull.clone(), json!(false), json!(true)),
        ("metadata", pull.clone(), json!({"a": "b"}), json!({"a": "c"})),
        ("pause_until", pull.clone(), Value::Null, json!("2030-01-01T00:00:00Z")),
        ("pause_until", pull.clone(), json!("2030-01-01T00:00:00Z"), Value::Null),
        ("priority_policy", priority.clone(), json!("overflow"), json!("pinned_client")),
        ("priority_timeout", pinned, json!(60_000_000_000u64), json!(120_000_000_000u64)),
        ("priority_groups", changed(&pull, "priority_policy", &json!("overflow")), json!(["a"]), json!(["b"])),
    ]
}

async fn take_consumer_update(ctx: &TestContext, stream: &str, key: &str, before: Value, after: Value) -> Taken {
    let name = before["durable_name"].as_str().expect("a durable name").to_owned();
    let body = json!({"stream_name": stream, "config": before, "action": "create"});
    let created = api(ctx, format!("CONSUMER.CREATE.{stream}.{name}"), &body).await;
    let created = created.unwrap_or_else(|err| panic!("{key}: creating {before} was refused: {err}"));
    let config: async_nats::jetstream::consumer::Config =
        serde_json::from_value(changed(&created["config"], key, &after[key])).expect("a consumer config");
    let taken = match jetstream::put_consumer(&ctx.jetstream, stream, config.clone(), false).await {
        Err(err) => Taken::Refused(err.to_string()),
        Ok(report) => {
            let value = |config: &async_nats::jetstream::consumer::Config| {
                let json = serde_json::to_value(config).expect("JSON");
                jetway::plan::consumer::comparable(key, json.get(key))
            };
            if value(&report.observed.config) == value(&config) { Taken::Accepted } else { Taken::Ignored }
        }
    };
    let _ = jetstream::delete_consumer(&ctx.jetstream, stream, &name).await;
    assert!(matches!(jetstream::observe_consumer(&ctx.jetstream, stream, &name).await, Ok(ConsumerLookup::Missing)));
    taken
}

#[tokio::test]
async fn every_consumer_change_rule_agrees_with_the_server() {
    let ctx = TestContext::new("server-rules-consumer").await;
    let prefix = format!("rules{}", ctx.unique("").to_lowercase());
    let stream = ctx.unique("RULES");
    let config = json!({"name": stream, "subjects": [format!("{prefix}.>")]});
    api(&ctx, format!("STREAM.CREATE.{stream}"), &config).await.expect("the stream");
    let rows = consumer_rows(&prefix);
    let mut disagreements = Vec::new();
    for (i, (key, base, from, to)) in rows.iter().enumerate() {
        let name = format!("R{i}");
        let mut base = base.clone();
        base["durable_name"] = json!(name);
        let taken = take_consumer_update(&ctx, &stream, key, changed(&base, key, from), changed(&base, key, to)).await;
        let believed = jetway::plan::consumer::refusal(key, from, to);
        if believed.is_some() == (taken == Taken::Accepted) {
            disagreements.push(format!("{key}: {from} -> {to}: the planner says {believed:?}, the server {taken:?}"));
        }
    }
    let covered: Vec<&str> = rows.iter().filter(|(_, _, from, to)| from != to).map(|(key, ..)| *key).collect();
    for (key, spec) in jetway::plan::consumer::fields() {
        assert!(covered.contains(&key), "{spec} ({key}) has no row: add one");
    }
    ctx.jetstream.delete_stream(&stream).await.expect("deleting the stream");
    assert!(disagreements.is_empty(), "the server disagrees:\n{}", disagreements.join("\n"));
}
