//! The `WorkerPool` kind: a Deployment of workers bound to a Consumer, scaled on the
//! consumer's pending messages.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use super::stream::LocalRef;

/// Workers for one Consumer, as a Deployment that Jetway owns and scales.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetway.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    status = "WorkerPoolStatus",
    shortname = "jwp",
    category = "jetway",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas")
        .message("autoscaling.minReplicas cannot be above maxReplicas")
        .field_path(".autoscaling.minReplicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// The Consumer object, in this namespace, whose pending messages the workers take.
    pub consumer_ref: LocalRef,
    /// Replicas. With autoscaling, the scaler sets it through the `/scale`
    /// subresource, and a value written by hand lasts until its next decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub replicas: Option<i32>,
    /// The workers' container.
    pub worker: Worker,
    /// Scaling on pending messages. Absent: `replicas` workers (1 when unset), always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// The container every worker pod runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Seconds a stopping worker gets to settle its in-flight messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Labels added to the pods (the pool's selector label always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// How the pool follows its consumer's pending messages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas cannot be above maxReplicas", "fieldPath": ".minReplicas"},
    {"rule": "!has(self.cooldown) || duration(self.cooldown) <= duration('24h')", "message": "cooldown is at most 24h", "fieldPath": ".cooldown"},
]))]
pub struct Autoscaling {
    /// Replicas at the least; 0 lets an idle pool stop entirely.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 2147483647))]
    pub max_replicas: i32,
    /// Pending messages one replica is meant to work through.
    #[schemars(range(min = 1))]
    pub target_pending_per_replica: i64,
    /// With minReplicas 0: the pool wakes from 0 once pending rises above this, and
    /// goes back to 0 once pending has stayed at or below it for `cooldown`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub activation_pending: i64,
    /// How long pending must stay at or below activationPending, with no message in
    /// flight, before the pool goes to 0 (default 5m, at most 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<GoDuration>,
    /// Handed unchanged to the pool's HorizontalPodAutoscaler (stabilization windows,
    /// rate policies). Jetway's own scaler, used where another adapter owns the
    /// external metrics API, follows `cooldown` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Replicas the Deployment has.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas the scaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The pods' label selector, for the `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Pending messages at the last read, and when that figure was first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_observed_at: Option<Time>,
    /// The last change of replicas, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
}
