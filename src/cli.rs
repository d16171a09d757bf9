//! The command line. Every flag has an environment variable, for Deployments and
//! GitOps tools that set env more easily than arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::GoDuration;
use crate::controller::{Autoscaler, Settings};
use crate::extmetrics::Certificate;
use crate::leader::LeaderElection;
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
    /// Without any cluster: compare manifests with the live JetStream and print what
    /// `run` would change. Exit code 0: nothing; 2: changes pending; 1: an error, or a
    /// change `run` would refuse.
    Plan(Box<PlanArgs>),
    /// Print the Stream and Consumer manifests that adopt what a NATS system holds.
    Export(Box<ExportArgs>),
    /// Print NACK (jetstream.nats.io/v1beta2) manifests as Jetway objects; notes on stderr.
    Convert(ConvertArgs),
}

/// How to reach the default NATS system: the operator's, and the one `plan` and
/// `export` read.
#[derive(Debug, Args)]
pub struct NatsArgs {
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
    /// The name the NATS servers' certificates carry, when it is not the URL's host.
    #[arg(long, env = "JETWAY_NATS_TLS_SERVER_NAME")]
    pub nats_tls_server_name: Option<String>,
    /// Creds file of a user in the NATS system account, for the default connection's
    /// servers: consumer figures are then read with one JSZ request to the servers
    /// each round, instead of per-stream lists.
    #[arg(long, env = "JETWAY_NATS_SYSTEM_CREDS", conflicts_with = "nats_system_user")]
    pub nats_system_creds: Option<PathBuf>,
    /// User name in the system account (with --nats-system-password), instead of a creds file.
    #[arg(long, env = "JETWAY_NATS_SYSTEM_USER", requires = "nats_system_password")]
    pub nats_system_user: Option<String>,
    /// Password for --nats-system-user.
    #[arg(long, env = "JETWAY_NATS_SYSTEM_PASSWORD", hide_env_values = true, requires = "nats_system_user")]
    pub nats_system_password: Option<String>,
}

impl NatsArgs {
    pub fn settings(self) -> NatsSettings {
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
        let system = match (self.nats_system_creds, self.nats_system_user, self.nats_system_password) {
            (Some(path), ..) => Some(NatsAuth::CredsFile(path)),
            (None, Some(user), Some(password)) => Some(NatsAuth::UserPassword { user, password: Redacted(password) }),
            _ => None,
        };
        NatsSettings {
            system,
            servers: self.nats_url.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            auth,
            tls: TlsSettings {
                ca: self.nats_tls_ca.map(Pem::File),
                client: self.nats_tls_cert.zip(self.nats_tls_key).map(|(c, k)| (Pem::File(c), Pem::File(k))),
                server_name: self.nats_tls_server_name,
                handshake_first: false,
            },
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "JETWAY_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often every object is checked again without a change, to revert changes
    /// made on the server behind Jetway's back (jittered by a tenth).
    #[arg(long, env = "JETWAY_RESYNC_INTERVAL", default_value = "30s")]
    pub resync_interval: GoDuration,
    /// How often the lag of consumers that drive scaling (autoscaled WorkerPools,
    /// HPAs asking the external metrics API) is read: one stream info and consumer
    /// list per stream they are on.
    #[arg(long, env = "JETWAY_LAG_INTERVAL", default_value = "1s")]
    pub lag_interval: GoDuration,
    /// How often every other consumer's and stream's figures are read, for
    /// /metrics; at least the lag interval.
    #[arg(long, env = "JETWAY_METRICS_INTERVAL", default_value = "15s")]
    pub metrics_interval: GoDuration,
    /// Report in status what would change, and change nothing on the servers.
    #[arg(long, env = "JETWAY_OBSERVE_ONLY")]
    pub observe_only: bool,
    /// Serve the external metrics API (external.metrics.k8s.io/v1beta1) on this
    /// address, over TLS; autoscaled WorkerPools then get an HPA on it. Leave unset
    /// where another adapter owns the APIService: Jetway's own scaler then drives each
    /// pool's /scale.
    #[arg(long, env = "JETWAY_EXTERNAL_METRICS_ADDR")]
    pub external_metrics_addr: Option<SocketAddr>,
    /// The external metrics API's serving certificate (PEM); a self-signed one is made
    /// at start without it.
    #[arg(long, env = "JETWAY_EXTERNAL_METRICS_CERT", requires = "external_metrics_key")]
    pub external_metrics_cert: Option<PathBuf>,
    /// The key of --external-metrics-cert (PEM).
    #[arg(long, env = "JETWAY_EXTERNAL_METRICS_KEY", requires = "external_metrics_cert")]
    pub external_metrics_key: Option<PathBuf>,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "JETWAY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Take part in leader election on a Lease; only the leader writes. Turn off only
    /// where a single replica runs.
    #[arg(long, env = "JETWAY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, env = "JETWAY_LEADER_ELECT_LEASE_NAME", default_value = "jetway")]
    pub leader_elect_lease_name: String,
    /// The Lease's namespace (default: the operator's own, or the kubeconfig's).
    #[arg(long, env = "JETWAY_LEADER_ELECT_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,
    /// How long a lease lasts unrenewed: the longest a standby waits after the leader
    /// died.
    #[arg(long, env = "JETWAY_LEADER_ELECT_LEASE_DURATION", default_value = "10s")]
    pub leader_elect_lease_duration: GoDuration,
    /// How long before the lease runs out the leader renews it.
    #[arg(long, env = "JETWAY_LEADER_ELECT_RENEW_BEFORE", default_value = "4s")]
    pub leader_elect_renew_before: GoDuration,
}

impl RunArgs {
    /// The run configuration, with Kubernetes access found the usual way (in-cluster,
    /// or `KUBECONFIG`).
    pub async fn into_config(self) -> Result<Config, kube::config::InferConfigError> {
        let kube = kube::Config::infer().await?;
        Ok(self.into_config_with(kube))
    }

    pub fn into_config_with(self, kube: kube::Config) -> Config {
        let controllers = Settings {
            resync: self.resync_interval.0,
            observe_only: self.observe_only,
            lag_interval: self.lag_interval.0,
            metrics_interval: self.metrics_interval.0.max(self.lag_interval.0),
            autoscaler: if self.external_metrics_addr.is_some() { Autoscaler::Hpa } else { Autoscaler::Jetway },
        };
        let certificate = match (self.external_metrics_cert, self.external_metrics_key) {
            (Some(cert), Some(key)) => Certificate::Files { cert, key },
            _ => Certificate::SelfSigned(vec!["jetway".into(), "localhost".into()]),
        };
        Config {
            nats: self.nats.settings(),
            http_addr: self.metrics_addr,
            namespace: self.namespace,
            controllers,
            external_metrics: self.external_metrics_addr.map(|addr| (addr, certificate)),
            leader_election: self.leader_elect.then(|| {
                // In a cluster the chart passes the Pod's name and namespace (downward API).
                let pod_name = std::env::var("POD_NAME").ok();
                let pod_namespace = std::env::var("POD_NAMESPACE").ok();
                let identity = pod_name.clone().unwrap_or_else(|| {
                    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "jetway".into());
                    format!("{host}-{:08x}", rand::random::<u32>())
                });
                LeaderElection {
                    lease: self.leader_elect_lease_name,
                    namespace: self
                        .leader_elect_namespace
                        .or_else(|| pod_namespace.clone())
                        .unwrap_or_else(|| kube.default_namespace.clone()),
                    identity,
                    duration: self.leader_elect_lease_duration.0,
                    renew_before: self.leader_elect_renew_before.0,
                    pod: pod_namespace.zip(pod_name),
                }
            }),
            kube,
        }
    }
}

/// Output formats of `plan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A manifest file, a directory of them (read recursively), or - for stdin.
    #[arg(short = 'f', long = "filename", env = "JETWAY_PLAN_FILENAME")]
    pub path: PathBuf,
    /// The namespace of objects whose manifest names none, as `kubectl apply -n`.
    #[arg(short = 'n', long, env = "JETWAY_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// `text` for people, `json` for tools.
    #[arg(short = 'o', long, env = "JETWAY_PLAN_OUTPUT", value_enum, default_value_t)]
    pub output: Output,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The namespace written into the manifests (none when absent).
    #[arg(short = 'n', long, env = "JETWAY_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// NACK manifests: a file, a directory (read recursively), or - for stdin.
    #[arg(short = 'f', long = "filename", env = "JETWAY_CONVERT_FILENAME")]
    pub path: PathBuf,
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
    fn every_flag_of_every_command_has_an_environment_variable() {
        let cli = Cli::command();
        for command in cli.get_subcommands() {
            for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
                let flag = arg.get_long().unwrap_or_default();
                assert!(arg.get_env().is_some(), "{} --{flag} has no env fallback", command.get_name());
            }
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
