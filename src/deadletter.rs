//! Dead letters: a message a consumer gave up on (delivered `maxDeliver` times, or
//! terminated) is copied to the consumer's `deadLetter.subject`, with where it came
//! from in headers (the contract in `jetway_runtime::deadletter`, shared with the
//! workers).
//!
//! The server announces both through advisories, which are not stored by themselves:
//! so the operator keeps a stream of its own, [`ADVISORY_STREAM`], capturing them in
//! each account it forwards for, and one durable consumer on it per Consumer object
//! with a `deadLetter`. A message given up on while the operator is disconnected,
//! restarting or failing over waits there, and is forwarded once when it is back.
//!
//! For each advisory: a message its worker terminated after dead-lettering it itself
//! (`+TERM jetway-dead-lettered`) is left alone; otherwise the message is read from its
//! stream by sequence and published to the dead-letter subject under the contract's
//! message id, and the advisory acked. A read or publish that fails is retried later,
//! never published half. A message already gone from its stream (a work queue removes
//! what was terminated) is announced by a notice with no payload, under an id of its
//! own, so a real copy is never shadowed by it.
//!
//! A forwarder follows its connection: when a NatsConnection's Secret changes, the
//! reconcile hands it the new client and it carries on from its durable position.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, pull};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{AckKind, Context};
use futures::StreamExt;
use jetway_runtime::deadletter::{MOVED_BY_WORKER, Origin};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::connection::Pooled;

/// The stream of the operator's own, per account, that keeps the advisories.
pub const ADVISORY_STREAM: &str = "JETWAY_DEAD_LETTER_ADVISORIES";
/// Set on a notice for a message no longer in its stream.
pub const PAYLOAD_GONE: &str = "Jetway-Dead-Letter-Payload-Gone";

const MAX_DELIVERIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";
const TERMINATED: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED";

/// Where one consumer's dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The NatsConnection the consumer is reached through; empty for the default one.
    pub connection: String,
    pub stream: String,
    pub consumer: String,
    pub subject: String,
}

impl Target {
    /// The durable consumer of [`ADVISORY_STREAM`] reading this consumer's advisories:
    /// a stable name from the stream and consumer names, which may hold characters a
    /// name made of them could not.
    pub fn durable(&self) -> String {
        // FNV-1a: stable across Rust releases, unlike the standard library's hasher.
        let hash = format!("{}\0{}", self.stream, self.consumer)
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
        format!("jetway-dead-letters-{hash:016x}")
    }

    fn filters(&self) -> Vec<String> {
        [MAX_DELIVERIES, TERMINATED].iter().map(|kind| format!("{kind}.{}.{}", self.stream, self.consumer)).collect()
    }
}

struct Running {
    target: Target,
    connection: Pooled,
    stop: CancellationToken,
}

/// The forwarders, one per Consumer object with a dead-letter subject.
pub struct DeadLetters {
    shutdown: CancellationToken,
    running: Mutex<HashMap<String, Running>>,
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

    /// Makes the forwarder of the object `key` match `wanted`: started, moved to a new
    /// target or a new client, or (with `None`) stopped and its durable consumer deleted.
    pub fn ensure(&self, key: &str, wanted: Option<(Target, Pooled)>) {
        let mut running = self.running.lock().expect("dead letters lock");
        let current = running.get(key);
        if let (Some(current), Some((target, connection))) = (current, &wanted)
            && current.target == *target
            && current.connection.is(connection)
        {
            return;
        }
        if let Some(old) = running.remove(key) {
            old.stop.cancel();
            let moved = wanted.as_ref().is_some_and(|(target, _)| target.durable() == old.target.durable());
            if !moved {
                tokio::spawn(retire(old.connection.jetstream, old.target));
            }
        }
        if let Some((target, connection)) = wanted {
            let stop = self.shutdown.child_token();
            tokio::spawn(forward(connection.jetstream.clone(), target.clone(), stop.clone()));
            running.insert(key.to_owned(), Running { target, connection, stop });
        }
    }
}

/// Deletes the durable consumer of a forwarder no longer wanted; what it had not read
/// is not forwarded.
async fn retire(jetstream: Context, target: Target) {
    if let Ok(stream) = jetstream.get_stream_no_info(ADVISORY_STREAM).await
        && let Err(error) = stream.delete_consumer(&target.durable()).await
    {
        tracing::debug!(durable = target.durable(), %error, "the dead-letter reader was not deleted");
    }
}

async fn forward(jetstream: Context, target: Target, stop: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    loop {
        match read_advisories(&jetstream, &target, &stop).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(stream = target.stream, consumer = target.consumer, %error, retry_in = ?delay, "forwarding dead letters failed");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(30)),
        }
    }
}

/// The advisory stream's configuration: both advisories of every consumer of the
/// account, kept a week.
fn advisory_stream() -> stream::Config {
    stream::Config {
        name: ADVISORY_STREAM.into(),
        description: Some("Jetway: consumer advisories, kept until each is dead-lettered".into()),
        subjects: vec![format!("{MAX_DELIVERIES}.>"), format!("{TERMINATED}.>")],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: 256 * 1024 * 1024,
        ..Default::default()
    }
}

/// Reads the target's advisories until `stop`; an error ends it, to be tried again.
async fn read_advisories(
    jetstream: &Context,
    target: &Target,
    stop: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let stream = jetstream.get_or_create_stream(advisory_stream()).await?;
    let config = pull::Config {
        durable_name: Some(target.durable()),
        description: Some(format!("Jetway: dead letters of {} on {}", target.consumer, target.stream)),
        filter_subjects: target.filters(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let mut advisories = stream.get_or_create_consumer(&target.durable(), config).await?.messages().await?;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = advisories.next() => match next {
                Some(message) => message?,
                None => return Err("the advisory subscription ended".into()),
            },
        };
        let settled = match serde_json::from_slice::<Advisory>(&message.payload) {
            Err(error) => {
                tracing::warn!(subject = %message.subject, %error, "an advisory that does not parse is skipped");
                Ok(())
            }
            Ok(advisory) => {
                let terminated = message.subject.starts_with(TERMINATED);
                if terminated && advisory.reason.as_deref() == Some(MOVED_BY_WORKER) {
                    Ok(())
                } else {
                    copy(jetstream, target, if terminated { "terminated" } else { "max_deliveries" }, &advisory).await
                }
            }
        };
        match settled {
            Ok(()) => message.ack().await?,
            Err(error) => {
                tracing::warn!(stream = target.stream, consumer = target.consumer, %error, "a dead letter was not copied; retrying");
                message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await?;
            }
        }
    }
}

/// Copies the message at the advisory's sequence to the dead-letter subject.
async fn copy(jetstream: &Context, target: &Target, kind: &str, advisory: &Advisory) -> Result<(), async_nats::Error> {
    let stream = jetstream.get_stream_no_info(&target.stream).await?;
    let reason = match &advisory.reason {
        Some(reason) if !reason.is_empty() => format!("{kind}: {reason}"),
        _ => kind.to_owned(),
    };
    let (original, payload, subject, gone) = match stream.get_raw_message(advisory.stream_seq).await {
        Ok(message) => (Some(message.headers), message.payload, message.subject.to_string(), false),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
            (None, Default::default(), String::new(), true)
        }
        Err(error) => return Err(error.into()),
    };
    let origin = Origin {
        stream: &target.stream,
        sequence: advisory.stream_seq,
        subject: &subject,
        consumer: Some(&target.consumer),
        deliveries: advisory.deliveries,
        reason: &reason,
    };
    let mut headers = origin.headers(original.as_ref());
    if gone {
        headers.insert(PAYLOAD_GONE, "true");
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{}:notice", origin.message_id()).as_str());
    }
    jetstream.publish_with_headers(target.subject.clone(), headers, payload).await?.await?;
    Ok(())
}
