//! The payment gateway simulator (`jetway-gateway`) run as a child process.
//!
//! Each [`Gateway`] has a private state directory and a fixed address, so it can be
//! SIGKILLed and started again on the same journal at the same address.

use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jetway_testground::wait::until;
use jetway_workers::gateway::stats::Stats;
use jetway_workers::gateway::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{EVENTUALLY, POLL, http_get};

pub const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A `jetway-gateway` process and the state it keeps.
pub struct Gateway {
    state: tempfile::TempDir,
    addr: std::net::SocketAddr,
    child: Option<Child>,
}

/// One answer of `POST /v1/charges`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// It carried `Idempotent-Replayed: true`.
    pub replayed: bool,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("a JSON body, not {:?}: {e}", self.body))
    }
}

impl Gateway {
    /// Starts a gateway on a new state with `flags`, and waits until it is up.
    pub async fn start(flags: &[&str]) -> Self {
        let state = tempfile::tempdir().expect("a state directory");
        let mut gateway = Self { state, addr: jetway_testground::wait::own_address().unwrap(), child: None };
        gateway.start_again(flags).await;
        gateway
    }

    /// Starts the gateway (again, after [`Gateway::kill`]) on the same state and
    /// address with `flags`, and waits until it is up.
    pub async fn start_again(&mut self, flags: &[&str]) {
        assert!(self.child.is_none(), "the gateway is still running");
        let child = Command::new(env!("CARGO_BIN_EXE_jetway-gateway"))
            .args(["--listen", &self.addr.to_string()])
            .arg("--state")
            .arg(self.journal())
            .env("JETWAY_LOG", std::env::var("JETWAY_TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()))
            .args(flags)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting jetway-gateway");
        self.child = Some(child);
        let healthz = format!("{}/healthz", self.url());
        until("the gateway to be up", EVENTUALLY, POLL, || async {
            Ok(http_get(&healthz).await?.0.eq(&200).then_some(()))
        })
        .await
        .unwrap();
    }

    /// Ends the process with SIGKILL: no chance to write anything more.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("a running gateway");
        kill(Pid::from_raw(child.id().expect("running") as i32), Signal::SIGKILL).unwrap();
        child.wait().await.unwrap();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.state.path().join("journal.jsonl")
    }

    /// `GET /stats?detail=true`.
    pub async fn stats(&self) -> Stats {
        let (status, body) = http_get(&format!("{}/stats?detail=true", self.url())).await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats, not {body}: {e}"))
    }

    /// `POST /v1/charges` with a form body, under idempotency key `key` if given.
    pub async fn charge(&self, key: Option<&str>, form: &str) -> Answer {
        let mut headers = vec![FORM];
        headers.extend(key.map(|key| (IDEMPOTENCY_KEY, key)));
        self.post_charge(&headers, form).await
    }

    /// `POST /v1/charges` with exactly `headers`. Unlike [`super::http_request`], it
    /// keeps the one response header the tests read, `Idempotent-Replayed`.
    pub async fn post_charge(&self, headers: &[(&str, &str)], form: &str) -> Answer {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request = hyper::Request::builder().method("POST").uri(format!("{}/v1/charges", self.url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(form.to_owned()))).unwrap();
        let response = client.request(request).await.expect("an answer from the gateway");
        let status = response.status().as_u16();
        let replayed = response.headers().get(IDEMPOTENT_REPLAYED).is_some_and(|value| value == "true");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, replayed, body: String::from_utf8_lossy(&body).into_owned() }
    }
}
