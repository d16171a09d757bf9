//! The WorkerPool controller. Each reconcile runs:
//!
//! 1. dereference: the Consumer object the pool names, and its lag from the inventory;
//! 2. decide (pure): the replicas, [`scale::decide`] when Jetway scales alone,
//!    [`scale::beside_hpa`] (only 0 <-> 1) when an HPA does, else the spec's;
//! 3. execute: a new decision goes through the pool's `/scale` subresource; the
//!    Deployment (and in HPA mode the HPA, which targets the pool's `/scale`) is
//!    applied with server-side apply, owned by the pool. The Deployment's replicas
//!    follow the pool's, which only the deciding autoscaler writes, so nothing fights;
//! 4. status: replicas, the decision, pending and its age, the last scale and why.
//!
//! A consumer that is missing (no Consumer object, or not on the server) is a
//! condition naming it, and the pool keeps its replicas: no lag is not zero lag.
//! A pool is looked at when it changes, when what it owns changes, when its
//! consumer's lag moves (the inventory wakes it), and every second only while time
//! alone can move its decision (cooling down, stabilizing); the Deployment goes with
//! the pool through its owner reference.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Autoscaler, Context, ReconcileError, key};
use crate::api::condition::READY;
use crate::api::consumer::Consumer;
use crate::api::workerpool::{WorkerPool, WorkerPoolStatus};
use crate::inventory::Observation;
use crate::plan::scale::{self, DEFAULT_COOLDOWN, ScaleDecision};
use crate::status::{Health, conditions};

mod memory;
mod objects;

pub use self::memory::ScaleMemory;
pub use self::objects::OwnedStores;
use self::objects::{apply_deployment, apply_hpa, remove_hpa, watch_owned};

pub const KIND: &str = "WorkerPool";
/// The label that selects a pool's pods.
pub const POOL_LABEL: &str = "jetway.dev/pool";
const AUTOSCALE_EVERY: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    // A pool is looked at when its consumer's lag moves.
    let moved = ctx.inventory.subscribe(crate::inventory::Kind::Lag);
    let (owner, watched_namespace) = (ctx.clone(), namespace.clone());
    let configure = move |controller: super::Controller<WorkerPool>, pools: super::Store<WorkerPool>| {
        use futures::StreamExt;
        let pools_of = move |consumer: String| {
            let (namespace, name) = consumer.split_once('/').map(|(n, c)| (n.to_owned(), c.to_owned()))?;
            let on_it: Vec<_> = pools
                .state()
                .into_iter()
                .filter(|pool| {
                    pool.namespace().as_deref() == Some(namespace.as_str())
                        && pool.object.as_ref().is_ok_and(|pool| pool.spec.consumer_ref.name == name)
                })
                .map(|pool| kube::runtime::reflector::ObjectRef::from_obj(&*pool))
                .collect();
            Some(futures::stream::iter(on_it))
        };
        controller
            .owns_stream(watch_owned(&owner, watched_namespace.as_deref(), |owned| &owned.deployments))
            .owns_stream(watch_owned(&owner, watched_namespace.as_deref(), |owned| &owned.hpas))
            .reconcile_on(moved.filter_map(move |consumer| std::future::ready(pools_of(consumer))).flatten())
    };
    let runner = super::Runner { kind: KIND, namespace, shutdown, configure };
    super::run::<WorkerPool, _, _, _, _, _>(ctx, runner, apply, cleanup).await;
}

async fn cleanup(pool: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    // The Deployment is garbage-collected through its owner reference.
    ctx.scale_memory.forget(&key(&*pool));
    Ok(Action::await_change())
}

/// Why a pool cannot follow its consumer.
fn missing(reason: &'static str, message: String) -> Health {
    Health::Stalled { reason, message }
}

async fn apply(pool: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = key(&*pool);
    if super::is_paused(&*pool) {
        return Ok(Action::await_change());
    }
    ctx.may_write()?;
    if let Some(owner) = foreign_owner(&pool, &ctx, &key).await? {
        let previous = pool.status.clone().unwrap_or_default();
        let message = format!("{owner}; the pool leaves it untouched until it is removed or given to the pool");
        let health = Health::Stalled { reason: "OwnedByAnotherObject", message };
        let status = WorkerPoolStatus {
            observed_generation: pool.metadata.generation,
            conditions: conditions(&previous.conditions, &health, pool.metadata.generation, &now()),
            ..previous.clone()
        };
        if status.conditions != previous.conditions {
            ctx.event(&*pool, true, health.reason(), health.message().to_owned());
        }
        ctx.write_status(&*pool, &previous, &status).await?;
        return Ok(ctx.resync(&key));
    }
    let namespace = pool.namespace().unwrap_or_default();
    let previous = pool.status.clone().unwrap_or_default();
    let consumer_name = &pool.spec.consumer_ref.name;
    // A reading means the Consumer object exists (it registered the consumer); only
    // without one is the object looked up, to tell "missing" from "not read yet".
    if pool.spec.autoscaling.is_some() {
        // Scaling reads the consumer every lag interval.
        ctx.inventory.demand(&key_of(&namespace, consumer_name));
    }
    let observation = ctx.inventory.observation(&key_of(&namespace, consumer_name));
    let consumer = match observation {
        Some(_) => Some(()),
        None => {
            let consumers: Api<super::Decoded<Consumer>> = Api::namespaced(ctx.client.clone(), &namespace);
            consumers.get_opt(consumer_name).await.map_err(ReconcileError::Kube)?.map(|_| ())
        }
    };

    let current = pool.spec.replicas.unwrap_or(1);
    // Whether time alone may move the decision (a cooldown, the stabilizing window):
    // every other change comes with the consumer's lag, which wakes the pool.
    let mut settling = false;
    let (health, decision, pending) = match (&consumer, observation, &pool.spec.autoscaling) {
        (None, ..) => {
            let message = format!("the Consumer {consumer_name} does not exist; the pool keeps its replicas");
            (missing("ConsumerNotFound", message), None, None)
        }
        (Some(_), Some(Observation::Missing { .. }), _) => {
            let message = format!("the consumer of {consumer_name} is not on the server; the pool keeps its replicas");
            (missing("ConsumerNotOnServer", message), None, None)
        }
        (Some(_), None, Some(_)) => {
            let message = "waiting for the first reading of the consumer's lag".to_owned();
            (Health::Progressing { reason: "LagUnknown", message }, None, None)
        }
        (Some(_), Some(Observation::Stale { at, .. }), Some(_)) => {
            let age = at.elapsed().as_secs();
            let message = format!(
                "the consumer's lag was last read {age}s ago; the pool keeps its replicas until it is read again"
            );
            (Health::Progressing { reason: "LagStale", message }, None, None)
        }
        (Some(_), lag, None) => {
            let pending = match lag {
                Some(Observation::Found { lag, at }) => Some((lag.pending, at)),
                _ => None,
            };
            (ready(current), None, pending)
        }
        (Some(_), Some(Observation::Found { lag, at }), Some(policy)) => {
            let active = lag.pending > u64::try_from(policy.activation_pending).unwrap_or(0);
            let window = policy.cooldown.map_or(DEFAULT_COOLDOWN, |d| d.0);
            let input = ctx.scale_memory.input(&key, &lag, active, current, window);
            let decision = match ctx.settings.autoscaler {
                Autoscaler::Jetway => {
                    let decision = scale::decide(policy, input);
                    ctx.scale_memory.remember(&key, decision.replicas);
                    Some(decision)
                }
                Autoscaler::Hpa => scale::beside_hpa(policy, input),
            };
            settling = match decision {
                Some(d) => matches!(d.reason, "CoolingDown" | "WorkInFlight" | "Stabilizing" | "PendingFell"),
                None => !active && current > 0 && policy.min_replicas == 0,
            };
            (ready(decision.map_or(current, |d| d.replicas)), decision, Some((lag.pending, at)))
        }
    };
    match (ctx.settings.autoscaler, &pool.spec.autoscaling) {
        _ if ctx.settings.observe_only => {}
        (Autoscaler::Hpa, Some(policy)) => {
            // Without the consumer's names there is nothing to select yet.
            if let Some((stream, consumer)) = ctx.inventory.names(&key_of(&namespace, consumer_name)) {
                apply_hpa(&pool, &ctx, &key, policy, &stream, &consumer).await?;
            }
        }
        _ => remove_hpa(&pool, &ctx, &key).await?,
    }

    let mut status = WorkerPoolStatus {
        observed_generation: pool.metadata.generation,
        selector: Some(format!("{POOL_LABEL}={}", pool.name_any())),
        // Beside an HPA, the pool's replicas are the HPA's last decision (it writes them).
        desired_replicas: decision.map(|d| d.replicas).or(Some(current)),
        pending: pending.map(|(p, _)| p).or(previous.pending),
        // When the figure was first read: a figure that holds writes nothing more.
        pending_observed_at: match pending {
            Some((figure, _)) if previous.pending == Some(figure) && previous.pending_observed_at.is_some() => {
                previous.pending_observed_at.clone()
            }
            Some((_, at)) => Some(Time(crate::inventory::read_at(at))),
            None => previous.pending_observed_at.clone(),
        },
        last_scale_time: previous.last_scale_time.clone(),
        last_scale_reason: previous.last_scale_reason.clone(),
        ..Default::default()
    };
    if let Some((at, reason)) = ctx.scale_memory.last_scale(&key) {
        status.last_scale_time = Some(at);
        status.last_scale_reason = Some(reason.to_owned());
    }
    if ctx.settings.observe_only {
        let would = decision.filter(|d| d.replicas != current).map_or_else(
            || "observe-only: the Deployment is left as it is".to_owned(),
            |d| format!("observe-only: would scale from {current} to {} replicas ({})", d.replicas, d.reason),
        );
        status.conditions = conditions(
            &previous.conditions,
            &Health::Progressing { reason: "ChangesPending", message: would },
            pool.metadata.generation,
            &now(),
        );
        ctx.write_status(&*pool, &previous, &status).await?;
        return Ok(Action::requeue(AUTOSCALE_EVERY));
    }
    let replicas = match decision {
        Some(ScaleDecision { replicas, reason }) if replicas != current => {
            scale_to(&pool, &ctx, replicas).await?;
            ctx.metrics.scaled(reason);
            let note = format!(
                "scaled from {current} to {replicas} replicas ({reason}, pending {})",
                status.pending.unwrap_or(0)
            );
            ctx.event(&*pool, false, "Scaled", note);
            // In whole seconds, as the apiserver keeps it: the status read back
            // then equals what is remembered, and is not written again.
            let at = Time(k8s_openapi::jiff::Timestamp::from_second(now().0.as_second()).unwrap_or(now().0));
            ctx.scale_memory.scaled(&key, at.clone(), reason);
            status.last_scale_time = Some(at);
            status.last_scale_reason = Some(reason.to_owned());
            replicas
        }
        _ => current,
    };
    let deployment = apply_deployment(&pool, &ctx, &key, replicas).await?;
    status.replicas = deployment.status.and_then(|s| s.replicas).unwrap_or(0);
    status.conditions = conditions(&previous.conditions, &health, pool.metadata.generation, &now());
    let previous_reason = previous.conditions.iter().find(|c| c.type_ == READY).map(|c| c.reason.clone());
    if previous_reason.as_deref() != Some(health.reason()) && matches!(health, Health::Stalled { .. }) {
        ctx.event(&*pool, true, health.reason(), health.message().to_owned());
    }
    ctx.write_status(&*pool, &previous, &status).await?;
    let waiting = pool.spec.autoscaling.is_some() && !matches!(health, Health::Ready { .. });
    Ok(if settling || waiting { Action::requeue(AUTOSCALE_EVERY) } else { ctx.resync(&key) })
}

fn ready(replicas: i32) -> Health {
    Health::Ready { reason: "InSync", message: format!("the Deployment has {replicas} replicas wanted") }
}

fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes the decision through the pool's `/scale` subresource, as any autoscaler would.
async fn scale_to(pool: &WorkerPool, ctx: &Context, replicas: i32) -> Result<(), ReconcileError> {
    let api: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    api.patch_scale(&pool.name_any(), &PatchParams::default(), &patch).await.map_err(ReconcileError::Kube)?;
    Ok(())
}

/// Who else owns the Deployment or HPA of the pool's name, if anyone: an object the
/// pool did not make (no owner reference to it) is never taken over. Checked until
/// found to be the pool's, then remembered.
async fn foreign_owner(pool: &WorkerPool, ctx: &Context, key: &str) -> Result<Option<String>, ReconcileError> {
    if ctx.scale_memory.owns_its_objects(key) {
        return Ok(None);
    }
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    let uid = pool.uid();
    let foreign = |kind: &str, meta: Option<ObjectMeta>| {
        let meta = meta?;
        let owners = meta.owner_references.unwrap_or_default();
        if owners.iter().any(|o| Some(&o.uid) == uid.as_ref()) {
            return None;
        }
        Some(match owners.iter().find(|o| o.controller == Some(true)) {
            Some(o) => format!("the {kind} {name} is controlled by {} {}", o.kind, o.name),
            None => format!(
                "the {kind} {name} exists without an owner reference to this pool (made by hand or another tool)"
            ),
        })
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = deployments.get_opt(&name).await.map_err(ReconcileError::Kube)?;
    if let Some(owner) = foreign("Deployment", deployment.map(|d| d.metadata)) {
        return Ok(Some(owner));
    }
    if ctx.settings.autoscaler == Autoscaler::Hpa && pool.spec.autoscaling.is_some() {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
        let hpa = hpas.get_opt(&name).await.map_err(ReconcileError::Kube)?;
        if let Some(owner) = foreign("HorizontalPodAutoscaler", hpa.map(|h| h.metadata)) {
            return Ok(Some(owner));
        }
    }
    ctx.scale_memory.owned(key);
    Ok(None)
}
