//! JetStream atomic batch publish (nats-server 2.12+, ADR-50): several messages to one
//! stream, stored all together or not at all, each with its own expectations such as
//! `Nats-Expected-Last-Subject-Sequence`. async-nats has the header names but no API
//! for it yet; the protocol is small: every message carries the batch id and its
//! sequence in the batch, the last one also the commit marker and a reply subject for
//! the one acknowledgement of the whole batch.

use async_nats::jetstream::ErrorCode;
use async_nats::{HeaderMap, Subject, header};
use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;

/// One message of a batch.
pub struct BatchMessage {
    pub subject: Subject,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the batch was refused ({code}): {description}")]
    Refused { code: u64, description: String },
    #[error("publishing the batch failed: {0}")]
    Transport(#[from] async_nats::Error),
}

impl BatchError {
    /// A `Nats-Expected-Last-Subject-Sequence` did not hold: someone wrote first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if *code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE.0)
    }
}

#[derive(Deserialize)]
struct Answer {
    error: Option<ApiError>,
    /// The stream sequence of the batch's last message; the others come right before it.
    #[serde(default)]
    seq: u64,
}

#[derive(Deserialize)]
struct ApiError {
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Publishes `messages` as one atomic batch and waits for the commit's answer: the
/// stream sequence of the last message (the batch is stored in one piece, so message
/// `i` of `n` has `last - (n - 1 - i)`).
pub async fn publish_atomically(client: &async_nats::Client, messages: Vec<BatchMessage>) -> Result<u64, BatchError> {
    let id = Alphanumeric.sample_string(&mut rand::rng(), 22);
    let count = messages.len();
    for (index, mut message) in messages.into_iter().enumerate() {
        message.headers.insert(header::NATS_BATCH_ID, id.as_str());
        message.headers.insert(header::NATS_BATCH_SEQUENCE, (index + 1).to_string().as_str());
        if index + 1 < count {
            client
                .publish_with_headers(message.subject, message.headers, message.payload)
                .await
                .map_err(|e| BatchError::Transport(e.into()))?;
            continue;
        }
        message.headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
        let reply = client
            .request_with_headers(message.subject, message.headers, message.payload)
            .await
            .map_err(|e| BatchError::Transport(e.into()))?;
        let answer: Answer = serde_json::from_slice(&reply.payload).map_err(|e| BatchError::Transport(e.into()))?;
        if let Some(error) = answer.error {
            return Err(BatchError::Refused { code: error.err_code, description: error.description });
        }
        return Ok(answer.seq);
    }
    Ok(0)
}
