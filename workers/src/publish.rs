//! Publishing events: to JetStream with the event's dedupe id and the trace, and
//! awaiting the server's acknowledgement, so "published" means stored.

use std::future::Future;

use async_nats::HeaderMap;
use async_nats::jetstream;

use crate::events::Event;
use crate::trace::{TRACEPARENT, TraceContext};

/// Where handlers publish to; JetStream in production, a list in unit tests.
pub trait Publish: Send + Sync + 'static {
    fn publish<E: Event>(&self, event: &E, trace: &TraceContext) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Publish for jetstream::Context {
    async fn publish<E: Event>(&self, event: &E, trace: &TraceContext) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(event)?;
        self.publish_with_headers(E::SUBJECT, event_headers(&event.message_id(), trace), payload.into()).await?.await?;
        Ok(())
    }
}

/// Headers for an event: its dedupe id and the trace.
pub fn event_headers(message_id: &str, trace: &TraceContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    headers.insert(TRACEPARENT, trace.to_string().as_str());
    headers
}

#[cfg(test)]
pub mod outbox {
    //! A publisher that keeps what it was given, for handler tests.

    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct Outbox {
        pub events: Mutex<Vec<(String, String, serde_json::Value)>>,
        pub fail: std::sync::atomic::AtomicBool,
    }

    impl Outbox {
        /// (subject, message id) of everything published, in order.
        pub fn published(&self) -> Vec<(String, String)> {
            self.events.lock().unwrap().iter().map(|(subject, id, _)| (subject.clone(), id.clone())).collect()
        }
    }

    impl Publish for Outbox {
        async fn publish<E: Event>(&self, event: &E, _trace: &TraceContext) -> anyhow::Result<()> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("no JetStream responders");
            }
            let value = serde_json::to_value(event)?;
            self.events.lock().unwrap().push((E::SUBJECT.to_owned(), event.message_id(), value));
            Ok(())
        }
    }
}
