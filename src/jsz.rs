//! What a NATS system holds for one account, read with one JSZ request that every
//! server answers (`$SYS.REQ.SERVER.PING.JSZ`), through a client of the system
//! account: every stream with its configuration and state, and every consumer,
//! whatever their number. Each server reports what it holds; a stream's and a
//! consumer's figures are taken from its leader, since followers report no pending
//! (nats-server 2.14.1 and later).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use serde::Deserialize;

const JSZ: &str = "$SYS.REQ.SERVER.PING.JSZ";
const USER_INFO: &str = "$SYS.REQ.USER.INFO";

#[derive(Debug, thiserror::Error)]
pub enum JszError {
    #[error("asking the servers: {0}")]
    Request(String),
    #[error("the answer does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("no server answered")]
    NoAnswer,
}

/// A client of the system account beside a client of the account it reads for.
pub struct SystemAccess {
    system: async_nats::Client,
    regular: async_nats::Client,
    /// The account the regular client is in, as the servers name it.
    account: tokio::sync::OnceCell<String>,
}

/// One account's streams, and the consumers of each, as their leaders report them.
#[derive(Debug, Default)]
pub struct Holdings {
    pub streams: Vec<stream::Info>,
    pub consumers: HashMap<String, Vec<consumer::Info>>,
}

#[derive(Deserialize)]
struct Answer<T> {
    server: Server,
    data: Option<T>,
    error: Option<Refusal>,
}

#[derive(Deserialize)]
struct Server {
    name: String,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct UserInfo {
    account: String,
}

#[derive(Deserialize)]
struct JsInfo {
    #[serde(default)]
    meta_cluster: Option<Meta>,
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    cluster_size: usize,
}

#[derive(Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Deserialize)]
struct StreamDetail {
    #[serde(flatten)]
    info: stream::Info,
    #[serde(default)]
    consumer_detail: Vec<consumer::Info>,
}

impl SystemAccess {
    pub fn new(system: async_nats::Client, regular: async_nats::Client) -> Self {
        Self { system, regular, account: tokio::sync::OnceCell::new() }
    }

    /// The regular client's account, asked once.
    async fn account(&self) -> Result<&str, JszError> {
        let account = self
            .account
            .get_or_try_init(|| async {
                let reply = self
                    .regular
                    .request(USER_INFO, Vec::new().into())
                    .await
                    .map_err(|e| JszError::Request(e.to_string()))?;
                let answer: Answer<UserInfo> = serde_json::from_slice(&reply.payload)?;
                refused(answer.error)?;
                answer.data.map(|info| info.account).ok_or(JszError::NoAnswer)
            })
            .await?;
        Ok(account)
    }

    /// Everything the account holds, from every server that answers within `wait`
    /// (all of them, in a cluster whose size the answers give, end it sooner).
    pub async fn holdings(&self, wait: Duration) -> Result<Holdings, JszError> {
        let account = self.account().await?;
        let request = serde_json::json!({"account": account, "streams": true, "consumer": true, "config": true});
        let inbox = self.system.new_inbox();
        let mut answers = self.system.subscribe(inbox.clone()).await.map_err(|e| JszError::Request(e.to_string()))?;
        self.system
            .publish_with_reply(JSZ, inbox, serde_json::to_vec(&request)?.into())
            .await
            .map_err(|e| JszError::Request(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut expected = 1;
        let mut reports = Vec::new();
        while reports.len() < expected {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await else { break };
            let answer: Answer<JsInfo> = serde_json::from_slice(&message.payload)?;
            refused(answer.error)?;
            let Some(data) = answer.data else { continue };
            expected = expected.max(data.meta_cluster.as_ref().map_or(1, |meta| meta.cluster_size));
            reports.push((answer.server.name, data));
        }
        let _ = answers.unsubscribe().await;
        if reports.is_empty() {
            return Err(JszError::NoAnswer);
        }
        Ok(merge(reports))
    }
}

fn refused(error: Option<Refusal>) -> Result<(), JszError> {
    error.map_or(Ok(()), |refusal| Err(JszError::Refused(refusal.description)))
}

/// One view from the servers' reports: each stream and consumer as its leader (or,
/// with none reporting, the first server) sees it.
fn merge(reports: Vec<(String, JsInfo)>) -> Holdings {
    let leads =
        |cluster: Option<&Option<String>>, server: &str| cluster.is_none_or(|leader| leader.as_deref() == Some(server));
    let mut streams: HashMap<String, (bool, stream::Info)> = HashMap::new();
    let mut consumers: HashMap<(String, String), (bool, consumer::Info)> = HashMap::new();
    for (server, info) in reports {
        for detail in info.account_details.into_iter().flat_map(|account| account.stream_detail) {
            let name = detail.info.config.name.clone();
            let leader = leads(detail.info.cluster.as_ref().map(|c| &c.leader), &server);
            for consumer in detail.consumer_detail {
                let leader = leads(consumer.cluster.as_ref().map(|c| &c.leader), &server);
                let key = (name.clone(), consumer.name.clone());
                if consumers.get(&key).is_none_or(|(had_leader, _)| leader && !had_leader) {
                    consumers.insert(key, (leader, consumer));
                }
            }
            if streams.get(&name).is_none_or(|(had_leader, _)| leader && !had_leader) {
                streams.insert(name, (leader, detail.info));
            }
        }
    }
    let mut holdings =
        Holdings { streams: streams.into_values().map(|(_, info)| info).collect(), ..Default::default() };
    for ((stream, _), (_, consumer)) in consumers {
        holdings.consumers.entry(stream).or_default().push(consumer);
    }
    holdings
}
