//! One `jetway run` process for a test's namespace, leader-elected, with its own
//! /metrics address: for tests about several replicas.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use super::{TestContext, http_get, metric};

pub struct Replica {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Replica {
    /// A replica on the test ground's apiserver and nats-server.
    pub fn start(ctx: &TestContext) -> Self {
        Self::start_through(ctx, &ctx.kubeconfig, &ctx.nats_url)
    }

    /// A replica that reaches Kubernetes through `kubeconfig` and NATS at `nats_url`
    /// (a test's proxies, to cut it off).
    pub fn start_through(ctx: &TestContext, kubeconfig: &Path, nats_url: &str) -> Self {
        Self::start_with(ctx, kubeconfig, nats_url, &[])
    }

    /// A replica on the test ground with `env` added to its environment.
    pub fn start_with_env(ctx: &TestContext, env: &[(&str, &str)]) -> Self {
        Self::start_with(ctx, &ctx.kubeconfig, &ctx.nats_url, env)
    }

    fn start_with(ctx: &TestContext, kubeconfig: &Path, nats_url: &str, env: &[(&str, &str)]) -> Self {
        let addr = jetway_testground::wait::own_address().expect("an address");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetway"))
            .args(["run", "--namespace", &ctx.namespace, "--leader-elect-namespace", &ctx.namespace])
            .args(["--metrics-addr", &addr.to_string(), "--nats-url", nats_url, "--resync-interval", "2s"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting jetway run");
        Self { child, addr }
    }

    pub async fn leads(&self) -> bool {
        metric(self.addr, "jetway_leader").await == Some(1.0)
    }

    pub async fn ready(&self) -> bool {
        matches!(http_get(self.addr, "/readyz").await, Ok((200, _)))
    }

    pub async fn reconciles(&self) -> f64 {
        let (_, text) = http_get(self.addr, "/metrics").await.unwrap_or_default();
        text.lines()
            .filter(|line| line.starts_with("jetway_reconciles_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
