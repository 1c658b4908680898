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
pub const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/api/v1/offenses", Role::Viewer),
    ("GET", "/api/v1/offenses/{id}", Role::Viewer),
    ("PATCH", "/api/v1/offenses/{id}", Role::Analyst),
    ("POST", "/api/v1/offenses/{id}/notes", Role::Analyst),
    ("GET", "/api/v1/dead-letters", Role::Viewer),
    ("GET", "/api/v1/flows", Role::Viewer),
    ("GET", "/api/v1/response/decisions", Role::Viewer),
    ("GET", "/api/v1/sources", Role::Viewer),
    ("GET", "/api/v1/assets", Role::Viewer),
    ("GET", "/api/v1/reference-sets", Role::Viewer),
    ("GET", "/api/v1/reference-sets/{name}", Role::Viewer),
    (
        "POST",
        "/api/v1/reference-sets/{name}/entries",
        Role::Responder,
    ),
    (
        "DELETE",
        "/api/v1/reference-sets/{name}/entries",
        Role::Responder,
    ),
    ("GET", "/api/v1/reference-maps/{name}", Role::Viewer),
    (
        "POST",
        "/api/v1/reference-maps/{name}/entries",
        Role::Responder,
    ),
    (
        "DELETE",
        "/api/v1/reference-maps/{name}/entries",
        Role::Responder,
    ),
    ("POST", "/api/v1/ingest", Role::Ingest),
    ("GET", "/api/v1/audit", Role::Admin),
    ("GET", "/metrics", Role::Viewer),
];

/// Whether `role` may call `method path` (`path` as routed, e.g. `/api/v1/offenses/{id}`);
/// `None` when the route has no decision in [`ROUTES`].
pub fn allowed(role: Role, method: &Method, path: &str) -> Option<bool> {
    let (_, _, need) = ROUTES
        .iter()
        .find(|(m, p, _)| *p == path && *m == method.as_str())?;
    Some(match (need, role) {
        (Role::Ingest, r) => r == Role::Ingest || r == Role::Admin,
        (_, Role::Ingest) => false,
        (need, r) => r >= *need,
    })
}
