//! The stream planner against a real nats-server: what the server echoes back after
//! a create or an update is in sync, so that a resync changes nothing, and every
//! update the planner allows is one the server accepts.

mod support;

use jetway::api::stream::StreamSpec;
use jetway::plan::stream::{DesiredStream, ObservedStream, StreamPlan, plan_stream};
use support::TestContext;

/// The stream `yaml` declares, named `name` made unique to the test.
fn desired(ctx: &TestContext, name: &str, yaml: &str) -> DesiredStream {
    let spec: StreamSpec = serde_saphyr::from_str(yaml).expect("a spec");
    DesiredStream::from_spec(&spec, &ctx.unique(name), &format!("{}/{name}", ctx.namespace)).expect("valid")
}

async fn observe(ctx: &TestContext, name: &str) -> ObservedStream {
    let mut stream = ctx.jetstream.get_stream(name).await.expect("the stream exists");
    ObservedStream { config: stream.info().await.expect("info").config.clone(), contents: Default::default() }
}

/// Creates the stream the spec asks for, then checks the next plan is `InSync`.
async fn create_and_replan(ctx: &TestContext, name: &str, yaml: &str) -> DesiredStream {
    let desired = desired(ctx, name, yaml);
    let StreamPlan::Create { config } = plan_stream(&desired, None) else { panic!("expected create") };
    ctx.jetstream.create_stream(config).await.unwrap_or_else(|e| panic!("{yaml}: {e}"));
    let observed = observe(ctx, desired.name()).await;
    assert_eq!(plan_stream(&desired, Some(&observed)), StreamPlan::InSync, "{yaml}\nserver has {:#?}", observed.config);
    desired
}

#[tokio::test]
async fn a_created_stream_is_in_sync_on_the_next_plan_for_every_kind_of_spec() {
    let ctx = TestContext::new("plan-in-sync").await;
    let specs = [
        "{}",
        "subjects: [plan.a.>]\nstorage: memory\nretention: workqueue\nmaxMsgs: 10\nmaxBytes: 1048576\n",
        "subjects: [plan.b.>]\nmaxAge: 30s\nmaxMsgsPerSubject: 5\ndiscard: new\ndiscardPerSubject: true\n",
        "subjects: [plan.c.>]\nmetadata: {team: shop}\ndenyDelete: true\ndenyPurge: true\nallowDirect: true\ncompression: s2\ndescription: orders\n",
        "subjects: [plan.d.>]\nrepublish: {source: plan.d.>, destination: copy.d.>, headers_only: true}\nsubjectTransform: {source: plan.d.>, dest: moved.d.>}\n",
        "subjects: [plan.e.>]\nconsumerLimits: {inactiveThreshold: 1h, maxAckPending: 100}\nduplicateWindow: 10s\nmaxConsumers: 10\n",
        "subjects: [plan.f.>]\nallowMsgTtl: true\nsubjectDeleteMarkerTtl: 5m\nallowAtomicPublish: true\nallowMsgSchedules: true\n",
        "subjects: [plan.g.>]\nallowMsgCounter: true\n",
        "subjects: [plan.i.>]\nallowRollup: true\nsealed: false\nnoAck: true\n",
        "subjects: [plan.h.>]\nfirstSequence: 1000\npersistMode: async\nallowBatched: true\n",
    ];
    for (i, yaml) in specs.iter().enumerate() {
        create_and_replan(&ctx, &format!("S{i}"), yaml).await;
    }
}

#[tokio::test]
async fn sources_and_mirrors_are_in_sync_after_creation() {
    let ctx = TestContext::new("plan-sources").await;
    let origin = create_and_replan(&ctx, "ORIGIN", "subjects: [origin.>]").await;
    let origin = origin.name();
    create_and_replan(&ctx, "SOURCED", &format!("sources: [{{name: {origin}, filterSubject: origin.x}}]")).await;
    create_and_replan(&ctx, "MIRROR", &format!("mirror: {{name: {origin}}}")).await;
}

#[tokio::test]
async fn every_update_the_planner_allows_is_accepted_and_leaves_the_stream_in_sync() {
    let ctx = TestContext::new("plan-update").await;
    let before =
        create_and_replan(&ctx, "UPD", "subjects: [upd.>]\nmaxAge: 1h\nallowRollup: true\nmetadata: {a: b}\n").await;
    ctx.jetstream.publish("upd.x", "kept".into()).await.expect("publish").await.expect("ack");
    for yaml in [
        "subjects: [upd.>, more.>]\nmaxMsgs: 100\n",
        "subjects: [upd.>]\ndescription: now described\nallowDirect: true\ncompression: s2\n",
        "subjects: [upd.>]\n",
    ] {
        let desired = desired(&ctx, "UPD", yaml);
        let plan = plan_stream(&desired, Some(&observe(&ctx, desired.name()).await));
        let StreamPlan::Update { config, .. } = plan else { panic!("{yaml}: expected update, got {plan:?}") };
        ctx.jetstream.update_stream(config).await.unwrap_or_else(|e| panic!("{yaml}: the server refused: {e}"));
        assert_eq!(plan_stream(&desired, Some(&observe(&ctx, desired.name()).await)), StreamPlan::InSync, "{yaml}");
    }
    let mut stream = ctx.jetstream.get_stream(before.name()).await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 1, "updates keep every message");
}
