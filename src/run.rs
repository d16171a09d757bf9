//! One operator process: connect to Kubernetes and NATS, serve the HTTP endpoints,
//! wait to lead (with leader election), then run the controllers until the shutdown
//! token is cancelled or the lease is lost. The binary and the integration tests call
//! the same [`run`].
//!
//! `/readyz` is true on a standby once Kubernetes and NATS are reachable, and on the
//! leader once every controller's cache is synced and JetStream answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

use crate::connection::{Pool, Pooled};
use crate::controller::{self, Context, Settings};
use crate::http::{self, Health};
use crate::leader::LeaderElection;
use crate::nats::{ConnectError, LastError, NatsSettings};

/// How long running reconciles may take to finish after shutdown starts.
const CONTROLLER_GRACE: Duration = Duration::from_secs(10);
/// How long flushing the NATS connection may take.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

pub struct Config {
    /// How to reach Kubernetes (in-cluster, KUBECONFIG, or built by a test).
    pub kube: kube::Config,
    /// The default NATS connection, for objects without a `connectionRef`.
    pub nats: NatsSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Watch only this namespace; `None` watches all.
    pub namespace: Option<String>,
    pub controllers: Settings,
    /// Where and with which certificate to serve the external metrics API; `None`
    /// serves none (another adapter owns the APIService).
    pub external_metrics: Option<(SocketAddr, crate::extmetrics::Certificate)>,
    /// Run only while holding this Lease; `None` runs at once, alone.
    pub leader_election: Option<LeaderElection>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error("reaching the Kubernetes API server")]
    KubeUnreachable(#[source] kube::Error),
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error("listening on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    ExternalMetrics(#[from] crate::extmetrics::ServeError),
    #[error("joining the leader election")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),
    #[error("labelling this replica's Pod")]
    LabelPod(#[source] kube::Error),
    #[error("lost the leader lease; stopped so that a fresh process starts as a standby")]
    LeadershipLost,
}

/// The kinds whose caches must be synced before the leader is ready.
const KINDS: [&str; 4] =
    [controller::stream::KIND, controller::consumer::KIND, controller::connection::KIND, controller::workerpool::KIND];

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    // The election has a client of its own: its renewals never queue behind a burst
    // of reconciles.
    let election_client = kube::Client::try_from(config.kube.clone()).map_err(RunError::KubeClient)?;
    let kube = kube::Client::try_from(config.kube).map_err(RunError::KubeClient)?;
    let version = kube.apiserver_version().await.map_err(RunError::KubeUnreachable)?;
    tracing::info!(version = %version.git_version, "connected to Kubernetes");

    let last_error = LastError::default();
    let nats = config.nats.connect("jetway", last_error.clone()).await?;
    let health = Arc::new(Health::default());
    let listener =
        http::bind(config.http_addr).await.map_err(|source| RunError::Bind { addr: config.http_addr, source })?;
    tracing::info!(addr = %config.http_addr, "serving /metrics, /healthz and /readyz");
    let server_stop = shutdown.child_token();
    let server = tokio::spawn(http::serve(listener, health.clone(), server_stop.clone()));

    // A standby: connected, ready, and writing nothing until it leads.
    let mut leadership = match &config.leader_election {
        Some(election) => {
            election.label_pod(&kube, false).await.map_err(RunError::LabelPod)?;
            let mut leadership = election.join(election_client).await.map_err(RunError::LeaderElection)?;
            health.set_ready(true);
            tracing::info!(lease = %election.lease, identity = %election.identity, "waiting to lead");
            tokio::select! {
                acquired = leadership.acquired() => if !acquired {
                    server_stop.cancel();
                    stop_server(server).await?;
                    return Err(RunError::LeadershipLost);
                },
                () = shutdown.cancelled() => {
                    leadership.release().await;
                    return stop_server(server).await;
                }
            }
            health.set_ready(false);
            election.label_pod(&kube, true).await.map_err(RunError::LabelPod)?;
            tracing::info!(lease = %election.lease, identity = %election.identity, "leading");
            Some(leadership)
        }
        None => None,
    };
    health.metrics.leader.set(1);
    // Controllers stop on shutdown, or when the lease is lost.
    let shutdown = shutdown.child_token();

    let jetstream = config.nats.jetstream(nats.clone());
    let system = config.nats.connect_system("jetway-system", last_error.clone()).await?;
    let system = system.map(|system| Arc::new(crate::jsz::SystemAccess::new(system, nats.clone())));
    let default = Pooled { client: nats.clone(), jetstream: jetstream.clone(), last_error, system };
    let mut ctx = Context::new(
        kube,
        Pool::new(default, health.metrics.clone()),
        config.controllers,
        health.metrics.clone(),
        shutdown.clone(),
    );
    ctx.writes = leadership.as_ref().map(|l| l.writes()).unwrap_or_default();
    let ctx = Arc::new(ctx);
    let streams = tokio::spawn(controller::stream::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let consumers = tokio::spawn(controller::consumer::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let inventory = tokio::spawn(ctx.inventory.clone().run(shutdown.clone()));
    let external_metrics = match &config.external_metrics {
        Some((addr, certificate)) => {
            let front_proxy = crate::extmetrics::FrontProxy::from_cluster(&ctx.client).await?;
            let (bound, task) =
                crate::extmetrics::serve(*addr, certificate, front_proxy, ctx.inventory.clone(), shutdown.clone())
                    .await?;
            tracing::info!(addr = %bound, "serving the external metrics API");
            Some(task)
        }
        None => None,
    };
    let pools = tokio::spawn(controller::workerpool::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let ctx_synced = ctx.clone();
    let connections = tokio::spawn(controller::connection::run(ctx, config.namespace, shutdown.clone()));

    tokio::select! {
        () = async { tokio::join!(wait_for_jetstream(&jetstream), ctx_synced.synced.wait(&KINDS)); } => health.set_ready(true),
        () = shutdown.cancelled() => {}
    }
    let mut lost = false;
    match &mut leadership {
        Some(leadership) => tokio::select! {
            () = leadership.lost() => {
                tracing::error!("lost the leader lease; stopping");
                lost = true;
            }
            () = shutdown.cancelled() => {}
        },
        None => shutdown.cancelled().await,
    }
    shutdown.cancel();
    health.set_ready(false);
    // Bounded, so that a stuck request cannot outlast the pod's grace period.
    let tasks = [
        ("stream", streams),
        ("consumer", consumers),
        ("connection", connections),
        ("workerpool", pools),
        ("inventory", inventory),
    ];
    for (controller, mut task) in tasks {
        match tokio::time::timeout(CONTROLLER_GRACE, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) => tracing::error!(error = %join, controller, "a controller failed"),
            Err(_) => {
                tracing::warn!(controller, "a reconcile did not finish in time; stopping it");
                task.abort();
            }
        }
    }
    match tokio::time::timeout(DRAIN_GRACE, nats.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "draining the NATS connection"),
        Err(_) => tracing::warn!("draining the NATS connection took too long; closing it"),
    }
    if let Some(task) = external_metrics {
        match task.await {
            Ok(result) => result.map_err(RunError::Serve)?,
            Err(join) => tracing::error!(error = %join, "the external metrics task failed"),
        }
    }
    // Only now, with every writer stopped, may a standby take over.
    health.metrics.leader.set(0);
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    if lost {
        server_stop.cancel();
        stop_server(server).await?;
        return Err(RunError::LeadershipLost);
    }
    stop_server(server).await
}

async fn stop_server(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), RunError> {
    match server.await {
        Ok(result) => result.map_err(RunError::Serve)?,
        Err(join) => tracing::error!(error = %join, "the HTTP server task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits, retrying with backoff for as long as it takes, until the JetStream API of
/// the default connection answers, and logs what the account holds.
async fn wait_for_jetstream(jetstream: &async_nats::jetstream::Context) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let account = (|| jetstream.query_account())
        .retry(backoff)
        .notify(|err, next| tracing::warn!(error = %err, retry_in = ?next, "JetStream is not answering yet"))
        .await;
    match account {
        Ok(account) => tracing::info!(
            streams = account.streams,
            consumers = account.consumers,
            memory_bytes = account.memory,
            storage_bytes = account.storage,
            "connected to JetStream"
        ),
        Err(err) => tracing::error!(error = %err, "JetStream never answered"),
    }
}
