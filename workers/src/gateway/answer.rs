//! The gateway's answers in Stripe's shapes: a status and a JSON body, kept as text so
//! that a saved answer is replayed byte for byte.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::IDEMPOTENT_REPLAYED;
use super::params::{ChargeParams, ParamError};

/// What a charge request was answered, as saved under its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// An answer on its way out; `replayed` adds `Idempotent-Replayed: true`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub answer: Answer,
    pub replayed: bool,
}

/// A charge object, the body of a successful charge.
#[derive(Serialize)]
struct ChargeObject<'a> {
    id: &'a str,
    object: &'static str,
    amount: u64,
    currency: &'a str,
    status: &'static str,
    paid: bool,
    created: i64,
    metadata: &'a BTreeMap<String, String>,
    description: Option<&'a str>,
}

impl Answer {
    fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        Self { status: status.as_u16(), body: body.to_string() }
    }

    fn error(status: StatusCode, error: serde_json::Value) -> Self {
        Self::json(status, &json!({ "error": error }))
    }

    /// 200: the succeeded charge `id`.
    pub fn charged(id: &str, params: &ChargeParams, created: OffsetDateTime) -> Self {
        let charge = ChargeObject {
            id,
            object: "charge",
            amount: params.amount,
            currency: &params.currency,
            status: "succeeded",
            paid: true,
            created: created.unix_timestamp(),
            metadata: &params.metadata,
            description: params.description.as_deref(),
        };
        // A struct of strings, numbers and a string map always serializes.
        let body = serde_json::to_string(&charge).unwrap_or_default();
        Self { status: StatusCode::OK.as_u16(), body }
    }

    /// 402: the card was declined; the failed charge `id` is recorded all the same.
    pub fn declined(id: &str) -> Self {
        Self::error(
            StatusCode::PAYMENT_REQUIRED,
            json!({
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "charge": id,
            }),
        )
    }

    /// 400: a parameter is missing or wrong.
    pub fn invalid_param(error: &ParamError) -> Self {
        let mut body = json!({ "type": "invalid_request_error", "message": error.message, "param": error.param });
        if let Some(code) = error.code {
            body["code"] = code.into();
        }
        Self::error(StatusCode::BAD_REQUEST, body)
    }

    /// 400: the request is wrong in something that is not a body parameter.
    pub fn invalid_request(message: &str) -> Self {
        Self::error(StatusCode::BAD_REQUEST, json!({ "type": "invalid_request_error", "message": message }))
    }

    /// 401: no API key or the wrong one.
    pub fn invalid_api_key() -> Self {
        Self::error(
            StatusCode::UNAUTHORIZED,
            json!({ "type": "invalid_request_error", "message": "Invalid API Key provided" }),
        )
    }

    /// 400: an idempotency key reused with other parameters.
    pub fn idempotency_mismatch() -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            json!({
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            }),
        )
    }

    /// 409: another request with this idempotency key is being processed.
    pub fn key_in_use() -> Self {
        Self::error(
            StatusCode::CONFLICT,
            json!({
                "type": "idempotency_error",
                "code": "idempotency_key_in_use",
                "message": "There is currently another in-progress request using this Idempotency-Key; retry this request later.",
            }),
        )
    }

    /// 503: a simulated outage; nothing was done.
    pub fn outage() -> Self {
        Self::error(StatusCode::SERVICE_UNAVAILABLE, json!({ "type": "api_error", "message": "simulated outage" }))
    }

    /// 502: a simulated lost answer; the charge was made and saved.
    pub fn lost_answer() -> Self {
        Self::error(StatusCode::BAD_GATEWAY, json!({ "type": "api_error", "message": "simulated lost answer" }))
    }

    /// 500: the gateway failed; nothing was saved.
    pub fn internal(message: &str) -> Self {
        Self::error(StatusCode::INTERNAL_SERVER_ERROR, json!({ "type": "api_error", "message": message }))
    }

    pub fn fresh(self) -> Reply {
        Reply { answer: self, replayed: false }
    }

    pub fn replayed(self) -> Reply {
        Reply { answer: self, replayed: true }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.answer.body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_object_has_stripes_fields_in_stripes_order() {
        let params = ChargeParams::parse(b"amount=2999&currency=EUR&metadata[order]=o-1").unwrap();
        let created = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let answer = Answer::charged("ch_1", &params, created);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body,
            r#"{"id":"ch_1","object":"charge","amount":2999,"currency":"eur","status":"succeeded","paid":true,"created":1700000000,"metadata":{"order":"o-1"},"description":null}"#
        );
    }

    #[test]
    fn a_bad_parameter_is_named_in_the_error() {
        let error = ChargeParams::parse(b"currency=eur").unwrap_err();
        let body: serde_json::Value = serde_json::from_str(&Answer::invalid_param(&error).body).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "amount");
        assert_eq!(body["error"]["code"], "parameter_missing");
    }

    #[test]
    fn a_decline_names_its_failed_charge() {
        let answer = Answer::declined("ch_2");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(answer.status, 402);
        assert_eq!(body["error"]["decline_code"], "generic_decline");
        assert_eq!(body["error"]["charge"], "ch_2");
    }
}
