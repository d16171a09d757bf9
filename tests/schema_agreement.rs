//! The CRD schema admits exactly what the operator accepts. Generated values, valid
//! and invalid (durations, integers at and past their ranges, subjects, names,
//! times, sampling frequencies), are put one at a time into an otherwise minimal
//! Stream or Consumer and offered to the real kube-apiserver as a dry-run create;
//! the same object is decoded into the Rust type and resolved as the reconciler
//! would. A value the apiserver admits and the operator refuses would stall an
//! object after `kubectl apply` said yes; one refused but acceptable would lock
//! users out. Either is a failure, listed with the value.

mod support;

use futures::{StreamExt, stream};
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::controller::Decoded;
use jetway::plan::consumer::DesiredConsumer;
use jetway::plan::stream::DesiredStream;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::TestContext;

/// Values generated per field, besides the fixed edge cases.
const GENERATED: usize = 40;

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn duration(rng: &mut StdRng) -> Value {
    let units = ["ns", "us", "µs", "ms", "s", "m", "h", "h", "m", "s", "", "d", "H", "sec"];
    let mut text = pick(rng, &["", "", "", "+", "-"]).to_owned();
    for _ in 0..rng.random_range(1..4) {
        let digits = rng.random_range(0..8);
        let whole: String = (0..digits).map(|_| char::from(b'0' + rng.random_range(0..10))).collect();
        text.push_str(&whole);
        if rng.random_bool(0.25) {
            text.push('.');
            let fraction: String =
                (0..rng.random_range(0..4)).map(|_| char::from(b'0' + rng.random_range(0..10))).collect();
            text.push_str(&fraction);
        }
        text.push_str(pick(rng, &units));
    }
    json!(text)
}

const DURATION_EDGES: &[&str] = &[
    "0",
    "0s",
    "",
    "1h30m",
    "1.5h",
    ".5s",
    "5.s",
    ".s",
    "1h 2m",
    "1.2.3s",
    "2562047h",
    "2562048h",
    "2562047h47m16.854775807s",
    "2562047h47m16.854775808s",
    "9223372036854775807ns",
    "9223372036854775808ns",
    "+1s",
    "-1s",
    "-0s",
    "1d",
    "00000000000000000000000000000000000000000000000000000000000000001s",
    "1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s",
];

fn integer(rng: &mut StdRng) -> Value {
    match rng.random_range(0..4) {
        0 => json!(rng.random_range(-3i64..8)),
        1 => json!(rng.random_range(i64::from(i32::MIN)..=i64::from(i32::MAX) + 10)),
        2 => json!(rng.random::<i64>()),
        _ => json!(rng.random::<u64>()),
    }
}

fn integer_edges() -> Vec<Value> {
    let mut edges: Vec<Value> = [-2i64, -1, 0, 1, 5, 6, i64::from(i32::MAX), i64::from(i32::MAX) + 1, i64::MAX]
        .into_iter()
        .map(|v| json!(v))
        .collect();
    edges.extend([json!(u64::MAX), json!(1.5), json!("1"), json!(i64::MIN)]);
    edges
}

fn subject(rng: &mut StdRng) -> Value {
    let tokens = ["a", "orders", "*", ">", "", "x y", "é", "a\tb", "-_", "**", "a>", "$JS", "1"];
    let n = rng.random_range(1..5);
    json!((0..n).map(|_| pick(rng, &tokens)).collect::<Vec<_>>().join("."))
}

const SUBJECT_EDGES: &[&str] = &["a", "a.b", "*", ">", "a.>", "a.*.b", "a..b", ".a", "a.", "a.>.b", "a b", "", " "];

fn name(rng: &mut StdRng) -> Value {
    let chars = ["A", "b", "_", "-", "1", ".", "*", ">", " ", "\t", "é", "/", "$"];
    let n = rng.random_range(0..6);
    json!((0..n).map(|_| pick(rng, &chars)).collect::<String>())
}

fn time(rng: &mut StdRng) -> Value {
    let year = pick(rng, &["2024", "0001", "0000", "9999", "24", "2024"]);
    let month = pick(rng, &["01", "12", "13", "00", "1"]);
    let day = pick(rng, &["01", "29", "31", "32"]);
    let t = pick(rng, &["T", "T", "t", " "]);
    let clock = pick(rng, &["03:04:05", "23:59:59", "24:00:00", "03:04", "23:59:60"]);
    let fraction = pick(rng, &["", "", ".5", ".123456789", ".1234567891"]);
    let zone = pick(rng, &["Z", "Z", "z", "+02:00", "-11:30", "+0200", ""]);
    json!(format!("{year}-{month}-{day}{t}{clock}{fraction}{zone}"))
}

const TIME_EDGES: &[&str] = &["2024-01-02T03:04:05Z", "2024-02-30T00:00:00Z", "tomorrow", "", "2024-01-02"];

fn sample_frequency(rng: &mut StdRng) -> Value {
    let number = rng.random_range(0..120).to_string();
    let padded = if rng.random_bool(0.1) { format!("0{number}") } else { number };
    json!(format!("{padded}{}", pick(rng, &["", "%", "%", "x", " %"])))
}

/// One field under test: where its value goes in a base spec, and what to generate.
struct Field {
    kind: &'static str,
    path: &'static str,
    base: Value,
    generate: fn(&mut StdRng) -> Value,
    edges: Vec<Value>,
}

fn strings(values: &[&str]) -> Vec<Value> {
    values.iter().map(|v| json!(v)).collect()
}

fn fields() -> Vec<Field> {
    let stream = json!({"subjects": ["prop.x"]});
    let consumer = json!({"streamName": "S"});
    let at = |kind, path, base: &Value, generate, edges| Field { kind, path, base: base.clone(), generate, edges };
    let by_time = json!({"streamName": "S", "deliverPolicy": "byStartTime"});
    let sourced = json!({"sources": [{"name": "ORIGIN"}]});
    vec![
        at("Stream", "maxAge", &stream, duration, strings(DURATION_EDGES)),
        at("Stream", "duplicateWindow", &stream, duration, strings(DURATION_EDGES)),
        at("Stream", "subjectDeleteMarkerTtl", &stream, duration, strings(DURATION_EDGES)),
        at("Stream", "maxMsgs", &stream, integer, integer_edges()),
        at("Stream", "maxBytes", &stream, integer, integer_edges()),
        at("Stream", "maxConsumers", &stream, integer, integer_edges()),
        at("Stream", "maxMsgSize", &stream, integer, integer_edges()),
        at("Stream", "replicas", &stream, integer, integer_edges()),
        at("Stream", "firstSequence", &stream, integer, integer_edges()),
        at("Stream", "name", &stream, name, strings(&["ORDERS", "a.b", "", "x y"])),
        at("Stream", "subjects/0", &json!({"subjects": [null]}), subject, strings(SUBJECT_EDGES)),
        at("Stream", "sources/0/optStartTime", &sourced, time, strings(TIME_EDGES)),
        at("Stream", "sources/0/filterSubject", &sourced, subject, strings(SUBJECT_EDGES)),
        at("Stream", "sources/0/name", &sourced, name, strings(&["ORIGIN", "a.b", ""])),
        at("Consumer", "ackWait", &consumer, duration, strings(DURATION_EDGES)),
        at("Consumer", "backoff/0", &json!({"streamName": "S", "backoff": [null]}), duration, strings(DURATION_EDGES)),
        at("Consumer", "inactiveThreshold", &consumer, duration, strings(DURATION_EDGES)),
        at("Consumer", "maxDeliver", &consumer, integer, integer_edges()),
        at("Consumer", "maxAckPending", &consumer, integer, integer_edges()),
        at("Consumer", "maxWaiting", &consumer, integer, integer_edges()),
        at("Consumer", "replicas", &consumer, integer, integer_edges()),
        at("Consumer", "rateLimitBps", &consumer, integer, integer_edges()),
        at("Consumer", "optStartTime", &by_time, time, strings(TIME_EDGES)),
        at("Consumer", "pauseUntil", &consumer, time, strings(TIME_EDGES)),
        at("Consumer", "filterSubject", &consumer, subject, strings(SUBJECT_EDGES)),
        at("Consumer", "durableName", &consumer, name, strings(&["worker", "a.b", ""])),
        at("Consumer", "streamName", &consumer, name, strings(&["S", "a.b", "", "a b"])),
        at("Consumer", "sampleFreq", &consumer, sample_frequency, strings(&["100%", "101%", "0", "", "50"])),
    ]
}

fn with_value(base: &Value, path: &str, value: Value) -> Value {
    let mut spec = base.clone();
    let pointer = format!("/{path}");
    match spec.pointer_mut(&pointer) {
        Some(slot) => *slot = value,
        None => {
            spec[path] = value;
        }
    }
    spec
}

/// Whether the operator takes the object: it decodes as the controllers' watch
/// decodes it, and the spec resolves.
fn operator_accepts(object: &Value) -> Result<(), String> {
    fn decode<K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>>(object: &Value) -> Result<K, String> {
        let decoded: Decoded<K> = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        decoded.object.map_err(|e| e.to_string())
    }
    let owner = "ns/prop";
    match object["kind"].as_str() {
        Some("Stream") => {
            let stream: Stream = decode(object)?;
            DesiredStream::from_spec(&stream.spec, "prop", owner).map(|_| ()).map_err(|v| format!("{v:?}"))
        }
        _ => {
            let consumer: Consumer = decode(object)?;
            DesiredConsumer::from_spec(&consumer.spec, "prop", owner).map(|_| ()).map_err(|v| format!("{v:?}"))
        }
    }
}

#[tokio::test]
async fn the_schema_admits_exactly_what_the_operator_accepts() {
    let ctx = TestContext::new("schema-agreement").await;
    support::install_crds(&ctx.client).await;
    let api = |plural: &str, kind: &str| -> Api<DynamicObject> {
        let gvk = kube::core::GroupVersionKind::gvk(jetway::api::GROUP, "v1alpha1", kind);
        let resource = kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
        Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
    };
    let (streams, consumers) = (api("streams", "Stream"), api("consumers", "Consumer"));
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut cases = Vec::new();
    for field in fields() {
        let generated: Vec<Value> = (0..GENERATED).map(|_| (field.generate)(&mut rng)).collect();
        for value in field.edges.iter().cloned().chain(generated) {
            let spec = with_value(&field.base, field.path, value.clone());
            let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": field.kind,
                                "metadata": {"name": "prop"}, "spec": spec});
            cases.push((field.kind, field.path, value, object));
        }
    }
    let total = cases.len();
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let judged: Vec<(bool, Option<String>)> = stream::iter(cases)
        .map(|(kind, path, value, object)| {
            let api = if kind == "Stream" { streams.clone() } else { consumers.clone() };
            let dry_run = dry_run.clone();
            async move {
                let typed: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
                let admitted = match api.create(&dry_run, &typed).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => Err(status.message),
                    Err(other) => panic!("{kind} {path} = {value}: {other}"),
                };
                let accepted = operator_accepts(&object);
                let disagreement = match (&admitted, accepted) {
                    (Ok(()), Err(why)) => {
                        Some(format!("{kind} spec.{path} = {value}: admitted, but the operator refuses it: {why}"))
                    }
                    (Err(why), Ok(())) => Some(format!(
                        "{kind} spec.{path} = {value}: the operator takes it, but the apiserver refuses it: {why}"
                    )),
                    _ => None,
                };
                (admitted.is_ok(), disagreement)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let admitted = judged.iter().filter(|(admitted, _)| *admitted).count();
    assert!(
        admitted > total / 5 && total - admitted > total / 5,
        "the values should exercise both sides: {admitted} of {total} admitted"
    );
    let disagreements: Vec<String> = judged.into_iter().filter_map(|(_, d)| d).collect();
    assert!(
        disagreements.is_empty(),
        "{} of {total} values are judged differently:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
