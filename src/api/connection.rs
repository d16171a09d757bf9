//! The `NatsConnection` kind: how to reach one NATS system.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to reach a NATS system. Streams and Consumers name it in `connectionRef`;
/// secrets are read from Secrets in the same namespace and never copied elsewhere.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "jetway.dev",
    version = "v1alpha1",
    kind = "NatsConnection",
    namespaced,
    status = "NatsConnectionStatus",
    shortname = "natsconn",
    category = "jetway",
    printcolumn = r#"{"name":"Servers","type":"string","jsonPath":".spec.servers"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.serverVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!(has(self.domain) && has(self.apiPrefix))")
        .message("set domain or apiPrefix, not both")
        .field_path(".apiPrefix")
)]
#[serde(rename_all = "camelCase")]
pub struct NatsConnectionSpec {
    /// NATS server URLs, such as `nats://nats.nats.svc:4222` or `tls://...`.
    #[schemars(length(min = 1))]
    pub servers: Vec<String>,
    /// How to authenticate; at most one method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ConnectionAuth>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ConnectionTls>,
    /// The JetStream domain to address; cannot be set together with `apiPrefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The JetStream API prefix to address, for an imported JetStream API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_prefix: Option<String>,
    /// A user of the system account on the same servers, if the operator may have one:
    /// every consumer's figures are then read with one request that each server answers
    /// (JSZ), instead of a list per stream. Same shape as `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_auth: Option<ConnectionAuth>,
}

/// One way to authenticate. Secret values are read from keys of Secrets in the
/// NatsConnection's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("(has(self.userPassword) ? 1 : 0) + (has(self.token) ? 1 : 0) + (has(self.nkey) ? 1 : 0) + (has(self.creds) ? 1 : 0) <= 1")
        .message("choose one of userPassword, token, nkey and creds")
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionAuth {
    /// A user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<UserPassword>,
    /// A token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKey>,
    /// An nkey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<SecretKey>,
    /// A credentials file (user JWT and nkey seed), as `nsc` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds: Option<SecretKey>,
}

/// One key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKey {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

/// A user name and password, from one Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPassword {
    /// The Secret holding both.
    pub secret_name: String,
    /// The key of the user name; default `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// The key of the password; default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// TLS towards the NATS servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTls {
    /// The CA bundle (PEM) that signs the servers' certificates. Unset: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKey>,
    /// A client certificate for mutual TLS, from a Secret with `tls.crt` and `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
    /// The name the servers' certificates carry, when it is not the host in `servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Start with the TLS handshake instead of the server's INFO (`handshake_first` on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_first: Option<bool>,
}

/// What the operator found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsConnectionStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (connected and JetStream answering), `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The version of the server the operator is connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The JetStream account's usage and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountUsage>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountUsage {
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub streams: u64,
    pub consumers: u64,
    /// -1 for unlimited.
    pub max_memory_bytes: i64,
    /// -1 for unlimited.
    pub max_storage_bytes: i64,
    /// -1 for unlimited.
    pub max_streams: i64,
    /// -1 for unlimited.
    pub max_consumers: i64,
}
