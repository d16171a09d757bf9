//! Logging: human-readable for terminals, JSON for log pipelines.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "JETWAY_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Which logs to print, as a tracing filter such as `info` or `info,jetway=debug`.
    #[arg(long, global = true, env = "JETWAY_LOG", default_value = "info,async_nats=warn")]
    pub log_filter: String,
}

/// Installs the global subscriber; fails on a filter that does not parse.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_filter)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
    Ok(())
}
