//! Any bytes, split into several datagrams (2-byte big-endian length prefixes), through ONE
//! `vigil_flows::FlowDecoder` so templates learned from earlier datagrams are used by later
//! ones (NetFlow v5 / v9 / IPFIX, chosen by each datagram's version field): must never panic,
//! exporter, template and pending-buffer state stay within the limits, and every record's
//! compact form (how it crosses the spool) reads back as the record.
#![no_main]

use chrono::{Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vigil_flows::{FlowDecoder, Limits};

fuzz_target!(|data: &[u8]| {
    let Some(start) = Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).single() else {
        return;
    };
    let limits = Limits {
        max_exporters: 4,
        max_templates_per_exporter: 32,
        max_domains_per_exporter: 4,
        max_pending_sets_per_exporter: 8,
        max_pending_bytes_per_exporter: 8192,
        max_pending_bytes_total: 16384,
        ..Limits::default()
    };
    let mut decoder = FlowDecoder::new(limits.clone());
    let mut out = Vec::new();
    let mut rest = data;
    let mut i: i64 = 0;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let exporter = std::net::SocketAddr::from(([192, 0, 2, (i % 3) as u8], 2055));
        let now = start + Duration::seconds(i * 97);
        if let Ok(summary) = decoder.decode(exporter, datagram, now, &mut out) {
            assert!(summary.records <= out.len());
        }
        // Every record crosses the spool in its compact form and comes back the same (less
        // its list of decoded fields, which is not carried).
        for rec in &out {
            let mut bytes = Vec::new();
            rec.encode_compact(&mut bytes);
            let mut expected = rec.clone();
            expected.fields = vigil_flows::Fields::default();
            assert_eq!(vigil_flows::FlowRecord::decode_compact(&bytes).ok(), Some(expected));
        }
        if i % 5 == 4 {
            decoder.expire(now);
        }
        assert!(decoder.exporter_count() <= limits.max_exporters);
        assert!(decoder.pending().1 <= limits.max_pending_bytes_total);
        out.clear();
        i += 1;
    }
    // The whole input as one datagram, too.
    let whole = std::net::SocketAddr::from(([192, 0, 2, 9], 2055));
    let _ = decoder.decode(whole, data, start, &mut out);
});
