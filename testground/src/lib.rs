//! Jetway's test ground: a real nats-server with JetStream and a real Kubernetes
//! control plane (etcd, kube-apiserver, kube-controller-manager), each on a free
//! loopback port with its own data directory, torn down when dropped, and killed
//! by a [`process::Lifeline`] even when the process that started them is not.
//!
//! The `jetway-testground` binary starts one for a command (`exec`) or until Ctrl-C
//! (`up`) and hands it over in environment variables; [`Ground::from_env`] attaches
//! to those, and [`Ground::start`] starts a private one.

pub mod dashboard;
pub mod jaeger;
pub mod kube;
pub mod nats;
pub mod netns;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod tools;
pub mod wait;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::kube::KubeControlPlane;
pub use crate::nats::{NatsCluster, NatsServer};
pub use crate::tools::Tools;

/// Names the admin kubeconfig of a running test ground.
pub const KUBECONFIG_ENV: &str = "JETWAY_TEST_KUBECONFIG";
/// Names the `nats://` URL of a running test ground's nats-server.
pub const NATS_URL_ENV: &str = "JETWAY_TEST_NATS_URL";
/// Names the client URL of a running test ground's etcd.
pub const ETCD_URL_ENV: &str = "JETWAY_TEST_ETCD_URL";
/// Names the directory holding the ground's logs, certificates and data.
pub const DIR_ENV: &str = "JETWAY_TESTGROUND_DIR";

/// What to start.
#[derive(Clone, Debug)]
pub struct GroundOptions {
    /// Start kube-controller-manager, for tests in which Deployments or HPAs act.
    pub controller_manager: bool,
    /// Keep the directory (logs, data) after the ground stops.
    pub keep_dir: bool,
}

impl Default for GroundOptions {
    fn default() -> Self {
        Self { controller_manager: true, keep_dir: false }
    }
}

/// A running test ground.
pub struct Ground {
    pub nats: NatsServer,
    pub kube: KubeControlPlane,
    pub tools: Tools,
    dir: PathBuf,
    _lifeline: Arc<process::Lifeline>,
}

impl Ground {
    /// Starts nats-server and the control plane side by side in a fresh directory.
    pub async fn start(tools: Tools, options: &GroundOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("jetway-testground-").tempdir()?.keep();
        let lifeline = Arc::new(process::Lifeline::start((!options.keep_dir).then_some(dir.as_path()))?);
        let (nats_dir, kube_dir) = (dir.join("nats"), dir.join("kube"));
        std::fs::create_dir_all(&nats_dir)?;
        std::fs::create_dir_all(&kube_dir)?;
        let (nats, kube) = tokio::join!(
            NatsServer::start_in(&tools, &nats_dir, lifeline.clone(), ""),
            KubeControlPlane::start(&tools, &kube_dir, lifeline.clone(), options.controller_manager),
        );
        Ok(Self { nats: nats?, kube: kube?, tools, dir, _lifeline: lifeline })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The variables that hand this ground to a test process or a shell: the
    /// `JETWAY_TEST_*` ones that [`Attached::from_env`] reads, and the ordinary
    /// `KUBECONFIG`, `JETWAY_NATS_URL` and `PATH` (with the tools) for kubectl,
    /// nats and `jetway run`.
    pub fn env(&self) -> Vec<(String, String)> {
        let kubeconfig = self.kube.kubeconfig_path().display().to_string();
        let path = match std::env::var("PATH") {
            Ok(path) => format!("{}:{path}", self.tools.dir().display()),
            Err(_) => self.tools.dir().display().to_string(),
        };
        [
            (KUBECONFIG_ENV, kubeconfig.clone()),
            (NATS_URL_ENV, self.nats.url()),
            (ETCD_URL_ENV, self.kube.etcd_url().to_owned()),
            (DIR_ENV, self.dir.display().to_string()),
            (tools::TOOLS_DIR_ENV, self.tools.dir().display().to_string()),
            ("KUBECONFIG", kubeconfig),
            ("JETWAY_NATS_URL", self.nats.url()),
            ("PATH", path),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// A test ground started by another process, found through the environment.
#[derive(Clone, Debug)]
pub struct Attached {
    pub kubeconfig: PathBuf,
    pub nats_url: String,
    /// Set by grounds that export it (`JETWAY_TEST_ETCD_URL`).
    pub etcd_url: Option<String>,
}

impl Attached {
    /// `Some` when `JETWAY_TEST_KUBECONFIG` and `JETWAY_TEST_NATS_URL` are both set.
    pub fn from_env() -> Option<Self> {
        Some(Self {
            kubeconfig: std::env::var_os(KUBECONFIG_ENV)?.into(),
            nats_url: std::env::var(NATS_URL_ENV).ok()?,
            etcd_url: std::env::var(ETCD_URL_ENV).ok(),
        })
    }
}
