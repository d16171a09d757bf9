//! Dead letters: a message a consumer gave up on (delivered `maxDeliver` times, or
//! terminated by its worker) is copied to the consumer's `deadLetter.subject`, with
//! where it came from in headers.
//!
//! The server announces both through advisories; for every Consumer with a
//! `deadLetter`, one task here listens for them, reads the message from the stream
//! by sequence, and publishes it through JetStream, with a message id that makes a
//! repeated copy a duplicate. Advisories are not stored: one sent while the operator
//! is disconnected is not seen.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub const ORIGIN_STREAM: &str = "Jetway-Origin-Stream";
pub const ORIGIN_SEQUENCE: &str = "Jetway-Origin-Sequence";
pub const ORIGIN_SUBJECT: &str = "Jetway-Origin-Subject";
pub const ORIGIN_CONSUMER: &str = "Jetway-Origin-Consumer";
pub const DELIVERIES: &str = "Jetway-Deliveries";
pub const REASON: &str = "Jetway-Dead-Letter-Reason";

/// Where one consumer's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The NatsConnection the consumer is reached through; empty for the default one.
    pub connection: String,
    pub stream: String,
    pub consumer: String,
    pub subject: String,
}

/// The forwarders, one per Consumer object with a dead-letter subject.
pub struct DeadLetters {
    shutdown: CancellationToken,
    running: Mutex<HashMap<String, (Target, CancellationToken)>>,
}

#[derive(Deserialize)]
struct Advisory {
    stream_seq: u64,
    deliveries: u64,
    #[serde(default)]
    reason: Option<String>,
}

impl DeadLetters {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown, running: Mutex::default() }
    }

    /// Makes the forwarder of the object `key` match `target`: started, moved to a new
    /// target, or (with `None`) stopped.
    pub fn ensure(&self, key: &str, wanted: Option<(Target, Context)>) {
        let mut running = self.running.lock().expect("dead letters lock");
        if running.get(key).map(|(t, _)| t) == wanted.as_ref().map(|(t, _)| t) {
            return;
        }
        if let Some((_, token)) = running.remove(key) {
            token.cancel();
        }
        if let Some((target, jetstream)) = wanted {
            let token = self.shutdown.child_token();
            tokio::spawn(forward(jetstream, target.clone(), token.clone()));
            running.insert(key.to_owned(), (target, token));
        }
    }
}

async fn forward(jetstream: Context, target: Target, stop: CancellationToken) {
    let client = jetstream.client();
    let (stream, consumer) = (&target.stream, &target.consumer);
    let subscribe = |kind: &str| client.subscribe(format!("$JS.EVENT.ADVISORY.CONSUMER.{kind}.{stream}.{consumer}"));
    let (max_deliveries, terminated) = match (subscribe("MAX_DELIVERIES").await, subscribe("MSG_TERMINATED").await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(stream, consumer, error = %err, "cannot listen for dead letters");
            return;
        }
    };
    let mut advisories =
        futures::stream::select(max_deliveries.map(|m| ("max_deliveries", m)), terminated.map(|m| ("terminated", m)));
    loop {
        let (kind, message) = tokio::select! {
            () = stop.cancelled() => return,
            next = advisories.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let advisory: Advisory = match serde_json::from_slice(&message.payload) {
            Ok(advisory) => advisory,
            Err(err) => {
                tracing::warn!(stream, consumer, error = %err, "an advisory that does not parse");
                continue;
            }
        };
        if let Err(err) = copy(&jetstream, &target, kind, &advisory).await {
            tracing::error!(stream, consumer, sequence = advisory.stream_seq, error = %err, "a dead letter was not copied");
        }
    }
}

/// Copies the message at the advisory's sequence to the dead-letter subject.
async fn copy(jetstream: &Context, target: &Target, kind: &str, advisory: &Advisory) -> Result<(), async_nats::Error> {
    let stream = jetstream.get_stream_no_info(&target.stream).await?;
    let original = stream.get_raw_message(advisory.stream_seq).await;
    let (mut headers, payload, subject) = match original {
        Ok(message) => (message.headers, message.payload, message.subject.to_string()),
        // A terminated message may already be gone from a work queue: send its origin.
        Err(_) => (HeaderMap::new(), Default::default(), String::new()),
    };
    let reason = match &advisory.reason {
        Some(reason) if !reason.is_empty() => format!("{kind}: {reason}"),
        _ => kind.to_owned(),
    };
    headers.insert(ORIGIN_STREAM, target.stream.as_str());
    headers.insert(ORIGIN_SEQUENCE, advisory.stream_seq.to_string().as_str());
    headers.insert(ORIGIN_SUBJECT, subject.as_str());
    headers.insert(ORIGIN_CONSUMER, target.consumer.as_str());
    headers.insert(DELIVERIES, advisory.deliveries.to_string().as_str());
    headers.insert(REASON, reason.as_str());
    let id = format!("{}:{}:dead-letter", target.stream, advisory.stream_seq);
    headers.insert("Nats-Msg-Id", id.as_str());
    jetstream.publish_with_headers(target.subject.clone(), headers, payload).await?.await?;
    Ok(())
}
