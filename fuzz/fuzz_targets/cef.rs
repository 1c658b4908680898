//! Any bytes to `formats::cef::find` and `parse`: must never panic; a found record starts at
//! `CEF:` and parsed extensions stay within `MAX_PAIRS`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::cef;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(at) = cef::find(&text) {
        assert!(text[at..].starts_with("CEF:"));
        if let Ok(record) = cef::parse(&text[at..]) {
            assert!(record.extensions.len() <= cef::MAX_PAIRS);
            assert!(record.labelled().len() <= record.extensions.len());
        }
    }
    let _ = cef::parse(&text);
});
