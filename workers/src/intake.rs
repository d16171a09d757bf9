//! Intake: `POST /orders` validates an order and answers 202 only once JetStream has
//! stored `orders.created.v1`. The order id is the message id, so a client that
//! retries with the same `orderId` (after a timeout, say) creates the order once.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::events::{Event, LineItem, OrderCreated, now};
use crate::http::Health;
use crate::metrics::RequestLabels;
use crate::publish::event_headers;
use crate::trace::{TRACEPARENT, TraceContext};

/// Lines in one order, at most.
pub const MAX_ITEMS: usize = 100;
/// Units of one line, at most.
pub const MAX_QUANTITY: u32 = 10_000;

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRequest {
    /// The client's id for the order; a retry with the same id creates it once.
    /// Generated when absent.
    pub order_id: Option<String>,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub currency: String,
}

/// A 400's body: the field at fault and what is wrong with it.
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
    /// True when the order id had been accepted before (a retry).
    pub duplicate: bool,
}

/// Ids and SKUs: what NATS subjects and KV keys can carry, and short.
fn is_identifier(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
        Some(id) if !is_identifier(&id) => {
            return Err(Invalid::new("orderId", "must be 1 to 64 letters, digits, '-' or '_'"));
        }
        Some(id) => id,
        None => Alphanumeric.sample_string(&mut rand::rng(), 20),
    };
    if request.customer_id.is_empty()
        || request.customer_id.len() > 64
        || request.customer_id.chars().any(char::is_control)
    {
        return Err(Invalid::new("customerId", "must be 1 to 64 printable characters"));
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
    let started = Instant::now();
    let trace = TraceContext::continue_from(headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()));
    let response = match validate(&body) {
        Err(invalid) => (StatusCode::BAD_REQUEST, Json(invalid)).into_response(),
        Ok(order) => match publish(&intake.jetstream, &order, &trace).await {
            Ok(accepted) => {
                intake.health.metrics.order_publish_duration.observe(started.elapsed().as_secs_f64());
                (StatusCode::ACCEPTED, Json(accepted)).into_response()
            }
            Err(error) => {
                tracing::warn!(order_id = %order.order_id, trace_id = %trace.trace_id(), error = %error, "order not stored");
                let error = format!("the order could not be stored; retry with the same orderId: {error}");
                (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": error }))).into_response()
            }
        },
    };
    intake.health.metrics.orders_answered.get_or_create(&RequestLabels { status: response.status().as_u16() }).inc();
    response
}

async fn publish(
    jetstream: &jetstream::Context,
    order: &OrderCreated,
    trace: &TraceContext,
) -> anyhow::Result<Accepted> {
    let payload = serde_json::to_vec(order)?;
    let headers = event_headers(&order.message_id(), trace);
    let ack = jetstream.publish_with_headers(OrderCreated::SUBJECT, headers, payload.into()).await?.await?;
    Ok(Accepted {
        order_id: order.order_id.clone(),
        stream: ack.stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}

#[cfg(test)]
mod tests;
