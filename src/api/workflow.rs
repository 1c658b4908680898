//! Working offenses (analyst role): assign, close with a reason, reopen, follow-up flag, notes;
//! every change in the audit trail (who, when, what) in the same transaction, and
//! `offense.closed` sent to webhooks through the outbox. The audit trail is the admin's
//! (`GET /api/v1/audit`). Embedded store only for now: in the scaled-out mode these routes
//! answer 501 (the offense stage owns offense rows there).

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

use super::{with_store_writer, ApiError, ApiState, Caller, Page};
use crate::store::{AuditRecord, Offense, OffenseStatus, StoreError};

/// Longest closing reason, assignee name or note.
const MAX_TEXT: usize = 4000;

/// Body of `PATCH /api/v1/offenses/{id}`: any of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffensePatch {
    /// `closed` (needs `closing_reason`) or `open` (reopen).
    pub status: Option<OffenseStatus>,
    /// Why it was closed (`false positive`, `remediated`, ...).
    pub closing_reason: Option<String>,
    /// Who works it; `""` unassigns.
    pub assignee: Option<String>,
    /// Flag for follow-up.
    pub follow_up: Option<bool>,
}

/// Body of `POST /api/v1/offenses/{id}/notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// The note.
    pub text: String,
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "malformed offense id".into(),
        ));
    }
    Ok(())
}

fn embedded_only(state: &ApiState) -> Result<(), ApiError> {
    if state.clickhouse.is_some() {
        return Err(ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "offense changes are not available in the scaled-out mode yet".into(),
        ));
    }
    Ok(())
}

fn bad(msg: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// What a patch did (for the handler to map a refusal to 400 or 404).
enum Outcome {
    Done(Box<Offense>),
    Missing,
    Refused(&'static str),
}

/// `PATCH /api/v1/offenses/{id}`.
pub async fn patch_offense(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<OffensePatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Offense>, ApiError> {
    check_id(&id)?;
    embedded_only(&state)?;
    let Json(patch) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    for text in [&patch.closing_reason, &patch.assignee]
        .into_iter()
        .flatten()
    {
        if text.len() > MAX_TEXT {
            return Err(bad("text longer than 4000 bytes"));
        }
    }
    if patch.status == Some(OffenseStatus::Closed)
        && patch
            .closing_reason
            .as_deref()
            .is_none_or(|r| r.trim().is_empty())
    {
        return Err(bad("closing an offense needs a closing_reason"));
    }
    let webhooks = state.webhooks.clone();
    let outcome = with_store_writer(&state, move |store| {
        store.in_transaction(|s| -> Result<Outcome, StoreError> {
            let Some(mut o) = s.get_offense(&id)? else {
                return Ok(Outcome::Missing);
            };
            let now = Utc::now();
            let mut changes: Vec<(&str, serde_json::Value)> = Vec::new();
            match patch.status {
                Some(OffenseStatus::Closed) if o.status == OffenseStatus::Open => {
                    o.status = OffenseStatus::Closed;
                    o.closing_reason = patch.closing_reason.clone();
                    o.closed_at = Some(now);
                    changes.push((
                        "offense.close",
                        serde_json::json!({ "closing_reason": o.closing_reason }),
                    ));
                }
                Some(OffenseStatus::Open) if o.status == OffenseStatus::Closed => {
                    if s.find_open_offense(&o.index_field, &o.index_value)?
                        .is_some()
                    {
                        return Ok(Outcome::Refused(
                            "a newer offense is open for this index: work that one",
                        ));
                    }
                    o.status = OffenseStatus::Open;
                    o.closing_reason = None;
                    o.closed_at = None;
                    changes.push(("offense.reopen", serde_json::json!({})));
                }
                _ => {}
            }
            if let Some(a) = &patch.assignee {
                let a = (!a.is_empty()).then(|| a.clone());
                if a != o.assignee {
                    o.assignee = a;
                    changes.push((
                        "offense.assign",
                        serde_json::json!({ "assignee": o.assignee }),
                    ));
                }
            }
            if let Some(f) = patch.follow_up {
                if f != o.follow_up {
                    o.follow_up = f;
                    changes.push(("offense.follow_up", serde_json::json!({ "follow_up": f })));
                }
            }
            if changes.is_empty() {
                return Ok(Outcome::Done(Box::new(o)));
            }
            o.updated_at = now;
            s.put_offense(&o)?;
            for (action, detail) in &changes {
                s.insert_audit_record(&AuditRecord {
                    at: now,
                    actor: caller.name.clone(),
                    action: (*action).to_owned(),
                    target: o.id.clone(),
                    detail: detail.to_string(),
                })?;
                if *action == "offense.close" {
                    let body = serde_json::to_value(&o).unwrap_or_default();
                    crate::webhook::enqueue(
                        s,
                        &webhooks,
                        "offense.closed",
                        &format!("{}@closed@{}", o.id, now.timestamp_millis()),
                        &body,
                        now,
                    )?;
                }
            }
            Ok(Outcome::Done(Box::new(o)))
        })
    })
    .await?;
    match outcome {
        Outcome::Done(o) => Ok(Json(*o)),
        Outcome::Missing => Err(ApiError(StatusCode::NOT_FOUND, "no such offense".into())),
        Outcome::Refused(why) => Err(ApiError(StatusCode::CONFLICT, why.into())),
    }
}

/// `POST /api/v1/offenses/{id}/notes`.
pub async fn add_note(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<NoteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_id(&id)?;
    embedded_only(&state)?;
    let Json(note) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if note.text.trim().is_empty() || note.text.len() > MAX_TEXT {
        return Err(bad("a note has 1 to 4000 bytes of text"));
    }
    let added = with_store_writer(&state, move |store| {
        store.in_transaction(|s| {
            if s.get_offense(&id)?.is_none() {
                return Ok(None);
            }
            let note_id = s.add_note(&id, &caller.name, &note.text)?;
            s.insert_audit_record(&AuditRecord {
                at: Utc::now(),
                actor: caller.name.clone(),
                action: "offense.note".into(),
                target: id.clone(),
                detail: serde_json::json!({ "note": note_id }).to_string(),
            })?;
            Ok(Some(note_id))
        })
    })
    .await?;
    match added {
        Some(note_id) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": note_id })),
        )),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no such offense".into())),
    }
}

/// `GET /api/v1/audit` (admin).
pub async fn list_audit(
    State(state): State<ApiState>,
    query: Result<Query<super::PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    super::paged(&state, query, |s, limit, offset| {
        s.list_audit_records(limit, offset)
    })
    .await
}
