//! Golden tests for the CEF and LEEF parsers against Apache Metron's test vectors in
//! `fixtures/cef-leef/` (see `fixtures/cef-leef/SOURCE.md`).
//!
//! Metron's expectations use its own output names (`ip_src_addr`, `DeviceVendor`,
//! `"JSON payload"` for a labelled `cs2`, ...). Our parsers return the keys as the format writes
//! them, so this harness builds a "Metron view" of each record with the small mapping Metron
//! applies (renames, header names, label resolution, numeric severity, `devTime`/`rt` to epoch
//! milliseconds) and compares the expected pairs against it. Deliberate differences are listed
//! in [`LENIENT`], each with a reason; every entry must be used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;
use vigil_parsers::formats::leef::leef_time_at;
use vigil_parsers::formats::{cef, leef, FormatError, Pairs};

/// Deliberate differences from Metron: (case name, Metron key, reason).
const LENIENT: &[(&str, &str, &str)] = &[
    (
        "testCustomLabelWithSpace",
        "Label with space",
        "only ArcSight custom-field families (cs, cn, cfp, c6a, flexString, ...) are resolved by their labels; an arbitrary X + XLabel pair is kept as two raw keys so that a vendor field that happens to end in Label cannot rename another field",
    ),
    (
        "testTimestampPriority: syslog RFC 5424 timestamp when no rt",
        "timestamp",
        "the syslog header time is the syslog layer's (the definition picks rt first, then the syslog stamp); the CEF parser only sees the record",
    ),
    (
        "testTimestampPriority: no time at all",
        "timestamp",
        "Metron falls back to the current time; Vigil's pipeline uses the receive time, outside the format parser",
    ),
    (
        "testCEFParserAdallom (Adallom)",
        "timestamp",
        "no rt: the time comes from the syslog header in the pipeline (and this header, -0400 without a colon, is one Metron cannot read either)",
    ),
    (
        "testCEFParserCyberArk (CyberArk)",
        "timestamp",
        "no rt: the time comes from the syslog header or the receive time in the pipeline",
    ),
    (
        "testLEEFParserSample line 1 (Trend Micro Deep Security)",
        "timestamp",
        "no devTime: Metron uses the parse time; Vigil's pipeline uses the receive time",
    ),
    (
        "testLEEFParserSample line 2 (Trend Micro Deep Security)",
        "timestamp",
        "no devTime: Metron uses the parse time; Vigil's pipeline uses the receive time",
    ),
    (
        "testLEEFParserSample line 3 (Trend Micro Deep Security)",
        "timestamp",
        "no devTime: Metron uses the parse time; Vigil's pipeline uses the receive time",
    ),
    (
        "testLEEFParserSample line 4 (Trend Micro Deep Security)",
        "timestamp",
        "no devTime: Metron uses the parse time; Vigil's pipeline uses the receive time",
    ),
    (
        "testLEEFParserSample line 2 (Trend Micro Deep Security)",
        "sev",
        "Metron cuts a value at its second '=' (split(\"=\") keeps two pieces: '8 cn1'); LEEF splits pairs on the delimiter only, so the value is the whole '8 cn1=37 cn1Label=Host ID'",
    ),
    (
        "testLEEFParserSample line 3 (Trend Micro Deep Security)",
        "sev",
        "Metron cuts a value at its second '=' ('6 cn1'); Vigil keeps the whole tab-delimited value",
    ),
    (
        "testLEEFParserSample line 3 (Trend Micro Deep Security)",
        "TrendMicroDsMalwareTargetType",
        "Metron cuts a value at its second '=' ('File System TrendMicroDsFileMD5'); Vigil keeps the whole tab-delimited value",
    ),
    (
        "testLEEFParserSample line 4 (Trend Micro Deep Security)",
        "sev",
        "Metron cuts a value at its second '=' ('6 cn1'); Vigil keeps the whole tab-delimited value",
    ),
];

/// Metron's renames: (Metron key, our raw key).
const CEF_RENAMES: &[(&str, &str)] = &[
    ("ip_src_addr", "src"),
    ("ip_dst_addr", "dst"),
    ("ip_src_port", "spt"),
    ("ip_dst_port", "dpt"),
    ("deviceAction", "act"),
    ("protocol", "app"),
];
const LEEF_RENAMES: &[(&str, &str)] = &[
    ("ip_src_addr", "src"),
    ("ip_dst_addr", "dst"),
    ("ip_src_port", "srcPort"),
    ("ip_dst_port", "dstPort"),
];

/// The clock of Metron's time-dependent cases (SOURCE.md), used for every case.
fn reference_now(case: &Value) -> DateTime<Utc> {
    let text = case["reference_now"]
        .as_str()
        .unwrap_or("2024-03-10T08:15:30.123Z");
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn fixture(name: &str) -> Vec<Value> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "fixtures",
        "cef-leef",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is json")
}

/// Metron's integer severity: a number as is; Low/Medium/High/Very-High 2/5/8/10; else 0.
fn metron_severity(severity: &str) -> String {
    match severity {
        s if s.parse::<i64>().is_ok() => s.to_string(),
        "Low" => "2".into(),
        "Medium" => "5".into(),
        "High" => "8".into(),
        "Very-High" => "10".into(),
        _ => "0".into(),
    }
}

/// Raw pairs renamed, labels resolved (Metron drops the custom key and its label), first
/// occurrence wins.
fn extension_view(
    view: &mut BTreeMap<String, String>,
    raw: &Pairs,
    labelled: &Pairs,
    renames: &[(&str, &str)],
) {
    let labels: BTreeSet<&str> = labelled.iter().map(|(l, _)| l.as_str()).collect();
    let mut consumed = BTreeSet::new();
    for (k, v) in raw {
        if let Some(base) = k.strip_suffix("Label") {
            let label = v.trim().trim_matches('"').trim();
            if labels.contains(label) && raw.iter().any(|(b, _)| b == base) {
                consumed.insert(base.to_string());
                consumed.insert(k.clone());
            }
        }
    }
    for (k, v) in raw {
        if consumed.contains(k) {
            continue;
        }
        let key = renames
            .iter()
            .find(|(_, ours)| ours == k)
            .map_or(k.as_str(), |(metron, _)| metron);
        view.entry(key.to_string()).or_insert_with(|| v.clone());
    }
    for (label, v) in labelled {
        view.entry(label.clone()).or_insert_with(|| v.clone());
    }
}

/// The record's time as Metron computes it from the record alone: `devTime` (with
/// `devTimeFormat`) or `rt`, in epoch milliseconds.
fn record_time(raw: &Pairs, time_key: &str, now: DateTime<Utc>) -> Option<String> {
    let get = |key: &str| raw.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let value = get(time_key)?;
    let format = get("devTimeFormat");
    leef_time_at(value, format, now).map(|t| t.timestamp_millis().to_string())
}

fn cef_view(input: &str, cef: &cef::Cef, now: DateTime<Utc>) -> BTreeMap<String, String> {
    let mut view = BTreeMap::new();
    view.insert("original_string".into(), input.to_string());
    view.insert("DeviceVendor".into(), cef.vendor.clone());
    view.insert("DeviceProduct".into(), cef.product.clone());
    view.insert("DeviceVersion".into(), cef.device_version.clone());
    view.insert("DeviceEvent".into(), cef.signature_id.clone());
    view.insert("Name".into(), cef.name.clone());
    view.insert("Severity".into(), metron_severity(&cef.severity));
    if let Some(t) = record_time(&cef.extensions, "rt", now) {
        view.insert("timestamp".into(), t);
    }
    extension_view(&mut view, &cef.extensions, &cef.labelled(), CEF_RENAMES);
    view
}

fn leef_view(input: &str, leef: &leef::Leef, now: DateTime<Utc>) -> BTreeMap<String, String> {
    let mut view = BTreeMap::new();
    view.insert("original_string".into(), input.to_string());
    view.insert("DeviceVendor".into(), leef.vendor.clone());
    view.insert("DeviceProduct".into(), leef.product.clone());
    view.insert("DeviceVersion".into(), leef.product_version.clone());
    view.insert("DeviceEvent".into(), leef.event_id.clone());
    if let Some(t) = record_time(&leef.attributes, "devTime", now) {
        view.insert("timestamp".into(), t);
    }
    extension_view(&mut view, &leef.attributes, &leef.labelled(), LEEF_RENAMES);
    view
}

/// Expected JSON scalar as our text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json_type_ok(value: &str, ty: &str) -> bool {
    match ty {
        "integer" => value.parse::<i64>().is_ok(),
        _ => true,
    }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    valid: usize,
    invalid: usize,
    values: usize,
    presence: usize,
    lenient_used: BTreeSet<(String, String)>,
    failures: Vec<String>,
}

impl Tally {
    fn lenient(&mut self, case: &str, key: &str) -> bool {
        let hit = LENIENT.iter().any(|(c, k, _)| *c == case && *k == key);
        if hit {
            self.lenient_used
                .insert((case.to_string(), key.to_string()));
        }
        hit
    }

    /// Checks one case against its Metron view (of the first record).
    fn check(&mut self, case: &Value, view: &BTreeMap<String, String>) {
        let name = case["name"].as_str().unwrap_or_default();
        if let Some(expected) = case["expected"].as_object() {
            for (key, want) in expected {
                match view.get(key) {
                    Some(got) if *got == text(want) => self.values += 1,
                    _ if self.lenient(name, key) => {}
                    got => self
                        .failures
                        .push(format!("{name}: {key}: expected {want}, got {got:?}")),
                }
            }
        }
        let mut present: Vec<&str> = case["expected_present"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(required) = case["expected_schema"]["required"].as_array() {
            present.extend(required.iter().filter_map(Value::as_str));
        }
        for key in present {
            if view.contains_key(key) {
                self.presence += 1;
            } else if !self.lenient(name, key) {
                self.failures.push(format!("{name}: {key} missing"));
            }
        }
        for key in case["expected_absent"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if view.contains_key(key) {
                self.failures.push(format!("{name}: {key} present"));
            } else {
                self.presence += 1;
            }
        }
        if let Some(types) = case["expected_schema"]["types"].as_object() {
            for (key, ty) in types {
                if let Some(got) = view.get(key) {
                    if json_type_ok(got, ty.as_str().unwrap_or_default()) {
                        self.presence += 1;
                    } else {
                        self.failures
                            .push(format!("{name}: {key}={got:?} is not {ty}"));
                    }
                }
            }
        }
        if let Some(fields) = case["expected_json_fields"].as_object() {
            for (key, members) in fields {
                let parsed: Option<Value> =
                    view.get(key).and_then(|v| serde_json::from_str(v).ok());
                for (member, want) in members.as_object().into_iter().flatten() {
                    if parsed.as_ref().map(|p| &p[member]) == Some(want) {
                        self.values += 1;
                    } else {
                        self.failures
                            .push(format!("{name}: {key}.{member} differs"));
                    }
                }
            }
        }
    }
}

/// Every record of `input`, one per line, found after any prefix (a syslog header).
fn records<T>(
    input: &str,
    find: fn(&str) -> Option<usize>,
    parse: fn(&str) -> Result<T, FormatError>,
) -> Result<Vec<(String, T)>, FormatError> {
    input
        .lines()
        .filter_map(|line| find(line).map(|at| parse(&line[at..]).map(|r| (line.to_string(), r))))
        .collect()
}

fn run<T>(
    tally: &mut Tally,
    file: &str,
    find: fn(&str) -> Option<usize>,
    parse: fn(&str) -> Result<T, FormatError>,
    view: fn(&str, &T, DateTime<Utc>) -> BTreeMap<String, String>,
) {
    for case in fixture(file) {
        tally.cases += 1;
        let name = case["name"].as_str().unwrap_or_default().to_string();
        let input = case["input"].as_str().unwrap_or_default();
        let parsed = records(input, find, parse);
        if case["valid"] == Value::Bool(false) {
            tally.invalid += 1;
            match parsed {
                Ok(r) if !r.is_empty() => tally.failures.push(format!("{name}: parsed")),
                _ => {}
            }
            continue;
        }
        tally.valid += 1;
        let records = match parsed {
            Ok(r) => r,
            Err(e) => {
                tally.failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let want = case["expected_message_count"].as_u64().unwrap_or(1) as usize;
        if records.len() != want {
            tally.failures.push(format!(
                "{name}: {} records, expected {want}",
                records.len()
            ));
            continue;
        }
        let (line, first) = &records[0];
        let v = view(line, first, reference_now(&case));
        tally.check(&case, &v);
    }
}

#[test]
fn metron_cef_and_leef_vectors_agree_except_the_lenient_list() {
    let mut tally = Tally::default();
    run(&mut tally, "cef.json", cef::find, cef::parse, cef_view);
    run(&mut tally, "leef.json", leef::find, leef::parse, leef_view);
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    let unused: Vec<_> = LENIENT
        .iter()
        .filter(|(c, k, _)| !tally.lenient_used.contains(&(c.to_string(), k.to_string())))
        .collect();
    assert!(unused.is_empty(), "unused lenient entries: {unused:#?}");
    assert_eq!((tally.cases, tally.valid, tally.invalid), (34, 32, 2));
    // Values compared equal, and keys checked present/absent/typed.
    assert_eq!((tally.values, tally.presence), (96, 118));
}

#[test]
fn invalid_cases_are_errors_from_parse() {
    for file in ["cef.json", "leef.json"] {
        for case in fixture(file) {
            if case["valid"] == Value::Bool(false) {
                let input = case["input"].as_str().unwrap();
                assert!(cef::find(input).is_none() && leef::find(input).is_none());
                assert_eq!(cef::parse(input).unwrap_err().kind, "cef_header");
                assert_eq!(leef::parse(input).unwrap_err().kind, "leef_header");
            }
        }
    }
}
