//! The order pipeline under faults, counted where it matters:
//!
//!   cargo bench -p jetway-workers --bench soak
//!   cargo bench -p jetway-workers --bench soak -- --orders 20000
//!
//! Runs intake, two inventory and two payment workers and the gateway simulator as
//! separate processes on one nats-server; posts the orders through intake (a tenth of
//! them sent again by the client, some for SKUs that run out); SIGKILLs a payment or
//! inventory worker every few seconds and starts a new one; restarts nats-server
//! twice; and, once everything settled, prints what the streams and the gateway hold:
//! orders accepted, charges at the gateway, paid orders, rejected orders charged,
//! duplicate charges, orders left without an outcome, stock conservation per SKU, and
//! orders/s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jetway_workers::consume::dead_letter;
use jetway_workers::events::{InventoryReleased, InventoryReserved, Reservation, event_subject};
use jetway_workers::topology;
use nix::sys::signal::Signal;
use rand::Rng;
use support::gateway::Gateway;
use support::{Pipeline, Worker};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// `POST url` with a JSON `body`: (status, answer).
async fn post(http: &Http, url: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let response = http.request(request).await?;
    let status = response.status().as_u16();
    let answer = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

#[derive(Parser)]
struct Args {
    /// Orders posted.
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Time between two kills.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    kill_every: Duration,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Plenty of these; the scarce ones run out during the run.
const SKUS: [&str; 8] = ["WIDGET", "GADGET", "BOLT", "NUT", "GEAR", "SPRING", "RARE-1", "RARE-2"];
const STOCK: u64 = 1_000_000;
const SCARCE: u64 = 500;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

fn stock_of(sku: &str) -> u64 {
    if sku.starts_with("RARE") { SCARCE } else { STOCK }
}

/// An order of one to three random lines; one line in twenty is of a scarce SKU.
fn order_body(id: &str) -> String {
    let mut rng = rand::rng();
    let common = SKUS.iter().filter(|sku| !sku.starts_with("RARE")).count();
    let items: Vec<serde_json::Value> = (0..rng.random_range(1..=3))
        .map(|_| {
            let sku = if rng.random_bool(0.05) {
                SKUS[rng.random_range(common..SKUS.len())]
            } else {
                SKUS[rng.random_range(0..common)]
            };
            serde_json::json!({"sku": sku, "quantity": rng.random_range(1..=3), "unitPriceCents": 999})
        })
        .collect();
    let customer = format!("customer-{}", rng.random_range(0..1000));
    serde_json::json!({"orderId": id, "customerId": customer, "currency": "EUR", "items": items}).to_string()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::start().await;
    let url = pipeline.nats.url();
    let gateway = Gateway::start(&[
        "--latency",
        "5ms",
        "--decline-rate",
        "0.02",
        "--failure-rate",
        "0.01",
        "--lost-answer-rate",
        "0.01",
    ])
    .await;
    let seed: String = SKUS.iter().map(|sku| format!("{sku}={}", stock_of(sku))).collect::<Vec<_>>().join(",");
    let gateway_url = gateway.url();
    let spawn = move |kind: &str| {
        let flags: Vec<&str> = match kind {
            "payment" => {
                vec!["--create-topology", "--gateway-url", &gateway_url, "--ack-wait", "5s", "--max-deliver", "50"]
            }
            _ => vec!["--create-topology", "--seed-stock", &seed, "--ack-wait", "5s", "--max-deliver", "50"],
        };
        Worker::spawn(kind, &url, &flags)
    };
    let intake = Worker::spawn("intake", &pipeline.nats.url(), &[]).ready().await;
    let mut workers = Vec::new();
    for kind in ["inventory", "inventory", "payment", "payment"] {
        workers.push((kind, spawn(kind).ready().await));
    }

    let accepted = Arc::new(AtomicU64::new(0));
    let posted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let orders_url = format!("http://{}/orders", intake.http);
    // One pooled HTTP client, as a real client fleet keeps its connections.
    let http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(args.clients).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let clients = {
        let (accepted, posted, done) = (accepted.clone(), posted.clone(), done.clone());
        let (count, concurrency) = (args.orders, args.clients);
        tokio::spawn(async move {
            futures::stream::iter(support::ids("soak", count))
                .map(|id| {
                    let (url, accepted, posted, http) =
                        (orders_url.clone(), accepted.clone(), posted.clone(), http.clone());
                    async move {
                        let body = order_body(&id);
                        // A tenth of the clients send their order twice, as after a lost answer.
                        let times = if rand::rng().random_bool(0.1) { 2 } else { 1 };
                        for time in 0..times {
                            loop {
                                match post(&http, &url, &body).await {
                                    Ok((202, answer)) => {
                                        if time == 0 && answer.contains("\"duplicate\":false") {
                                            accepted.fetch_add(1, Ordering::Relaxed);
                                        }
                                        break;
                                    }
                                    Ok((status, answer)) if status != 503 => panic!("order {id}: {status} {answer}"),
                                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                                }
                            }
                        }
                        posted.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<()>()
                .await;
            done.store(true, Ordering::Relaxed);
        })
    };

    // The faults, while orders come in.
    let (mut kills, mut restarts, mut last_kill) = (0, 0, Instant::now());
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let share = posted.load(Ordering::Relaxed) as f64 / args.orders as f64;
        if (restarts == 0 && share > 0.33) || (restarts == 1 && share > 0.66) {
            eprintln!("soak: restarting nats-server ({:.0}% posted)", share * 100.0);
            pipeline.nats.restart().await?;
            restarts += 1;
        }
        if last_kill.elapsed() >= args.kill_every {
            let victim = rand::rng().random_range(0..workers.len());
            let (kind, worker) = workers.swap_remove(victim);
            worker.signal(Signal::SIGKILL);
            let _ = worker.exit(Duration::from_secs(5)).await;
            workers.push((kind, spawn(kind)));
            kills += 1;
            last_kill = Instant::now();
        }
    }
    clients.await?;
    let accepted = accepted.load(Ordering::Relaxed);
    eprintln!("soak: {accepted} orders accepted; waiting for every one to settle");

    // Settled: every consumer drained.
    // A backlog of this size takes longer than a test's patience.
    for (stream, consumer) in [("ORDERS", "inventory"), ("INVENTORY", "payment"), ("PAYMENTS", "inventory")] {
        let stream = pipeline.stream(stream).await;
        jetway_testground::wait::until(
            &format!("{consumer} to drain"),
            Duration::from_secs(1800),
            Duration::from_secs(1),
            || async {
                let info = stream.consumer_info(consumer).await?;
                Ok((info.num_pending == 0 && info.num_ack_pending == 0).then_some(()))
            },
        )
        .await?;
    }
    let elapsed = started.elapsed();
    let report = Report::read(&pipeline, &gateway).await?;
    drop((workers, intake));

    println!();
    println!(
        "soak: {} orders posted by {} clients (a tenth sent twice), {kills} worker kills, {restarts} nats-server restarts",
        args.orders, args.clients
    );
    println!("  orders accepted                 {accepted:>10}   (stored in ORDERS: {})", report.orders);
    println!("  charges at the gateway          {:>10}", report.charges);
    println!("  paid orders                     {:>10}   (declined: {})", report.paid, report.declined);
    println!("  rejected orders                 {:>10}   (no stock)", report.rejected);
    println!("  rejected orders charged         {:>10}   (target 0)", report.rejected_charged);
    println!("  duplicate charges               {:>10}   (target 0)", report.duplicate_charges);
    println!("  dead-lettered                   {:>10}", report.dead_lettered);
    println!("  orders without an outcome       {:>10}   (target 0)", report.unsettled);
    for (sku, (initial, held, left)) in &report.stock {
        let holds = if initial == &(held + left) { "holds" } else { "BROKEN" };
        println!("  stock {sku:<8} initial {initial:>8} = held {held:>6} + remaining {left:>8}   {holds}");
    }
    println!(
        "  orders/s                        {:>10.0}   (posting to last settle, all on {} cores)",
        accepted as f64 / elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}

/// What the streams, the stock bucket and the gateway hold after the run.
struct Report {
    orders: u64,
    charges: u64,
    paid: u64,
    declined: u64,
    rejected: u64,
    rejected_charged: u64,
    duplicate_charges: u64,
    dead_lettered: u64,
    unsettled: u64,
    /// Per SKU: (initial, held by reservations not released, remaining).
    stock: BTreeMap<String, (u64, u64, u64)>,
}

impl Report {
    async fn read(pipeline: &Pipeline, gateway: &Gateway) -> anyhow::Result<Self> {
        let order_key = |subject: &str| subject.splitn(4, '.').nth(3).unwrap_or_default().to_owned();
        let orders: BTreeSet<String> =
            pipeline.read_all("ORDERS").await.iter().map(|m| order_key(&m.subject)).collect();
        let mut outcome = BTreeMap::<&str, BTreeSet<String>>::new();
        let mut held = BTreeMap::<String, u64>::new();
        for message in pipeline.read_all("INVENTORY").await.iter().chain(pipeline.read_all("PAYMENTS").await.iter()) {
            let kind = event_subject(&message.subject);
            let key = order_key(&message.subject);
            match kind {
                "inventory.reserved.v1" => {
                    let reserved: InventoryReserved = serde_json::from_slice(&message.payload)?;
                    add(&mut held, &reserved.items, true);
                }
                "inventory.released.v1" => {
                    let released: InventoryReleased = serde_json::from_slice(&message.payload)?;
                    add(&mut held, &released.items, false);
                }
                _ => {}
            }
            outcome.entry(static_kind(kind)).or_default().insert(key);
        }
        let letters: BTreeSet<String> = pipeline
            .read_all("DEAD_LETTERS")
            .await
            .iter()
            .filter_map(|m| m.headers.as_ref()?.get(dead_letter::ORIGIN_SUBJECT).map(|s| order_key(s.as_str())))
            .collect();
        let stats = gateway.stats().await;
        let charged: BTreeSet<String> = stats.charges_per_order.clone().unwrap_or_default().into_keys().collect();
        let of = |kind: &str| outcome.get(kind).cloned().unwrap_or_default();
        let (paid, declined, rejected) =
            (of("payments.completed.v1"), of("payments.failed.v1"), of("inventory.rejected.v1"));
        let unsettled = orders
            .iter()
            .filter(|o| !paid.contains(*o) && !declined.contains(*o) && !rejected.contains(*o) && !letters.contains(*o))
            .count();
        let bucket = topology::stock(&pipeline.jetstream, 1).await?;
        let mut stock = BTreeMap::new();
        for sku in SKUS {
            let left: u64 = match bucket.get(format!("stock.{sku}")).await? {
                Some(value) => std::str::from_utf8(&value)?.parse()?,
                None => 0,
            };
            stock.insert(sku.to_owned(), (stock_of(sku), held.get(sku).copied().unwrap_or(0), left));
        }
        Ok(Self {
            orders: orders.len() as u64,
            charges: stats.charges,
            paid: paid.len() as u64,
            declined: declined.len() as u64,
            rejected: rejected.len() as u64,
            rejected_charged: rejected.intersection(&charged).count() as u64,
            duplicate_charges: stats.duplicate_charges,
            dead_lettered: letters.len() as u64,
            unsettled: unsettled as u64,
            stock,
        })
    }
}

fn static_kind(kind: &str) -> &'static str {
    [
        "payments.completed.v1",
        "payments.failed.v1",
        "inventory.rejected.v1",
        "inventory.reserved.v1",
        "inventory.released.v1",
    ]
    .into_iter()
    .find(|known| *known == kind)
    .unwrap_or("other")
}

fn add(held: &mut BTreeMap<String, u64>, items: &[Reservation], reserve: bool) {
    for item in items {
        let entry = held.entry(item.sku.clone()).or_default();
        *entry = if reserve { *entry + u64::from(item.quantity) } else { *entry - u64::from(item.quantity) };
    }
}
