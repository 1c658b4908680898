//! Property tests for the structured formats: arbitrary input never panics and stays within
//! its bounds, and rendering values in a format then parsing gives them back.
#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use vigil_parsers::formats::kv::{self, KvOptions};
use vigil_parsers::formats::zeek::{ZeekLine, ZeekReader};
use vigil_parsers::formats::{cef, csv, json, leef};

/// Text that often looks like the formats: their special characters mixed with anything.
fn noisy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9 =|\\\\\"\t,:^.#x(){}\\[\\]-]{0,200}",
        "(CEF:0\\||LEEF:[012](\\.0)?\\|)[a-z|= \\\\\t^]{0,120}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_]{0,12}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cef_never_panics(text in noisy()) {
        if let Ok(record) = cef::parse(&text) {
            prop_assert!(record.extensions.len() <= cef::MAX_PAIRS);
            let _ = record.labelled();
        }
        if let Some(at) = cef::find(&text) {
            prop_assert!(text[at..].starts_with("CEF:"));
            let _ = cef::parse(&text[at..]);
        }
    }

    #[test]
    fn leef_never_panics(text in noisy()) {
        if let Ok(record) = leef::parse(&text) {
            prop_assert!(record.attributes.len() <= leef::MAX_PAIRS);
        }
        if let Some(at) = leef::find(&text) {
            prop_assert!(text[at..].starts_with("LEEF:"));
        }
    }

    #[test]
    fn leef_time_never_panics(value in noisy(), format in proptest::option::of("[yMdHhmsSazZXE '.:/-]{0,30}")) {
        let now = Utc.with_ymd_and_hms(2024, 3, 10, 8, 15, 30).unwrap();
        let _ = leef::leef_time_at(&value, format.as_deref(), now);
    }

    #[test]
    fn kv_never_panics(text in noisy(), sep in proptest::option::of(any::<char>()), kvsep in any::<char>()) {
        let options = KvOptions { pair_separator: sep, kv_separator: kvsep };
        prop_assert!(kv::parse(&text, &options).len() <= kv::MAX_PAIRS);
        prop_assert!(kv::parse(&text, &KvOptions::default()).len() <= kv::MAX_PAIRS);
    }

    #[test]
    fn json_never_panics(text in noisy(), max_pairs in 0usize..50, max_depth in 0usize..10) {
        if let Ok(pairs) = json::flatten(&text, max_pairs, max_depth) {
            prop_assert!(pairs.len() <= max_pairs);
        }
    }

    #[test]
    fn csv_never_panics(text in noisy(), delimiter in prop_oneof![Just(','), Just('\t'), Just('"'), any::<char>()]) {
        if let Ok(columns) = csv::split(&text, delimiter) {
            prop_assert!(!columns.is_empty() && columns.len() <= csv::MAX_COLUMNS);
        }
    }

    #[test]
    fn zeek_never_panics(lines in proptest::collection::vec(noisy(), 0..8)) {
        let mut reader = ZeekReader::new();
        for line in &lines {
            if let Ok(ZeekLine::Record(pairs)) = reader.line(line) {
                prop_assert!(pairs.len() <= reader.header().fields.len());
            }
        }
    }

    #[test]
    fn cef_extensions_round_trip(pairs in proptest::collection::vec((key(), "[^\\\\=\r\n]{0,20}"), 1..10)) {
        // Values trimmed of spaces, as the parser trims them; '=' and '\' escaped.
        let mut line = String::from("CEF:0|V|P|1|sig|name|5|");
        let want: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k, v.trim_matches(' ').to_string()))
            .collect();
        let rendered: Vec<String> = want.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&rendered.join(" "));
        let got = cef::parse(&line).unwrap().extensions;
        // A value that itself looks like ` key=` would split; the generator has no '=' in values.
        prop_assert_eq!(got, want);
    }

    #[test]
    fn leef_attributes_round_trip(
        pairs in proptest::collection::vec((key(), "[^\t^\r\n]{0,20}"), 1..10),
        caret in any::<bool>(),
    ) {
        let (spec, sep) = if caret { ("^|", "^") } else { ("x09|", "\t") };
        let rendered: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = format!("LEEF:2.0|V|P|1|E|{spec}{}", rendered.join(sep));
        prop_assert_eq!(leef::parse(&line).unwrap().attributes, pairs);
    }

    #[test]
    fn kv_quoted_values_round_trip(pairs in proptest::collection::vec((key(), any::<String>()), 0..10)) {
        let rendered: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        prop_assert_eq!(kv::parse(&rendered.join(" "), &KvOptions::default()), pairs);
    }

    #[test]
    fn json_flat_objects_round_trip(pairs in proptest::collection::vec((key(), any::<String>()), 0..10)) {
        let members: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
            .collect();
        let text = format!("{{{}}}", members.join(","));
        prop_assert_eq!(json::flatten(&text, 100, 10).unwrap(), pairs);
    }

    #[test]
    fn csv_quoted_fields_round_trip(fields in proptest::collection::vec("[^\r\n]{0,20}", 1..20)) {
        let rendered: Vec<String> = fields.iter().map(|f| format!("\"{}\"", f.replace('"', "\"\""))).collect();
        prop_assert_eq!(csv::split(&rendered.join(","), ',').unwrap(), fields);
    }
}
