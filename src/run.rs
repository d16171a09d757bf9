//! One operator process: connect to Kubernetes and NATS, serve the HTTP endpoints,
//! and run until the shutdown token is cancelled. The binary and the integration
//! tests call the same [`run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

use crate::connection::{Pool, Pooled};
use crate::controller::{self, Context, Settings};
use crate::http::{self, Health};
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
}

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let kube = kube::Client::try_from(config.kube).map_err(RunError::KubeClient)?;
    let version = kube.apiserver_version().await.map_err(RunError::KubeUnreachable)?;
    tracing::info!(version = %version.git_version, "connected to Kubernetes");

    let last_error = LastError::default();
    let nats = config.nats.connect("jetway", last_error.clone()).await?;
    let health = Arc::new(Health::default());
    let listener =
        http::bind(config.http_addr).await.map_err(|source| RunError::Bind { addr: config.http_addr, source })?;
    tracing::info!(addr = %config.http_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(http::serve(listener, health.clone(), shutdown.clone()));

    let jetstream = config.nats.jetstream(nats.clone());
    let default = Pooled { client: nats.clone(), jetstream: jetstream.clone(), last_error };
    let ctx = Arc::new(Context::new(
        kube,
        Pool::new(default, health.metrics.clone()),
        config.controllers,
        health.metrics.clone(),
        shutdown.clone(),
    ));
    let streams = tokio::spawn(controller::stream::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let consumers = tokio::spawn(controller::consumer::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let lag = tokio::spawn(ctx.lag.clone().run(ctx.settings.lag_interval, shutdown.clone()));
    let external_metrics = match &config.external_metrics {
        Some((addr, certificate)) => {
            let front_proxy = crate::extmetrics::FrontProxy::from_cluster(&ctx.client).await?;
            let (bound, task) =
                crate::extmetrics::serve(*addr, certificate, front_proxy, ctx.lag.clone(), shutdown.clone()).await?;
            tracing::info!(addr = %bound, "serving the external metrics API");
            Some(task)
        }
        None => None,
    };
    let pools = tokio::spawn(controller::workerpool::run(ctx.clone(), config.namespace.clone(), shutdown.clone()));
    let connections = tokio::spawn(controller::connection::run(ctx, config.namespace, shutdown.clone()));

    tokio::select! {
        () = wait_for_jetstream(&jetstream) => health.set_ready(true),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancelled().await;
    health.set_ready(false);
    // Bounded, so that a stuck request cannot outlast the pod's grace period.
    let tasks = [
        ("stream", streams),
        ("consumer", consumers),
        ("connection", connections),
        ("workerpool", pools),
        ("lag poller", lag),
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
