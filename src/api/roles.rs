//! Who may call what. Every token has a role; every route has the least role it needs, in one
//! table ([`ROUTES`]). The middleware refuses a route missing from the table (a new route
//! without a decision fails closed), and `tests::every_route_with_every_role` walks the whole
//! table with every role.
//!
//! Roles, each with what the ones before it may do:
//! - `viewer`: read everything (offenses, events, flows, sources, assets, reference data,
//!   dead letters, decisions, metrics);
//! - `analyst`: work offenses (assign, close with a reason, reopen, follow-up, notes);
//! - `responder`: change reference sets and maps (block and unblock addresses);
//! - `admin`: the audit trail.
//!
//! `ingest` is apart: it may only push records (`POST /api/v1/ingest`), for log shippers.

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only `POST /api/v1/ingest`.
    Ingest,
    /// Reads.
    Viewer,
    /// Reads and works offenses.
    Analyst,
    /// And changes reference data.
    Responder,
    /// Everything.
    Admin,
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (the audit trail names them).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the token, hex (`printf %s TOKEN | sha256sum`), so the config holds no secret.
    pub sha256: String,
}

impl TokenConfig {
    /// The hash as bytes.
    pub fn hash(&self) -> Option<[u8; 32]> {
        let bytes = hex::decode(self.sha256.trim()).ok()?;
        bytes.try_into().ok()
    }

    /// Checks the entry.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err("api.tokens: a name of 1 to 64 characters is needed".into());
        }
        self.hash().map(|_| ()).ok_or_else(|| {
            format!(
                "api.tokens {}: sha256 must be 64 hex digits (printf %s TOKEN | sha256sum)",
                self.name
            )
        })
    }
}

/// Every route (method, path as routed) and the least role it needs. `/healthz`, the console
/// assets and `/api/v1/blocklist.txt` (its own token check) are outside the token layer.
pub const ROUTES: &[(&str, &str, Role, &str)] = &[
    ("GET", "/api/v1/offenses", Role::Viewer, "List offenses (filters: status, min_magnitude, since, index_value, rule; paged), highest magnitude first"),
    ("GET", "/api/v1/offenses/{id}", Role::Viewer, "One offense with its rules, notes and stored events"),
    ("PATCH", "/api/v1/offenses/{id}", Role::Analyst, "Assign, flag for follow-up, close with a reason, or reopen an offense (audited)"),
    ("POST", "/api/v1/offenses/{id}/notes", Role::Analyst, "Add a note to an offense (audited)"),
    ("GET", "/api/v1/events", Role::Viewer, "Search log events: time range (at most 7 days), field equalities, text in the message; newest first, paged"),
    ("GET", "/api/v1/rules", Role::Viewer, "The running rules with their match counts, the rules switched off, and the rules that did not load"),
    ("POST", "/api/v1/rules/reload", Role::Admin, "Read the rule files again and run them, keeping correlation windows (a broken rule changes nothing: 422)"),
    ("POST", "/api/v1/rules/{name}/disable", Role::Admin, "Switch a rule off (kept across restarts; 409 while an enabled correlation references it)"),
    ("POST", "/api/v1/rules/{name}/enable", Role::Admin, "Switch a rule back on"),
    ("GET", "/api/v1/dead-letters", Role::Viewer, "Records that could not be parsed, with their raw bytes and reason"),
    ("GET", "/api/v1/flows", Role::Viewer, "Flow records and superflows from or to an address"),
    ("GET", "/api/v1/response/decisions", Role::Viewer, "Automatic blocking decisions"),
    ("GET", "/api/v1/metrics/summary", Role::Viewer, "EPS, events, dead letters by reason, open offenses, offense latency, drops, rules loaded"),
    ("GET", "/api/v1/sources", Role::Viewer, "Log sources with their detected type, EPS and failure rate"),
    ("GET", "/api/v1/assets", Role::Viewer, "Hosts of internal zones learned from events"),
    ("GET", "/api/v1/reference-sets", Role::Viewer, "Reference sets and maps with their sizes"),
    ("GET", "/api/v1/reference-sets/{name}", Role::Viewer, "A reference set's entries with source and expiry"),
    ("POST", "/api/v1/reference-sets/{name}/entries", Role::Responder, "Add values to a reference set (with a TTL)"),
    ("DELETE", "/api/v1/reference-sets/{name}/entries", Role::Responder, "Remove a value from a reference set"),
    ("GET", "/api/v1/reference-maps/{name}", Role::Viewer, "A reference map's entries"),
    ("POST", "/api/v1/reference-maps/{name}/entries", Role::Responder, "Put a key and value into a reference map"),
    ("DELETE", "/api/v1/reference-maps/{name}/entries", Role::Responder, "Remove a key from a reference map"),
    ("POST", "/api/v1/ingest", Role::Ingest, "Push records, one per line"),
    ("GET", "/api/v1/audit", Role::Admin, "The audit trail of analysts' and responders' changes"),
    ("GET", "/api/v1/openapi.json", Role::Viewer, "This document"),
    ("GET", "/metrics", Role::Viewer, "Prometheus metrics"),
];

/// One query parameter: (name, OpenAPI type or `date-time`, description).
pub type QueryParam = (&'static str, &'static str, &'static str);

/// The query parameters each `GET`/`DELETE` route takes: (method, path, [(name, type,
/// description)]). Any other parameter is refused (400); a test sends each one to its handler.
pub const QUERY_PARAMS: &[(&str, &str, &[QueryParam])] = &[
    (
        "GET",
        "/api/v1/offenses",
        &[
            ("status", "string", "open or closed"),
            ("min_magnitude", "integer", "at least this magnitude (0-10)"),
            ("since", "date-time", "last seen at or after (RFC 3339)"),
            (
                "index_value",
                "string",
                "the offense's index value (an address, a user)",
            ),
            ("rule", "string", "a contributing rule's name"),
            ("limit", "integer", "page size (at most api.max_page_size)"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/events",
        &[
            (
                "from",
                "date-time",
                "event time from (default: an hour before `to`)",
            ),
            (
                "to",
                "date-time",
                "event time to, exclusive (default: now); at most 7 days after `from`",
            ),
            (
                "q",
                "string",
                "text the message contains (case-insensitive)",
            ),
            ("source_ip", "string", "source.ip"),
            ("destination_ip", "string", "destination.ip"),
            ("user", "string", "user.name"),
            ("host", "string", "host.name"),
            ("category", "string", "event.category"),
            ("outcome", "string", "event.outcome"),
            ("dataset", "string", "event.dataset (the parser)"),
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped (at most 10,000)"),
        ],
    ),
    (
        "GET",
        "/api/v1/dead-letters",
        &[
            ("reason", "string", "only this reason"),
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/flows",
        &[
            ("ip", "string", "flows from or to this address"),
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/response/decisions",
        &[
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/audit",
        &[
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/assets",
        &[
            ("zone", "string", "only this zone"),
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/reference-sets/{name}",
        &[
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "GET",
        "/api/v1/reference-maps/{name}",
        &[
            ("limit", "integer", "page size"),
            ("offset", "integer", "rows skipped"),
        ],
    ),
    (
        "DELETE",
        "/api/v1/reference-sets/{name}/entries",
        &[("value", "string", "the value to remove")],
    ),
    (
        "DELETE",
        "/api/v1/reference-maps/{name}/entries",
        &[("key", "string", "the key to remove")],
    ),
];

/// The OpenAPI 3.0 document of the token-protected API, from [`ROUTES`] (each operation names
/// the least role it needs in `x-vigil-role`), plus the open routes.
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, role, summary) in ROUTES {
        let mut params: Vec<serde_json::Value> = ["id", "name"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| serde_json::json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (_, _, query) in QUERY_PARAMS
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
        {
            for (name, kind, description) in query.iter() {
                let schema = match *kind {
                    "date-time" => serde_json::json!({"type": "string", "format": "date-time"}),
                    other => serde_json::json!({"type": other}),
                };
                params.push(serde_json::json!({
                    "name": name, "in": "query", "required": false,
                    "description": description, "schema": schema,
                }));
            }
        }
        let entry = paths
            .entry((*path).to_owned())
            .or_insert_with(|| serde_json::json!({}));
        if let Some(ops) = entry.as_object_mut() {
            ops.insert(
                method.to_ascii_lowercase(),
                serde_json::json!({
                    "summary": summary,
                    "x-vigil-role": role,
                    "parameters": params,
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "OK"},
                        "400": {"description": "Malformed request (unknown fields are refused)"},
                        "401": {"description": "Missing or wrong token"},
                        "403": {"description": "The token's role may not call this route"},
                        "429": {"description": "Too many failed token checks from this client"}
                    }
                }),
            );
        }
    }
    paths.insert(
        "/healthz".into(),
        serde_json::json!({"get": {"summary": "Liveness (no token)", "responses": {"200": {"description": "OK"}, "503": {"description": "The engine stopped"}}}}),
    );
    paths.insert(
        "/api/v1/blocklist.txt".into(),
        serde_json::json!({"get": {"summary": "The block set, one address or network a line (API token or response.blocklist_token)", "security": [{"bearer": []}], "responses": {"200": {"description": "text/plain"}, "401": {"description": "Missing or wrong token"}}}}),
    );
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Vigil API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}

/// Whether `role` may call `method path` (`path` as routed, e.g. `/api/v1/offenses/{id}`);
/// `None` when the route has no decision in [`ROUTES`].
pub fn allowed(role: Role, method: &Method, path: &str) -> Option<bool> {
    let (_, _, need, _) = ROUTES
        .iter()
        .find(|(m, p, _, _)| *p == path && *m == method.as_str())?;
    Some(match (need, role) {
        (Role::Ingest, r) => r == Role::Ingest || r == Role::Admin,
        (_, Role::Ingest) => false,
        (need, r) => r >= *need,
    })
}
