//! `jetway-payment`: charges each order of `orders.created.v1` exactly once.

use std::time::Duration;

use clap::Parser;
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::cli::WorkerArgs;
use jetway_workers::payment::{Payment, SimulatedGateway};
use jetway_workers::process::Process;
use jetway_workers::topology;

/// Charges each order exactly once and publishes payments.completed.v1 or payments.failed.v1.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
    /// The simulated gateway's time to answer.
    #[arg(long, env = "JETWAY_GATEWAY_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    gateway_latency: Duration,
    /// The share of calls the simulated gateway fails (retried later), 0 to 1.
    #[arg(long, env = "JETWAY_GATEWAY_FAILURE_RATE", default_value_t = 0.0)]
    gateway_failure_rate: f64,
    /// The share of charges the simulated gateway declines (payments.failed.v1), 0 to 1.
    #[arg(long, env = "JETWAY_GATEWAY_DECLINE_RATE", default_value_t = 0.0)]
    gateway_decline_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(&args.worker.common.log)?;
    for (name, rate) in [("failure", args.gateway_failure_rate), ("decline", args.gateway_decline_rate)] {
        anyhow::ensure!((0.0..=1.0).contains(&rate), "--gateway-{name}-rate must be between 0 and 1");
    }
    let process = Process::start(&args.worker.common, shutdown::on_signals(), |_, _| Default::default()).await?;
    let handler = Payment {
        gateway: SimulatedGateway::new(args.gateway_latency, args.gateway_failure_rate, args.gateway_decline_rate),
        ledger: topology::ledger(&process.jetstream).await?,
        publisher: process.jetstream.clone(),
    };
    process.work("payment", &args.worker, &topology::PAYMENT, handler).await
}
