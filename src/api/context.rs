//! Reference data and assets over the API:
//!
//! - `GET /api/v1/reference-sets`: every set and map with its size.
//! - `GET /api/v1/reference-sets/{name}`: a set's entries (paged), with source and expiry.
//! - `POST /api/v1/reference-sets/{name}/entries`: `{"values": [...], "ttl_secs": N}` adds
//!   (all or nothing: one invalid value refuses the request, naming it).
//! - `DELETE /api/v1/reference-sets/{name}/entries?value=V`: removes one entry.
//! - `GET /api/v1/reference-maps/{name}`, `POST .../entries` (`{"key", "value", "ttl_secs"}`),
//!   `DELETE .../entries?key=K`: the same for maps.
//! - `GET /api/v1/assets?zone=&limit=&offset=`: assets learned from events, newest first.
//!
//! Changes apply to the live data the rules read at once and are kept in the store (source
//! `api`), so they survive a restart.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

use super::{page_size, with_store, with_store_writer, ApiError, ApiState, Page};
use crate::context::refdata::{RefError, ReferenceData, SetKind};
use crate::store::{StoredAsset, StoredReference};

/// Most values one `POST` may add.
pub const MAX_VALUES_PER_REQUEST: usize = 10_000;
/// Longest value (or key, or map value) accepted.
pub const MAX_VALUE_BYTES: usize = 1024;

fn data(state: &ApiState) -> Result<&std::sync::Arc<ReferenceData>, ApiError> {
    state.reference.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "reference data is not enabled".into(),
        )
    })
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn from_ref_error(e: RefError) -> ApiError {
    match e {
        RefError::UnknownSet(_) | RefError::UnknownMap(_) => {
            ApiError(StatusCode::NOT_FOUND, e.to_string())
        }
        other => bad(other.to_string()),
    }
}

fn ttl(secs: Option<u64>) -> Result<Option<chrono::Duration>, ApiError> {
    match secs {
        None | Some(0) => Ok(None),
        Some(s) if s > 10 * 365 * 86_400 => Err(bad("ttl_secs must be at most ten years")),
        Some(s) => Ok(Some(chrono::Duration::seconds(s as i64))),
    }
}

pub(super) async fn list_sets(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let items = data(&state)?.summaries();
    Ok(Json(
        serde_json::json!({ "total": items.len(), "items": items }),
    ))
}

/// Query of the entry lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<u64>,
    offset: Option<u64>,
}

/// One page of an in-memory list (reference entries are held in memory, not in SQL).
fn page_of<T>(
    state: &ApiState,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    all: impl FnOnce(&ReferenceData) -> Result<Vec<T>, RefError>,
) -> Result<Json<Page<T>>, ApiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let all = all(data(state)?).map_err(from_ref_error)?;
    let total = all.len() as u64;
    let items = all
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}

pub(super) async fn get_set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::context::refdata::Entry>>, ApiError> {
    page_of(&state, query, |d| d.entries(&name))
}

/// Body of `POST /api/v1/reference-sets/{name}/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddValues {
    values: Vec<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

pub(super) async fn add_to_set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<AddValues>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    if body.values.is_empty() || body.values.len() > MAX_VALUES_PER_REQUEST {
        return Err(bad(format!(
            "values must hold 1 to {MAX_VALUES_PER_REQUEST} entries"
        )));
    }
    if let Some(v) = body.values.iter().find(|v| v.len() > MAX_VALUE_BYTES) {
        return Err(bad(format!(
            "value of {} bytes is over {MAX_VALUE_BYTES}",
            v.len()
        )));
    }
    let ttl = ttl(body.ttl_secs)?;
    let data = data(&state)?.clone();
    // Validate everything first (all or nothing).
    let kind = match data.summaries().into_iter().find(|s| s.name == name) {
        Some(s) if s.kind == "string" => SetKind::String,
        Some(s) if s.kind == "ip" => SetKind::Ip,
        _ => return Err(from_ref_error(RefError::UnknownSet(name))),
    };
    let kind_check = ReferenceData::parse_list(kind, &body.values.join("\n"));
    if let Some(b) = kind_check.bad.first() {
        return Err(bad(format!("value {:?}: {}", b.text, b.reason)));
    }
    let now = Utc::now();
    let entries: Vec<StoredReference> = body
        .values
        .iter()
        .map(|v| StoredReference {
            collection: name.clone(),
            value: v.trim().to_owned(),
            map_value: None,
            source: "api".into(),
            expires_at: ttl.map(|t| now + t),
        })
        .collect();
    let stored = entries.clone();
    with_store_writer(&state, move |s| {
        s.in_transaction(|st| {
            for e in &stored {
                st.put_reference(e)?;
            }
            Ok(())
        })
    })
    .await?;
    for e in &entries {
        data.add(&name, &e.value, ttl, "api", now)
            .map_err(from_ref_error)?;
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "added": entries.len() })),
    ))
}

/// Query of the `DELETE` calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveQuery {
    value: Option<String>,
    key: Option<String>,
}

pub(super) async fn remove_from_set(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let value = q.value.ok_or_else(|| bad("value is required"))?;
    let data = data(&state)?.clone();
    let removed = data.remove(&name, &value).map_err(from_ref_error)?;
    let (n, v) = (name.clone(), value.trim().to_owned());
    with_store_writer(&state, move |s| s.delete_reference(&n, &v)).await?;
    Ok(Json(serde_json::json!({ "removed": removed })))
}

pub(super) async fn get_map(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<crate::context::refdata::MapEntry>>, ApiError> {
    page_of(&state, query, |d| d.map_entries(&name))
}

/// Body of `POST /api/v1/reference-maps/{name}/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutMapEntry {
    key: String,
    value: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

pub(super) async fn put_map_entry(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<PutMapEntry>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    if body.key.trim().is_empty()
        || body.key.len() > MAX_VALUE_BYTES
        || body.value.len() > MAX_VALUE_BYTES
    {
        return Err(bad(format!(
            "key must be non-empty; key and value at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    let ttl = ttl(body.ttl_secs)?;
    let data = data(&state)?.clone();
    let now = Utc::now();
    data.map_put(&name, &body.key, &body.value, ttl, "api", now)
        .map_err(from_ref_error)?;
    let entry = StoredReference {
        collection: name,
        value: body.key,
        map_value: Some(body.value),
        source: "api".into(),
        expires_at: ttl.map(|t| now + t),
    };
    with_store_writer(&state, move |s| s.put_reference(&entry)).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "put": 1 }))))
}

pub(super) async fn remove_map_entry(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let key = q.key.ok_or_else(|| bad("key is required"))?;
    let data = data(&state)?.clone();
    let removed = data.map_remove(&name, &key).map_err(from_ref_error)?;
    let n = name.clone();
    with_store_writer(&state, move |s| s.delete_reference(&n, &key)).await?;
    Ok(Json(serde_json::json!({ "removed": removed })))
}

/// Query of `GET /api/v1/assets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssetQuery {
    zone: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

pub(super) async fn list_assets(
    State(state): State<ApiState>,
    query: Result<Query<AssetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<StoredAsset>>, ApiError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let limit = page_size(q.limit, state.max_page_size)?;
    let offset = q.offset.unwrap_or(0);
    let zone = q.zone;
    let (items, total) = with_store(&state, move |s| {
        s.list_assets(zone.as_deref(), limit, offset)
    })
    .await?;
    Ok(Json(Page {
        items,
        total,
        limit,
        offset,
    }))
}
