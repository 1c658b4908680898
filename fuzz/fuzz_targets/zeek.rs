//! Any bytes, split into lines, through one `formats::zeek::ZeekReader`: must never panic; a
//! record never has more values than `#fields` names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::zeek::{ZeekLine, ZeekReader};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut reader = ZeekReader::new();
    for line in text.lines() {
        if let Ok(ZeekLine::Record(pairs)) = reader.line(line) {
            assert!(pairs.len() <= reader.header().fields.len());
        }
    }
});
