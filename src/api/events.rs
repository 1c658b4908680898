//! `GET /api/v1/events`: log events by time range, field equalities and text in the message,
//! newest first, from `events.db` (embedded) or ClickHouse (scaled out), with the same query
//! and the same answer.
//!
//! Query: `from`, `to` (RFC 3339; default the last hour; at most 7 days apart), `q` (text the
//! message contains, case-insensitive), `source_ip`, `destination_ip`, `user`, `host`,
//! `category`, `outcome`, `dataset`, `limit` (≤ `api.max_page_size`), `offset` (≤ 10,000).
//! Unknown parameters are refused. A search that runs longer than 3 s is stopped and answered
//! 400 (narrow it). Answer: `{"items": [event, ...], "more": bool, "from", "to"}`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use vigil_parsers::Event;

use super::{page_size, ApiError, ApiState};
use crate::store::events::{is_interrupted, EventSearch, EventStore, MAX_OFFSET, MAX_RANGE_HOURS};

/// Longest `q` and field value accepted.
pub const MAX_FILTER_BYTES: usize = 256;

/// The query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    q: Option<String>,
    source_ip: Option<String>,
    destination_ip: Option<String>,
    user: Option<String>,
    host: Option<String>,
    category: Option<String>,
    outcome: Option<String>,
    dataset: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventPage {
    /// Events, newest first.
    pub items: Vec<Event>,
    /// Whether more events match past this page.
    pub more: bool,
    /// The range searched.
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn too_broad() -> ApiError {
    bad("the search ran out of time: narrow the time range or add filters")
}

/// Checks the query and turns it into a search.
pub fn search_of(
    q: EventQuery,
    max_page: u64,
    now: DateTime<Utc>,
) -> Result<EventSearch, ApiError> {
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - Duration::hours(1));
    if from >= to {
        return Err(bad("from must be before to"));
    }
    if to - from > Duration::hours(MAX_RANGE_HOURS) {
        return Err(bad(format!(
            "the time range may span at most {MAX_RANGE_HOURS} hours"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(bad(format!(
            "offset must be at most {MAX_OFFSET}: narrow the time range instead"
        )));
    }
    let ip = |name: &str, v: Option<String>| -> Result<_, ApiError> {
        v.map(|v| {
            v.trim()
                .parse()
                .map_err(|_| bad(format!("{name} is not an IP address")))
        })
        .transpose()
    };
    let text = |name: &str, v: Option<String>| -> Result<_, ApiError> {
        match v {
            Some(v) if v.len() > MAX_FILTER_BYTES => Err(bad(format!(
                "{name} may be at most {MAX_FILTER_BYTES} bytes"
            ))),
            Some(v) if v.is_empty() => Ok(None),
            v => Ok(v),
        }
    };
    Ok(EventSearch {
        from,
        to,
        text: text("q", q.q)?,
        source_ip: ip("source_ip", q.source_ip)?,
        destination_ip: ip("destination_ip", q.destination_ip)?,
        user: text("user", q.user)?,
        host: text("host", q.host)?,
        category: text("category", q.category)?,
        outcome: text("outcome", q.outcome)?,
        dataset: text("dataset", q.dataset)?,
        limit: page_size(q.limit, max_page)?,
        offset,
    })
}

/// `GET /api/v1/events`.
pub async fn search_events(
    State(state): State<ApiState>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let search = search_of(q, state.max_page_size, Utc::now())?;
    let (from, to) = (search.from, search.to);
    let (items, more) = if let Some(ch) = &state.clickhouse {
        ch.search_events(&search).await.map_err(|e| {
            // ClickHouse's TIMEOUT_EXCEEDED (code 159) after max_execution_time.
            if e.to_string().contains("Code: 159") {
                too_broad()
            } else {
                ApiError::from(e)
            }
        })?
    } else if let Some(path) = state.events_path.clone() {
        super::on_blocking_pool(move || EventStore::open_reader(&path)?.search(&search))
            .await?
            .map_err(|e| {
                if is_interrupted(&e) {
                    too_broad()
                } else {
                    ApiError::from(e)
                }
            })?
    } else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "events are not kept for search (store.search_events = false)".into(),
        ));
    };
    Ok(Json(EventPage {
        items,
        more,
        from,
        to,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn query(pairs: &str) -> Result<EventSearch, ApiError> {
        let uri: axum::http::Uri = format!("/api/v1/events?{pairs}").parse().unwrap();
        let Query(q) = Query::<EventQuery>::try_from_uri(&uri).map_err(|e| bad(e.to_string()))?;
        search_of(q, 500, DateTime::from_timestamp(1_800_000_000, 0).unwrap())
    }

    #[test]
    fn queries_are_checked() {
        let s = query("").unwrap();
        assert_eq!(s.to - s.from, Duration::hours(1));
        assert_eq!(s.limit, 50);
        let s = query("q=failed&source_ip=203.0.113.7&user=root&limit=500").unwrap();
        assert_eq!(s.text.as_deref(), Some("failed"));
        assert_eq!(s.source_ip, "203.0.113.7".parse().ok());
        for refused in [
            "limit=501",
            "offset=10001",
            "source_ip=nope",
            "from=2020-01-01T00:00:00Z&to=2020-01-09T00:00:00Z",
            "from=2020-01-02T00:00:00Z&to=2020-01-01T00:00:00Z",
            "message=x",
        ] {
            assert!(query(refused).is_err(), "{refused} accepted");
        }
        let long = format!("q={}", "a".repeat(MAX_FILTER_BYTES + 1));
        assert!(query(&long).is_err());
    }
}
