//! Golden files, one harness: `fixtures/parsers/<vendor>/<case>.log` (the vendor parser
//! definitions, see `fixtures/parsers/SOURCE.md`) and `fixtures/normalize/<case>.log` (syslog
//! forms and OpenSSH, see `fixtures/normalize/SOURCE.md`), each beside `<case>.expected.json`.
//! Each line of a `.log` is one raw record as a collector receives it; the expectation holds,
//! per line, the normalized event or the rejection. `VIGIL_BLESS=1` rewrites the expectations;
//! review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use vigil_parsers::definitions::DefinitionSet;
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};

fn fixtures(folder: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(folder)
}

fn logs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(logs_under(&path));
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn every_parser_and_normalize_fixture_matches_its_golden_file() {
    let normalizer = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
    let received_at: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/udp/192.0.2.254",
        peer: "192.0.2.254".parse().ok(),
        received_at,
    };
    let bless = std::env::var_os("VIGIL_BLESS").is_some();
    let normalize_files = logs_under(&fixtures("normalize"));
    assert!(!normalize_files.is_empty());
    let mut files = logs_under(&fixtures("parsers"));
    assert!(!files.is_empty());
    files.extend(normalize_files);
    let mut cases = 0;
    let mut vendors = std::collections::BTreeSet::new();
    let mut normalize_cases = 0;
    let mut changed = Vec::new();
    for log in files {
        let text = std::fs::read(&log).unwrap();
        let got: Vec<serde_json::Value> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| match normalizer.normalize(line, &meta) {
                Ok(e) => serde_json::to_value(&e).unwrap(),
                Err(r) => serde_json::json!({"rejected": {"reason": r.reason, "detail": r.detail}}),
            })
            .collect();
        match log.parent().and_then(Path::file_name) {
            Some(dir) if dir == "normalize" => normalize_cases += got.len(),
            Some(vendor) => {
                cases += got.len();
                vendors.insert(vendor.to_owned());
            }
            None => {}
        }
        let expected_path = log.with_extension("expected.json");
        let rendered = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if bless {
            std::fs::write(&expected_path, &rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with VIGIL_BLESS=1)", expected_path.display())
        });
        if rendered != expected {
            changed.push(log.display().to_string());
        }
    }
    assert!(
        changed.is_empty(),
        "changed (review and rerun with VIGIL_BLESS=1): {changed:#?}"
    );
    assert!(vendors.len() >= 8, "{vendors:?}");
    assert!(cases >= 60, "{cases}");
    assert!(normalize_cases >= 20, "{normalize_cases}");
}
