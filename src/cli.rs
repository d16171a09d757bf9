//! The command line. Every flag has an environment variable, for Deployments and
//! GitOps tools that set env more easily than arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::GoDuration;
use crate::controller::Settings;
use crate::nats::{NatsAuth, NatsSettings, Pem, Redacted, TlsSettings};
use crate::run::Config;
use crate::telemetry::LogArgs;

#[derive(Debug, Parser)]
#[command(name = "jetway", version, about = "Kubernetes operator for NATS JetStream")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crds,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// NATS servers of the default connection, comma-separated.
    #[arg(long, env = "JETWAY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// A NATS credentials file (JWT and nkey seed) for the default connection.
    #[arg(long, env = "JETWAY_NATS_CREDS", conflicts_with_all = ["nats_nkey", "nats_user", "nats_token"])]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed for the default connection.
    #[arg(long, env = "JETWAY_NATS_NKEY", conflicts_with_all = ["nats_user", "nats_token"])]
    pub nats_nkey: Option<PathBuf>,
    /// User name for the default connection (with --nats-password).
    #[arg(long, env = "JETWAY_NATS_USER", requires = "nats_password", conflicts_with = "nats_token")]
    pub nats_user: Option<String>,
    /// Password for --nats-user.
    #[arg(long, env = "JETWAY_NATS_PASSWORD", hide_env_values = true, requires = "nats_user")]
    pub nats_password: Option<String>,
    /// Token for the default connection.
    #[arg(long, env = "JETWAY_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// CA bundle (PEM) that signs the NATS servers' certificates.
    #[arg(long, env = "JETWAY_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --nats-tls-key.
    #[arg(long, env = "JETWAY_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for --nats-tls-cert.
    #[arg(long, env = "JETWAY_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "JETWAY_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often every object is checked again without a change, to revert changes
    /// made on the server behind Jetway's back (jittered by a tenth).
    #[arg(long, env = "JETWAY_RESYNC_INTERVAL", default_value = "30s")]
    pub resync_interval: GoDuration,
    /// Report in status what would change, and change nothing on the servers.
    #[arg(long, env = "JETWAY_OBSERVE_ONLY")]
    pub observe_only: bool,
    /// The name the NATS servers' certificates carry, when it is not the URL's host.
    #[arg(long, env = "JETWAY_NATS_TLS_SERVER_NAME")]
    pub nats_tls_server_name: Option<String>,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "JETWAY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

impl RunArgs {
    /// The run configuration, with Kubernetes access found the usual way (in-cluster,
    /// or `KUBECONFIG`).
    pub async fn into_config(self) -> Result<Config, kube::config::InferConfigError> {
        let kube = kube::Config::infer().await?;
        Ok(self.into_config_with(kube))
    }

    pub fn into_config_with(self, kube: kube::Config) -> Config {
        let auth = if let Some(path) = self.nats_creds {
            NatsAuth::CredsFile(path)
        } else if let Some(path) = self.nats_nkey {
            NatsAuth::NkeySeedFile(path)
        } else if let (Some(user), Some(password)) = (self.nats_user, self.nats_password) {
            NatsAuth::UserPassword { user, password: Redacted(password) }
        } else if let Some(token) = self.nats_token {
            NatsAuth::Token(Redacted(token))
        } else {
            NatsAuth::None
        };
        let nats = NatsSettings {
            servers: self.nats_url.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            auth,
            tls: TlsSettings {
                ca: self.nats_tls_ca.map(Pem::File),
                client: self.nats_tls_cert.zip(self.nats_tls_key).map(|(c, k)| (Pem::File(c), Pem::File(k))),
                server_name: self.nats_tls_server_name,
                handshake_first: false,
            },
            ..Default::default()
        };
        let controllers = Settings { resync: self.resync_interval.0, observe_only: self.observe_only };
        Config { kube, nats, http_addr: self.metrics_addr, namespace: self.namespace, controllers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_run_flag_has_an_environment_variable() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        for arg in run.get_arguments().filter(|a| a.get_long().is_some()) {
            assert!(arg.get_env().is_some(), "--{} has no env fallback", arg.get_long().unwrap_or_default());
        }
    }

    #[test]
    fn user_and_password_become_one_auth_method() {
        let cli = Cli::parse_from([
            "jetway",
            "run",
            "--nats-user",
            "a",
            "--nats-password",
            "b",
            "--nats-url",
            "nats://x:1, nats://y:2",
        ]);
        let Command::Run(args) = cli.command else { panic!("expected run") };
        let config = (*args).into_config_with(kube::Config::new("https://127.0.0.1:1".parse().unwrap()));
        assert_eq!(config.nats.servers, ["nats://x:1", "nats://y:2"]);
        assert!(matches!(config.nats.auth, NatsAuth::UserPassword { ref user, .. } if user == "a"));
    }

    #[test]
    fn a_token_and_a_user_together_are_refused() {
        let result =
            Cli::try_parse_from(["jetway", "run", "--nats-user", "a", "--nats-password", "b", "--nats-token", "t"]);
        assert!(result.is_err());
    }
}
