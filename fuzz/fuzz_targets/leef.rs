//! Any bytes to `formats::leef::find`, `parse` and `leef_time_at`: must never panic; parsed
//! attributes stay within `MAX_PAIRS`.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::leef;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(at) = leef::find(&text) {
        assert!(text[at..].starts_with("LEEF:"));
        if let Ok(record) = leef::parse(&text[at..]) {
            assert!(record.attributes.len() <= leef::MAX_PAIRS);
            let Some(now) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() else {
                return;
            };
            let get = |key: &str| {
                record
                    .attributes
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            if let Some(dev_time) = get("devTime") {
                let _ = leef::leef_time_at(dev_time, get("devTimeFormat"), now);
            }
        }
    }
    // The input split in two as value and pattern.
    if let Some(now) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() {
        let (value, format) = text.split_once('\n').unwrap_or((&text, ""));
        let _ = leef::leef_time_at(value, Some(format), now);
        let _ = leef::leef_time_at(value, None, now);
    }
});
