//! The Stream controller. Each reconcile runs:
//!
//! 1. dereference: the connection (the operator's default one);
//! 2. validate (pure): [`DesiredStream::from_spec`];
//! 3. observe: the stream's configuration and state from the server;
//! 4. plan (pure): [`plan_stream`];
//! 5. execute: create or update; a change is never applied by deleting the stream;
//! 6. status: computed, and written only when it differs from what is there.
//!
//! Deletion follows `deletionPolicy` through a finalizer, and never deletes a stream
//! that another object, or nobody, owns.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tokio_util::sync::CancellationToken;

use async_nats::jetstream::stream::Config;

use super::answers::Answers;
use super::converge::{JetStreamKind, converge};
use super::{Context, ReconcileError, connection_id, health, is_paused, key};
use crate::api::condition::READY;
use crate::api::stream::{DeletionPolicy, Stream, StreamStatus};
use crate::inventory::{Fingerprint, Kind, WatchedStream};
use crate::jetstream::{self, StreamReport};
use crate::plan::FieldChange;
use crate::plan::loss::needs_subject_counts;
use crate::plan::stream::{
    DesiredStream, ObservedStream, StreamPlan, owner_of, plan_stream, released as released_config, rewritten,
    without_server_metadata,
};
use crate::status::conditions;

pub const KIND: &str = "Stream";

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let runner = super::Runner::woken_by(KIND, namespace, shutdown, &ctx, Kind::Stream);
    super::run::<Stream, _, _, _, _, _>(ctx, runner, apply, cleanup).await;
}

async fn apply(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (stream, ctx) = (&*stream, &*ctx);
    let key = key(stream);
    if is_paused(stream) {
        tracing::debug!(stream = %key, "paused");
        return Ok(Action::await_change());
    }
    let desired = DesiredStream::from_spec(&stream.spec, &stream.name_any(), &key)
        .map(|desired| DesiredStream { loss_allowed: consents_to_loss(stream), ..desired });
    let stream_name = desired.as_ref().map_or_else(|_| stream.spec.name.clone(), |d| Some(d.name().to_owned()));
    let namespace = stream.namespace().unwrap_or_default();
    let (report, outcome) = match desired {
        Err(violations) => (None, Err(ReconcileError::InvalidSpec(violations))),
        Ok(desired) => match ctx.connection(&namespace, stream.spec.connection_ref.as_ref(), &key).await {
            Err(err) => (None, Err(err)),
            Ok(pooled) => {
                let connection = connection_id(&namespace, stream.spec.connection_ref.as_ref());
                let (report, outcome) = converge(stream, &desired, &connection, &pooled.jetstream, ctx).await;
                if report.is_some() {
                    let watched = WatchedStream {
                        namespace: namespace.clone(),
                        connection,
                        jetstream: pooled.jetstream.clone(),
                        system: pooled.system.clone(),
                        stream: desired.name().to_owned(),
                    };
                    ctx.inventory.watch_stream(&key, watched);
                }
                (report, outcome.map_err(|e| e.explained(&pooled).at_field(crate::plan::stream::field_of_error)))
            }
        },
    };
    let health = health("stream", &outcome);
    let previous = stream.status.clone().unwrap_or_default();
    let previous_reason = previous.conditions.iter().find(|c| c.type_ == READY).map(|c| c.reason.as_str());
    let what = format!("the JetStream stream {}", stream_name.as_deref().unwrap_or_default());
    ctx.announce(stream, &what, &outcome, previous_reason);
    ctx.tell_owner(stream, &outcome, previous_reason);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = StreamStatus {
        observed_generation: stream.metadata.generation,
        conditions: conditions(&previous.conditions, &health, stream.metadata.generation, &now),
        stream_name,
        // What the server said last stays when it cannot be asked.
        state: report.as_ref().map(|r| r.state.clone()).or(previous.state.clone()),
        // A standalone server's stream list carries no cluster: the last word stands.
        cluster: report.as_ref().and_then(|r| r.cluster.clone()).or(previous.cluster.clone()),
    };
    ctx.write_status(stream, &previous, &status).await?;
    ctx.next(KIND, &key, outcome)
}

/// The annotation by which a user lets one generation of a Stream's spec remove
/// messages the stream holds: its value is that generation, so that consent is given
/// per change and does not carry over to the next one.
pub const LOSS_CONSENT_ANNOTATION: &str = "jetway.dev/allow-message-loss";

fn consents_to_loss(stream: &Stream) -> bool {
    let generation = stream.metadata.generation.map(|g| g.to_string());
    generation.is_some() && stream.annotations().get(LOSS_CONSENT_ANNOTATION) == generation.as_ref()
}

impl JetStreamKind for Stream {
    type Config = Config;
    type Desired = DesiredStream;
    type Report = StreamReport;
    const NOUN: &'static str = "stream";
    const KIND: Kind = Kind::Stream;

    fn stream(desired: &DesiredStream) -> &str {
        desired.name()
    }

    fn recall(desired: &DesiredStream, connection: &str, ctx: &Context) -> Option<StreamReport> {
        ctx.inventory.stream_info(connection, desired.name()).map(|info| StreamReport::from(&*info))
    }

    fn unlisted(desired: &DesiredStream, connection: &str, ctx: &Context) -> bool {
        ctx.inventory.unlisted(connection, desired.name())
    }

    fn fingerprint(report: &StreamReport) -> Fingerprint {
        report.fingerprint()
    }

    fn config(desired: &DesiredStream) -> &Config {
        &desired.config
    }

    fn with_config(desired: &DesiredStream, config: Config) -> DesiredStream {
        DesiredStream { config, ..desired.clone() }
    }

    fn target(desired: &DesiredStream) -> String {
        desired.name().to_owned()
    }

    fn answers(ctx: &Context) -> &Answers<Config> {
        &ctx.stream_answers
    }

    fn answer(report: &StreamReport) -> Config {
        without_server_metadata(&report.observed.config)
    }

    fn owner(report: &StreamReport) -> Option<&str> {
        owner_of(&report.observed.config)
    }

    /// With the messages per subject when the plan needs them to know what a lower
    /// per-subject limit would remove.
    async fn observe(
        &self,
        desired: &DesiredStream,
        js: &async_nats::jetstream::Context,
    ) -> Result<Option<StreamReport>, ReconcileError> {
        let mut report = jetstream::observe_stream(js, desired.name()).await?;
        if let Some(observed) = report.as_mut().map(|r| &mut r.observed)
            && needs_subject_counts(&desired.config, &observed.config, &observed.contents)
        {
            observed.contents.per_subject = Some(jetstream::messages_per_subject(js, desired.name()).await?);
        }
        Ok(report)
    }

    fn plan(desired: &DesiredStream, report: Option<&StreamReport>, released: bool) -> StreamPlan {
        match report {
            Some(report) if released => {
                let orphan = ObservedStream { config: released_config(&report.observed), ..report.observed.clone() };
                plan_stream(desired, Some(&orphan))
            }
            report => plan_stream(desired, report.map(|r| &r.observed)),
        }
    }

    /// One to be sealed is created open and sealed at once, since the server refuses
    /// to create a sealed stream.
    async fn create(
        js: &async_nats::jetstream::Context,
        desired: &DesiredStream,
        config: Config,
    ) -> Result<StreamReport, jetstream::JetStreamError> {
        let report = jetstream::create_stream(js, config).await?;
        if !desired.config.sealed {
            return Ok(report);
        }
        jetstream::update_stream(js, desired.config.clone()).await
    }

    async fn update(
        js: &async_nats::jetstream::Context,
        _desired: &DesiredStream,
        config: Config,
    ) -> Result<StreamReport, jetstream::JetStreamError> {
        jetstream::update_stream(js, config).await
    }

    fn rewritten(_desired: &DesiredStream, sent: &Config, stored: &Config) -> Vec<FieldChange> {
        rewritten(sent, stored)
    }

    fn loss_consent(&self) -> String {
        format!(
            "kubectl annotate stream {} -n {} {LOSS_CONSENT_ANNOTATION}={}",
            self.name_any(),
            self.namespace().unwrap_or_default(),
            self.metadata.generation.unwrap_or_default()
        )
    }
}

/// Applies the deletion policy to a stream this object owns; streams it does not
/// own, and streams already gone, are left as they are.
async fn cleanup(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (stream, ctx) = (&*stream, &*ctx);
    let reference = stream.spec.connection_ref.as_ref();
    ctx.stream_answers.forget(&key(stream));
    ctx.inventory.forget_stream(&key(stream));
    let delete = stream.spec.deletion_policy == Some(DeletionPolicy::Delete);
    ctx.cleanup_through(
        stream,
        reference,
        delete,
        move |js| async move { apply_deletion_policy(stream, ctx, &js).await },
    )
    .await
}

async fn apply_deletion_policy(
    stream: &Stream,
    ctx: &Context,
    js: &async_nats::jetstream::Context,
) -> Result<Action, ReconcileError> {
    let key = key(stream);
    let name = stream.spec.name.clone().unwrap_or_else(|| stream.name_any());
    let policy = stream.spec.deletion_policy.unwrap_or(DeletionPolicy::Retain);
    if ctx.settings.observe_only {
        return Ok(Action::await_change());
    }
    let report = match jetstream::observe_stream(js, &name).await {
        Ok(report) => report,
        Err(err) if policy == DeletionPolicy::Delete => return Err(err.into()),
        Err(err) => {
            tracing::warn!(stream = %key, error = %err, "cannot release the retained stream; leaving it as it is");
            return Ok(Action::await_change());
        }
    };
    let Some(report) = report.filter(|r| owner_of(&r.observed.config) == Some(key.as_str())) else {
        return Ok(Action::await_change());
    };
    match policy {
        DeletionPolicy::Delete => {
            jetstream::delete_stream(js, &name).await?;
            ctx.event(stream, false, "Deleted", format!("deleted the JetStream stream {name}"));
        }
        DeletionPolicy::Retain => {
            if let Err(err) = jetstream::update_stream(js, released_config(&report.observed)).await {
                tracing::warn!(stream = %key, error = %err, "cannot remove the ownership mark from the retained stream");
            }
            ctx.event(
                stream,
                false,
                "Retained",
                format!("left the JetStream stream {name} and its messages on the server"),
            );
        }
    }
    Ok(Action::await_change())
}
