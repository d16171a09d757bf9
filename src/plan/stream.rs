//! Stream planning: a `Stream` spec and what the server reports become a [`StreamPlan`].
//!
//! The spec is first turned into the full server configuration it stands for
//! ([`DesiredStream::from_spec`]): fields the user set, and the server's default for
//! every other field, so that a field removed from the spec goes back to its default.
//! The plan then compares that with the observed configuration field by field, in the
//! server's own JSON form, and refuses what the server would refuse to change.
//!
//! One exception to "unset means the server's default": a stream Jetway adopted keeps
//! the values it had for the fields the spec left unset then (its subjects, sources,
//! placement, replicas, limits, ...). Adopting writes only the ownership mark and the
//! list of those fields ([`ADOPTED_KEY`]); each stays as the server has it until the
//! spec names it. Once named, a field is the spec's, and unsetting it later means the
//! default again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::stream::Config;
use serde_json::{Value, json};

use super::loss::{Contents, messages_lost};
use super::{FieldChange, MARK_PREFIX, Plan, Rule, SERVER_METADATA_PREFIX, Violation, claim};
use crate::api::stream::AdoptionPolicy;

pub use super::OWNER_KEY;
/// The stream metadata key listing the fields whose adopted values are kept while
/// the spec leaves them unset (server keys, comma-separated).
pub const ADOPTED_KEY: &str = "jetway.dev/adopted-fields";
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

pub type StreamPlan = Plan<Config>;

/// The stream a spec stands for, every field resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredStream {
    pub config: Config,
    /// `<namespace>/<name>` of the object that declares it.
    pub owner: String,
    pub adoption: AdoptionPolicy,
    /// Server keys whose value the server chooses for this spec: never compared, and
    /// sent back as the server has them.
    pub server_chosen: Vec<&'static str>,
    /// The server keys the spec names; the others take their default, or their
    /// adopted value.
    pub named: BTreeSet<&'static str>,
    /// The user consented to this spec removing messages the stream holds.
    pub loss_allowed: bool,
}

/// What the server reported about the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedStream {
    pub config: Config,
    pub contents: Contents,
}

struct Field {
    /// The key in the server's configuration JSON.
    key: &'static str,
    /// Where the user sets it.
    spec: &'static str,
    /// The server's value when the key is absent, as JSON.
    default: &'static str,
    rule: Rule,
}

const fn field(key: &'static str, spec: &'static str, default: &'static str, rule: Rule) -> Field {
    Field { key, spec, default, rule }
}

/// A mirror can be removed (the stream becomes an ordinary one), never added or changed.
fn mirror_change(_from: &Value, to: &Value) -> Option<&'static str> {
    (!to.is_null()).then_some("a mirror cannot be added to an existing stream, nor changed; it can only be removed")
}

fn workqueue_either_side(from: &Value, to: &Value) -> Option<&'static str> {
    (from == "workqueue" || to == "workqueue").then_some("retention cannot change to or from workqueue")
}

/// Every stream configuration field Jetway manages.
const FIELDS: &[Field] = &[
    field("description", "spec.description", r#""""#, Rule::Mutable),
    field("subjects", "spec.subjects", "[]", Rule::Mutable),
    field("retention", "spec.retention", r#""limits""#, Rule::Refuse(workqueue_either_side)),
    field("max_consumers", "spec.maxConsumers", "-1", Rule::Mutable),
    field("max_msgs", "spec.maxMsgs", "-1", Rule::Mutable),
    field("max_bytes", "spec.maxBytes", "-1", Rule::Mutable),
    field("max_age", "spec.maxAge", "0", Rule::Mutable),
    field("max_msgs_per_subject", "spec.maxMsgsPerSubject", "-1", Rule::Mutable),
    field("max_msg_size", "spec.maxMsgSize", "-1", Rule::Mutable),
    field("discard", "spec.discard", r#""old""#, Rule::Mutable),
    field("storage", "spec.storage", r#""file""#, Rule::Fixed("storage cannot change once the stream exists")),
    field("num_replicas", "spec.replicas", "1", Rule::Mutable),
    field("no_ack", "spec.noAck", "false", Rule::Mutable),
    field("duplicate_window", "spec.duplicateWindow", "120000000000", Rule::Mutable),
    field("placement", "spec.placement", "null", Rule::Mutable),
    field("mirror", "spec.mirror", "null", Rule::Refuse(mirror_change)),
    field("sources", "spec.sources", "[]", Rule::Mutable),
    field("sealed", "spec.sealed", "false", Rule::OneWay("a sealed stream cannot be unsealed")),
    field("deny_delete", "spec.denyDelete", "false", Rule::OneWay("denying deletes cannot be turned off")),
    field("deny_purge", "spec.denyPurge", "false", Rule::OneWay("denying purges cannot be turned off")),
    field("allow_rollup_hdrs", "spec.allowRollup", "false", Rule::Mutable),
    field("allow_direct", "spec.allowDirect", "false", Rule::Mutable),
    field("mirror_direct", "spec.mirrorDirect", "false", Rule::Mutable),
    field("discard_new_per_subject", "spec.discardPerSubject", "false", Rule::Mutable),
    field("republish", "spec.republish", "null", Rule::Mutable),
    field("metadata", "spec.metadata", "{}", Rule::Mutable),
    field("subject_transform", "spec.subjectTransform", "null", Rule::Mutable),
    field("compression", "spec.compression", r#""none""#, Rule::Mutable),
    field("consumer_limits", "spec.consumerLimits", "null", Rule::Mutable),
    field(
        "first_seq",
        "spec.firstSequence",
        "0",
        Rule::Fixed(
            "firstSequence only takes effect when the stream is created; the server would keep it and ignore it",
        ),
    ),
    field(
        "persist_mode",
        "spec.persistMode",
        r#""default""#,
        Rule::Fixed("the persist mode cannot change once the stream exists"),
    ),
    field(
        "allow_msg_ttl",
        "spec.allowMsgTtl",
        "false",
        Rule::OneWay("per-message TTLs cannot be turned off once allowed"),
    ),
    field("subject_delete_marker_ttl", "spec.subjectDeleteMarkerTtl", "null", Rule::Mutable),
    field("allow_atomic", "spec.allowAtomicPublish", "false", Rule::Mutable),
    field(
        "allow_msg_schedules",
        "spec.allowMsgSchedules",
        "false",
        Rule::OneWay("message schedules cannot be turned off once allowed"),
    ),
    field(
        "allow_msg_counter",
        "spec.allowMsgCounter",
        "false",
        Rule::Fixed("a stream cannot become a counter, nor stop being one, once it exists"),
    ),
    field("allow_batched", "spec.allowBatched", "false", Rule::Mutable),
];

/// The configuration in the server's JSON form, one comparable value per managed field.
fn normalized(config: &Config) -> BTreeMap<&'static str, Value> {
    let json = serde_json::to_value(config).unwrap_or_default();
    FIELDS
        .iter()
        .map(|f| {
            let mut value = json.get(f.key).cloned().unwrap_or(Value::Null);
            if let (Value::Object(map), "metadata") = (&mut value, f.key) {
                // Jetway's marks are compared apart; the server's keys are its own.
                map.retain(|k, _| !k.starts_with(MARK_PREFIX) && !k.starts_with(SERVER_METADATA_PREFIX));
            }
            let empty = value.is_null() || value == json!({}) || value == json!([]);
            if empty {
                value = serde_json::from_str(f.default).unwrap_or_default();
            }
            (f.key, value)
        })
        .collect()
}

/// The `<namespace>/<name>` of the object that owns a stream, from its metadata.
pub fn owner_of(config: &Config) -> Option<&str> {
    config.metadata.get(OWNER_KEY).map(String::as_str)
}

/// The stream's configuration without Jetway's marks (and without the server's own
/// metadata, which it sets itself), for a stream that is retained.
pub fn released(observed: &ObservedStream) -> Config {
    let mut config = observed.config.clone();
    config.metadata.retain(|k, _| !k.starts_with(MARK_PREFIX) && !k.starts_with(SERVER_METADATA_PREFIX));
    config
}

/// The fields whose adopted value the stream keeps, from its mark.
fn adopted(config: &Config) -> BTreeSet<String> {
    let list = config.metadata.get(ADOPTED_KEY).map_or("", String::as_str);
    list.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect()
}

/// The configuration without the server's own metadata keys, which it sets itself.
pub fn without_server_metadata(config: &Config) -> Config {
    let mut config = config.clone();
    config.metadata.retain(|k, _| !k.starts_with(SERVER_METADATA_PREFIX));
    config
}

/// The fields the server stored otherwise than `sent` asked, as changes from the
/// spec's value to the server's.
pub fn rewritten(sent: &Config, stored: &Config) -> Vec<FieldChange> {
    let (asked, kept) = (normalized(sent), normalized(stored));
    FIELDS
        .iter()
        .filter(|f| asked[f.key] != kept[f.key])
        .map(|f| FieldChange { field: f.spec, from: asked[f.key].to_string(), to: kept[f.key].to_string() })
        .collect()
}

/// The stream fields as (server key, spec path), in the planner's order.
pub fn fields() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIELDS.iter().map(|f| (f.key, f.spec))
}

/// Why the server refuses changing the stream field `key` from `from` to `to` (server
/// JSON values, absent as null), if the planner believes it does.
pub fn refusal(key: &str, from: &Value, to: &Value) -> Option<&'static str> {
    let field = FIELDS.iter().find(|f| f.key == key)?;
    let value =
        |v: &Value| if v.is_null() { serde_json::from_str(field.default).unwrap_or_default() } else { v.clone() };
    field.rule.judge(&value(from), &value(to))
}

/// The spec field a JetStream error code of a stream request is about, where the
/// code names one.
pub fn field_of_error(code: u64) -> Option<&'static str> {
    Some(match code {
        10034 | 10065 => "spec.subjects",
        10055 => "spec.mirror",
        10058 => "spec.name",
        10074 => "spec.replicas",
        10122 => "spec.maxBytes",
        10123 => "spec.placement",
        10143 => "spec.firstSequence",
        10144 => "spec.sources",
        10173 => "spec.allowMsgCounter",
        10186 | 10187 => "spec.allowMsgSchedules",
        10198 => "spec.allowAtomicPublish",
        10209 => "spec.allowBatched",
        _ => return None,
    })
}

/// `config` with the server's values of `keys` taken from `observed`.
fn with_server_choices(config: &Config, observed: &Config, keys: &[&str]) -> Config {
    if keys.is_empty() {
        return config.clone();
    }
    let (Ok(Value::Object(mut json)), Ok(Value::Object(server))) =
        (serde_json::to_value(config), serde_json::to_value(observed))
    else {
        return config.clone();
    };
    for key in keys {
        match server.get(*key) {
            Some(value) => json.insert((*key).to_owned(), value.clone()),
            None => json.remove(*key),
        };
    }
    serde_json::from_value(Value::Object(json)).unwrap_or_else(|_| config.clone())
}

/// What to do to make the server's stream match `desired`.
pub fn plan_stream(desired: &DesiredStream, observed: Option<&ObservedStream>) -> StreamPlan {
    let Some(observed) = observed else {
        // The server creates no sealed stream: it is sealed right after.
        let config = Config { sealed: false, ..desired.config.clone() };
        return Plan::Create { config };
    };
    let adopting = match claim(observed.config.metadata.get(OWNER_KEY), &desired.owner, desired.adoption) {
        Ok(adopting) => adopting,
        Err(plan) => return plan,
    };
    let (mut want, have) = (normalized(&desired.config), normalized(&observed.config));
    // A field the spec leaves unset keeps the value the stream had when it was
    // adopted: each that differs from the spec's default at adoption, and later
    // those still in the mark.
    let kept_before = adopted(&observed.config);
    let kept: Vec<&'static str> = FIELDS
        .iter()
        .map(|f| f.key)
        .filter(|k| !desired.named.contains(k))
        .filter(|k| if adopting { have[k] != want[k] } else { kept_before.contains(*k) })
        .collect();
    for key in desired.server_chosen.iter().chain(&kept) {
        want.insert(key, have[key].clone());
    }
    let mut changes = Vec::new();
    let mut violations = Vec::new();
    for field in FIELDS {
        let (to, from) = (&want[field.key], &have[field.key]);
        if to == from {
            continue;
        }
        if let Some(why) = field.rule.judge(from, to) {
            violations.push(Violation::new(
                field.spec,
                format!("{why} (the server has {from}, the spec asks for {to}); nothing was changed"),
            ));
        }
        changes.push(FieldChange { field: field.spec, from: from.to_string(), to: to.to_string() });
    }
    let kept_list = kept.join(",");
    let with_marks = |mut config: Config| {
        config.metadata.retain(|k, _| !k.starts_with(MARK_PREFIX) && !k.starts_with(SERVER_METADATA_PREFIX));
        config.metadata.insert(OWNER_KEY.to_owned(), desired.owner.clone());
        if !kept_list.is_empty() {
            config.metadata.insert(ADOPTED_KEY.to_owned(), kept_list.clone());
        }
        config
    };
    if adopting {
        // Only the marks: what the spec would change is planned once the stream is ours.
        return Plan::Adopt { config: with_marks(observed.config.clone()), differences: changes };
    }
    if !violations.is_empty() {
        return Plan::Refused { violations };
    }
    let mark_changed = observed.config.metadata.get(ADOPTED_KEY).map_or("", String::as_str) != kept_list;
    if changes.is_empty() && !mark_changed {
        return Plan::InSync;
    }
    let mut config =
        with_server_choices(&desired.config, &observed.config, &[&desired.server_chosen[..], &kept].concat());
    if want["placement"] == have["placement"] {
        // Sent back exactly as the server has it: a placement that merely looks
        // different next to a replicas change is refused as "move and scale".
        config.placement = observed.config.placement.clone();
    }
    let lost = messages_lost(&config, &observed.config, &observed.contents);
    if !lost.is_empty() && !desired.loss_allowed {
        return Plan::WouldLoseMessages { violations: lost };
    }
    Plan::Update { config: with_marks(config), changes }
}

mod server;
mod spec;
#[cfg(test)]
mod tests;
