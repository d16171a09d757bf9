//! Flags every worker takes, each with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use jetway_runtime::telemetry::LogArgs;

use crate::consume::LoopConfig;
use crate::topology::ConsumerSettings;

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// NATS server URLs, comma-separated.
    #[arg(long, env = "JETWAY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// A NATS credentials file (JWT and nkey seed).
    #[arg(long, env = "JETWAY_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (and intake's `/orders`).
    #[arg(long, env = "JETWAY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Create the pipeline's streams and this worker's consumer when they are missing,
    /// for running without the operator. On Kubernetes, Jetway's Stream and Consumer
    /// objects declare them.
    #[arg(long, env = "JETWAY_CREATE_TOPOLOGY")]
    pub create_topology: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How a worker consumes.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Messages handled at once, at most.
    #[arg(long, env = "JETWAY_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Messages asked for in one pull, at most.
    #[arg(long, env = "JETWAY_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Time in-flight messages get to finish after SIGTERM; keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "JETWAY_GRACE_PERIOD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// The subject dead letters are published to.
    #[arg(long, env = "JETWAY_DEAD_LETTER_SUBJECT")]
    pub dead_letter_subject: Option<String>,
    /// The first retry's delay; it doubles per delivery.
    #[arg(long, env = "JETWAY_RETRY_MIN", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub retry_min: Duration,
    /// The longest retry delay.
    #[arg(long, env = "JETWAY_RETRY_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// With --create-topology: deliveries before a message is dead-lettered.
    #[arg(long, env = "JETWAY_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,
    /// With --create-topology: how long a delivery may stay unacknowledged.
    #[arg(long, env = "JETWAY_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
}

impl ConsumeArgs {
    /// The loop's settings for `worker`; dead letters default to `deadletter.<worker>`.
    pub fn loop_config(&self, worker: &str) -> LoopConfig {
        LoopConfig {
            max_in_flight: self.max_in_flight.max(1),
            max_batch: self.max_batch.clamp(1, self.max_in_flight.max(1)),
            grace: self.grace_period,
            dead_letter_subject: self.dead_letter_subject.clone().unwrap_or_else(|| format!("deadletter.{worker}")),
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            ..LoopConfig::default()
        }
    }

    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings { max_deliver: self.max_deliver, ack_wait: self.ack_wait, ..ConsumerSettings::default() }
    }
}
