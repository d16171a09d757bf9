//! `jetway-inventory`: reserves stock for each order of `orders.created.v1`, and
//! gives it back when the order's payment fails (`payments.failed.v1`).

use clap::Parser;
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::cli::WorkerArgs;
use jetway_workers::inventory::{Inventory, KvStock};
use jetway_workers::process::Process;
use jetway_workers::topology;

/// Reserves every line of an order or none (inventory.reserved.v1 or inventory.rejected.v1), and gives it back when the payment fails (inventory.released.v1).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Stock to start with, as SKU=QUANTITY; only SKUs the bucket does not know yet are set.
    #[arg(long = "seed-stock", env = "JETWAY_SEED_STOCK", value_delimiter = ',', value_parser = parse_stock)]
    seed_stock: Vec<(String, u64)>,
}

fn parse_stock(text: &str) -> Result<(String, u64), String> {
    let (sku, quantity) = text.split_once('=').ok_or("expected SKU=QUANTITY")?;
    Ok((sku.trim().to_owned(), quantity.trim().parse().map_err(|e| format!("quantity of {sku}: {e}"))?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(&args.worker.common.log, "jetway-inventory")?;
    let process = Process::start(&args.worker.common, shutdown::on_signals(), |_, _| Default::default()).await?;
    let replicas = args.worker.common.replicas.into();
    let bucket = process.eventually("the stock bucket", || topology::stock(&process.jetstream, replicas)).await?;
    let stock = KvStock::new(process.client.clone(), bucket);
    process
        .eventually("the seed stock", || async {
            for (sku, quantity) in &args.seed_stock {
                stock.seed(sku, *quantity).await?;
            }
            Ok(())
        })
        .await?;
    let handler = Inventory { stock, publisher: process.jetstream.clone() };
    process.work("inventory", &args.worker, &topology::INVENTORY, handler).await
}
