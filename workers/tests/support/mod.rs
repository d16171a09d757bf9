//! A real nats-server per test with the pipeline's streams, worker binaries run as
//! child processes (so they can be killed for real), and the counts the tests assert.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod gateway;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jetway_testground::wait::until;
use jetway_testground::{NatsServer, Tools};
use jetway_workers::events::{Event, InventoryReserved};
use jetway_workers::topology;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

pub const EVENTUALLY: Duration = Duration::from_secs(90);
pub const POLL: Duration = Duration::from_millis(50);

/// One test's NATS system with the pipeline's streams.
pub struct Pipeline {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

impl Pipeline {
    pub async fn start() -> Self {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info,async_nats=warn").try_init();
        let tools = Tools::locate().expect("the test ground's tools");
        let nats = NatsServer::start(&tools, "").await.expect("a nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connecting");
        let jetstream = jetstream::new(client.clone());
        topology::ensure_streams(&jetstream, 1).await.expect("the pipeline's streams");
        Self { nats, client, jetstream }
    }

    /// Publishes orders `ids` on `orders.created.v1`, as intake does.
    pub async fn publish_orders(&self, ids: impl IntoIterator<Item = String>) {
        self.publish_events(ids.into_iter().map(|id| order(&id))).await;
    }

    /// Publishes the reservations of orders `ids` on `inventory.reserved.v1`, as
    /// inventory does, for payment to charge.
    pub async fn publish_reservations(&self, ids: impl IntoIterator<Item = String>) {
        self.publish_events(ids.into_iter().map(|id| reservation(&id))).await;
    }

    /// Publishes `events` each on its subject, pipelined (a window of acknowledgements
    /// outstanding, below async-nats's limit), each acknowledged.
    pub async fn publish_events<E: Event>(&self, events: impl IntoIterator<Item = E>) {
        futures::stream::iter(events)
            .map(|event| async move {
                let payload = serde_json::to_vec(&event).unwrap().into();
                self.jetstream.publish(event.subject(), payload).await.unwrap()
            })
            .buffered(1024)
            .for_each_concurrent(1024, |ack| async move {
                ack.await.expect("the event was stored");
            })
            .await;
    }

    /// Messages in a stream: how many writes it accepted (a create-only KV bucket with
    /// history 1 holds one per key ever written).
    pub async fn stream_messages(&self, name: &str) -> u64 {
        self.jetstream.get_stream(name).await.unwrap().info().await.unwrap().state.messages
    }

    /// Orders with a payment outcome announced (completed or failed).
    pub async fn payment_outcomes(&self) -> u64 {
        self.stream_messages("PAYMENTS").await
    }

    /// Every message of a stream, in order.
    pub async fn read_all(&self, name: &str) -> Vec<async_nats::Message> {
        let total = self.stream_messages(name).await as usize;
        if total == 0 {
            return Vec::new();
        }
        let stream = self.jetstream.get_stream(name).await.unwrap();
        let consumer = stream.create_consumer(consumer::pull::OrderedConfig::default()).await.unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut all = Vec::with_capacity(total);
        while all.len() < total {
            let message =
                tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
            all.push(message.message);
        }
        all
    }

    /// How many payment events each order has in PAYMENTS.
    pub async fn payments_per_order(&self) -> BTreeMap<String, usize> {
        let mut per_order = BTreeMap::new();
        for message in self.read_all("PAYMENTS").await {
            let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            *per_order.entry(event["orderId"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        per_order
    }

    /// Waits until `durable` on `stream_name` has nothing pending or unacknowledged.
    pub async fn wait_drained(&self, stream_name: &str, durable: &str) {
        let stream = self.jetstream.get_stream(stream_name).await.unwrap();
        until(&format!("{durable} to drain"), EVENTUALLY, POLL, || async {
            let info = stream.consumer_info(durable).await?;
            Ok((info.num_pending == 0 && info.num_ack_pending == 0).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Waits until `count` orders have their payment outcome announced.
    pub async fn wait_payment_outcomes(&self, count: u64) {
        until(&format!("{count} payment outcomes"), EVENTUALLY, POLL, || async {
            Ok((self.payment_outcomes().await >= count).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Creates a worker's consumer with test-sized redelivery settings.
    pub async fn consumer(
        &self,
        binding: &topology::Binding<'_>,
        settings: topology::ConsumerSettings,
    ) -> consumer::PullConsumer {
        topology::ensure_consumer(&self.jetstream, binding, &settings).await.unwrap()
    }

    pub async fn stream(&self, name: &str) -> stream::Stream {
        self.jetstream.get_stream(name).await.unwrap()
    }
}

pub use jetway_workers::events::sample_order as order;

/// The reservation inventory announces for [`order`]`(id)`.
pub fn reservation(id: &str) -> InventoryReserved {
    let order = order(id);
    let at = order.created_at;
    InventoryReserved::of(order.clone(), jetway_workers::inventory::wanted(&order), at)
}

pub fn ids(prefix: &str, count: usize) -> impl Iterator<Item = String> {
    let prefix = prefix.to_owned();
    (0..count).map(move |n| format!("{prefix}-{n:06}"))
}

/// The body of `POST /orders` for an order like [`order`].
pub fn order_request(id: &str) -> String {
    let order = order(id);
    serde_json::json!({ "orderId": order.order_id, "customerId": order.customer_id, "items": order.items, "currency": order.currency })
        .to_string()
}

/// A worker binary running as a child process.
pub struct Worker {
    child: Child,
    pub http: SocketAddr,
}

impl Worker {
    /// Starts `jetway-<name>` against `nats_url` with `args` on a free HTTP port.
    pub fn spawn(name: &str, nats_url: &str, args: &[&str]) -> Self {
        Self::spawn_with_env(name, nats_url, args, &[])
    }

    /// [`Worker::spawn`] with `env` added to the process's environment.
    pub fn spawn_with_env(name: &str, nats_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let program = match name {
            "payment" => env!("CARGO_BIN_EXE_jetway-payment"),
            "inventory" => env!("CARGO_BIN_EXE_jetway-inventory"),
            "intake" => env!("CARGO_BIN_EXE_jetway-intake"),
            "audit" => env!("CARGO_BIN_EXE_jetway-audit"),
            "gateway" => env!("CARGO_BIN_EXE_jetway-gateway"),
            other => panic!("no worker {other}"),
        };
        let http = jetway_testground::wait::own_address().unwrap();
        let child = Command::new(program)
            .args(["--nats-url", nats_url, "--http-addr", &http.to_string()])
            // Workers log warnings; JETWAY_TEST_WORKER_LOG=debug shows more.
            .env("JETWAY_LOG", std::env::var("JETWAY_TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Self { child, http }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(self) -> Self {
        let url = format!("http://{}/readyz", self.http);
        until("the worker to be ready", EVENTUALLY, POLL, || async {
            Ok(http_get(&url).await?.0.eq(&200).then_some(()))
        })
        .await
        .unwrap();
        self
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id().expect("running") as i32), signal).unwrap();
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
    }

    /// Waits for the process to end, at most `timeout`.
    pub async fn exit(mut self, timeout: Duration) -> ExitStatus {
        tokio::time::timeout(timeout, self.child.wait()).await.expect("the worker to exit in time").unwrap()
    }
}

/// One HTTP request: (status, body).
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(Bytes::from(body.to_owned())))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    http_request("GET", url, &[], "").await
}

/// A consume loop run in this process, as a worker would run it.
pub struct InProcess {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub fn start<H: jetway_workers::consume::Handler>(
        pipeline: &Pipeline,
        worker: &'static str,
        consumer: consumer::PullConsumer,
        handler: std::sync::Arc<H>,
        config: jetway_workers::consume::LoopConfig,
    ) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let metrics = jetway_workers::metrics::Metrics::new().for_loop(worker);
        let task = tokio::spawn(jetway_workers::consume::run(
            pipeline.jetstream.clone(),
            consumer,
            handler,
            config,
            metrics,
            stop.clone(),
        ));
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Loop settings for tests: quick retries, dead letters on `deadletter.<worker>`.
pub fn loop_config(worker: &str) -> jetway_workers::consume::LoopConfig {
    jetway_workers::consume::LoopConfig {
        dead_letter_subject: format!("deadletter.{worker}"),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        grace: Duration::from_secs(10),
        ..Default::default()
    }
}
