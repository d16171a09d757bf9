//! Chaos soak: N Streams and N Consumers applied while the operator is SIGKILLed at
//! random moments, first while they converge and then while their specs change.
//!
//!   cargo bench --bench chaos                          # N = 200, 10 kills
//!   cargo bench --bench chaos -- --objects 50 --kills 4 --seed 7
//!
//! Messages are published into every stream as soon as it exists, and counted by
//! their publish acks. Everything is checked on the servers themselves: which streams
//! and consumers exist and whose mark they carry, how many messages each stream holds,
//! and, once everything is Ready, the JetStream writes seen on the server's API
//! subjects over three resync intervals. The expected figure is printed beside each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::plan::OWNER_KEY;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[path = "common/mod.rs"]
mod common;

#[derive(Parser)]
struct Args {
    /// How many Streams, and as many Consumers.
    #[arg(long, default_value_t = 200)]
    objects: usize,
    /// How many times the operator is SIGKILLed.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Seeds the moments of the kills.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages published into each stream.
    #[arg(long, default_value_t = 20)]
    messages: u64,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const RESYNC: Duration = Duration::from_secs(3);
/// A short lease, so that a restarted operator leads soon after its predecessor died.
const FLAGS: &[&str] =
    &["--resync-interval", "3s", "--leader-elect-lease-duration", "4s", "--leader-elect-renew-before", "2s"];

fn stream_name(i: usize) -> String {
    format!("CHAOS_{i}")
}

fn manifests(i: usize, generation: u32) -> (Value, Value) {
    let name = format!("chaos-{i}");
    let description = format!("generation {generation}");
    let stream = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name},
        "spec": {"name": stream_name(i), "subjects": [format!("chaos.{i}.>")], "maxMsgs": 1000 * generation,
                 "description": description, "deletionPolicy": "Delete"}});
    let consumer = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": name},
        "spec": {"streamName": stream_name(i), "durableName": "worker", "ackWait": format!("{}s", 10 * generation),
                 "description": description, "deletionPolicy": "Delete"}});
    (stream, consumer)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.objects;
    let (attached, _ground) = common::ground().await?;
    let client = jetway_testground::kube::client_from_kubeconfig(&attached.kubeconfig).await?;
    let nats = async_nats::connect(&attached.nats_url).await?;
    let js = async_nats::jetstream::new(nats.clone());
    common::install_crds(&client).await?;
    let namespace = common::namespace(&client, "chaos").await?;
    let streams: Api<Stream> = Api::namespaced(client.clone(), &namespace);
    let consumers: Api<Consumer> = Api::namespaced(client.clone(), &namespace);
    let port = jetway_testground::wait::free_port()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let started = Instant::now();

    let mut operator = common::operator_with(&attached, &namespace, port, FLAGS).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_when_created(js.clone(), n, args.messages, acked.clone()));
    let mut applying = tokio::spawn(apply_all(streams.clone(), consumers.clone(), n, 1));
    for kill in 0..args.kills {
        if kill == args.kills / 2 {
            // The second half of the kills lands while every spec changes.
            applying.await??;
            applying = tokio::spawn(apply_all(streams.clone(), consumers.clone(), n, 2));
        }
        leading(port).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..2500))).await;
        operator.kill().await.ok();
        operator = common::operator_with(&attached, &namespace, port, FLAGS).await?;
    }
    applying.await??;
    publisher.await??;
    let kills = args.kills;

    // Converged: every object Ready at its current generation.
    common::wait_all_ready((&streams, &consumers), (n, n), started).await?;
    let converged = started.elapsed();
    let writes_after = writes_over(&nats, 3 * RESYNC).await?;

    // What the server holds.
    let mut held = 0;
    let (mut duplicates, mut orphans, mut missing, mut stale) = (0, 0, 0, 0);
    let mut names = js.stream_names();
    let mut seen = BTreeMap::new();
    while let Some(name) = names.try_next().await? {
        if let Some(i) = name.strip_prefix("CHAOS_").and_then(|i| i.parse::<usize>().ok()) {
            *seen.entry(i).or_insert(0) += 1;
        }
    }
    for i in 0..n {
        let Ok(mut s) = js.get_stream(stream_name(i)).await else {
            missing += 1;
            continue;
        };
        let info = s.info().await?.clone();
        held += info.state.messages;
        let owner = format!("{namespace}/chaos-{i}");
        if info.config.metadata.get(OWNER_KEY) != Some(&owner) {
            orphans += 1;
        }
        if info.config.max_messages != 2000 {
            stale += 1;
        }
        let consumers: Vec<_> = s.consumer_names().try_collect().await?;
        duplicates += consumers.len().saturating_sub(1);
        match s.consumer_info("worker").await {
            Ok(c) if c.config.metadata.get(OWNER_KEY) == Some(&owner) => {
                if c.config.ack_wait != Duration::from_secs(20) {
                    stale += 1;
                }
            }
            Ok(_) => orphans += 1,
            Err(_) => missing += 1,
        }
    }
    duplicates += seen.values().map(|c| c - 1).sum::<usize>() + seen.keys().filter(|i| **i >= n).count();
    let published = acked.load(Ordering::Relaxed);
    let lost = published.saturating_sub(held);
    operator.kill().await.ok();

    // Leave the server as it was.
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let js = js.clone();
            async move {
                let _ = js.delete_stream(stream_name(i)).await;
            }
        })
        .await;

    println!("chaos soak: {n} Streams + {n} Consumers, operator SIGKILLed {kills} times (seed {})", args.seed);
    println!("  half the kills while converging, half while every spec changed (maxMsgs, ackWait, description)");
    println!("  objects Ready at their generation  {:>6} of {}   after {:.1} s", 2 * n, 2 * n, converged.as_secs_f64());
    println!("                                     figure  expected");
    println!("  duplicate JetStream objects        {duplicates:>6}  0");
    println!("  orphaned (no or wrong mark)        {orphans:>6}  0");
    println!("  missing                            {missing:>6}  0");
    println!("  not at the latest spec             {stale:>6}  0");
    println!("  messages lost                      {lost:>6}  0   (of {published} acked; the streams hold {held})");
    let label = format!("writes in {:.0} s after convergence", (3 * RESYNC).as_secs_f64());
    println!("  {label:<33}  {:>6}  0", writes_after.len());
    for write in writes_after.iter().take(5) {
        println!("    {write}");
    }
    Ok(())
}

async fn apply_all(streams: Api<Stream>, consumers: Api<Consumer>, n: usize, generation: u32) -> anyhow::Result<()> {
    let params = PatchParams::apply("jetway-chaos");
    stream::iter(0..n)
        .map(|i| {
            let (streams, consumers, params) = (streams.clone(), consumers.clone(), params.clone());
            async move {
                let (s, c) = manifests(i, generation);
                let name = format!("chaos-{i}");
                streams.patch(&name, &params, &Patch::Apply(s)).await?;
                consumers.patch(&name, &params, &Patch::Apply(c)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

/// Waits until the operator on `port` holds the lease and writes.
async fn leading(port: u16) -> anyhow::Result<()> {
    jetway_testground::wait::until(
        "the operator to lead",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let text = common::metrics(port).await.unwrap_or_default();
            Ok(text.lines().any(|l| l.starts_with("jetway_leader ") && l.ends_with(" 1")).then_some(()))
        },
    )
    .await
}

/// Publishes `messages` into each stream as soon as it exists; counts the acks.
async fn publish_when_created(
    js: async_nats::jetstream::Context,
    n: usize,
    messages: u64,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    stream::iter(0..n)
        .map(|i| {
            let (js, acked) = (js.clone(), acked.clone());
            async move {
                while js.get_stream(stream_name(i)).await.is_err() {
                    if Instant::now() > deadline {
                        bail!("the stream {} never appeared", stream_name(i));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for m in 0..messages {
                    let ack = js.publish(format!("chaos.{i}.{m}"), "x".into()).await?;
                    if ack.await.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
}

/// The stream and consumer writes of this soak the server receives over `window`.
async fn writes_over(nats: &async_nats::Client, window: Duration) -> anyhow::Result<Vec<String>> {
    let mut api = nats.subscribe("$JS.API.>").await.context("subscribing")?;
    nats.flush().await?;
    let mut seen = Vec::new();
    let end = tokio::time::sleep(window);
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => break,
            Some(message) = api.next() => {
                let write = jetway_testground::nats::is_jetstream_write(&message.subject);
                if write && message.subject.contains("CHAOS_") {
                    seen.push(message.subject.to_string());
                }
            }
        }
    }
    Ok(seen)
}
