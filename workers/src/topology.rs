//! The pipeline's streams, consumers and buckets, for running the workers without
//! the operator (tests, the benchmark, a laptop). On Kubernetes the Stream and
//! Consumer objects in `examples/` declare the same and Jetway keeps them; only the
//! KV buckets, which no Jetway kind declares yet, are always created by their workers,
//! with the replicas `--replicas` gives (3 in the prod overlay).

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

/// Payment charges what inventory reserved.
pub const PAYMENT: [Binding<'static>; 1] =
    [Binding { stream: "INVENTORY", durable: "payment", filter: "inventory.reserved.v1.>" }];
/// Inventory reserves each order and releases what a failed payment held.
pub const INVENTORY: [Binding<'static>; 2] = [
    Binding { stream: "ORDERS", durable: "inventory", filter: "orders.created.v1.>" },
    Binding { stream: "PAYMENTS", durable: "inventory", filter: "payments.failed.v1.>" },
];
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

/// Creates the event streams, the dead-letter stream and the audit stream if absent,
/// each with `replicas`.
pub async fn ensure_streams(jetstream: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    // Events are stored once per subject (each names its order), so the duplicate
    // window only has to cover dead letters.
    let event_stream = |name: &str, subjects: &str| stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    };
    for config in [
        event_stream("ORDERS", "orders.>"),
        event_stream("PAYMENTS", "payments.>"),
        event_stream("INVENTORY", "inventory.>"),
        stream::Config { deny_delete: true, ..event_stream("DEAD_LETTERS", "deadletter.>") },
        audit::stream_config(),
    ] {
        jetstream.get_or_create_stream(stream::Config { num_replicas: replicas, ..config }).await?;
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

/// The payment ledger, created if absent, with `replicas`.
pub async fn ledger(jetstream: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    let description = "One entry per order: the intent to charge it, then the outcome";
    bucket(jetstream, payment::LEDGER_BUCKET, description, replicas, false).await
}

/// The stock bucket, created if absent, with `replicas` and atomic batches allowed on
/// its stream.
pub async fn stock(jetstream: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    let description = "Available stock per SKU and the decision per order";
    bucket(jetstream, inventory::STOCK_BUCKET, description, replicas, true).await
}

/// A KV bucket, created if absent; an existing one is brought to `replicas` (and to
/// atomic batches when `atomic`), the rest of it left as it is.
async fn bucket(
    jetstream: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
    atomic: bool,
) -> anyhow::Result<kv::Store> {
    let store = match jetstream.get_key_value(name).await {
        Ok(store) => store,
        Err(error) if error.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            let config = kv::Config {
                bucket: name.into(),
                description: description.into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            };
            jetstream.create_key_value(config).await?
        }
        Err(error) => return Err(error.into()),
    };
    let mut stream = jetstream.get_stream(&store.stream_name).await?;
    let config = stream.info().await?.config.clone();
    if config.num_replicas != replicas || (atomic && !config.allow_atomic_publish) {
        let allow_atomic_publish = config.allow_atomic_publish || atomic;
        jetstream.update_stream(stream::Config { num_replicas: replicas, allow_atomic_publish, ..config }).await?;
    }
    Ok(store)
}
