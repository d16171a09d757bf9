//! Flags every worker takes, each with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use jetway_runtime::telemetry::LogArgs;

use crate::consume::LoopConfig;
use crate::topology::{Binding, ConsumerSettings};

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
    /// Replicas of what a worker creates: its KV buckets always, the pipeline's streams
    /// with --create-topology. An existing bucket is brought to this count.
    #[arg(long, env = "JETWAY_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Everything a consuming worker takes.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub consume: ConsumeArgs,
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
    /// The streams to consume, each through the durable consumer --consumer. Default:
    /// the worker's own (INVENTORY for payment; ORDERS and PAYMENTS for inventory;
    /// ORDERS, PAYMENTS and INVENTORY for audit).
    #[arg(long = "stream", env = "JETWAY_STREAMS", value_delimiter = ',')]
    pub streams: Vec<String>,
    /// The durable consumer on each stream. Default: the worker's name.
    #[arg(long, env = "JETWAY_CONSUMER")]
    pub consumer: Option<String>,
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

    /// The consumers to read: the worker's `defaults`, with --stream and --consumer applied.
    pub fn bindings<'a>(&'a self, defaults: &[Binding<'a>]) -> Vec<Binding<'a>> {
        let streams: Vec<&str> = if self.streams.is_empty() {
            defaults.iter().map(|binding| binding.stream).collect()
        } else {
            self.streams.iter().map(String::as_str).collect()
        };
        let fallback = defaults.first().map_or("worker", |binding| binding.durable);
        streams
            .into_iter()
            .map(|stream| {
                let default = defaults.iter().find(|binding| binding.stream == stream);
                Binding {
                    stream,
                    durable: self.consumer.as_deref().or(default.map(|binding| binding.durable)).unwrap_or(fallback),
                    filter: default.map_or("", |binding| binding.filter),
                }
            })
            .collect()
    }

    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings { max_deliver: self.max_deliver, ack_wait: self.ack_wait, ..ConsumerSettings::default() }
    }
}

/// Fails the test naming the first flag of `command` without an env fallback.
#[cfg(test)]
pub(crate) fn assert_every_flag_has_an_environment_variable(command: &clap::Command) {
    for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
        assert!(arg.get_env().is_some(), "--{} has no env fallback", arg.get_long().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::topology;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        consume: ConsumeArgs,
    }

    fn bindings(args: &[&str], defaults: &[Binding<'static>]) -> Vec<(String, String, String)> {
        let flags = Flags::parse_from(std::iter::once("worker").chain(args.iter().copied()));
        let bindings = flags.consume.bindings(defaults);
        bindings.iter().map(|b| (b.stream.to_owned(), b.durable.to_owned(), b.filter.to_owned())).collect()
    }

    #[derive(Parser)]
    struct Worker {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    #[test]
    fn every_worker_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        assert_every_flag_has_an_environment_variable(&Worker::command());
    }

    #[test]
    fn without_flags_a_worker_reads_its_own_consumers() {
        assert_eq!(
            bindings(&[], &topology::PAYMENT),
            [("INVENTORY".into(), "payment".into(), "inventory.reserved.v1.>".into())]
        );
        assert_eq!(bindings(&[], &topology::INVENTORY).len(), 2, "orders, and failed payments to release");
        assert_eq!(bindings(&[], &topology::AUDIT).len(), 3);
    }

    #[test]
    fn flags_choose_the_streams_and_the_consumer() {
        assert_eq!(
            bindings(&["--consumer", "audit-2", "--stream", "ORDERS,EXTRA"], &topology::AUDIT),
            [("ORDERS".into(), "audit-2".into(), String::new()), ("EXTRA".into(), "audit-2".into(), String::new())]
        );
        assert_eq!(
            bindings(&["--stream", "INVENTORY_EU"], &topology::PAYMENT),
            [("INVENTORY_EU".into(), "payment".into(), String::new())],
            "another stream keeps the worker's consumer name and reads it whole"
        );
    }
}
