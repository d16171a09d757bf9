//! Consumer planning. Only the fields a spec sets are managed: they are compared with
//! the server and set; a field the spec set before (recorded in the consumer's
//! metadata) and no longer sets goes back to the server's default; every other field
//! is left as the server has it. Consumer defaults depend on other fields (ack policy,
//! the stream's limits), so Jetway lets the server choose them.

use std::collections::{BTreeSet, HashMap};

use async_nats::jetstream::consumer::{self as js, Config};
use serde_json::{Map, Value};

use super::{
    FieldChange, MARK_PREFIX, OWNER_KEY, Plan, Rule, SERVER_METADATA_PREFIX, Violation, check_subject, claim,
    parse_time,
};
use crate::api::GoDuration;
use crate::api::consumer::{self as api, ConsumerSpec};
use crate::api::stream::AdoptionPolicy;

/// The consumer metadata key listing the fields Jetway set.
pub const MANAGED_KEY: &str = "jetway.dev/managed-fields";

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredConsumer {
    pub stream: String,
    pub config: Config,
    /// The server keys the spec sets.
    pub managed: BTreeSet<&'static str>,
    pub owner: String,
    pub adoption: AdoptionPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObservedConsumer {
    pub config: Config,
}

pub type ConsumerPlan = Plan<Config>;

/// (server key, spec path, rule). The server's JSON keys a spec field stands for.
const FIELDS: &[(&str, &str, Rule)] = &[
    ("description", "spec.description", Rule::Mutable),
    ("deliver_policy", "spec.deliverPolicy", Rule::Fixed("deliverPolicy cannot change once the consumer exists")),
    ("opt_start_seq", "spec.optStartSeq", Rule::Fixed("optStartSeq cannot change once the consumer exists")),
    ("opt_start_time", "spec.optStartTime", Rule::Fixed("optStartTime cannot change once the consumer exists")),
    ("ack_policy", "spec.ackPolicy", Rule::Fixed("ackPolicy cannot change once the consumer exists")),
    ("ack_wait", "spec.ackWait", Rule::Mutable),
    ("max_deliver", "spec.maxDeliver", Rule::Mutable),
    ("backoff", "spec.backoff", Rule::Mutable),
    ("filter_subject", "spec.filterSubject", Rule::Mutable),
    ("filter_subjects", "spec.filterSubjects", Rule::Mutable),
    ("replay_policy", "spec.replayPolicy", Rule::Fixed("replayPolicy cannot change once the consumer exists")),
    ("rate_limit_bps", "spec.rateLimitBps", Rule::Mutable),
    ("sample_freq", "spec.sampleFreq", Rule::Mutable),
    ("max_ack_pending", "spec.maxAckPending", Rule::Mutable),
    ("max_waiting", "spec.maxWaiting", Rule::Fixed("maxWaiting cannot change once the consumer exists")),
    ("headers_only", "spec.headersOnly", Rule::Mutable),
    ("flow_control", "spec.flowControl", Rule::Fixed("flowControl cannot change once the consumer exists")),
    (
        "idle_heartbeat",
        "spec.heartbeatInterval",
        Rule::Fixed("heartbeatInterval cannot change once the consumer exists"),
    ),
    ("deliver_subject", "spec.deliverSubject", Rule::Refuse(push_pull_switch)),
    ("deliver_group", "spec.deliverGroup", Rule::Mutable),
    ("max_batch", "spec.maxRequestBatch", Rule::Mutable),
    ("max_expires", "spec.maxRequestExpires", Rule::Mutable),
    ("max_bytes", "spec.maxRequestMaxBytes", Rule::Mutable),
    ("inactive_threshold", "spec.inactiveThreshold", Rule::Mutable),
    ("num_replicas", "spec.replicas", Rule::Mutable),
    ("mem_storage", "spec.memStorage", Rule::Fixed("memStorage cannot change once the consumer exists")),
    ("metadata", "spec.metadata", Rule::Mutable),
    ("pause_until", "spec.pauseUntil", Rule::Mutable),
    ("priority_policy", "spec.priorityPolicy", Rule::Mutable),
    ("priority_timeout", "spec.pinnedTtl", Rule::Mutable),
    ("priority_groups", "spec.priorityGroups", Rule::Mutable),
];

fn push_pull_switch(from: &Value, to: &Value) -> Option<&'static str> {
    (from.is_null() != to.is_null()).then_some("a pull consumer cannot become a push consumer, nor the other way round")
}

impl DesiredConsumer {
    pub fn from_spec(spec: &ConsumerSpec, object_name: &str, owner: &str) -> Result<Self, Vec<Violation>> {
        let mut violations = Vec::new();
        let mut managed = BTreeSet::new();
        let mut set = |key: &'static str, present: bool| {
            if present {
                managed.insert(key);
            }
        };
        // Zero asks for the server's default, which depends on the stream and the ack
        // policy: the server chooses, as for an unset field.
        let nonzero = |d: Option<GoDuration>| d.is_some_and(|d| !d.0.is_zero());
        set("description", spec.description.is_some());
        set("deliver_policy", spec.deliver_policy.is_some());
        set("opt_start_seq", spec.opt_start_seq.is_some());
        set("opt_start_time", spec.opt_start_time.is_some());
        set("ack_policy", spec.ack_policy.is_some());
        set("ack_wait", nonzero(spec.ack_wait));
        set("max_deliver", spec.max_deliver.is_some());
        set("backoff", spec.backoff.is_some());
        set("filter_subject", spec.filter_subject.is_some());
        set("filter_subjects", spec.filter_subjects.is_some());
        set("replay_policy", spec.replay_policy.is_some());
        set("rate_limit_bps", spec.rate_limit_bps.is_some());
        set("sample_freq", spec.sample_freq.is_some());
        set("max_ack_pending", spec.max_ack_pending.is_some_and(|n| n != 0));
        set("max_waiting", spec.max_waiting.is_some_and(|n| n != 0));
        set("headers_only", spec.headers_only.is_some());
        set("flow_control", spec.flow_control.is_some());
        set("idle_heartbeat", spec.heartbeat_interval.is_some());
        set("deliver_subject", spec.deliver_subject.is_some());
        set("deliver_group", spec.deliver_group.is_some());
        set("max_batch", spec.max_request_batch.is_some());
        set("max_expires", spec.max_request_expires.is_some());
        set("max_bytes", spec.max_request_max_bytes.is_some());
        set("inactive_threshold", nonzero(spec.inactive_threshold));
        set("num_replicas", spec.replicas.is_some());
        set("mem_storage", spec.mem_storage.is_some());
        set("metadata", spec.metadata.is_some());
        set("pause_until", spec.pause_until.is_some());
        set("priority_policy", spec.priority_policy.is_some());
        set("priority_timeout", nonzero(spec.pinned_ttl));
        set("priority_groups", spec.priority_groups.is_some());

        let durable = spec.durable_name.clone().unwrap_or_else(|| object_name.to_owned());
        let deliver_policy = match spec.deliver_policy {
            None | Some(api::DeliverPolicy::All) => js::DeliverPolicy::All,
            Some(api::DeliverPolicy::Last) => js::DeliverPolicy::Last,
            Some(api::DeliverPolicy::New) => js::DeliverPolicy::New,
            Some(api::DeliverPolicy::LastPerSubject) => js::DeliverPolicy::LastPerSubject,
            Some(api::DeliverPolicy::ByStartSequence) => {
                js::DeliverPolicy::ByStartSequence { start_sequence: spec.opt_start_seq.unwrap_or_default() }
            }
            Some(api::DeliverPolicy::ByStartTime) => {
                let text = spec.opt_start_time.as_deref().unwrap_or_default();
                let start_time =
                    parse_time(text, "spec.optStartTime", &mut violations).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                js::DeliverPolicy::ByStartTime { start_time }
            }
        };
        let pause_until = spec.pause_until.as_deref().and_then(|t| parse_time(t, "spec.pauseUntil", &mut violations));
        let sample_frequency = match spec.sample_freq.as_deref().map(|s| s.trim_end_matches('%').parse::<u8>()) {
            None => 0,
            Some(Ok(percent)) if percent <= 100 => percent,
            Some(_) => {
                violations.push(Violation::new("spec.sampleFreq", "must be a percentage from 0 to 100"));
                0
            }
        };
        for (field, subject) in spec.filter_subject.iter().map(|s| ("spec.filterSubject".to_owned(), s)).chain(
            spec.filter_subjects.iter().flatten().enumerate().map(|(i, s)| (format!("spec.filterSubjects[{i}]"), s)),
        ) {
            check_subject(subject, true, &field, &mut violations);
        }
        if let Some(deliver) = &spec.deliver_subject {
            check_subject(deliver, false, "spec.deliverSubject", &mut violations);
        }
        if !crate::api::subject::is_subject(&spec.stream_name, false) || spec.stream_name.contains('.') {
            violations.push(Violation::new("spec.streamName", "a stream name is one token: no dots, spaces, * or >"));
        }
        let mut metadata: HashMap<String, String> = spec.metadata.clone().unwrap_or_default().into_iter().collect();
        if metadata.keys().any(|k| k.starts_with(MARK_PREFIX) || k.starts_with(SERVER_METADATA_PREFIX)) {
            violations.push(Violation::new("spec.metadata", "keys starting with jetway.dev/ or _nats. are reserved"));
        }
        metadata.insert(OWNER_KEY.to_owned(), owner.to_owned());
        metadata.insert(MANAGED_KEY.to_owned(), managed.iter().copied().collect::<Vec<_>>().join(","));
        let config = Config {
            durable_name: Some(durable.clone()),
            name: Some(durable),
            description: spec.description.clone(),
            deliver_subject: spec.deliver_subject.clone(),
            deliver_group: spec.deliver_group.clone(),
            deliver_policy,
            ack_policy: match spec.ack_policy {
                None | Some(api::AckPolicy::Explicit) => js::AckPolicy::Explicit,
                Some(api::AckPolicy::All) => js::AckPolicy::All,
                Some(api::AckPolicy::None) => js::AckPolicy::None,
            },
            // With a backoff the server waits its first step for the first ack.
            ack_wait: spec
                .backoff
                .as_ref()
                .and_then(|b| b.first())
                .or(spec.ack_wait.as_ref())
                .map(|d| d.0)
                .unwrap_or_default(),
            // 0 and unset both mean unlimited, which the server writes as -1.
            max_deliver: spec.max_deliver.filter(|n| *n > 0).unwrap_or(-1),
            filter_subject: spec.filter_subject.clone().unwrap_or_default(),
            filter_subjects: spec.filter_subjects.clone().unwrap_or_default(),
            replay_policy: match spec.replay_policy {
                None | Some(api::ReplayPolicy::Instant) => js::ReplayPolicy::Instant,
                Some(api::ReplayPolicy::Original) => js::ReplayPolicy::Original,
            },
            rate_limit: spec.rate_limit_bps.unwrap_or_default(),
            sample_frequency,
            max_waiting: spec.max_waiting.unwrap_or_default(),
            max_ack_pending: spec.max_ack_pending.unwrap_or_default(),
            headers_only: spec.headers_only.unwrap_or_default(),
            flow_control: spec.flow_control.unwrap_or_default(),
            idle_heartbeat: spec.heartbeat_interval.map(|d| d.0).unwrap_or_default(),
            max_batch: spec.max_request_batch.unwrap_or_default(),
            max_bytes: spec.max_request_max_bytes.unwrap_or_default(),
            max_expires: spec.max_request_expires.map(|d| d.0).unwrap_or_default(),
            inactive_threshold: spec.inactive_threshold.map(|d| d.0).unwrap_or_default(),
            num_replicas: usize::try_from(spec.replicas.unwrap_or_default()).unwrap_or_default(),
            memory_storage: spec.mem_storage.unwrap_or_default(),
            metadata,
            backoff: spec.backoff.iter().flatten().map(|d| d.0).collect(),
            priority_policy: match spec.priority_policy {
                None | Some(api::PriorityPolicy::None) => js::PriorityPolicy::None,
                Some(api::PriorityPolicy::PinnedClient) => js::PriorityPolicy::PinnedClient,
                Some(api::PriorityPolicy::Overflow) => js::PriorityPolicy::Overflow,
                Some(api::PriorityPolicy::Prioritized) => js::PriorityPolicy::Prioritized,
            },
            priority_groups: spec.priority_groups.clone().unwrap_or_default(),
            priority_timeout: spec.pinned_ttl.map(|d| d.0).unwrap_or_default(),
            pause_until,
        };
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            stream: spec.stream_name.clone(),
            config,
            managed,
            owner: owner.to_owned(),
            adoption: spec.adoption_policy.unwrap_or(AdoptionPolicy::Adopt),
        })
    }

    pub fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }
}

/// The configuration as the server's JSON object.
fn json(config: &Config) -> Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A value as compared: absent, null, false, 0, "" and empty collections are one,
/// and only the user's metadata keys count.
pub fn comparable(key: &str, value: Option<&Value>) -> Value {
    let mut value = value.cloned().unwrap_or(Value::Null);
    if let (Value::Object(map), "metadata") = (&mut value, key) {
        map.retain(|k, _| !k.starts_with(MARK_PREFIX) && !k.starts_with(SERVER_METADATA_PREFIX));
    }
    if matches!(key, "pause_until" | "opt_start_time") {
        // One instant, whatever offset it was written with.
        let utc = value.as_str().and_then(|text| parse_time(text, key, &mut Vec::new()));
        if let Some(Ok(text)) = utc.map(|t| t.format(&time::format_description::well_known::Rfc3339)) {
            value = Value::String(text);
        }
    }
    let empty = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if empty { Value::Null } else { value }
}

fn previously_managed(config: &Config) -> BTreeSet<String> {
    config
        .metadata
        .get(MANAGED_KEY)
        .map(|list| list.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The consumer's configuration without Jetway's marks (owner and managed fields)
/// and the server's own metadata, for a consumer that is retained.
pub fn released(observed: &ObservedConsumer) -> Config {
    let mut config = observed.config.clone();
    config.metadata.retain(|k, _| !k.starts_with(MARK_PREFIX) && !k.starts_with(SERVER_METADATA_PREFIX));
    config
}

/// The consumer fields as (server key, spec path), in the planner's order.
pub fn fields() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIELDS.iter().map(|(key, spec, _)| (*key, *spec))
}

/// Why the server refuses changing the consumer field `key` from `from` to `to`
/// (server JSON values), if the planner believes it does.
pub fn refusal(key: &str, from: &Value, to: &Value) -> Option<&'static str> {
    let (_, _, rule) = FIELDS.iter().find(|(k, ..)| *k == key)?;
    rule.judge(&comparable(key, Some(from)), &comparable(key, Some(to)))
}

/// The spec field a JetStream error code of a consumer request is about, where the
/// code names one.
pub fn field_of_error(code: u64) -> Option<&'static str> {
    Some(match code {
        10013 | 10081 => "spec.deliverSubject",
        10080 => "spec.maxWaiting",
        10082 | 10121 => "spec.maxAckPending",
        10086 => "spec.rateLimitBps",
        10088 => "spec.heartbeatInterval",
        10089 | 10108 => "spec.flowControl",
        10099 | 10100 => "spec.filterSubject",
        10101 => "spec.deliverPolicy",
        10116 => "spec.maxDeliver",
        10126 | 10134 => "spec.replicas",
        10153 => "spec.inactiveThreshold",
        _ => return None,
    })
}

/// The fields the spec sets that the server stored otherwise than `sent` asked, as
/// changes from the spec's value to the server's.
pub fn rewritten(desired: &DesiredConsumer, sent: &Config, stored: &Config) -> Vec<FieldChange> {
    let (asked, kept) = (json(sent), json(stored));
    FIELDS
        .iter()
        .filter(|(key, ..)| desired.managed.contains(key))
        .filter_map(|(key, spec, _)| {
            let (from, to) = (comparable(key, asked.get(*key)), comparable(key, kept.get(*key)));
            (from != to).then(|| FieldChange { field: spec, from: from.to_string(), to: to.to_string() })
        })
        .collect()
}

/// What to do to make the server's consumer match `desired`.
pub fn plan_consumer(desired: &DesiredConsumer, observed: Option<&ObservedConsumer>) -> ConsumerPlan {
    let Some(observed) = observed else {
        return Plan::Create { config: desired.config.clone() };
    };
    let adopting = match claim(observed.config.metadata.get(OWNER_KEY), &desired.owner, desired.adoption) {
        Ok(adopting) => adopting,
        Err(plan) => return plan,
    };
    let (want, have) = (json(&desired.config), json(&observed.config));
    let before = previously_managed(&observed.config);
    let mut update = have.clone();
    let mut changes = Vec::new();
    let mut violations = Vec::new();
    for (key, spec, rule) in FIELDS {
        let (to, from) = (comparable(key, want.get(*key)), comparable(key, have.get(*key)));
        if desired.managed.contains(key) {
            if to == from {
                continue;
            }
            if let Some(why) = rule.judge(&from, &to) {
                violations.push(Violation::new(
                    *spec,
                    format!("{why} (the server has {from}, the spec asks for {to}); nothing was changed"),
                ));
            }
            changes.push(FieldChange { field: spec, from: from.to_string(), to: to.to_string() });
            match want.get(*key) {
                Some(value) => update.insert((*key).to_owned(), value.clone()),
                None => update.remove(*key),
            };
        } else if before.contains(*key) && matches!(rule, Rule::Mutable) {
            // Set before, unset now: leave it to the server's default.
            changes.push(FieldChange { field: spec, from: from.to_string(), to: "the server's default".into() });
            update.remove(*key);
        }
    }
    // Jetway's own marks: the owner and the managed fields, beside the user's metadata.
    let marks = [OWNER_KEY, MANAGED_KEY];
    let with_marks = |mut config: Map<String, Value>| {
        let mut metadata: Map<String, Value> = match config.get("metadata") {
            Some(Value::Object(m)) if desired.managed.contains("metadata") && !adopting => m.clone(),
            _ => observed.config.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(),
        };
        metadata.retain(|k, _| !k.starts_with(SERVER_METADATA_PREFIX));
        for key in marks {
            metadata.insert(key.to_owned(), Value::String(desired.config.metadata[key].clone()));
        }
        config.insert("metadata".into(), Value::Object(metadata));
        serde_json::from_value::<Config>(Value::Object(config))
    };
    if !adopting {
        if !violations.is_empty() {
            return Plan::Refused { violations };
        }
        let mark_changed = marks.iter().any(|k| desired.config.metadata.get(*k) != observed.config.metadata.get(*k));
        if changes.is_empty() && !mark_changed {
            return Plan::InSync;
        }
    }
    // Adopting writes only the marks: what the spec would change is planned once the
    // consumer is ours.
    match with_marks(if adopting { have } else { update }) {
        Ok(config) if adopting => Plan::Adopt { config, differences: changes },
        Ok(config) => Plan::Update { config, changes },
        Err(err) => {
            Plan::Refused { violations: vec![Violation::new("spec", format!("cannot build the update: {err}"))] }
        }
    }
}

#[cfg(test)]
mod tests;
