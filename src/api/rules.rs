//! Rules over the API (embedded mode):
//!
//! - `GET /api/v1/rules`: the running rules (name, kind, level, tags, file, what a correlation
//!   references, events matched so far), the rules switched off, and the rules of the files
//!   that did not load;
//! - `POST /api/v1/rules/reload`: reads the rule files again and runs them, keeping the
//!   correlation windows of rules that still exist; a file with a broken rule changes nothing
//!   (422 with the problems);
//! - `POST /api/v1/rules/{name}/disable` and `/enable`: switch one rule off or on (kept across
//!   restarts). A rule an enabled correlation references cannot be switched off alone (409).
//!
//! Changes are audited. Scaled out, every node loads its rule files at start: these changes
//! answer 501 there (roll the nodes instead).

use std::collections::BTreeSet;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;

use super::{with_store, with_store_writer, ApiError, ApiState, Caller};
use crate::correlate::control::{ControlError, ReloadReport, RuleView, RulesControl};
use crate::store::{AuditRecord, DisabledRule};

/// A running rule with its match count.
#[derive(Debug, Serialize)]
pub struct ListedRule {
    /// The rule.
    #[serde(flatten)]
    pub rule: RuleView,
    /// Events it matched (detections) or counted (correlations) since the start.
    pub matches: u64,
}

/// `GET /api/v1/rules`.
#[derive(Debug, Serialize)]
pub struct RuleList {
    /// Running rules.
    pub rules: Vec<ListedRule>,
    /// Rules switched off.
    pub disabled: Vec<DisabledRule>,
    /// Rules of the files not loaded, one line each.
    pub refused: Vec<String>,
    /// When the running set was loaded.
    pub loaded_at: chrono::DateTime<Utc>,
}

fn control(state: &ApiState) -> Result<&std::sync::Arc<RulesControl>, ApiError> {
    state.rules.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "rules are loaded at start on every node in scaled-out mode: change the files and restart the nodes".into(),
        )
    })
}

async fn disabled(state: &ApiState) -> Result<Vec<DisabledRule>, ApiError> {
    with_store(state, |s| s.disabled_rules()).await
}

/// `GET /api/v1/rules`.
pub async fn list_rules(State(state): State<ApiState>) -> Result<Json<RuleList>, ApiError> {
    let control = control(&state)?;
    let view = control.view();
    let rules = view
        .rules
        .into_iter()
        .map(|rule| ListedRule {
            matches: state
                .metrics
                .counter_value("vigil_rule_matches_total", &[("rule", &rule.name)]),
            rule,
        })
        .collect();
    Ok(Json(RuleList {
        rules,
        disabled: disabled(&state).await?,
        refused: view.refused,
        loaded_at: view.loaded_at,
    }))
}

fn refusal(e: ControlError) -> Response {
    let (status, problems) = match &e {
        ControlError::Broken(p) => (StatusCode::UNPROCESSABLE_ENTITY, p.clone()),
        ControlError::Unknown(_) => (StatusCode::NOT_FOUND, Vec::new()),
        ControlError::Referenced { .. } => (StatusCode::CONFLICT, Vec::new()),
        ControlError::Engine(_) => (StatusCode::SERVICE_UNAVAILABLE, Vec::new()),
        ControlError::Io(detail) => {
            tracing::error!(error = %detail, "rules change failed");
            return ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the rules could not be changed".into(),
            )
            .into_response();
        }
    };
    let mut body = serde_json::json!({ "error": e.to_string() });
    if !problems.is_empty() {
        body["problems"] = problems.into();
    }
    (status, Json(body)).into_response()
}

async fn audit(state: &ApiState, caller: &Caller, action: &str, target: &str, r: &ReloadReport) {
    let record = AuditRecord {
        at: Utc::now(),
        actor: caller.name.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: serde_json::to_string(r).unwrap_or_default(),
    };
    if let Err(e) = with_store_writer(state, move |s| s.insert_audit_record(&record)).await {
        tracing::error!(error = ?e, "auditing a rules change failed");
    }
}

/// `POST /api/v1/rules/reload`.
pub async fn reload(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let control = match control(&state) {
        Ok(c) => c.clone(),
        Err(e) => return e.into_response(),
    };
    let off: BTreeSet<String> = match disabled(&state).await {
        Ok(d) => d.into_iter().map(|d| d.name).collect(),
        Err(e) => return e.into_response(),
    };
    match control.reload(off).await {
        Ok(report) => {
            audit(&state, &caller, "rules.reload", "rules", &report).await;
            Json(report).into_response()
        }
        Err(e) => refusal(e),
    }
}

async fn switch(state: ApiState, caller: Caller, name: String, enabled: bool) -> Response {
    if name.is_empty() || name.len() > 256 {
        return ApiError(StatusCode::BAD_REQUEST, "malformed rule name".into()).into_response();
    }
    let control = match control(&state) {
        Ok(c) => c.clone(),
        Err(e) => return e.into_response(),
    };
    let off: BTreeSet<String> = match disabled(&state).await {
        Ok(d) => d.into_iter().map(|d| d.name).collect(),
        Err(e) => return e.into_response(),
    };
    let path = state.store_path.clone();
    let (who, rule) = (caller.name.clone(), name.clone());
    let persist = move || {
        crate::store::Store::open(&path)
            .and_then(|s| s.set_rule_enabled(&rule, enabled, &who, Utc::now()))
            .map_err(|e| e.to_string())
    };
    match control.set_enabled(&name, enabled, off, persist).await {
        Ok(report) => {
            let action = if enabled {
                "rule.enable"
            } else {
                "rule.disable"
            };
            audit(&state, &caller, action, &name, &report).await;
            Json(report).into_response()
        }
        Err(e) => refusal(e),
    }
}

/// `POST /api/v1/rules/{name}/disable`.
pub async fn disable(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    switch(state, caller, name, false).await
}

/// `POST /api/v1/rules/{name}/enable`.
pub async fn enable(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    switch(state, caller, name, true).await
}
