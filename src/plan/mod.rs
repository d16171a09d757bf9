//! Pure planning: what Jetway would do to make the server match a spec. No clients,
//! no awaits, no clock; the controllers feed in what they observed and execute the plan.

pub mod consumer;
pub mod loss;
pub mod scale;
pub mod stream;

use std::fmt;

use serde_json::Value;

/// The metadata key that marks a JetStream object as managed by one Jetway object,
/// `<namespace>/<name>`.
pub const OWNER_KEY: &str = "jetway.dev/owner";
/// The prefix of every metadata key Jetway writes for itself.
pub const MARK_PREFIX: &str = "jetway.dev/";
/// The server's own metadata keys, which it adds and Jetway leaves alone.
pub const SERVER_METADATA_PREFIX: &str = "_nats.";

/// What to do to make one JetStream object (a stream, a consumer) match its spec,
/// `C` being its server configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan<C> {
    /// The server matches the spec.
    InSync,
    Create {
        config: C,
    },
    /// Bring the server's object, which Jetway manages, to `config`.
    Update {
        config: C,
        changes: Vec<FieldChange>,
    },
    /// The object exists without an owner: `config` is the server's own configuration
    /// with nothing but Jetway's marks added, so that adopting changes nothing by
    /// itself. `differences` are where the spec differs from the server; they are
    /// planned, as updates, once the mark is in place.
    Adopt {
        config: C,
        differences: Vec<FieldChange>,
    },
    /// Changes the server would refuse; nothing is sent.
    Refused {
        violations: Vec<Violation>,
    },
    /// Changes that would remove messages the stream holds, without consent; nothing
    /// is sent.
    WouldLoseMessages {
        violations: Vec<Violation>,
    },
    /// Another Jetway object manages it.
    OwnedElsewhere {
        owner: String,
    },
    /// It exists without an owner and the adoption policy is `Never`.
    AdoptionRefused,
}

impl<C> Plan<C> {
    /// What the plan does, in a word, for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::InSync => "in-sync",
            Plan::Create { .. } => "create",
            Plan::Update { .. } => "update",
            Plan::Adopt { .. } => "adopt",
            Plan::Refused { .. } => "refused",
            Plan::WouldLoseMessages { .. } => "would-lose-messages",
            Plan::OwnedElsewhere { .. } => "owned-elsewhere",
            Plan::AdoptionRefused => "adoption-refused",
        }
    }
}

/// Whose an observed object is, from its ownership mark, for the object `owner` with
/// `adoption` policy: `Ok(true)` to adopt, `Ok(false)` when it is already this
/// object's, and the plan to stop at otherwise.
pub fn claim<C>(
    mark: Option<&String>,
    owner: &str,
    adoption: crate::api::stream::AdoptionPolicy,
) -> Result<bool, Plan<C>> {
    match mark {
        Some(mark) if mark == owner => Ok(false),
        Some(mark) => Err(Plan::OwnedElsewhere { owner: mark.clone() }),
        None if adoption == crate::api::stream::AdoptionPolicy::Never => Err(Plan::AdoptionRefused),
        None => Ok(true),
    }
}

/// One field the plan changes on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// Where the field is in the spec, such as `spec.maxAge`.
    pub field: &'static str,
    /// The server's value, as JSON.
    pub from: String,
    /// The value it will have, as JSON.
    pub to: String,
}

/// A reason the plan refuses to touch the server, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.from, self.to)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An RFC 3339 time, in UTC as the server stores it; a violation at `field` otherwise.
/// Read as strictly as the CRD's CEL `timestamp()` reads it: an upper-case `T` and
/// `Z`, at most nine fraction digits, a year from 0001.
pub(crate) fn parse_time(text: &str, field: &str, violations: &mut Vec<Violation>) -> Option<time::OffsetDateTime> {
    let bytes = text.as_bytes();
    let fraction = match bytes.get(19) {
        Some(b'.') => bytes[20..].iter().take_while(|b| b.is_ascii_digit()).count(),
        _ => 0,
    };
    let strict = bytes.get(10) == Some(&b'T') && !text.ends_with('z') && !text.starts_with("0000") && fraction <= 9;
    strict
        .then(|| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok())
        .flatten()
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .or_else(|| {
            let why = format!("{text:?} is not an RFC 3339 time such as 2025-01-31T12:00:00Z");
            violations.push(Violation::new(field, why));
            None
        })
}

/// How the server judges a change of one field.
#[derive(Clone, Copy)]
pub enum Rule {
    Mutable,
    /// The server refuses any change.
    Fixed(&'static str),
    /// Once turned on, the server refuses to turn it off.
    OneWay(&'static str),
    /// The server refuses some changes: returns why, for (server value, desired value).
    Refuse(fn(&Value, &Value) -> Option<&'static str>),
}

impl Rule {
    /// Why the server would refuse changing `from` (its value) to `to`, if it would.
    pub fn judge(self, from: &Value, to: &Value) -> Option<&'static str> {
        if from == to {
            return None;
        }
        match self {
            Self::Mutable => None,
            Self::Fixed(why) => Some(why),
            Self::OneWay(why) => (from == &Value::Bool(true)).then_some(why),
            Self::Refuse(check) => check(from, to),
        }
    }
}

/// A violation at `field` unless `text` is a subject (a literal one without `wildcards`).
pub(crate) fn check_subject(text: &str, wildcards: bool, field: &str, violations: &mut Vec<Violation>) {
    if !crate::api::subject::is_subject(text, wildcards) {
        let what = if wildcards { "a subject" } else { "a subject without wildcards" };
        violations.push(Violation::new(
            field,
            format!(
                "{text:?} is not {what}: dot-separated tokens, none empty, no spaces, * for one whole token, > last"
            ),
        ));
    }
}
