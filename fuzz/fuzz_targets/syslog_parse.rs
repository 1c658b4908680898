//! Any bytes through every syslog parser: must never panic. Checks a few invariants too.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_parsers::syslog::{self, rfc3164, rfc5424, Format, ParseOptions};

fuzz_target!(|data: &[u8]| {
    let Some(reference) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() else {
        return;
    };
    let opts = ParseOptions::at(reference);
    if let Ok(msg) = syslog::parse(data, &opts) {
        // PRI-derived fields agree, and file lines carry none.
        match msg.format {
            Format::FileLine => assert!(msg.priority.is_none() && msg.facility.is_none()),
            _ => {
                let pri = msg.priority.unwrap_or(0);
                assert!(pri <= 191);
                assert_eq!(msg.facility, Some(pri / 8));
                assert_eq!(msg.severity, Some(pri % 8));
            }
        }
        assert!(msg.message.as_ref().is_none_or(|m| !m.is_empty()));
    }
    let _ = rfc5424::parse(data);
    let _ = rfc3164::parse(data, &opts);
});
