//! Leader election on a `coordination.k8s.io` Lease, with kube-lease-manager (server-side
//! apply on the Lease, so two replicas can never both take it).
//!
//! Only the leader writes: the controllers, the lag poller and the external metrics
//! API run on it alone. A standby stays connected and ready, and takes over once the
//! leader's lease lapses (at most the lease duration after the leader died) or at once
//! when the leader lets go on a clean stop. A leader that loses the lease stops, so a
//! fresh process starts as a standby.
//!
//! The leader labels its own Pod `jetway.dev/leader=true` (every replica writes
//! `false` first), so that a Service, the external metrics API's above all, can send
//! traffic to the leader only.

use std::time::Duration;

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
}

impl LeaderElection {
    /// Joins the election; the Lease is made if it does not exist.
    pub async fn join(&self, client: kube::Client) -> Result<Leadership, LeaseManagerError> {
        let seconds = |d: Duration| d.as_secs().max(1);
        let manager = LeaseManagerBuilder::new(client, &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(seconds(self.duration))
            .with_grace(seconds(self.renew_before).min(seconds(self.duration) - 1).max(1))
            .build()
            .await?;
        let (state, task) = manager.watch().await;
        Ok(Leadership { state, task })
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
    /// Waits until this replica leads; `false` if the election ended first.
    pub async fn acquired(&mut self) -> bool {
        self.state.wait_for(|leader| *leader).await.is_ok()
    }

    /// Waits until this replica no longer leads.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Lets go of the Lease (if held), so that a standby takes over at once.
    pub async fn release(self) {
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
