//! Any bytes through the service's per-record path: syslog parse, the built-in parser
//! definitions (OpenSSH, ...), into an Event or a Rejection. Must never panic.
#![no_main]

use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_parsers::definitions::DefinitionSet;
use vigil_parsers::normalize::{InvalidUtf8Policy, NormalizeOptions, Normalizer, RecordMeta};

fn normalizers() -> &'static [Normalizer; 2] {
    static N: OnceLock<[Normalizer; 2]> = OnceLock::new();
    N.get_or_init(|| {
        let with = |invalid_utf8| {
            Normalizer::new(
                DefinitionSet::builtin(),
                NormalizeOptions {
                    invalid_utf8,
                    ..NormalizeOptions::default()
                },
            )
        };
        [with(InvalidUtf8Policy::DeadLetter), with(InvalidUtf8Policy::Replace)]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(received_at) = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 30).single() else {
        return;
    };
    let meta = RecordMeta {
        observer_type: "fuzz",
        observer_id: "fuzz",
        peer: None,
        received_at,
    };
    for n in normalizers() {
        match n.normalize(data, &meta) {
            Ok(event) => assert_eq!(event.raw, data),
            Err(rejection) => assert!(!rejection.reason.is_empty()),
        }
    }
});
