//! `jetway export`: the Stream and Consumer manifests that would adopt what a NATS
//! system holds, without changing it. Pure: server configurations in, specs out; a
//! field is written only where the server's value differs from what an unset field
//! means, so the manifests stay short and `plan` right after shows nothing to do.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::consumer::{self as capi, Consumer, ConsumerSpec};
use crate::api::duration::GoDuration;
use crate::api::stream::{self as sapi, Stream, StreamSpec};
use crate::plan::consumer::MANAGED_KEY;
use crate::plan::stream::OWNER_KEY;

/// A Kubernetes object name (RFC 1123 label) for a JetStream name.
pub fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-").to_lowercase();
    let mut name: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() { "unnamed".into() } else { name }
}

fn some<T: PartialEq>(value: T, unset: T) -> Option<T> {
    (value != unset).then_some(value)
}

fn flag(value: bool) -> Option<bool> {
    value.then_some(true)
}

fn duration(value: Duration) -> Option<GoDuration> {
    (!value.is_zero()).then_some(GoDuration(value))
}

/// The user's metadata: without Jetway's marks and the server's own keys.
fn user_metadata(metadata: &std::collections::HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = metadata
        .iter()
        .filter(|(k, _)| *k != OWNER_KEY && *k != MANAGED_KEY && !k.starts_with("_nats."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

fn rfc3339(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn source(source: &stream::Source) -> sapi::StreamSource {
    sapi::StreamSource {
        name: source.name.clone(),
        opt_start_seq: source.start_sequence.filter(|s| *s != 0),
        opt_start_time: source.start_time.map(rfc3339),
        filter_subject: source.filter_subject.clone().filter(|s| !s.is_empty()),
        external_api_prefix: source.external.as_ref().map(|e| e.api_prefix.clone()),
        external_deliver_prefix: source.external.as_ref().and_then(|e| e.delivery_prefix.clone()),
        subject_transforms: (!source.subject_transforms.is_empty())
            .then(|| source.subject_transforms.iter().map(|t| transform(t.clone())).collect()),
        consumer: source.consumer.as_ref().map(|c| sapi::SourceConsumer {
            name: some(c.name.clone(), String::new()),
            deliver_subject: some(c.deliver_subject.clone(), String::new()),
        }),
    }
}

fn transform(t: stream::SubjectTransform) -> sapi::SubjectTransform {
    sapi::SubjectTransform { source: t.source, dest: t.destination }
}

/// The spec that declares `config` as it is.
pub fn stream_spec(config: &stream::Config) -> StreamSpec {
    let plain = config.mirror.is_none() && config.sources.as_ref().is_none_or(Vec::is_empty);
    // Unset subjects mean the stream's own name on a plain stream.
    let default_subjects = if plain { vec![config.name.clone()] } else { Vec::new() };
    let default_window = match config.max_age {
        age if !age.is_zero() && age < Duration::from_secs(120) => age,
        _ => Duration::from_secs(120),
    };
    StreamSpec {
        name: Some(config.name.clone()),
        description: config.description.clone().filter(|d| !d.is_empty()),
        subjects: some(config.subjects.clone(), default_subjects),
        retention: match config.retention {
            stream::RetentionPolicy::Limits => None,
            stream::RetentionPolicy::Interest => Some(sapi::RetentionPolicy::Interest),
            stream::RetentionPolicy::WorkQueue => Some(sapi::RetentionPolicy::Workqueue),
        },
        max_consumers: some(i64::from(config.max_consumers), -1),
        max_msgs_per_subject: some(config.max_messages_per_subject, -1),
        max_msgs: some(config.max_messages, -1),
        max_bytes: some(config.max_bytes, -1),
        max_age: duration(config.max_age),
        max_msg_size: some(config.max_message_size, -1),
        storage: match config.storage {
            stream::StorageType::File => None,
            stream::StorageType::Memory => Some(sapi::StorageType::Memory),
        },
        discard: match config.discard {
            stream::DiscardPolicy::Old => None,
            stream::DiscardPolicy::New => Some(sapi::DiscardPolicy::New),
        },
        replicas: some(i32::try_from(config.num_replicas).unwrap_or(1), 1),
        no_ack: flag(config.no_ack),
        duplicate_window: some(config.duplicate_window, default_window).map(GoDuration),
        placement: config.placement.as_ref().filter(|p| p.cluster.is_some() || !p.tags.is_empty()).map(|p| {
            sapi::Placement { cluster: p.cluster.clone(), tags: (!p.tags.is_empty()).then(|| p.tags.clone()) }
        }),
        mirror: config.mirror.as_ref().map(source),
        sources: config.sources.as_ref().filter(|s| !s.is_empty()).map(|s| s.iter().map(source).collect()),
        compression: match config.compression {
            Some(stream::Compression::S2) => Some(sapi::Compression::S2),
            _ => None,
        },
        subject_transform: config.subject_transform.clone().map(transform),
        republish: config.republish.as_ref().map(|r| sapi::Republish {
            source: r.source.clone(),
            destination: r.destination.clone(),
            headers_only: flag(r.headers_only),
        }),
        sealed: flag(config.sealed),
        deny_delete: flag(config.deny_delete),
        deny_purge: flag(config.deny_purge),
        allow_direct: flag(config.allow_direct),
        // Delete markers turn roll-ups on by themselves.
        allow_rollup: flag(config.allow_rollup && config.subject_delete_marker_ttl.is_none()),
        mirror_direct: flag(config.mirror_direct),
        discard_per_subject: flag(config.discard_new_per_subject),
        metadata: user_metadata(&config.metadata),
        consumer_limits: config
            .consumer_limits
            .as_ref()
            .filter(|l| !l.inactive_threshold.is_zero() || l.max_ack_pending != 0)
            .map(|l| sapi::ConsumerLimits {
                inactive_threshold: duration(l.inactive_threshold),
                max_ack_pending: some(l.max_ack_pending, 0),
            }),
        allow_msg_ttl: flag(config.allow_message_ttl),
        subject_delete_marker_ttl: config.subject_delete_marker_ttl.map(GoDuration),
        allow_msg_counter: flag(config.allow_message_counter),
        allow_atomic_publish: flag(config.allow_atomic_publish),
        allow_msg_schedules: flag(config.allow_message_schedules),
        allow_batched: flag(config.allow_batch_publish),
        persist_mode: match config.persist_mode {
            Some(stream::PersistenceMode::Async) => Some(sapi::PersistMode::Async),
            _ => None,
        },
        ..Default::default()
    }
}

/// The spec that declares the durable consumer `config` on `stream` as it is. Every
/// field the server reports is written, so each is managed at today's value.
pub fn consumer_spec(stream: &str, config: &consumer::Config) -> ConsumerSpec {
    let (deliver_policy, opt_start_seq, opt_start_time) = match config.deliver_policy {
        consumer::DeliverPolicy::All => (None, None, None),
        consumer::DeliverPolicy::Last => (Some(capi::DeliverPolicy::Last), None, None),
        consumer::DeliverPolicy::New => (Some(capi::DeliverPolicy::New), None, None),
        consumer::DeliverPolicy::LastPerSubject => (Some(capi::DeliverPolicy::LastPerSubject), None, None),
        consumer::DeliverPolicy::ByStartSequence { start_sequence } => {
            (Some(capi::DeliverPolicy::ByStartSequence), Some(start_sequence), None)
        }
        consumer::DeliverPolicy::ByStartTime { start_time } => {
            (Some(capi::DeliverPolicy::ByStartTime), None, Some(rfc3339(start_time)))
        }
    };
    ConsumerSpec {
        stream_name: stream.to_owned(),
        durable_name: config.durable_name.clone(),
        description: config.description.clone().filter(|d| !d.is_empty()),
        deliver_policy,
        opt_start_seq,
        opt_start_time,
        ack_policy: match config.ack_policy {
            consumer::AckPolicy::Explicit => Some(capi::AckPolicy::Explicit),
            consumer::AckPolicy::All => Some(capi::AckPolicy::All),
            consumer::AckPolicy::None => Some(capi::AckPolicy::None),
            // Not a policy a Consumer spec can name; left to the server.
            _ => None,
        },
        ack_wait: duration(config.ack_wait),
        max_deliver: some(config.max_deliver, 0),
        backoff: (!config.backoff.is_empty()).then(|| config.backoff.iter().copied().map(GoDuration).collect()),
        filter_subject: some(config.filter_subject.clone(), String::new()),
        filter_subjects: (!config.filter_subjects.is_empty()).then(|| config.filter_subjects.clone()),
        replay_policy: match config.replay_policy {
            consumer::ReplayPolicy::Instant => None,
            consumer::ReplayPolicy::Original => Some(capi::ReplayPolicy::Original),
        },
        rate_limit_bps: some(config.rate_limit, 0),
        sample_freq: (config.sample_frequency != 0).then(|| format!("{}%", config.sample_frequency)),
        max_ack_pending: some(config.max_ack_pending, 0),
        max_waiting: some(config.max_waiting, 0),
        headers_only: flag(config.headers_only),
        flow_control: flag(config.flow_control),
        heartbeat_interval: duration(config.idle_heartbeat),
        deliver_subject: config.deliver_subject.clone(),
        deliver_group: config.deliver_group.clone(),
        max_request_batch: some(config.max_batch, 0),
        max_request_expires: duration(config.max_expires),
        max_request_max_bytes: some(config.max_bytes, 0),
        inactive_threshold: duration(config.inactive_threshold),
        replicas: some(i32::try_from(config.num_replicas).unwrap_or(0), 0),
        mem_storage: flag(config.memory_storage),
        metadata: user_metadata(&config.metadata),
        pause_until: config.pause_until.map(rfc3339),
        priority_policy: match config.priority_policy {
            consumer::PriorityPolicy::None => None,
            consumer::PriorityPolicy::PinnedClient => Some(capi::PriorityPolicy::PinnedClient),
            consumer::PriorityPolicy::Overflow => Some(capi::PriorityPolicy::Overflow),
            consumer::PriorityPolicy::Prioritized => Some(capi::PriorityPolicy::Prioritized),
        },
        pinned_ttl: duration(config.priority_timeout),
        priority_groups: (!config.priority_groups.is_empty()).then(|| config.priority_groups.clone()),
        ..Default::default()
    }
}

/// Streams no Jetway object declares, so they are not exported: KV buckets and object
/// stores (by their names' prefixes), and the operator's own advisory stream.
fn is_bucket(name: &str) -> bool {
    name.starts_with("KV_") || name.starts_with("OBJ_") || name == crate::deadletter::ADVISORY_STREAM
}

/// Reads every stream (but buckets) and its durable consumers from `js` and returns the
/// objects that would adopt them, in `namespace` when given.
pub async fn export(
    js: &async_nats::jetstream::Context,
    namespace: Option<&str>,
) -> anyhow::Result<(Vec<Stream>, Vec<Consumer>)> {
    use futures::TryStreamExt;

    let meta =
        |name: String| ObjectMeta { name: Some(name), namespace: namespace.map(str::to_owned), ..Default::default() };
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
    let mut infos: Vec<stream::Info> = js.streams().try_collect().await?;
    infos.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    for info in infos.into_iter().filter(|info| !is_bucket(&info.config.name)) {
        let name = info.config.name.clone();
        let mut stream_object = Stream::new(&object_name(&[&name]), stream_spec(&info.config));
        stream_object.metadata = meta(object_name(&[&name]));
        streams.push(stream_object);
        let stream = js.get_stream(&name).await?;
        let mut found: Vec<consumer::Info> = stream.consumers().try_collect().await?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        for info in found.into_iter().filter(|info| info.config.durable_name.is_some()) {
            let object = object_name(&[&name, &info.name]);
            let mut consumer_object = Consumer::new(&object, consumer_spec(&name, &info.config));
            consumer_object.metadata = meta(object);
            consumers.push(consumer_object);
        }
    }
    Ok((streams, consumers))
}

#[cfg(test)]
mod tests;
