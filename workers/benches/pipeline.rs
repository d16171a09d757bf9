//! The order pipeline's benchmark, on one nats-server, in one run:
//!
//!   cargo bench -p jetway-workers --bench pipeline
//!   cargo bench -p jetway-workers --bench pipeline -- --orders 100000 --rate 5000
//!
//! Prints, beside the references measured on the same server by the pinned `nats
//! bench` (JetStream async publish, and durable consume + ack, 128-byte messages, file
//! storage):
//! - the payment stage's orders/s, draining a backlog of reserved orders with the
//!   gateway simulator (`jetway-gateway`, its own process, HTTP) in the loop, and the
//!   ceiling the references set for its mix of JetStream operations per order (three
//!   acknowledged publishes: the intent, the outcome and the event; and one consume +
//!   ack), the gateway's HTTP call not counted;
//! - intake's latency p50/p99/p99.9 at a fixed request rate (open loop: requests are
//!   sent on schedule whatever the answers do);
//! - end-to-end orders/s from POST /orders through intake, inventory and payment (and
//!   the gateway) to the payment's ack.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jetway_testground::{NatsServer, Tools};
use jetway_workers::topology;
use support::gateway::Gateway;
use support::{Pipeline, Worker, ids, order_request};

#[derive(Parser)]
struct Args {
    /// Orders in the payment stage's backlog.
    #[arg(long, default_value_t = 200_000)]
    orders: usize,
    /// Intake's request rate for the latency figure, per second.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// How long intake is held at that rate.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Orders posted for the end-to-end figure.
    #[arg(long, default_value_t = 50_000)]
    end_to_end: usize,
    /// SKUs the spread end-to-end run's orders are over.
    #[arg(long, default_value_t = 1000)]
    skus: usize,
    /// Requests in flight at once for the end-to-end figure.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Messages in each `nats bench` reference run.
    #[arg(long, default_value_t = 500_000)]
    reference_messages: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tools = Tools::locate()?;
    let pipeline = Pipeline::start().await;
    let nats = &pipeline.nats;

    eprintln!("references: nats bench js pub async / js consume");
    let publish = nats_bench(
        &tools,
        nats,
        &["js", "pub", "async", "bench.pub", "--create", "--storage", "file"],
        args.reference_messages,
    )?;
    let consume = nats_bench(&tools, nats, &["js", "consume", "--acks", "explicit"], args.reference_messages)?;
    pipeline.jetstream.delete_stream("benchstream").await?;
    // Per order: three acknowledged publishes and one consume + ack.
    let ceiling = 1.0 / (3.0 / publish + 1.0 / consume);

    let gateway = Gateway::start(&[]).await;
    let (payment_rate, payment_rss) = payment_stage(&pipeline, &gateway, args.orders).await?;
    eprintln!("payment stage: {payment_rate:.0} orders/s");
    let latency = intake_latency(&pipeline, args.rate, args.duration).await?;
    eprintln!("intake latency: measured");
    // Each run purges the orders before it, which are not its to reserve and charge.
    let spread = end_to_end(&pipeline, &gateway, args.end_to_end, args.clients, Shape::Spread(args.skus)).await?;
    eprintln!("end to end, spread: {spread:.0} orders/s");
    let hot = end_to_end(&pipeline, &gateway, args.end_to_end, args.clients, Shape::Hot).await?;
    let stats = gateway.stats().await;

    let ms = |micros: u64| micros as f64 / 1000.0;
    println!();
    println!("references (nats bench, same server, 128 B, file storage)");
    println!("  JetStream async publish        {publish:>10.0} msgs/s");
    println!("  durable consume + ack          {consume:>10.0} msgs/s");
    println!("  payment's mix per order        1 / (3/publish + 1/consume) = {ceiling:.0} orders/s ceiling");
    println!("payment stage ({} reserved orders backlog, one worker, the gateway over HTTP)", args.orders);
    println!(
        "  orders/s                       {payment_rate:>10.0}   {:.0}% of the ceiling, {:.2}x the seed's 12 000",
        100.0 * payment_rate / ceiling,
        payment_rate / 12_000.0
    );
    println!("  worker peak RSS                {:>10.1} MiB", payment_rss as f64 / 1024.0);
    println!(
        "intake at {} requests/s for {:?} ({} requests, {} failed)",
        args.rate,
        args.duration,
        latency.len(),
        latency.failed
    );
    println!(
        "  latency p50 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms",
        ms(latency.histogram.value_at_quantile(0.5)),
        ms(latency.histogram.value_at_quantile(0.99)),
        ms(latency.histogram.value_at_quantile(0.999)),
        ms(latency.histogram.max())
    );
    println!(
        "end to end ({} orders, {} clients): POST /orders -> intake -> inventory -> payment (gateway) -> ack",
        args.end_to_end, args.clients
    );
    println!(
        "  orders/s, over {} SKUs        {spread:>10.0}   (intake, inventory, payment, the gateway, nats-server and the HTTP load on the same {} cores)",
        args.skus,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  orders/s, one hot pair of SKUs {hot:>10.0}   (every reservation waits for the one before: one atomic batch each)"
    );
    println!(
        "at the gateway: {} charges for {} orders, {} duplicate charges",
        stats.charges, stats.orders, stats.duplicate_charges
    );
    Ok(())
}

/// Runs `nats bench` and returns its messages per second, read from its CSV.
fn nats_bench(tools: &Tools, nats: &NatsServer, args: &[&str], messages: usize) -> anyhow::Result<f64> {
    let csv = tempfile::NamedTempFile::new()?;
    let status = std::process::Command::new(tools.path("nats"))
        .args(["--server", &nats.url(), "bench"])
        .args(args)
        .args(["--msgs", &messages.to_string(), "--size", "128B", "--no-progress", "--csv"])
        .arg(csv.path())
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "nats bench {args:?}: {status}");
    let text = std::fs::read_to_string(csv.path())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("an empty CSV")?.split(',').collect();
    let column = header.iter().position(|name| *name == "MsgsPerSec").context("no MsgsPerSec column")?;
    let row: Vec<&str> = lines.next().context("no result row")?.split(',').collect();
    Ok(row[column].parse()?)
}

/// Drains a backlog of reserved orders with one payment worker; (orders/s, peak RSS in KiB).
async fn payment_stage(pipeline: &Pipeline, gateway: &Gateway, orders: usize) -> anyhow::Result<(f64, u64)> {
    let settings = topology::ConsumerSettings { max_ack_pending: 100_000, ..Default::default() };
    pipeline.consumer(&topology::PAYMENT[0], settings).await;
    topology::ledger(&pipeline.jetstream, 1).await?;
    pipeline.publish_reservations(ids("backlog", orders)).await;
    eprintln!("payment stage: {orders} reserved orders in the backlog");

    let started = Instant::now();
    let worker = Worker::spawn("payment", &pipeline.nats.url(), &["--gateway-url", &gateway.url()]);
    pipeline.wait_payment_outcomes(orders as u64).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    let elapsed = started.elapsed();
    let rss = worker.peak_rss_kib();
    drop(worker);
    Ok((orders as f64 / elapsed.as_secs_f64(), rss))
}

struct Latency {
    histogram: Histogram<u64>,
    failed: usize,
}

impl Latency {
    fn len(&self) -> u64 {
        self.histogram.len() + self.failed as u64
    }
}

fn http_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build_http()
}

fn post(url: &str, body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

/// Sends `rate` orders a second to intake for `duration`, each on schedule, and
/// records each one's time to its 202 (in microseconds).
async fn intake_latency(pipeline: &Pipeline, rate: u64, duration: Duration) -> anyhow::Result<Latency> {
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let url = format!("http://{}/orders", intake.http);
    let client = http_client();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let failed = Arc::new(Mutex::new(0usize));
    // A second of warm-up (connections, caches) that is not recorded.
    let warm_up = rate as usize;
    let total = warm_up + (rate as f64 * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total);
    let start = tokio::time::Instant::now();
    for (n, id) in ids("latency", total).enumerate() {
        tokio::time::sleep_until(start + interval * n as u32).await;
        let (client, request) = (client.clone(), post(&url, order_request(&id)));
        let (histogram, failed) = (histogram.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client.request(request).await;
            let micros = sent.elapsed().as_micros() as u64;
            if n < warm_up {
                return;
            }
            match answer {
                Ok(response) if response.status() == 202 => histogram.lock().unwrap().record(micros.max(1)).unwrap(),
                _ => *failed.lock().unwrap() += 1,
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    drop(intake);
    let histogram = histogram.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    Ok(Latency { histogram, failed })
}

/// The shape of the end-to-end run's orders.
#[derive(Clone, Copy)]
enum Shape {
    /// Each order one line of one of this many SKUs, in turn.
    Spread(usize),
    /// Every order the same two SKUs: one hot pair every reservation waits on.
    Hot,
}

/// Posts `orders` through intake with `clients` requests in flight while inventory
/// and payment run, and times it from the first request to the last payment's ack.
async fn end_to_end(
    pipeline: &Pipeline,
    gateway: &Gateway,
    orders: usize,
    clients: usize,
    shape: Shape,
) -> anyhow::Result<f64> {
    pipeline.stream("ORDERS").await.purge().await?;
    let url = pipeline.nats.url();
    let intake = Worker::spawn("intake", &url, &[]).ready().await;
    let stock = match shape {
        Shape::Spread(skus) => (0..skus).map(|n| format!("SKU-{n}={orders}")).collect::<Vec<_>>().join(","),
        Shape::Hot => format!("WIDGET={},GADGET={}", 2 * orders, orders),
    };
    let inventory = Worker::spawn("inventory", &url, &["--create-topology", "--seed-stock", &stock]).ready().await;
    let payment = Worker::spawn("payment", &url, &["--gateway-url", &gateway.url()]).ready().await;
    let before = pipeline.payment_outcomes().await;
    let client = http_client();
    let orders_url = format!("http://{}/orders", intake.http);
    let prefix = match shape {
        Shape::Spread(_) => "spread",
        Shape::Hot => "hot",
    };
    let started = Instant::now();
    let answers: Vec<u16> = futures::stream::iter(ids(prefix, orders).enumerate())
        .map(|(n, id)| {
            let body = match shape {
                Shape::Spread(skus) => serde_json::json!({"orderId": id, "customerId": "customer-1", "currency": "EUR",
                    "items": [{"sku": format!("SKU-{}", n % skus), "quantity": 1, "unitPriceCents": 999}]})
                .to_string(),
                Shape::Hot => order_request(&id),
            };
            let request = post(&orders_url, body);
            let client = client.clone();
            async move { client.request(request).await.map(|response| response.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let refused = answers.iter().filter(|status| **status != 202).count();
    anyhow::ensure!(refused == 0, "{refused} orders were not accepted");
    pipeline.wait_payment_outcomes(before + orders as u64).await;
    pipeline.wait_drained("INVENTORY", "payment").await;
    let elapsed = started.elapsed();
    drop((intake, inventory, payment));
    Ok(orders as f64 / elapsed.as_secs_f64())
}
