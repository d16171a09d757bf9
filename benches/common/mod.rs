//! What the operator benchmarks share: a test ground (attached to or started), the
//! CRDs installed, a namespace, and `jetway run` as its own process.
#![allow(dead_code)] // each benchmark uses its own part

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use jetway_testground::{Attached, Ground, GroundOptions, Tools};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// The ground, and the one this process started (kept alive while it is held).
pub async fn ground() -> anyhow::Result<(Attached, Option<Ground>)> {
    if let Some(attached) = Attached::from_env() {
        return Ok((attached, None));
    }
    eprintln!("starting a test ground (set JETWAY_TEST_KUBECONFIG and JETWAY_TEST_NATS_URL to use a running one)");
    let ground = Ground::start(Tools::locate()?, &GroundOptions { controller_manager: false, keep_dir: false }).await?;
    let attached = Attached {
        kubeconfig: ground.kube.kubeconfig_path(),
        nats_url: ground.nats.url(),
        etcd_url: Some(ground.kube.etcd_url().to_owned()),
    };
    Ok((attached, Some(ground)))
}

pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jetway::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("jetway-bench").force(), &Patch::Apply(&crd)).await?;
        jetway_testground::wait::until(
            "the CRD to be Established",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                let conditions = crds.get(&name).await?.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// A fresh namespace for one benchmark run.
pub async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let namespace = format!("{prefix}-{}", std::process::id());
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(namespace.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(namespace)
}

/// `jetway run` for `namespace`, as its own process, serving /metrics on `port`.
pub async fn operator(attached: &Attached, namespace: &str, port: u16) -> anyhow::Result<tokio::process::Child> {
    operator_with(attached, namespace, port, &[]).await
}

/// [`operator`] with more `jetway run` flags. `JETWAY_BENCH_OPERATOR_ENV` (`NAME=value`
/// pairs, space-separated) is given to the operator alone: an allocator's tunables, or
/// a heap profiler's preload (`LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so
/// DUMP_HEAPTRACK_OUTPUT=/tmp/operator.raw`, read with `heaptrack_interpret`).
pub async fn operator_with(
    attached: &Attached,
    namespace: &str,
    port: u16,
    flags: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    let operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetway"))
        .args(["run", "--namespace", namespace, "--metrics-addr", &format!("127.0.0.1:{port}"), "--log-filter", "warn"])
        .args(flags)
        .envs(operator_env())
        .env("KUBECONFIG", &attached.kubeconfig)
        .env("JETWAY_NATS_URL", &attached.nats_url)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting jetway run")?;
    jetway_testground::wait::until(
        "the operator's /metrics",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok(metrics(port).await.ok().map(|_| ())) },
    )
    .await?;
    Ok(operator)
}

fn operator_env() -> Vec<(String, String)> {
    let pairs = std::env::var("JETWAY_BENCH_OPERATOR_ENV").unwrap_or_default();
    pairs.split_whitespace().filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

pub async fn metrics(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    Ok(text)
}

/// How many objects of `api` are Ready, and have seen their latest generation.
pub async fn current_and_ready<K>(api: &Api<K>) -> anyhow::Result<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|o| {
            let value = serde_json::to_value(o).unwrap_or_default();
            let current = value["status"]["observedGeneration"] == value["metadata"]["generation"];
            let ready = value["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            current && ready
        })
        .count())
}

/// Waits until all `streams` Streams and `consumers` Consumers are Ready at their
/// latest generation, for at most 30 minutes from `started`.
pub async fn wait_all_ready(
    api: (&Api<jetway::api::stream::Stream>, &Api<jetway::api::consumer::Consumer>),
    (streams, consumers): (usize, usize),
    started: std::time::Instant,
) -> anyhow::Result<()> {
    loop {
        let ready = current_and_ready(api.0).await? + current_and_ready(api.1).await?;
        if ready == streams + consumers {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("only {ready} of {} objects Ready after 30 min", streams + consumers);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The JetStream API requests the server has answered so far (its `/jsz`).
pub async fn jetstream_requests(monitor_url: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = monitor_url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /jsz HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let jsz: serde_json::Value = serde_json::from_str(body)?;
    jsz["api"]["total"].as_u64().context("api.total in /jsz")
}

/// The requests kube-apiserver has served so far, from its own `/metrics`: all of
/// them, and the writes (create, update, patch, apply, delete) to anything but leases, by
/// resource.
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<(f64, std::collections::BTreeMap<String, f64>)> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let (mut all, mut writes) = (0.0, std::collections::BTreeMap::new());
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        all += value;
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).map(|at| at + name.len() + 2)?;
            line[start..].split('"').next().map(str::to_owned)
        };
        let verb = label("verb").unwrap_or_default();
        let resource = label("resource").unwrap_or_default();
        let subresource = label("subresource").unwrap_or_default();
        if ["POST", "PUT", "PATCH", "APPLY", "DELETE"].contains(&verb.as_str()) && resource != "leases" {
            let what = if subresource.is_empty() { resource } else { format!("{resource}/{subresource}") };
            *writes.entry(format!("{verb} {what}")).or_default() += value;
        }
    }
    Ok((all, writes))
}
