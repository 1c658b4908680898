//! Helpers: events at second offsets, loading rule text, running an engine.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use vigil_correlate::{Detection, Engine, EngineLimits, RuleError, RuleSet, RuleSource};
use vigil_parsers::event::Event;

/// 2026-01-01T00:00:00Z plus `secs`.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(secs)
}

/// An event at `secs` with the given fields set.
pub fn ev(secs: i64, fields: &[(&str, &str)]) -> Arc<Event> {
    let mut e = Event::new(at(secs), at(secs));
    for (k, v) in fields {
        e.set(k, v).unwrap();
    }
    Arc::new(e)
}

/// Loads files, returning the set and errors. Rules written for log sources Vigil does not
/// serve (the Sigma specification's Windows examples) are applied to every event here rather
/// than refused, so the engine's semantics can be tested on them.
pub fn load_files(files: &[(&str, &str)]) -> (RuleSet, Vec<RuleError>) {
    let sources: Vec<RuleSource> = files
        .iter()
        .map(|(p, t)| RuleSource {
            path: (*p).to_owned(),
            text: (*t).to_owned(),
        })
        .collect();
    RuleSet::from_sources_with(
        &sources,
        &vigil_correlate::LoadOptions {
            apply_unserved_logsources: true,
            ..Default::default()
        },
    )
}

/// Loads one rule file that must load cleanly.
pub fn load(text: &str) -> RuleSet {
    let (set, errors) = load_files(&[("test.yml", text)]);
    assert!(errors.is_empty(), "unexpected errors: {errors:?}");
    set
}

/// Names of the detection rules `event` matches (checking the index against exhaustive
/// evaluation on the way).
pub fn matching(set: &RuleSet, event: &Event) -> Vec<String> {
    let indexed = set.matching_rules(event);
    assert_eq!(
        indexed,
        set.matching_rules_exhaustive(event),
        "index changed the result"
    );
    indexed
        .iter()
        .map(|i| set.rules()[*i].name.clone())
        .collect()
}

/// Whether the single-detection rule in `yaml` matches an event with `fields`.
pub fn hits(yaml: &str, fields: &[(&str, &str)]) -> bool {
    let set = load(yaml);
    !matching(&set, &ev(0, fields)).is_empty()
}

/// Runs events through a fresh engine.
pub fn run(set: RuleSet, limits: EngineLimits, events: &[Arc<Event>]) -> (Vec<Detection>, Engine) {
    let mut engine = Engine::new(Arc::new(set), limits);
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    (out, engine)
}

/// A detection rule `failed` matching `event.outcome: failure` (a base for correlations).
pub const FAILED: &str = "title: failed
name: failed
detection:
  sel: {event.outcome: failure}
  condition: sel
";

/// A detection rule `ok` matching `event.outcome: success` (a base for correlations).
pub const OK: &str = "title: ok
name: ok
detection:
  sel: {event.outcome: success}
  condition: sel
";
