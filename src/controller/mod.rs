//! The controllers: one file per kind, each a short driver around the pure planner.
//! This module holds what they share: the context, error classification, backoff,
//! requeue timing and status writes.

mod answers;
pub mod connection;
pub mod consumer;
mod converge;
mod decoded;
mod error;
mod events;
pub mod references;
mod runner;
pub mod stream;
pub mod workerpool;

pub use decoded::{DecodeError, Decoded};
pub use error::{ReconcileError, Retry, RunnerError};
pub use runner::{Controller, Runner, Store, run, with_finalizer, woken};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;

use tokio_util::sync::CancellationToken;

use crate::api::stream::LocalRef;
use crate::connection::{Pool, Pooled};
use crate::deadletter::DeadLetters;

use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::plan::FieldChange;
use crate::status::Health;

/// The annotation that pauses reconciling one object: `jetway.dev/paused: "true"`.
pub const PAUSED_ANNOTATION: &str = "jetway.dev/paused";
/// The finalizer that lets the operator apply the deletion policy.
pub const FINALIZER: &str = "jetway.dev/cleanup";
/// The field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "jetway";

/// How the controllers behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often an object is looked at again without a change, to revert drift.
    pub resync: Duration,
    /// Report what would change, change nothing.
    pub observe_only: bool,
    /// How often the lag of consumers that drive scaling is read.
    pub lag_interval: Duration,
    /// How often every other consumer's figures are read.
    pub metrics_interval: Duration,
    /// Who scales autoscaled WorkerPools between 1 and `maxReplicas`.
    pub autoscaler: Autoscaler,
}

/// Who scales autoscaled WorkerPools between 1 and `maxReplicas`; waking from 0 and
/// going back to 0 are always Jetway's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Autoscaler {
    /// Jetway's own scaler, through each pool's `/scale` subresource: for clusters
    /// where KEDA or prometheus-adapter owns the external metrics API.
    #[default]
    Jetway,
    /// One HorizontalPodAutoscaler per pool on `nats_consumer_pending_messages`,
    /// which this operator serves.
    Hpa,
}

/// Which controllers have their caches filled (the first full list of their kind).
pub struct CacheSync(tokio::sync::watch::Sender<std::collections::BTreeSet<&'static str>>);

impl Default for CacheSync {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(Default::default()))
    }
}

impl CacheSync {
    fn mark(&self, kind: &'static str) {
        self.0.send_modify(|synced| {
            synced.insert(kind);
        });
    }

    /// Waits until every one of `kinds` is synced.
    pub async fn wait(&self, kinds: &[&str]) {
        let _ = self.0.subscribe().wait_for(|synced| kinds.iter().all(|kind| synced.contains(kind))).await;
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    /// NATS clients: the default connection, and one per distinct NatsConnection.
    pub connections: Pool,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The dead-letter forwarders of Consumers that ask for one.
    pub dead_letters: DeadLetters,
    /// What the servers hold, read in batches: lag, status figures, resync snapshots.
    pub inventory: Arc<Inventory>,
    /// What the WorkerPool scaler remembers between decisions.
    pub scale_memory: workerpool::ScaleMemory,
    /// The Deployments and HPAs pools own, as watched.
    pub owned: workerpool::OwnedStores,
    /// The kinds whose controllers have listed everything they watch.
    pub synced: CacheSync,
    /// NatsConnections and their Secrets, as watched, and who uses which.
    pub references: references::References,
    /// What the server made of the stream and consumer configurations sent to it.
    pub stream_answers: answers::Answers<async_nats::jetstream::stream::Config>,
    pub consumer_answers: answers::Answers<async_nats::jetstream::consumer::Config>,
    /// Closed while this replica's leadership is in doubt: no write goes out then.
    pub writes: crate::leader::WriteGate,
    /// One reconcile at a time converges a given JetStream object.
    claims: converge::Claims,
    events: events::Events,
    failures: Mutex<HashMap<String, usize>>,
}

impl Context {
    pub fn new(
        client: Client,
        connections: Pool,
        settings: Settings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "jetway".to_owned());
        let events = events::Events::new(client.clone(), instance, metrics.events_dropped.clone());
        let references = references::References::new(client.clone(), shutdown.child_token());
        let dead_letters = DeadLetters::new(shutdown);
        let intervals = crate::inventory::Intervals {
            lag: settings.lag_interval,
            metrics: settings.metrics_interval,
            drift: settings.resync,
        };
        let inventory = Arc::new(Inventory::new(metrics.clone(), intervals));
        Self {
            client,
            connections,
            settings,
            metrics,
            dead_letters,
            inventory,
            scale_memory: Default::default(),
            owned: Default::default(),
            synced: CacheSync::default(),
            references,
            stream_answers: Default::default(),
            consumer_answers: Default::default(),
            writes: Default::default(),
            claims: Default::default(),
            events,
            failures: Mutex::default(),
        }
    }

    /// Dereference: the connection an object names (`None`: the default one), used by
    /// `user` (the object's key) from now on.
    pub async fn connection(
        &self,
        namespace: &str,
        reference: Option<&LocalRef>,
        user: &str,
    ) -> Result<Pooled, ReconcileError> {
        let Some(reference) = reference else {
            self.connections.release(user).await;
            return Ok(self.connections.default_connection());
        };
        self.synced.wait(&[connection::KIND]).await;
        let settings =
            self.references.settings(namespace, &reference.name).await.map_err(ReconcileError::Connection)?;
        self.connections.get(user, settings).await.map_err(|e| ReconcileError::Connection(e.into()))
    }

    /// Cleanup through the connection an object names: `policy` runs with it, and the
    /// object's use of the pool ends once it succeeds. A paused object is let go with
    /// the server left exactly as it is. When the connection cannot be had, an object
    /// that must `delete` what it manages waits (retrying) rather than leak it; any
    /// other is let go, and its ownership mark, if left, names an object that no
    /// longer exists, which a new object may adopt.
    pub async fn cleanup_through<K, F, Fut>(
        &self,
        object: &K,
        reference: Option<&LocalRef>,
        delete: bool,
        policy: F,
    ) -> Result<Action, ReconcileError>
    where
        K: Resource,
        F: FnOnce(async_nats::jetstream::Context) -> Fut,
        Fut: std::future::Future<Output = Result<Action, ReconcileError>>,
    {
        let key = key(object);
        if is_paused(object) {
            tracing::info!(object = %key, "paused: deleted without touching the server");
            self.connections.release(&key).await;
            return Ok(Action::await_change());
        }
        self.may_write()?;
        let namespace = object.namespace().unwrap_or_default();
        let result = match self.connection(&namespace, reference, &key).await {
            Ok(pooled) => policy(pooled.jetstream).await,
            Err(err) if delete => return Err(err),
            Err(err) => {
                tracing::warn!(object = %key, error = %err, "the connection is gone; leaving the server as it is");
                Ok(Action::await_change())
            }
        };
        if result.is_ok() {
            self.connections.release(&key).await;
        }
        result
    }

    /// `Err(NotLeader)` while this replica may not write (its lease is in doubt).
    pub fn may_write(&self) -> Result<(), ReconcileError> {
        if self.writes.open() { Ok(()) } else { Err(ReconcileError::NotLeader) }
    }

    /// Whether the object of kind `K` that an ownership mark names (`<namespace>/<name>`)
    /// still exists; a mark left by an object since deleted binds nothing. Any doubt
    /// (a malformed mark, an error asking) counts as existing.
    pub async fn owner_exists<K>(&self, owner: &str) -> bool
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let Some((namespace, name)) = owner.split_once('/') else { return true };
        let api: kube::Api<Decoded<K>> = kube::Api::namespaced(self.client.clone(), namespace);
        !matches!(api.get_opt(name).await, Ok(None))
    }

    /// The next look at an object that is fine: the resync interval, give or take
    /// a tenth, so that a thousand objects do not all resync at once.
    pub fn resync(&self, key: &str) -> Action {
        self.failures.lock().expect("failures lock").remove(key);
        let jitter = rand::rng().random_range(0.9..1.1);
        Action::requeue(self.settings.resync.mul_f64(jitter))
    }

    /// The next try after a retryable failure: exponential per object, with jitter.
    pub fn backoff(&self, key: &str) -> Action {
        let attempt = {
            let mut failures = self.failures.lock().expect("failures lock");
            let attempt = failures.entry(key.to_owned()).or_default();
            *attempt += 1;
            *attempt
        };
        let delay = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt - 1)
            .unwrap_or(Duration::from_secs(60));
        Action::requeue(delay)
    }

    /// How soon to look again after `outcome`; `Err` asks the runner for backoff.
    /// What follows a reconcile of a `kind` object. An error the runner backs off from
    /// is returned (and counted there); one that status reports (a refusal, a missing
    /// stream or connection) is counted here, so that the errors a user sees in status
    /// are the ones the metrics count.
    pub fn next(
        &self,
        kind: &'static str,
        key: &str,
        outcome: Result<Done, ReconcileError>,
    ) -> Result<Action, ReconcileError> {
        if let Err(e) = &outcome
            && e.retry() != Retry::Backoff
        {
            self.metrics.reconcile_failed(kind, e.reason());
        }
        match outcome {
            Err(e) if e.retry() == Retry::Backoff => Err(e),
            Err(e) if e.retry() == Retry::Soon => Ok(self.soon()),
            // The spec's differences are planned once the mark is in place.
            Ok(Done::Adopted(differences)) if !differences.is_empty() => Ok(self.soon()),
            _ => Ok(self.resync(key)),
        }
    }

    fn soon(&self) -> Action {
        Action::requeue(self.settings.resync.min(Duration::from_secs(3)))
    }

    /// Events on transitions only: a change made, or a new reason for not being Ready
    /// (`previous_reason` is the Ready reason in the object's status).
    pub fn announce<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        what: &str,
        outcome: &Result<Done, ReconcileError>,
        previous_reason: Option<&str>,
    ) {
        let (warning, reason, note) = match outcome {
            Ok(Done::InSync | Done::Pending(_)) => return,
            Ok(Done::Created) => (false, "Created", format!("created {what}")),
            Ok(Done::Updated(changes)) => (false, "Updated", describe(&format!("updated {what}"), changes)),
            Ok(Done::Adopted(differences)) => {
                let what = format!("adopted {what}, changing nothing but Jetway's marks; the spec differs in");
                (false, "Adopted", describe(&what, differences))
            }
            Err(e) if previous_reason == Some(e.reason()) => return,
            Err(e) => (true, e.reason(), e.to_string()),
        };
        self.event(object, warning, reason, note);
    }

    /// Writes `status` with server-side apply, unless it equals what is there.
    pub async fn write_status<K, S>(&self, object: &K, previous: &S, status: &S) -> Result<(), ReconcileError>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize + PartialEq,
    {
        if status == previous {
            return Ok(());
        }
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&object.name_any(), &params, &kube::api::Patch::Apply(patch))
            .await
            .map_err(ReconcileError::Kube)?;
        Ok(())
    }

    /// When `outcome` is a newly found ownership conflict, tells the owning object too
    /// (same kind, named `<namespace>/<name>` by the ownership mark), so that both say why.
    pub fn tell_owner<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        outcome: &Result<Done, ReconcileError>,
        previous_reason: Option<&str>,
    ) {
        let Err(error @ ReconcileError::OwnedElsewhere(what, owner)) = outcome else { return };
        if previous_reason == Some(error.reason()) {
            return;
        }
        let Some((namespace, name)) = owner.split_once('/') else { return };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let note = format!("{} {} also declares this {what}; it is left to this object", K::kind(&()), key(object));
        self.events.publish(reference, true, "DeclaredTwice", note);
    }

    /// Queues a Kubernetes Event about `object` (see [`events`]); never waits.
    pub fn event<K: Resource<DynamicType = ()>>(&self, object: &K, warning: bool, reason: &str, note: String) {
        self.events.publish(object.object_ref(&()), warning, reason, note);
    }
}

/// `<namespace>/<name>`: how logs, backoff and the ownership mark name an object.
pub fn key<K: Resource>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// Which connection an object in `namespace` uses: empty for the operator's default,
/// `<namespace>/<name>` for a NatsConnection.
pub fn connection_id(namespace: &str, reference: Option<&LocalRef>) -> String {
    reference.map_or_else(String::new, |r| format!("{namespace}/{}", r.name))
}

pub fn is_paused<K: Resource>(object: &K) -> bool {
    object.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

/// What a successful reconcile did.
pub enum Done {
    InSync,
    Created,
    Updated(Vec<FieldChange>),
    /// Only the ownership marks were written; the spec's differences from the server
    /// are planned next.
    Adopted(Vec<FieldChange>),
    /// Observe-only mode: what would have been done.
    Pending(String),
}

/// The health an outcome stands for. The Ready reason describes the state and stays
/// put while it holds; what was done goes to Events (see [`Context::announce`]).
pub fn health(kind: &str, outcome: &Result<Done, ReconcileError>) -> Health {
    match outcome {
        Ok(Done::Adopted(differences)) if !differences.is_empty() => Health::Progressing {
            reason: "Adopted",
            message: describe(
                &format!(
                    "adopted the {kind}, changing nothing but Jetway's marks; the spec differs from the server in"
                ),
                differences,
            ),
        },
        Ok(Done::InSync | Done::Created | Done::Updated(_) | Done::Adopted(_)) => {
            Health::Ready { reason: "InSync", message: format!("the {kind} matches the spec") }
        }
        Ok(Done::Pending(what)) => Health::Progressing { reason: "ChangesPending", message: what.clone() },
        Err(e) if e.retry() == Retry::OnChange => Health::Stalled { reason: e.reason(), message: e.to_string() },
        Err(e) => Health::Progressing { reason: e.reason(), message: e.to_string() },
    }
}

/// "what: spec.a: 1 -> 2, spec.b: ..."
pub fn describe(what: &str, changes: &[FieldChange]) -> String {
    if changes.is_empty() {
        return what.to_owned();
    }
    let fields: Vec<String> = changes.iter().map(ToString::to_string).collect();
    format!("{what}: {}", fields.join(", "))
}
