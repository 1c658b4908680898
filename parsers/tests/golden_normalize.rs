//! Golden files for normalization: `fixtures/normalize/<case>.log` beside
//! `<case>.expected.json` (see `fixtures/normalize/SOURCE.md`). `VIGIL_BLESS=1` rewrites the
//! expectations; review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use vigil_parsers::definitions::DefinitionSet;
use vigil_parsers::normalize::{NormalizeOptions, Normalizer, RecordMeta};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/normalize")
}

#[test]
fn every_normalize_fixture_matches_its_golden_file() {
    let normalizer = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
    let received_at: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
    let meta = RecordMeta {
        observer_type: "syslog",
        observer_id: "syslog/udp/192.0.2.254",
        peer: "192.0.2.254".parse().ok(),
        received_at,
    };
    let mut cases = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
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
        cases += got.len();
        let expected_path = log.with_extension("expected.json");
        let rendered = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&expected_path, &rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with VIGIL_BLESS=1)", expected_path.display())
        });
        assert_eq!(
            rendered,
            expected,
            "{} changed; review and rerun with VIGIL_BLESS=1",
            log.display()
        );
    }
    assert!(cases >= 20, "{cases}");
}
