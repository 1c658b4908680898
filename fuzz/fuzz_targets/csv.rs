//! Any bytes to `formats::csv::split` with `,`, TAB and `|`: must never panic; a split line
//! has between 1 and `MAX_COLUMNS` columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_parsers::formats::csv;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for delimiter in [',', '\t', '|'] {
        if let Ok(columns) = csv::split(&text, delimiter) {
            assert!(!columns.is_empty() && columns.len() <= csv::MAX_COLUMNS);
        }
    }
});
