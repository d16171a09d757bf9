//! One round: the stream lists, the consumer lists that are due, and what they change.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::{StreamExt, TryStreamExt};

use super::{
    ConsumerLag, Entry, Fingerprint, Inventory, Kind, MAX_READS_IN_FLIGHT, Place, Reach, Signature, State,
    consumer_labels, observe,
};
use crate::jetstream::{ConsumerReport, StreamReport};
use crate::metrics::StreamLabels;

/// What a round read of one connection's streams.
enum Read {
    List(Vec<stream::Info>),
    Holdings(crate::jsz::Holdings),
}

/// A consumer list that answered: the consumers found, and when it was asked for.
type ConsumerRead = (Place, anyhow::Result<Vec<consumer::Info>>, Instant);

impl Inventory {
    /// One round: every connection's stream list (or, for one with a system account,
    /// everything it holds in one JSZ request), then the consumer lists due.
    pub async fn poll(&self) {
        let started = Instant::now();
        let lists = {
            let state = self.state();
            let mut connections: BTreeMap<String, Reach> = BTreeMap::new();
            for ((connection, _), watchers) in &state.places {
                connections.entry(connection.clone()).or_insert_with(|| watchers.reach.clone());
            }
            connections
        };
        let wait = self.intervals.lag;
        let lists = futures::stream::iter(lists)
            .map(|(connection, (js, system))| async move {
                let asked = Instant::now();
                if let Some(system) = system {
                    match system.holdings(wait).await {
                        Ok(holdings) => return (connection, Ok(Read::Holdings(holdings)), asked),
                        Err(error) => tracing::debug!(%connection, %error, "JSZ failed; listing the streams instead"),
                    }
                }
                let list: Result<Vec<stream::Info>, _> = js.streams().try_collect().await;
                (connection, list.map(Read::List).map_err(|e| e.to_string()), asked)
            })
            .buffer_unordered(MAX_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let due = {
            let mut state = self.state();
            let mut read_whole = HashSet::new();
            for (connection, read, asked) in lists {
                match read {
                    Ok(Read::List(list)) => self.record_list(&mut state, &connection, list, asked),
                    Ok(Read::Holdings(holdings)) => {
                        let listed: HashSet<String> = holdings.streams.iter().map(|s| s.config.name.clone()).collect();
                        self.record_list(&mut state, &connection, holdings.streams, asked);
                        record_holdings(&mut state, &connection, &listed, holdings.consumers, asked);
                        read_whole.insert(connection);
                    }
                    // Unknown is not zero: the last figures stand until a list answers.
                    Err(error) => tracing::debug!(%connection, %error, "listing the streams failed"),
                }
            }
            self.due(&mut state, &read_whole)
        };
        let reads: Vec<ConsumerRead> = futures::stream::iter(due)
            .map(|(place, js)| async move {
                let asked = Instant::now();
                let stream = js.get_stream_no_info(&place.1).await;
                let read = match stream {
                    Ok(stream) => stream.consumers().try_collect().await.map_err(anyhow::Error::from),
                    Err(error) => Err(error.into()),
                };
                (place, read, asked)
            })
            .buffer_unordered(MAX_READS_IN_FLIGHT)
            .collect()
            .await;
        let mut state = self.state();
        for read in reads {
            record_consumers(&mut state, read);
        }
        self.publish(&mut state);
        state.round_took = started.elapsed();
    }

    /// Records one connection's stream list for the places watched on it.
    fn record_list(&self, state: &mut State, connection: &str, list: Vec<stream::Info>, asked: Instant) {
        let names = list.iter().map(|info| info.config.name.clone()).collect();
        state.listed.insert(connection.to_owned(), (asked, names));
        let mut found: HashMap<String, stream::Info> =
            list.into_iter().map(|info| (info.config.name.clone(), info)).collect();
        let places: Vec<Place> = state.places.keys().filter(|(c, _)| c == connection).cloned().collect();
        for place in places {
            let name = place.1.clone();
            let entry = state.entries.entry(place.clone()).or_default();
            let appeared = entry.stream.is_none() && found.contains_key(&name);
            let listed = found.remove(&name).map(Arc::new);
            // The list is paged by offset: a stream made or deleted meanwhile shifts the
            // pages, and another may fall between two. So a stream is gone only when two
            // lists in a row leave it out; until then its last word stands, ageing.
            if listed.is_none() && entry.stream.is_some() && !entry.left_out {
                entry.left_out = true;
                continue;
            }
            entry.left_out = false;
            let moved = match (&entry.stream, &listed) {
                (Some(before), Some(now)) => !same_stream(before, now),
                (None, None) => entry.listed_at.is_none(),
                _ => true,
            };
            entry.stream = listed;
            entry.listed_at = Some(asked);
            if moved {
                state.changed.insert(place.clone());
            }
            if entry.stream.is_none() {
                entry.consumers.clear();
            }
            if appeared {
                super::wake_waiting(state, &place);
            }
        }
    }

    /// The consumer lists to read this round; the figures of every other place with
    /// watched consumers are confirmed when nothing can have moved them. Connections in
    /// `read_whole` had their consumers read with their streams.
    fn due(&self, state: &mut State, read_whole: &HashSet<String>) -> Vec<(Place, jetstream::Context)> {
        let lapse = self.intervals.metrics * super::DEMAND_FOR_INTERVALS;
        state.demanded.retain(|_, at| at.elapsed() < lapse);
        let places: Vec<(Place, jetstream::Context, bool)> = state
            .places
            .iter()
            .filter(|(_, watchers)| !watchers.consumers.is_empty())
            .map(|(place, watchers)| {
                let demanded = watchers.consumers.keys().any(|key| state.demanded.contains_key(key));
                (place.clone(), watchers.reach.0.clone(), demanded)
            })
            .collect();
        let intervals = self.intervals;
        let mut due = Vec::new();
        for (place, js, demanded) in places {
            if read_whole.contains(&place.0) {
                continue;
            }
            let Some(entry) = state.entries.get_mut(&place) else { continue };
            let (Some(listed_at), Some(info)) = (entry.listed_at, entry.stream.as_deref()) else { continue };
            let signature = Signature::of(Some(info));
            let moved = signature != entry.signature || in_flight(entry);
            let every = if demanded { intervals.lag } else { intervals.metrics };
            let is_due = |interval: Duration| {
                entry.consumers_read_at.is_none_or(|at| at.elapsed() + intervals.lag / 2 >= interval)
            };
            // The first move after a rest is read at once; moves that go on, at the interval.
            let read = entry.consumers_read_at.is_none()
                || entry.touched_at >= entry.consumers_read_at
                || is_due(intervals.drift)
                || (moved && (entry.resting || is_due(every)));
            if read {
                entry.signature = signature;
                entry.resting = false;
                due.push((place, js));
            } else if !moved {
                entry.confirmed_at = Some(listed_at);
                entry.resting = true;
            }
        }
        due
    }

    /// Sets the series of what this round read otherwise than the last, and wakes
    /// what changed: the objects of the places that changed, and those held over
    /// (`recheck`). A round that finds nothing new costs nothing per object.
    fn publish(&self, state: &mut State) {
        let changed: Vec<Place> = state.changed.drain().collect();
        let mut keys: BTreeSet<(Kind, String)> = state.recheck.drain().collect();
        // One stream, read once: its gauges once per namespace that watches it.
        let mut set = HashSet::new();
        for place in &changed {
            let Some(watchers) = state.places.get(place) else { continue };
            keys.extend(watchers.consumers.keys().map(|key| (Kind::Consumer, key.clone())));
            keys.extend(watchers.streams.iter().map(|key| (Kind::Stream, key.clone())));
            let Some(info) = state.entries.get(place).and_then(|e| e.stream.as_deref()) else { continue };
            let namespaces = watchers.consumers.keys().filter_map(|key| state.consumers.get(key).map(|w| &w.namespace));
            let namespaces = namespaces
                .chain(watchers.streams.iter().filter_map(|key| state.streams.get(key).map(|w| &w.namespace)));
            for namespace in namespaces {
                if set.insert((namespace.clone(), place.1.clone())) {
                    let labels = StreamLabels { namespace: namespace.clone(), stream: place.1.clone() };
                    self.metrics.set_stream(&labels, info.state.messages, info.state.bytes);
                }
            }
        }
        let mut candidates: Vec<(Kind, String, Option<Fingerprint>)> = Vec::new();
        let mut lag_moved = Vec::new();
        for (kind, key) in keys {
            match kind {
                Kind::Consumer => {
                    let Some(watched) = state.consumers.get(&key) else { continue };
                    let labels = consumer_labels(watched);
                    match observe(state, &key) {
                        Some(super::Observation::Found { lag, .. }) => self.metrics.set_consumer(&labels, &lag),
                        Some(super::Observation::Missing { .. }) => self.metrics.remove_consumer(&labels),
                        _ => {}
                    }
                    let entry = state.entries.get(&(watched.connection.clone(), watched.stream.clone()));
                    let Some(entry) = entry.filter(|e| e.consumers_read_at.is_some() || e.stream.is_none()) else {
                        continue;
                    };
                    let info = entry.consumers.get(&watched.consumer);
                    let now = info.map(|info| ConsumerReport::from(&**info).fingerprint());
                    if let Some(info) = info
                        && state.demanded.contains_key(&key)
                    {
                        let lag = ConsumerLag::from(&**info);
                        if state.announced.get(&key) != Some(&(lag.pending, lag.ack_pending)) {
                            lag_moved.push((key.clone(), (lag.pending, lag.ack_pending)));
                        }
                    }
                    candidates.push((Kind::Consumer, key, now));
                }
                Kind::Stream => {
                    let Some(watched) = state.streams.get(&key) else { continue };
                    let entry = state.entries.get(&(watched.connection.clone(), watched.stream.clone()));
                    let Some(entry) = entry.filter(|e| e.listed_at.is_some()) else { continue };
                    let now = entry.stream.as_deref().map(|info| StreamReport::from(info).fingerprint());
                    candidates.push((Kind::Stream, key, now));
                }
                Kind::Lag => {}
            }
        }
        for (kind, key, now) in candidates {
            let differs = state.reported.get(&(kind, key.clone())).is_some_and(|reported| *reported != now);
            if news(state, kind, &key, now, self.intervals.metrics) {
                state.woken.insert((kind, key.clone()), Instant::now());
                send(state, kind, key);
            } else if differs {
                // Figures held back for the metrics interval: looked at again next round.
                state.recheck.insert((kind, key));
            }
        }
        for (key, lag) in lag_moved {
            state.announced.insert(key.clone(), lag);
            send(state, Kind::Lag, key);
        }
    }
}

/// Whether two reads of a stream show the same configuration and state: what a
/// status and the gauges are made of.
fn same_stream(a: &stream::Info, b: &stream::Info) -> bool {
    a.config == b.config && a.state == b.state
}

/// Whether two reads of a consumer show the same configuration and figures.
fn same_consumer(a: &consumer::Info, b: &consumer::Info) -> bool {
    a.config == b.config
        && (a.num_pending, a.num_ack_pending, a.num_redelivered, a.num_waiting)
            == (b.num_pending, b.num_ack_pending, b.num_redelivered, b.num_waiting)
        && a.delivered.stream_sequence == b.delivered.stream_sequence
        && a.ack_floor.stream_sequence == b.ack_floor.stream_sequence
}

/// Whether a watched consumer of the entry had messages pending or in flight.
fn in_flight(entry: &Entry) -> bool {
    entry.consumers.values().any(|info| info.num_pending > 0 || info.num_ack_pending > 0)
}

fn record_consumers(state: &mut State, (place, read, asked): ConsumerRead) {
    let watched: HashSet<&str> =
        state.places.get(&place).map(|w| w.consumers.values().map(String::as_str).collect()).unwrap_or_default();
    let infos = match read {
        Ok(infos) => infos,
        Err(error) => {
            tracing::debug!(stream = %place.1, %error, "reading the consumers failed");
            return;
        }
    };
    let consumers: HashMap<String, Arc<consumer::Info>> = infos
        .into_iter()
        .filter(|info| watched.contains(info.name.as_str()))
        .map(|info| (info.name.clone(), Arc::new(info)))
        .collect();
    let Some(entry) = state.entries.get_mut(&place) else { return };
    let moved = entry.consumers_read_at.is_none()
        || entry.consumers.len() != consumers.len()
        || consumers
            .iter()
            .any(|(name, now)| entry.consumers.get(name).is_none_or(|before| !same_consumer(before, now)));
    if moved {
        state.changed.insert(place);
    }
    entry.consumers = consumers;
    entry.consumers_read_at = Some(asked);
    entry.confirmed_at = Some(asked);
}

/// A JSZ answer's consumers, for every watched place of `connection` whose stream it
/// listed (one it left out keeps its last word, as the stream itself does).
fn record_holdings(
    state: &mut State,
    connection: &str,
    listed: &HashSet<String>,
    mut consumers: HashMap<String, Vec<consumer::Info>>,
    asked: Instant,
) {
    let places: Vec<Place> =
        state.places.keys().filter(|(c, stream)| c == connection && listed.contains(stream)).cloned().collect();
    for place in places {
        let read = consumers.remove(&place.1).unwrap_or_default();
        if let Some(entry) = state.entries.get_mut(&place) {
            entry.signature = Signature::of(entry.stream.as_deref());
            entry.resting = false;
        }
        record_consumers(state, (place, Ok(read), asked));
    }
}

fn send(state: &State, kind: Kind, key: String) {
    if let Some(subscriber) = state.subscribers.get(&kind) {
        let _ = subscriber.unbounded_send(key);
    }
}

/// Whether the object `key` of `kind`, whose server side now stands at `now`, should
/// be woken: its status was computed from something else, and a configuration change,
/// a disappearance or the first move after a rest is news at once, figures that go on
/// moving once per `figures_every`.
fn news(state: &mut State, kind: Kind, key: &str, now: Option<Fingerprint>, figures_every: Duration) -> bool {
    let id = (kind, key.to_owned());
    let Some(reported) = state.reported.get(&id) else { return false };
    let urgent = match (reported, now) {
        (Some(reported), Some(now)) if reported == &now => {
            state.resting.insert(id);
            return false;
        }
        (Some(reported), Some(now)) => reported.config != now.config,
        (None, None) => return false,
        _ => true,
    };
    let first_move = state.resting.remove(&id);
    urgent || first_move || state.woken.get(&id).is_none_or(|at| at.elapsed() >= figures_every)
}
