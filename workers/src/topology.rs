//! The pipeline's streams, consumers and buckets, for running the workers without
//! the operator (tests, the benchmark, a laptop). On Kubernetes the Stream and
//! Consumer objects in `examples/` declare the same and Jetway keeps them; only the
//! KV buckets, which no Jetway kind declares, are always created by their workers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use crate::{audit, inventory, payment};

/// A worker's durable consumer: its name, its stream and the subjects it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    pub stream: &'a str,
    pub durable: &'a str,
    /// Empty: the whole stream.
    pub filter: &'a str,
}

pub const PAYMENT: [Binding<'static>; 1] =
    [Binding { stream: "ORDERS", durable: "payment", filter: "orders.created.v1" }];
pub const INVENTORY: [Binding<'static>; 1] =
    [Binding { stream: "ORDERS", durable: "inventory", filter: "orders.created.v1" }];
/// Audit reads every event stream whole, each through a consumer named `audit`.
pub const AUDIT: [Binding<'static>; 3] = [
    Binding { stream: "ORDERS", durable: "audit", filter: "" },
    Binding { stream: "PAYMENTS", durable: "audit", filter: "" },
    Binding { stream: "INVENTORY", durable: "audit", filter: "" },
];

/// Tunables of the consumers created here.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub max_deliver: i64,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self { max_deliver: 5, ack_wait: Duration::from_secs(30), max_ack_pending: 20_000 }
    }
}

/// Creates the event streams, the dead-letter stream and the audit stream if absent.
pub async fn ensure_streams(jetstream: &jetstream::Context) -> anyhow::Result<()> {
    let event_stream = |name: &str, subjects: &str| stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    for config in [
        event_stream("ORDERS", "orders.>"),
        event_stream("PAYMENTS", "payments.>"),
        event_stream("INVENTORY", "inventory.>"),
        stream::Config { deny_delete: true, ..event_stream("DEAD_LETTERS", "deadletter.>") },
        audit::stream_config(),
    ] {
        jetstream.get_or_create_stream(config).await?;
    }
    Ok(())
}

/// Creates a worker's durable pull consumer if absent and returns it.
pub async fn ensure_consumer(
    jetstream: &jetstream::Context,
    binding: &Binding<'_>,
    settings: &ConsumerSettings,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = jetstream.get_stream(binding.stream).await?;
    let config = consumer::pull::Config {
        durable_name: Some(binding.durable.into()),
        filter_subject: binding.filter.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    };
    Ok(stream.get_or_create_consumer(binding.durable, config).await?)
}

/// The payment ledger, created if absent.
pub async fn ledger(jetstream: &jetstream::Context) -> anyhow::Result<kv::Store> {
    bucket(jetstream, payment::LEDGER_BUCKET, "One entry per order: the outcome of its payment").await
}

/// The stock bucket, created if absent, with atomic batches allowed on its stream.
pub async fn stock(jetstream: &jetstream::Context) -> anyhow::Result<kv::Store> {
    let store =
        bucket(jetstream, inventory::STOCK_BUCKET, "Available stock per SKU and the decision per order").await?;
    let mut stream = jetstream.get_stream(&store.stream_name).await?;
    let config = stream.info().await?.config.clone();
    if !config.allow_atomic_publish {
        jetstream.update_stream(stream::Config { allow_atomic_publish: true, ..config }).await?;
    }
    Ok(store)
}

async fn bucket(jetstream: &jetstream::Context, name: &str, description: &str) -> anyhow::Result<kv::Store> {
    match jetstream.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(error) if error.kind() == jetstream::context::KeyValueErrorKind::GetBucket => Ok(jetstream
            .create_key_value(kv::Config {
                bucket: name.into(),
                description: description.into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?),
        Err(error) => Err(error.into()),
    }
}
