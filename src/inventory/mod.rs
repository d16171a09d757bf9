//! What the servers hold, read in batches: the figures behind status, `/metrics` and
//! autoscaling, and the snapshot a resync plans against.
//!
//! Stream and Consumer objects register what they manage (`watch_stream`, `watch`;
//! a consumer also while it waits for its stream, which wakes it when it appears)
//! and drop it when they go (`forget_stream`, `forget`). Each lag interval (1 s) a
//! round asks every connection for its stream list: one request per 256 streams, each
//! answer with the stream's configuration and state. A stream's consumer list (one
//! request per 256 consumers, each figure from the consumer's leader) is read only
//! when its figures can have moved:
//!
//! - never read yet, or written by a reconcile since it was read;
//! - the stream's state moved (messages, sequences, consumer count), or one of its
//!   consumers had messages pending or unacknowledged at the last read: at once
//!   when it was at rest until then, and while the moves go on every lag interval
//!   when one of its consumers drives scaling (`demand`), else once per metrics
//!   interval (15 s);
//! - once per drift interval in any case, for changes made behind Jetway's back.
//!
//! Otherwise the last figures are confirmed by the list: a consumer with nothing
//! pending or in flight on a stream whose state did not move cannot have moved. So an
//! idle system costs one list request per 256 streams a second, whatever the number
//! of consumers; the request rate grows with activity, not with objects. Only the
//! number of waiting pull requests can drift unseen, for at most a drift interval.
//!
//! A consumer missing from its stream's list, or on a stream missing from the stream
//! list, is reported as missing: its series are removed, never set to 0, so nothing
//! downstream reads "no lag" (or "scale to max") from a consumer that is not there.
//!
//! The controllers plan resyncs against these snapshots ([`Inventory::stream_info`],
//! [`Inventory::consumer_info`]) instead of asking again, and tell the inventory what
//! their status shows ([`Inventory::reported`]); a round that finds something else
//! wakes the object's controller (`subscribe`): at once for a configuration change, a
//! disappearance or the first move after a rest, and for figures that go on moving at
//! most once per metrics interval.

mod figures;
mod places;
mod round;
#[cfg(test)]
mod tests;

pub use figures::{ConsumerLag, Kind, Observation, Watched, WatchedStream, read_at};
use places::{Watcher, Watchers, place_and_reach};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::channel::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::jetstream::Fingerprint;
use crate::jsz::SystemAccess;
use crate::metrics::{ConsumerLabels, Metrics};

/// How many intervals a reading stays good for.
const FRESH_FOR_INTERVALS: u32 = 3;
/// Requests in flight at once: a round must not burst thousands at a server.
const MAX_READS_IN_FLIGHT: usize = 64;
/// How many metrics intervals a demand lasts unrenewed: past the HPA's 15 s sync
/// period, which is how often the external metrics API asks.
const DEMAND_FOR_INTERVALS: u32 = 4;

/// One stream of one connection: `(connection, stream)`.
type Place = (String, String);

/// What the rounds know of one stream and its watched consumers.
#[derive(Default)]
struct Entry {
    /// The stream as the last list showed it; `None` when it was not in the list.
    stream: Option<Arc<stream::Info>>,
    /// When the last list that answered was asked for.
    listed_at: Option<Instant>,
    /// Whether the last list left out a stream the one before had.
    left_out: bool,
    /// The watched consumers found by the last consumer list.
    consumers: HashMap<String, Arc<consumer::Info>>,
    /// When the last consumer list that answered was asked for.
    consumers_read_at: Option<Instant>,
    /// Until when the consumers' figures are known to hold.
    confirmed_at: Option<Instant>,
    /// The stream's state when its consumers were last read.
    signature: Signature,
    /// Whether the last round found nothing moved since the consumers were read.
    resting: bool,
    /// When a reconcile last wrote to the stream or one of its consumers: reads
    /// asked for before that are not planned against.
    touched_at: Option<Instant>,
}

/// The parts of a stream's state that move whenever a consumer's figures can.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Signature {
    messages: u64,
    first: u64,
    last: u64,
    consumers: usize,
}

impl Signature {
    fn of(info: Option<&stream::Info>) -> Self {
        info.map_or_else(Self::default, |info| Self {
            messages: info.state.messages,
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            consumers: info.state.consumer_count,
        })
    }
}

#[derive(Default)]
struct State {
    /// Keyed by the Consumer object (`<namespace>/<name>`).
    consumers: BTreeMap<String, Watched>,
    /// Keyed by the Stream object.
    streams: BTreeMap<String, WatchedStream>,
    /// Who watches each place, and how to reach it: how a round finds a stream's
    /// objects without going through every object. A place no one watches has no
    /// entry either.
    places: HashMap<Place, Watchers>,
    entries: HashMap<Place, Entry>,
    /// Consumers read every lag interval, with when they were last asked for.
    demanded: HashMap<String, Instant>,
    /// What each object's status was last computed from (`None`: the server had nothing).
    reported: HashMap<(Kind, String), Option<Fingerprint>>,
    /// When each object was last woken.
    woken: HashMap<(Kind, String), Instant>,
    /// The objects whose status showed the server's side at the last round.
    resting: std::collections::HashSet<(Kind, String)>,
    /// The lag last announced for each demanded consumer.
    announced: HashMap<String, (u64, u64)>,
    /// Every stream name each connection's last list held (watched or not), and when
    /// that list was asked for: what creating a stream need not ask about again.
    listed: HashMap<String, (Instant, std::collections::HashSet<String>)>,
    /// Places whose stream or consumers a round read otherwise than the one before:
    /// only their objects can have news.
    changed: std::collections::HashSet<Place>,
    /// Objects to look at again at the next publish though their place did not
    /// change: a status computed from something else, news held back, a new demand.
    recheck: std::collections::HashSet<(Kind, String)>,
    /// How long the last round took: at thousands of streams under load, longer than
    /// the lag interval.
    round_took: Duration,
    subscribers: HashMap<Kind, mpsc::UnboundedSender<String>>,
}

/// How often the rounds read.
#[derive(Clone, Copy, Debug)]
pub struct Intervals {
    /// For consumers that drive scaling, and every stream list.
    pub lag: Duration,
    /// For every other consumer.
    pub metrics: Duration,
    /// For everything, moved or not.
    pub drift: Duration,
}

/// The rounds and their latest findings.
pub struct Inventory {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    intervals: Intervals,
}

impl Inventory {
    pub fn new(metrics: Arc<Metrics>, intervals: Intervals) -> Self {
        Self { state: Mutex::default(), metrics, intervals }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("inventory state")
    }

    /// The keys of objects of `kind` a round finds changed; one subscriber per kind.
    pub fn subscribe(&self, kind: Kind) -> mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = mpsc::unbounded();
        self.state().subscribers.insert(kind, sender);
        receiver
    }

    /// Reads the consumer the object `key` manages every lag interval from now on, for
    /// a while: callers that scale on it renew the demand as they ask.
    pub fn demand(&self, key: &str) {
        self.state().demand(key, Instant::now());
    }

    /// How old a stream list may be and still be planned against: a few rounds, of the
    /// lag interval or of the time rounds really take, whichever is longer.
    fn listing_fresh_for(&self, state: &State) -> Duration {
        self.intervals.lag.max(state.round_took) * FRESH_FOR_INTERVALS
    }

    /// How old a reading of `key` may be before it is `Stale`.
    fn fresh_for(&self, state: &State, key: &str) -> Duration {
        let interval = if state.demanded.contains_key(key) { self.intervals.lag } else { self.intervals.metrics };
        interval * FRESH_FOR_INTERVALS
    }

    /// Starts (or updates) watching the consumer the object `key` manages.
    pub fn watch(&self, key: &str, watched: Watched) {
        let mut state = self.state();
        let (place, reach) = place_and_reach(&watched.connection, &watched.stream, &watched.jetstream, &watched.system);
        let watcher = Watcher::Consumer(key, watched.consumer.clone());
        let before = state.consumers.insert(key.to_owned(), watched).map(|old| (old.connection, old.stream));
        state.rewatch(before, place, reach, watcher);
    }

    /// Starts (or updates) watching the stream the object `key` manages.
    pub fn watch_stream(&self, key: &str, watched: WatchedStream) {
        let mut state = self.state();
        let (place, reach) = place_and_reach(&watched.connection, &watched.stream, &watched.jetstream, &watched.system);
        let before = state.streams.insert(key.to_owned(), watched).map(|old| (old.connection, old.stream));
        state.rewatch(before, place, reach, Watcher::Stream(key));
    }

    /// Stops watching the consumer of `key` and removes its series.
    pub fn forget(&self, key: &str) {
        let mut state = self.state();
        state.demanded.remove(key);
        state.announced.remove(key);
        forget_object(&mut state, Kind::Consumer, key);
        if let Some(watched) = state.consumers.remove(key) {
            self.metrics.remove_consumer(&consumer_labels(&watched));
            state.unwatch(&(watched.connection, watched.stream), &Watcher::Consumer(key, watched.consumer));
        }
    }

    /// Stops watching the stream of `key`.
    pub fn forget_stream(&self, key: &str) {
        let mut state = self.state();
        forget_object(&mut state, Kind::Stream, key);
        if let Some(watched) = state.streams.remove(key) {
            state.unwatch(&(watched.connection, watched.stream), &Watcher::Stream(key));
        }
    }

    /// The stream and consumer names the object `key` manages, once it registered them.
    pub fn names(&self, key: &str) -> Option<(String, String)> {
        let state = self.state();
        state.consumers.get(key).map(|watched| (watched.stream.clone(), watched.consumer.clone()))
    }

    /// The latest word on the consumer of the object `key`, if it was read.
    pub fn observation(&self, key: &str) -> Option<Observation> {
        let state = self.state();
        observe(&state, key).map(|o| o.aged(self.fresh_for(&state, key)))
    }

    /// Every watched consumer of `namespace` that `wanted` selects, with its last
    /// reading if it was read; each selected consumer is demanded.
    pub fn demand_in(&self, namespace: &str, wanted: impl Fn(&Watched) -> bool) -> Vec<(Watched, Observation)> {
        let mut state = self.state();
        let selected: Vec<String> = state
            .consumers
            .iter()
            .filter(|(_, watched)| watched.namespace == namespace && wanted(watched))
            .map(|(key, _)| key.clone())
            .collect();
        let now = Instant::now();
        for key in &selected {
            state.demand(key, now);
        }
        selected
            .iter()
            .filter_map(|key| {
                let observation = observe(&state, key)?.aged(self.fresh_for(&state, key));
                Some((state.consumers[key].clone(), observation))
            })
            .collect()
    }

    /// The stream as a list asked for since the last write to it showed it, if that
    /// list is recent; `None` when there is none to plan against.
    pub fn stream_info(&self, connection: &str, stream: &str) -> Option<Arc<stream::Info>> {
        let state = self.state();
        let entry = state.entries.get(&(connection.to_owned(), stream.to_owned()))?;
        let listed = entry.listed_at.filter(|at| at.elapsed() <= self.listing_fresh_for(&state))?;
        (entry.touched_at < Some(listed)).then(|| entry.stream.clone()).flatten()
    }

    /// The consumer as a list asked for since the last write to it showed it, if that
    /// list is younger than the drift interval.
    pub fn consumer_info(&self, connection: &str, stream: &str, consumer: &str) -> Option<Arc<consumer::Info>> {
        let state = self.state();
        let entry = state.entries.get(&(connection.to_owned(), stream.to_owned()))?;
        let read = entry.consumers_read_at.filter(|at| at.elapsed() <= self.intervals.drift)?;
        (entry.touched_at < Some(read) && entry.stream.is_some()).then(|| entry.consumers.get(consumer).cloned())?
    }

    /// Whether the last list of `connection`, recent and not followed by a write to
    /// `stream`, did not hold it: a create may go without asking first (a stream that
    /// exists after all refuses a create with another configuration).
    pub fn unlisted(&self, connection: &str, stream: &str) -> bool {
        let state = self.state();
        let Some((at, names)) = state.listed.get(connection) else { return false };
        let place = (connection.to_owned(), stream.to_owned());
        let untouched = state.entries.get(&place).is_none_or(|entry| entry.touched_at.is_none_or(|t| t < *at));
        at.elapsed() <= self.listing_fresh_for(&state) && untouched && !names.contains(stream)
    }

    /// A reconcile wrote to this stream or one of its consumers: what was read before
    /// is not planned against, and the next round reads it again.
    pub fn touch(&self, connection: &str, stream: &str) {
        let mut state = self.state();
        if let Some((_, names)) = state.listed.get_mut(connection) {
            names.insert(stream.to_owned());
        }
        let place = (connection.to_owned(), stream.to_owned());
        let entry = state.entries.get_mut(&place);
        let listed = entry.as_ref().is_some_and(|entry| entry.stream.is_some());
        if let Some(entry) = entry {
            entry.touched_at = Some(Instant::now());
        }
        if !listed {
            // Made just now, perhaps: what waits for it need not wait for a round.
            wake_waiting(&state, &place);
        }
    }

    /// The object `key`'s status was just computed from what `fingerprint` stands for.
    pub fn reported(&self, kind: Kind, key: &str, fingerprint: Option<Fingerprint>) {
        let mut state = self.state();
        state.reported.insert((kind, key.to_owned()), fingerprint);
        state.recheck.insert((kind, key.to_owned()));
    }

    /// Rounds until `shutdown`, one each lag interval.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.intervals.lag);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => self.poll().await,
            }
        }
    }
}

/// Wakes the consumers watched on `place` whose last reconcile found nothing there:
/// they wait for its stream.
fn wake_waiting(state: &State, place: &Place) {
    let Some(subscriber) = state.subscribers.get(&Kind::Consumer) else { return };
    let Some(watchers) = state.places.get(place) else { return };
    for key in watchers.consumers.keys() {
        let found_nothing = state.reported.get(&(Kind::Consumer, key.clone())).is_some_and(Option::is_none);
        if found_nothing {
            let _ = subscriber.unbounded_send(key.clone());
        }
    }
}

fn forget_object(state: &mut State, kind: Kind, key: &str) {
    state.reported.remove(&(kind, key.to_owned()));
    state.woken.remove(&(kind, key.to_owned()));
    state.resting.remove(&(kind, key.to_owned()));
}

/// How a round reaches a connection: its JetStream API, and its system account if any.
type Reach = (jetstream::Context, Option<Arc<SystemAccess>>);

/// What the entries say of the consumer of `key`.
fn observe(state: &State, key: &str) -> Option<Observation> {
    let watched = state.consumers.get(key)?;
    let entry = state.entries.get(&(watched.connection.clone(), watched.stream.clone()))?;
    if entry.stream.is_none() {
        return entry.listed_at.map(|at| Observation::Missing { at });
    }
    let read_at = entry.consumers_read_at?;
    Some(match entry.consumers.get(&watched.consumer) {
        Some(info) => Observation::Found { lag: ConsumerLag::from(&**info), at: entry.confirmed_at.unwrap_or(read_at) },
        None => Observation::Missing { at: read_at },
    })
}

fn consumer_labels(watched: &Watched) -> ConsumerLabels {
    ConsumerLabels {
        namespace: watched.namespace.clone(),
        stream: watched.stream.clone(),
        consumer: watched.consumer.clone(),
    }
}
