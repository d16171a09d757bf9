//! Publishing events: to JetStream, once per subject, in a span the message carries,
//! awaiting the server's acknowledgement, so "published" means stored.

use std::future::Future;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, publish::PublishAck};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use tracing::Instrument;

use crate::events::Event;
use crate::trace;

/// Where handlers publish to; JetStream in production, a list in unit tests.
pub trait Publish: Send + Sync + 'static {
    /// Stores `event` on its subject, unless the subject holds an event already (an
    /// earlier attempt stored it): either way the event is there afterwards.
    fn publish<E: Event>(&self, event: &E) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Publish for jetstream::Context {
    async fn publish<E: Event>(&self, event: &E) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(event)?;
        publish_once(self, event.subject(), HeaderMap::new(), payload.into()).await?;
        Ok(())
    }
}

/// What [`publish_once`] found.
#[derive(Debug)]
pub enum Stored {
    /// This publish stored the message.
    New(PublishAck),
    /// The subject held a message already; nothing was stored.
    Existing,
}

/// Publishes to `subject` only if no message is stored under it
/// (`Nats-Expected-Last-Subject-Sequence: 0`), and waits for the server's answer; in
/// a span of its own, whose context the message carries.
pub async fn publish_once(
    jetstream: &jetstream::Context,
    subject: String,
    mut headers: HeaderMap,
    payload: Bytes,
) -> anyhow::Result<Stored> {
    headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    let span = tracing::info_span!("publish", %subject);
    let stored = async {
        trace::inject(&mut headers);
        jetstream.publish_with_headers(subject, headers, payload).await?.await
    };
    match stored.instrument(span).await {
        Ok(ack) => Ok(Stored::New(ack)),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(Stored::Existing),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
pub mod outbox {
    //! A publisher that keeps what it was given, for handler tests.

    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct Outbox {
        /// (subject, event) of everything stored.
        pub events: Mutex<Vec<(String, serde_json::Value)>>,
        pub fail: std::sync::atomic::AtomicBool,
    }

    impl Outbox {
        /// The subjects of everything stored, in order.
        pub fn published(&self) -> Vec<String> {
            self.events.lock().unwrap().iter().map(|(subject, _)| subject.clone()).collect()
        }
    }

    impl Publish for Outbox {
        async fn publish<E: Event>(&self, event: &E) -> anyhow::Result<()> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("no JetStream responders");
            }
            let value = serde_json::to_value(event)?;
            let mut events = self.events.lock().unwrap();
            // Once per subject, as JetStream keeps it.
            if !events.iter().any(|(subject, _)| *subject == event.subject()) {
                events.push((event.subject(), value));
            }
            Ok(())
        }
    }
}
