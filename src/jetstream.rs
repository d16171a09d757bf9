//! The JetStream layer: server answers become `Observed*` values, plans are executed,
//! and failures are classified by async-nats error kinds and JetStream error codes,
//! never by message text. It decides nothing.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, Info};
use async_nats::jetstream::{self, Context, ErrorCode};

use crate::api::stream::{ClusterState, ReplicaState, StreamState};
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
        Self { observed: ObservedStream { config: info.config.clone() }, state, cluster }
    }
}

/// The stream's report, or `None` when the server has no stream of that name.
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

pub async fn create_stream(js: &Context, config: Config) -> Result<StreamReport, JetStreamError> {
    let stream = js.create_stream(config).await.map_err(stream_write_error)?;
    Ok(StreamReport::from(stream.cached_info()))
}

pub async fn update_stream(js: &Context, config: Config) -> Result<StreamReport, JetStreamError> {
    let info = js.update_stream(config).await.map_err(stream_write_error)?;
    Ok(StreamReport::from(&info))
}

/// Deletes the stream; one already gone counts as deleted.
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
