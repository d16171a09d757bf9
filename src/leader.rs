//! Leader election on a `coordination.k8s.io` Lease, with kube-lease-manager (server-side
//! apply on the Lease, so two replicas can never both take it).
//!
//! Only the leader writes: the controllers, the inventory and the external metrics
//! API run on it alone. A standby stays connected and ready, and takes over once the
//! leader's lease lapses (at most the lease duration after the leader died) or at once
//! when the leader lets go on a clean stop. A leader that loses the lease stops, so a
//! fresh process starts as a standby.
//!
//! The leader labels its own Pod `jetway.dev/leader=true` (every replica writes
//! `false` first), so that a Service, the external metrics API's above all, can send
//! traffic to the leader only.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The label a leader's Pod carries.
pub const LEADER_LABEL: &str = "jetway.dev/leader";
/// How long a clean stop waits for the Lease to be let go.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// Which Lease, and who asks for it.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease: String,
    pub namespace: String,
    /// Unique per replica: the Pod's name in a cluster.
    pub identity: String,
    /// How long a lease lasts without renewal: the longest a failover waits.
    pub duration: Duration,
    /// How long before expiry the leader renews.
    pub renew_before: Duration,
    /// This replica's Pod (`POD_NAME` in `POD_NAMESPACE`), to label while it leads.
    pub pod: Option<(String, String)>,
}

/// A running election.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    /// Whether this replica has seen its own renewal within the renew deadline.
    renewed: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

/// The share of the lease duration within which a leader must see its own renewal,
/// or stop writing: shorter than the lease, so that it has stopped before any other
/// replica can take the lease over (client-go's RenewDeadline).
const RENEW_DEADLINE_SHARE: f64 = 0.7;

/// Watches the Lease: `true` while this replica holds it and its last renewal is
/// younger than the renew deadline, as far as the apiserver (not this process's own
/// hopes) says; a partition from the apiserver turns it `false` within the deadline.
async fn keep_watch(
    api: kube::Api<Lease>,
    lease: String,
    identity: String,
    duration: Duration,
    renewed: watch::Sender<bool>,
    mut leading: watch::Receiver<bool>,
) {
    let deadline = duration.mul_f64(RENEW_DEADLINE_SHARE);
    let period = (duration / 10).max(Duration::from_millis(200));
    let mut confirmed: Option<std::time::Instant> = None;
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // A standby asks nothing: only a leader has a renewal to see.
        if !*leading.borrow_and_update() {
            renewed.send_if_modified(|was| std::mem::replace(was, false));
            confirmed = None;
            if leading.wait_for(|leader| *leader).await.is_err() {
                return;
            }
        }
        // A slow answer from a loaded apiserver still carries a renewal time: wait for
        // it as long as the deadline, not one period.
        let read = tokio::time::timeout(deadline, api.get_opt(&lease)).await;
        if let Ok(Ok(Some(found))) = read {
            let spec = found.spec.unwrap_or_default();
            let holder = spec.holder_identity.as_deref() == Some(identity.as_str());
            let age = spec.renew_time.and_then(|t| {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                Duration::try_from(age).ok()
            });
            confirmed = match (holder, age) {
                (true, Some(age)) => std::time::Instant::now().checked_sub(age),
                _ => None,
            };
        }
        let valid = confirmed.is_some_and(|at| at.elapsed() < deadline);
        renewed.send_if_modified(|was| std::mem::replace(was, valid) != valid);
    }
}

impl LeaderElection {
    /// Joins the election; the Lease is made if it does not exist.
    pub async fn join(&self, client: kube::Client) -> Result<Leadership, LeaseManagerError> {
        let seconds = |d: Duration| d.as_secs().max(1);
        let manager = LeaseManagerBuilder::new(client.clone(), &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(seconds(self.duration))
            .with_grace(seconds(self.renew_before).min(seconds(self.duration) - 1).max(1))
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        let (renewed_tx, renewed) = watch::channel(false);
        let api: kube::Api<Lease> = kube::Api::namespaced(client, &self.namespace);
        let (lease, identity) = (self.lease.clone(), self.identity.clone());
        let keeper = tokio::spawn(keep_watch(api, lease, identity, self.duration, renewed_tx, state.clone()));
        Ok(Leadership { state, task, renewed, keeper })
    }

    /// Labels this replica's Pod as leader or not; without a Pod (a local run) there is
    /// nothing to label.
    pub async fn label_pod(&self, client: &kube::Client, leader: bool) -> Result<(), kube::Error> {
        let Some((namespace, name)) = &self.pod else { return Ok(()) };
        let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
        let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: leader.to_string() } } });
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

impl Leadership {
    /// Waits until this replica leads and has seen its renewal on the apiserver, so
    /// that its writes are let through from the start; `false` if the election ended
    /// first.
    pub async fn acquired(&mut self) -> bool {
        self.state.wait_for(|leader| *leader).await.is_ok() && self.renewed.wait_for(|renewed| *renewed).await.is_ok()
    }

    /// Waits until this replica no longer leads: the lease went to another, or its
    /// renewal was not seen within the renew deadline.
    pub async fn lost(&mut self) {
        let _ = self.renewed.wait_for(|renewed| *renewed).await;
        tokio::select! {
            _ = self.state.wait_for(|leader| !*leader) => {}
            _ = self.renewed.wait_for(|renewed| !*renewed) => {
                tracing::error!("the lease's renewal was not seen within the renew deadline");
            }
        }
    }

    /// A gate that closes the moment leadership is in doubt, for every writer to check.
    pub fn writes(&self) -> WriteGate {
        WriteGate(Some(self.renewed.clone()))
    }

    /// Lets go of the Lease (if held), so that a standby takes over at once.
    pub async fn release(self) {
        self.keeper.abort();
        // Closing the channel makes the manager release the Lease and end.
        drop(self.state);
        match tokio::time::timeout(RELEASE_GRACE, self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "releasing the leader lease"),
            Ok(Err(join)) => tracing::warn!(error = %join, "the leader election task failed"),
            Err(_) => tracing::warn!("releasing the leader lease took too long; it lapses on its own"),
        }
    }
}

/// Whether this process may write to JetStream and Kubernetes now: always without
/// leader election, and only while the lease's renewal is seen with it.
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Option<watch::Receiver<bool>>);

impl WriteGate {
    pub fn open(&self) -> bool {
        self.0.as_ref().is_none_or(|renewed| *renewed.borrow())
    }
}
