//! Audit: an immutable, replayable record of every event of the pipeline.
//!
//! Each event is copied, byte for byte, to `audit.<its subject>` in the `AUDIT`
//! stream, with where it came from in headers. An event's subject names its order and
//! holds one event, so its record is stored only if the audit subject holds none yet:
//! a redelivery, days later or not, is stored once. (Should a subject hold a second
//! message, published by something other than the pipeline, its record follows the
//! first, still once.) The stream denies deletes and purges (JetStream cannot
//! turn either off again) and keeps everything for 400 days: a year of records plus
//! the month an annual audit takes. Replay reads a time range back in order.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::consume::dead_letter::{ORIGIN_SEQUENCE, ORIGIN_STREAM, ORIGIN_SUBJECT};
use crate::consume::{Delivery, Handler, Outcome};
use crate::events::{Decode, DecodeError, PipelineEvent};
use crate::publish::{Stored, publish_once};

pub const STREAM: &str = "AUDIT";
pub const SUBJECT_PREFIX: &str = "audit.";
/// When the event was first stored in its own stream (RFC 3339).
pub const ORIGIN_PUBLISHED: &str = "Jetway-Origin-Published";

/// The audit stream's configuration.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        description: Some("Every event of the order pipeline, immutable for 400 days".into()),
        subjects: vec![format!("{SUBJECT_PREFIX}>")],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(400 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// An event as received: decoded to check it is one, and the bytes kept as they were.
pub struct Received {
    pub event: PipelineEvent,
    pub payload: bytes::Bytes,
}

impl Decode for Received {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self { event: PipelineEvent::decode(subject, payload)?, payload: bytes::Bytes::copy_from_slice(payload) })
    }
}

/// The audit worker's handler.
pub struct Audit {
    pub jetstream: jetstream::Context,
}

impl Handler for Audit {
    type Event = Received;

    async fn handle(&self, received: Received, delivery: &Delivery) -> Outcome {
        match self.record(received, delivery).await {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::from_error(&error.context("recording the event")),
        }
    }
}

impl Audit {
    async fn record(&self, received: Received, delivery: &Delivery) -> anyhow::Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_STREAM, delivery.stream.as_str());
        headers.insert(ORIGIN_SEQUENCE, delivery.stream_sequence.to_string().as_str());
        headers.insert(ORIGIN_SUBJECT, delivery.subject.as_str());
        headers.insert(ORIGIN_PUBLISHED, rfc3339(delivery.published).as_str());
        let subject = format!("{SUBJECT_PREFIX}{}", delivery.subject);
        let payload = received.payload;
        if let Stored::New(_) = publish_once(&self.jetstream, subject.clone(), headers.clone(), payload.clone()).await?
        {
            return Ok(());
        }
        // The subject has a record: this one, or one of another message on the same subject.
        let stream = self.jetstream.get_stream_no_info(STREAM).await?;
        let last = stream.get_last_raw_message_by_subject(&subject).await?;
        let origin = |name: &str| last.headers.get(name).map(|value| value.as_str().to_owned());
        let sequence = delivery.stream_sequence.to_string();
        if origin(ORIGIN_STREAM).as_deref() == Some(&delivery.stream) && origin(ORIGIN_SEQUENCE) == Some(sequence) {
            return Ok(());
        }
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, last.sequence.to_string().as_str());
        self.jetstream.publish_with_headers(subject, headers, payload).await?.await?;
        Ok(())
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One record read back.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The subject the event was published on.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub origin_stream: Option<String>,
    pub origin_sequence: Option<u64>,
    pub event: serde_json::Value,
}

/// Hands `each` the records audit stored in `[from, to]`, one at a time, in the order
/// they were stored, and returns how many there were; a range of any size is read in
/// the memory of one record.
pub async fn replay(
    jetstream: &jetstream::Context,
    from: OffsetDateTime,
    to: OffsetDateTime,
    mut each: impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut stream = jetstream.get_stream(STREAM).await?;
    let state = stream.info().await?.state.clone();
    if state.messages == 0 || state.last_timestamp < from || from > to {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: from },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut records = 0;
    // The stream may grow while it is read; stop at its last message seen above.
    while let Some(message) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await?.transpose()? {
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (sequence, recorded_at) = (info.stream_sequence, info.published);
        if recorded_at > to {
            break;
        }
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        each(Record {
            subject: message.subject.trim_start_matches(SUBJECT_PREFIX).to_owned(),
            recorded_at,
            origin_stream: header(ORIGIN_STREAM),
            origin_sequence: header(ORIGIN_SEQUENCE).and_then(|s| s.parse().ok()),
            event: serde_json::from_slice(&message.payload)?,
        })?;
        records += 1;
        if sequence >= state.last_sequence {
            break;
        }
    }
    Ok(records)
}
