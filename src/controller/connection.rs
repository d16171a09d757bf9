//! The NatsConnection controller. Each reconcile runs:
//!
//! 1. dereference: the Secrets it names, as watched ([`References::resolve_own`]);
//! 2. observe: the pooled client's state, and the JetStream account;
//! 3. status: connected or not, with a reason; the server version; account usage.
//!
//! When the client is not connected, one direct attempt tells why (authorization,
//! TLS, unreachable), from async-nats's error kind. A change to a Secret it names
//! wakes it; settings that then differ from what its users were given wake them.
//! Deleting a NatsConnection waits until no Stream or Consumer in its namespace
//! refers to it (as the controllers' stores hold them).
//!
//! [`References::resolve_own`]: super::references::References::resolve_own

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tokio_util::sync::CancellationToken;

use super::references::secrets_named;
use super::{Context, ReconcileError, key};
use crate::api::connection::{AccountUsage, NatsConnection, NatsConnectionStatus};
use crate::connection::{TlsProblem, probe};
use crate::status::{Health, conditions};

pub const KIND: &str = "NatsConnection";

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    // A NatsConnection is looked at again when a Secret it names changes.
    let changed = ctx.references.secrets.subscribe();
    let references = ctx.clone();
    let configure = move |controller: super::Controller<NatsConnection>, store: super::Store<NatsConnection>| {
        use futures::StreamExt;
        let _ = references.references.connections.set(store.clone());
        let naming = changed
            .map(move |secret| {
                let naming: Vec<_> = store
                    .state()
                    .into_iter()
                    .filter(|connection| {
                        let namespace = connection.namespace().unwrap_or_default();
                        connection.object.as_ref().is_ok_and(|c| secrets_named(&namespace, &c.spec).contains(&secret))
                    })
                    .map(|connection| kube::runtime::reflector::ObjectRef::from_obj(&*connection))
                    .collect();
                futures::stream::iter(naming)
            })
            .flatten();
        controller.reconcile_on(naming)
    };
    let runner = super::Runner { kind: KIND, namespace, shutdown, configure };
    super::run::<NatsConnection, _, _, _, _, _>(ctx, runner, apply, cleanup).await;
}

/// The pool user that keeps a NatsConnection's own client open while it exists.
fn pool_user(connection: &NatsConnection) -> String {
    format!("NatsConnection:{}", key(connection))
}

async fn apply(connection: Arc<NatsConnection>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = connection.namespace().unwrap_or_default();
    let mut server_version = None;
    let mut account = None;
    let health = match ctx.references.resolve_own(&connection, &pool_user(&connection)).await {
        Err(err) => Health::Stalled { reason: err.reason(), message: err.to_string() },
        Ok(settings) => match ctx.connections.get(&pool_user(&connection), settings.clone()).await {
            Err(err) => Health::Stalled { reason: "InvalidConnectionSettings", message: err.to_string() },
            Ok(pooled) => {
                let answer = tokio::time::timeout(Duration::from_secs(5), pooled.jetstream.query_account()).await;
                match answer {
                    Ok(Ok(info)) => {
                        server_version = Some(pooled.client.server_info().version);
                        account = Some(AccountUsage {
                            memory_bytes: info.memory,
                            storage_bytes: info.storage,
                            streams: info.streams as u64,
                            consumers: info.consumers as u64,
                            max_memory_bytes: info.limits.max_memory.unwrap_or(-1),
                            max_storage_bytes: info.limits.max_storage.unwrap_or(-1),
                            max_streams: info.limits.max_streams.unwrap_or(-1),
                            max_consumers: info.limits.max_consumers.unwrap_or(-1),
                        });
                        Health::Ready { reason: "Connected", message: "connected, and JetStream answers".into() }
                    }
                    _ => {
                        let failure = probe(&settings).await;
                        let reason = failure.as_ref().map_or("JetStreamUnavailable", |f| f.reason);
                        let detail = match failure.and_then(|f| f.tls) {
                            Some(problem) => explain_tls(&problem, &connection, &namespace),
                            None if matches!(reason, "AuthorizationViolation" | "AuthenticationFailed") => {
                                explain_auth(reason, &connection, &namespace)
                            }
                            None => pooled.problem().unwrap_or_else(|| "JetStream did not answer".into()),
                        };
                        Health::Progressing { reason, message: format!("not connected: {detail}") }
                    }
                }
            }
        },
    };
    let previous = connection.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = NatsConnectionStatus {
        observed_generation: connection.metadata.generation,
        conditions: conditions(&previous.conditions, &health, connection.metadata.generation, &now),
        server_version: server_version.or(previous.server_version.clone()),
        account: account.or(previous.account.clone()),
    };
    ctx.write_status(&*connection, &previous, &status).await?;
    let retry = if matches!(health, Health::Ready { .. }) { ctx.settings.resync } else { Duration::from_secs(5) };
    Ok(Action::requeue(retry))
}

/// An authentication failure in the terms of the spec: whose credentials, from which
/// Secret (never their values).
fn explain_auth(reason: &str, connection: &NatsConnection, namespace: &str) -> String {
    let what = if reason == "AuthorizationViolation" { "authorization violation" } else { "authentication failed" };
    let auth = connection.spec.auth.as_ref();
    let source = match auth {
        Some(auth) => match (&auth.user_password, &auth.token, &auth.nkey, &auth.creds) {
            (Some(up), ..) => {
                let key = up.user_key.as_deref().unwrap_or("user");
                format!("for the user in Secret {namespace}/{} key {key}", up.secret_name)
            }
            (_, Some(token), ..) => format!("for the token in Secret {namespace}/{} key {}", token.name, token.key),
            (_, _, Some(nkey), _) => format!("for the nkey in Secret {namespace}/{} key {}", nkey.name, nkey.key),
            (_, _, _, Some(creds)) => {
                format!("for the credentials in Secret {namespace}/{} key {}", creds.name, creds.key)
            }
            _ => "with no credentials (spec.auth names none)".to_owned(),
        },
        None => "with no credentials (spec.auth is unset)".to_owned(),
    };
    format!("{what} {source}")
}

/// A TLS failure in the terms of the spec: which Secret or field to look at.
fn explain_tls(problem: &TlsProblem, connection: &NatsConnection, namespace: &str) -> String {
    let tls = connection.spec.tls.as_ref();
    let ca = match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => format!("the CA in Secret {namespace}/{} key {}", ca.name, ca.key),
        None => "the system's root CAs (spec.tls.ca is unset)".to_owned(),
    };
    let name = tls
        .and_then(|t| t.server_name.clone())
        .map_or_else(|| "the host in spec.servers".to_owned(), |name| format!("{name:?} (spec.tls.serverName)"));
    match problem {
        TlsProblem::UnknownIssuer => format!("the server's certificate is not signed by {ca}"),
        TlsProblem::NotValidForName => format!("the server's certificate is not valid for {name}"),
        TlsProblem::Expired => "the server's certificate has expired".to_owned(),
        TlsProblem::ClientCertificateRefused => match tls.and_then(|t| t.client_secret_name.as_ref()) {
            Some(secret) => format!("the server refused the client certificate in Secret {namespace}/{secret}"),
            None => "the server wants a client certificate; set spec.tls.clientSecretName".to_owned(),
        },
        TlsProblem::Other(error) => format!("the TLS handshake failed: {error}"),
    }
}

async fn cleanup(connection: Arc<NatsConnection>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = connection.namespace().unwrap_or_default();
    ctx.synced.wait(&[super::stream::KIND, super::consumer::KIND]).await;
    let users = ctx.references.users(&namespace, &connection.name_any());
    if !users.is_empty() {
        let error = ReconcileError::InUse(users.join(", "));
        ctx.event(&*connection, true, error.reason(), error.to_string());
        return Err(error);
    }
    let user = pool_user(&connection);
    ctx.references.forget(&connection, &user);
    ctx.connections.release(&user).await;
    Ok(Action::await_change())
}
