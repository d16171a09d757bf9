//! Connecting to NATS: settings resolved from flags or from a NatsConnection and its
//! Secrets, turned into one async-nats client. Secret material is held in
//! [`Redacted`], whose `Debug` shows nothing of it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::rustls;
use async_nats::{ConnectOptions, Event, ServerAddr};

/// A secret value; printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// PEM material: a file (flags), or inline (read from a Secret).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pem {
    File(PathBuf),
    Inline(Redacted),
}

/// How to authenticate to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatsAuth {
    #[default]
    None,
    CredsFile(PathBuf),
    Creds(Redacted),
    NkeySeedFile(PathBuf),
    NkeySeed(Redacted),
    UserPassword {
        user: String,
        password: Redacted,
    },
    Token(Redacted),
}

/// TLS towards the servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub ca: Option<Pem>,
    /// Client certificate and key, for mutual TLS.
    pub client: Option<(Pem, Pem)>,
    /// The name the servers' certificates must carry, when it is not the URL's host.
    pub server_name: Option<String>,
    pub handshake_first: bool,
}

/// Everything needed to reach one NATS system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatsSettings {
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    pub tls: TlsSettings,
    pub domain: Option<String>,
    pub api_prefix: Option<String>,
    /// Credentials of a user in the system account, on the same servers: with them the
    /// inventory reads every consumer's figures with one JSZ request to the servers.
    pub system: Option<NatsAuth>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the NATS credentials do not parse")]
    Creds(#[source] std::io::Error),
    #[error("the TLS {what} does not parse as PEM")]
    Pem { what: &'static str },
    #[error("the TLS settings are not usable: {0}")]
    Tls(#[source] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("the NATS server URLs {servers} do not parse")]
    Url { servers: String, source: std::io::Error },
    #[error("connecting to NATS at {servers}")]
    Connect { servers: String, source: async_nats::ConnectError },
}

/// The last problem a connection reported, for status messages.
pub type LastError = Arc<std::sync::Mutex<Option<String>>>;

pub(crate) async fn read(pem: &Pem) -> Result<Vec<u8>, ConnectError> {
    match pem {
        Pem::File(path) => {
            tokio::fs::read(path).await.map_err(|source| ConnectError::Read { path: path.clone(), source })
        }
        Pem::Inline(text) => Ok(text.0.clone().into_bytes()),
    }
}

async fn read_string(path: &PathBuf) -> Result<String, ConnectError> {
    tokio::fs::read_to_string(path).await.map_err(|source| ConnectError::Read { path: path.clone(), source })
}

impl NatsSettings {
    /// A client that keeps reconnecting, with backoff, for as long as it lives: an
    /// unreachable server is a state to report, never a reason to give up. Problems
    /// the connection meets are logged and kept in `last_error`.
    pub async fn connect(&self, client_name: &str, last_error: LastError) -> Result<async_nats::Client, ConnectError> {
        let events = last_error.clone();
        let options = ConnectOptions::new()
            .name(client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let events = events.clone();
                async move { log_event(&event, &events) }
            });
        self.connect_with(options).await
    }

    /// A client for a command that runs once: the first failure to connect is the
    /// answer.
    pub async fn connect_once(&self, client_name: &str) -> Result<async_nats::Client, ConnectError> {
        self.connect_with(ConnectOptions::new().name(client_name).connection_timeout(Duration::from_secs(5))).await
    }

    async fn connect_with(&self, options: ConnectOptions) -> Result<async_nats::Client, ConnectError> {
        let options = authenticated(options, self).await?;
        let servers = self.servers.join(",");
        let addrs = self
            .servers
            .iter()
            .map(|url| url.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConnectError::Url { servers: servers.clone(), source })?;
        options.connect(addrs).await.map_err(|source| ConnectError::Connect { servers, source })
    }

    /// A client of the system account, when the settings hold its credentials.
    pub async fn connect_system(
        &self,
        client_name: &str,
        last_error: LastError,
    ) -> Result<Option<async_nats::Client>, ConnectError> {
        let Some(system) = &self.system else { return Ok(None) };
        let settings = Self { auth: system.clone(), system: None, ..self.clone() };
        settings.connect(client_name, last_error).await.map(Some)
    }

    /// The JetStream API, at the domain or prefix the settings name.
    pub fn jetstream(&self, client: async_nats::Client) -> async_nats::jetstream::Context {
        match (&self.domain, &self.api_prefix) {
            (Some(domain), _) => async_nats::jetstream::with_domain(client, domain),
            (None, Some(prefix)) => async_nats::jetstream::with_prefix(client, prefix),
            (None, None) => async_nats::jetstream::new(client),
        }
    }
}

/// `options` with the settings' credentials and TLS applied.
pub async fn authenticated(
    mut options: ConnectOptions,
    settings: &NatsSettings,
) -> Result<ConnectOptions, ConnectError> {
    options = match &settings.auth {
        NatsAuth::None => options,
        NatsAuth::CredsFile(path) => options.credentials(&read_string(path).await?).map_err(ConnectError::Creds)?,
        NatsAuth::Creds(text) => options.credentials(&text.0).map_err(ConnectError::Creds)?,
        NatsAuth::NkeySeedFile(path) => options.nkey(read_string(path).await?.trim().to_owned()),
        NatsAuth::NkeySeed(seed) => options.nkey(seed.0.trim().to_owned()),
        NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.0.clone()),
        NatsAuth::Token(token) => options.token(token.0.clone()),
    };
    if settings.tls.ca.is_some() || settings.tls.client.is_some() {
        options = options.tls_client_config(crate::tls::client_config(&settings.tls).await?).require_tls(true);
    }
    if settings.tls.handshake_first {
        options = options.tls_first();
    }
    Ok(options)
}

fn log_event(event: &Event, last_error: &LastError) {
    match event {
        Event::Connected => {
            tracing::info!("connected to NATS");
            *last_error.lock().expect("last error lock") = None;
        }
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::Draining | Event::Closed => tracing::debug!(event = %event, "NATS connection closing"),
        other => {
            tracing::warn!(event = %other, "NATS connection event");
            *last_error.lock().expect("last error lock") = Some(other.to_string());
        }
    }
}
