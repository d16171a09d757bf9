//! `jetway-gateway`: a payment service provider simulated in Stripe's shape, run as
//! its own process so that tests and benchmarks count charges at the gateway.
//!
//! `POST /v1/charges` goes through these steps:
//! 1. the API key, when one is set (401; [`api`]);
//! 2. a simulated outage at `failure_rate` (503): nothing charged, nothing saved;
//! 3. the `Idempotency-Key` header and the form parameters (pure, [`params`]; 400
//!    naming the parameter, nothing saved);
//! 4. the key claimed, or its saved answer found: replayed for the same parameters,
//!    a 400 for others, a 409 while another request holds it (pure, [`book`]);
//! 5. the latency slept, with the key held;
//! 6. the charge made: declined at `decline_rate`, its answer lost at
//!    `lost_answer_rate`;
//! 7. the charge written to the [`journal`] (I/O), then counted in the [`book`]
//!    and its answer saved under its key;
//! 8. the answer: the charge (200), the decline (402), or a 502 for a lost answer.
//!
//! Every answer of `/v1/charges` waits the latency, so a burst of requests behaves
//! the same whatever each one meets. One mutex guards the book and the journal; it is
//! never held across an await.

pub mod answer;
mod api;
pub mod book;
pub mod cli;
pub mod journal;
pub mod params;
pub mod stats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, ensure};
use axum::http::HeaderValue;
use rand::Rng;
use rand::distr::Alphanumeric;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use answer::{Answer, Reply};
use book::{ChargeBook, Claim};
use journal::{ChargeStatus, Journal, Record};
use params::ChargeParams;
use stats::Stats;

/// The request header of an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header, `true`, of an answer replayed for its idempotency key.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The metadata key naming the order a charge pays for; `/stats` counts by it.
pub const ORDER_METADATA_KEY: &str = "order";
/// Stripe's longest idempotency key.
const MAX_KEY_CHARS: usize = 255;

/// How the simulated gateway behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// The journal file.
    pub state: PathBuf,
    /// When set, `/v1` requests need `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    pub latency: Duration,
    /// The share of requests refused with a 503 before anything is done.
    pub failure_rate: f64,
    /// The share of charges declined.
    pub decline_rate: f64,
    /// The share of charges made whose answer is replaced by a 502.
    pub lost_answer_rate: f64,
    /// How long a charge and its idempotency key are kept.
    pub key_retention: Duration,
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        for (name, rate) in [
            ("failure_rate", self.failure_rate),
            ("decline_rate", self.decline_rate),
            ("lost_answer_rate", self.lost_answer_rate),
        ] {
            ensure!((0.0..=1.0).contains(&rate), "{name} must be between 0 and 1, got {rate}");
        }
        Ok(())
    }
}

/// The simulated gateway: its settings, and its book and journal under one lock.
pub struct Gateway {
    config: Config,
    inner: Mutex<Inner>,
}

struct Inner {
    book: ChargeBook,
    journal: Journal,
}

/// Where a charge request stands after the checks that need no waiting.
enum Step {
    Answered(Reply),
    Charge { key: Option<String>, params: ChargeParams },
}

impl Gateway {
    /// Loads the journal at `config.state` into a new book.
    pub fn open(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let (journal, records) = Journal::open(&config.state, config.key_retention, OffsetDateTime::now_utc())?;
        let mut book = ChargeBook::new(config.key_retention);
        for record in records {
            book.add(record);
        }
        Ok(Self { config, inner: Mutex::new(Inner { book, journal }) })
    }

    /// Whether an `Authorization` header value lets a request through.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        match &self.config.api_key {
            None => true,
            Some(expected) => authorization.and_then(|value| value.strip_prefix("Bearer ")) == Some(expected),
        }
    }

    /// Answers one charge request with its `Idempotency-Key` header and form body.
    pub async fn charge(&self, key: Option<&HeaderValue>, body: &[u8]) -> Reply {
        let step = self.begin(key, body);
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        match step {
            Step::Answered(reply) => reply,
            Step::Charge { key, params } => self.finish(key, params),
        }
    }

    /// The current counts; `detail` adds charges per order and per key.
    pub fn stats(&self, detail: bool) -> Stats {
        self.lock().book.stats(detail, OffsetDateTime::now_utc())
    }

    /// Steps 2 to 4: the outage, the request's checks, and the key.
    fn begin(&self, key: Option<&HeaderValue>, body: &[u8]) -> Step {
        if rand::rng().random_bool(self.config.failure_rate) {
            self.lock().book.count_outage();
            return Step::Answered(Answer::outage().fresh());
        }
        let key = match idempotency_key(key) {
            Ok(key) => key,
            Err(message) => return Step::Answered(Answer::invalid_request(&message).fresh()),
        };
        let params = match ChargeParams::parse(body) {
            Ok(params) => params,
            Err(error) => return Step::Answered(Answer::invalid_param(&error).fresh()),
        };
        let Some(key) = key else { return Step::Charge { key: None, params } };
        match self.lock().book.claim(&key, &params, OffsetDateTime::now_utc()) {
            Claim::New => Step::Charge { key: Some(key), params },
            Claim::Replay(answer) => Step::Answered(answer.replayed()),
            Claim::Mismatch => Step::Answered(Answer::idempotency_mismatch().fresh()),
            Claim::InFlight => Step::Answered(Answer::key_in_use().fresh()),
        }
    }

    /// Steps 6 to 8: the charge made, written, counted and answered.
    fn finish(&self, key: Option<String>, params: ChargeParams) -> Reply {
        let (declined, lost_answer) = {
            let mut rng = rand::rng();
            (rng.random_bool(self.config.decline_rate), rng.random_bool(self.config.lost_answer_rate))
        };
        let at = OffsetDateTime::now_utc();
        let charge_id = charge_id();
        let (status, answer) = if declined {
            (ChargeStatus::Failed, Answer::declined(&charge_id))
        } else {
            (ChargeStatus::Succeeded, Answer::charged(&charge_id, &params, at))
        };
        let record = Record { at, key, charge_id, status, lost_answer, params, answer: answer.clone() };
        let mut inner = self.lock();
        if let Err(error) = inner.journal.append(&record) {
            tracing::error!(error = format!("{error:#}"), "a charge could not be saved and was not made");
            if let Some(key) = &record.key {
                inner.book.release(key);
            }
            return Answer::internal("the gateway could not save the charge; nothing was charged").fresh();
        }
        inner.book.add(record);
        drop(inner);
        if lost_answer { Answer::lost_answer().fresh() } else { answer.fresh() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The book stays consistent through a panic elsewhere: each change is one step.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `Idempotency-Key` header's key, if given: 1 to 255 printable characters.
fn idempotency_key(value: Option<&HeaderValue>) -> Result<Option<String>, String> {
    let Some(value) = value else { return Ok(None) };
    let key = value.to_str().map_err(|_| "Idempotency-Key must be printable ASCII".to_owned())?;
    match key.len() {
        1..=MAX_KEY_CHARS => Ok(Some(key.to_owned())),
        length => Err(format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters long, got {length}")),
    }
}

/// A new charge id: `ch_` and 24 random letters and digits.
fn charge_id() -> String {
    let suffix: String = rand::rng().sample_iter(Alphanumeric).take(24).map(char::from).collect();
    format!("ch_{suffix}")
}

/// Loads the journal and serves the gateway on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let gateway = Arc::new(Gateway::open(config)?);
    let addr = listener.local_addr().context("reading the listening address")?;
    tracing::info!(%addr, "payment gateway simulator serving");
    axum::serve(listener, api::router(gateway))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the gateway's API")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_id_is_ch_and_24_letters_or_digits() {
        let id = charge_id();
        assert_eq!(id.len(), 27);
        assert!(id.starts_with("ch_") && id[3..].bytes().all(|byte| byte.is_ascii_alphanumeric()), "{id}");
        assert_ne!(charge_id(), id);
    }

    #[test]
    fn an_idempotency_key_is_one_to_255_characters() {
        let header = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(idempotency_key(None), Ok(None));
        assert_eq!(idempotency_key(Some(&header("order-1"))), Ok(Some("order-1".into())));
        assert!(idempotency_key(Some(&header(&"k".repeat(255)))).unwrap().is_some());
        let too_long = idempotency_key(Some(&header(&"k".repeat(256)))).unwrap_err();
        assert!(too_long.contains("Idempotency-Key") && too_long.contains("256"), "{too_long}");
        assert!(idempotency_key(Some(&header(""))).is_err());
    }

    #[test]
    fn a_rate_outside_zero_to_one_is_refused_naming_its_field() {
        let config = Config {
            state: "unused".into(),
            api_key: None,
            latency: Duration::ZERO,
            failure_rate: 0.0,
            decline_rate: 2.0,
            lost_answer_rate: 0.0,
            key_retention: Duration::from_secs(60),
        };
        let error = Gateway::open(config).err().unwrap().to_string();
        assert!(error.contains("decline_rate"), "{error}");
    }
}
