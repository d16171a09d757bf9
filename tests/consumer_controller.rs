//! The Consumer controller on the test ground: consumers wait for their stream,
//! only the fields a spec sets are managed, and NACK's example manifests are
//! reconciled with only their apiVersion changed.

mod support;

use jetway::api::consumer::{Consumer, ConsumerSpec};
use jetway::api::stream::Stream;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_condition, wait_until};

struct Fixture {
    ctx: TestContext,
    operator: Operator,
    streams: Api<Stream>,
    consumers: Api<Consumer>,
}

impl Fixture {
    async fn new(test: &str) -> Self {
        let ctx = TestContext::new(test).await;
        support::install_crds(&ctx.client).await;
        let operator = Operator::start(&ctx.namespace, |_| {}).await;
        Self { streams: ctx.api(), consumers: ctx.api(), ctx, operator }
    }

    async fn apply(&self, object: Value) {
        let name = object["metadata"]["name"].as_str().expect("a name").to_owned();
        let params = PatchParams::apply("jetway-tests");
        let result = match object["kind"].as_str() {
            Some("Stream") => self.streams.patch(&name, &params, &Patch::Apply(&object)).await.map(drop),
            _ => self.consumers.patch(&name, &params, &Patch::Apply(&object)).await.map(drop),
        };
        result.unwrap_or_else(|e| panic!("applying {name}: {e}"));
    }

    async fn apply_consumer(&self, name: &str, spec: &str) {
        let spec: ConsumerSpec = serde_saphyr::from_str(spec).expect("a spec");
        self.apply(
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }

    async fn apply_stream(&self, name: &str, stream_name: &str) {
        self.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": {"name": stream_name}}))
            .await;
    }

    async fn server_consumer(&self, stream: &str, name: &str) -> Option<async_nats::jetstream::consumer::Config> {
        let stream = self.ctx.jetstream.get_stream(stream).await.ok()?;
        Some(stream.consumer_info(name).await.ok()?.config)
    }
}

#[tokio::test]
async fn a_consumer_waits_for_its_stream_and_goes_on_when_the_stream_appears() {
    let fx = Fixture::new("consumer-waits").await;
    let stream = fx.ctx.unique("LATER");
    fx.apply_consumer("worker", &format!("streamName: {stream}\nackWait: 1m\n")).await;
    let waiting = wait_condition(&fx.consumers, "worker", "Reconciling", "True").await;
    let reconciling = condition(&waiting, "Reconciling").expect("Reconciling");
    assert_eq!(reconciling.reason, "StreamNotFound");
    assert!(reconciling.message.contains(&stream), "{}", reconciling.message);
    assert_eq!(condition(&waiting, "Stalled").expect("Stalled").status, "False", "waiting is not stalled");

    fx.apply_stream("later", &stream).await;
    wait_condition(&fx.consumers, "worker", "Ready", "True").await;
    let config = fx.server_consumer(&stream, "worker").await.expect("the consumer exists");
    assert_eq!(config.ack_wait, std::time::Duration::from_secs(60));
    fx.operator.stop().await;
}

#[tokio::test]
async fn only_the_fields_a_spec_sets_are_managed_and_removed_ones_go_back_to_defaults() {
    let fx = Fixture::new("consumer-fields").await;
    let stream = fx.ctx.unique("FIELDS");
    fx.apply_stream("fields", &stream).await;
    fx.apply_consumer(
        "worker",
        &format!("streamName: {stream}\nmaxAckPending: 10\nmaxDeliver: 5\nheadersOnly: true\n"),
    )
    .await;
    wait_condition(&fx.consumers, "worker", "Ready", "True").await;

    // A field the spec does not set, changed on the server, is left as it is;
    // a field it sets is put back.
    let js_stream = fx.ctx.jetstream.get_stream(&stream).await.expect("stream");
    let mut changed = fx.server_consumer(&stream, "worker").await.expect("consumer");
    changed.ack_wait = std::time::Duration::from_secs(90);
    changed.max_deliver = 9;
    js_stream.update_consumer(changed).await.expect("changed behind Jetway's back");
    wait_until("maxDeliver to be put back", EVENTUALLY, POLL, || async {
        Ok(fx.server_consumer(&stream, "worker").await.filter(|c| c.max_deliver == 5))
    })
    .await
    .expect("reverted");
    assert_eq!(
        fx.server_consumer(&stream, "worker").await.expect("consumer").ack_wait.as_secs(),
        90,
        "unmanaged: kept"
    );

    fx.apply_consumer("worker", &format!("streamName: {stream}\nmaxDeliver: 5\n")).await;
    let config = wait_until("removed fields to go back to defaults", EVENTUALLY, POLL, || async {
        Ok(fx.server_consumer(&stream, "worker").await.filter(|c| !c.headers_only))
    })
    .await
    .expect("reset");
    assert_eq!(config.max_ack_pending, 1000, "the server's default");
    support::wait_event(&fx.ctx.client, &fx.ctx.namespace, "worker", "Updated").await;
    fx.operator.stop().await;
}

#[tokio::test]
async fn consumer_status_reports_pending_and_acknowledged_messages() {
    let fx = Fixture::new("consumer-status").await;
    let stream = fx.ctx.unique("STATUS");
    let subject = format!("{}.status", fx.ctx.namespace);
    fx.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "status"}, "spec": {"name": stream, "subjects": [subject]}}))
        .await;
    fx.apply_consumer("worker", &format!("streamName: {stream}\n")).await;
    wait_condition(&fx.consumers, "worker", "Ready", "True").await;
    for i in 0..7 {
        fx.ctx.jetstream.publish(subject.clone(), format!("{i}").into()).await.expect("publish").await.expect("ack");
    }
    wait_until("status to show 7 pending", EVENTUALLY, POLL, || async {
        Ok(fx.consumers.get("worker").await?.status.and_then(|s| s.state).filter(|s| s.pending == 7))
    })
    .await
    .expect("pending in status");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_consumer_with_policy_delete_is_deleted_with_its_object() {
    let fx = Fixture::new("consumer-delete").await;
    let stream = fx.ctx.unique("DEL");
    fx.apply_stream("del", &stream).await;
    fx.apply_consumer("gone", &format!("streamName: {stream}\ndeletionPolicy: Delete\n")).await;
    fx.apply_consumer("kept", &format!("streamName: {stream}\n")).await;
    wait_condition(&fx.consumers, "gone", "Ready", "True").await;
    wait_condition(&fx.consumers, "kept", "Ready", "True").await;
    for name in ["gone", "kept"] {
        fx.consumers.delete(name, &DeleteParams::default()).await.expect("deleting");
    }
    wait_until("the objects to go", EVENTUALLY, POLL, || async {
        Ok(fx.consumers.list(&Default::default()).await?.items.is_empty().then_some(()))
    })
    .await
    .expect("gone");
    assert!(fx.server_consumer(&stream, "gone").await.is_none(), "Delete removes it");
    assert!(fx.server_consumer(&stream, "kept").await.is_some(), "Retain keeps it");
    fx.operator.stop().await;
}

#[tokio::test]
async fn nack_example_streams_and_consumers_are_reconciled_with_only_their_api_version_changed() {
    let fx = Fixture::new("nack-examples").await;
    let examples = support::nack_examples();
    for example in &examples {
        fx.apply(example.clone()).await;
    }
    // The plain stream and both consumers on it reach Ready; the mirror, sources and
    // placement examples name origins, domains and tags this single server does not
    // have, and say so.
    wait_condition(&fx.streams, "mystream", "Ready", "True").await;
    wait_condition(&fx.consumers, "my-pull-consumer", "Ready", "True").await;
    wait_condition(&fx.consumers, "my-push-consumer", "Ready", "True").await;
    let push = fx.server_consumer("mystream", "my-push-consumer").await.expect("the push consumer");
    assert_eq!(push.deliver_subject.as_deref(), Some("my-push-consumer.orders"));
    assert!(push.flow_control);
    for name in ["mystream-placement", "mystream-sources", "mystream-mirror"] {
        let stream = wait_until("a verdict", EVENTUALLY, POLL, || async {
            let s = fx.streams.get(name).await?;
            Ok(condition(&s, "Ready").is_some().then_some(s))
        })
        .await
        .expect("reconciled");
        let ready = condition(&stream, "Ready").expect("Ready");
        assert!(ready.status == "True" || !ready.message.is_empty(), "{name}: {ready:?}");
    }
    // The examples name fixed JetStream streams; remove them from the shared server.
    for example in examples.iter().filter(|e| e["kind"] == "Stream") {
        let _ = fx.ctx.jetstream.delete_stream(example["spec"]["name"].as_str().expect("a name")).await;
    }
    fx.operator.stop().await;
}

#[tokio::test]
async fn messages_given_up_on_are_copied_to_the_dead_letter_subject_with_their_origin() {
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let fx = Fixture::new("consumer-dead-letter").await;
    let (work, dead) = (fx.ctx.unique("WORK"), fx.ctx.unique("DEAD"));
    let subject = format!("{}.work", fx.ctx.namespace);
    let dead_subject = format!("{}.dead", fx.ctx.namespace);
    fx.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "work"}, "spec": {"name": work, "subjects": [subject]}}))
        .await;
    fx.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "dead"}, "spec": {"name": dead, "subjects": [dead_subject]}}))
        .await;
    fx.apply_consumer(
        "worker",
        &format!("streamName: {work}\nmaxDeliver: 2\nackWait: 1s\ndeadLetter: {{subject: {dead_subject}}}\n"),
    )
    .await;
    wait_condition(&fx.consumers, "worker", "Ready", "True").await;
    wait_condition(&fx.streams, "dead", "Ready", "True").await;
    // Give the forwarder a moment to subscribe to the advisories.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    for payload in ["poison", "refused"] {
        fx.ctx.jetstream.publish(subject.clone(), payload.into()).await.expect("publish").await.expect("ack");
    }
    let stream = fx.ctx.jetstream.get_stream(&work).await.expect("stream");
    let consumer =
        stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("worker").await.expect("consumer");
    wait_until("both dead letters", EVENTUALLY, POLL, || async {
        let mut batch =
            consumer.fetch().max_messages(10).expires(std::time::Duration::from_millis(300)).messages().await?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e))?;
            let kind = if &message.payload[..] == b"refused" { AckKind::Term } else { AckKind::Nak(None) };
            message.ack_with(kind).await.map_err(|e| anyhow::anyhow!(e))?;
        }
        let mut dead_stream = fx.ctx.jetstream.get_stream(&dead).await?;
        Ok((dead_stream.info().await?.state.messages == 2).then_some(()))
    })
    .await
    .expect("dead letters arrive");

    let dead_stream = fx.ctx.jetstream.get_stream(&dead).await.expect("dead letter stream");
    let mut seen = Vec::new();
    for sequence in [1, 2] {
        let letter = dead_stream.get_raw_message(sequence).await.expect("a dead letter");
        let header = |name: &str| letter.headers.get(name).map(|v| v.to_string()).unwrap_or_default();
        assert_eq!(header("Jetway-Origin-Stream"), work);
        assert_eq!(header("Jetway-Origin-Subject"), subject);
        assert_eq!(header("Jetway-Origin-Consumer"), "worker");
        seen.push((
            String::from_utf8(letter.payload.to_vec()).expect("utf-8"),
            header("Jetway-Dead-Letter-Reason"),
            header("Jetway-Origin-Sequence"),
        ));
    }
    seen.sort();
    assert_eq!(seen[0].0, "poison");
    assert!(seen[0].1.starts_with("max_deliveries"), "{:?}", seen[0]);
    assert_eq!(seen[0].2, "1");
    assert_eq!(seen[1].0, "refused");
    assert!(seen[1].1.starts_with("terminated"), "{:?}", seen[1]);
    fx.operator.stop().await;
}

#[tokio::test]
async fn messages_given_up_on_while_the_operator_is_away_are_dead_lettered_once_it_is_back() {
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let Fixture { ctx, operator, consumers, streams } = Fixture::new("consumer-dead-letter-away").await;
    let (work, dead) = (ctx.unique("WORK"), ctx.unique("DEAD"));
    let subject = format!("{}.work", ctx.namespace);
    let dead_subject = format!("{}.dead", ctx.namespace);
    for (name, stream_name, subjects) in [("work", &work, &subject), ("dead", &dead, &dead_subject)] {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name}, "spec": {"name": stream_name, "subjects": [subjects]}});
        streams.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(&object)).await.expect("a stream");
    }
    let spec = format!("streamName: {work}\nmaxDeliver: 2\nackWait: 1s\ndeadLetter: {{subject: {dead_subject}}}\n");
    let spec: ConsumerSpec = serde_saphyr::from_str(&spec).expect("a spec");
    let object =
        json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": "worker"}, "spec": spec});
    consumers.patch("worker", &PatchParams::apply("jetway-tests"), &Patch::Apply(&object)).await.expect("a consumer");
    wait_condition(&consumers, "worker", "Ready", "True").await;
    let target = jetway::deadletter::Target {
        connection: String::new(),
        stream: work.clone(),
        consumer: "worker".into(),
        subject: dead_subject.clone(),
    };
    let advisories = wait_until("the advisory stream and its reader", EVENTUALLY, POLL, || async {
        let stream = ctx.jetstream.get_stream(jetway::deadletter::ADVISORY_STREAM).await?;
        Ok(stream.consumer_info(target.durable()).await.is_ok().then_some(stream))
    })
    .await
    .expect("the forwarder's durable reader");
    operator.stop().await;

    // With the operator gone: one message exhausts its deliveries, one is terminated
    // by a worker that dead-lettered it itself.
    for payload in ["poison", "moved"] {
        ctx.jetstream.publish(subject.clone(), payload.into()).await.expect("publish").await.expect("ack");
    }
    let stream = ctx.jetstream.get_stream(&work).await.expect("stream");
    let consumer =
        stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("worker").await.expect("consumer");
    // Counted on the forwarder's own reader: other tests' advisories share the stream.
    let captured = |count: u64| {
        let (advisories, durable) = (advisories.clone(), target.durable());
        async move {
            let info = advisories.consumer_info(durable).await?.clone();
            Ok::<_, anyhow::Error>((info.num_pending >= count).then_some(()))
        }
    };
    wait_until("both advisories captured", EVENTUALLY, POLL, || async {
        let mut batch =
            consumer.fetch().max_messages(10).expires(std::time::Duration::from_millis(300)).messages().await?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e))?;
            if &message.payload[..] == b"moved" {
                let reply = message.reply.clone().expect("an ack subject");
                let term = format!("+TERM {}", jetway_runtime::deadletter::MOVED_BY_WORKER);
                ctx.nats.publish(reply, term.into()).await?;
            } else {
                message.ack_with(AckKind::Nak(None)).await.map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        captured(2).await
    })
    .await
    .expect("the server's advisories, kept while the operator is away");
    let mut dead_stream = ctx.jetstream.get_stream(&dead).await.expect("dead letter stream");
    assert_eq!(dead_stream.info().await.expect("info").state.messages, 0, "nobody forwarded while away");

    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    wait_until("the dead letter", EVENTUALLY, POLL, || async {
        let mut dead_stream = ctx.jetstream.get_stream(&dead).await?;
        Ok((dead_stream.info().await?.state.messages >= 1).then_some(()))
    })
    .await
    .expect("forwarded once back");
    // The reader has caught up with both advisories: nothing more is coming.
    wait_until("the advisories read", EVENTUALLY, POLL, || async {
        let info = advisories.consumer_info(target.durable()).await?.clone();
        Ok((info.num_pending == 0 && info.num_ack_pending == 0).then_some(()))
    })
    .await
    .expect("both advisories settled");
    assert_eq!(dead_stream.info().await.expect("info").state.messages, 1, "the poison only, once");
    let letter = dead_stream.get_raw_message(1).await.expect("a dead letter");
    assert_eq!(&letter.payload[..], b"poison");
    let header = |name: &str| letter.headers.get(name).map(|v| v.to_string()).unwrap_or_default();
    assert_eq!(header("Jetway-Origin-Consumer"), "worker");
    assert!(header("Jetway-Dead-Letter-Reason").starts_with("max_deliveries"));
    // Stopped once it has started for good: a stop while its controllers are still
    // starting can outlast the grace period (see the closing note of issue 14).
    wait_until("the operator ready", EVENTUALLY, POLL, || async {
        Ok((support::http_get(operator.http_addr, "/readyz").await?.0 == 200).then_some(()))
    })
    .await
    .expect("ready");
    operator.stop().await;
}

#[tokio::test]
async fn a_refusal_only_the_server_can_judge_names_the_field() {
    let fx = Fixture::new("consumer-server-field").await;
    let stream = fx.ctx.unique("WQ");
    let subject = format!("{}.wq.>", fx.ctx.namespace);
    fx.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "wq"},
                    "spec": {"name": stream, "subjects": [subject], "retention": "workqueue"}}))
        .await;
    wait_condition(&fx.streams, "wq", "Ready", "True").await;
    fx.apply_consumer("last", &format!("streamName: {stream}\ndeliverPolicy: last\n")).await;
    let stalled = wait_condition(&fx.consumers, "last", "Stalled", "True").await;
    let ready = condition(&stalled, "Ready").expect("Ready");
    assert_eq!(ready.reason, "ServerRefused");
    assert!(ready.message.starts_with("spec.deliverPolicy: "), "{}", ready.message);
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_filter_no_subject_of_the_stream_matches_is_applied_with_a_warning() {
    let fx = Fixture::new("consumer-filter-warning").await;
    let stream = fx.ctx.unique("FILTER");
    let subject = format!("{}.orders.>", fx.ctx.namespace);
    fx.apply(json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": "filter"},
                    "spec": {"name": stream, "subjects": [subject]}}))
        .await;
    let filter = format!("{}.invoices.*", fx.ctx.namespace);
    fx.apply_consumer("stray", &format!("streamName: {stream}\nfilterSubject: {filter}\n")).await;
    wait_condition(&fx.consumers, "stray", "Ready", "True").await;
    let note = support::wait_event(&fx.ctx.client, &fx.ctx.namespace, "stray", "FilterMatchesNothing").await;
    assert!(note.starts_with("spec.filterSubject: ") && note.contains(&filter), "{note}");
    fx.operator.stop().await;
}
