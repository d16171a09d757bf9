//! The `Stream` kind: one JetStream stream.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;

/// One JetStream stream, kept as declared. Unset fields take the server's defaults.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetway.dev",
    version = "v1alpha1",
    kind = "Stream",
    namespaced,
    status = "StreamStatus",
    shortname = "jss",
    category = "jetway",
    printcolumn = r#"{"name":"Stream","type":"string","jsonPath":".status.streamName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Messages","type":"integer","jsonPath":".status.state.messages"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".status.state.bytes"}"#,
    printcolumn = r#"{"name":"Consumers","type":"integer","jsonPath":".status.state.consumerCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("(has(self.spec.name) ? self.spec.name : self.metadata.name) == (has(oldSelf.spec.name) ? oldSelf.spec.name : oldSelf.metadata.name)")
        .message("spec.name cannot change: it names the JetStream stream this object manages; create a new Stream object for a new name")
        .reason(Reason::FieldValueForbidden),
)]
#[x_kube(
    validation = Rule::new("(has(self.storage) ? self.storage : 'file') == (has(oldSelf.storage) ? oldSelf.storage : 'file')")
        .message("storage cannot change once the stream exists; the server refuses it and nothing was changed")
        .field_path(".storage")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.retention) && self.retention == 'workqueue') == (has(oldSelf.retention) && oldSelf.retention == 'workqueue')")
        .message("retention cannot change to or from workqueue once the stream exists")
        .field_path(".retention")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.mirror) || (has(oldSelf.mirror) && self.mirror == oldSelf.mirror)")
        .message("a mirror cannot be added to an existing stream, nor changed; it can only be removed, which makes the stream an ordinary one")
        .field_path(".mirror")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.firstSequence) ? self.firstSequence : 0) == (has(oldSelf.firstSequence) ? oldSelf.firstSequence : 0)")
        .message("firstSequence only takes effect when the stream is created and cannot change")
        .field_path(".firstSequence")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.allowMsgCounter) && self.allowMsgCounter) == (has(oldSelf.allowMsgCounter) && oldSelf.allowMsgCounter)")
        .message("a stream cannot become a counter, nor stop being one, once it exists")
        .field_path(".allowMsgCounter")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(oldSelf.allowMsgSchedules) && oldSelf.allowMsgSchedules) || (has(self.allowMsgSchedules) && self.allowMsgSchedules)")
        .message("message schedules cannot be turned off once allowed")
        .field_path(".allowMsgSchedules")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(oldSelf.sealed) && oldSelf.sealed) || (has(self.sealed) && self.sealed)")
        .message("a sealed stream cannot be unsealed")
        .field_path(".sealed")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(oldSelf.allowMsgTtl) && oldSelf.allowMsgTtl) || (has(self.allowMsgTtl) && self.allowMsgTtl)")
        .message("per-message TTLs cannot be turned off once allowed")
        .field_path(".allowMsgTtl")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(oldSelf.denyDelete) && oldSelf.denyDelete) || (has(self.denyDelete) && self.denyDelete)")
        .message("denying deletes cannot be turned off once on")
        .field_path(".denyDelete")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(oldSelf.denyPurge) && oldSelf.denyPurge) || (has(self.denyPurge) && self.denyPurge)")
        .message("denying purges cannot be turned off once on")
        .field_path(".denyPurge")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("(has(self.persistMode) ? self.persistMode : 'default') == (has(oldSelf.persistMode) ? oldSelf.persistMode : 'default')")
        .message("persistMode cannot change once the stream exists")
        .field_path(".persistMode")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!(has(self.allowRollup) && self.allowRollup && has(self.denyPurge) && self.denyPurge)")
        .message("roll-ups purge messages, which denyPurge forbids")
        .field_path(".allowRollup"),
    validation = Rule::new("!has(self.mirror) || !has(self.subjects) || size(self.subjects) == 0")
        .message("a mirror stream takes its messages from its origin and cannot have subjects")
        .field_path(".subjects"),
    validation = Rule::new("!has(self.mirror) || !has(self.sources) || size(self.sources) == 0")
        .message("a stream is either a mirror or has sources, not both")
        .field_path(".sources"),
)]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// The JetStream name of the stream. Defaults to the object's name; cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::NAME), length(min = 1, max = 255))]
    pub name: Option<String>,
    /// The NatsConnection in this namespace to reach the stream through. Unset: the
    /// operator's default connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<LocalRef>,
    /// What happens to the JetStream stream when this object is deleted. `Retain`
    /// (the default) leaves it and its messages on the server; `Delete` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// What to do when a stream of this name already exists and no Jetway object
    /// manages it. `Adopt` (the default) takes it over and brings it to this spec;
    /// `Never` leaves it untouched and reports the conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption_policy: Option<AdoptionPolicy>,

    /// A description of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Subjects the stream stores, wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = super::subject::SUBJECT)))]
    pub subjects: Option<Vec<String>>,
    /// When messages are removed: `limits` (by the limits below), `interest` (once every
    /// consumer acknowledged them) or `workqueue` (once one consumer acknowledged them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// How many consumers the stream may have; -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 2147483647))]
    pub max_consumers: Option<i64>,
    /// How many messages the stream keeps per subject; -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_msgs_per_subject: Option<i64>,
    /// How many messages the stream keeps; -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_msgs: Option<i64>,
    /// How many bytes the stream keeps; -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_bytes: Option<i64>,
    /// The oldest a message may get, such as `24h` or `90m`; `0` for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<GoDuration>,
    /// The largest message the stream accepts, in bytes; -1 for the server's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 2147483647))]
    pub max_msg_size: Option<i32>,
    /// `file` (the default) or `memory`. Cannot change once the stream exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageType>,
    /// At a limit, `old` (the default) removes the oldest messages; `new` refuses new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<DiscardPolicy>,
    /// How many servers keep a copy of each message (1 to 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: Option<i32>,
    /// Do not acknowledge publishes to the stream's subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_ack: Option<bool>,
    /// How long message ids (`Nats-Msg-Id`) are remembered to drop duplicates, such as `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_window: Option<GoDuration>,
    /// Which servers may hold the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Make this stream a copy of another stream. Cannot be added or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSource>,
    /// Streams whose messages are copied into this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<StreamSource>>,
    /// `s2` compresses stored messages; `none` (the default) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Rewrites the subjects of incoming messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransform>,
    /// Republishes every stored message to another subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<Republish>,
    /// Seal the stream: no more messages, deletes or purges. Cannot be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<bool>,
    /// Refuse deleting single messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_delete: Option<bool>,
    /// Refuse purging the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_purge: Option<bool>,
    /// Let any server holding the stream answer direct get requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_direct: Option<bool>,
    /// Allow the `Nats-Rollup` header to purge a subject or the stream on publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_rollup: Option<bool>,
    /// Let a mirror answer direct get requests for its origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_direct: Option<bool>,
    /// With `discard: new`, apply the per-subject limit to refuse new messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_per_subject: Option<bool>,
    /// The sequence number of the stream's first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sequence: Option<u64>,
    /// Free-form key/value pairs stored with the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Defaults and ceilings for the stream's consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_limits: Option<ConsumerLimits>,
    /// Allow a per-message TTL (the `Nats-TTL` header). Cannot be turned off again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_msg_ttl: Option<bool>,
    /// Leave a delete marker, kept this long, when a subject's last message ages out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_delete_marker_ttl: Option<GoDuration>,
    /// Make the stream a counter: messages add to the value of their subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_msg_counter: Option<bool>,
    /// Allow publishing a batch of messages atomically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_atomic_publish: Option<bool>,
    /// Allow messages scheduled for later delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_msg_schedules: Option<bool>,
    /// Allow fast batch publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_batched: Option<bool>,
    /// `default` writes each message before acknowledging it; `async` acknowledges first
    /// and writes soon after, trading durability for speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_mode: Option<PersistMode>,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalRef {
    /// The object's name.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    Retain,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AdoptionPolicy {
    Adopt,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetentionPolicy {
    Limits,
    Interest,
    Workqueue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    File,
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiscardPolicy {
    Old,
    New,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    S2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PersistMode {
    Default,
    Async,
}

/// Where the stream's replicas may be placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The cluster to place the stream in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Server tags every replica's server must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Another stream to copy messages from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.filterSubject) || !has(self.subjectTransforms) || size(self.subjectTransforms) == 0",
    "message": "set filterSubject or subjectTransforms, not both: a transform's source filters already",
    "fieldPath": ".filterSubject",
}]))]
pub struct StreamSource {
    /// The origin stream's name.
    #[schemars(regex(pattern = super::subject::NAME))]
    pub name: String,
    /// Start at this sequence of the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_seq: Option<u64>,
    /// Start at this time (RFC 3339) of the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "timestamp(self) >= timestamp('0001-01-01T00:00:00Z')", "message": "must be an RFC 3339 time such as 2030-01-01T00:00:00Z"}]))]
    pub opt_start_time: Option<String>,
    /// Copy only messages whose subject matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::SUBJECT))]
    pub filter_subject: Option<String>,
    /// The JetStream API prefix of the origin's account or domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_api_prefix: Option<String>,
    /// The delivery prefix for messages from the origin's account or domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::LITERAL_SUBJECT))]
    pub external_deliver_prefix: Option<String>,
    /// Subject rewrites applied to the copied messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transforms: Option<Vec<SubjectTransform>>,
    /// A durable consumer on the origin to copy through, instead of an ephemeral one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<SourceConsumer>,
}

/// The durable consumer a source or mirror reads its origin through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceConsumer {
    /// The durable consumer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The deliver subject of a push consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::subject::LITERAL_SUBJECT))]
    pub deliver_subject: Option<String>,
}

/// Rewrites subjects matching `source` into `dest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectTransform {
    /// The subjects to rewrite, wildcards allowed.
    #[schemars(regex(pattern = super::subject::SUBJECT))]
    pub source: String,
    /// The subject to rewrite them into, with `{{wildcard(1)}}`-style references.
    pub dest: String,
}

/// Republishes stored messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Republish {
    /// The stored subjects to republish, wildcards allowed.
    #[schemars(regex(pattern = super::subject::SUBJECT))]
    pub source: String,
    /// Where to republish them.
    #[schemars(regex(pattern = super::subject::SUBJECT))]
    pub destination: String,
    /// Republish only the headers, not the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_only: Option<bool>,
}

/// Limits applied to every consumer of the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLimits {
    /// The longest a consumer may stay inactive before it is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_threshold: Option<GoDuration>,
    /// The most unacknowledged messages a consumer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub max_ack_pending: Option<i64>,
}

/// What the operator did and what the server reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The JetStream name of the stream this object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The stream's contents, as the server last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StreamState>,
    /// The stream's replicas, as the server last reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    pub messages: u64,
    pub bytes: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub consumer_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// The server leading the stream's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The other replicas and how far behind they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaState {
    pub name: String,
    pub current: bool,
    /// Operations this replica is behind the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}
