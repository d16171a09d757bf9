//! The controllers: one file per kind, each a short driver around the pure planner.
//! This module holds what they share: the context, error classification, backoff,
//! requeue timing and status writes.

pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;

use crate::jetstream::JetStreamError;
use crate::metrics::Metrics;
use crate::plan::Violation;

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
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    /// The default connection's JetStream API.
    pub jetstream: async_nats::jetstream::Context,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    failures: Mutex<HashMap<String, usize>>,
}

impl Context {
    pub fn new(
        client: Client,
        jetstream: async_nats::jetstream::Context,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter { controller: "jetway".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, jetstream, settings, metrics, recorder, failures: Mutex::default() }
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

    /// Publishes a Kubernetes Event about `object`; a failure to publish is logged only.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, object: &K, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %err, "publishing an event");
        }
    }
}

/// `<namespace>/<name>`: how logs, backoff and the ownership mark name an object.
pub fn key<K: Resource>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

pub fn is_paused<K: Resource>(object: &K) -> bool {
    object.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

/// When to try again after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Only a change (of the spec, or of another object) can help; look again at resync.
    OnChange,
    /// A server is unreachable or overloaded: exponential backoff.
    Backoff,
}

/// Why a reconcile did not reach its goal.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the spec is invalid: {}", list(.0))]
    InvalidSpec(Vec<Violation>),
    #[error("{}", list(.0))]
    ChangeRefused(Vec<Violation>),
    #[error("the server refused the change, and nothing was changed: {0}")]
    ServerRefused(JetStreamError),
    #[error("{0}")]
    NatsUnavailable(JetStreamError),
    #[error("the JetStream stream is managed by the Stream object {0}; this object leaves it untouched")]
    OwnedElsewhere(String),
    #[error("a stream of this name exists without a Jetway owner and adoptionPolicy is Never; it was left untouched")]
    AdoptionRefused,
    #[error("writing to Kubernetes: {0}")]
    Kube(#[source] kube::Error),
}

fn list(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ReconcileError {
    /// A PascalCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::ChangeRefused(_) => "ChangeRefused",
            Self::ServerRefused(_) => "ServerRefused",
            Self::NatsUnavailable(_) => "NatsUnavailable",
            Self::OwnedElsewhere(_) => "OwnedByAnotherObject",
            Self::AdoptionRefused => "AdoptionRefused",
            Self::Kube(_) => "KubernetesApiError",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Self::NatsUnavailable(_) | Self::Kube(_) => Retry::Backoff,
            _ => Retry::OnChange,
        }
    }
}

impl From<JetStreamError> for ReconcileError {
    fn from(error: JetStreamError) -> Self {
        match error {
            JetStreamError::Refused { .. } => Self::ServerRefused(error),
            JetStreamError::Unavailable(_) => Self::NatsUnavailable(error),
        }
    }
}

/// The error a controller stream reports; logged by the runner.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(#[from] pub kube::runtime::finalizer::Error<ReconcileError>);
