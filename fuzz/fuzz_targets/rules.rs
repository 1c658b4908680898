//! Any text as a rule file (one or more YAML documents; a NUL byte splits it into two files)
//! through `vigil_correlate::RuleSet::from_sources_with`, with `expand` placeholders, a
//! reference lookup and unserved logsources allowed so every compile path is reachable. When
//! rules load, an `Engine` over them is fed a few events built from the same text (its
//! `key: value` lines become fields, its logsource selects the events it names), time is advanced
//! past every deadline, and the windows are snapshotted and restored into a fresh engine.
//! Must never panic; the engine limits keep memory bounded.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_correlate::fields::{logsource_filter, resolve_field};
use vigil_correlate::reference::ReferenceLookup;
use vigil_correlate::{Engine, EngineLimits, LoadOptions, RuleSet, RuleSource};
use vigil_parsers::event::{Event, FieldValue};

/// Two reference sets: `threat_intel` holds the 203.0.113.0/24 documentation network,
/// `fuzz` every value containing `x`.
#[derive(Debug)]
struct Sets;

impl ReferenceLookup for Sets {
    fn set_id(&self, name: &str) -> Option<usize> {
        match name {
            "threat_intel" => Some(0),
            "fuzz" => Some(1),
            _ => None,
        }
    }
    fn contains(&self, set: usize, value: &FieldValue<'_>) -> bool {
        let text = value.as_text();
        match set {
            0 => text.starts_with("203.0.113."),
            _ => text.contains('x'),
        }
    }
}

fn options() -> LoadOptions {
    let mut placeholders = BTreeMap::new();
    placeholders.insert(
        "Admins".to_owned(),
        vec!["root".to_owned(), "admin*".to_owned()],
    );
    placeholders.insert("fuzz".to_owned(), vec!["x".to_owned()]);
    LoadOptions {
        placeholders,
        apply_unserved_logsources: true,
        reference: Some(Arc::new(Sets)),
        disabled: std::iter::once("disabled_rule".to_owned()).collect(),
    }
}

/// What the events are built from: up to 48 `(field, value)` pairs from the text's `key: value`
/// lines (modifiers cut, Sigma names resolved, quotes and wildcards stripped; a `- item` line
/// gives its value to the last key), the fields named under `group-by`, `field` or `index` (so
/// correlations find their keys and counted values), and the logsource parts named in it.
#[derive(Default)]
struct Shape {
    pairs: Vec<(String, String)>,
    named: Vec<(String, bool)>,
    logsource: [Option<String>; 3],
}

fn shape(text: &str) -> Shape {
    let mut out = Shape::default();
    let mut last: Option<String> = None;
    let clean = |v: &str| -> String {
        v.trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .chars()
            .filter(|&c| c != '*' && c != '?')
            .take(256)
            .collect()
    };
    let name = |out: &mut Shape, key: &str, value: &str| {
        // `group-by` and `index` fields get one value (a key); `field` one per event.
        let counted = key == "field";
        if matches!(key, "group-by" | "field" | "index") && !value.is_empty() && out.named.len() < 8
        {
            out.named.push((resolve_field(value), counted));
        }
    };
    for line in text.lines().take(512) {
        if out.pairs.len() >= 48 {
            break;
        }
        let t = line.trim();
        if let Some(item) = t.strip_prefix("- ") {
            if let Some(k) = last.clone() {
                let v = clean(item);
                name(&mut out, &k, &v);
                out.pairs.push((k, v));
            }
            continue;
        }
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '\'' || c == '"');
        if key.is_empty() || key.len() > 128 {
            continue;
        }
        let field = key.split('|').next().unwrap_or(key);
        let value = clean(value);
        match field {
            "product" => out.logsource[0] = Some(value.clone()),
            "service" => out.logsource[1] = Some(value.clone()),
            "category" => out.logsource[2] = Some(value.clone()),
            _ => {}
        }
        name(&mut out, field, &value);
        let field = resolve_field(field);
        last = Some(field.clone());
        if !value.is_empty() {
            out.pairs.push((field, value));
        }
    }
    out
}

/// Event `i` at `at`: common fields, then the text's pairs, then the named fields (counted ones
/// differ per event, key ones are only filled in), then one field the rule's logsource selects.
fn event(
    at: DateTime<Utc>,
    i: u32,
    shape: &Shape,
    pairs: bool,
    select: Option<&(&str, &str)>,
    raw: &[u8],
) -> Arc<Event> {
    let mut e = Event::new(at, at);
    e.raw = raw.iter().copied().take(512).collect();
    // Values that do not fit a typed field are refused; the others are what rules test.
    for (k, v) in [
        ("source.ip", "203.0.113.7"),
        ("destination.ip", "198.51.100.1"),
        ("destination.port", "22"),
        ("user.name", "root"),
        ("host.name", "bastion1"),
    ] {
        let _ = e.set(k, v);
    }
    if pairs {
        for (k, v) in &shape.pairs {
            let _ = e.set(k, v);
        }
        for (k, counted) in &shape.named {
            if *counted {
                let _ = e.set(k, &(1000 + i).to_string());
            } else if e.get(k).is_none() {
                let _ = e.set(k, "203.0.113.7");
            }
        }
    }
    if let Some((k, v)) = select {
        let _ = e.set(k, v);
    }
    Arc::new(e)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, second) = text.split_once('\0').unwrap_or((&text, ""));
    let mut sources = vec![RuleSource {
        path: "fuzz/a.yml".to_owned(),
        text: first.to_owned(),
    }];
    if !second.is_empty() {
        sources.push(RuleSource {
            path: "fuzz/b.yml".to_owned(),
            text: second.to_owned(),
        });
    }
    let (set, errors) = RuleSet::from_sources_with(&sources, &options());
    for e in &errors {
        // Every refusal says something.
        assert!(!e.to_string().is_empty());
    }
    if set.is_empty() {
        return;
    }
    let Some(t0) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() else {
        return;
    };
    let shape = shape(&text);
    let ls = &shape.logsource;
    let any_of = logsource_filter(ls[0].as_deref(), ls[1].as_deref(), ls[2].as_deref())
        .unwrap_or_default();
    let limits = EngineLimits {
        max_keys_per_rule: 64,
        max_events_per_key: 64,
        max_values_per_key: 64,
        max_payload_bytes: 1 << 20,
        ..EngineLimits::default()
    };
    let rules = Arc::new(set);
    let mut engine = Engine::new(Arc::clone(&rules), limits);
    let mut out = Vec::new();
    // Twelve matching events 20 s apart (thresholds like `gte: 10` are reached), one without
    // the text's fields, one out of order, one after most windows closed.
    let mut events: Vec<Arc<Event>> = (0..12u32)
        .map(|i| {
            let select = if i % 2 == 0 { any_of.first() } else { any_of.last() };
            let at = t0 + Duration::seconds(20 * i64::from(i));
            event(at, i, &shape, true, select, data)
        })
        .collect();
    events.push(event(t0 + Duration::seconds(30), 12, &shape, false, any_of.first(), b""));
    events.push(event(t0 + Duration::seconds(5), 13, &shape, true, any_of.first(), data));
    events.push(event(t0 + Duration::hours(2), 14, &shape, true, any_of.first(), data));
    for e in &events {
        engine.process(e, &mut out);
        assert!(out.len() < 100_000);
    }
    let snap = engine.snapshot(|_| true);
    engine.advance(t0 + Duration::days(400), &mut out);
    for d in &out {
        assert!(d.first_seen <= d.last_seen, "{d:?}");
    }
    out.clear();

    // The windows move to a fresh engine over the same rules.
    let mut other = Engine::new(rules, limits);
    if let Err(e) = other.restore(snap) {
        panic!("restoring a snapshot of the same rules failed: {e}");
    }
    other.process(&events[5], &mut out);
    other.advance(t0 + Duration::days(400), &mut out);
});
