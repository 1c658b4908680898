//! Stage 2 glue: loading the rule pack and turning the engine's detections into offenses.
//!
//! The rule engine itself (Sigma detection, correlation windows) is the pure crate
//! `vigil-correlate`; this module decides where rules come from and keeps offenses: a new
//! detection with the same (rule, index field, index value) as an open offense joins it, else
//! a new offense is created with a deterministic id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use vigil_correlate::{Detection, RuleError, RuleSet, RuleSource};
use vigil_parsers::Event;

use crate::store::{Offense, OffenseStatus, Store, StoreError};

pub mod ruletest;

/// The rule pack built into the binary, used when the rules folder does not exist.
pub const BUILTIN_RULES: &[(&str, &str)] = &[(
    "rules/ssh_brute_force.yml",
    include_str!("../../rules/ssh_brute_force.yml"),
)];

/// Reads every `*.yml` / `*.yaml` file of `dir` (sorted by name) as rule sources. When `dir`
/// does not exist, returns the built-in pack.
pub fn rule_sources(dir: &Path) -> std::io::Result<Vec<RuleSource>> {
    if !dir.exists() {
        return Ok(BUILTIN_RULES
            .iter()
            .map(|(path, text)| RuleSource {
                path: (*path).to_owned(),
                text: (*text).to_owned(),
            })
            .collect());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yml") | Some("yaml")
            )
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            Ok(RuleSource {
                text: std::fs::read_to_string(&p)?,
                path: p.display().to_string(),
            })
        })
        .collect()
}

/// Loads and compiles the rules of `dir` (or the built-in pack).
pub fn load_rules(dir: &Path) -> std::io::Result<(RuleSet, Vec<RuleError>)> {
    Ok(RuleSet::from_sources(&rule_sources(dir)?))
}

/// Deterministic offense id from (rule, index field, index value, first window start): a
/// replay or a restart over the same data finds the same offense instead of a duplicate.
pub fn offense_id(
    rule: &str,
    index_field: &str,
    index_value: &str,
    window_start: DateTime<Utc>,
) -> String {
    let mut h = Sha256::new();
    for part in [rule, index_field, index_value] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(window_start.timestamp_millis().to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Magnitude 0-10 from severity, relevance and credibility (severity weighs double, as the
/// thing an analyst triages on first), with one reason per factor.
pub fn magnitude(d: &Detection) -> (u8, Vec<String>) {
    let sev = u32::from(d.severity.min(10));
    let rel = u32::from(d.relevance.min(10));
    let cred = u32::from(d.credibility.min(10));
    let m = ((2 * sev + rel + cred) as f64 / 4.0).round() as u8;
    let level = d.level.as_deref().unwrap_or("unset");
    (
        m.min(10),
        vec![
            format!("severity {sev}/10 (rule level {level}), weight 2"),
            format!("relevance {rel}/10 (rule offense.relevance), weight 1"),
            format!("credibility {cred}/10 (rule offense.credibility), weight 1"),
        ],
    )
}

/// What one detection did to the offense table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenseChange {
    /// A new offense was opened.
    Created,
    /// Events joined an open offense.
    Updated,
}

/// Applies one detection: joins the open offense for its index or opens a new one, and stores
/// up to `max_events_per_offense` contributing events. Runs inside the caller's transaction.
pub fn apply_detection(
    store: &Store,
    d: &Detection,
    max_events_per_offense: u64,
    now: DateTime<Utc>,
) -> Result<(Offense, OffenseChange), StoreError> {
    let (magnitude, reasons) = magnitude(d);
    // `count` is exact; `events` may carry fewer (the engine keeps only times for events of a
    // key that was already firing).
    let count = d.count.max(1);
    let (mut offense, change) =
        match store.find_open_offense(&d.rule, &d.index_field, &d.index_value)? {
            Some(mut o) => {
                o.event_count += count;
                o.first_seen = o.first_seen.min(d.first_seen);
                o.last_seen = o.last_seen.max(d.last_seen);
                o.updated_at = now;
                (o, OffenseChange::Updated)
            }
            None => {
                let id = offense_id(&d.rule, &d.index_field, &d.index_value, d.window_start);
                // The same id may exist closed (a replay over data whose offense was closed): a
                // deterministic id must not resurrect it, so reopen under a suffixed id.
                let id = match store.get_offense(&id)? {
                    Some(existing) if existing.status == OffenseStatus::Closed => {
                        offense_id(&d.rule, &d.index_field, &d.index_value, now)
                    }
                    _ => id,
                };
                (
                    Offense {
                        id,
                        rule: d.rule.clone(),
                        title: d.title.clone(),
                        index_field: d.index_field.clone(),
                        index_value: d.index_value.clone(),
                        status: OffenseStatus::Open,
                        magnitude,
                        severity: d.severity,
                        relevance: d.relevance,
                        credibility: d.credibility,
                        magnitude_reasons: reasons.clone(),
                        level: d.level.clone(),
                        tags: d.tags.clone(),
                        first_seen: d.first_seen,
                        last_seen: d.last_seen,
                        event_count: count,
                        stored_events: 0,
                        window_start: d.window_start,
                        created_at: now,
                        updated_at: now,
                    },
                    OffenseChange::Created,
                )
            }
        };
    offense.magnitude = magnitude;
    offense.magnitude_reasons = reasons;
    let room = max_events_per_offense.saturating_sub(offense.stored_events) as usize;
    let keep: Vec<Arc<Event>> = d.events.iter().take(room).cloned().collect();
    let first_seq = offense.stored_events;
    offense.stored_events += keep.len() as u64;
    store.put_offense(&offense)?;
    store.add_offense_events(&offense.id, first_seq, &keep)?;
    Ok((offense, change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offense_ids_are_deterministic_and_distinct() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let a = offense_id("r", "source.ip", "203.0.113.7", t);
        assert_eq!(a, offense_id("r", "source.ip", "203.0.113.7", t));
        assert_ne!(a, offense_id("r", "source.ip", "203.0.113.8", t));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn builtin_rules_compile() -> std::io::Result<()> {
        let (rules, errors) = load_rules(Path::new("/nonexistent-rules-dir"))?;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!rules.is_empty());
        Ok(())
    }
}
