//! What the WorkerPool scaler remembers between decisions, per pool, in this
//! process: recent wants, quiet time, the last scale, the HPA last applied, and
//! whether the pool's objects were found to be its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::inventory::ConsumerLag;
use crate::plan::scale::ScaleInput;

/// What the scaler remembers between decisions, per pool: wants of the last cooldown
/// and since when pending has been quiet. Lost on restart, which only delays a
/// scale-down.
#[derive(Default)]
pub struct ScaleMemory {
    pools: Mutex<HashMap<String, PoolMemory>>,
}

#[derive(Default)]
struct PoolMemory {
    wants: VecDeque<(Instant, i32)>,
    quiet_since: Option<Instant>,
    /// The last change of replicas, kept here because the pool a reconcile reads may
    /// predate the status write that recorded it.
    last_scale: Option<(Time, &'static str)>,
    hpa: HpaState,
    /// The Deployment as last applied.
    deployment: Option<Applied>,
    /// The Deployment and HPA of the pool's name were found to be the pool's, or absent.
    owns_its_objects: bool,
}

/// What this process knows of a pool's HPA, so that it is written only when it would
/// change or was edited, not on every look.
#[derive(Default)]
enum HpaState {
    #[default]
    Unknown,
    /// Deleted, or found missing: nothing left from an earlier mode or spec.
    Absent,
    Applied(Applied),
}

/// An object as this process last applied it, and the generation the apply left.
#[derive(Clone)]
pub(super) struct Applied {
    pub object: serde_json::Value,
    pub generation: Option<i64>,
}

/// The objects a pool owns.
#[derive(Clone, Copy)]
pub(super) enum Owned {
    Deployment,
    Hpa,
}

impl ScaleMemory {
    pub(super) fn input(
        &self,
        key: &str,
        lag: &ConsumerLag,
        active: bool,
        current: i32,
        window: Duration,
    ) -> ScaleInput {
        let mut pools = self.pools.lock().expect("scale memory");
        let memory = pools.entry(key.to_owned()).or_default();
        let now = Instant::now();
        memory.wants.retain(|(at, _)| now.duration_since(*at) < window);
        memory.quiet_since = if active { None } else { Some(memory.quiet_since.unwrap_or(now)) };
        ScaleInput {
            pending: lag.pending,
            in_flight: lag.ack_pending,
            current,
            recent_high: memory.wants.iter().map(|(_, want)| *want).max().unwrap_or(0),
            quiet_for: memory.quiet_since.map_or(Duration::ZERO, |since| now.duration_since(since)),
        }
    }

    pub(super) fn remember(&self, key: &str, want: i32) {
        let mut pools = self.pools.lock().expect("scale memory");
        pools.entry(key.to_owned()).or_default().wants.push_back((Instant::now(), want));
    }

    pub(super) fn scaled(&self, key: &str, at: Time, reason: &'static str) {
        self.pools.lock().expect("scale memory").entry(key.to_owned()).or_default().last_scale = Some((at, reason));
    }

    pub(super) fn last_scale(&self, key: &str) -> Option<(Time, &'static str)> {
        self.pools.lock().expect("scale memory").get(key).and_then(|memory| memory.last_scale.clone())
    }

    pub(super) fn applied(&self, key: &str, which: Owned) -> Option<Applied> {
        let pools = self.pools.lock().expect("scale memory");
        let memory = pools.get(key)?;
        match (which, &memory.hpa) {
            (Owned::Deployment, _) => memory.deployment.clone(),
            (Owned::Hpa, HpaState::Applied(applied)) => Some(applied.clone()),
            (Owned::Hpa, _) => None,
        }
    }

    pub(super) fn set_applied(&self, key: &str, which: Owned, applied: Applied) {
        let mut pools = self.pools.lock().expect("scale memory");
        let memory = pools.entry(key.to_owned()).or_default();
        match which {
            Owned::Deployment => memory.deployment = Some(applied),
            Owned::Hpa => memory.hpa = HpaState::Applied(applied),
        }
    }

    pub(super) fn hpa_removed(&self, key: &str) {
        self.pools.lock().expect("scale memory").entry(key.to_owned()).or_default().hpa = HpaState::Absent;
    }

    pub(super) fn hpa_absent(&self, key: &str) -> bool {
        let pools = self.pools.lock().expect("scale memory");
        pools.get(key).is_some_and(|memory| matches!(memory.hpa, HpaState::Absent))
    }

    pub(super) fn owned(&self, key: &str) {
        self.pools.lock().expect("scale memory").entry(key.to_owned()).or_default().owns_its_objects = true;
    }

    pub(super) fn owns_its_objects(&self, key: &str) -> bool {
        self.pools.lock().expect("scale memory").get(key).is_some_and(|memory| memory.owns_its_objects)
    }

    pub(super) fn forget(&self, key: &str) {
        self.pools.lock().expect("scale memory").remove(key);
    }
}
