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
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Context, FIELD_MANAGER, FINALIZER, ReconcileError, Retry, RunnerError, is_paused, key};
use crate::api::condition::READY;
use crate::api::stream::{DeletionPolicy, Stream, StreamStatus};
use crate::jetstream::{self, StreamReport};
use crate::plan::FieldChange;
use crate::plan::stream::{DesiredStream, StreamPlan, plan_stream, released};
use crate::status::{Health, conditions};

const KIND: &str = "Stream";

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let api: Api<Stream> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "stream reconcile failed");
            }
        })
        .await;
}

async fn reconcile(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, RunnerError> {
    let started = Instant::now();
    let api: Api<Stream> = Api::namespaced(ctx.client.clone(), &stream.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, stream, |event| async {
        match event {
            finalizer::Event::Apply(stream) => apply(&stream, &ctx).await,
            finalizer::Event::Cleanup(stream) => cleanup(&stream, &ctx).await,
        }
    })
    .await;
    let reason = match &result {
        Ok(_) => None,
        Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Some(e.reason()),
        Err(_) => Some("FinalizerFailed"),
    };
    ctx.metrics.reconciled(KIND, started.elapsed().as_secs_f64(), reason);
    result.map_err(RunnerError)
}

fn error_policy(stream: Arc<Stream>, error: &RunnerError, ctx: Arc<Context>) -> Action {
    tracing::warn!(stream = %key(&*stream), error = %error, "will retry");
    ctx.backoff(&key(&*stream))
}

/// What a successful reconcile did.
enum Done {
    InSync,
    Created,
    Updated(Vec<FieldChange>),
    Adopted(Vec<FieldChange>),
    /// Observe-only mode: what would have been done.
    Pending(String),
}

async fn apply(stream: &Stream, ctx: &Context) -> Result<Action, ReconcileError> {
    let key = key(stream);
    if is_paused(stream) {
        tracing::debug!(stream = %key, "paused");
        return Ok(Action::await_change());
    }
    let desired = DesiredStream::from_spec(&stream.spec, &stream.name_any(), &key);
    let stream_name = desired.as_ref().map_or_else(|_| stream.spec.name.clone(), |d| Some(d.name().to_owned()));
    let (report, outcome) = match desired {
        Ok(desired) => converge(&desired, ctx).await,
        Err(violations) => (None, Err(ReconcileError::InvalidSpec(violations))),
    };
    // The condition describes the state, which stays put; what was done goes to Events.
    let health = match &outcome {
        Ok(Done::InSync | Done::Created | Done::Updated(_) | Done::Adopted(_)) => {
            Health::Ready { reason: "InSync", message: "the stream matches the spec".into() }
        }
        Ok(Done::Pending(what)) => Health::Progressing { reason: "ChangesPending", message: what.clone() },
        Err(e) if e.retry() == Retry::Backoff => Health::Progressing { reason: e.reason(), message: e.to_string() },
        Err(e) => Health::Stalled { reason: e.reason(), message: e.to_string() },
    };
    announce(stream, &outcome, ctx).await;
    write_status(stream, &health, stream_name, report.as_ref(), ctx).await?;
    match outcome {
        Err(e) if e.retry() == Retry::Backoff => Err(e),
        _ => Ok(ctx.resync(&key)),
    }
}

/// Observe, plan and execute; the report is the server's latest word on the stream.
async fn converge(desired: &DesiredStream, ctx: &Context) -> (Option<StreamReport>, Result<Done, ReconcileError>) {
    let report = match jetstream::observe_stream(&ctx.jetstream, desired.name()).await {
        Ok(report) => report,
        Err(err) => return (None, Err(err.into())),
    };
    let plan = plan_stream(desired, report.as_ref().map(|r| &r.observed));
    if ctx.settings.observe_only {
        let pending = match &plan {
            StreamPlan::Create { .. } => Some("observe-only: would create the stream".to_owned()),
            StreamPlan::Update { changes, .. } => Some(changed("observe-only: would update", changes)),
            _ => None,
        };
        if let Some(pending) = pending {
            return (report, Ok(Done::Pending(pending)));
        }
    }
    let result = match plan {
        StreamPlan::InSync => return (report, Ok(Done::InSync)),
        StreamPlan::Create { config } => {
            jetstream::create_stream(&ctx.jetstream, config).await.map(|r| (r, Done::Created))
        }
        StreamPlan::Update { config, changes, adopting } => jetstream::update_stream(&ctx.jetstream, config)
            .await
            .map(|r| (r, if adopting { Done::Adopted(changes) } else { Done::Updated(changes) })),
        StreamPlan::Refused { violations } => return (report, Err(ReconcileError::ChangeRefused(violations))),
        StreamPlan::OwnedElsewhere { owner } => return (report, Err(ReconcileError::OwnedElsewhere(owner))),
        StreamPlan::AdoptionRefused => return (report, Err(ReconcileError::AdoptionRefused)),
    };
    match result {
        Ok((report, done)) => (Some(report), Ok(done)),
        Err(err) => (report, Err(err.into())),
    }
}

fn changed(what: &str, changes: &[FieldChange]) -> String {
    let fields: Vec<String> = changes.iter().map(ToString::to_string).collect();
    format!("{what}: {}", fields.join(", "))
}

/// Events on transitions only: a change made, or a new reason for not being Ready.
async fn announce(stream: &Stream, outcome: &Result<Done, ReconcileError>, ctx: &Context) {
    let name = stream.spec.name.clone().unwrap_or_else(|| stream.name_any());
    let (warning, reason, note) = match outcome {
        Ok(Done::InSync | Done::Pending(_)) => return,
        Ok(Done::Created) => (false, "Created", format!("created the JetStream stream {name}")),
        Ok(Done::Updated(changes)) => {
            (false, "Updated", changed(&format!("updated the JetStream stream {name}"), changes))
        }
        Ok(Done::Adopted(changes)) => {
            (false, "Adopted", changed(&format!("adopted the JetStream stream {name}"), changes))
        }
        Err(e) => {
            let previous = stream.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
            if previous.is_some_and(|c| c.reason == e.reason()) {
                return;
            }
            (true, e.reason(), e.to_string())
        }
    };
    ctx.event(stream, warning, reason, note).await;
}

async fn write_status(
    stream: &Stream,
    health: &Health,
    stream_name: Option<String>,
    report: Option<&StreamReport>,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let previous = stream.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = StreamStatus {
        observed_generation: stream.metadata.generation,
        conditions: conditions(&previous.conditions, health, stream.metadata.generation, &now),
        stream_name,
        // What the server said last stays when it cannot be asked.
        state: report.map(|r| r.state.clone()).or(previous.state.clone()),
        cluster: report.map_or(previous.cluster.clone(), |r| r.cluster.clone()),
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<Stream> = Api::namespaced(ctx.client.clone(), &stream.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": KIND, "status": status});
    api.patch_status(&stream.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await
        .map_err(ReconcileError::Kube)?;
    Ok(())
}

/// Applies the deletion policy to a stream this object owns; streams it does not
/// own, and streams already gone, are left as they are.
async fn cleanup(stream: &Stream, ctx: &Context) -> Result<Action, ReconcileError> {
    let key = key(stream);
    let name = stream.spec.name.clone().unwrap_or_else(|| stream.name_any());
    let policy = stream.spec.deletion_policy.unwrap_or(DeletionPolicy::Retain);
    if ctx.settings.observe_only {
        return Ok(Action::await_change());
    }
    let report = match jetstream::observe_stream(&ctx.jetstream, &name).await {
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
            jetstream::delete_stream(&ctx.jetstream, &name).await?;
            ctx.event(stream, false, "Deleted", format!("deleted the JetStream stream {name}")).await;
        }
        DeletionPolicy::Retain => {
            if let Err(err) = jetstream::update_stream(&ctx.jetstream, released(&report.observed)).await {
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
