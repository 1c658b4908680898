//! Any bytes to `formats::kv::parse` with the default and a fuzzer-chosen separator: must
//! never panic and stay within `MAX_PAIRS`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::kv::{self, KvOptions};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(kv::parse(&text, &KvOptions::default()).len() <= kv::MAX_PAIRS);
    let mut chars = text.chars();
    if let (Some(pair), Some(kv_sep)) = (chars.next(), chars.next()) {
        let options = KvOptions {
            pair_separator: Some(pair),
            kv_separator: kv_sep,
        };
        assert!(kv::parse(chars.as_str(), &options).len() <= kv::MAX_PAIRS);
    }
});
