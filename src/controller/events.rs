//! Kubernetes Events, sent beside the reconciles instead of inside them.
//!
//! A reconcile queues its Event and goes on: one task sends the queue, a few Events at
//! a time, so a burst of creations neither waits on the apiserver for its Events nor
//! crowds out its own status writes with them. As in client-go's recorder, the queue
//! is bounded and an Event that finds it full is dropped and counted
//! (`jetway_events_dropped_total`): Events are a courtesy, status is the record.
//!
//! The same Event (object, type, reason and note) repeated within ten minutes raises
//! the count of the first one's `series` instead of adding another. Only Events sent
//! in that window are remembered, and at most [`REMEMBERED`] of them, so that memory
//! does not grow with the number of objects created.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Events waiting to be sent; past this, new ones are dropped.
const QUEUED: usize = 1000;
/// Events sent at once.
const IN_FLIGHT: usize = 4;
/// How long a repeat counts toward the first Event's series.
const SERIES_FOR: Duration = Duration::from_secs(600);
/// Events remembered for their series at most.
const REMEMBERED: usize = 4096;
/// The apiserver refuses an Event whose note is longer.
const NOTE_BYTES: usize = 1024;

/// Where reconciles leave their Events.
pub struct Events {
    queue: mpsc::Sender<Pending>,
    dropped: Counter,
}

struct Pending {
    regarding: ObjectReference,
    warning: bool,
    reason: String,
    note: String,
}

/// An Event sent: where it is, and how many times it happened.
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

#[derive(Default)]
struct Series(HashMap<u64, Sent>);

impl Events {
    /// Starts the sender; it ends when the last handle is dropped. `instance` names
    /// this replica in `reportingInstance`.
    pub fn new(client: Client, instance: String, dropped: Counter) -> Self {
        let (queue, pending) = mpsc::channel(QUEUED);
        tokio::spawn(send_all(client, instance, pending));
        Self { queue, dropped }
    }

    /// Queues an Event about `regarding`; never waits.
    pub fn publish(&self, regarding: ObjectReference, warning: bool, reason: &str, note: String) {
        let pending = Pending { regarding, warning, reason: reason.to_owned(), note: truncate(note) };
        if self.queue.try_send(pending).is_err() {
            self.dropped.inc();
            tracing::debug!(reason, "the event queue is full: event dropped");
        }
    }
}

async fn send_all(client: Client, instance: String, pending: mpsc::Receiver<Pending>) {
    let series = Arc::new(Mutex::new(Series::default()));
    futures::stream::unfold(pending, |mut pending| async move { pending.recv().await.map(|p| (p, pending)) })
        .for_each_concurrent(IN_FLIGHT, |pending| {
            let (client, series, instance) = (client.clone(), series.clone(), instance.as_str());
            async move {
                if let Err(err) = send(&client, instance, &series, pending).await {
                    tracing::warn!(error = %err, "publishing an event");
                }
            }
        })
        .await;
}

async fn send(client: &Client, instance: &str, series: &Mutex<Series>, pending: Pending) -> Result<(), kube::Error> {
    let key = pending.key();
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let repeat = series.lock().expect("series").repeat(key);
    if let Some((namespace, name, count)) = repeat {
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let patch = serde_json::json!({ "series": { "count": count, "lastObservedTime": now } });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => return Ok(()),
            // Expired on the apiserver (an hour by default): a new Event instead.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    let event = pending.event(instance, now);
    let namespace = event.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let created = api.create(&PostParams::default(), &event).await?;
    series.lock().expect("series").remember(key, namespace, created.name_any());
    Ok(())
}

impl Pending {
    fn key(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        let r = &self.regarding;
        (&r.namespace, &r.name, &r.uid, &r.kind, self.warning, &self.reason, &self.note).hash(&mut hasher);
        hasher.finish()
    }

    fn event(self, instance: &str, now: MicroTime) -> Event {
        let namespace = self.regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = self.regarding.name.as_deref().unwrap_or("jetway");
        let nanos = now.0.as_nanosecond();
        Event {
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!("{name}.{nanos:x}")),
                ..Default::default()
            },
            event_time: Some(now),
            action: Some("Reconcile".to_owned()),
            reason: Some(self.reason),
            note: Some(self.note),
            type_: Some(if self.warning { "Warning" } else { "Normal" }.to_owned()),
            regarding: Some(self.regarding),
            reporting_controller: Some("jetway".to_owned()),
            reporting_instance: Some(instance.to_owned()),
            ..Default::default()
        }
    }
}

impl Series {
    /// The Event `key` stands for, counted once more, when it was sent recently.
    fn repeat(&mut self, key: u64) -> Option<(String, String, i32)> {
        let sent = self.0.get_mut(&key).filter(|sent| sent.last.elapsed() < SERIES_FOR)?;
        sent.count += 1;
        sent.last = Instant::now();
        Some((sent.namespace.clone(), sent.name.clone(), sent.count))
    }

    fn remember(&mut self, key: u64, namespace: String, name: String) {
        if self.0.len() >= REMEMBERED {
            self.0.retain(|_, sent| sent.last.elapsed() < SERIES_FOR);
        }
        if self.0.len() < REMEMBERED {
            self.0.insert(key, Sent { namespace, name, count: 1, last: Instant::now() });
        }
    }
}

/// `note` cut to what the apiserver takes, at a character boundary.
fn truncate(mut note: String) -> String {
    if note.len() > NOTE_BYTES {
        let mut end = NOTE_BYTES - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_apiserver_limit() {
        let long = "é".repeat(2000);
        let cut = truncate(long);
        assert!(cut.len() <= NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".to_owned()), "short");
    }

    #[test]
    fn a_repeat_counts_toward_the_first_event() {
        let mut series = Series::default();
        assert_eq!(series.repeat(1), None);
        series.remember(1, "ns".into(), "s.1".into());
        assert_eq!(series.repeat(1), Some(("ns".into(), "s.1".into(), 2)));
        assert_eq!(series.repeat(1), Some(("ns".into(), "s.1".into(), 3)));
        assert_eq!(series.repeat(2), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut series = Series::default();
        for key in 0..(REMEMBERED as u64 * 2) {
            series.remember(key, "ns".into(), format!("s.{key}"));
        }
        assert_eq!(series.0.len(), REMEMBERED);
    }
}
