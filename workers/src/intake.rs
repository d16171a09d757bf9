//! Intake: `POST /orders` validates an order and answers 202 only once JetStream has
//! stored `orders.created.v1.<customerId>.<orderId>`.
//!
//! The client names the order: `orderId` is required and unique per customer. The
//! event is stored only if its subject holds none yet, so a client that sends the same
//! order again (after a timeout, a 503, or days later) gets the original acceptance
//! back, and an id already used for a different order is answered 409. Nothing but
//! `application/json` is read (415).

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::events::{Event, LineItem, OrderCreated, is_identifier, now};
use crate::http::Health;
use crate::metrics::RequestLabels;
use crate::publish::{Stored, publish_once};
use crate::trace;

/// Lines in one order, at most.
pub const MAX_ITEMS: usize = 100;
/// Units of one line, at most.
pub const MAX_QUANTITY: u32 = 10_000;

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    /// The client's id for the order, unique per customer: the same order sent again
    /// under it is created once.
    pub order_id: Option<String>,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub currency: String,
}

/// A 400's or 409's body: the field at fault and what is wrong with it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub error: String,
}

impl Invalid {
    fn new(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self { field: field.into(), error: error.into() }
    }
}

/// The body of a 202.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub order_id: String,
    /// Where JetStream stored the event.
    pub stream: String,
    pub sequence: u64,
    /// True when this order had been accepted before (a retry): the answer is the
    /// original acceptance.
    pub duplicate: bool,
}

/// Parses and checks an order; the error names the first field at fault.
pub fn validate(body: &[u8]) -> Result<OrderCreated, Invalid> {
    let request: OrderRequest = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(|error| {
            let path = error.path().to_string();
            let field = if path == "." { String::new() } else { path };
            Invalid::new(field, error.into_inner().to_string())
        })?;
    let order_id = match request.order_id {
        Some(id) if is_identifier(&id) => id,
        Some(_) => return Err(Invalid::new("orderId", "must be 1 to 64 letters, digits, '-' or '_'")),
        None => {
            return Err(Invalid::new(
                "orderId",
                "is required: the client's id for the order, so that a retry creates it once",
            ));
        }
    };
    if !is_identifier(&request.customer_id) {
        return Err(Invalid::new("customerId", "must be 1 to 64 letters, digits, '-' or '_'"));
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Invalid::new("currency", "must be an ISO 4217 code such as EUR"));
    }
    if request.items.is_empty() || request.items.len() > MAX_ITEMS {
        return Err(Invalid::new("items", format!("must hold 1 to {MAX_ITEMS} lines")));
    }
    let mut total: u64 = 0;
    for (index, item) in request.items.iter().enumerate() {
        if !is_identifier(&item.sku) {
            return Err(Invalid::new(format!("items[{index}].sku"), "must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Invalid::new(format!("items[{index}].quantity"), format!("must be 1 to {MAX_QUANTITY}")));
        }
        total = u64::from(item.quantity)
            .checked_mul(item.unit_price_cents)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| Invalid::new(format!("items[{index}].unitPriceCents"), "the order's total is too large"))?;
    }
    Ok(OrderCreated {
        order_id,
        customer_id: request.customer_id,
        items: request.items,
        currency: request.currency,
        total_cents: total,
        created_at: now(),
    })
}

struct Intake {
    jetstream: jetstream::Context,
    health: Arc<Health>,
}

/// `POST /orders`.
pub fn routes(jetstream: &jetstream::Context, health: &Arc<Health>) -> Router {
    let intake = Arc::new(Intake { jetstream: jetstream.clone(), health: health.clone() });
    Router::new().route("/orders", post(create_order)).with_state(intake)
}

async fn create_order(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = tracing::info_span!("POST /orders", trace_id = tracing::field::Empty);
    trace::continue_from(&span, &opentelemetry_http::HeaderExtractor(&headers));
    create_order_in_span(&intake, &headers, &body).instrument(span).await
}

async fn create_order_in_span(intake: &Intake, headers: &HeaderMap, body: &Bytes) -> Response {
    let started = Instant::now();
    let response = if !is_json(headers) {
        let error = "orders are read as application/json only";
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(serde_json::json!({ "error": error }))).into_response()
    } else {
        match validate(body) {
            Err(invalid) => (StatusCode::BAD_REQUEST, Json(invalid)).into_response(),
            Ok(order) => match store(&intake.jetstream, &order).await {
                Ok(Ok(accepted)) => {
                    intake.health.metrics.order_publish_duration.observe(started.elapsed().as_secs_f64());
                    (StatusCode::ACCEPTED, Json(accepted)).into_response()
                }
                Ok(Err(conflict)) => (StatusCode::CONFLICT, Json(conflict)).into_response(),
                Err(error) => {
                    tracing::warn!(order = %order.order(), error = %error, "order not stored");
                    let error = format!("the order could not be stored; retry with the same orderId: {error:#}");
                    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": error }))).into_response()
                }
            },
        }
    };
    intake.health.metrics.orders_answered.get_or_create(&RequestLabels { status: response.status().as_u16() }).inc();
    response
}

/// `Content-Type: application/json`, parameters such as `charset` allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let value = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    value.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Stores the order unless its customer already used its id: then the original
/// acceptance when it is the same order, or the conflict when it is another.
async fn store(jetstream: &jetstream::Context, order: &OrderCreated) -> anyhow::Result<Result<Accepted, Invalid>> {
    let payload = serde_json::to_vec(order)?;
    let subject = order.subject();
    let ack = match publish_once(jetstream, subject.clone(), async_nats::HeaderMap::new(), payload.into()).await? {
        Stored::New(ack) => ack,
        Stored::Existing => return original(jetstream, order, &subject).await,
    };
    Ok(Ok(Accepted { order_id: order.order_id.clone(), stream: ack.stream, sequence: ack.sequence, duplicate: false }))
}

/// The order stored under `subject`, compared with `order`.
async fn original(
    jetstream: &jetstream::Context,
    order: &OrderCreated,
    subject: &str,
) -> anyhow::Result<Result<Accepted, Invalid>> {
    let stream = jetstream.stream_by_subject(subject).await?;
    let stored = jetstream.get_stream_no_info(&stream).await?.get_last_raw_message_by_subject(subject).await?;
    let first: OrderCreated = serde_json::from_slice(&stored.payload)?;
    if (&first.items, &first.currency) != (&order.items, &order.currency) {
        let error = format!("customer {} already used this id for a different order", order.customer_id);
        return Ok(Err(Invalid::new("orderId", error)));
    }
    Ok(Ok(Accepted { order_id: order.order_id.clone(), stream, sequence: stored.sequence, duplicate: true }))
}

#[cfg(test)]
mod tests;
