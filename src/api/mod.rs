//! The HTTP API (axum): offenses, dead letters, metrics, health, and the console's static files.
//!
//! Everything but `GET /healthz` and the console's static files (which hold no data) needs `Authorization: Bearer <token>`; the token is compared
//! by its SHA-256 hash (the store keeps only hashes). Store reads run on blocking threads with
//! their own SQLite connection. Architecture invariant: only this module knows HTTP routes.

mod context;
mod events;
pub mod lockout;
pub mod roles;
mod rules;
mod workflow;

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

use crate::store::{
    DeadLetter, Offense, OffenseFilter, OffenseNote, OffenseRule, OffenseStatus, Store, StoreError,
};
use crate::telemetry::Metrics;

/// Longest `POST /api/v1/ingest` waits for the spool to accept its records.
const INGEST_ACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Stored events returned with one offense at most.
pub const MAX_EVENTS_PER_DETAIL: u64 = 1000;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The SQLite file to read.
    pub store_path: PathBuf,
    /// The searchable event store of embedded mode (none: ClickHouse, or events not kept).
    pub events_path: Option<PathBuf>,
    /// The flow store (`flows.db`) in embedded mode; `None` when flows are not kept there.
    pub flows_path: Option<PathBuf>,
    /// SHA-256 of the accepted bearer token.
    pub token_sha256: [u8; 32],
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Largest page a list returns.
    pub max_page_size: u64,
    /// False once the engine thread has stopped: `/healthz` then answers 503.
    pub engine_alive: Arc<std::sync::atomic::AtomicBool>,
    /// Log sources.
    pub sources: Arc<crate::sources::Sources>,
    /// Where `POST /api/v1/ingest` puts records (none: the route answers 503).
    pub ingest: Option<crate::bus::memory::MemoryPublisher<crate::bus::RawRecord>>,
    /// Longest pushed line, as for syslog frames.
    pub max_message_bytes: usize,
    /// Largest `POST /api/v1/ingest` body.
    pub max_ingest_bytes: usize,
    /// Counts pushed records.
    pub ingest_received: crate::telemetry::Counter,
    /// Live reference data (none: the reference routes answer 503).
    pub reference: Option<Arc<crate::context::refdata::ReferenceData>>,
    /// Scaled-out mode: offenses and dead letters are read from ClickHouse, not SQLite.
    pub clickhouse: Option<Arc<crate::store::clickhouse::ClickHouseStore>>,
    /// SHA-256 of the token that may read `/api/v1/blocklist.txt` and nothing else.
    pub blocklist_token_sha256: Option<[u8; 32]>,
    /// The reference set `/api/v1/blocklist.txt` lists.
    pub block_set: String,
    /// `[[api.tokens]]`: (name, role, SHA-256).
    pub tokens: Arc<Vec<(String, roles::Role, [u8; 32])>>,
    /// Webhook endpoints (offense.closed is sent from here).
    pub webhooks: Arc<Vec<crate::webhook::WebhookConfig>>,
    /// Clients refused for guessing tokens.
    pub lockout: Arc<lockout::Lockout>,
    /// Rules changed while running (none: scaled out, the rule routes answer 501).
    pub rules: Option<Arc<crate::correlate::control::RulesControl>>,
    /// Records go through the burst spool: `POST /api/v1/ingest` answers once they are on it.
    pub ingest_acks: bool,
}

/// Who called: the token's name and role (set by the token middleware for the handlers).
#[derive(Debug, Clone)]
pub struct Caller {
    /// `admin` for `api.token`, else the `[[api.tokens]]` name.
    pub name: String,
    /// The role.
    pub role: roles::Role,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/v1/offenses", get(list_offenses))
        .route(
            "/api/v1/offenses/{id}",
            get(get_offense).patch(workflow::patch_offense),
        )
        .route(
            "/api/v1/offenses/{id}/notes",
            axum::routing::post(workflow::add_note),
        )
        .route("/api/v1/audit", get(workflow::list_audit))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(roles::openapi()) }),
        )
        .route("/api/v1/events", get(events::search_events))
        .route("/api/v1/rules", get(rules::list_rules))
        .route("/api/v1/rules/reload", axum::routing::post(rules::reload))
        .route(
            "/api/v1/rules/{name}/disable",
            axum::routing::post(rules::disable),
        )
        .route(
            "/api/v1/rules/{name}/enable",
            axum::routing::post(rules::enable),
        )
        .route("/api/v1/dead-letters", get(list_dead_letters))
        .route("/api/v1/flows", get(list_flows))
        .route("/api/v1/response/decisions", get(list_response_decisions))
        .route("/api/v1/sources", get(list_sources))
        .route("/api/v1/metrics/summary", get(metrics_summary))
        .route("/api/v1/assets", get(context::list_assets))
        .route("/api/v1/reference-sets", get(context::list_sets))
        .route("/api/v1/reference-sets/{name}", get(context::get_set))
        .route(
            "/api/v1/reference-sets/{name}/entries",
            axum::routing::post(context::add_to_set).delete(context::remove_from_set),
        )
        .route("/api/v1/reference-maps/{name}", get(context::get_map))
        .route(
            "/api/v1/reference-maps/{name}/entries",
            axum::routing::post(context::put_map_entry).delete(context::remove_map_entry),
        )
        .route(
            "/api/v1/ingest",
            axum::routing::post(ingest)
                .layer(axum::extract::DefaultBodyLimit::max(state.max_ingest_bytes)),
        )
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(console_index))
        .route("/console/app.js", get(console_js))
        .route("/console/style.css", get(console_css))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/blocklist.txt", get(blocklist))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::map_response(hardened))
        .with_state(state)
}

/// Headers on every answer: nothing of it is cached (offenses and events are sensitive), and
/// nothing is sniffed. No CORS header is ever sent: browsers keep other origins out. Errors are
/// JSON everywhere: a plain-text rejection from an extractor (a path that is not UTF-8, a
/// missing body type) becomes `{"error": ...}` like every other.
async fn hardened(response: Response) -> Response {
    let plain_error = (response.status().is_client_error() || response.status().is_server_error())
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    let mut response = if plain_error {
        let status = response.status();
        let text = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let text = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        ApiError(status, text).into_response()
    } else {
        response
    };
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
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

impl From<crate::store::clickhouse::ChError> for ApiError {
    fn from(e: crate::store::clickhouse::ChError) -> Self {
        tracing::error!(error = %e, "ClickHouse read failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store unavailable".into(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store read failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store unavailable".into(),
        )
    }
}

async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = std::time::Instant::now();
    if client.is_some_and(|ip| state.lockout.locked(ip, now)) {
        state
            .metrics
            .counter(
                "vigil_api_locked_out_total",
                "API requests refused because the client failed too many token checks.",
                &[],
            )
            .inc();
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed token checks; try again in a minute".into(),
        )
        .into_response();
    }
    let presented = presented_token(&headers);
    let caller = presented.and_then(|h| {
        if constant_time_eq(&h, &state.token_sha256) {
            return Some(Caller {
                name: "admin".into(),
                role: roles::Role::Admin,
            });
        }
        state
            .tokens
            .iter()
            .find(|(_, _, t)| constant_time_eq(&h, t))
            .map(|(name, role, _)| Caller {
                name: name.clone(),
                role: *role,
            })
    });
    match caller {
        Some(caller) => {
            let path = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            match roles::allowed(caller.role, request.method(), &path) {
                Some(true) => {
                    let mut request = request;
                    request.extensions_mut().insert(caller);
                    next.run(request).await
                }
                Some(false) => ApiError(
                    StatusCode::FORBIDDEN,
                    format!("the {:?} role may not call this route", caller.role).to_lowercase(),
                )
                .into_response(),
                None => {
                    tracing::error!(%path, "route without an access decision");
                    ApiError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "no access decision for this route".into(),
                    )
                    .into_response()
                }
            }
        }
        None => {
            if let Some(ip) = client {
                if state.lockout.fail(ip, now) {
                    tracing::warn!(client = %ip, "API client locked out after failed token checks");
                }
            }
            unauthorized(&state)
        }
    }
}

/// SHA-256 of the bearer token a request presents.
fn presented_token(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| hash_token(t.trim()))
}

/// The 401 answer to a missing or wrong token, counted.
fn unauthorized(state: &ApiState) -> Response {
    state
        .metrics
        .counter(
            "vigil_api_unauthorized_total",
            "API requests refused for a missing or wrong token.",
            &[],
        )
        .inc();
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or invalid bearer token".into(),
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"vigil\""),
    );
    resp
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(state): State<ApiState>) -> Response {
    if state.engine_alive.load(std::sync::atomic::Ordering::SeqCst) {
        Json(serde_json::json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "engine stopped" })),
        )
            .into_response()
    }
}

/// The console's static files, built into the binary. They hold no data (everything comes from
/// `/api/v1` with the token), so they are served without one, with headers that forbid framing,
/// sniffing and any script or connection that is not this origin.
const CONSOLE_INDEX: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/app.js");
const CONSOLE_CSS: &str = include_str!("console/style.css");

fn console_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn console_index() -> Response {
    console_file("text/html; charset=utf-8", CONSOLE_INDEX)
}

async fn console_js() -> Response {
    console_file("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn console_css() -> Response {
    console_file("text/css; charset=utf-8", CONSOLE_CSS)
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
    blocking(move || f(&Store::open_reader(&path)?)).await
}

/// Runs `f` on a writing connection (reference data changes).
async fn with_store_writer<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let path = state.store_path.clone();
    blocking(move || f(&mut Store::open(&path)?)).await
}

/// Runs store work `f` on the blocking pool, never on the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    on_blocking_pool(f).await?.map_err(ApiError::from)
}

/// [`blocking`], with the store's error left to the caller to answer.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<Result<T, StoreError>, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store task failed".into(),
        )
    })
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
    /// Only offenses indexed by this value (an address, a user, an API key).
    pub index_value: Option<String>,
    /// Only offenses this rule contributed to.
    pub rule: Option<String>,
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
        Some(0) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit must be at least 1".into(),
        )),
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
    if [&q.index_value, &q.rule]
        .into_iter()
        .flatten()
        .any(|v| v.len() > 256)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "index_value and rule are at most 256 bytes".into(),
        ));
    }
    let filter = OffenseFilter {
        status: q.status,
        min_magnitude: q.min_magnitude,
        since: q.since,
        index_value: q.index_value,
        rule: q.rule,
        limit,
        offset,
    };
    let (items, total) = match &state.clickhouse {
        Some(ch) => ch.list_offenses(&filter).await.map_err(ApiError::from)?,
        None => with_store(&state, move |s| s.list_offenses(&filter)).await?,
    };
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/offenses/{id}`: the offense, the rules that contributed, its notes and its
/// stored contributing events.
#[derive(Debug, Serialize, Deserialize)]
pub struct OffenseDetail {
    /// The offense.
    #[serde(flatten)]
    pub offense: Offense,
    /// Every rule that contributed, with its part (detections, events, author).
    pub rules: Vec<OffenseRule>,
    /// Analysts' notes, oldest first.
    pub notes: Vec<OffenseNote>,
    /// Stored contributing events, oldest first (at most `offenses.max_events_per_offense`, and
    /// at most [`MAX_EVENTS_PER_DETAIL`] in one answer).
    pub events: Vec<vigil_parsers::Event>,
    /// What happened to it, oldest first: first and last event, each rule's first and last
    /// match, creation, analysts' changes and notes, closing.
    pub timeline: Vec<TimelineEntry>,
}

/// One moment of an offense's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (event time for events and rule matches, wall clock for the rest).
    pub at: DateTime<Utc>,
    /// `event`, `rule`, `offense`, `note` or `analyst`.
    pub kind: String,
    /// What, in words.
    pub text: String,
}

/// Audit records read for one offense's timeline at most.
const MAX_TIMELINE_AUDIT: u64 = 500;

/// The timeline of an offense from its parts.
pub fn timeline(
    o: &Offense,
    rules: &[OffenseRule],
    notes: &[OffenseNote],
    audit: &[crate::store::AuditRecord],
) -> Vec<TimelineEntry> {
    let entry = |at, kind: &str, text: String| TimelineEntry {
        at,
        kind: kind.to_owned(),
        text,
    };
    let mut out = vec![
        entry(o.first_seen, "event", "first contributing event".into()),
        entry(
            o.created_at,
            "offense",
            format!("offense created by {} (magnitude {})", o.rule, o.magnitude),
        ),
    ];
    if o.event_count > 1 {
        out.push(entry(
            o.last_seen,
            "event",
            format!("last contributing event ({} in all)", o.event_count),
        ));
    }
    for r in rules {
        out.push(entry(
            r.first_seen,
            "rule",
            format!("{} first matched", r.title),
        ));
        if r.detections > 1 {
            out.push(entry(
                r.last_seen,
                "rule",
                format!("{} matched again ({} detections)", r.title, r.detections),
            ));
        }
    }
    // Analysts' changes and notes in the order the audit trail recorded them (a sort by time
    // alone could swap two changes of the same millisecond); notes without an audit record
    // (none are written that way) are placed by their time.
    let audited_notes = audit.iter().filter(|a| a.action == "offense.note").count();
    for n in notes.iter().skip(audited_notes) {
        out.push(entry(n.created_at, "note", format!("note by {}", n.author)));
    }
    for a in audit {
        if a.action == "offense.note" {
            out.push(entry(a.at, "note", format!("note by {}", a.actor)));
            continue;
        }
        let what = match a.action.as_str() {
            "offense.close" => "closed",
            "offense.reopen" => "reopened",
            "offense.assign" => "assigned",
            "offense.follow_up" => "follow-up flag changed",
            other => other,
        };
        let detail: serde_json::Value = serde_json::from_str(&a.detail).unwrap_or_default();
        let extra = match a.action.as_str() {
            "offense.close" => detail["closing_reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            "offense.assign" => detail["assignee"]
                .as_str()
                .map(|r| format!(" to {r}"))
                .unwrap_or_else(|| " to nobody".into()),
            _ => String::new(),
        };
        out.push(entry(
            a.at,
            "analyst",
            format!("{what}{extra} by {}", a.actor),
        ));
    }
    out.sort_by_key(|e| e.at);
    out
}

async fn get_offense(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<OffenseDetail>, ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "malformed offense id".into(),
        ));
    }
    if let Some(ch) = &state.clickhouse {
        let found = async {
            let Some(offense) = ch.get_offense(&id).await? else {
                return Ok(None);
            };
            let events = ch
                .offense_events(&offense.id, MAX_EVENTS_PER_DETAIL)
                .await?;
            let rules = ch.offense_rules(&offense.id).await?;
            Ok::<_, crate::store::clickhouse::ChError>(Some(OffenseDetail {
                timeline: timeline(&offense, &rules, &[], &[]),
                offense,
                rules,
                notes: Vec::new(),
                events,
            }))
        }
        .await
        .map_err(ApiError::from)?;
        return found
            .map(Json)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such offense".into()));
    }
    let found = with_store(&state, move |s| {
        let Some(offense) = s.get_offense(&id)? else {
            return Ok(None);
        };
        let events = s.offense_events(&offense.id, MAX_EVENTS_PER_DETAIL)?;
        let rules = s.offense_rules(&offense.id)?;
        let notes = s.offense_notes(&offense.id)?;
        let audit = s.audit_of(&offense.id, MAX_TIMELINE_AUDIT)?;
        Ok(Some(OffenseDetail {
            timeline: timeline(&offense, &rules, &notes, &audit),
            offense,
            rules,
            notes,
            events,
        }))
    })
    .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such offense".into()))
}

/// `GET /api/v1/sources`: every log source, most recently seen first, with its detected type,
/// EPS over the last minute, last seen and parse-failure rate.
/// `GET /api/v1/metrics/summary`: the figures a shift lead looks at first.
async fn metrics_summary(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &state.metrics;
    let c = |name: &str| m.counter_value(name, &[]);
    let sources = state.sources.snapshot(Utc::now());
    let eps: f64 = sources.iter().map(|s| s.eps).sum();
    let filter = OffenseFilter {
        status: Some(OffenseStatus::Open),
        min_magnitude: None,
        since: None,
        index_value: None,
        rule: None,
        limit: 1,
        offset: 0,
    };
    let open = if let Some(ch) = &state.clickhouse {
        ch.list_offenses(&filter).await?.1
    } else {
        with_store(&state, move |s| s.list_offenses(&filter))
            .await?
            .1
    };
    let text = m.render();
    let quantile =
        |q| crate::telemetry::histogram_quantile(&text, "vigil_offense_latency_seconds", q);
    let mut dead_by_reason = std::collections::BTreeMap::<String, u64>::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("vigil_parse_dead_letters_total{") else {
            continue;
        };
        let reason = rest
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("unknown");
        let n: u64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *dead_by_reason.entry(reason.to_owned()).or_default() += n;
    }
    Ok(Json(serde_json::json!({
        "eps": eps,
        "sources": sources.len(),
        "events_total": c("vigil_parse_events_total"),
        "dead_letters_total": c("vigil_parse_dead_letters_total"),
        "dead_letters_by_reason": dead_by_reason,
        "offenses": {
            "open": open,
            "created_total": c("vigil_offenses_created_total"),
            "updated_total": c("vigil_offenses_updated_total"),
        },
        "offense_latency_seconds": { "p50": quantile(0.5), "p99": quantile(0.99) },
        "dropped": {
            "collectors": c("vigil_collector_dropped_total"),
            "event_store": c("vigil_store_events_dropped_total"),
            "flow_store": c("vigil_store_flows_dropped_total"),
        },
        "rules_loaded": state.rules.as_ref().map(|r| r.view().rules.len()),
        "webhook_failures_total": c("vigil_webhook_failures_total"),
    })))
}

async fn list_sources(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let items = state.sources.snapshot(Utc::now());
    Json(serde_json::json!({ "total": items.len(), "items": items }))
}

/// `POST /api/v1/ingest`: one record per line of the body (gateway JSON access logs, syslog
/// lines, CEF...), put on the bus like syslog records, waiting for room when it is full.
/// Answers 202 with the number of records taken; 413 when the body is over
/// `api.max_ingest_bytes`.
async fn ingest(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    use crate::bus::Publisher;
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let Some(publisher) = state.ingest.clone() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest is not enabled".into(),
        ));
    };
    let body = axum::body::to_bytes(request.into_body(), state.max_ingest_bytes)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", state.max_ingest_bytes),
            )
        })?;
    let mut records = crate::collect::http::records_from_body(&body, peer, state.max_message_bytes);
    let n = records.len();
    // With the spool, 202 means accepted: the last record (so all before it) is on disk.
    let ack = state.ingest_acks.then(crate::bus::spool::Ack::default);
    if let (Some(last), Some(ack)) = (records.last_mut(), &ack) {
        last.ack = Some(ack.clone());
    }
    for (taken, r) in records.into_iter().enumerate() {
        if publisher.publish(r).await.is_err() {
            // Say how many lines were taken, so a client can resend only the rest.
            return Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": "shutting down", "accepted": taken })),
            )
                .into_response());
        }
        state.ingest_received.inc();
    }
    if let (Some(ack), true) = (ack, n > 0) {
        if tokio::time::timeout(INGEST_ACK_PATIENCE, ack.wait())
            .await
            .is_err()
        {
            return Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": "the records are queued but not yet accepted on disk: retrying may duplicate them",
                    "queued": n,
                })),
            )
                .into_response());
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": n })),
    )
        .into_response())
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
    let (items, total) = match &state.clickhouse {
        Some(ch) => ch
            .list_dead_letters(reason.as_deref(), limit, offset)
            .await
            .map_err(ApiError::from)?,
        None => {
            with_store(&state, move |s| {
                s.list_dead_letters(reason.as_deref(), limit, offset)
            })
            .await?
        }
    };
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// Query of a plain paged list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size.
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: Option<u64>,
}

async fn list_response_decisions(
    State(state): State<ApiState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::store::ResponseDecision>>, ApiError> {
    paged(&state, query, |s, limit, offset| {
        s.list_response_decisions(limit, offset)
    })
    .await
}

/// A plain paged list read from the embedded store: the query checked, the page size bounded.
pub(crate) async fn paged<T: Send + 'static>(
    state: &ApiState,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    list: impl FnOnce(&Store, u64, u64) -> Result<(Vec<T>, u64), StoreError> + Send + 'static,
) -> Result<Json<Page<T>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let (items, total) = with_store(state, move |s| list(s, limit, offset)).await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

/// `GET /api/v1/blocklist.txt`: the block set's live entries, one address or network a line,
/// for firewalls (an external dynamic list). Readable with the API token or with
/// `response.blocklist_token`, which reads nothing else.
async fn blocklist(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let presented = presented_token(&headers);
    let allowed = presented.is_some_and(|h| {
        constant_time_eq(&h, &state.token_sha256)
            || state
                .blocklist_token_sha256
                .is_some_and(|b| constant_time_eq(&h, &b))
    });
    if !allowed {
        return unauthorized(&state);
    }
    let Some(reference) = &state.reference else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no reference data in this process".into(),
        )
        .into_response();
    };
    let now = chrono::Utc::now();
    match reference.entries(&state.block_set) {
        Ok(entries) => {
            let mut lines: Vec<String> = entries
                .into_iter()
                .filter(|e| e.expires.is_none_or(|t| t > now))
                .map(|e| e.value)
                .collect();
            lines.dedup();
            let mut body = lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        Err(e) => ApiError(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

/// Query of `GET /api/v1/flows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    /// Only flows from or to this address.
    pub ip: Option<std::net::IpAddr>,
    /// Page size.
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: Option<u64>,
}

async fn list_flows(
    State(state): State<ApiState>,
    query: Result<Query<FlowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::store::StoredFlow>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let (items, total) = match &state.clickhouse {
        Some(ch) => ch
            .list_flows(q.ip, limit, offset)
            .await
            .map_err(ApiError::from)?,
        None => match state.flows_path.clone() {
            Some(path) => {
                blocking(move || {
                    crate::store::flows::FlowStore::open_reader(&path)?
                        .list_flows(q.ip, limit, offset)
                })
                .await?
            }
            None => (Vec::new(), 0),
        },
    };
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The handlers' state over a fresh store in `dir`: admin token `secret`, a firewall
    /// token, and one token per role named `<role>-token`.
    fn state(dir: &std::path::Path) -> ApiState {
        let store_path = dir.join("vigil.db");
        Store::open(&store_path).map(drop).unwrap_or_default();
        ApiState {
            events_path: Some(dir.join("events.db")),
            flows_path: Some(dir.join("flows.db")),
            store_path,
            token_sha256: hash_token("secret"),
            metrics: Metrics::new(),
            max_page_size: 100,
            engine_alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            sources: Arc::new(crate::sources::Sources::new(10, &Metrics::new())),
            ingest: None,
            max_message_bytes: 1024,
            max_ingest_bytes: 4096,
            ingest_received: crate::telemetry::Counter::default(),
            reference: None,
            clickhouse: None,
            blocklist_token_sha256: Some(hash_token("firewall-token-0123")),
            block_set: "blocked_ips".into(),
            tokens: Arc::new(
                [
                    ("ingest", roles::Role::Ingest),
                    ("viewer", roles::Role::Viewer),
                    ("analyst", roles::Role::Analyst),
                    ("responder", roles::Role::Responder),
                ]
                .iter()
                .map(|(n, r)| (n.to_string(), *r, hash_token(&format!("{n}-token"))))
                .collect(),
            ),
            webhooks: Arc::new(Vec::new()),
            lockout: Arc::default(),
            rules: None,
            ingest_acks: false,
        }
    }

    fn app(dir: &std::path::Path) -> Router {
        router(state(dir))
    }

    async fn status(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap_or_default())
            .await
            .map_err(|e| e.to_string());
        match resp {
            Ok(r) => (r.status(), r.headers().clone()),
            Err(e) => panic!("{e}"),
        }
    }

    /// OWASP API8: CORS stays closed (a preflight from another origin gets no allow header,
    /// nor does a simple request), errors are JSON without internal detail, and answers are
    /// not cached.
    #[tokio::test]
    async fn cors_is_closed_and_errors_say_nothing_internal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        let send = |req: Request<Body>| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
                let (parts, body) = resp.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                (
                    parts.status,
                    parts.headers,
                    String::from_utf8_lossy(&body).into_owned(),
                )
            }
        };
        let preflight = Request::builder()
            .method("OPTIONS")
            .uri("/api/v1/offenses")
            .header(header::ORIGIN, "https://evil.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap_or_default();
        let (_, headers, _) = send(preflight).await;
        assert!(
            headers
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{headers:?}"
        );
        let simple = Request::builder()
            .uri("/api/v1/offenses")
            .header(header::ORIGIN, "https://evil.example")
            .header(header::AUTHORIZATION, "Bearer secret")
            .body(Body::empty())
            .unwrap_or_default();
        let (status, headers, _) = send(simple).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
        assert_eq!(
            headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        // Broken input of every kind: a JSON error, no internals.
        let cases = [
            ("PATCH", "/api/v1/offenses/abc", "{not json"),
            ("PATCH", "/api/v1/offenses/abc", "{\"status\": 7}"),
            ("GET", "/api/v1/offenses?limit=-1", ""),
            ("GET", "/api/v1/offenses/%00%ff", ""),
            ("GET", "/api/v1/events?from=yesterday", ""),
            (
                "POST",
                "/api/v1/reference-sets/blocked_ips/entries",
                "[1,2,3]",
            ),
            ("GET", "/api/v1/no-such-route", ""),
        ];
        for (method, uri, body) in cases {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, "Bearer secret")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap_or_default();
            let (status, headers, text) = send(req).await;
            assert!(status.is_client_error(), "{method} {uri}: {status}");
            assert!(
                headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
                "{method} {uri}: {headers:?}"
            );
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {uri}: {text}: {e}"));
            assert!(json["error"].is_string(), "{method} {uri}: {text}");
            for leak in [
                "panicked",
                "src/",
                ".rs:",
                "sqlite",
                "rusqlite",
                "stack backtrace",
            ] {
                assert!(!text.contains(leak), "{method} {uri} leaks {leak}: {text}");
            }
        }
    }

    /// Every query parameter the OpenAPI document lists reaches its handler; an unlisted one is
    /// refused (mass assignment: typed inputs, unknown fields rejected).
    #[tokio::test]
    async fn documented_query_parameters_are_taken_and_others_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        let send = |method: &str, uri: String| {
            let app = app.clone();
            let req = Request::builder()
                .method(req_method(method))
                .uri(uri)
                .header(header::AUTHORIZATION, "Bearer secret")
                .body(Body::empty())
                .unwrap_or_default();
            async move {
                let resp = app.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        for (method, route, params) in roles::QUERY_PARAMS {
            assert!(
                roles::ROUTES
                    .iter()
                    .any(|(m, p, _, _)| m == method && p == route),
                "{method} {route} is not a route"
            );
            let path = route.replace("{name}", "blocked_ips");
            for (name, _, _) in params.iter() {
                let (_, body) = send(method, format!("{path}?{name}=1")).await;
                assert!(
                    !body.contains("unknown field"),
                    "{method} {route}: documented parameter {name} refused: {body}"
                );
            }
            let (status, body) = send(method, format!("{path}?no_such_parameter=1")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {route}: {body}");
            assert!(body.contains("unknown field"), "{method} {route}: {body}");
        }
    }

    /// Every route of the access table, with every role: allowed ones get past the token layer
    /// (any status but 401/403), the others get 403. A route served by the router but missing
    /// from the table answers 500 (fails closed), which `the_access_table_covers_every_route`
    /// catches for the routes it probes.
    #[tokio::test]
    async fn every_route_with_every_role() {
        use roles::Role;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        let tokens = [
            (Role::Ingest, "ingest-token"),
            (Role::Viewer, "viewer-token"),
            (Role::Analyst, "analyst-token"),
            (Role::Responder, "responder-token"),
            (Role::Admin, "secret"),
        ];
        for (method, route, _, _) in roles::ROUTES {
            let path = route
                .replace("{id}", "0123abcd")
                .replace("{name}", "blocked_ips");
            for (role, token) in tokens {
                let req = Request::builder()
                    .method(*method)
                    .uri(&path)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{}"))
                    .unwrap_or_default();
                let got = app
                    .clone()
                    .oneshot(req)
                    .await
                    .map(|r| r.status())
                    .unwrap_or(StatusCode::IM_A_TEAPOT);
                let allowed = roles::allowed(role, &req_method(method), route).unwrap_or(false);
                assert_ne!(got, StatusCode::UNAUTHORIZED, "{method} {route} {role:?}");
                assert_ne!(
                    got,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {route} {role:?}: no access decision?"
                );
                if allowed {
                    assert_ne!(got, StatusCode::FORBIDDEN, "{method} {route} {role:?}");
                } else {
                    assert_eq!(got, StatusCode::FORBIDDEN, "{method} {route} {role:?}");
                }
            }
        }
        // The hierarchy, spelled out for a few routes.
        let get = axum::http::Method::GET;
        let patch = axum::http::Method::PATCH;
        assert_eq!(
            roles::allowed(Role::Viewer, &patch, "/api/v1/offenses/{id}"),
            Some(false)
        );
        assert_eq!(
            roles::allowed(Role::Analyst, &patch, "/api/v1/offenses/{id}"),
            Some(true)
        );
        assert_eq!(
            roles::allowed(Role::Responder, &get, "/api/v1/audit"),
            Some(false)
        );
        assert_eq!(
            roles::allowed(Role::Ingest, &get, "/api/v1/offenses"),
            Some(false)
        );
        assert_eq!(roles::allowed(Role::Admin, &get, "/api/v1/nope"), None);
    }

    fn req_method(m: &str) -> axum::http::Method {
        m.parse().unwrap_or(axum::http::Method::GET)
    }

    #[test]
    fn the_openapi_document_lists_every_route_with_its_role() {
        let doc = roles::openapi();
        assert_eq!(doc["openapi"], "3.0.3");
        for (method, path, role, _) in roles::ROUTES {
            let op = &doc["paths"][*path][method.to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path}");
            assert_eq!(
                op["x-vigil-role"],
                serde_json::to_value(role).unwrap_or_default()
            );
        }
        assert!(doc["paths"]["/healthz"]["get"].is_object());
    }

    /// A route served behind the token layer but missing from the access table fails closed.
    #[tokio::test]
    async fn a_route_without_an_access_decision_fails_closed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = state(dir.path());
        let app: Router = Router::new()
            .route("/api/v1/forgotten", get(|| async { "data" }))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
            .with_state(state);
        let (s, _) = status(&app, "/api/v1/forgotten", Some("secret")).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn the_blocklist_token_reads_the_blocklist_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        let firewall = Some("firewall-token-0123");
        // No reference data in this router: past the token check, the route answers 503.
        let (s, _) = status(&app, "/api/v1/blocklist.txt", firewall).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let (s, _) = status(&app, "/api/v1/blocklist.txt", Some("secret")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let (s, _) = status(&app, "/api/v1/blocklist.txt", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = status(&app, "/api/v1/offenses", firewall).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = status(&app, "/api/v1/response/decisions", firewall).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn only_health_and_the_console_files_are_open() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        for open in ["/healthz", "/", "/console/app.js", "/console/style.css"] {
            assert_eq!(status(&app, open, None).await.0, StatusCode::OK, "{open}");
        }
        for closed in [
            "/api/v1/offenses",
            "/api/v1/offenses/abc",
            "/api/v1/dead-letters",
            "/api/v1/sources",
            "/metrics",
        ] {
            assert_eq!(
                status(&app, closed, None).await.0,
                StatusCode::UNAUTHORIZED,
                "{closed}"
            );
            assert_eq!(
                status(&app, closed, Some("wrong")).await.0,
                StatusCode::UNAUTHORIZED,
                "{closed}"
            );
            assert_ne!(
                status(&app, closed, Some("secret")).await.0,
                StatusCode::UNAUTHORIZED,
                "{closed}"
            );
        }
        assert_eq!(
            status(&app, "/nope", Some("secret")).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn the_console_is_served_with_security_headers() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (code, headers) = status(&app(dir.path()), "/", None).await;
        assert_eq!(code, StatusCode::OK);
        let csp = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(
            headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..])
        );
        assert_eq!(
            headers.get(header::X_FRAME_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"DENY"[..])
        );
    }

    #[tokio::test]
    async fn bad_queries_are_refused_with_400() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = app(dir.path());
        for path in [
            "/api/v1/offenses?unknown=1",
            "/api/v1/offenses?limit=0",
            "/api/v1/offenses?limit=101",
            "/api/v1/offenses?status=maybe",
            "/api/v1/offenses?since=yesterday",
            "/api/v1/offenses/..%2F..%2Fetc",
        ] {
            assert_eq!(
                status(&app, path, Some("secret")).await.0,
                StatusCode::BAD_REQUEST,
                "{path}"
            );
        }
    }
}
