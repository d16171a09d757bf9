//! Reconcile benchmark: Streams, Consumers and autoscaled WorkerPools applied to the
//! test ground, against the same streams and consumers created directly with
//! async-nats, in one run.
//!
//!   cargo bench --bench reconcile                                  # 1000 + 1000, one consumer per stream
//!   cargo bench --bench reconcile -- --objects 10000
//!   cargo bench --bench reconcile -- --shape fanout                # 10 streams, 1000 consumers
//!   cargo bench --bench reconcile -- --pools 0 --idle-seconds 10
//!   cargo bench --bench reconcile -- --jsz                         # the operator given a system-account user
//!
//! Prints, beside the targets: the time from the last object accepted to all
//! Ready, JetStream API requests per object while converging (counted by the server),
//! JetStream and kube-apiserver requests per second at idle (counted by the servers),
//! reconciles, the operator's peak RSS, and the reference time.

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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shape {
    /// One consumer per stream: N Streams and N Consumers.
    PerStream,
    /// 10 streams sharing N Consumers.
    Fanout,
}

#[derive(Parser)]
struct Args {
    /// How many Consumers to apply (and as many Streams, one per consumer).
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    #[arg(long, value_enum, default_value_t = Shape::PerStream)]
    shape: Shape,
    /// Autoscaled WorkerPools, on the first consumers.
    #[arg(long, default_value_t = 100)]
    pools: usize,
    /// How long to count requests at idle, once everything is Ready.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Requests in flight at once, for both the apply and the reference.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give the operator a system-account user (on a nats-server of the bench's own,
    /// with accounts), so that its rounds are JSZ requests.
    #[arg(long)]
    jsz: bool,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut attached, ground) = common::ground().await?;
    let mut monitor = match &ground {
        Some(ground) => ground.nats.monitor_url(),
        None => std::env::var("JETWAY_TEST_NATS_MONITOR_URL")
            .context("with a running ground, set JETWAY_TEST_NATS_MONITOR_URL to its nats-server's monitor URL")?,
    };
    // With --jsz: a server with an application account (anonymous clients land in it)
    // and a system account the operator is given a user of.
    let with_accounts = match args.jsz {
        true => {
            let accounts = "accounts {\n  SYS: { users: [ {user: sys, password: sys-pw} ] }\n  APP: { jetstream: enabled, users: [ {user: app, password: app-pw} ] }\n}\nsystem_account: SYS\nno_auth_user: app\n";
            let server = jetway_testground::NatsServer::start(&jetway_testground::Tools::locate()?, accounts).await?;
            attached.nats_url = server.url();
            monitor = server.monitor_url();
            Some(server)
        }
        false => None,
    };
    let system_flags: &[&str] =
        if with_accounts.is_some() { &["--nats-system-user", "sys", "--nats-system-password", "sys-pw"] } else { &[] };
    let client = jetway_testground::kube::client_from_kubeconfig(&attached.kubeconfig).await?;
    let nats = async_nats::connect(&attached.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let consumers_n = args.objects;
    let streams_n = match args.shape {
        Shape::PerStream => consumers_n,
        Shape::Fanout => 10.min(consumers_n),
    };
    let pools_n = args.pools.min(consumers_n);
    let stream_of = |i: usize| i % streams_n;

    let reference = reference(&js, streams_n, consumers_n, args.concurrency).await?;

    common::install_crds(&client).await?;
    let namespace = common::namespace(&client, "bench").await?;

    let port = jetway_testground::wait::free_port()?;
    let mut operator = common::operator_with(&attached, &namespace, port, system_flags).await?;
    let pid = operator.id().context("the operator's pid")?;
    let reconciles_before = reconciles(port).await?;
    let requests_before = common::jetstream_requests(&monitor).await?;
    let (_, writes_at_start) = common::apiserver_requests(&client).await?;

    let started = Instant::now();
    let streams: Api<Stream> = Api::namespaced(client.clone(), &namespace);
    let consumers: Api<Consumer> = Api::namespaced(client.clone(), &namespace);
    let pools: Api<jetway::api::workerpool::WorkerPool> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply("jetway-bench");
    let objects = (0..streams_n)
        .map(|i| {
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": format!("bench-{i}")},
                "spec": {"name": format!("BENCH_{i}"), "storage": "file", "maxAge": "1h"}})
        })
        .chain((0..consumers_n).map(|i| {
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Consumer", "metadata": {"name": format!("bench-{i}")},
                "spec": {"streamName": format!("BENCH_{}", stream_of(i)), "durableName": format!("worker-{i}"), "ackWait": "30s"}})
        }))
        .chain((0..pools_n).map(|i| {
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "WorkerPool", "metadata": {"name": format!("bench-{i}")},
                "spec": {"consumerRef": {"name": format!("bench-{i}")}, "worker": {"image": "jetway/payment:bench"},
                    "autoscaling": {"minReplicas": 0, "maxReplicas": 5, "targetPendingPerReplica": 100, "cooldown": "10s"}}})
        }));
    stream::iter(objects)
        .map(|object| {
            let (streams, consumers, pools, params) =
                (streams.clone(), consumers.clone(), pools.clone(), params.clone());
            async move {
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                match object["kind"].as_str() {
                    Some("Stream") => drop(streams.patch(&name, &params, &Patch::Apply(object)).await?),
                    Some("Consumer") => drop(consumers.patch(&name, &params, &Patch::Apply(object)).await?),
                    _ => drop(pools.patch(&name, &params, &Patch::Apply(object)).await?),
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<()>()
        .await?;
    let applied = started.elapsed();

    common::wait_all_ready((&streams, &consumers), (streams_n, consumers_n), started).await?;
    let all_ready = started.elapsed();
    let converging = common::jetstream_requests(&monitor).await? - requests_before;
    let reconciled = reconciles(port).await? - reconciles_before;
    let by_kind = reconciles_by_kind(port).await?;
    let (_, writes_at_ready) = common::apiserver_requests(&client).await?;

    // Idle: every pool gone to zero after its cooldown, nothing changes; count what
    // the servers answer.
    let settled = Instant::now();
    loop {
        let list = pools.list(&Default::default()).await?;
        if list.items.iter().all(|pool| pool.spec.replicas == Some(0)) {
            break;
        }
        anyhow::ensure!(settled.elapsed() < Duration::from_secs(120), "pools still not at zero after 2 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Duration::from_secs(args.idle_seconds);
    let (js_before, (api_before, writes_before)) =
        (common::jetstream_requests(&monitor).await?, common::apiserver_requests(&client).await?);
    let cpu_before = cpu_ticks(pid)?;
    tokio::time::sleep(idle).await;
    let cpu_at_idle = (cpu_ticks(pid)? - cpu_before) as f64 / TICKS_PER_SECOND / idle.as_secs_f64();
    let (js_after, (api_after, writes_after)) =
        (common::jetstream_requests(&monitor).await?, common::apiserver_requests(&client).await?);
    let per_second = |before: f64, after: f64| (after - before) / idle.as_secs_f64();
    let idle_writes: Vec<(String, f64)> = writes_after
        .iter()
        .map(|(what, after)| (what.clone(), after - writes_before.get(what).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let writes_per_second = idle_writes.iter().map(|(_, n)| n).sum::<f64>() / idle.as_secs_f64();
    let peak_rss_kib = peak_rss_kib(pid)?;
    let (rss_kib, anonymous_kib) = rss_now_kib(pid)?;
    let events_dropped = summed(port, "jetway_events_dropped_total ").await?;
    operator.kill().await.ok();

    // Leave the server as it was.
    stream::iter(0..streams_n)
        .for_each_concurrent(args.concurrency, |i| {
            let js = js.clone();
            async move {
                let _ = js.delete_stream(format!("BENCH_{i}")).await;
            }
        })
        .await;

    let objects = streams_n + consumers_n;
    println!(
        "reconcile benchmark: {streams_n} Streams + {consumers_n} Consumers ({:?}), {pools_n} autoscaled WorkerPools, nats-server and kube-apiserver on loopback{}",
        args.shape,
        if args.jsz { ", the operator with a system-account user (JSZ rounds)" } else { "" }
    );
    println!("                                     measured     target");
    println!("  applied to Kubernetes in        {:>8.2} s", applied.as_secs_f64());
    let after_last = (all_ready - applied).as_secs_f64();
    let ready_target = if objects <= 2000 { "<= 1 s" } else { "<= 10 s" };
    println!("  Ready after the last apply      {after_last:>8.2} s   {ready_target}");
    println!(
        "  JetStream requests converging   {:>8.2} /object   <= 3   ({converging} for {objects} objects)",
        converging as f64 / objects as f64
    );
    println!(
        "  JetStream requests at idle      {:>8.1} /s   {}",
        per_second(js_before as f64, js_after as f64),
        if args.jsz {
            "<= 10 with the JSZ fan-out (JSZ itself is one request a round)"
        } else {
            "<= 100 (1000 streams, 30 s resync, 100 autoscaled)"
        }
    );
    println!("  apiserver requests at idle      {:>8.1} /s", per_second(api_before, api_after));
    println!(
        "  apiserver writes at idle        {:>8.1} /s   0   (leases excepted; over {} s)",
        writes_per_second,
        idle.as_secs()
    );
    for (what, n) in &idle_writes {
        println!("      {what:<40} {n:>6.0}");
    }
    println!("  operator CPU at idle            {:>8.1} %   of one core", cpu_at_idle * 100.0);
    println!("  reconciles until Ready          {:>8.2} /object   <= 2", reconciled / (objects + pools_n) as f64);
    println!("      {by_kind}");
    println!("  Events dropped (queue full)     {events_dropped:>8.0}");
    println!("  apiserver writes until Ready, by the bench's applies and the operator:");
    for (what, after) in &writes_at_ready {
        let n = after - writes_at_start.get(what).copied().unwrap_or(0.0);
        if n > 0.0 {
            println!("      {what:<40} {n:>6.0}");
        }
    }
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        for line in client
            .request_text(request)
            .await?
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("streams"))
        {
            println!("{line}");
        }
    }
    let rss_target = if objects <= 2000 { "<= 36 MiB" } else { "<= 150 MiB" };
    println!("  operator peak RSS               {:>8.1} MiB   {rss_target}", peak_rss_kib as f64 / 1024.0);
    println!(
        "      at idle {:.1} MiB: {:.1} MiB heap and stacks, {:.1} MiB file pages (the binary's code)",
        rss_kib as f64 / 1024.0,
        anonymous_kib as f64 / 1024.0,
        (rss_kib - anonymous_kib) as f64 / 1024.0
    );
    println!(
        "  reference: async-nats directly  {:>8.2} s   (same streams and consumers, {} in flight)",
        reference.as_secs_f64(),
        args.concurrency
    );
    println!("  ratio Ready / reference         {:>8.1}x", all_ready.as_secs_f64() / reference.as_secs_f64());
    Ok(())
}

/// Creates and then deletes the same streams and consumers straight through async-nats.
async fn reference(
    js: &async_nats::jetstream::Context,
    streams: usize,
    consumers: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    use async_nats::jetstream::{consumer, stream as js_stream};
    let started = Instant::now();
    stream::iter(0..streams)
        .map(|i| async move {
            let config = js_stream::Config {
                name: format!("REF_{i}"),
                max_age: Duration::from_secs(3600),
                ..Default::default()
            };
            js.create_stream(config).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    stream::iter(0..consumers)
        .map(|i| async move {
            let s = js.get_stream_no_info(format!("REF_{}", i % streams)).await?;
            let c = consumer::pull::Config {
                durable_name: Some(format!("worker-{i}")),
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
    stream::iter(0..streams)
        .for_each_concurrent(concurrency, |i| async move {
            let _ = js.delete_stream(format!("REF_{i}")).await;
        })
        .await;
    Ok(elapsed)
}

/// The sum of `jetway_reconciles_total` over kinds.
async fn reconciles(port: u16) -> anyhow::Result<f64> {
    summed(port, "jetway_reconciles_total{").await
}

/// The sum of the operator's series whose line starts with `prefix`.
async fn summed(port: u16, prefix: &str) -> anyhow::Result<f64> {
    let text = common::metrics(port).await?;
    Ok(text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum())
}

/// `jetway_reconciles_total` per kind and `jetway_reconcile_errors_total` per kind and
/// reason, as one line.
async fn reconciles_by_kind(port: u16) -> anyhow::Result<String> {
    let text = common::metrics(port).await?;
    let kinds: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("jetway_reconciles_total{") || l.starts_with("jetway_reconcile_errors_total{"))
        .map(|l| l.trim_start_matches("jetway_reconcile").to_owned())
        .collect();
    Ok(kinds.join("  "))
}

/// The high-water mark of the process's resident memory, from /proc.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_kib(pid, "status", "VmHWM:")
}

/// What the process holds resident now: in all, and of it anonymous (the heap and
/// stacks); the rest is file pages, mostly the binary's own code.
fn rss_now_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    Ok((proc_kib(pid, "smaps_rollup", "Rss:")?, proc_kib(pid, "smaps_rollup", "Anonymous:")?))
}

/// Clock ticks per second in /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The CPU time the process has used, user and system, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').context("a stat line")?.1.split_whitespace().collect();
    Ok(fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?)
}

fn proc_kib(pid: u32, file: &str, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join(file))?;
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} in {file}"))?;
    Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
}
