//! A `Stream` spec resolved into the full server configuration it stands for.

use std::collections::{BTreeSet, HashMap};

use async_nats::jetstream::stream::{self as js, Config};

use super::server::{as_the_server_stores, check_subjects, limit};
use super::{DEFAULT_DUPLICATE_WINDOW, DesiredStream, FIELDS, MARK_PREFIX, SERVER_METADATA_PREFIX, normalized};
use super::{OWNER_KEY, Violation};
use crate::api::stream::{self as api, AdoptionPolicy, StreamSpec};
use crate::plan::parse_time;

impl DesiredStream {
    /// Resolves a spec into the configuration the server should have. `object_name`
    /// names the stream when `spec.name` is unset; `owner` is `<namespace>/<name>`.
    pub fn from_spec(spec: &StreamSpec, object_name: &str, owner: &str) -> Result<Self, Vec<Violation>> {
        let mut violations = Vec::new();
        let name = spec.name.clone().unwrap_or_else(|| object_name.to_owned());
        let max_age = spec.max_age.map(|d| d.0).unwrap_or_default();
        let duplicate_window = match spec.duplicate_window.filter(|w| !w.0.is_zero()) {
            Some(window) => window.0,
            None if !max_age.is_zero() && max_age < DEFAULT_DUPLICATE_WINDOW => max_age,
            None => DEFAULT_DUPLICATE_WINDOW,
        };
        if !max_age.is_zero() && duplicate_window > max_age {
            violations
                .push(Violation::new("spec.duplicateWindow", "the duplicate window cannot be longer than maxAge"));
        }
        if spec.allow_rollup == Some(true) && spec.deny_purge == Some(true) {
            violations.push(Violation::new("spec.allowRollup", "roll-ups purge messages, which denyPurge forbids"));
        }
        let mut metadata: HashMap<String, String> = spec.metadata.clone().unwrap_or_default().into_iter().collect();
        if metadata.keys().any(|k| k.starts_with(MARK_PREFIX)) {
            violations
                .push(Violation::new("spec.metadata", format!("keys starting with {MARK_PREFIX} are Jetway's marks")));
        }
        if metadata.keys().any(|k| k.starts_with(SERVER_METADATA_PREFIX)) {
            violations.push(Violation::new(
                "spec.metadata",
                format!("keys starting with {SERVER_METADATA_PREFIX} belong to the server"),
            ));
        }
        metadata.insert(OWNER_KEY.to_owned(), owner.to_owned());
        let max_consumers = i32::try_from(limit(spec.max_consumers)).unwrap_or_else(|_| {
            violations.push(Violation::new("spec.maxConsumers", "must fit in 32 bits"));
            -1
        });
        let mirror = spec.mirror.as_ref().map(|s| source(s, "spec.mirror", &mut violations));
        let sources = spec.sources.as_ref().filter(|s| !s.is_empty()).map(|sources| {
            sources.iter().enumerate().map(|(i, s)| source(s, &format!("spec.sources[{i}]"), &mut violations)).collect()
        });
        let subjects = spec.subjects.clone().unwrap_or_else(|| {
            // The server's own default: a plain stream stores the subject of its name.
            if mirror.is_none() && sources.is_none() { vec![name.clone()] } else { Vec::new() }
        });
        let flag = |value: Option<bool>| value.unwrap_or(false);
        let config = Config {
            name,
            description: spec.description.clone(),
            subjects,
            retention: match spec.retention {
                None | Some(api::RetentionPolicy::Limits) => js::RetentionPolicy::Limits,
                Some(api::RetentionPolicy::Interest) => js::RetentionPolicy::Interest,
                Some(api::RetentionPolicy::Workqueue) => js::RetentionPolicy::WorkQueue,
            },
            max_consumers,
            max_messages: limit(spec.max_msgs),
            max_bytes: limit(spec.max_bytes),
            max_age,
            max_messages_per_subject: limit(spec.max_msgs_per_subject),
            max_message_size: spec.max_msg_size.filter(|v| *v > 0).unwrap_or(-1),
            discard: match spec.discard {
                None | Some(api::DiscardPolicy::Old) => js::DiscardPolicy::Old,
                Some(api::DiscardPolicy::New) => js::DiscardPolicy::New,
            },
            storage: match spec.storage {
                None | Some(api::StorageType::File) => js::StorageType::File,
                Some(api::StorageType::Memory) => js::StorageType::Memory,
            },
            num_replicas: usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(1),
            no_ack: flag(spec.no_ack),
            duplicate_window,
            placement: spec.placement.as_ref().map(|p| js::Placement {
                cluster: p.cluster.clone().filter(|c| !c.is_empty()),
                tags: p.tags.clone().unwrap_or_default(),
            }),
            mirror,
            sources,
            sealed: flag(spec.sealed),
            deny_delete: flag(spec.deny_delete),
            deny_purge: flag(spec.deny_purge),
            // The server turns roll-ups on for delete markers, which are roll-ups.
            allow_rollup: flag(spec.allow_rollup),
            allow_direct: flag(spec.allow_direct),
            mirror_direct: flag(spec.mirror_direct),
            discard_new_per_subject: flag(spec.discard_per_subject),
            republish: spec.republish.as_ref().map(|r| js::Republish {
                source: r.source.clone(),
                destination: r.destination.clone(),
                headers_only: flag(r.headers_only),
            }),
            metadata,
            subject_transform: spec.subject_transform.as_ref().map(transform),
            compression: Some(match spec.compression {
                None | Some(api::Compression::None) => js::Compression::None,
                Some(api::Compression::S2) => js::Compression::S2,
            }),
            consumer_limits: spec.consumer_limits.as_ref().map(|l| js::ConsumerLimits {
                inactive_threshold: l.inactive_threshold.map(|d| d.0).unwrap_or_default(),
                max_ack_pending: l.max_ack_pending.unwrap_or_default(),
            }),
            first_sequence: spec.first_sequence,
            persist_mode: spec.persist_mode.map(|mode| match mode {
                api::PersistMode::Default => js::PersistenceMode::Default,
                api::PersistMode::Async => js::PersistenceMode::Async,
            }),
            allow_message_ttl: flag(spec.allow_msg_ttl),
            subject_delete_marker_ttl: spec.subject_delete_marker_ttl.map(|d| d.0),
            allow_atomic_publish: flag(spec.allow_atomic_publish),
            allow_message_schedules: flag(spec.allow_msg_schedules),
            allow_message_counter: flag(spec.allow_msg_counter),
            allow_batch_publish: flag(spec.allow_batched),
            ..Default::default()
        };
        let mut config = config;
        let asked = normalized(&config);
        as_the_server_stores(&mut config, spec, &mut violations);
        // What the server derives from the fields the spec names counts as named.
        let mut named = named(spec);
        let stored = normalized(&config);
        named.extend(FIELDS.iter().map(|f| f.key).filter(|k| asked[k] != stored[k]));
        if spec.duplicate_window.is_none() && duplicate_window != DEFAULT_DUPLICATE_WINDOW {
            // Shortened to fit a short maxAge.
            named.insert("duplicate_window");
        }
        check_subjects(spec, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        // A mirror answers direct gets as its origin does, unless the spec says.
        let server_chosen =
            if spec.mirror.is_some() && spec.mirror_direct.is_none() { vec!["mirror_direct"] } else { vec![] };
        Ok(Self {
            config,
            owner: owner.to_owned(),
            adoption: spec.adoption_policy.unwrap_or(AdoptionPolicy::Adopt),
            server_chosen,
            named,
            loss_allowed: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// The server keys of the fields a spec sets.
fn named(spec: &StreamSpec) -> BTreeSet<&'static str> {
    let json = serde_json::to_value(spec).unwrap_or_default();
    let set = |path: &str| path.strip_prefix("spec.").and_then(|k| json.get(k)).is_some_and(|v| !v.is_null());
    FIELDS.iter().filter(|f| set(f.spec)).map(|f| f.key).collect()
}

fn transform(t: &api::SubjectTransform) -> js::SubjectTransform {
    js::SubjectTransform { source: t.source.clone(), destination: t.dest.clone() }
}

fn source(s: &api::StreamSource, at: &str, violations: &mut Vec<Violation>) -> js::Source {
    let start_time =
        s.opt_start_time.as_deref().and_then(|text| parse_time(text, &format!("{at}.optStartTime"), violations));
    js::Source {
        name: s.name.clone(),
        start_sequence: s.opt_start_seq,
        start_time,
        filter_subject: s.filter_subject.clone(),
        external: s.external_api_prefix.as_ref().map(|api_prefix| js::External {
            api_prefix: api_prefix.clone(),
            delivery_prefix: s.external_deliver_prefix.clone(),
        }),
        subject_transforms: s.subject_transforms.iter().flatten().map(transform).collect(),
        consumer: s.consumer.as_ref().map(|c| js::StreamConsumerSource {
            name: c.name.clone().unwrap_or_default(),
            deliver_subject: c.deliver_subject.clone().unwrap_or_default(),
        }),
        ..Default::default()
    }
}
