//! The Consumer controller. Each reconcile runs:
//!
//! 1. dereference: the connection (the operator's default one);
//! 2. validate (pure): [`DesiredConsumer::from_spec`];
//! 3. observe: the consumer, or the news that its stream does not exist yet;
//! 4. plan (pure): [`plan_consumer`];
//! 5. execute: create or update;
//! 6. status: computed, and written only when it differs from what is there.
//!
//! A consumer whose stream is missing waits, saying so, and is looked at again
//! shortly. Deletion follows `deletionPolicy` and never deletes a consumer this
//! object does not own.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tokio_util::sync::CancellationToken;

use async_nats::jetstream::consumer::Config;

use super::answers::Answers;
use super::converge::{JetStreamKind, converge};
use super::{Context, ReconcileError, health, is_paused, key};
use crate::api::condition::READY;
use crate::api::consumer::{Consumer, ConsumerStatus};
use crate::api::stream::DeletionPolicy;
use crate::deadletter::Target;
use crate::inventory::{Fingerprint, Kind, Watched};
use crate::jetstream::{self, ConsumerLookup, ConsumerReport};
use crate::plan::consumer::{
    ConsumerPlan, DesiredConsumer, ObservedConsumer, plan_consumer, released as released_config, rewritten,
};
use crate::plan::{FieldChange, OWNER_KEY};
use crate::status::conditions;

pub const KIND: &str = "Consumer";

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let runner = super::Runner::woken_by(KIND, namespace, shutdown, &ctx, Kind::Consumer);
    super::run::<Consumer, _, _, _, _, _>(ctx, runner, apply, cleanup).await;
}

async fn apply(consumer: Arc<Consumer>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*consumer);
    if is_paused(&*consumer) {
        return Ok(Action::await_change());
    }
    let desired = DesiredConsumer::from_spec(&consumer.spec, &consumer.name_any(), &key);
    let consumer_name =
        desired.as_ref().map_or_else(|_| consumer.spec.durable_name.clone(), |d| Some(d.name().to_owned()));
    let dead_letter = desired.as_ref().ok().zip(consumer.spec.dead_letter.as_ref()).map(|(d, dl)| Target {
        connection: consumer.spec.connection_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        stream: d.stream.clone(),
        consumer: d.name().to_owned(),
        subject: dl.subject.clone(),
    });
    let namespace = consumer.namespace().unwrap_or_default();
    let connection_id = super::connection_id(&namespace, consumer.spec.connection_ref.as_ref());
    let mut connection = None;
    let (report, outcome) = match desired {
        Err(violations) => (None, Err(ReconcileError::InvalidSpec(violations))),
        Ok(desired) => match ctx.connection(&namespace, consumer.spec.connection_ref.as_ref(), &key).await {
            Err(err) => (None, Err(err)),
            Ok(pooled) => {
                let (report, outcome) = converge(&*consumer, &desired, &connection_id, &pooled.jetstream, &ctx).await;
                let outcome = outcome.map_err(|e| e.explained(&pooled).at_field(crate::plan::consumer::field_of_error));
                connection = Some(pooled);
                (report, outcome)
            }
        },
    };
    // Lag is watched for every consumer the object manages, and for one waiting for
    // its stream, which the inventory wakes when the stream appears.
    match (&connection, &consumer_name) {
        (Some(pooled), Some(name)) => ctx.inventory.watch(
            &key,
            Watched {
                namespace: namespace.clone(),
                connection: connection_id.clone(),
                jetstream: pooled.jetstream.clone(),
                system: pooled.system.clone(),
                stream: consumer.spec.stream_name.clone(),
                consumer: name.clone(),
            },
        ),
        _ => ctx.inventory.forget(&key),
    }
    if !ctx.settings.observe_only {
        ctx.dead_letters.ensure(&key, dead_letter.zip(connection));
    }
    let health = health("consumer", &outcome);
    let previous = consumer.status.clone().unwrap_or_default();
    let previous_reason = previous.conditions.iter().find(|c| c.type_ == READY).map(|c| c.reason.as_str());
    let what = format!(
        "the JetStream consumer {} on {}",
        consumer_name.as_deref().unwrap_or_default(),
        consumer.spec.stream_name
    );
    ctx.announce(&*consumer, &what, &outcome, previous_reason);
    ctx.tell_owner(&*consumer, &outcome, previous_reason);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = ConsumerStatus {
        observed_generation: consumer.metadata.generation,
        conditions: conditions(&previous.conditions, &health, consumer.metadata.generation, &now),
        consumer_name,
        state: report.map(|r| r.state).or(previous.state.clone()),
    };
    ctx.write_status(&*consumer, &previous, &status).await?;
    ctx.next(KIND, &key, outcome)
}

impl JetStreamKind for Consumer {
    type Config = Config;
    type Desired = DesiredConsumer;
    type Report = ConsumerReport;
    const NOUN: &'static str = "consumer";
    const KIND: Kind = Kind::Consumer;

    fn stream(desired: &DesiredConsumer) -> &str {
        &desired.stream
    }

    fn recall(desired: &DesiredConsumer, connection: &str, ctx: &Context) -> Option<ConsumerReport> {
        let info = ctx.inventory.consumer_info(connection, &desired.stream, desired.name())?;
        Some(ConsumerReport::from(&*info))
    }

    fn fingerprint(report: &ConsumerReport) -> Fingerprint {
        report.fingerprint()
    }

    fn config(desired: &DesiredConsumer) -> &Config {
        &desired.config
    }

    fn with_config(desired: &DesiredConsumer, config: Config) -> DesiredConsumer {
        DesiredConsumer { config, ..desired.clone() }
    }

    fn target(desired: &DesiredConsumer) -> String {
        format!("{}.{}", desired.stream, desired.name())
    }

    fn answers(ctx: &Context) -> &Answers<Config> {
        &ctx.consumer_answers
    }

    fn answer(report: &ConsumerReport) -> Config {
        report.observed.config.clone()
    }

    fn owner(report: &ConsumerReport) -> Option<&str> {
        report.observed.config.metadata.get(OWNER_KEY).map(String::as_str)
    }

    /// A missing stream is an error: the consumer waits for it.
    async fn observe(
        &self,
        desired: &DesiredConsumer,
        js: &async_nats::jetstream::Context,
    ) -> Result<Option<ConsumerReport>, ReconcileError> {
        match jetstream::observe_consumer(js, &desired.stream, desired.name()).await? {
            ConsumerLookup::Found(report) => Ok(Some(*report)),
            ConsumerLookup::Missing => Ok(None),
            ConsumerLookup::NoStream => Err(ReconcileError::StreamNotFound(desired.stream.clone())),
        }
    }

    fn plan(desired: &DesiredConsumer, report: Option<&ConsumerReport>, released: bool) -> ConsumerPlan {
        match report {
            Some(report) if released => {
                plan_consumer(desired, Some(&ObservedConsumer { config: released_config(&report.observed) }))
            }
            report => plan_consumer(desired, report.map(|r| &r.observed)),
        }
    }

    async fn create(
        js: &async_nats::jetstream::Context,
        desired: &DesiredConsumer,
        config: Config,
    ) -> Result<ConsumerReport, jetstream::JetStreamError> {
        jetstream::put_consumer(js, &desired.stream, config, true).await
    }

    async fn update(
        js: &async_nats::jetstream::Context,
        desired: &DesiredConsumer,
        config: Config,
    ) -> Result<ConsumerReport, jetstream::JetStreamError> {
        jetstream::put_consumer(js, &desired.stream, config, false).await
    }

    fn rewritten(desired: &DesiredConsumer, sent: &Config, stored: &Config) -> Vec<FieldChange> {
        rewritten(desired, sent, stored)
    }

    async fn written(&self, desired: &DesiredConsumer, js: &async_nats::jetstream::Context, ctx: &Context) {
        warn_of_unmatched_filters(self, desired, js, ctx).await;
    }
}

/// A filter that no subject of the stream can match is legitimate (the stream may
/// get the subject later, or take it from a source), so it is written, and a Warning
/// names it: on each write, never per resync.
async fn warn_of_unmatched_filters(
    consumer: &Consumer,
    desired: &DesiredConsumer,
    js: &async_nats::jetstream::Context,
    ctx: &Context,
) {
    let config = &desired.config;
    let filters = config.filter_subjects.iter().map(|f| ("spec.filterSubjects", f));
    let filters: Vec<_> = filters.chain(Some(("spec.filterSubject", &config.filter_subject))).collect();
    if filters.iter().all(|(_, f)| f.is_empty()) {
        return;
    }
    let Ok(Some(stream)) = jetstream::observe_stream(js, &desired.stream).await else { return };
    let stream = &stream.observed.config;
    if stream.mirror.is_some() || stream.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return;
    }
    let stored: Vec<&str> = stream
        .subjects
        .iter()
        .map(String::as_str)
        .chain(stream.subject_transform.as_ref().map(|t| t.destination.as_str()))
        .collect();
    for (field, filter) in filters.into_iter().filter(|(_, f)| !f.is_empty()) {
        if !stored.iter().any(|s| crate::api::subject::overlap(s, filter)) {
            let note = format!(
                "{field}: {filter:?} matches none of the subjects the stream {} stores ({}); the consumer gets no messages until it does",
                desired.stream,
                stored.join(", ")
            );
            ctx.event(consumer, true, "FilterMatchesNothing", note);
        }
    }
}

/// `Delete` removes a consumer this object owns; anything else is left as it is,
/// and a consumer or stream already gone needs nothing.
async fn cleanup(consumer: Arc<Consumer>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (consumer, ctx) = (&*consumer, &*ctx);
    let reference = consumer.spec.connection_ref.as_ref();
    let key = key(consumer);
    ctx.consumer_answers.forget(&key);
    ctx.dead_letters.ensure(&key, None);
    ctx.inventory.forget(&key);
    let delete = consumer.spec.deletion_policy == Some(DeletionPolicy::Delete);
    ctx.cleanup_through(consumer, reference, delete, move |js| async move {
        apply_deletion_policy(consumer, ctx, &js).await
    })
    .await
}

async fn apply_deletion_policy(
    consumer: &Consumer,
    ctx: &Context,
    js: &async_nats::jetstream::Context,
) -> Result<Action, ReconcileError> {
    let key = key(consumer);
    let policy = consumer.spec.deletion_policy.unwrap_or(DeletionPolicy::Retain);
    if ctx.settings.observe_only {
        return Ok(Action::await_change());
    }
    let name = consumer.spec.durable_name.clone().unwrap_or_else(|| consumer.name_any());
    let stream = &consumer.spec.stream_name;
    let lookup = match jetstream::observe_consumer(js, stream, &name).await {
        Ok(lookup) => lookup,
        Err(err) if policy == DeletionPolicy::Delete => return Err(err.into()),
        Err(err) => {
            tracing::warn!(consumer = %key, error = %err, "cannot release the retained consumer; leaving it as it is");
            return Ok(Action::await_change());
        }
    };
    let ConsumerLookup::Found(report) = lookup else { return Ok(Action::await_change()) };
    if report.observed.config.metadata.get(OWNER_KEY) != Some(&key) {
        return Ok(Action::await_change());
    }
    match policy {
        DeletionPolicy::Delete => {
            jetstream::delete_consumer(js, stream, &name).await?;
            ctx.event(consumer, false, "Deleted", format!("deleted the JetStream consumer {name} on {stream}"));
        }
        DeletionPolicy::Retain => {
            if let Err(err) = jetstream::put_consumer(js, stream, released_config(&report.observed), false).await {
                tracing::warn!(consumer = %key, error = %err, "cannot remove the ownership mark from the retained consumer");
            }
            let note = format!("left the JetStream consumer {name} on {stream} on the server, without Jetway's marks");
            ctx.event(consumer, false, "Retained", note);
        }
    }
    Ok(Action::await_change())
}
