//! The one consume loop every worker runs.
//!
//! Pull (I/O): ask the consumer for as many messages as there are free in-flight
//! slots, so in-flight work is bounded by `max_in_flight` and nothing waits in a
//! client-side buffer. Decode (pure): a payload that is not the handler's event is
//! dead-lettered at once. Handle: the business handler returns an [`Outcome`].
//! While a handler runs it sends in-progress acks every third of the consumer's ack
//! wait, so a slow handler keeps its message and no second worker starts the same one.
//! A handler that finds a dependency unavailable (a bucket without a leader, the
//! payment gateway down) is run again in place with a backoff, the message kept in
//! progress: an outage costs no delivery, so it never turns good messages into dead
//! letters, and the slots it holds stop the loop pulling more until it is over.
//! Settle (I/O): ack; nak with a backoff delay; or publish to the dead-letter subject
//! with the origin in headers and terminate. A retry on the consumer's last allowed
//! delivery becomes a dead letter; a dead letter that cannot be published on the last
//! delivery is tried again, the message kept in progress, until it is stored or the
//! worker stops (and then the server's advisory reaches the operator's forwarder).
//!
//! On shutdown the loop stops pulling, gives back at once whatever arrives after the
//! stop, lets in-flight handlers finish within the grace period and naks the ones
//! still running after it. Nothing is acknowledged that was not done, so a message
//! cut short is redelivered, and handlers are idempotent, so nothing is done twice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Decode;
use crate::metrics::LoopMetrics;

/// What a handler decided about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Not now: redeliver after `after`, or after the loop's backoff for this
    /// delivery count when `None`.
    Retry { after: Option<Duration>, error: String },
    /// Never: move it to the dead-letter subject.
    DeadLetter { error: String },
    /// A dependency cannot answer now: run the handler again in place, after a
    /// backoff, without giving the message back (no delivery is used up).
    Unavailable { error: String },
}

impl Outcome {
    /// A retry after the loop's backoff.
    pub fn retry(error: impl ToString) -> Self {
        Self::Retry { after: None, error: error.to_string() }
    }

    pub fn dead_letter(error: impl ToString) -> Self {
        Self::DeadLetter { error: error.to_string() }
    }

    pub fn unavailable(error: impl ToString) -> Self {
        Self::Unavailable { error: error.to_string() }
    }

    /// What a handler's error means: data that cannot be read will not read better
    /// later, so it is retried as a delivery (and ends as a dead letter); anything
    /// else (NATS, the gateway, contention on a key) is a dependency to wait for.
    pub fn from_error(error: &anyhow::Error) -> Self {
        let text = format!("{error:#}");
        match error.chain().any(|cause| cause.is::<serde_json::Error>()) {
            true => Self::retry(text),
            false => Self::unavailable(text),
        }
    }
}

/// Where a message came from, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub subject: String,
    pub stream: String,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
    pub published: time::OffsetDateTime,
}

/// A worker's business logic: an event in, an outcome out. Testable without NATS.
pub trait Handler: Send + Sync + 'static {
    type Event: Decode;

    fn handle(&self, event: Self::Event, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Messages being handled at once, at most.
    pub max_in_flight: usize,
    /// Messages asked for in one pull, at most.
    pub max_batch: usize,
    /// How long a pull waits for messages before asking again.
    pub pull_expiry: Duration,
    /// How long in-flight handlers get to finish after a stop.
    pub grace: Duration,
    /// Where messages go that will never succeed.
    pub dead_letter_subject: String,
    /// The first retry's delay; it doubles per delivery up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            max_batch: 256,
            pull_expiry: Duration::from_secs(1),
            grace: Duration::from_secs(20),
            dead_letter_subject: "deadletter.worker".into(),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Runs `handler` on `consumer` until `stop` is cancelled and in-flight work is settled.
pub async fn run<H: Handler>(
    jetstream: jetstream::Context,
    consumer: PullConsumer,
    handler: Arc<H>,
    config: LoopConfig,
    metrics: LoopMetrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let info = consumer.cached_info().clone();
    let max_deliver = u64::try_from(info.config.max_deliver).ok().filter(|max| *max > 0);
    let progress_every = (info.config.ack_wait / 3).max(Duration::from_millis(100));
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let tasks = TaskTracker::new();
    let settler = Arc::new(Settler {
        jetstream,
        config: config.clone(),
        max_deliver,
        progress_every,
        metrics,
        stop: stop.clone(),
        abandon: CancellationToken::new(),
    });
    let mut pull_errors = pull_backoff();

    while !stop.is_cancelled() {
        let mut free = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_many_owned(1) => slot?,
        };
        let more = slots.available_permits().min(config.max_batch - 1);
        if more > 0 {
            free.merge(slots.clone().acquire_many_owned(more as u32).await?);
        }
        let wanted = free.num_permits();
        let pulled =
            consumer.batch().max_messages(wanted).expires(config.pull_expiry).messages().await.map_err(|e| e.into());
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(error) => {
                pause_after_error(error, &mut pull_errors, &stop).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    pause_after_error(anyhow::anyhow!(error), &mut pull_errors, &stop).await;
                    break;
                }
            };
            pull_errors = pull_backoff();
            let Some(slot) = free.split(1) else {
                // The server sent more than asked for; hand it straight back.
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            if stop.is_cancelled() {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            tasks.spawn(settler.clone().process(handler.clone(), message, slot));
        }
        // The batch ended (all arrived, or it expired); `free` returns unused slots.
        drop(free);
    }

    tasks.close();
    if tokio::time::timeout(config.grace, tasks.wait()).await.is_err() {
        tracing::warn!(in_flight = tasks.len(), "grace period over, handing unfinished messages back");
        settler.abandon.cancel();
        tasks.wait().await;
    }
    Ok(())
}

pub(super) fn pull_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn pause_after_error(
    error: anyhow::Error,
    backoff: &mut impl Iterator<Item = Duration>,
    stop: &CancellationToken,
) {
    let delay = backoff.next().unwrap_or(Duration::from_secs(2));
    tracing::warn!(error = %error, retry_in = ?delay, "pulling messages failed");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}

mod settle;

use settle::Settler;

/// The headers a dead letter carries, shared with the operator's forwarder.
pub use jetway_runtime::deadletter as dead_letter;
