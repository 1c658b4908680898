//! The HTTP API (axum): offenses, dead letters, metrics, health.
//!
//! Everything but `GET /healthz` needs `Authorization: Bearer <token>`; the token is compared
//! by its SHA-256 hash (the store keeps only hashes). Store reads run on blocking threads with
//! their own SQLite connection. Architecture invariant: only this module knows HTTP routes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{DeadLetter, Offense, OffenseFilter, OffenseStatus, Store, StoreError};
use crate::telemetry::Metrics;

/// Stored events returned with one offense at most.
pub const MAX_EVENTS_PER_DETAIL: u64 = 1000;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The SQLite file to read.
    pub store_path: PathBuf,
    /// SHA-256 of the accepted bearer token.
    pub token_sha256: [u8; 32],
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Largest page a list returns.
    pub max_page_size: u64,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/v1/offenses", get(list_offenses))
        .route("/api/v1/offenses/{id}", get(get_offense))
        .route("/api/v1/dead-letters", get(list_dead_letters))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

/// An API error: a status and a JSON body `{"error": "..."}`. Internal details are logged,
/// not returned.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store read failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable".into())
    }
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| hash_token(t.trim()));
    match presented {
        Some(h) if constant_time_eq(&h, &state.token_sha256) => next.run(request).await,
        _ => {
            state
                .metrics
                .counter(
                    "vigil_api_unauthorized_total",
                    "API requests refused for a missing or wrong token.",
                    &[],
                )
                .inc();
            let mut resp = ApiError(StatusCode::UNAUTHORIZED, "missing or invalid bearer token".into())
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
            resp
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such route".into())
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn with_store<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let path = state.store_path.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::open_reader(&path)?;
        f(&store)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "store task failed".into()))?
    .map_err(ApiError::from)
}

/// Query of `GET /api/v1/offenses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffenseQuery {
    /// `open` or `closed`.
    pub status: Option<OffenseStatus>,
    /// Only offenses with at least this magnitude.
    pub min_magnitude: Option<u8>,
    /// RFC 3339: only offenses with events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Page size (default 50, at most `api.max_page_size`).
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: Option<u64>,
}

/// A page of results.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many rows match in all.
    pub total: u64,
    /// The page size used.
    pub limit: u64,
    /// The offset used.
    pub offset: u64,
}

fn page_size(requested: Option<u64>, max: u64) -> Result<u64, ApiError> {
    match requested {
        None => Ok(50.min(max)),
        Some(0) => Err(ApiError(StatusCode::BAD_REQUEST, "limit must be at least 1".into())),
        Some(n) if n > max => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit must be at most {max}"),
        )),
        Some(n) => Ok(n),
    }
}

async fn list_offenses(
    State(state): State<ApiState>,
    query: Result<Query<OffenseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<Offense>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let filter = OffenseFilter {
        status: q.status,
        min_magnitude: q.min_magnitude,
        since: q.since,
        limit,
        offset,
    };
    let (items, total) = with_store(&state, move |s| s.list_offenses(&filter)).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/offenses/{id}`: the offense and its stored contributing events.
#[derive(Debug, Serialize, Deserialize)]
pub struct OffenseDetail {
    /// The offense.
    #[serde(flatten)]
    pub offense: Offense,
    /// Stored contributing events (at most `offenses.max_events_per_offense`).
    pub events: Vec<vigil_parsers::Event>,
}

async fn get_offense(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OffenseDetail>, ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError(StatusCode::BAD_REQUEST, "malformed offense id".into()));
    }
    let found = with_store(&state, move |s| {
        let Some(offense) = s.get_offense(&id)? else {
            return Ok(None);
        };
        let events = s.offense_events(&offense.id, MAX_EVENTS_PER_DETAIL)?;
        Ok(Some(OffenseDetail { offense, events }))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such offense".into()))
}

/// Query of `GET /api/v1/dead-letters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only this reason (`pri`, `invalid_utf8`, `frame_too_long`, ...).
    pub reason: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: Option<u64>,
}

async fn list_dead_letters(
    State(state): State<ApiState>,
    query: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let reason = q.reason.filter(|r| r.len() <= 64);
    let (items, total) =
        with_store(&state, move |s| s.list_dead_letters(reason.as_deref(), limit, offset)).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}
