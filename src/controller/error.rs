//! Why a reconcile did not reach its goal, and when to try again.

use crate::connection::{Pooled, ResolveError};
use crate::jetstream::JetStreamError;
use crate::plan::Violation;

/// When to try again after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Only a change (of the spec, or of another object) can help; look again at resync.
    OnChange,
    /// Something this object waits for may appear any moment: look again shortly.
    Soon,
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
    #[error("{}; nothing was changed. To allow it for this spec: {}", list(.0), .1)]
    WouldLoseMessages(Vec<Violation>, String),
    #[error("{}the server refused the change, and nothing was changed: {}", field_prefix(*.1), .0)]
    ServerRefused(JetStreamError, Option<&'static str>),
    #[error("{0}")]
    NatsUnavailable(JetStreamError),
    #[error("the {0} is managed by the object {1}; this object leaves it untouched")]
    OwnedElsewhere(&'static str, String),
    #[error("a {0} of this name exists without a Jetway owner and adoptionPolicy is Never; it was left untouched")]
    AdoptionRefused(&'static str),
    #[error("the stream {0} does not exist yet; the consumer is created once it does")]
    StreamNotFound(String),
    #[error("writing to Kubernetes: {0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Connection(ResolveError),
    #[error("still used by {0}; it is deleted once nothing refers to it")]
    InUse(String),
    #[error("{0}; it is looked at again shortly")]
    Conflict(String),
    #[error("this replica's leadership is in doubt (its lease renewal was not seen in time); it writes nothing")]
    NotLeader,
}

fn field_prefix(field: Option<&str>) -> String {
    field.map(|f| format!("{f}: ")).unwrap_or_default()
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
            Self::WouldLoseMessages(..) => "WouldLoseMessages",
            Self::ServerRefused(..) => "ServerRefused",
            Self::NatsUnavailable(_) => "NatsUnavailable",
            Self::OwnedElsewhere(..) => "OwnedByAnotherObject",
            Self::AdoptionRefused(_) => "AdoptionRefused",
            Self::StreamNotFound(_) => "StreamNotFound",
            Self::Connection(e) => e.reason(),
            Self::InUse(_) => "InUse",
            Self::Conflict(_) => "Conflict",
            Self::NotLeader => "NotLeader",
            Self::Kube(_) => "KubernetesApiError",
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Self::NatsUnavailable(_)
            | Self::Kube(_)
            | Self::Connection(ResolveError::SecretUnreadable { .. })
            | Self::NotLeader => Retry::Backoff,
            // A NatsConnection that appears, or a Secret that changes, wakes its users.
            Self::StreamNotFound(_) | Self::InUse(_) | Self::Conflict(_) => Retry::Soon,
            _ => Retry::OnChange,
        }
    }
}

impl ReconcileError {
    /// An unreachable NATS, explained by what the connection last reported.
    pub fn explained(self, connection: &Pooled) -> Self {
        match (self, connection.problem()) {
            (Self::NatsUnavailable(JetStreamError::Unavailable(what)), Some(problem)) => {
                Self::NatsUnavailable(JetStreamError::Unavailable(format!("{what}; the connection reports: {problem}")))
            }
            (other, _) => other,
        }
    }

    /// A refusal named by the spec field its error code is about (`field_of` maps codes).
    pub fn at_field(self, field_of: fn(u64) -> Option<&'static str>) -> Self {
        match self {
            Self::ServerRefused(error @ JetStreamError::Refused { code, .. }, None) => {
                let field = field_of(code);
                Self::ServerRefused(error, field)
            }
            other => other,
        }
    }
}

impl From<JetStreamError> for ReconcileError {
    fn from(error: JetStreamError) -> Self {
        match error {
            JetStreamError::Refused { .. } => Self::ServerRefused(error, None),
            JetStreamError::Unavailable(_) => Self::NatsUnavailable(error),
        }
    }
}

/// The error a controller stream reports; logged by the runner.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(#[from] pub kube::runtime::finalizer::Error<ReconcileError>);
