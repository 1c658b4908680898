//! Random and mutated input to every decoder: never a panic, and the state stays bounded.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use vigil_flows::{FlowDecoder, Limits, SflowDecoder, SflowLimits};

fn small_limits() -> Limits {
    Limits {
        max_exporters: 4,
        max_templates_per_exporter: 16,
        max_domains_per_exporter: 4,
        max_pending_sets_per_exporter: 4,
        max_pending_bytes_per_exporter: 4096,
        max_pending_bytes_total: 8192,
        ..Limits::default()
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root.join("netflow"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for entry in std::fs::read_dir(root.join("sflow")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let hex = v["hex"].as_str().unwrap();
            out.push(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect(),
            );
        }
    }
    out
}

fn feed_all(datagrams: &[Vec<u8>]) {
    let now = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let limits = small_limits();
    let mut flows = FlowDecoder::new(limits.clone());
    let mut sflow = SflowDecoder::new(SflowLimits::default());
    let mut out = Vec::new();
    let mut sout = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        let exporter = SocketAddr::from(([192, 0, 2, (i % 6) as u8], 2055));
        let _ = flows.decode(exporter, d, now, &mut out);
        let _ = sflow.decode(exporter, d, now, &mut sout);
        assert!(flows.exporter_count() <= limits.max_exporters);
        assert!(flows.template_count() <= limits.max_exporters * limits.max_templates_per_exporter);
        assert!(flows.pending().1 <= limits.max_pending_bytes_total);
        out.clear();
        sout.clear();
    }
    flows.expire(now + chrono::Duration::days(1));
    assert_eq!(flows.exporter_count(), 0);
    assert_eq!(flows.pending(), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Arbitrary bytes behind each version number.
    #[test]
    fn random_bytes(version in prop::sample::select(vec![5u8, 9, 10, 0, 7]), body in prop::collection::vec(any::<u8>(), 0..1600)) {
        let mut p = vec![0, version];
        p.extend_from_slice(&body);
        feed_all(&[p.clone(), body]);
    }

    /// Fixture datagrams with random byte edits, truncation and splicing, fed in sequence to one
    /// decoder so mutated templates meet mutated data.
    #[test]
    fn mutated_fixtures(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..24), picks in prop::collection::vec(any::<prop::sample::Index>(), 1..8)) {
        let corpus = corpus();
        let mut datagrams: Vec<Vec<u8>> = picks.iter().map(|i| i.get(&corpus).clone()).collect();
        for (which, at, byte, op) in edits {
            let n = datagrams.len();
            let d = &mut datagrams[which.index(n)];
            if d.is_empty() {
                continue;
            }
            let pos = at.index(d.len());
            match op {
                0 => d[pos] = byte,
                1 => d.truncate(pos),
                2 => d.insert(pos, byte),
                _ => d[pos] ^= 0xff,
            }
        }
        feed_all(&datagrams);
    }
}

/// Every fixture fed to both decoders (wrong protocol included) in one deterministic pass.
#[test]
fn whole_corpus_both_decoders() {
    feed_all(&corpus());
}
