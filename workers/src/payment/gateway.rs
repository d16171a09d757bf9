//! The payment gateway boundary: a charge request in, a charge or a refusal out, over
//! HTTP in the shape payment providers use (Stripe's): `POST <url>/v1/charges`,
//! form-encoded, `Authorization: Bearer <API key>`, an `Idempotency-Key` under which
//! the provider answers every repeat with the first answer.
//!
//! Only a definite answer settles an order: a charge (200), a decline (402) or a
//! request the provider refuses as invalid (400). Anything else (a timeout, a 5xx, a
//! 409 for the same key in flight, a 401 for a wrong key) may or may not have charged,
//! so it is retried under the same key, which the provider answers with what it did.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tracing::Instrument;

use crate::events::Cents;
use crate::trace;

/// A charge request; the gateway answers the same key with the same charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount_cents: Cents,
    /// ISO 4217, as the order has it; sent lower-case.
    pub currency: String,
    /// The order, `<customerId>.<orderId>`, sent as `metadata[order]`.
    pub order: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Approved {
        charge_id: String,
    },
    /// Nothing was taken, for good.
    Declined {
        reason: String,
    },
}

/// The gateway gave no definite answer; ask again later under the same key.
#[derive(Debug, thiserror::Error)]
#[error("payment gateway unavailable: {0}")]
pub struct GatewayUnavailable(pub String);

pub trait Gateway: Send + Sync + 'static {
    fn charge(&self, request: &ChargeRequest) -> impl Future<Output = Result<Charge, GatewayUnavailable>> + Send;
}

impl<G: Gateway> Gateway for std::sync::Arc<G> {
    fn charge(&self, request: &ChargeRequest) -> impl Future<Output = Result<Charge, GatewayUnavailable>> + Send {
        G::charge(self, request)
    }
}

/// A payment provider reached over HTTP(S).
pub struct HttpGateway {
    client: reqwest::Client,
    charges: reqwest::Url,
    api_key: Option<String>,
}

impl HttpGateway {
    /// The provider at `url` (its API root, such as `https://api.stripe.com`), each
    /// call given at most `timeout`.
    pub fn new(url: &str, api_key: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        // One process-wide TLS provider, the one kube uses too; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = reqwest::Url::parse(url).map_err(|error| anyhow::anyhow!("--gateway-url {url}: {error}"))?;
        let charges = base.join("v1/charges").map_err(|error| anyhow::anyhow!("--gateway-url {url}: {error}"))?;
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout.min(Duration::from_secs(5)));
        Ok(Self { client: client.build()?, charges, api_key })
    }
}

#[derive(Deserialize)]
struct ChargeAnswer {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    param: Option<String>,
}

impl Gateway for HttpGateway {
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayUnavailable> {
        let span = tracing::info_span!("POST /v1/charges", order = %request.order);
        self.charge_in_span(request).instrument(span).await
    }
}

impl HttpGateway {
    async fn charge_in_span(&self, request: &ChargeRequest) -> Result<Charge, GatewayUnavailable> {
        let amount = request.amount_cents.to_string();
        let currency = request.currency.to_ascii_lowercase();
        let form = [("amount", amount.as_str()), ("currency", &currency), ("metadata[order]", &request.order)];
        let mut call = (self.client.post(self.charges.clone()))
            .headers(trace::http_headers())
            .header("Idempotency-Key", &request.idempotency_key);
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let unavailable = |error: reqwest::Error| GatewayUnavailable(error.without_url().to_string());
        let response = call.form(&form).send().await.map_err(unavailable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unavailable)?;
        answer(status, &body)
    }
}

/// What one HTTP answer of the provider means.
fn answer(status: u16, body: &[u8]) -> Result<Charge, GatewayUnavailable> {
    let unreadable =
        |error: serde_json::Error| GatewayUnavailable(format!("HTTP {status} with an unreadable body: {error}"));
    if (200..300).contains(&status) {
        let charge: ChargeAnswer = serde_json::from_slice(body).map_err(unreadable)?;
        return match charge.status.as_str() {
            "succeeded" => Ok(Charge::Approved { charge_id: charge.id }),
            "failed" => Ok(Charge::Declined { reason: format!("charge {} failed", charge.id) }),
            other => Err(GatewayUnavailable(format!("charge {} is {other}", charge.id))),
        };
    }
    let error = serde_json::from_slice::<ErrorAnswer>(body).map(|answer| answer.error);
    match (status, error) {
        (402, Ok(error)) => {
            let code = error.decline_code.or(error.code).unwrap_or_else(|| "declined".into());
            Ok(Charge::Declined { reason: format!("{code}: {}", error.message) })
        }
        (402, Err(_)) => Ok(Charge::Declined { reason: "declined".into() }),
        // An invalid request was refused before anything was charged; a key reused with
        // other parameters is not that: the first use may have charged.
        (400, Ok(error)) if error.kind == "invalid_request_error" => {
            let param = error.param.map(|param| format!(" ({param})")).unwrap_or_default();
            Ok(Charge::Declined { reason: format!("refused: {}{param}", error.message) })
        }
        (_, Ok(error)) => Err(GatewayUnavailable(format!("HTTP {status} {}: {}", error.kind, error.message))),
        (_, Err(_)) => Err(GatewayUnavailable(format!("HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definite_answers_settle_an_order() {
        let charged = answer(200, br#"{"id":"ch_1","object":"charge","status":"succeeded"}"#).unwrap();
        assert_eq!(charged, Charge::Approved { charge_id: "ch_1".into() });
        let declined = br#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#;
        assert!(
            matches!(answer(402, declined).unwrap(), Charge::Declined { reason } if reason.starts_with("insufficient_funds"))
        );
        let invalid =
            br#"{"error":{"type":"invalid_request_error","message":"Invalid currency: xyz","param":"currency"}}"#;
        assert!(matches!(answer(400, invalid).unwrap(), Charge::Declined { reason } if reason.contains("(currency)")));

        let reused = br#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#;
        let in_use = br#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use","message":"in use"}}"#;
        for (status, body) in [
            (400, &reused[..]),
            (409, &in_use[..]),
            (401, br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}"#),
            (500, br#"{"error":{"type":"api_error","message":"boom"}}"#),
            (502, b"<html>bad gateway</html>"),
            (200, b"{not json"),
        ] {
            assert!(answer(status, body).is_err(), "HTTP {status} is retried, not settled");
        }
    }
}
