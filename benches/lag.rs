//! Lag benchmark: freshness and JetStream API load of the lag poller at 1 000
//! consumers, beside the reference of reading each consumer on its own (one
//! CONSUMER.INFO per consumer per interval, as a per-consumer scaler does), in one run.
//!
//!   cargo bench --bench lag                     # 1000 consumers on 10 streams, 20 s
//!   cargo bench --bench lag -- --consumers 5000 --seconds 30
//!
//! Then the common shape, one consumer per stream (1 000 streams, `--wide-streams`), of
//! which a tenth drive scaling: Jetway reads those streams every lag interval and the
//! others every metrics interval (15 s), beside reading every stream each interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use clap::Parser;
use futures::StreamExt;
use jetway::inventory::{Inventory, Observation, Watched};
use jetway::metrics::Metrics;
use jetway_testground::{NatsServer, Tools};
use rand::Rng;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    consumers: usize,
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// How long each of the two runs lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The poll interval of both.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Streams of one consumer each in the second shape.
    #[arg(long, default_value_t = 1000)]
    wide_streams: usize,
    /// How many of them drive scaling.
    #[arg(long, default_value_t = 100)]
    wide_demanded: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn api_requests(nats: &NatsServer) -> anyhow::Result<u64> {
    let addr: std::net::SocketAddr = nats.monitor_url().trim_start_matches("http://").parse()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /jsz HTTP/1.0\r\n\r\n").await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let jsz: serde_json::Value = serde_json::from_str(body)?;
    jsz["api"]["total"].as_u64().ok_or_else(|| anyhow::anyhow!("no api.total"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nats = NatsServer::start(&Tools::locate()?, "").await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let per_stream = args.consumers.div_ceil(args.streams);
    let mut targets = Vec::new();
    for s in 0..args.streams {
        let name = format!("LAG{s}");
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("lag{s}.>")],
                ..Default::default()
            })
            .await?;
        js.publish(format!("lag{s}.x"), "m".into()).await?.await?;
        for c in 0..per_stream {
            let durable = format!("c{c}");
            stream
                .create_consumer(consumer::pull::Config { durable_name: Some(durable.clone()), ..Default::default() })
                .await?;
            targets.push((name.clone(), durable));
        }
    }
    let consumers = targets.len();
    eprintln!("{consumers} consumers on {} streams", args.streams);
    let interval = Duration::from_millis(args.interval_ms);
    let run_for = Duration::from_secs(args.seconds);

    // Jetway's poller, sampled at random moments for the age of a random consumer's figure.
    // Every consumer demanded: the shape where all of them drive scaling.
    let intervals = jetway::inventory::Intervals { lag: interval, metrics: interval, drift: Duration::from_secs(30) };
    let poller = Arc::new(Inventory::new(Arc::new(Metrics::new()), intervals));
    for (stream, consumer) in &targets {
        let watched = Watched {
            namespace: "bench".into(),
            connection: String::new(),
            jetstream: js.clone(),
            system: None,
            stream: stream.clone(),
            consumer: consumer.clone(),
        };
        poller.watch(&format!("{stream}/{consumer}"), watched);
    }
    let stop = CancellationToken::new();
    let before = api_requests(&nats).await?;
    let started = Instant::now();
    let task = tokio::spawn(poller.clone().run(stop.clone()));
    let mut ages = Vec::new();
    tokio::time::sleep(interval * 2).await;
    while started.elapsed() < run_for {
        let (stream, consumer) = &targets[rand::rng().random_range(0..consumers)];
        if let Some(Observation::Found { at, .. }) = poller.observation(&format!("{stream}/{consumer}")) {
            ages.push(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1..20))).await;
    }
    stop.cancel();
    task.await?;
    let batched_rate = (api_requests(&nats).await? - before) as f64 / started.elapsed().as_secs_f64();
    ages.sort();

    // The reference: every consumer read on its own each interval, 64 requests in flight.
    let before = api_requests(&nats).await?;
    let started = Instant::now();
    let mut rounds = Vec::new();
    while started.elapsed() < run_for {
        let round = Instant::now();
        futures::stream::iter(&targets)
            .map(|(stream, consumer)| {
                let js = js.clone();
                async move { jetway::jetstream::observe_consumer(&js, stream, consumer).await.map(|_| ()) }
            })
            .buffer_unordered(64)
            .for_each(|r| async move { r.expect("consumer info") })
            .await;
        rounds.push(round.elapsed());
        tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
    }
    let reference_rate = (api_requests(&nats).await? - before) as f64 / started.elapsed().as_secs_f64();
    rounds.sort();

    println!();
    println!(
        "lag benchmark: {consumers} consumers on {} streams, {} ms interval, {} s each",
        args.streams, args.interval_ms, args.seconds
    );
    println!("  Jetway's inventory (stream list + paged consumer list per stream)");
    println!("    JetStream API requests        {batched_rate:>8.1} /s");
    println!(
        "    age of a figure               p50 {:>6.0} ms   p99 {:>6.0} ms   ({} samples)",
        percentile(&ages, 0.5).as_secs_f64() * 1000.0,
        percentile(&ages, 0.99).as_secs_f64() * 1000.0,
        ages.len()
    );
    println!("  reference: one CONSUMER.INFO per consumer per interval");
    println!(
        "    JetStream API requests        {reference_rate:>8.1} /s   ({:.0}x the poller's)",
        reference_rate / batched_rate
    );
    println!(
        "    one round over all consumers  p50 {:>6.0} ms   p99 {:>6.0} ms",
        percentile(&rounds, 0.5).as_secs_f64() * 1000.0,
        percentile(&rounds, 0.99).as_secs_f64() * 1000.0
    );
    wide(&nats, &js, &args).await
}

/// One consumer per stream, a tenth of them demanded: requests/s of the inventory at
/// idle and with messages flowing on the demanded streams, beside the poller it
/// replaced (every stream read each lag interval), and the age of a demanded
/// consumer's figure.
async fn wide(nats: &NatsServer, js: &jetstream::Context, args: &Args) -> anyhow::Result<()> {
    let n = args.wide_streams;
    let names: Vec<String> = (0..n).map(|i| format!("WIDE{i}")).collect();
    futures::stream::iter(&names)
        .map(|name| async move {
            let config =
                stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() };
            let stream = js.create_stream(config).await?;
            let durable = Some("worker".to_owned());
            stream.create_consumer(consumer::pull::Config { durable_name: durable, ..Default::default() }).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let interval = Duration::from_millis(args.interval_ms);
    let run_for = Duration::from_secs(args.seconds.max(30));
    let intervals = jetway::inventory::Intervals {
        lag: interval,
        metrics: Duration::from_secs(15),
        drift: Duration::from_secs(30),
    };
    let demanded: Vec<String> = names.iter().take(args.wide_demanded).cloned().collect();
    let mut rates = Vec::new();
    let mut ages = Vec::new();
    // At idle, then with messages flowing on every stream that drives scaling.
    for traffic in [false, true] {
        let poller = Arc::new(Inventory::new(Arc::new(Metrics::new()), intervals));
        for name in &names {
            let watched = Watched {
                namespace: "bench".into(),
                connection: String::new(),
                jetstream: js.clone(),
                system: None,
                stream: name.clone(),
                consumer: "worker".into(),
            };
            poller.watch(&format!("bench/{name}"), watched);
        }
        for name in &demanded {
            poller.demand(&format!("bench/{name}"));
        }
        let stop = CancellationToken::new();
        let publisher = traffic.then(|| {
            let (js, demanded, stop) = (js.clone(), demanded.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    for name in &demanded {
                        let _ = js.publish(format!("{name}.order"), "o".into()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        let task = tokio::spawn(poller.clone().run(stop.clone()));
        // The first round reads everything; count from the second on.
        tokio::time::sleep(interval * 2).await;
        let before = api_requests(nats).await?;
        let started = Instant::now();
        while started.elapsed() < run_for {
            let name = &demanded[rand::rng().random_range(0..demanded.len().max(1))];
            if let Some(Observation::Found { at, .. }) = poller.observation(&format!("bench/{name}")) {
                ages.push(at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1..20))).await;
        }
        let published = api_requests(nats).await? - before;
        stop.cancel();
        task.await?;
        if let Some(publisher) = publisher {
            publisher.await?;
        }
        rates.push(published as f64 / started.elapsed().as_secs_f64());
    }
    ages.sort();

    // The reference: every stream's info and consumer list each lag interval, 64 at once
    // (Jetway's poller before the inventory).
    let before = api_requests(nats).await?;
    let started = Instant::now();
    while started.elapsed() < run_for {
        let round = Instant::now();
        futures::stream::iter(&names)
            .map(|name| async move {
                if let Ok(stream) = js.get_stream(name).await {
                    let _: Vec<_> = stream.consumers().collect().await;
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
    }
    let reference = (api_requests(nats).await? - before) as f64 / started.elapsed().as_secs_f64();
    for name in &names {
        let _ = js.delete_stream(name).await;
    }
    println!();
    println!(
        "lag benchmark, one consumer per stream: {n} streams, {} driving scaling, {} ms lag interval, {} s each",
        args.wide_demanded,
        args.interval_ms,
        run_for.as_secs()
    );
    println!("  Jetway's inventory (stream list each round, consumer lists where figures moved)");
    println!("    JetStream API requests at idle                 {:>8.1} /s", rates[0]);
    println!(
        "    with 10 messages/s on each scaling stream       {:>8.1} /s   (publishes are not API requests)",
        rates[1]
    );
    println!(
        "    age of a scaling consumer's figure  p50 {:>5.0} ms   p99 {:>5.0} ms   ({} samples, both runs)",
        percentile(&ages, 0.5).as_secs_f64() * 1000.0,
        percentile(&ages, 0.99).as_secs_f64() * 1000.0,
        ages.len()
    );
    println!("  reference: every stream's info and consumer list each lag interval (Jetway before)");
    println!(
        "    JetStream API requests                          {reference:>8.1} /s   ({:.0}x idle)",
        reference / rates[0]
    );
    Ok(())
}
