//! etcd, kube-apiserver and kube-controller-manager on loopback, run the way
//! controller-runtime's envtest runs them, plus what the aggregation layer needs
//! (front-proxy client certificate and request-header CA) to serve an APIService.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::pki::{Ca, Usage, signing_key_pair};
use crate::process::{Lifeline, Server, ServerCommand};
use crate::tools::Tools;
use crate::wait;

const GRACE: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The user the admin kubeconfig authenticates as (group `system:masters`).
pub const ADMIN_USER: &str = "jetway-testground-admin";

/// A running control plane; stopped on drop.
pub struct KubeControlPlane {
    // Stopped in reverse start order by `Drop`.
    servers: Vec<Server>,
    lifeline: Arc<Lifeline>,
    dir: PathBuf,
    api_url: String,
    etcd_url: String,
    ca: Ca,
}

impl KubeControlPlane {
    /// Starts etcd, kube-apiserver and, with `controller_manager`, kube-controller-manager,
    /// keeping their certificates, data and logs under `dir`.
    pub async fn start(
        tools: &Tools,
        dir: &Path,
        lifeline: Arc<Lifeline>,
        controller_manager: bool,
    ) -> anyhow::Result<Self> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        let ca = Ca::new("jetway-testground-ca")?;
        std::fs::write(pki.join("ca.crt"), ca.cert_pem())?;
        let front_proxy_ca = Ca::new("jetway-testground-front-proxy-ca")?;
        std::fs::write(pki.join("front-proxy-ca.crt"), front_proxy_ca.cert_pem())?;
        front_proxy_ca.issue("front-proxy-client", None, &[], Usage::Client)?.write(&pki, "front-proxy-client")?;
        let sans = ["127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"];
        ca.issue("kube-apiserver", None, &sans, Usage::Server)?.write(&pki, "apiserver")?;
        ca.issue(ADMIN_USER, Some("system:masters"), &[], Usage::Client)?.write(&pki, "admin")?;
        let (sa_private, sa_public) = signing_key_pair()?;
        std::fs::write(pki.join("sa.key"), sa_private)?;
        std::fs::write(pki.join("sa.pub"), sa_public)?;

        let mut plane = Self {
            servers: Vec::new(),
            lifeline,
            dir: dir.to_owned(),
            api_url: String::new(),
            etcd_url: String::new(),
            ca,
        };

        let [etcd_port, etcd_peer_port, api_port] = wait::free_ports(3)?[..] else { unreachable!("three ports") };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        plane.etcd_url = etcd_url.clone();
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        plane.spawn(
            "etcd",
            tools,
            [
                "--name=testground".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=testground={etcd_peer}"),
                // Nothing here must survive a power cut; fsync would only slow every test.
                "--unsafe-no-fsync".into(),
                "--listen-metrics-urls=".into(),
            ],
        )?;
        plane.wait_for_log("etcd", "ready to serve client requests").await?;

        plane.api_url = format!("https://127.0.0.1:{api_port}");
        let p = |name: &str| pki.join(name).display().to_string();
        plane.spawn(
            "kube-apiserver",
            tools,
            [
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p("")),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                // No kubelet, so pods need no service account tokens mounted.
                "--disable-admission-plugins=ServiceAccount".into(),
                format!("--service-account-issuer={}", plane.api_url),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                // The aggregation layer: how kube-apiserver proves itself to an APIService backend.
                format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                // No kube-proxy: reach APIService backends at their endpoints, not a ClusterIP.
                "--enable-aggregator-routing=true".into(),
            ],
        )?;

        let kubeconfig = plane.kubeconfig_path();
        std::fs::write(&kubeconfig, kubeconfig_json(&plane.api_url, &pki))?;
        let client = plane.client().await?;
        plane.wait_ready(&client).await?;

        if controller_manager {
            let kcm_port = wait::free_port()?;
            plane.spawn(
                "kube-controller-manager",
                tools,
                [
                    format!("--kubeconfig={}", kubeconfig.display()),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={kcm_port}"),
                    "--leader-elect=false".into(),
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    "--use-service-account-credentials=false".into(),
                    // Tests watch autoscaling act: decide every second instead of every 15.
                    "--horizontal-pod-autoscaler-sync-period=1s".into(),
                ],
            )?;
            plane.wait_for_controllers(&client).await?;
        }
        Ok(plane)
    }

    /// The admin kubeconfig (JSON, which every kubeconfig reader accepts).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// etcd's client URL (plain HTTP on loopback), for tests that must write what
    /// the apiserver would refuse, such as objects of an older schema.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA that signed the serving and client certificates.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The directory with `ca.crt`, `front-proxy-ca.crt`, `sa.key` and friends.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// A client authenticated as the cluster admin.
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_from_kubeconfig(&self.kubeconfig_path()).await
    }

    fn spawn<const N: usize>(&mut self, name: &str, tools: &Tools, args: [String; N]) -> anyhow::Result<()> {
        let command = ServerCommand {
            name: name.into(),
            program: tools.path(name),
            args: args.into(),
            log: self.dir.join(format!("{name}.log")),
        };
        self.servers.push(Server::spawn(command, &self.lifeline)?);
        Ok(())
    }

    fn server(&mut self, name: &str) -> &mut Server {
        self.servers.iter_mut().find(|s| s.name() == name).expect("a server this plane started")
    }

    async fn wait_for_log(&mut self, name: &str, line: &str) -> anyhow::Result<()> {
        let what = format!("{name} to log {line:?}");
        let server = self.server(name);
        let log = server.log_path().to_owned();
        wait::until(&what, START_TIMEOUT, Duration::from_millis(50), || {
            let running = server.check_running();
            let log = log.clone();
            async move {
                running?;
                Ok(std::fs::read_to_string(&log).unwrap_or_default().contains(line).then_some(()))
            }
        })
        .await
    }

    async fn wait_ready(&mut self, client: &Client) -> anyhow::Result<()> {
        let server = self.server("kube-apiserver");
        wait::until("kube-apiserver /readyz", START_TIMEOUT, Duration::from_millis(200), || {
            let running = server.check_running();
            async move {
                running?;
                let request = http::Request::get("/readyz").body(Vec::new())?;
                Ok((client.request_text(request).await? == "ok").then_some(()))
            }
        })
        .await
    }

    /// The service account controller creating `default/default` shows the controllers run.
    async fn wait_for_controllers(&mut self, client: &Client) -> anyhow::Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let server = self.server("kube-controller-manager");
        wait::until("kube-controller-manager to run its controllers", START_TIMEOUT, Duration::from_millis(200), || {
            let running = server.check_running();
            let accounts = accounts.clone();
            async move {
                running?;
                Ok(accounts.get_opt("default").await?.map(|_| ()))
            }
        })
        .await
    }
}

impl Drop for KubeControlPlane {
    fn drop(&mut self) {
        while let Some(mut server) = self.servers.pop() {
            server.stop(GRACE, &self.lifeline);
        }
    }
}

/// A client for the cluster a kubeconfig file points at.
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A kubeconfig for `server` that names the certificate files in `pki`.
fn kubeconfig_json(server: &str, pki: &Path) -> String {
    let p = |name: &str| pki.join(name).display().to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testground", "cluster": {"server": server, "certificate-authority": p("ca.crt")}}],
        "users": [{"name": ADMIN_USER, "user": {"client-certificate": p("admin.crt"), "client-key": p("admin.key")}}],
        "contexts": [{"name": "testground", "context": {"cluster": "testground", "user": ADMIN_USER, "namespace": "default"}}],
        "current-context": "testground",
    })
    .to_string()
}
