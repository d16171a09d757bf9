//! Connecting to NATS: settings resolved from flags (and, later, NatsConnection
//! objects) turned into one async-nats client.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};

/// How to authenticate to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    CredsFile(PathBuf),
    NkeySeedFile(PathBuf),
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
}

/// Everything needed to reach one NATS system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsSettings {
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    pub tls_ca: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the NATS credentials file {path}")]
    ReadCreds { path: PathBuf, source: std::io::Error },
    #[error("reading the nkey seed file {path}")]
    ReadNkey { path: PathBuf, source: std::io::Error },
    #[error("the NATS server URLs {servers} do not parse")]
    Url { servers: String, source: std::io::Error },
    #[error("connecting to NATS at {servers}")]
    Connect { servers: String, source: async_nats::ConnectError },
}

impl NatsSettings {
    /// A client that keeps reconnecting, with backoff, for as long as it lives: an
    /// unreachable server is a state to report, never a reason to give up.
    pub async fn connect(&self, client_name: &str) -> Result<async_nats::Client, ConnectError> {
        let mut options = ConnectOptions::new()
            .name(client_name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move { log_event(&event) });
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::ReadCreds { path: path.clone(), source })?,
            NatsAuth::NkeySeedFile(path) => {
                let seed = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| ConnectError::ReadNkey { path: path.clone(), source })?;
                options.nkey(seed.trim().to_owned())
            }
            NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
            NatsAuth::Token(token) => options.token(token.clone()),
        };
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
        }
        let servers = self.servers.join(",");
        let addrs = self
            .servers
            .iter()
            .map(|url| url.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConnectError::Url { servers: servers.clone(), source })?;
        options.connect(addrs).await.map_err(|source| ConnectError::Connect { servers, source })
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::Draining | Event::Closed => tracing::debug!(event = %event, "NATS connection closing"),
        other => tracing::warn!(event = %other, "NATS connection event"),
    }
}
