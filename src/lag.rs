//! Consumer lag, read in batches and exported.
//!
//! Consumer objects register what they manage (`watch`) and drop it when they go
//! (`forget`). The poller reads, per stream those consumers live on, one stream info
//! and the paged consumer list (up to 256 consumers a page): the JetStream API answers
//! for all of a stream's consumers at once, each figure from the consumer's leader, so
//! the figures are right on clusters and the request rate grows with the number of
//! streams, not of consumers.
//!
//! Lag is read where it is needed at the rate it is needed. A consumer that drives
//! scaling (an autoscaled WorkerPool, an HPA asking the external metrics API) is
//! `demand`ed, and its stream is read every lag interval (1 s); every other stream
//! once per metrics interval (15 s), which is what a Prometheus scrape wants. A demand
//! lapses when it is not renewed for a few metrics intervals.
//!
//! A consumer missing from the list is reported as missing: its series are removed,
//! never set to 0, so nothing downstream reads "no lag" (or "scale to max") from a
//! consumer that is not there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ConsumerLabels, Metrics, StreamLabels};

/// One consumer's figures at one poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
    pub waiting: u64,
}

/// What a Consumer object asks to have watched.
#[derive(Clone)]
pub struct Watched {
    pub namespace: String,
    /// Which connection: `<namespace>/<NatsConnection>`, or empty for the default one.
    pub connection: String,
    pub jetstream: jetstream::Context,
    pub stream: String,
    pub consumer: String,
}

/// The wall-clock time of a reading taken at `at`, as Kubernetes objects carry it.
pub fn read_at(at: Instant) -> k8s_openapi::jiff::Timestamp {
    let now = k8s_openapi::jiff::Timestamp::now();
    let age = k8s_openapi::jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// The last poll's answer for one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    Found {
        lag: ConsumerLag,
        at: Instant,
    },
    /// The stream answered and the consumer was not in its list.
    Missing {
        at: Instant,
    },
    /// The last figures are older than a few intervals (NATS cut off, the poller
    /// stalled): nothing may act on them.
    Stale {
        lag: ConsumerLag,
        at: Instant,
    },
}

/// How many poll intervals a reading stays good for.
const FRESH_FOR_INTERVALS: u32 = 3;
/// Streams read at once: the poller must not burst thousands of requests at a server.
const MAX_READS_IN_FLIGHT: usize = 64;
/// How many metrics intervals a demand lasts unrenewed: past the HPA's 15 s sync
/// period, which is how often the external metrics API asks.
const DEMAND_FOR_INTERVALS: u32 = 4;

impl Observation {
    /// `Stale` once a reading is older than `fresh_for`.
    fn aged(self, fresh_for: Duration) -> Self {
        match self {
            Self::Found { lag, at } | Self::Stale { lag, at } if at.elapsed() > fresh_for => Self::Stale { lag, at },
            other => other,
        }
    }
}

#[derive(Default)]
struct State {
    /// Keyed by the Consumer object (`<namespace>/<name>`).
    watched: BTreeMap<String, Watched>,
    observed: HashMap<String, Observation>,
    /// Consumers read every lag interval, with when they were last asked for.
    demanded: HashMap<String, Instant>,
}

/// The consumers on one stream of one connection, and whether any is demanded.
type Group = (bool, Vec<(String, Watched)>);

/// How often the poller reads consumers.
#[derive(Clone, Copy, Debug)]
pub struct Intervals {
    /// For consumers that drive scaling.
    pub lag: Duration,
    /// For every other consumer.
    pub metrics: Duration,
}

/// The poller and its latest figures.
pub struct LagPoller {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    intervals: Intervals,
}

impl LagPoller {
    /// A poller whose readings go stale after a few of their intervals.
    pub fn new(metrics: Arc<Metrics>, intervals: Intervals) -> Self {
        Self { state: Mutex::default(), metrics, intervals }
    }

    /// Reads the consumer the object `key` manages every lag interval from now on, for
    /// a while: callers that scale on it renew the demand as they ask.
    pub fn demand(&self, key: &str) {
        self.state.lock().expect("lag state").demanded.insert(key.to_owned(), Instant::now());
    }

    /// How old a reading of `key` may be before it is `Stale`.
    fn fresh_for(&self, state: &State, key: &str) -> Duration {
        let interval = if state.demanded.contains_key(key) { self.intervals.lag } else { self.intervals.metrics };
        interval * FRESH_FOR_INTERVALS
    }

    /// Starts (or updates) watching the consumer the object `key` manages.
    pub fn watch(&self, key: &str, watched: Watched) {
        self.state.lock().expect("lag state").watched.insert(key.to_owned(), watched);
    }

    /// Stops watching `key` and removes its series.
    pub fn forget(&self, key: &str) {
        let mut state = self.state.lock().expect("lag state");
        state.observed.remove(key);
        state.demanded.remove(key);
        if let Some(watched) = state.watched.remove(key) {
            self.metrics.remove_consumer(&consumer_labels(&watched));
        }
    }

    /// The stream and consumer names the object `key` manages, once it registered them.
    pub fn names(&self, key: &str) -> Option<(String, String)> {
        let state = self.state.lock().expect("lag state");
        state.watched.get(key).map(|watched| (watched.stream.clone(), watched.consumer.clone()))
    }

    /// The last poll's answer for the object `key`, if it was polled.
    pub fn observation(&self, key: &str) -> Option<Observation> {
        let state = self.state.lock().expect("lag state");
        state.observed.get(key).map(|o| o.aged(self.fresh_for(&state, key)))
    }

    /// Every watched consumer of `namespace` that `wanted` selects, with its last
    /// reading if it was read; each selected consumer is demanded.
    pub fn demand_in(&self, namespace: &str, wanted: impl Fn(&Watched) -> bool) -> Vec<(Watched, Observation)> {
        let mut state = self.state.lock().expect("lag state");
        let selected: Vec<String> = state
            .watched
            .iter()
            .filter(|(_, watched)| watched.namespace == namespace && wanted(watched))
            .map(|(key, _)| key.clone())
            .collect();
        let now = Instant::now();
        for key in &selected {
            state.demanded.insert(key.clone(), now);
        }
        selected
            .iter()
            .filter_map(|key| {
                let observation = state.observed.get(key)?.aged(self.fresh_for(&state, key));
                Some((state.watched[key].clone(), observation))
            })
            .collect()
    }

    /// Polls until `shutdown`: demanded consumers' streams every lag interval, all of
    /// them every metrics interval.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.intervals.lag);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    let full = last_full.is_none_or(|at| at.elapsed() + self.intervals.lag / 2 >= self.intervals.metrics);
                    if full {
                        last_full = Some(Instant::now());
                    }
                    self.poll(!full).await;
                }
            }
        }
    }

    /// One round: each watched stream read once (only those with a demanded consumer
    /// when `demanded_only`), every consumer on them updated.
    pub async fn poll(&self, demanded_only: bool) {
        let groups = {
            let mut state = self.state.lock().expect("lag state");
            let lapse = self.intervals.metrics * DEMAND_FOR_INTERVALS;
            state.demanded.retain(|_, at| at.elapsed() < lapse);
            let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
            for (key, watched) in &state.watched {
                let group = groups.entry((watched.connection.clone(), watched.stream.clone())).or_default();
                group.0 |= state.demanded.contains_key(key);
                group.1.push((key.clone(), watched.clone()));
            }
            groups
        };
        let reads = groups.into_iter().filter(|(_, (demanded, _))| *demanded || !demanded_only).map(
            |((_, stream), (_, members))| async move {
                let js = &members[0].1.jetstream;
                (read_stream(js, &stream).await, members)
            },
        );
        for (read, members) in
            futures::stream::iter(reads).buffer_unordered(MAX_READS_IN_FLIGHT).collect::<Vec<_>>().await
        {
            self.record(read, members);
        }
    }

    fn record(&self, read: Result<StreamRead, anyhow::Error>, members: Vec<(String, Watched)>) {
        let at = Instant::now();
        let mut state = self.state.lock().expect("lag state");
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                // Unknown is not zero: the last figures stand until a poll answers.
                tracing::debug!(error = %error, stream = %members[0].1.stream, "reading consumer lag failed");
                return;
            }
        };
        let mut streams_set = std::collections::BTreeSet::new();
        for (key, watched) in members {
            let labels = consumer_labels(&watched);
            // One stream, read once: its gauges once per namespace that watches it.
            if streams_set.insert(watched.namespace.clone()) {
                let stream = StreamLabels { namespace: watched.namespace.clone(), stream: watched.stream.clone() };
                self.metrics.set_stream(&stream, read.messages, read.bytes);
            }
            let observation = match read.consumers.get(&watched.consumer) {
                Some(lag) => {
                    self.metrics.set_consumer(&labels, lag);
                    Observation::Found { lag: *lag, at }
                }
                None => {
                    self.metrics.remove_consumer(&labels);
                    Observation::Missing { at }
                }
            };
            state.observed.insert(key, observation);
        }
    }
}

fn consumer_labels(watched: &Watched) -> ConsumerLabels {
    ConsumerLabels {
        namespace: watched.namespace.clone(),
        stream: watched.stream.clone(),
        consumer: watched.consumer.clone(),
    }
}

/// One stream's figures and all its consumers'.
pub struct StreamRead {
    pub messages: u64,
    pub bytes: u64,
    pub consumers: HashMap<String, ConsumerLag>,
}

/// Reads a stream's state and its consumers' lag: one stream info and one request per
/// page of the consumer list.
pub async fn read_stream(js: &jetstream::Context, name: &str) -> anyhow::Result<StreamRead> {
    let stream = js.get_stream(name).await?;
    let state = &stream.cached_info().state;
    let (messages, bytes) = (state.messages, state.bytes);
    let infos: Vec<consumer::Info> = stream.consumers().try_collect().await?;
    let consumers = infos
        .into_iter()
        .map(|info| {
            let lag = ConsumerLag {
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
                waiting: info.num_waiting as u64,
            };
            (info.name, lag)
        })
        .collect();
    Ok(StreamRead { messages, bytes, consumers })
}
