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
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::events::Decode;
use crate::metrics::LoopMetrics;
use crate::trace::{TRACEPARENT, TraceContext};

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
    /// This handling's span: a child of the publisher's. Put it on what the handler
    /// publishes.
    pub trace: TraceContext,
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

/// Everything one message's task needs.
struct Settler {
    jetstream: jetstream::Context,
    config: LoopConfig,
    /// The consumer's maxDeliver; `None` when unlimited.
    max_deliver: Option<u64>,
    /// How often a message being handled is reported in progress.
    progress_every: Duration,
    metrics: LoopMetrics,
    /// Cancelled when the loop is asked to stop: handlers waiting for a dependency
    /// give their message back at once.
    stop: CancellationToken,
    /// Cancelled when the grace period is over: handlers still running are cut short.
    abandon: CancellationToken,
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

fn pull_backoff() -> impl Iterator<Item = Duration> {
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

impl Settler {
    /// Runs `work`, telling the server every `progress_every` that the message is still
    /// being worked on; `None` when the grace period ran out first.
    async fn in_progress<T>(&self, message: &jetstream::Message, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        let mut every =
            tokio::time::interval_at(tokio::time::Instant::now() + self.progress_every, self.progress_every);
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = self.abandon.cancelled() => return None,
                _ = every.tick() => {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%error, "reporting progress failed");
                    }
                }
            }
        }
    }

    async fn process<H: Handler>(
        self: Arc<Self>,
        handler: Arc<H>,
        message: jetstream::Message,
        _slot: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let Some(delivery) = delivery_of(&message) else {
            // Not a JetStream delivery (no ack subject): nothing to settle.
            tracing::warn!(subject = %message.subject, "message without JetStream metadata ignored");
            return;
        };
        let span = tracing::info_span!(
            "message",
            subject = %delivery.subject,
            stream_sequence = delivery.stream_sequence,
            delivered = delivery.delivered,
            trace_id = %delivery.trace.trace_id(),
        );
        async {
            let outcome = self
                .in_progress(&message, self.handle(&*handler, &message, &delivery))
                .await
                .unwrap_or_else(|| Outcome::Retry { after: Some(Duration::ZERO), error: "shutting down".into() });
            self.settle(&message, &delivery, outcome, started).await;
        }
        .instrument(span)
        .await
    }

    /// Decodes and handles the message, again and again while the handler finds a
    /// dependency unavailable, until it decides or the loop stops.
    async fn handle<H: Handler>(&self, handler: &H, message: &jetstream::Message, delivery: &Delivery) -> Outcome {
        for attempt in 1.. {
            let error = match H::Event::decode(&delivery.subject, &message.payload) {
                Err(error) => return Outcome::dead_letter(error),
                Ok(event) => match handler.handle(event, delivery).await {
                    Outcome::Unavailable { error } => error,
                    outcome => return outcome,
                },
            };
            let delay = self.retry_delay(attempt);
            tracing::warn!(%error, attempt, retry_in = ?delay, "a dependency is unavailable, trying again in place");
            self.metrics.waited();
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        Outcome::Retry { after: Some(Duration::ZERO), error: "shutting down while a dependency was unavailable".into() }
    }

    async fn settle(&self, message: &jetstream::Message, delivery: &Delivery, outcome: Outcome, started: Instant) {
        let outcome = match outcome {
            Outcome::Retry { error, .. } | Outcome::Unavailable { error }
                if self.max_deliver.is_some_and(|max| delivery.delivered >= max) =>
            {
                Outcome::dead_letter(format!("gave up after {} deliveries: {error}", delivery.delivered))
            }
            outcome => outcome,
        };
        let seconds = || started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Ack => {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "acknowledging failed; the message will be redelivered");
                }
                self.metrics.processed(seconds());
            }
            Outcome::Retry { after, error } => self.hand_back(message, delivery, after, &error, started).await,
            // `handle` waits in place; an outcome that did not go through it is handed back.
            Outcome::Unavailable { error } => self.hand_back(message, delivery, None, &error, started).await,
            Outcome::DeadLetter { error } => {
                let last = self.max_deliver.is_some_and(|max| delivery.delivered >= max);
                let stored = match self.dead_letter(message, delivery, &error).await {
                    // On the last delivery a nak would lose the message: keep it in
                    // progress and try again until the dead letter is stored.
                    Err(publish_error) if last => {
                        tracing::warn!(error = %publish_error, "dead-lettering failed on the last delivery, trying again");
                        self.in_progress(message, self.dead_letter_until_stored(message, delivery, &error))
                            .await
                            .ok_or_else(|| anyhow::anyhow!("stopped before the dead letter was stored"))
                    }
                    other => other,
                };
                match stored {
                    Ok(()) => {
                        tracing::warn!(%error, subject = %self.config.dead_letter_subject, "dead-lettered");
                        self.terminate(message).await;
                        self.metrics.dead_lettered(seconds());
                    }
                    Err(publish_error) => {
                        let delay = self.retry_delay(delivery.delivered);
                        tracing::warn!(error = %publish_error, retry_in = ?delay, "dead-lettering failed, retrying later");
                        self.nak(message, delay).await;
                        self.metrics.failed(seconds());
                    }
                }
            }
        }
    }

    async fn hand_back(
        &self,
        message: &jetstream::Message,
        delivery: &Delivery,
        after: Option<Duration>,
        error: &str,
        started: Instant,
    ) {
        let delay = after.unwrap_or_else(|| self.retry_delay(delivery.delivered));
        tracing::info!(%error, retry_in = ?delay, "handing the message back");
        self.nak(message, delay).await;
        self.metrics.failed(started.elapsed().as_secs_f64());
    }

    /// Ends the message's deliveries, saying the worker moved it itself.
    async fn terminate(&self, message: &jetstream::Message) {
        let Some(reply) = message.reply.clone() else { return };
        let term = format!("+TERM {}", dead_letter::MOVED_BY_WORKER);
        if let Err(error) = self.jetstream.client().publish(reply, term.into()).await {
            tracing::warn!(%error, "terminating failed; the dead letter's copy is deduplicated");
        }
    }

    async fn dead_letter_until_stored(&self, message: &jetstream::Message, delivery: &Delivery, error: &str) {
        let mut backoff = pull_backoff();
        while let Err(publish_error) = self.dead_letter(message, delivery, error).await {
            let delay = backoff.next().unwrap_or(Duration::from_secs(2));
            tracing::warn!(error = %publish_error, retry_in = ?delay, "dead-lettering failed on the last delivery");
            tokio::time::sleep(delay).await;
        }
    }

    async fn nak(&self, message: &jetstream::Message, delay: Duration) {
        let delay = (!delay.is_zero()).then_some(delay);
        if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
            tracing::warn!(%error, "nak failed; the message is redelivered after its ack wait");
        }
    }

    /// `retry_min` doubled per earlier delivery, capped at `retry_max`, with jitter.
    fn retry_delay(&self, delivered: u64) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min)
            .with_max_delay(self.config.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(delivered.saturating_sub(1).min(32) as usize)
            .unwrap_or(self.config.retry_max)
    }

    /// Publishes a copy with the origin in headers, deduplicated per origin message.
    async fn dead_letter(&self, message: &jetstream::Message, delivery: &Delivery, error: &str) -> anyhow::Result<()> {
        let origin = dead_letter::Origin {
            stream: &delivery.stream,
            sequence: delivery.stream_sequence,
            subject: &delivery.subject,
            consumer: None,
            deliveries: delivery.delivered,
            reason: error,
        };
        let mut headers = origin.headers(message.headers.as_ref());
        headers.insert(TRACEPARENT, delivery.trace.to_string().as_str());
        self.jetstream
            .publish_with_headers(self.config.dead_letter_subject.clone(), headers, message.payload.clone())
            .await?
            .await?;
        Ok(())
    }
}

fn delivery_of(message: &jetstream::Message) -> Option<Delivery> {
    let info = message.info().ok()?;
    let parent = message.headers.as_ref().and_then(|headers| headers.get(TRACEPARENT)).map(|value| value.as_str());
    Some(Delivery {
        subject: message.subject.to_string(),
        stream: info.stream.to_owned(),
        stream_sequence: info.stream_sequence,
        delivered: u64::try_from(info.delivered).unwrap_or(1),
        published: info.published,
        trace: TraceContext::continue_from(parent),
    })
}

/// The headers a dead letter carries, shared with the operator's forwarder.
pub use jetway_runtime::deadletter as dead_letter;
