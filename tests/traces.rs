//! The operator's spans, as a real tracing backend receives them: Jaeger on loopback
//! is sent one `reconcile` span per reconcile, with the plan and the JetStream calls
//! it made as its children.

mod support;

use jetway::api::stream::Stream;
use jetway_testground::jaeger::Jaeger;
use kube::api::PostParams;
use support::replica::Replica;
use support::{EVENTUALLY, POLL, TestContext, http_get, wait_until};

#[tokio::test]
async fn a_reconcile_is_one_span_with_its_plan_and_jetstream_calls_as_children() {
    let ctx = TestContext::new("traces").await;
    support::install_crds(&ctx.client).await;
    let jaeger = Jaeger::start(&jetway_testground::Tools::locate().unwrap()).await.unwrap();
    let endpoint = jaeger.otlp_endpoint();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let mut operator = Replica::start_with_env(&ctx, &env);

    let name = ctx.unique("TRACED");
    let stream: Stream = serde_json::from_value(serde_json::json!({
        "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": { "name": "traced" },
        "spec": { "name": name, "subjects": [format!("{name}.>")], "deletionPolicy": "Delete" }
    }))
    .unwrap();
    let streams = ctx.api::<Stream>();
    streams.create(&PostParams::default(), &stream).await.unwrap();
    support::wait_condition(&streams, "traced", "Ready", "True").await;

    // The reconcile that created the stream, found by the object it names.
    let object = format!("{}/traced", ctx.namespace);
    let query = "/api/traces?service=jetway&operation=reconcile&limit=200&lookback=1h";
    let trace = wait_until("Jaeger to hold the reconcile that created the stream", EVENTUALLY, POLL, || async {
        let (status, body) = http_get(jaeger.query_addr(), query).await?;
        if status != 200 {
            return Ok(None);
        }
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        Ok(answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|trace| {
                spans(trace).iter().any(|span| span["operationName"] == "STREAM.CREATE")
                    && spans(trace)
                        .iter()
                        .any(|span| span["operationName"] == "reconcile" && tag(span, "object") == object)
            })
            .cloned())
    })
    .await
    .unwrap_or_else(|error| panic!("{error:#}\nJaeger's log ends with:\n{}", jaeger.log_tail(20)));

    let spans = spans(&trace);
    let names: Vec<_> = spans.iter().map(|span| span["operationName"].as_str().unwrap_or_default()).collect();
    for wanted in ["reconcile", "plan", "STREAM.CREATE"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    assert!(spans.iter().all(|span| root(&spans, span) == "reconcile"), "one tree under the reconcile: {names:?}");
    let plans: Vec<_> =
        spans.iter().filter(|span| span["operationName"] == "plan").map(|span| tag(span, "plan")).collect();
    assert!(plans.iter().any(|plan| plan == "create"), "{plans:?}");
    let create = spans.iter().find(|span| span["operationName"] == "STREAM.CREATE").unwrap();
    assert_eq!(tag(create, "stream"), name);
    let _ = operator.child.kill().await;
}

/// The operation at the top of `span`'s way up through its parents.
fn root<'a>(spans: &'a [serde_json::Value], mut span: &'a serde_json::Value) -> &'a str {
    let parent = |span: &serde_json::Value| {
        let reference = span["references"].as_array().into_iter().flatten().find(|r| r["refType"] == "CHILD_OF")?;
        spans.iter().find(|candidate| candidate["spanID"] == reference["spanID"])
    };
    while let Some(up) = parent(span) {
        span = up;
    }
    span["operationName"].as_str().unwrap_or_default()
}

fn spans(trace: &serde_json::Value) -> Vec<serde_json::Value> {
    trace["spans"].as_array().cloned().unwrap_or_default()
}

/// A span's tag, as text.
fn tag(span: &serde_json::Value, key: &str) -> String {
    let tags = span["tags"].as_array().into_iter().flatten();
    tags.filter(|tag| tag["key"] == key).find_map(|tag| tag["value"].as_str().map(str::to_owned)).unwrap_or_default()
}
