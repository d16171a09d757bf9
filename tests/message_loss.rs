//! An update that would remove messages a stream holds waits for consent: it stalls
//! with WouldLoseMessages naming the field and how many would go, the stream keeps
//! every message, and the annotation for that generation lets it through.

mod support;

use jetway::api::stream::Stream;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_condition, wait_until};

async fn messages(ctx: &TestContext, stream: &str) -> u64 {
    let mut stream = ctx.jetstream.get_stream(stream).await.expect("the stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test]
async fn lowering_limits_below_what_is_stored_waits_for_consent_per_generation() {
    let ctx = TestContext::new("message-loss").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let streams = ctx.api::<Stream>();
    let name = ctx.unique("KEEP");
    let subject = format!("{}.keep", ctx.namespace);
    let apply = |spec: serde_json::Value, annotations: serde_json::Value| {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream",
                            "metadata": {"name": "keep", "annotations": annotations}, "spec": spec});
        let streams = streams.clone();
        async move {
            streams.patch("keep", &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("applied")
        }
    };
    apply(json!({"name": name, "subjects": [subject], "maxMsgsPerSubject": 2000}), json!({})).await;
    wait_condition(&streams, "keep", "Ready", "True").await;
    for i in 0..1000 {
        ctx.jetstream.publish(subject.clone(), format!("{i}").into()).await.expect("publish").await.expect("ack");
    }

    for (spec, field) in [
        (json!({"name": name, "subjects": [subject], "maxMsgs": 1}), "spec.maxMsgs"),
        (json!({"name": name, "subjects": [subject], "maxMsgsPerSubject": 10}), "spec.maxMsgsPerSubject"),
        (json!({"name": name, "subjects": [subject], "retention": "interest"}), "spec.retention"),
    ] {
        apply(spec, json!({})).await;
        let stalled = wait_condition(&streams, "keep", "Stalled", "True").await;
        let ready = condition(&stalled, "Ready").expect("Ready");
        assert_eq!(ready.reason, "WouldLoseMessages", "{field}");
        assert!(ready.message.contains(field) && ready.message.contains("1000"), "{}", ready.message);
        assert!(ready.message.contains("jetway.dev/allow-message-loss="), "says how to consent: {}", ready.message);
        assert_eq!(messages(&ctx, &name).await, 1000, "nothing was removed for {field}");
    }

    // Consent for an older generation does not carry over.
    let generation = streams.get("keep").await.expect("the object").metadata.generation.expect("a generation");
    let stale = json!({"jetway.dev/allow-message-loss": (generation - 1).to_string()});
    apply(json!({"name": name, "subjects": [subject], "maxMsgs": 1}), stale).await;
    let current = streams.get("keep").await.expect("the object").metadata.generation.expect("a generation");
    wait_until("the stale consent to be looked at", EVENTUALLY, POLL, || async {
        let s = streams.get("keep").await?;
        let stalled = s.status.as_ref().and_then(|st| st.observed_generation) == Some(current)
            && condition(&s, "Ready").is_some_and(|c| c.reason == "WouldLoseMessages");
        Ok(stalled.then_some(()))
    })
    .await
    .expect("still waiting");
    assert_eq!(messages(&ctx, &name).await, 1000);

    let consent = json!({"jetway.dev/allow-message-loss": current.to_string()});
    apply(json!({"name": name, "subjects": [subject], "maxMsgs": 1}), consent).await;
    wait_condition(&streams, "keep", "Ready", "True").await;
    assert_eq!(messages(&ctx, &name).await, 1, "the consented change went through");
    operator.stop().await;
}
