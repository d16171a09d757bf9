//! Scale-from-zero benchmark: the time from lag appearing on a consumer to its
//! WorkerPool's Deployment at 1 replica, over repeated trials, beside the time the
//! lag takes to show in JetStream's own consumer info (the floor any scaler starts
//! from), measured in the same run.
//!
//!   cargo bench --bench scale                  # 10 trials
//!   cargo bench --bench scale -- --trials 30

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use jetway::api::consumer::Consumer;
use jetway::api::stream::Stream;
use jetway::api::workerpool::WorkerPool;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn replicas(deployments: &Api<Deployment>, name: &str) -> i32 {
    deployments.get_opt(name).await.ok().flatten().and_then(|d| d.spec).and_then(|s| s.replicas).unwrap_or(-1)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (attached, _ground) = common::ground().await?;
    let client = jetway_testground::kube::client_from_kubeconfig(&attached.kubeconfig).await?;
    let js = async_nats::jetstream::new(async_nats::connect(&attached.nats_url).await?);
    common::install_crds(&client).await?;
    let namespace = common::namespace(&client, "scale-bench").await?;
    let port = jetway_testground::wait::free_port()?;
    let _operator = common::operator(&attached, &namespace, port).await?;

    let stream_name = format!("SCALE_{}", std::process::id());
    let params = PatchParams::apply("jetway-bench");
    let apply = |kind: &str, name: &str, spec: serde_json::Value| json!({ "apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec });
    let streams: Api<Stream> = Api::namespaced(client.clone(), &namespace);
    let spec = json!({ "name": stream_name, "subjects": [format!("{stream_name}.>")], "deletionPolicy": "Delete" });
    streams.patch("scale", &params, &Patch::Apply(apply("Stream", "scale", spec))).await?;
    let consumers: Api<Consumer> = Api::namespaced(client.clone(), &namespace);
    let spec = json!({ "streamName": stream_name, "durableName": "work", "ackPolicy": "explicit" });
    consumers.patch("work", &params, &Patch::Apply(apply("Consumer", "work", spec))).await?;
    let pools: Api<WorkerPool> = Api::namespaced(client.clone(), &namespace);
    let spec = json!({
        "consumerRef": { "name": "work" }, "worker": { "image": "jetway/payment:bench" },
        "autoscaling": { "minReplicas": 0, "maxReplicas": 3, "targetPendingPerReplica": 100, "cooldown": "1s" }
    });
    pools.patch("work", &params, &Patch::Apply(apply("WorkerPool", "work", spec))).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);

    let mut wakes = Vec::new();
    let mut visible = Vec::new();
    for trial in 0..args.trials {
        let deployments = &deployments;
        jetway_testground::wait::until(
            "the pool at 0",
            Duration::from_secs(120),
            Duration::from_millis(10),
            || async { Ok((replicas(deployments, "work").await == 0).then_some(())) },
        )
        .await?;
        let stream = js.get_stream(&stream_name).await?;
        let started = Instant::now();
        js.publish(format!("{stream_name}.order"), "o".into()).await?.await?;
        let mut seen = None;
        loop {
            if seen.is_none() && stream.consumer_info("work").await?.num_pending > 0 {
                seen = Some(started.elapsed());
            }
            if replicas(deployments, "work").await >= 1 {
                wakes.push(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        visible.push(seen.unwrap_or_else(|| started.elapsed()));
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("work").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut batch = consumer.fetch().max_messages(10).messages().await?;
        while let Some(message) = batch.next().await {
            message.map_err(|e| anyhow::anyhow!("{e}"))?.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        eprintln!("trial {trial}: 0 -> 1 after {:?}", wakes[trial]);
    }
    let _ = js.delete_stream(&stream_name).await;
    wakes.sort();
    visible.sort();
    println!();
    println!("scale-from-zero benchmark: {} trials, lag poll every 1 s, pool looked at every 1 s", args.trials);
    println!(
        "  lag appears -> Deployment at 1 replica   p50 {:>6.0} ms   p90 {:>6.0} ms   max {:>6.0} ms",
        percentile(&wakes, 0.5),
        percentile(&wakes, 0.9),
        percentile(&wakes, 1.0)
    );
    println!(
        "  reference: lag visible in consumer info  p50 {:>6.0} ms   p90 {:>6.0} ms   max {:>6.0} ms",
        percentile(&visible, 0.5),
        percentile(&visible, 0.9),
        percentile(&visible, 1.0)
    );
    Ok(())
}
