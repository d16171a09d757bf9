//! NatsConnection objects: resolved, with their Secrets, into [`NatsSettings`]
//! (dereference: I/O), and a pool of clients, one per distinct resolved
//! configuration, shared by the objects that use it and closed when none does.
//! A Secret that changes resolves to new settings, and so to a new client.

mod secrets;

pub use secrets::{Named, SecretData, Secrets};

use std::collections::HashMap;

use async_nats::ConnectErrorKind;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::api::connection::{ConnectionAuth, NatsConnectionSpec, SecretKey};
use crate::jsz::SystemAccess;
use crate::metrics::Metrics;
use crate::nats::{ConnectError, LastError, NatsAuth, NatsSettings, Pem, Redacted, TlsSettings};

/// One pooled connection.
#[derive(Clone)]
pub struct Pooled {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub last_error: LastError,
    /// A client of the system account beside it, when the settings give one.
    pub system: Option<Arc<SystemAccess>>,
}

impl Pooled {
    /// A new client for `settings`, with a system-account client beside it if they name one.
    pub async fn connect(settings: &NatsSettings) -> Result<Self, ConnectError> {
        let last_error = LastError::default();
        let client = settings.connect("jetway", last_error.clone()).await?;
        let system = settings.connect_system("jetway-system", last_error.clone()).await?;
        Ok(Self {
            jetstream: settings.jetstream(client.clone()),
            system: system.map(|system| Arc::new(SystemAccess::new(system, client.clone()))),
            client,
            last_error,
        })
    }

    /// Whether `other` is this same client (each connect has an error slot of its own).
    pub fn is(&self, other: &Pooled) -> bool {
        Arc::ptr_eq(&self.last_error, &other.last_error)
    }

    /// What the connection last complained about, if it is not connected now.
    pub fn problem(&self) -> Option<String> {
        if self.client.connection_state() == async_nats::connection::State::Connected {
            return None;
        }
        self.last_error.lock().expect("last error lock").clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the NatsConnection {0} does not exist in this namespace")]
    NotFound(String),
    #[error("the Secret {0} does not exist")]
    SecretNotFound(String),
    #[error("the Secret {secret} has no key {key}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("the Secret {secret}'s key {key} is not text")]
    SecretNotText { secret: String, key: String },
    #[error("the Secret {secret} cannot be read: {error}")]
    SecretUnreadable { secret: String, error: String },
    #[error("the NatsConnection {0} cannot be read: {1}")]
    Unreadable(String, String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl ResolveError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NatsConnectionNotFound",
            Self::SecretNotFound(_) => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::SecretNotText { .. } => "SecretNotText",
            Self::SecretUnreadable { .. } => "KubernetesApiError",
            Self::Unreadable(..) => "InvalidNatsConnection",
            Self::Connect(_) => "InvalidConnectionSettings",
        }
    }
}

/// Builds a NatsConnection's settings from the Secrets it names, as watched.
pub async fn resolve(
    secrets: &Secrets,
    namespace: &str,
    spec: &NatsConnectionSpec,
) -> Result<NatsSettings, ResolveError> {
    let value = |reference: SecretKey| async move {
        let data = secrets
            .data(namespace, &reference.name)
            .await?
            .ok_or_else(|| ResolveError::SecretNotFound(reference.name.clone()))?;
        let bytes = data.get(&reference.key).ok_or_else(|| ResolveError::SecretKeyMissing {
            secret: reference.name.clone(),
            key: reference.key.clone(),
        })?;
        String::from_utf8(bytes.0.clone())
            .map_err(|_| ResolveError::SecretNotText { secret: reference.name.clone(), key: reference.key.clone() })
    };
    let key = |name: &str, key: &str| SecretKey { name: name.to_owned(), key: key.to_owned() };
    let auth_of = |auth: Option<ConnectionAuth>| async move {
        let Some(auth) = auth else { return Ok(NatsAuth::None) };
        Ok::<_, ResolveError>(if let Some(up) = &auth.user_password {
            let user = value(key(&up.secret_name, up.user_key.as_deref().unwrap_or("user"))).await?;
            let password = value(key(&up.secret_name, up.password_key.as_deref().unwrap_or("password"))).await?;
            NatsAuth::UserPassword { user, password: Redacted(password) }
        } else if let Some(token) = auth.token {
            NatsAuth::Token(Redacted(value(token).await?))
        } else if let Some(nkey) = auth.nkey {
            NatsAuth::NkeySeed(Redacted(value(nkey).await?))
        } else if let Some(creds) = auth.creds {
            NatsAuth::Creds(Redacted(value(creds).await?))
        } else {
            NatsAuth::None
        })
    };
    let auth = auth_of(spec.auth.clone()).await?;
    let system = match &spec.system_auth {
        Some(system) => Some(auth_of(Some(system.clone())).await?),
        None => None,
    };
    let mut tls = TlsSettings::default();
    if let Some(spec_tls) = &spec.tls {
        if let Some(ca) = &spec_tls.ca {
            tls.ca = Some(Pem::Inline(Redacted(value(ca.clone()).await?)));
        }
        if let Some(name) = &spec_tls.client_secret_name {
            let cert = value(key(name, "tls.crt")).await?;
            let private = value(key(name, "tls.key")).await?;
            tls.client = Some((Pem::Inline(Redacted(cert)), Pem::Inline(Redacted(private))));
        }
        tls.server_name = spec_tls.server_name.clone();
        tls.handshake_first = spec_tls.handshake_first.unwrap_or(false);
    }
    Ok(NatsSettings {
        servers: spec.servers.clone(),
        auth,
        tls,
        domain: spec.domain.clone(),
        api_prefix: spec.api_prefix.clone(),
        system,
    })
}

/// Clients, one per distinct resolved configuration, and who uses which.
pub struct Pool {
    default: Pooled,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<NatsSettings, Pooled>>,
    users: Mutex<HashMap<String, NatsSettings>>,
}

impl Pool {
    pub fn new(default: Pooled, metrics: Arc<Metrics>) -> Self {
        Self { default, metrics, clients: Mutex::default(), users: Mutex::default() }
    }

    /// The operator's default connection.
    pub fn default_connection(&self) -> Pooled {
        self.default.clone()
    }

    /// The client for `settings`, used by `user` (an object key) from now on.
    pub async fn get(&self, user: &str, settings: NatsSettings) -> Result<Pooled, ConnectError> {
        let pooled = {
            let mut clients = self.clients.lock().await;
            match clients.get(&settings) {
                Some(pooled) => pooled.clone(),
                None => {
                    let pooled = Pooled::connect(&settings).await?;
                    clients.insert(settings.clone(), pooled.clone());
                    self.metrics.nats_connections.set(clients.len() as i64);
                    pooled
                }
            }
        };
        let previous = self.users.lock().await.insert(user.to_owned(), settings.clone());
        if let Some(previous) = previous.filter(|p| *p != settings) {
            self.close_if_unused(&previous).await;
        }
        Ok(pooled)
    }

    /// `user` no longer uses any pooled connection.
    pub async fn release(&self, user: &str) {
        let previous = self.users.lock().await.remove(user);
        if let Some(previous) = previous {
            self.close_if_unused(&previous).await;
        }
    }

    /// How many distinct pooled connections are open.
    pub async fn open(&self) -> usize {
        self.clients.lock().await.len()
    }

    async fn close_if_unused(&self, settings: &NatsSettings) {
        if self.users.lock().await.values().any(|s| s == settings) {
            return;
        }
        let mut clients = self.clients.lock().await;
        let removed = clients.remove(settings);
        self.metrics.nats_connections.set(clients.len() as i64);
        drop(clients);
        if let Some(pooled) = removed {
            tokio::spawn(async move {
                let _ = pooled.client.drain().await;
            });
        }
    }
}

/// Why a connection attempt failed: a reason for conditions, and for TLS what the
/// handshake found wrong, so that a message can name what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub reason: &'static str,
    pub tls: Option<TlsProblem>,
}

/// What a TLS handshake found wrong, from rustls's own error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsProblem {
    /// The server's certificate is not signed by the CA the client trusts.
    UnknownIssuer,
    /// The server's certificate does not carry the name the client expects.
    NotValidForName,
    Expired,
    /// The server refused the client's certificate, or wanted one.
    ClientCertificateRefused,
    Other(String),
}

impl From<&async_nats::rustls::Error> for TlsProblem {
    fn from(error: &async_nats::rustls::Error) -> Self {
        use async_nats::rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
        match error {
            Error::InvalidCertificate(Cert::UnknownIssuer) => Self::UnknownIssuer,
            Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
                Self::NotValidForName
            }
            Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => Self::Expired,
            Error::AlertReceived(Alert::BadCertificate | Alert::CertificateRequired | Alert::UnknownCA) => {
                Self::ClientCertificateRefused
            }
            other => Self::Other(other.to_string()),
        }
    }
}

/// One direct connection attempt, to tell why a pooled client cannot connect:
/// the reason comes from async-nats's error kind, the TLS problem from rustls's.
pub async fn probe(settings: &NatsSettings) -> Option<ProbeFailure> {
    let failure = |reason| Some(ProbeFailure { reason, tls: None });
    let mut probe = settings.clone();
    probe.servers.truncate(1);
    let addr = probe.servers.first()?.parse::<async_nats::ServerAddr>().ok()?;
    let options = async_nats::ConnectOptions::new().connection_timeout(std::time::Duration::from_secs(3));
    let options = match crate::nats::authenticated(options, &probe).await {
        Ok(options) => options,
        Err(_) => return failure("InvalidConnectionSettings"),
    };
    match options.connect(addr).await {
        Ok(client) => {
            let _ = client.drain().await;
            None
        }
        Err(err) => {
            // A refused certificate arrives as an I/O error wrapping rustls's own.
            if let Some(tls) = tls_cause(&err) {
                return Some(ProbeFailure { reason: "TlsFailed", tls: Some(TlsProblem::from(tls)) });
            }
            failure(match err.kind() {
                ConnectErrorKind::AuthorizationViolation => "AuthorizationViolation",
                ConnectErrorKind::Authentication => "AuthenticationFailed",
                ConnectErrorKind::Tls => "TlsFailed",
                ConnectErrorKind::TimedOut | ConnectErrorKind::Io | ConnectErrorKind::Dns => "Unreachable",
                _ => "ConnectFailed",
            })
        }
    }
}

fn tls_cause<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e async_nats::rustls::Error> {
    let mut cause = Some(err);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        cause = error.source();
    }
    None
}
