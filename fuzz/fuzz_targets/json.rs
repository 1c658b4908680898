//! Any bytes to `formats::json::flatten`: must never panic (deep nesting included) and never
//! return more than `max_pairs` pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::json;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (max_pairs, max_depth) in [(1024, 16), (3, 2)] {
        if let Ok(pairs) = json::flatten(&text, max_pairs, max_depth) {
            assert!(pairs.len() <= max_pairs);
        }
    }
});
