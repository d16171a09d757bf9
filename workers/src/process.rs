//! One worker process: NATS, the HTTP endpoints, the consume loops, and a shutdown
//! that stops pulling, settles in-flight work, then drains the connection.
//!
//! Workers start in any order: a worker started while NATS is down keeps trying to
//! connect, and one whose consumer or bucket does not exist yet (the operator has not
//! created it) waits for it; `/readyz` says not ready until everything is there.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{ConnectOptions, Event, ServerAddr, jetstream};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonArgs, ConsumeArgs, WorkerArgs};
use crate::consume::{self, Handler};
use crate::http::{self, Health};
use crate::topology::{self, Binding};
use futures::future::try_join_all;

pub struct Process {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub health: Arc<Health>,
    /// Cancelled by SIGTERM/SIGINT (or a test): stop taking work.
    pub stop: CancellationToken,
    http_stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    /// Where the HTTP endpoints listen (useful when the port was 0).
    pub http_addr: std::net::SocketAddr,
}

/// Connects to NATS, reporting connection changes on `health`. With `keep_trying`,
/// returns at once and connects in the background for as long as it takes.
pub async fn connect(
    common: &CommonArgs,
    health: Arc<Health>,
    keep_trying: bool,
) -> anyhow::Result<async_nats::Client> {
    let servers =
        common.nats_url.split(',').map(|url| url.trim().parse::<ServerAddr>()).collect::<Result<Vec<_>, _>>()?;
    let mut options = ConnectOptions::new().name("jetway-worker").event_callback(move |event| {
        let health = health.clone();
        async move {
            match event {
                Event::Connected => health.set_ready(true),
                Event::Disconnected => health.set_ready(false),
                _ => {}
            }
            tracing::info!(%event, "NATS connection");
        }
    });
    if let Some(path) = &common.nats_creds {
        options = options.credentials_file(path).await?;
    }
    if keep_trying {
        options = options.retry_on_initial_connect().max_reconnects(None);
    }
    Ok(options.connect(servers).await?)
}

impl Process {
    /// Connects and starts serving `/healthz`, `/readyz`, `/metrics` and `routes`.
    pub async fn start(
        common: &CommonArgs,
        stop: CancellationToken,
        routes: impl FnOnce(&jetstream::Context, &Arc<Health>) -> Router,
    ) -> anyhow::Result<Self> {
        let health = Arc::new(Health::default());
        let client = connect(common, health.clone(), true).await?;
        if client.connection_state() == async_nats::connection::State::Connected {
            health.set_ready(true);
        }
        let jetstream = jetstream::new(client.clone());
        let listener = TcpListener::bind(common.http_addr).await?;
        let http_addr = listener.local_addr()?;
        let app = http::router(health.clone()).merge(routes(&jetstream, &health));
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(
            axum::serve(listener, app).with_graceful_shutdown(http_stop.clone().cancelled_owned()).into_future(),
        );
        tracing::info!(%http_addr, "serving health and metrics");
        Ok(Self { client, jetstream, health, stop, http_stop, http, http_addr })
    }

    /// Runs `handler` on each of the worker's consumers until the stop, then finishes.
    pub async fn work<H: Handler>(
        self,
        worker: &'static str,
        args: &WorkerArgs,
        defaults: &[Binding<'_>],
        handler: H,
    ) -> anyhow::Result<()> {
        let (common, consume) = (&args.common, &args.consume);
        let handler = Arc::new(handler);
        let this = &self;
        let loops = consume.bindings(defaults).into_iter().map(|binding| {
            let handler = handler.clone();
            async move {
                let what = format!("the consumer {} on {}", binding.durable, binding.stream);
                let consumer = this.eventually(&what, || this.consumer(common, consume, &binding)).await?;
                let metrics = this.health.metrics.for_loop(worker);
                let config = consume.loop_config(worker);
                consume::run(this.jetstream.clone(), consumer, handler, config, metrics, this.stop.clone()).await
            }
        });
        try_join_all(loops).await?;
        self.finish().await
    }

    /// `attempt`'s answer, asked again (with a growing pause, and not ready meanwhile)
    /// until it has one or the process is stopped: for what a worker needs before it
    /// can work, which NATS or the operator may not have ready yet.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let _waiting = self.health.waiting();
        let mut pause = Duration::from_millis(100);
        loop {
            match attempt().await {
                Ok(found) => return Ok(found),
                Err(error) => tracing::warn!(error = format!("{error:#}"), retry_in = ?pause, "waiting for {what}"),
            }
            tokio::select! {
                () = self.stop.cancelled() => anyhow::bail!("stopped while waiting for {what}"),
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// The durable consumer `binding` names; created first with `--create-topology`.
    async fn consumer(
        &self,
        common: &CommonArgs,
        consume: &ConsumeArgs,
        binding: &Binding<'_>,
    ) -> anyhow::Result<PullConsumer> {
        if common.create_topology {
            topology::ensure_streams(&self.jetstream, common.replicas.into()).await?;
            return topology::ensure_consumer(&self.jetstream, binding, &consume.consumer_settings()).await;
        }
        let stream = self.jetstream.get_stream(binding.stream).await?;
        stream
            .get_consumer(binding.durable)
            .await
            .map_err(|error| anyhow::anyhow!("consumer {} on stream {}: {error}", binding.durable, binding.stream))
    }

    /// After the loops returned: flush what is still buffered for the server (acks,
    /// naks), close the connection, and stop serving.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.health.set_ready(false);
        if let Err(error) = self.client.drain().await {
            tracing::warn!(%error, "draining the NATS connection failed");
        }
        self.http_stop.cancel();
        self.http.await??;
        tracing::info!("stopped");
        Ok(())
    }
}
