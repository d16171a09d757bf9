//! `jetway-audit`: records every event of the pipeline, and replays a time range.

use clap::{Parser, Subcommand};
use jetway_runtime::{shutdown, telemetry};
use jetway_workers::audit::{self, Audit};
use jetway_workers::cli::WorkerArgs;
use jetway_workers::process::{self, Process};
use jetway_workers::topology;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Copies every event of the pipeline into the immutable AUDIT stream.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the records stored between two times, one JSON object per line.
    Replay {
        /// The start, RFC 3339 (2026-11-24T08:00:00Z).
        #[arg(long, value_parser = rfc3339)]
        from: OffsetDateTime,
        /// The end, RFC 3339; now when absent.
        #[arg(long, value_parser = rfc3339)]
        to: Option<OffsetDateTime>,
    },
}

fn rfc3339(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(&args.worker.common.log, "jetway-audit")?;
    if let Some(Command::Replay { from, to }) = args.command {
        let client = process::connect(&args.worker.common, Default::default(), false).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let to = to.unwrap_or_else(OffsetDateTime::now_utc);
        audit::replay(&jetstream, from, to, |record| {
            use std::io::Write;
            Ok(writeln!(out, "{}", serde_json::to_string(&record)?)?)
        })
        .await?;
        return Ok(());
    }
    let process = Process::start(&args.worker.common, shutdown::on_signals(), |_, _| Default::default()).await?;
    let handler = Audit { jetstream: process.jetstream.clone() };
    process.work("audit", &args.worker, &topology::AUDIT, handler).await
}
