//! Reconcile benchmark: N Streams and N Consumers applied to the test ground, against
//! the same streams and consumers created directly with async-nats, in one run.
//!
//!   cargo bench --bench reconcile                 # N = 1000
//!   cargo bench --bench reconcile -- --objects 200
//!
//! Prints the time until every object is Ready, reconciles per second, the operator's
//! peak RSS, and the reference time beside it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

#[path = "common/mod.rs"]
mod common;
use futures::{StreamExt, TryStreamExt, stream};
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// How many Streams, and as many Consumers, to apply.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Requests in flight at once, for both the apply and the reference.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (attached, _ground) = common::ground().await?;
    let client = jetway_testground::kube::client_from_kubeconfig(&attached.kubeconfig).await?;
    let nats = async_nats::connect(&attached.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let n = args.objects;

    let reference = reference(&js, n, args.concurrency).await?;

    common::install_crds(&client).await?;
    let namespace = common::namespace(&client, "bench").await?;

    let port = jetway_testground::wait::free_port()?;
    let mut operator = common::operator(&attached, &namespace, port).await?;
    let pid = operator.id().context("the operator's pid")?;
    let reconciles_before = reconciles(port).await?;

    let started = Instant::now();
    let streams: Api<Stream> = Api::namespaced(client.clone(), &namespace);
    let consumers: Api<Consumer> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply("jetway-bench");
    stream::iter(0..n)
        .map(|i| {
            let (streams, consumers, params) = (streams.clone(), consumers.clone(), params.clone());
            async move {
                let name = format!("bench-{i}");
                let s = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name},
                    "spec": {"name": format!("BENCH_{i}"), "storage": "file", "maxAge": "1h"}});
                streams.patch(&name, &params, &Patch::Apply(s)).await?;
                let c = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": name},
                    "spec": {"streamName": format!("BENCH_{i}"), "durableName": "worker", "ackWait": "30s"}});
                consumers.patch(&name, &params, &Patch::Apply(c)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<()>()
        .await?;
    let applied = started.elapsed();

    common::wait_all_ready(&streams, &consumers, n, started).await?;
    let all_ready = started.elapsed();
    let reconciled = reconciles(port).await? - reconciles_before;
    let peak_rss_kib = peak_rss_kib(pid)?;
    operator.kill().await.ok();

    // Leave the server as it was.
    stream::iter(0..n)
        .for_each_concurrent(args.concurrency, |i| {
            let js = js.clone();
            async move {
                let _ = js.delete_stream(format!("BENCH_{i}")).await;
            }
        })
        .await;

    println!("reconcile benchmark: {n} Streams + {n} Consumers on nats-server and kube-apiserver (loopback)");
    println!("  applied to Kubernetes in        {:>8.2} s", applied.as_secs_f64());
    println!(
        "  all {} Ready after              {:>8.2} s   ({:.2} s after the last apply)",
        2 * n,
        all_ready.as_secs_f64(),
        (all_ready - applied).as_secs_f64()
    );
    println!("  reconciles                      {:>8.0}   ({:.0}/s)", reconciled, reconciled / all_ready.as_secs_f64());
    println!("  operator peak RSS               {:>8.1} MiB", peak_rss_kib as f64 / 1024.0);
    println!(
        "  reference: async-nats directly  {:>8.2} s   (same streams and consumers, {} in flight)",
        reference.as_secs_f64(),
        args.concurrency
    );
    println!("  ratio Ready / reference         {:>8.1}x", all_ready.as_secs_f64() / reference.as_secs_f64());
    Ok(())
}

/// Creates and then deletes N streams with one consumer each, straight through async-nats.
async fn reference(js: &async_nats::jetstream::Context, n: usize, concurrency: usize) -> anyhow::Result<Duration> {
    use async_nats::jetstream::{consumer, stream as js_stream};
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| async move {
            let config = js_stream::Config {
                name: format!("REF_{i}"),
                max_age: Duration::from_secs(3600),
                ..Default::default()
            };
            let s = js.create_stream(config).await?;
            let c = consumer::pull::Config {
                durable_name: Some("worker".into()),
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            };
            s.create_consumer(c).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    let elapsed = started.elapsed();
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| async move {
            let _ = js.delete_stream(format!("REF_{i}")).await;
        })
        .await;
    Ok(elapsed)
}

/// The sum of `jetway_reconciles_total` over kinds.
async fn reconciles(port: u16) -> anyhow::Result<f64> {
    let text = common::metrics(port).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("jetway_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The high-water mark of the process's resident memory, from /proc.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
}
