//! Who watches each place: the index by which a round finds a stream's objects
//! without going through every object, kept by `watch` and `forget`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;

use super::{Kind, Place, Reach, State};
use crate::jsz::SystemAccess;

/// The objects watched on one place.
pub(super) struct Watchers {
    pub(super) reach: Reach,
    /// Consumer objects' keys, with the consumer's name on the server.
    pub(super) consumers: BTreeMap<String, String>,
    /// Stream objects' keys.
    pub(super) streams: BTreeSet<String>,
}

/// One object watching a place.
pub(super) enum Watcher<'a> {
    /// A Consumer object's key, with the consumer's name on the server.
    Consumer(&'a str, String),
    /// A Stream object's key.
    Stream(&'a str),
}

impl Watchers {
    fn add(&mut self, watcher: Watcher<'_>) {
        match watcher {
            Watcher::Consumer(key, name) => {
                self.consumers.insert(key.to_owned(), name);
            }
            Watcher::Stream(key) => {
                self.streams.insert(key.to_owned());
            }
        }
    }

    fn remove(&mut self, watcher: &Watcher<'_>) {
        match watcher {
            Watcher::Consumer(key, _) => {
                self.consumers.remove(*key);
            }
            Watcher::Stream(key) => {
                self.streams.remove(*key);
            }
        }
    }
}

impl State {
    /// Records that `watcher` watches `place`, reached through `reach` from now on,
    /// and no longer the place it watched `before` when that was another.
    pub(super) fn rewatch(&mut self, before: Option<Place>, place: Place, reach: Reach, watcher: Watcher<'_>) {
        if let Some(before) = before.filter(|before| *before != place) {
            self.unwatch(&before, &watcher);
        }
        let watchers = self.places.entry(place).or_insert_with(|| Watchers {
            reach: reach.clone(),
            consumers: BTreeMap::new(),
            streams: BTreeSet::new(),
        });
        watchers.reach = reach;
        watchers.add(watcher);
    }

    /// Removes `watcher` from `place`; a place no one watches any more goes, with
    /// what the rounds knew of it.
    pub(super) fn unwatch(&mut self, place: &Place, watcher: &Watcher<'_>) {
        let Some(watchers) = self.places.get_mut(place) else { return };
        watchers.remove(watcher);
        if watchers.consumers.is_empty() && watchers.streams.is_empty() {
            self.places.remove(place);
            self.entries.remove(place);
        }
    }

    /// Demands `key`'s consumer as of `at`; a new demand is looked at next round.
    pub(super) fn demand(&mut self, key: &str, at: Instant) {
        if self.demanded.insert(key.to_owned(), at).is_none() {
            self.recheck.insert((Kind::Consumer, key.to_owned()));
        }
    }
}

/// Where a watched object is, and how to reach it.
pub(super) fn place_and_reach(
    connection: &str,
    stream: &str,
    jetstream: &jetstream::Context,
    system: &Option<Arc<SystemAccess>>,
) -> (Place, Reach) {
    ((connection.to_owned(), stream.to_owned()), (jetstream.clone(), system.clone()))
}
