//! `jetway-gateway`: a payment service provider simulated in Stripe's shape, so that
//! tests and benchmarks count charges at the gateway.

use anyhow::Context;
use clap::Parser;
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::gateway::{self, cli::GatewayArgs};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = GatewayArgs::parse();
    let _telemetry = telemetry::init(&args.log, "jetway-gateway")?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    gateway::serve(args.config(), listener, shutdown::on_signals()).await
}
