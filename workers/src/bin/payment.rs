//! `jetway-payment`: charges each reserved order exactly once at the payment gateway.

use std::time::Duration;

use clap::Parser;
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::cli::WorkerArgs;
use jetway_workers::payment::{HttpGateway, Payment};
use jetway_workers::process::Process;
use jetway_workers::topology;

/// Charges each order of inventory.reserved.v1 once and publishes payments.completed.v1 or payments.failed.v1.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
    /// The payment gateway's API root: `POST <url>/v1/charges` in Stripe's shape
    /// (`jetway-gateway` simulates one).
    #[arg(long, env = "JETWAY_GATEWAY_URL")]
    gateway_url: String,
    /// The gateway's API key, sent as `Authorization: Bearer`; on Kubernetes, from a
    /// Secret (`env.valueFrom.secretKeyRef`).
    #[arg(long, env = "JETWAY_GATEWAY_API_KEY", hide_env_values = true)]
    gateway_api_key: Option<String>,
    /// The longest one gateway call may take; an unanswered call is asked again later
    /// under the same idempotency key.
    #[arg(long, env = "JETWAY_GATEWAY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    gateway_timeout: Duration,
    /// How long the gateway remembers an idempotency key (Stripe: 24 h). A charge with
    /// no outcome older than this is dead-lettered instead of asked again.
    #[arg(long, env = "JETWAY_GATEWAY_KEY_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    gateway_key_retention: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(&args.worker.common.log, "jetway-payment")?;
    let gateway = HttpGateway::new(&args.gateway_url, args.gateway_api_key.clone(), args.gateway_timeout)?;
    let process = Process::start(&args.worker.common, shutdown::on_signals(), |_, _| Default::default()).await?;
    let replicas = args.worker.common.replicas.into();
    let ledger = process.eventually("the ledger bucket", || topology::ledger(&process.jetstream, replicas)).await?;
    let handler = Payment {
        key_retention: args.gateway_key_retention,
        ..Payment::new(gateway, ledger, process.jetstream.clone())
    };
    process.work("payment", &args.worker, &topology::PAYMENT, handler).await
}
