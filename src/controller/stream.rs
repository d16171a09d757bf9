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

use super::{Context, Done, ReconcileError, describe, health, is_paused, key};
use crate::api::condition::READY;
use crate::api::stream::{DeletionPolicy, Stream, StreamStatus};
use crate::jetstream::{self, StreamReport};
use crate::plan::loss::needs_subject_counts;
use crate::plan::stream::{
    DesiredStream, ObservedStream, StreamPlan, plan_stream, released, rewritten, without_server_metadata,
};
use crate::status::conditions;

pub const KIND: &str = "Stream";

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    super::run::<Stream, _, _, _, _>(ctx, namespace, shutdown, KIND, apply, cleanup).await;
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
                let (report, outcome) = converge(stream, &desired, &pooled.jetstream, ctx).await;
                (report, outcome.map_err(|e| e.explained(&pooled).at_field(crate::plan::stream::field_of_error)))
            }
        },
    };
    let health = health("stream", &outcome);
    let previous = stream.status.clone().unwrap_or_default();
    let previous_reason = previous.conditions.iter().find(|c| c.type_ == READY).map(|c| c.reason.as_str());
    let what = format!("the JetStream stream {}", stream_name.as_deref().unwrap_or_default());
    ctx.announce(stream, &what, &outcome, previous_reason).await;
    ctx.tell_owner(stream, &outcome, previous_reason).await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = StreamStatus {
        observed_generation: stream.metadata.generation,
        conditions: conditions(&previous.conditions, &health, stream.metadata.generation, &now),
        stream_name,
        // What the server said last stays when it cannot be asked.
        state: report.as_ref().map(|r| r.state.clone()).or(previous.state.clone()),
        cluster: report.as_ref().map_or(previous.cluster.clone(), |r| r.cluster.clone()),
    };
    ctx.write_status(stream, &previous, &status).await?;
    ctx.next(&key, outcome)
}

/// The annotation by which a user lets one generation of a Stream's spec remove
/// messages the stream holds: its value is that generation, so that consent is given
/// per change and does not carry over to the next one.
pub const LOSS_CONSENT_ANNOTATION: &str = "jetway.dev/allow-message-loss";

fn consents_to_loss(stream: &Stream) -> bool {
    let generation = stream.metadata.generation.map(|g| g.to_string());
    generation.is_some() && stream.annotations().get(LOSS_CONSENT_ANNOTATION) == generation.as_ref()
}

/// Observe, plan and execute; the report is the server's latest word on the stream.
/// Planned against the server's own form of this spec when it answered it before.
async fn converge(
    stream: &Stream,
    desired: &DesiredStream,
    js: &async_nats::jetstream::Context,
    ctx: &Context,
) -> (Option<StreamReport>, Result<Done, ReconcileError>) {
    let key = key(stream);
    let mut report = match jetstream::observe_stream(js, desired.name()).await {
        Ok(report) => report,
        Err(err) => return (None, Err(err.into())),
    };
    if let Some(observed) = report.as_mut().map(|r| &mut r.observed)
        && needs_subject_counts(&desired.config, &observed.config, &observed.contents)
    {
        match jetstream::messages_per_subject(js, desired.name()).await {
            Ok(counts) => observed.contents.per_subject = Some(counts),
            Err(err) => return (report, Err(err.into())),
        }
    }
    let sent = &desired.config;
    let stored = ctx.stream_answers.stored_form(&key, sent);
    let desired = &match stored {
        Some(config) => DesiredStream { config, ..desired.clone() },
        None => desired.clone(),
    };
    let mut plan = plan_stream(desired, report.as_ref().map(|r| &r.observed));
    if let (StreamPlan::OwnedElsewhere { owner }, Some(report)) = (&plan, &report)
        && !ctx.owner_exists::<Stream>(owner).await
    {
        let orphan = ObservedStream { config: released(&report.observed), ..report.observed.clone() };
        plan = plan_stream(desired, Some(&orphan));
    }
    if ctx.settings.observe_only {
        let pending = match &plan {
            StreamPlan::Create { .. } => Some("observe-only: would create the stream".to_owned()),
            StreamPlan::Update { changes, .. } => Some(describe("observe-only: would update", changes)),
            _ => None,
        };
        if let Some(pending) = pending {
            return (report, Ok(Done::Pending(pending)));
        }
    }
    if matches!(plan, StreamPlan::Create { .. } | StreamPlan::Update { .. })
        && let Err(err) = ctx.may_write()
    {
        return (report, Err(err));
    }
    let result = match plan {
        StreamPlan::InSync => return (report, Ok(Done::InSync)),
        StreamPlan::Create { config } => create(js, config, &desired.config).await.map(|r| (r, Done::Created)),
        StreamPlan::Update { config, changes, adopting } => jetstream::update_stream(js, config)
            .await
            .map(|r| (r, if adopting { Done::Adopted(changes) } else { Done::Updated(changes) })),
        StreamPlan::Refused { violations } => return (report, Err(ReconcileError::ChangeRefused(violations))),
        StreamPlan::WouldLoseMessages { violations } => {
            let consent = format!(
                "kubectl annotate stream {} -n {} {LOSS_CONSENT_ANNOTATION}={}",
                stream.name_any(),
                stream.namespace().unwrap_or_default(),
                stream.metadata.generation.unwrap_or_default()
            );
            return (report, Err(ReconcileError::WouldLoseMessages(violations, consent)));
        }
        StreamPlan::OwnedElsewhere { owner } => return (report, Err(ReconcileError::OwnedElsewhere("stream", owner))),
        StreamPlan::AdoptionRefused => return (report, Err(ReconcileError::AdoptionRefused("stream"))),
    };
    match result {
        Ok((report, done)) => {
            let answer = without_server_metadata(&report.observed.config);
            let rewritten = rewritten(sent, &answer);
            if !rewritten.is_empty() {
                let note = describe("the server stored the stream in its own form", &rewritten);
                ctx.event(stream, false, "ServerRewrote", note).await;
            }
            ctx.stream_answers.remember(&key, sent, &answer);
            (Some(report), Ok(done))
        }
        Err(err) => (report, Err(err.into())),
    }
}

/// Creates the stream; one to be sealed is created open and sealed at once, since
/// the server refuses to create a sealed stream.
async fn create(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
    desired: &async_nats::jetstream::stream::Config,
) -> Result<StreamReport, jetstream::JetStreamError> {
    let report = jetstream::create_stream(js, config).await?;
    if !desired.sealed {
        return Ok(report);
    }
    jetstream::update_stream(js, desired.clone()).await
}

/// Applies the deletion policy to a stream this object owns; streams it does not
/// own, and streams already gone, are left as they are.
async fn cleanup(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (stream, ctx) = (&*stream, &*ctx);
    let reference = stream.spec.connection_ref.as_ref();
    ctx.stream_answers.forget(&key(stream));
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
    let Some(report) = report.filter(|r| crate::plan::stream::owner_of(&r.observed.config) == Some(key.as_str()))
    else {
        return Ok(Action::await_change());
    };
    match policy {
        DeletionPolicy::Delete => {
            jetstream::delete_stream(js, &name).await?;
            ctx.event(stream, false, "Deleted", format!("deleted the JetStream stream {name}")).await;
        }
        DeletionPolicy::Retain => {
            if let Err(err) = jetstream::update_stream(js, released(&report.observed)).await {
                tracing::warn!(stream = %key, error = %err, "cannot remove the ownership mark from the retained stream");
            }
            ctx.event(
                stream,
                false,
                "Retained",
                format!("left the JetStream stream {name} and its messages on the server"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}
