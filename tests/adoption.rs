//! Adoption changes nothing unasked. Meeting a stream nobody manages, Jetway first
//! writes only its marks, says where the spec differs, and then applies what the spec
//! names, and only that: fields the spec leaves unset keep the adopted stream's
//! values. Of two objects adopting one stream at once, exactly one wins, and no
//! message is lost. The writes are read on the server's own API subjects.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::Config as StreamConfig;
use futures::StreamExt;
use jetway::api::stream::Stream;
use jetway::plan::OWNER_KEY;
use jetway::plan::stream::ADOPTED_KEY;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_until};

/// The `STREAM.UPDATE` requests for `stream` the server receives, as their JSON bodies.
#[derive(Clone, Default)]
struct Updates(Arc<Mutex<Vec<Value>>>);

impl Updates {
    async fn record(ctx: &TestContext, stream: &str) -> Self {
        let updates = Self::default();
        let mut requests = ctx.nats.subscribe(format!("$JS.API.STREAM.UPDATE.{stream}")).await.expect("a subscription");
        ctx.nats.flush().await.expect("subscribed");
        let seen = updates.0.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let body = serde_json::from_slice(&request.payload).unwrap_or(Value::Null);
                seen.lock().expect("updates").push(body);
            }
        });
        updates
    }

    fn seen(&self) -> Vec<Value> {
        self.0.lock().expect("updates").clone()
    }
}

async fn apply(streams: &Api<Stream>, name: &str, spec: Value) {
    let object =
        json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": spec});
    streams.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("applied");
}

async fn info(ctx: &TestContext, name: &str) -> async_nats::jetstream::stream::Info {
    ctx.jetstream.get_stream(name).await.expect("the stream").info().await.expect("info").clone()
}

/// A stream made outside Jetway, holding `messages` messages on `subject`.
async fn foreign_stream(ctx: &TestContext, name: &str, subject: &str, messages: usize) {
    let config = StreamConfig {
        name: name.to_owned(),
        description: Some("made by hand".into()),
        subjects: vec![format!("{subject}.>")],
        max_messages_per_subject: 5000,
        duplicate_window: Duration::from_secs(60),
        ..Default::default()
    };
    ctx.jetstream.create_stream(config).await.expect("creating");
    for i in 0..messages {
        ctx.jetstream.publish(format!("{subject}.{}", i % 7), format!("{i}").into()).await.unwrap().await.unwrap();
    }
}

/// Everything but the metadata, in the server's JSON form.
fn without_metadata(config: &Value) -> Value {
    let mut config = config.clone();
    config.as_object_mut().expect("a config").remove("metadata");
    config
}

#[tokio::test]
async fn adopting_writes_only_the_mark_and_then_only_what_the_spec_names() {
    let ctx = TestContext::new("adopt-unasked").await;
    support::install_crds(&ctx.client).await;
    let name = ctx.unique("HANDMADE");
    let subject = format!("{}.handmade", ctx.namespace);
    foreign_stream(&ctx, &name, &subject, 50).await;
    let before = serde_json::to_value(&info(&ctx, &name).await.config).expect("json");
    let updates = Updates::record(&ctx, &name).await;

    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let streams = ctx.api::<Stream>();
    // Names maxAge only: subjects, description, limits and the window are the stream's.
    apply(&streams, "handmade", json!({"name": name, "maxAge": "24h"})).await;
    let adopted = support::wait_event(&ctx.client, &ctx.namespace, "handmade", "Adopted").await;
    assert!(adopted.contains("spec.maxAge"), "the Event names where the spec differs: {adopted}");
    support::wait_condition(&streams, "handmade", "Ready", "True").await;

    let writes = updates.seen();
    assert_eq!(writes.len(), 2, "the mark, then the change the spec names: {writes:#?}");
    assert_eq!(without_metadata(&writes[0]), without_metadata(&before), "the first write changes nothing but marks");
    let expected = format!("{}/handmade", ctx.namespace);
    assert_eq!(writes[0]["metadata"][OWNER_KEY], json!(expected));

    let after = info(&ctx, &name).await;
    assert_eq!(after.config.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(after.config.subjects, [format!("{subject}.>")], "unset subjects are kept");
    assert_eq!(after.config.description.as_deref(), Some("made by hand"));
    assert_eq!(after.config.max_messages_per_subject, 5000);
    assert_eq!(after.config.duplicate_window, Duration::from_secs(60));
    assert_eq!(after.state.messages, 50);
    let kept = after.config.metadata.get(ADOPTED_KEY).cloned().unwrap_or_default();
    assert!(kept.contains("subjects") && kept.contains("max_msgs_per_subject"), "{kept}");

    // Naming a field makes it the spec's; the rest stay as adopted.
    apply(&streams, "handmade", json!({"name": name, "maxAge": "24h", "description": "ours now"})).await;
    wait_until("the description to be the spec's", EVENTUALLY, POLL, || async {
        Ok((info(&ctx, &name).await.config.description.as_deref() == Some("ours now")).then_some(()))
    })
    .await
    .expect("applied");
    let after = info(&ctx, &name).await;
    assert_eq!(after.config.subjects, [format!("{subject}.>")]);
    assert!(!after.config.metadata[ADOPTED_KEY].contains("description"));
    operator.stop().await;
}

#[tokio::test]
async fn of_two_objects_adopting_one_stream_at_once_exactly_one_wins_and_no_message_is_lost() {
    let ctx = TestContext::new("adopt-race").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let streams = ctx.api::<Stream>();
    for round in 0..3 {
        let name = ctx.unique(&format!("CONTESTED{round}"));
        let subject = format!("{}.contested{round}", ctx.namespace);
        foreign_stream(&ctx, &name, &subject, 1000).await;
        let updates = Updates::record(&ctx, &name).await;
        let (big, small) = (format!("big{round}"), format!("small{round}"));
        tokio::join!(
            apply(&streams, &big, json!({"name": name, "maxMsgs": 1000})),
            apply(&streams, &small, json!({"name": name, "maxMsgs": 1})),
        );
        let settled = wait_until("both objects to settle", EVENTUALLY, POLL, || async {
            let reason = |s: &Stream| condition(s, "Ready").map(|c| c.reason.clone()).unwrap_or_default();
            let (a, b) = (streams.get(&big).await?, streams.get(&small).await?);
            let settled = |r: &str| !matches!(r, "" | "Adopted");
            Ok((settled(&reason(&a)) && settled(&reason(&b))).then(|| (reason(&a), reason(&b))))
        })
        .await
        .expect("settled");
        let winner = match settled {
            (ref big_reason, ref small_reason) if small_reason == "OwnedByAnotherObject" => {
                assert_eq!(big_reason, "InSync");
                big.clone()
            }
            (ref big_reason, ref small_reason) if big_reason == "OwnedByAnotherObject" => {
                assert_eq!(small_reason, "WouldLoseMessages", "maxMsgs 1 waits for consent");
                small.clone()
            }
            other => panic!("round {round}: exactly one should own the stream: {other:?}"),
        };
        let owner = format!("{}/{winner}", ctx.namespace);
        let info = info(&ctx, &name).await;
        assert_eq!(info.config.metadata.get(OWNER_KEY), Some(&owner));
        assert_eq!(info.state.messages, 1000, "round {round}: every message is kept");
        let marks: Vec<Value> = updates.seen().iter().map(|u| u["metadata"][OWNER_KEY].clone()).collect();
        assert!(marks.iter().all(|m| *m == json!(owner)), "round {round}: only the winner ever wrote: {marks:?}");
    }
    operator.stop().await;
}
