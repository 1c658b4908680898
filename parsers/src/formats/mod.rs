//! Structured log formats, pure: text in, named values out. No I/O, never a panic.
//!
//! Each parser returns the record's named values as [`Pairs`], in the order they appear, with
//! keys as the format writes them (`src`, `cs1Label`, `id.orig_h`, ...). Parser definitions map
//! those keys onto the event schema (`parsers/definitions/*.yml`, `extract:`), so the formats
//! themselves know nothing of Vigil's field names.
//!
//! - [`cef`]: ArcSight CEF (header and extension escaping, `key=value with spaces`, custom
//!   `cs1`/`cs1Label` pairs), also found inside a syslog MSG.
//! - [`leef`]: IBM LEEF 1.0 and 2.0 (custom delimiter, including hex like `x09`).
//! - [`kv`]: `key=value` text (quoted values, repeated keys kept in order).
//! - [`json`]: a JSON object flattened to dotted paths (`a.b`, arrays as `a.0`).
//! - [`csv`]: one delimited line split into columns (quoted fields).
//! - [`zeek`]: Zeek TSV logs (`#separator`, `#fields`, `#types` headers; `-` unset, `(empty)`).

pub mod cef;
pub mod csv;
pub mod json;
pub mod kv;
pub mod leef;
pub mod zeek;

/// Named values of one record, in order of appearance (keys may repeat).
pub type Pairs = Vec<(String, String)>;

/// Why a record is not in the expected format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct FormatError {
    /// Stable lowercase reason label for metrics and dead letters (`cef_header`,
    /// `leef_header`, `json`, `csv`, `zeek`, ...).
    pub kind: &'static str,
    /// What is wrong, lowercase, no trailing period.
    pub detail: String,
}

impl FormatError {
    /// A new error.
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        FormatError {
            kind,
            detail: detail.into(),
        }
    }
}

/// Test helper: pairs from string literals.
#[cfg(test)]
pub(crate) fn test_pairs(list: &[(&str, &str)]) -> Pairs {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
