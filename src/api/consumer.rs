//! The `Consumer` kind: one durable JetStream consumer on a stream.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::stream::{AdoptionPolicy, DeletionPolicy, LocalRef};

/// One durable JetStream consumer, kept as declared. Only the fields set here are
/// managed; a field removed from the spec goes back to the server's default.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetway.dev",
    version = "v1alpha1",
    kind = "Consumer",
    namespaced,
    status = "ConsumerStatus",
    shortname = "jsc",
    category = "jetway",
    printcolumn = r#"{"name":"Stream","type":"string","jsonPath":".spec.streamName"}"#,
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".status.consumerName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.state.pending"}"#,
    printcolumn = r#"{"name":"Ack Pending","type":"integer","jsonPath":".status.state.ackPending"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("(has(self.spec.durableName) ? self.spec.durableName : self.metadata.name) == (has(oldSelf.spec.durableName) ? oldSelf.spec.durableName : oldSelf.metadata.name)")
        .message("spec.durableName cannot change: it names the consumer this object manages; create a new Consumer object for a new name")
        .reason(Reason::FieldValueForbidden),
)]
#[x_kube(
    validation = Rule::new("self.streamName == oldSelf.streamName")
        .message("streamName cannot change: a consumer belongs to one stream")
        .field_path(".streamName")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.deliverPolicy) ? self.deliverPolicy : 'all') == (has(oldSelf.deliverPolicy) ? oldSelf.deliverPolicy : 'all')")
        .message("deliverPolicy cannot change once the consumer exists")
        .field_path(".deliverPolicy")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.ackPolicy) ? self.ackPolicy : '') == (has(oldSelf.ackPolicy) ? oldSelf.ackPolicy : '')")
        .message("ackPolicy cannot change once the consumer exists")
        .field_path(".ackPolicy")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.replayPolicy) ? self.replayPolicy : 'instant') == (has(oldSelf.replayPolicy) ? oldSelf.replayPolicy : 'instant')")
        .message("replayPolicy cannot change once the consumer exists")
        .field_path(".replayPolicy")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.heartbeatInterval) ? self.heartbeatInterval : '0s') == (has(oldSelf.heartbeatInterval) ? oldSelf.heartbeatInterval : '0s')")
        .message("heartbeatInterval cannot change once the consumer exists")
        .field_path(".heartbeatInterval")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.memStorage) && self.memStorage) == (has(oldSelf.memStorage) && oldSelf.memStorage)")
        .message("memStorage cannot change once the consumer exists")
        .field_path(".memStorage")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.deliverSubject) == has(oldSelf.deliverSubject)")
        .message("a pull consumer cannot become a push consumer, nor the other way round")
        .field_path(".deliverSubject")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.filterSubject) || !has(self.filterSubjects)")
        .message("set filterSubject or filterSubjects, not both")
        .field_path(".filterSubjects"),
    validation = Rule::new("!has(self.deliverPolicy) || self.deliverPolicy != 'byStartSequence' || has(self.optStartSeq)")
        .message("deliverPolicy byStartSequence needs optStartSeq")
        .field_path(".optStartSeq"),
    validation = Rule::new("!has(self.deliverPolicy) || self.deliverPolicy != 'byStartTime' || has(self.optStartTime)")
        .message("deliverPolicy byStartTime needs optStartTime")
        .field_path(".optStartTime"),
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// The JetStream name of the stream the consumer reads, whether a Stream object
    /// manages it or not. Until it exists the consumer waits.
    #[schemars(regex(pattern = super::subject::NAME))]
    pub stream_name: String,
    /// The consumer's durable name. Defaults to the object's name; cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::NAME))]
    pub durable_name: Option<String>,
    /// The NatsConnection in this namespace to reach the consumer through. Unset: the
    /// operator's default connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<LocalRef>,
    /// `Retain` (the default) leaves the consumer when this object is deleted; `Delete`
    /// removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// What to do with an existing consumer of this name that no Jetway object manages:
    /// `Adopt` (the default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption_policy: Option<AdoptionPolicy>,

    /// A description of the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where delivery starts: `all`, `last`, `new`, `byStartSequence`, `byStartTime` or
    /// `lastPerSubject`. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_policy: Option<DeliverPolicy>,
    /// The stream sequence to start at, with `deliverPolicy: byStartSequence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_seq: Option<u64>,
    /// The time (RFC 3339) to start at, with `deliverPolicy: byStartTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "timestamp(self) >= timestamp('0001-01-01T00:00:00Z')", "message": "must be an RFC 3339 time such as 2030-01-01T00:00:00Z"}]))]
    pub opt_start_time: Option<String>,
    /// `explicit` (each message), `all` (everything up to a message) or `none`.
    /// Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_policy: Option<AckPolicy>,
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<GoDuration>,
    /// How many times a message is delivered at most; -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_deliver: Option<i64>,
    /// Redelivery delays, one per attempt, such as `[1s, 5s, 30s]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Vec<GoDuration>>,
    /// Deliver only messages whose subject matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::SUBJECT))]
    pub filter_subject: Option<String>,
    /// Deliver only messages whose subject matches one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = super::subject::SUBJECT)))]
    pub filter_subjects: Option<Vec<String>>,
    /// `instant` (as fast as possible) or `original` (at the pace they were stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_policy: Option<ReplayPolicy>,
    /// The most bits per second to deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_bps: Option<u64>,
    /// The share of acknowledgements sampled for observability, such as `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]|[1-9][0-9]|100)%?$"))]
    pub sample_freq: Option<String>,
    /// The most messages delivered and not yet acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_ack_pending: Option<i64>,
    /// The most pull requests waiting at once. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_waiting: Option<i64>,
    /// Deliver only headers, with the payload size in `Nats-Msg-Size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_only: Option<bool>,
    /// Push consumers: flow control between server and client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<bool>,
    /// Push consumers: how often an idle consumer sends a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<GoDuration>,
    /// Push consumers: the subject messages are delivered to. Unset: a pull consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::LITERAL_SUBJECT))]
    pub deliver_subject: Option<String>,
    /// Push consumers: the queue group that shares the deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\S*$"))]
    pub deliver_group: Option<String>,
    /// Pull consumers: the largest batch one request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_batch: Option<i64>,
    /// Pull consumers: the longest a request may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_expires: Option<GoDuration>,
    /// Pull consumers: the most bytes one request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_max_bytes: Option<i64>,
    /// How long the consumer may go unused before the server removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_threshold: Option<GoDuration>,
    /// How many servers keep the consumer's state; unset or 0: as many as the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5))]
    pub replicas: Option<i32>,
    /// Keep the consumer's state in memory instead of on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_storage: Option<bool>,
    /// Free-form key/value pairs stored with the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Pause deliveries until this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "timestamp(self) >= timestamp('0001-01-01T00:00:00Z')", "message": "must be an RFC 3339 time such as 2030-01-01T00:00:00Z"}]))]
    pub pause_until: Option<String>,
    /// How pull requests of priority groups are served: `none`, `pinned_client`,
    /// `overflow` or `prioritized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_policy: Option<PriorityPolicy>,
    /// With `pinned_client`: how long a pinned client may go without pulling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_ttl: Option<GoDuration>,
    /// The priority groups pull requests may name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_groups: Option<Vec<String>>,
    /// Where messages go once `maxDeliver` is exhausted or a worker terminates them:
    /// the operator copies each to this subject, with its origin in `Jetway-Origin-*`
    /// headers. A stream should capture the subject to keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

/// The dead-letter destination of a consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// The subject dead letters are published to.
    #[schemars(regex(pattern = super::subject::LITERAL_SUBJECT))]
    pub subject: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeliverPolicy {
    All,
    Last,
    New,
    ByStartSequence,
    ByStartTime,
    LastPerSubject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    None,
    All,
    Explicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    Instant,
    Original,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriorityPolicy {
    None,
    PinnedClient,
    Overflow,
    Prioritized,
}

/// What the operator did and what the server reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The durable name of the consumer this object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_name: Option<String>,
    /// The consumer's progress, as the server last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ConsumerState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerState {
    /// Messages in the stream not yet delivered to the consumer.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Messages delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting.
    pub waiting: u64,
    /// The stream sequence last delivered.
    pub delivered_stream_sequence: u64,
    /// The stream sequence up to which everything is acknowledged.
    pub ack_floor_stream_sequence: u64,
}
