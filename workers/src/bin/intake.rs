//! `jetway-intake`: accepts orders over HTTP and publishes `orders.created.v1.<customerId>.<orderId>`.

use clap::Parser;
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::cli::CommonArgs;
use jetway_workers::process::Process;
use jetway_workers::{intake, topology};

/// Serves POST /orders: validates an order, answers 202 once JetStream stored it.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(&args.common.log, "jetway-intake")?;
    let stop = shutdown::on_signals();
    let process = Process::start(&args.common, stop.clone(), intake::routes).await?;
    if args.common.create_topology {
        let replicas = args.common.replicas.into();
        process.eventually("the streams", || topology::ensure_streams(&process.jetstream, replicas)).await?;
    }
    stop.cancelled().await;
    process.finish().await
}
