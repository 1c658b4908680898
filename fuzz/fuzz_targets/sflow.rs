//! Any bytes to `vigil_flows::SflowDecoder`, whole and split into 2-byte length-prefixed
//! datagrams on one decoder: must never panic; the summary agrees with the records produced.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_flows::{SflowDecoder, SflowLimits, SflowRecord};

fuzz_target!(|data: &[u8]| {
    let Some(now) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() else {
        return;
    };
    let exporter = std::net::SocketAddr::from(([192, 0, 2, 1], 6343));
    let mut decoder = SflowDecoder::new(SflowLimits::default());
    let mut out = Vec::new();
    if let Ok(summary) = decoder.decode(exporter, data, now, &mut out) {
        let flows = out.iter().filter(|r| matches!(r, SflowRecord::Flow(_))).count();
        assert_eq!(flows, summary.flows);
        assert_eq!(out.len(), summary.flows + summary.counters + summary.discards);
        assert!(summary.samples <= summary.samples_declared as usize);
    }
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        out.clear();
        let _ = decoder.decode(exporter, datagram, now, &mut out);
    }
});
