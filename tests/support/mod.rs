//! What every integration test stands on: the test ground (attached to when the test
//! command started one, started here when `cargo test` runs bare), a namespace of
//! its own, unique JetStream names, and polling with deadlines.
#![allow(dead_code, unused_imports)] // each test binary uses its own part of this module

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use jetway_testground::{Attached, Ground, GroundOptions, Tools};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::distr::{Alphanumeric, SampleString};

pub use jetway_testground::wait::until as wait_until;

pub mod replica;

/// How long a test waits for something the servers do on their own.
pub const EVENTUALLY: Duration = Duration::from_secs(60);
/// How often it looks.
pub const POLL: Duration = Duration::from_millis(100);

static GROUND: OnceLock<Attached> = OnceLock::new();

/// The shared test ground: attached to from the environment, or started once per
/// test binary (its servers stop when the binary exits, however it exits).
pub fn ground() -> &'static Attached {
    GROUND.get_or_init(|| {
        if let Some(attached) = Attached::from_env() {
            return attached;
        }
        // Started on a runtime of its own: each test has one, and the servers must
        // outlive them all.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let ground = runtime
                .block_on(async { Ground::start(Tools::locate()?, &GroundOptions::default()).await })
                .expect("starting the test ground");
            let attached = Attached {
                kubeconfig: ground.kube.kubeconfig_path(),
                nats_url: ground.nats.url(),
                etcd_url: Some(ground.kube.etcd_url().to_owned()),
            };
            // Never dropped: its lifeline stops the servers when this process ends.
            Box::leak(Box::new(ground));
            attached
        })
        .join()
        .expect("the test ground thread")
    })
}

/// The tools (nats-server, kubectl, nats, helm) of the test ground.
pub fn tools() -> Tools {
    Tools::locate().expect("locating the test ground's tools")
}

/// One test's view of the ground: its own namespace, clients, and a suffix that
/// makes its JetStream names unique.
pub struct TestContext {
    pub client: Client,
    pub namespace: String,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub kubeconfig: PathBuf,
    pub nats_url: String,
    suffix: String,
}

impl TestContext {
    /// Creates the namespace `<test>-<random>` and connects to both servers.
    pub async fn new(test: &str) -> Self {
        // The operator's logs, shown by the test runner when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,jetway=debug,async_nats=warn")
            .try_init();
        let ground = ground();
        let client = jetway_testground::kube::client_from_kubeconfig(&ground.kubeconfig).await.expect("a kube client");
        let suffix = Alphanumeric.sample_string(&mut rand::rng(), 6).to_lowercase();
        let mut base: String =
            test.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        base.truncate(50);
        let namespace = format!("{}-{suffix}", base.trim_matches('-'));
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(namespace.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        let nats = async_nats::connect(&ground.nats_url).await.expect("connecting to the test nats-server");
        let jetstream = async_nats::jetstream::new(nats.clone());
        Self {
            client,
            namespace,
            nats,
            jetstream,
            kubeconfig: ground.kubeconfig.clone(),
            nats_url: ground.nats_url.clone(),
            suffix,
        }
    }

    /// `name` made unique to this test, for JetStream streams and consumers that
    /// share one server with every other test.
    pub fn unique(&self, name: &str) -> String {
        format!("{name}_{}", self.suffix.to_uppercase())
    }

    /// A namespaced API in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// `jetway run` in this test process, watching only one namespace, on the ground.
pub struct Operator {
    pub http_addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), jetway::run::RunError>>,
}

impl Operator {
    /// Starts the operator for `namespace` with a short resync, after `configure`
    /// had its say over the configuration.
    pub async fn start(namespace: &str, configure: impl FnOnce(&mut jetway::run::Config)) -> Self {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let ground = ground();
        let kubeconfig = Kubeconfig::read_from(&ground.kubeconfig).expect("kubeconfig");
        let kube =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
        let port = jetway_testground::wait::free_port().expect("a port");
        let http_addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let mut config = jetway::run::Config {
            kube,
            nats: jetway::nats::NatsSettings { servers: vec![ground.nats_url.clone()], ..Default::default() },
            http_addr,
            namespace: Some(namespace.to_owned()),
            controllers: jetway::controller::Settings {
                resync: Duration::from_secs(2),
                observe_only: false,
                lag_interval: Duration::from_millis(500),
                metrics_interval: Duration::from_secs(1),
                autoscaler: jetway::controller::Autoscaler::Jetway,
            },
            external_metrics: None,
            leader_election: None,
        };
        configure(&mut config);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(jetway::run::run(config, shutdown.clone()));
        Self { http_addr, shutdown, task }
    }

    /// Cancels the operator and waits for it to stop cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result =
            tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("the operator stops in time");
        result.expect("the operator task").expect("a clean stop");
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A proxy the test owns in front of the ground's nats-server, and the operator for
/// `namespace` reaching NATS through it only: cut the proxy to cut the operator off.
pub async fn operator_behind_proxy(ctx: &TestContext) -> (jetway_testground::proxy::Proxy, Operator) {
    let nats: std::net::SocketAddr = ctx.nats_url.trim_start_matches("nats://").parse().expect("host:port");
    let proxy = jetway_testground::proxy::Proxy::start(nats).await.expect("a proxy");
    let through = format!("nats://{}", proxy.addr());
    let operator = Operator::start(&ctx.namespace, |config| config.nats.servers = vec![through]).await;
    (proxy, operator)
}

/// Applies Jetway's CRDs (idempotently: tests share the cluster) and waits until
/// the apiserver serves them.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jetway::crds::all() {
        let name = crd.metadata.name.clone().expect("a name");
        crds.patch(&name, &PatchParams::apply("jetway-tests").force(), &Patch::Apply(&crd)).await.expect("applying");
        wait_established(&crds, &name).await;
    }
}

/// Waits until the apiserver serves the CRD `name`.
pub async fn wait_established(
    crds: &Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    name: &str,
) {
    wait_until("the CRD to be Established", EVENTUALLY, POLL, || async {
        let crd = crds.get(name).await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
    })
    .await
    .expect("Established");
}

/// Jetway kinds whose status carries conditions.
pub trait Conditioned {
    fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];
    fn observed_generation(&self) -> Option<i64>;
}

macro_rules! conditioned {
    ($($kind:ty),*) => {$(
        impl Conditioned for $kind {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
            fn observed_generation(&self) -> Option<i64> {
                self.status.as_ref().and_then(|s| s.observed_generation)
            }
        }
    )*};
}

conditioned!(
    jetway::api::stream::Stream,
    jetway::api::consumer::Consumer,
    jetway::api::connection::NatsConnection,
    jetway::api::workerpool::WorkerPool
);

/// The condition `type_` of an object, if it has one.
pub fn condition<'a, K: Conditioned>(
    object: &'a K,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    object.conditions().iter().find(|c| c.type_ == type_)
}

/// Waits until the condition `type_` of `name`, for its current generation, has `status`.
pub async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str) -> K
where
    K: Conditioned + kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{name} to have {type_}={status}");
    wait_until(&what, EVENTUALLY, POLL, || async {
        let object = api.get(name).await?;
        let current = object.observed_generation() == object.meta().generation;
        Ok((current && condition(&object, type_).is_some_and(|c| c.status == status)).then_some(object))
    })
    .await
    .expect("the condition")
}

/// Waits until `api` lists objects and every one of them is Ready; returns them.
pub async fn wait_all_ready<K>(api: &Api<K>) -> Vec<K>
where
    K: Conditioned + kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("every {} to be Ready", std::any::type_name::<K>());
    wait_until(&what, EVENTUALLY, POLL, || async {
        let list = api.list(&Default::default()).await?.items;
        let ready = |object: &K| condition(object, "Ready").is_some_and(|c| c.status == "True");
        match list.iter().find(|object| !ready(object)) {
            // Say what the one still waiting says, for a test that times out.
            Some(waiting) => anyhow::bail!(
                "{} not Ready: {:?}",
                waiting.meta().name.as_deref().unwrap_or("?"),
                condition(waiting, "Ready")
            ),
            None => Ok((!list.is_empty()).then_some(list)),
        }
    })
    .await
    .expect("Ready")
}

/// Creates a Stream object `object` for the JetStream stream `stream` (subjects
/// `<stream>.>`, deleted with the object) and a Consumer object (`durable` in
/// lower case) with an explicit-ack durable `durable` on it, and waits for it to be Ready.
pub async fn stream_with_consumer(ctx: &TestContext, object: &str, stream: &str, durable: &str) {
    use jetway::api::consumer::Consumer;
    use jetway::api::stream::Stream;
    let new = |kind: &str, name: &str, spec: serde_json::Value| serde_json::json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec });
    let spec = serde_json::json!({ "name": stream, "subjects": [format!("{stream}.>")], "deletionPolicy": "Delete" });
    let stream_object: Stream = serde_json::from_value(new("Stream", object, spec)).expect("a Stream");
    ctx.api::<Stream>().create(&PostParams::default(), &stream_object).await.expect("creating the Stream");
    let spec = serde_json::json!({ "streamName": stream, "durableName": durable, "ackPolicy": "explicit" });
    let object_name = durable.to_lowercase().replace('_', "-");
    let consumer: Consumer = serde_json::from_value(new("Consumer", &object_name, spec)).expect("a Consumer");
    ctx.api::<Consumer>().create(&PostParams::default(), &consumer).await.expect("creating the Consumer");
    wait_all_ready(&ctx.api::<Consumer>()).await;
}

/// Waits for an Event with `reason` about the object `name` in `namespace`; returns its note.
pub async fn wait_event(client: &Client, namespace: &str, name: &str, reason: &str) -> String {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let what = format!("a {reason} event for {name}");
    wait_until(&what, EVENTUALLY, POLL, || async {
        let list = events.list(&Default::default()).await?;
        Ok(list.items.into_iter().find_map(|e| {
            let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
            (about && e.reason.as_deref() == Some(reason)).then(|| e.note.unwrap_or_default())
        }))
    })
    .await
    .expect("the event")
}

/// `GET path` on the operator's HTTP endpoint: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split(' ').nth(1).unwrap_or_default().parse()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of a metric without labels in the operator's `/metrics`.
pub async fn metric(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics").await.ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Jetway's kinds among NACK's.
pub const NACK_KINDS: [&str; 2] = ["Stream", "Consumer"];

/// NACK's example manifests (`../shared/nack-examples`) of the kinds Jetway has, with
/// their apiVersion changed to Jetway's, leaving out the one with NACK's per-resource
/// connection fields (the migration converter's case).
pub fn nack_examples() -> Vec<serde_json::Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/nack-examples");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("../shared/nack-examples") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        for document in text.split("\n---").filter(|d| !d.trim().trim_start_matches("---").trim().is_empty()) {
            let mut value: serde_json::Value = serde_saphyr::from_str(document).expect("YAML");
            let known = NACK_KINDS.iter().any(|kind| value["kind"] == *kind);
            if known && value["spec"].get("servers").is_none() {
                value["apiVersion"] = serde_json::json!("jetway.dev/v1alpha1");
                found.push(value);
            }
        }
    }
    found
}

/// Takes and acknowledges `count` messages from the durable `consumer` on `stream`,
/// as the pool's workers would.
pub async fn drain(ctx: &TestContext, stream: &str, consumer: &str, count: usize) {
    use futures::StreamExt;
    let stream = ctx.jetstream.get_stream(stream).await.expect("the stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(consumer).await.expect("the consumer");
    let mut batch = consumer.fetch().max_messages(count).messages().await.expect("a batch");
    while let Some(message) = batch.next().await {
        message.expect("a message").double_ack().await.expect("an ack");
    }
}

/// Waits until the Deployment `name` asks for `want` replicas; returns it.
pub async fn deployment_replicas(ctx: &TestContext, name: &str, want: i32) -> k8s_openapi::api::apps::v1::Deployment {
    let deployments = ctx.api::<k8s_openapi::api::apps::v1::Deployment>();
    wait_until(&format!("{name} at {want} replicas"), EVENTUALLY, Duration::from_millis(50), || async {
        let deployment = deployments.get_opt(name).await?;
        Ok(deployment.filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(want)))
    })
    .await
    .expect("the replicas")
}

/// Waits until the pool `name` reports `reason` as its last scale; returns its status.
pub async fn last_scale(ctx: &TestContext, name: &str, reason: &str) -> jetway::api::workerpool::WorkerPoolStatus {
    let pools = ctx.api::<jetway::api::workerpool::WorkerPool>();
    wait_until(&format!("{name}'s last scale to be {reason}"), EVENTUALLY, POLL, || async {
        let status = pools.get(name).await?.status.unwrap_or_default();
        Ok((status.last_scale_reason.as_deref() == Some(reason)).then_some(status))
    })
    .await
    .expect("the scale")
}

/// The write requests (apply, patch, update, create, delete) kube-apiserver has
/// served for `resource` (and `subresource`, empty for the object itself), from its
/// own `/metrics`: a write that changes nothing still counts.
pub async fn apiserver_writes(client: &Client, resource: &str, subresource: &str) -> f64 {
    apiserver_requests(client, resource, subresource, &["APPLY", "PATCH", "PUT", "POST", "DELETE"]).await
}

/// The requests with one of `verbs` (as the apiserver's metrics name them: GET, LIST,
/// WATCH, APPLY, ...) kube-apiserver has served for `resource` and `subresource`.
pub async fn apiserver_requests(client: &Client, resource: &str, subresource: &str, verbs: &[&str]) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client.request_text(request).await.expect("the apiserver's metrics");
    let wanted = [format!("resource=\"{resource}\""), format!("subresource=\"{subresource}\"")];
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && wanted.iter().all(|w| l.contains(w.as_str())))
        .filter(|l| verbs.iter().any(|v| l.contains(&format!("verb=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The requests kube-apiserver has answered with HTTP `code`, whatever they asked for.
pub async fn apiserver_answers(client: &Client, code: u16) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client.request_text(request).await.expect("the apiserver's metrics");
    let code = format!("code=\"{code}\"");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(code.as_str()))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The JetStream API requests `nats` has answered so far (its `/jsz`).
pub async fn jetstream_requests(nats: &jetway_testground::NatsServer) -> u64 {
    let addr = nats.monitor_url().trim_start_matches("http://").parse().expect("host:port");
    let (_, body) = http_get(addr, "/jsz").await.expect("/jsz");
    let jsz: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    jsz["api"]["total"].as_u64().expect("api.total")
}
