#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use jetway::cli::{Cli, Command, ConvertArgs, ExportArgs, NatsArgs, Output, PlanArgs, RunArgs};
use jetway::{crds, export, manifest, nack, preview, run, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match telemetry::init(&cli.log, "jetway") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("jetway: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => run_operator(*args).await.map(|()| 0),
        Command::Crds => crds::print(&mut std::io::stdout().lock()).map(|()| 0),
        Command::Plan(args) => plan(*args).await,
        Command::Export(args) => export(*args).await.map(|()| 0),
        Command::Convert(args) => convert(&args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "jetway stopped");
            ExitCode::FAILURE
        }
    }
}

async fn connect(nats: NatsArgs) -> anyhow::Result<async_nats::jetstream::Context> {
    let settings = nats.settings();
    let client = settings.connect_once("jetway").await.context("connecting to NATS")?;
    Ok(settings.jetstream(client))
}

/// 0: nothing to do; 2: changes pending; 1: refused (or, through `main`, an error).
async fn plan(args: PlanArgs) -> anyhow::Result<u8> {
    let js = connect(args.nats).await?;
    let report = preview::plan_path(&js, &args.path, &args.namespace).await?;
    match args.output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(report.exit_code())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let js = connect(args.nats).await?;
    let (streams, consumers) = export::export(&js, args.namespace.as_deref()).await?;
    print!("{}{}", manifest::to_yaml(&streams)?, manifest::to_yaml(&consumers)?);
    Ok(())
}

fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let documents = manifest::documents(&args.path)?.into_iter().map(|(_, document)| document).collect();
    let converted = nack::convert(documents);
    print!("{}", manifest::to_yaml(&converted.documents)?);
    for note in converted.notes {
        eprintln!("note: {note}");
    }
    Ok(())
}

async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let config = args.into_config().await.context("finding the Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    Ok(run::run(config, shutdown::on_signals()).await?)
}
