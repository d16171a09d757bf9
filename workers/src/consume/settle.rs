//! Settling one message: handle it (again, in place, while a dependency is
//! unavailable), keep it in progress meanwhile, then ack, nak with a backoff, or
//! dead-letter it and end its deliveries.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Delivery, Handler, LoopConfig, Outcome, dead_letter, pull_backoff};
use crate::events::Decode;
use crate::metrics::LoopMetrics;
use crate::trace::{self, NatsHeaders, NoHeaders};

/// Everything one message's task needs.
pub(super) struct Settler {
    pub(super) jetstream: jetstream::Context,
    pub(super) config: LoopConfig,
    /// The consumer's maxDeliver; `None` when unlimited.
    pub(super) max_deliver: Option<u64>,
    /// How often a message being handled is reported in progress.
    pub(super) progress_every: Duration,
    pub(super) metrics: LoopMetrics,
    /// Cancelled when the loop is asked to stop: handlers waiting for a dependency
    /// give their message back at once.
    pub(super) stop: CancellationToken,
    /// Cancelled when the grace period is over: handlers still running are cut short.
    pub(super) abandon: CancellationToken,
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

    pub(super) async fn process<H: Handler>(
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
            trace_id = tracing::field::Empty,
        );
        match &message.headers {
            Some(headers) => trace::continue_from(&span, &NatsHeaders(headers)),
            None => trace::continue_from(&span, &NoHeaders),
        }
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
        trace::inject(&mut headers);
        self.jetstream
            .publish_with_headers(self.config.dead_letter_subject.clone(), headers, message.payload.clone())
            .await?
            .await?;
        Ok(())
    }
}

pub(super) fn delivery_of(message: &jetstream::Message) -> Option<Delivery> {
    let info = message.info().ok()?;
    Some(Delivery {
        subject: message.subject.to_string(),
        stream: info.stream.to_owned(),
        stream_sequence: info.stream_sequence,
        delivered: u64::try_from(info.delivered).unwrap_or(1),
        published: info.published,
    })
}
