//! The JetStream layer: server answers become `Observed*` values, plans are executed,
//! and failures are classified by async-nats error kinds and JetStream error codes,
//! never by message text. It decides nothing.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, Info};
use async_nats::jetstream::{self, Context, ErrorCode, consumer};

use crate::api::consumer::ConsumerState;
use crate::api::stream::{ClusterState, ReplicaState, StreamState};
use crate::plan::consumer::ObservedConsumer;
use crate::plan::loss::Contents;
use crate::plan::stream::ObservedStream;

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// The server could not be asked: disconnected, no responders, timed out.
    #[error("JetStream did not answer: {0}")]
    Unavailable(String),
    /// The server answered with an error code: it refused the request.
    #[error("the server refused it: {detail}")]
    Refused { code: u64, detail: String },
}

impl JetStreamError {
    fn refused(error: &jetstream::Error) -> Self {
        Self::Refused { code: error.error_code().0, detail: error.to_string() }
    }
}

/// A stream as the server reports it: its configuration and its state.
pub struct StreamReport {
    pub observed: ObservedStream,
    pub state: StreamState,
    pub cluster: Option<ClusterState>,
}

impl From<&Info> for StreamReport {
    fn from(info: &Info) -> Self {
        let state = StreamState {
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            consumer_count: info.state.consumer_count as u64,
        };
        let cluster = info.cluster.as_ref().map(|c| ClusterState {
            leader: c.leader.clone(),
            replicas: c
                .replicas
                .iter()
                .map(|p| ReplicaState { name: p.name.clone(), current: p.current, lag: p.lag })
                .collect(),
        });
        let oldest = (info.state.messages > 0)
            .then(|| time::OffsetDateTime::now_utc() - info.state.first_timestamp)
            .and_then(|age| std::time::Duration::try_from(age).ok());
        let contents = Contents { messages: info.state.messages, bytes: info.state.bytes, oldest, per_subject: None };
        Self { observed: ObservedStream { config: info.config.clone(), contents }, state, cluster }
    }
}

impl StreamReport {
    /// What the stream's status shows that moves: its configuration and its state.
    /// Not its cluster, which a standalone server's stream list leaves out; a new
    /// leader shows at the object's next look.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.observed.config, &self.state)
    }
}

/// What a status shows of a server object, in two parts: a change in the first
/// (the configuration) wakes the controller at once, one in the second (the figures)
/// at most once per metrics interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub config: u64,
    pub figures: u64,
}

impl Fingerprint {
    /// Of a configuration, less the metadata the server adds to some answers and not
    /// to others (`_nats.*`), and of figures.
    pub fn of(config: &impl serde::Serialize, figures: &impl serde::Serialize) -> Self {
        let mut config = serde_json::to_value(config).unwrap_or_default();
        if let Some(metadata) = config.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            metadata.retain(|key, _| !key.starts_with(crate::plan::SERVER_METADATA_PREFIX));
        }
        Self { config: hash(&config), figures: hash(figures) }
    }
}

/// A hash of `value`'s JSON form with every object's keys in order: configurations
/// hold hash maps (metadata), which serialize in a different order each time.
pub fn hash(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(value: &serde_json::Value, hasher: &mut impl Hasher) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                keys.len().hash(hasher);
                for key in keys {
                    key.hash(hasher);
                    feed(&map[key], hasher);
                }
            }
            serde_json::Value::Array(items) => {
                items.len().hash(hasher);
                items.iter().for_each(|item| feed(item, hasher));
            }
            other => other.to_string().hash(hasher),
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    feed(&serde_json::to_value(value).unwrap_or_default(), &mut hasher);
    hasher.finish()
}

/// The stream's report, or `None` when the server has no stream of that name.
#[tracing::instrument(name = "STREAM.INFO", skip_all, fields(stream = name))]
pub async fn observe_stream(js: &Context, name: &str) -> Result<Option<StreamReport>, JetStreamError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(StreamReport::from(stream.cached_info()))),
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(None),
            GetStreamErrorKind::JetStream(e) => Err(JetStreamError::refused(&e)),
            _ => Err(JetStreamError::Unavailable(err.to_string())),
        },
    }
}

/// How many messages each subject of the stream holds (paged by the server).
#[tracing::instrument(name = "STREAM.INFO subjects", skip_all, fields(stream = name))]
pub async fn messages_per_subject(js: &Context, name: &str) -> Result<Vec<u64>, JetStreamError> {
    use futures::TryStreamExt;
    let unavailable = |err: &dyn std::fmt::Display| JetStreamError::Unavailable(err.to_string());
    let stream = js.get_stream(name).await.map_err(|e| unavailable(&e))?;
    let subjects = stream.info_with_subjects(">").await.map_err(|e| unavailable(&e))?;
    subjects.map_ok(|(_, count)| count as u64).try_collect().await.map_err(|e| unavailable(&e))
}

/// Creates the stream and reads it back: the create answer carries no cluster
/// figures, which the first resync would otherwise write into status as news.
#[tracing::instrument(name = "STREAM.CREATE", skip_all, fields(stream = %config.name))]
pub async fn create_stream(js: &Context, config: Config) -> Result<StreamReport, JetStreamError> {
    let mut stream = js.create_stream(config).await.map_err(stream_write_error)?;
    match stream.info().await {
        Ok(info) => Ok(StreamReport::from(info)),
        Err(_) => Ok(StreamReport::from(stream.cached_info())),
    }
}

#[tracing::instrument(name = "STREAM.UPDATE", skip_all, fields(stream = %config.name))]
pub async fn update_stream(js: &Context, config: Config) -> Result<StreamReport, JetStreamError> {
    let info = js.update_stream(config).await.map_err(stream_write_error)?;
    Ok(StreamReport::from(&info))
}

/// Deletes the stream; one already gone counts as deleted.
#[tracing::instrument(name = "STREAM.DELETE", skip_all, fields(stream = name))]
pub async fn delete_stream(js: &Context, name: &str) -> Result<(), JetStreamError> {
    match js.delete_stream(name).await {
        Ok(_) => Ok(()),
        Err(err) => match err.kind() {
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(()),
            GetStreamErrorKind::JetStream(e) => Err(JetStreamError::refused(&e)),
            _ => Err(JetStreamError::Unavailable(err.to_string())),
        },
    }
}

fn stream_write_error(err: async_nats::jetstream::context::CreateStreamError) -> JetStreamError {
    match err.kind() {
        CreateStreamErrorKind::JetStream(e) => JetStreamError::refused(&e),
        _ => JetStreamError::Unavailable(err.to_string()),
    }
}

/// A consumer as the server reports it.
pub struct ConsumerReport {
    pub observed: ObservedConsumer,
    pub state: ConsumerState,
}

impl From<&consumer::Info> for ConsumerReport {
    fn from(info: &consumer::Info) -> Self {
        let state = ConsumerState {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting: info.num_waiting as u64,
            delivered_stream_sequence: info.delivered.stream_sequence,
            ack_floor_stream_sequence: info.ack_floor.stream_sequence,
        };
        Self { observed: ObservedConsumer { config: info.config.clone() }, state }
    }
}

impl ConsumerReport {
    /// What the consumer's status shows: its configuration and its state.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.observed.config, &self.state)
    }
}

/// What the server has under a consumer's name.
pub enum ConsumerLookup {
    Found(Box<ConsumerReport>),
    Missing,
    /// The stream itself does not exist (yet).
    NoStream,
}

#[tracing::instrument(name = "CONSUMER.INFO", skip_all, fields(stream = stream, consumer = name))]
pub async fn observe_consumer(js: &Context, stream: &str, name: &str) -> Result<ConsumerLookup, JetStreamError> {
    let request = format!("CONSUMER.INFO.{stream}.{name}");
    let response: Result<jetstream::response::Response<consumer::Info>, _> =
        js.request(request, &serde_json::json!({})).await;
    match response {
        Ok(jetstream::response::Response::Ok(info)) => Ok(ConsumerLookup::Found(Box::new(ConsumerReport::from(&info)))),
        Ok(jetstream::response::Response::Err { error }) => match error.error_code() {
            ErrorCode::CONSUMER_NOT_FOUND => Ok(ConsumerLookup::Missing),
            ErrorCode::STREAM_NOT_FOUND => Ok(ConsumerLookup::NoStream),
            _ => Err(JetStreamError::refused(&error)),
        },
        Err(err) => Err(JetStreamError::Unavailable(err.to_string())),
    }
}

/// Creates or updates the consumer (the server tells them apart by whether it exists).
#[tracing::instrument(name = "CONSUMER.CREATE", skip_all, fields(stream = stream, consumer = ?config.durable_name, create = create))]
pub async fn put_consumer(
    js: &Context,
    stream: &str,
    config: consumer::Config,
    create: bool,
) -> Result<ConsumerReport, JetStreamError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let action = if create { "create" } else { "update" };
    let request = format!("CONSUMER.CREATE.{stream}.{name}");
    let body = serde_json::json!({"stream_name": stream, "config": config, "action": action});
    let response: Result<jetstream::response::Response<consumer::Info>, _> = js.request(request, &body).await;
    let info = match response {
        Ok(jetstream::response::Response::Ok(info)) => info,
        Ok(jetstream::response::Response::Err { error }) => return Err(JetStreamError::refused(&error)),
        Err(err) => return Err(JetStreamError::Unavailable(err.to_string())),
    };
    // An update keeps the consumer's pause as it is; only the pause request moves it.
    if create || info.config.pause_until == config.pause_until {
        return Ok(ConsumerReport::from(&info));
    }
    pause_consumer(js, stream, &name, config.pause_until).await?;
    match observe_consumer(js, stream, &name).await? {
        ConsumerLookup::Found(report) => Ok(*report),
        _ => Err(JetStreamError::Unavailable(format!("the consumer {name} went away while it was paused"))),
    }
}

/// Pauses the consumer until `until`, or resumes it (`None`).
async fn pause_consumer(
    js: &Context,
    stream: &str,
    name: &str,
    until: Option<time::OffsetDateTime>,
) -> Result<(), JetStreamError> {
    #[derive(serde::Serialize)]
    struct Pause {
        #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        pause_until: Option<time::OffsetDateTime>,
    }
    let request = format!("CONSUMER.PAUSE.{stream}.{name}");
    let response: Result<jetstream::response::Response<serde_json::Value>, _> =
        js.request(request, &Pause { pause_until: until }).await;
    match response {
        Ok(jetstream::response::Response::Ok(_)) => Ok(()),
        Ok(jetstream::response::Response::Err { error }) => Err(JetStreamError::refused(&error)),
        Err(err) => Err(JetStreamError::Unavailable(err.to_string())),
    }
}

/// Deletes the consumer; one already gone, or whose stream is gone, counts as deleted.
#[tracing::instrument(name = "CONSUMER.DELETE", skip_all, fields(stream = stream, consumer = name))]
pub async fn delete_consumer(js: &Context, stream: &str, name: &str) -> Result<(), JetStreamError> {
    let request = format!("CONSUMER.DELETE.{stream}.{name}");
    let response: Result<jetstream::response::Response<serde_json::Value>, _> =
        js.request(request, &serde_json::json!({})).await;
    match response {
        Ok(jetstream::response::Response::Ok(_)) => Ok(()),
        Ok(jetstream::response::Response::Err { error })
            if matches!(error.error_code(), ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(())
        }
        Ok(jetstream::response::Response::Err { error }) => Err(JetStreamError::refused(&error)),
        Err(err) => Err(JetStreamError::Unavailable(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_does_not_depend_on_the_order_of_a_hash_map() {
        let config = |keys: &[&str]| Config {
            name: "ORDERS".into(),
            metadata: keys.iter().map(|k| (k.to_string(), "v".to_owned())).collect(),
            ..Default::default()
        };
        let keys: Vec<String> = (0..32).map(|n| format!("key-{n}")).collect();
        let forward: Vec<&str> = keys.iter().map(String::as_str).collect();
        let backward: Vec<&str> = forward.iter().rev().copied().collect();
        let (a, b) = (config(&forward), config(&backward));
        assert_eq!(Fingerprint::of(&a, &0), Fingerprint::of(&b, &0));
        assert_ne!(Fingerprint::of(&a, &0), Fingerprint::of(&config(&forward[1..]), &0));
        let with_server_metadata = config(&["key-0", "_nats.level"]);
        assert_eq!(Fingerprint::of(&with_server_metadata, &0), Fingerprint::of(&config(&["key-0"]), &0));
    }
}
