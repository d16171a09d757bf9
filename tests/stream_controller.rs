//! The Stream controller on the test ground: objects become streams, status tells
//! what the server has, drift is reverted, refused changes cost nothing, and
//! deletion follows the policy.

mod support;

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use jetway::api::stream::{Stream, StreamSpec};
use jetway::plan::stream::OWNER_KEY;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_until};

struct Fixture {
    ctx: TestContext,
    operator: Operator,
    streams: Api<Stream>,
}

impl Fixture {
    async fn new(test: &str) -> Self {
        Self::with(test, |_| {}).await
    }

    async fn with(test: &str, configure: impl FnOnce(&mut jetway::run::Config)) -> Self {
        let ctx = TestContext::new(test).await;
        support::install_crds(&ctx.client).await;
        let operator = Operator::start(&ctx.namespace, configure).await;
        let streams = ctx.api::<Stream>();
        Self { ctx, operator, streams }
    }

    /// Server-side applies a Stream whose spec is `yaml`, with `spec.name` made unique.
    async fn apply(&self, name: &str, yaml: &str) -> String {
        let mut spec: StreamSpec = serde_saphyr::from_str(yaml).expect("a spec");
        let stream_name = self.ctx.unique(&name.to_uppercase().replace('-', "_"));
        spec.name.get_or_insert_with(|| stream_name.clone());
        let mut object = Stream::new(name, spec);
        object.metadata.annotations = None;
        let patch = serde_json::json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": object.spec});
        self.streams.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(patch)).await.expect("applying");
        object.spec.name.expect("a name")
    }

    async fn wait_ready(&self, name: &str, status: &str) -> Stream {
        support::wait_condition(&self.streams, name, "Ready", status).await
    }

    async fn event(&self, name: &str, reason: &str) -> String {
        support::wait_event(&self.ctx.client, &self.ctx.namespace, name, reason).await
    }

    async fn server_config(&self, name: &str) -> Option<StreamConfig> {
        let mut stream = self.ctx.jetstream.get_stream(name).await.ok()?;
        Some(stream.info().await.expect("info").config.clone())
    }

    async fn publish(&self, subject: &str, count: usize) {
        for i in 0..count {
            self.ctx
                .jetstream
                .publish(subject.to_owned(), i.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    }

    async fn messages(&self, name: &str) -> u64 {
        let mut stream = self.ctx.jetstream.get_stream(name).await.expect("the stream");
        stream.info().await.expect("info").state.messages
    }
}

#[tokio::test]
async fn a_stream_object_becomes_a_stream_and_its_status_shows_what_the_server_has() {
    let fx = Fixture::new("stream-create").await;
    let subject = format!("{}.created", fx.ctx.namespace);
    let name = fx.apply("orders", &format!("subjects: ['{subject}']\nmaxAge: 1h\n")).await;
    let stream = fx.wait_ready("orders", "True").await;
    assert_eq!(condition(&stream, "Ready").expect("Ready").reason, "InSync");
    assert!(fx.event("orders", "Created").await.contains(&name));
    assert_eq!(condition(&stream, "Stalled").expect("Stalled").status, "False");
    assert_eq!(stream.status.as_ref().and_then(|s| s.stream_name.clone()), Some(name.clone()));

    let config = fx.server_config(&name).await.expect("the stream exists");
    assert_eq!(config.subjects, std::slice::from_ref(&subject));
    assert_eq!(config.max_age, Duration::from_secs(3600));
    assert_eq!(config.metadata.get(OWNER_KEY).map(String::as_str), Some(&*format!("{}/orders", fx.ctx.namespace)));

    fx.publish(&subject, 3).await;
    wait_until("status to show the messages", EVENTUALLY, POLL, || async {
        let stream = fx.streams.get("orders").await?;
        Ok(stream.status.and_then(|s| s.state).filter(|s| s.messages == 3 && s.last_sequence == 3))
    })
    .await
    .expect("the resync reports the server's state");
    fx.operator.stop().await;
}

#[tokio::test]
async fn changes_made_on_the_server_are_reverted_and_a_deleted_stream_is_recreated() {
    let fx = Fixture::new("stream-drift").await;
    let name = fx.apply("drift", "maxMsgs: 100\n").await;
    fx.wait_ready("drift", "True").await;

    let mut tampered = fx.server_config(&name).await.expect("the stream");
    tampered.max_messages = 5;
    fx.ctx.jetstream.update_stream(tampered).await.expect("changed behind Jetway's back");
    wait_until("the change to be reverted", EVENTUALLY, POLL, || async {
        Ok(fx.server_config(&name).await.filter(|c| c.max_messages == 100))
    })
    .await
    .expect("reverted within the resync interval");

    fx.ctx.jetstream.delete_stream(&name).await.expect("deleted behind Jetway's back");
    wait_until("the stream to be recreated", EVENTUALLY, POLL, || async { Ok(fx.server_config(&name).await) })
        .await
        .expect("recreated within the resync interval");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_field_removed_from_the_spec_goes_back_to_the_server_default() {
    let fx = Fixture::new("stream-reset").await;
    let name = fx.apply("reset", "allowDirect: true\nmaxAge: 1h\ndescription: temporary\n").await;
    fx.wait_ready("reset", "True").await;
    fx.apply("reset", "{}").await;
    fx.wait_ready("reset", "True").await;
    let note = fx.event("reset", "Updated").await;
    assert!(note.contains("spec.maxAge") && note.contains("spec.allowDirect"), "{note}");
    let config = fx.server_config(&name).await.expect("the stream");
    assert!(!config.allow_direct && config.max_age.is_zero() && config.description.is_none(), "{config:?}");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_change_the_server_refuses_stalls_names_the_field_and_keeps_every_message() {
    let fx = Fixture::new("stream-refused").await;
    let name = fx.ctx.unique("REFUSED");
    let subject = format!("{}.refused", fx.ctx.namespace);
    // A memory stream made by someone else; the object asks for file storage, which
    // CEL cannot know is a change.
    let existing = StreamConfig {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: StorageType::Memory,
        ..Default::default()
    };
    fx.ctx.jetstream.create_stream(existing).await.expect("creating");
    fx.publish(&subject, 10).await;

    fx.apply("refused", &format!("name: {name}\nsubjects: ['{subject}']\nstorage: file\n")).await;
    // Adopted first (only the mark is written), then the change is planned and refused.
    let stream = support::wait_condition(&fx.streams, "refused", "Stalled", "True").await;
    let stalled = condition(&stream, "Stalled").expect("Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "ChangeRefused"));
    assert!(
        stalled.message.contains("spec.storage") && stalled.message.contains("nothing was changed"),
        "{}",
        stalled.message
    );
    assert_eq!(fx.messages(&name).await, 10, "every message is kept");
    fx.event("refused", "ChangeRefused").await;
    assert_eq!(fx.server_config(&name).await.expect("the stream").storage, StorageType::Memory);
    fx.operator.stop().await;
}

#[tokio::test]
async fn an_unowned_stream_is_adopted_and_one_owned_by_another_object_is_left_alone() {
    let fx = Fixture::new("stream-owner").await;
    let name = fx.ctx.unique("SHARED");
    fx.ctx.jetstream.create_stream(StreamConfig { name: name.clone(), ..Default::default() }).await.expect("creating");

    fx.apply("first", &format!("name: {name}\n")).await;
    fx.wait_ready("first", "True").await;
    fx.event("first", "Adopted").await;

    fx.apply("second", &format!("name: {name}\nmaxMsgs: 1\n")).await;
    let second = fx.wait_ready("second", "False").await;
    let stalled = condition(&second, "Stalled").expect("Stalled");
    assert_eq!(stalled.reason, "OwnedByAnotherObject");
    assert!(stalled.message.contains(&format!("{}/first", fx.ctx.namespace)), "{}", stalled.message);
    assert_eq!(fx.server_config(&name).await.expect("the stream").max_messages, -1, "untouched");
    let told = fx.event("first", "DeclaredTwice").await;
    assert!(told.contains(&format!("{}/second", fx.ctx.namespace)), "the owner says why too: {told}");

    let unowned = fx.ctx.unique("UNOWNED");
    fx.ctx
        .jetstream
        .create_stream(StreamConfig { name: unowned.clone(), ..Default::default() })
        .await
        .expect("creating");
    fx.apply("never", &format!("name: {unowned}\nadoptionPolicy: Never\nmaxMsgs: 1\n")).await;
    let never = fx.wait_ready("never", "False").await;
    assert_eq!(condition(&never, "Stalled").expect("Stalled").reason, "AdoptionRefused");
    assert_eq!(fx.server_config(&unowned).await.expect("the stream").max_messages, -1, "untouched");
    fx.operator.stop().await;
}

#[tokio::test]
async fn deletion_retains_the_stream_by_default_and_deletes_it_with_policy_delete() {
    let fx = Fixture::new("stream-delete").await;
    let retained = fx.apply("retained", "{}").await;
    let deleted = fx.apply("deleted", "deletionPolicy: Delete\n").await;
    fx.wait_ready("retained", "True").await;
    fx.wait_ready("deleted", "True").await;

    for name in ["retained", "deleted"] {
        fx.streams.delete(name, &DeleteParams::default()).await.expect("deleting");
    }
    wait_until("both objects to be gone", EVENTUALLY, POLL, || async {
        let left = fx.streams.list(&Default::default()).await?.items.len();
        Ok((left == 0).then_some(()))
    })
    .await
    .expect("the finalizer lets them go");
    let kept = fx.server_config(&retained).await.expect("Retain leaves the stream");
    assert!(!kept.metadata.contains_key(OWNER_KEY), "and releases it for another object to adopt");
    assert!(fx.server_config(&deleted).await.is_none(), "Delete removes it");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_workqueue_stream_deleted_and_recreated_under_the_same_name_converges() {
    // NACK #262.
    let fx = Fixture::new("stream-workqueue").await;
    let name = fx.apply("work", "retention: workqueue\n").await;
    fx.wait_ready("work", "True").await;
    fx.streams.delete("work", &DeleteParams::default()).await.expect("deleting");
    wait_until("the object to be gone", EVENTUALLY, POLL, || async {
        Ok(fx.streams.get_opt("work").await?.is_none().then_some(()))
    })
    .await
    .expect("gone");
    fx.apply("work", &format!("name: {name}\nretention: workqueue\n")).await;
    fx.wait_ready("work", "True").await;
    fx.event("work", "Adopted").await;
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_paused_object_is_left_alone_until_the_annotation_goes() {
    let fx = Fixture::new("stream-paused").await;
    let name = fx.apply("paused", "maxMsgs: 10\n").await;
    fx.wait_ready("paused", "True").await;
    let pause = serde_json::json!({"metadata": {"annotations": {"jetway.dev/paused": "true"}}});
    fx.streams.patch("paused", &PatchParams::default(), &Patch::Merge(pause)).await.expect("pausing");
    fx.apply("paused", &format!("name: {name}\nmaxMsgs: 20\n")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fx.server_config(&name).await.expect("the stream").max_messages, 10, "paused: unchanged");

    let resume = serde_json::json!({"metadata": {"annotations": {"jetway.dev/paused": null}}});
    fx.streams.patch("paused", &PatchParams::default(), &Patch::Merge(resume)).await.expect("resuming");
    wait_until("the change to be applied", EVENTUALLY, POLL, || async {
        Ok(fx.server_config(&name).await.filter(|c| c.max_messages == 20))
    })
    .await
    .expect("applied after resuming");
    fx.operator.stop().await;
}

#[tokio::test]
async fn observe_only_mode_reports_what_would_change_and_changes_nothing() {
    let fx = Fixture::with("stream-observe", |config| config.controllers.observe_only = true).await;
    let name = fx.apply("watched", "{}").await;
    let stream = fx.wait_ready("watched", "False").await;
    let reconciling = condition(&stream, "Reconciling").expect("Reconciling");
    assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "ChangesPending"));
    assert!(reconciling.message.contains("would create"), "{}", reconciling.message);
    assert!(fx.server_config(&name).await.is_none(), "nothing was created");
    assert!(fx.streams.get("watched").await.expect("object").finalizers().iter().any(|f| f == "jetway.dev/cleanup"));
    fx.operator.stop().await;
}

#[tokio::test]
async fn resyncs_that_find_nothing_new_write_nothing() {
    let fx = Fixture::new("stream-noop").await;
    fx.apply("quiet", "{}").await;
    let ready = fx.wait_ready("quiet", "True").await;
    // Let the status settle, then watch several resyncs (every 2 s here) go by.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = fx.streams.get("quiet").await.expect("object").metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = fx.streams.get("quiet").await.expect("object").metadata.resource_version;
    assert_eq!(settled, after, "no status write without a change");
    assert!(condition(&ready, "Ready").is_some());
    fx.operator.stop().await;
}
