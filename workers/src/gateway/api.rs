//! The gateway's HTTP routes: `POST /v1/charges` behind the API key, `GET /stats`
//! and `GET /healthz`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::answer::{Answer, Reply};
use super::stats::Stats;
use super::{Gateway, IDEMPOTENCY_KEY};

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/charges", post(create_charge))
        .route_layer(middleware::from_fn_with_state(gateway.clone(), require_api_key))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateway)
}

async fn create_charge(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Reply {
    let key = headers.get(IDEMPOTENCY_KEY).cloned();
    // A charge once begun runs to its end even if the client hangs up, as at a real
    // gateway: it is made and saved, and its key is never left held.
    let charge = tokio::spawn(async move { gateway.charge(key.as_ref(), &body).await });
    charge.await.unwrap_or_else(|error| Answer::internal(&format!("the charge failed: {error}")).fresh())
}

#[derive(Deserialize)]
struct StatsQuery {
    #[serde(default)]
    detail: bool,
}

async fn stats(State(gateway): State<Arc<Gateway>>, Query(query): Query<StatsQuery>) -> Json<Stats> {
    Json(gateway.stats(query.detail))
}

async fn require_api_key(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if gateway.authorizes(given) { next.run(request).await } else { Answer::invalid_api_key().fresh().into_response() }
}
