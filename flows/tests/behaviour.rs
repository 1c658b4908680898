//! Decoder behaviour on hand-built packets: template expiry/refresh/withdrawal, data before
//! template and its bounds, sampling from options data, sequence-gap counting per version,
//! absurd templates and floods, truncation at every byte length, sFlow counter samples.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use vigil_flows::{
    DecodeError, FieldValue, FlowDecoder, FlowRecord, Limits, RecordKind, SflowDecoder,
    SflowLimits, SflowRecord,
};

fn exporter() -> SocketAddr {
    "198.51.100.7:4739".parse().unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

// ---- packet builders -------------------------------------------------------------------

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// IPFIX template record: id, then (element id, length) pairs (enterprise bit not set).
fn ipfix_template(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (f, l) in fields {
        v.extend_from_slice(&f.to_be_bytes());
        v.extend_from_slice(&l.to_be_bytes());
    }
    v
}

fn ipfix_options_template(id: u16, scope: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    v.extend_from_slice(&scope.to_be_bytes());
    for (f, l) in fields {
        v.extend_from_slice(&f.to_be_bytes());
        v.extend_from_slice(&l.to_be_bytes());
    }
    v
}

fn ipfix(seq: u32, domain: u32, export: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = sets.concat();
    let mut v = Vec::new();
    v.extend_from_slice(&10u16.to_be_bytes());
    v.extend_from_slice(&((body.len() + 16) as u16).to_be_bytes());
    v.extend_from_slice(&export.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&domain.to_be_bytes());
    v.extend_from_slice(&body);
    v
}

fn v9(seq: u32, source_id: u32, uptime: u32, secs: u32, flowsets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&9u16.to_be_bytes());
    v.extend_from_slice(&(flowsets.len() as u16).to_be_bytes());
    v.extend_from_slice(&uptime.to_be_bytes());
    v.extend_from_slice(&secs.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&source_id.to_be_bytes());
    v.extend_from_slice(&flowsets.concat());
    v
}

fn v9_options_template(id: u16, scope: &[(u16, u16)], options: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&((scope.len() * 4) as u16).to_be_bytes());
    v.extend_from_slice(&((options.len() * 4) as u16).to_be_bytes());
    for (f, l) in scope.iter().chain(options) {
        v.extend_from_slice(&f.to_be_bytes());
        v.extend_from_slice(&l.to_be_bytes());
    }
    v
}

/// The flow template used below: src/dst IPv4, ports, protocol, octets, packets.
const FLOW_FIELDS: [(u16, u16); 7] = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)];

fn flow_data(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    bytes: u64,
    packets: u64,
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.push(6);
    v.extend_from_slice(&bytes.to_be_bytes());
    v.extend_from_slice(&packets.to_be_bytes());
    v
}

fn template_msg(seq: u32) -> Vec<u8> {
    ipfix(
        seq,
        1,
        1_714_564_800,
        &[set(2, &ipfix_template(256, &FLOW_FIELDS))],
    )
}

fn data_msg(seq: u32, records: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..records)
        .map(|i| flow_data([10, 0, 0, 1], [10, 0, 0, 2], 40000 + i as u16, 443, 1500, 3))
        .collect::<Vec<_>>()
        .concat();
    ipfix(seq, 1, 1_714_564_800, &[set(256, &body)])
}

fn decode(d: &mut FlowDecoder, payload: &[u8], now: DateTime<Utc>) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    d.decode(exporter(), payload, now, &mut out).unwrap();
    out
}

// ---- templates ---------------------------------------------------------------------------

#[test]
fn template_expiry_and_refresh() {
    let mut d = FlowDecoder::new(Limits::default()); // 30 min TTL
    assert!(decode(&mut d, &template_msg(0), t0()).is_empty());
    assert_eq!(
        decode(&mut d, &data_msg(0, 2), t0() + Duration::minutes(10)).len(),
        2
    );

    // Refreshed at +20 min: still valid at +45 min.
    decode(&mut d, &template_msg(2), t0() + Duration::minutes(20));
    assert_eq!(d.stats().templates_refreshed, 1);
    assert_eq!(
        decode(&mut d, &data_msg(2, 1), t0() + Duration::minutes(45)).len(),
        1
    );

    // Not refreshed for more than 30 min: expired on use, the data set waits in the buffer.
    assert!(decode(&mut d, &data_msg(3, 1), t0() + Duration::minutes(51)).is_empty());
    assert_eq!(d.stats().templates_expired, 1);
    assert_eq!(d.pending().0, 1);
    // The template comes back: the buffered set is decoded.
    let out = decode(&mut d, &template_msg(4), t0() + Duration::minutes(52));
    assert_eq!(out.len(), 1);
    assert_eq!(d.stats().pending_decoded, 1);

    // expire() drops templates and idle state on its own.
    d.expire(t0() + Duration::minutes(83));
    assert_eq!(d.template_count(), 0);
    assert_eq!(d.stats().templates_expired, 2);
}

#[test]
fn template_change_replaces_layout() {
    let mut d = FlowDecoder::new(Limits::default());
    decode(&mut d, &template_msg(0), t0());
    let changed = ipfix(0, 1, 0, &[set(2, &ipfix_template(256, &[(8, 4), (12, 4)]))]);
    decode(&mut d, &changed, t0());
    assert_eq!(d.stats().templates_changed, 1);
    let data = ipfix(0, 1, 0, &[set(256, &[1, 2, 3, 4, 5, 6, 7, 8])]);
    let out = decode(&mut d, &data, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst_addr, Some("5.6.7.8".parse().unwrap()));
}

#[test]
fn template_withdrawal() {
    let mut d = FlowDecoder::new(Limits::default());
    decode(&mut d, &template_msg(0), t0());
    let other = ipfix(0, 1, 0, &[set(2, &ipfix_template(257, &FLOW_FIELDS))]);
    decode(&mut d, &other, t0());
    assert_eq!(d.template_count(), 2);

    // Withdraw 256 (field count 0).
    let withdraw = ipfix(0, 1, 0, &[set(2, &[1, 0, 0, 0])]);
    decode(&mut d, &withdraw, t0());
    assert_eq!(d.stats().templates_withdrawn, 1);
    assert_eq!(d.template_count(), 1);
    assert!(
        decode(&mut d, &data_msg(0, 1), t0()).is_empty(),
        "data for a withdrawn template waits"
    );

    // Withdraw all templates of the domain (template id = set id 2).
    let withdraw_all = ipfix(0, 1, 0, &[set(2, &[0, 2, 0, 0])]);
    decode(&mut d, &withdraw_all, t0());
    assert_eq!(d.template_count(), 0);
    assert_eq!(d.stats().templates_withdrawn, 2);
}

#[test]
fn templates_are_per_exporter_and_domain() {
    let mut d = FlowDecoder::new(Limits::default());
    decode(&mut d, &template_msg(0), t0());
    // Same template id, other domain: unknown there.
    let other_domain = ipfix(0, 2, 0, &[set(256, &flow_data([1; 4], [2; 4], 1, 2, 3, 4))]);
    assert!(decode(&mut d, &other_domain, t0()).is_empty());
    // Other exporter: unknown there too.
    let mut out = Vec::new();
    d.decode(
        "198.51.100.8:4739".parse().unwrap(),
        &data_msg(0, 1),
        t0(),
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    assert_eq!(d.stats().pending_buffered, 2);
}

// ---- data before template ----------------------------------------------------------------

#[test]
fn data_before_template_is_buffered_then_decoded() {
    let mut d = FlowDecoder::new(Limits::default());
    let mut out = Vec::new();
    let s = d
        .decode(exporter(), &data_msg(0, 3), t0(), &mut out)
        .unwrap();
    assert_eq!((s.records, s.sets_buffered), (0, 1));
    let s = d
        .decode(exporter(), &template_msg(3), t0(), &mut out)
        .unwrap();
    assert_eq!((s.records, s.sets_from_buffer), (3, 1));
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].src_port, Some(40000));
    assert_eq!(d.pending(), (0, 0));
}

#[test]
fn pending_buffer_bounds() {
    let data = |tid: u16| ipfix(0, 1, 0, &[set(tid, &[0u8; 96])]);
    // Count bound per exporter.
    let limits = Limits {
        max_pending_sets_per_exporter: 2,
        ..Limits::default()
    };
    let mut d = FlowDecoder::new(limits);
    for tid in 300..305 {
        decode(&mut d, &data(tid), t0());
    }
    assert_eq!(d.pending().0, 2);
    assert_eq!(d.stats().pending_evicted, 3);
    assert_eq!(d.stats().pending_evicted_bytes, 3 * 96);

    // Byte bound per exporter.
    let limits = Limits {
        max_pending_bytes_per_exporter: 250,
        ..Limits::default()
    };
    let mut d = FlowDecoder::new(limits);
    for tid in 300..305 {
        decode(&mut d, &data(tid), t0());
    }
    assert_eq!(d.pending(), (2, 192));
    // A set larger than the bound is dropped outright.
    decode(&mut d, &ipfix(0, 1, 0, &[set(400, &[0u8; 300])]), t0());
    assert_eq!(d.stats().pending_dropped, 1);

    // Total bound over exporters: the second exporter cannot take the first one's budget.
    let limits = Limits {
        max_pending_bytes_total: 200,
        ..Limits::default()
    };
    let mut d = FlowDecoder::new(limits);
    decode(&mut d, &data(300), t0());
    decode(&mut d, &data(301), t0());
    let mut out = Vec::new();
    d.decode(
        "198.51.100.9:1".parse().unwrap(),
        &data(302),
        t0(),
        &mut out,
    )
    .unwrap();
    assert!(d.pending().1 <= 200);
    assert_eq!(d.stats().pending_dropped, 1);

    // Disabled buffering.
    let mut d = FlowDecoder::new(Limits {
        max_pending_sets_per_exporter: 0,
        ..Limits::default()
    });
    decode(&mut d, &data(300), t0());
    assert_eq!(d.pending(), (0, 0));
    assert_eq!(d.stats().pending_dropped, 1);
}

#[test]
fn pending_sets_expire() {
    let mut d = FlowDecoder::new(Limits::default()); // 120 s
    decode(&mut d, &data_msg(0, 1), t0());
    d.expire(t0() + Duration::seconds(60));
    assert_eq!(d.pending().0, 1);
    d.expire(t0() + Duration::seconds(121));
    assert_eq!(d.pending(), (0, 0));
    assert_eq!(d.stats().pending_expired, 1);
    assert!(decode(&mut d, &template_msg(1), t0() + Duration::seconds(122)).is_empty());
}

// ---- sampling ----------------------------------------------------------------------------

#[test]
fn ipfix_sampling_from_options_data() {
    let mut d = FlowDecoder::new(Limits::default());
    // Options template 300: scope meteringProcessId, samplingPacketInterval, samplingPacketSpace.
    let opt_tpl = ipfix_options_template(300, 1, &[(143, 4), (305, 4), (306, 4)]);
    let mut opt_data = Vec::new();
    opt_data.extend_from_slice(&7u32.to_be_bytes());
    opt_data.extend_from_slice(&1u32.to_be_bytes());
    opt_data.extend_from_slice(&99u32.to_be_bytes());
    let msg = ipfix(
        0,
        1,
        0,
        &[
            set(3, &opt_tpl),
            set(300, &opt_data),
            set(2, &ipfix_template(256, &FLOW_FIELDS)),
        ],
    );
    let out = decode(&mut d, &msg, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, RecordKind::Options);
    assert_eq!(d.stats().options_records, 1);

    let out = decode(&mut d, &data_msg(1, 1), t0());
    assert_eq!(out[0].sampling_rate, 100);
    assert_eq!(out[0].bytes, 150_000);
    assert_eq!(out[0].packets, 300);
    // The raw exporter values stay in the field map.
    assert_eq!(
        out[0].field("octetDeltaCount"),
        Some(&FieldValue::Unsigned(1500))
    );
}

#[test]
fn v9_sampling_from_options_data_per_sampler() {
    let mut d = FlowDecoder::new(Limits::default());
    // Options template 256: scope system, flow_sampler_id (48), sampling_interval (34).
    let opt_tpl = v9_options_template(256, &[(1, 4)], &[(48, 1), (34, 4)]);
    let mut opt_data = vec![0, 0, 0, 0, 5];
    opt_data.extend_from_slice(&512u32.to_be_bytes());
    opt_data.extend_from_slice(&[0, 0, 0]); // padding
                                            // Flow template 257: in_bytes, in_pkts, flow_sampler_id.
    let mut tpl = vec![1, 1, 0, 3];
    for (f, l) in [(1u16, 4u16), (2, 4), (48, 1)] {
        tpl.extend_from_slice(&f.to_be_bytes());
        tpl.extend_from_slice(&l.to_be_bytes());
    }
    let msg = v9(
        0,
        9,
        1000,
        1_714_564_800,
        &[set(1, &opt_tpl), set(256, &opt_data), set(0, &tpl)],
    );
    let out = decode(&mut d, &msg, t0());
    assert_eq!(out.len(), 1, "one options record");
    assert_eq!(
        out[0].field("sampling_interval"),
        Some(&FieldValue::Unsigned(512))
    );
    let data = v9(
        1,
        9,
        2000,
        1_714_564_801,
        &[set(257, &[0, 0, 0, 100, 0, 0, 0, 2, 5, 0, 0, 0])],
    );
    let out = decode(&mut d, &data, t0());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sampling_rate, 512);
    assert_eq!((out[0].bytes, out[0].packets), (51_200, 1024));
}

#[test]
fn v5_header_sampling() {
    let mut d = FlowDecoder::new(Limits::default());
    let mut p = v5(0, 1);
    p[22..24].copy_from_slice(&(0x4000u16 | 100).to_be_bytes());
    let out = decode(&mut d, &p, t0());
    assert_eq!(out[0].sampling_rate, 100);
    assert_eq!(out[0].bytes, 100 * 230);
}

// ---- sequence numbers ----------------------------------------------------------------------

fn v5(seq: u32, count: u16) -> Vec<u8> {
    let mut p = vec![0, 5];
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&10_000u32.to_be_bytes()); // uptime
    p.extend_from_slice(&1_714_564_800u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    for _ in 0..count {
        let mut r = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 2];
        r.extend_from_slice(&5u32.to_be_bytes());
        r.extend_from_slice(&230u32.to_be_bytes());
        r.extend_from_slice(&9_000u32.to_be_bytes());
        r.extend_from_slice(&9_500u32.to_be_bytes());
        r.extend_from_slice(&[0xd4, 0xa3, 0, 22, 0, 0x12, 6, 0, 0, 0, 0, 0, 24, 24, 0, 0]);
        p.extend_from_slice(&r);
    }
    p
}

#[test]
fn v5_sequence_counts_flows() {
    let mut d = FlowDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.decode(exporter(), &v5(0, 2), t0(), &mut out).unwrap();
    let s = d.decode(exporter(), &v5(2, 3), t0(), &mut out).unwrap();
    assert_eq!(s.lost, 0);
    let s = d.decode(exporter(), &v5(10, 1), t0(), &mut out).unwrap(); // expected 5
    assert_eq!(s.lost, 5);
    assert_eq!(d.stats().sequence_lost_flows, 5);
    // Restart: sequence back to 0 is a reset, not 4 billion lost flows.
    d.decode(exporter(), &v5(0, 1), t0(), &mut out).unwrap();
    assert_eq!(d.stats().sequence_resets, 1);
    assert_eq!(d.stats().sequence_lost_flows, 5);
    // Normalized v5 record.
    let r = &out[0];
    assert_eq!(r.transport, Some("tcp"));
    assert_eq!(r.tcp_flag_names, vec!["syn", "ack"]);
    assert_eq!(r.flow_start, Some(t0() - Duration::milliseconds(1000)));
    assert_eq!(r.flow_end, Some(t0() - Duration::milliseconds(500)));
    assert!(r.community_id.starts_with("1:"));
}

#[test]
fn v9_sequence_counts_packets() {
    let mut d = FlowDecoder::new(Limits::default());
    let tpl = set(0, &ipfix_template(256, &FLOW_FIELDS));
    let data = || set(256, &flow_data([1; 4], [2; 4], 1, 2, 3, 4));
    let mut out = Vec::new();
    d.decode(exporter(), &v9(10, 1, 1, 1, &[tpl, data()]), t0(), &mut out)
        .unwrap();
    // Two records in the next packet do not matter: v9 counts packets.
    d.decode(
        exporter(),
        &v9(11, 1, 1, 1, &[data(), data()]),
        t0(),
        &mut out,
    )
    .unwrap();
    assert_eq!(d.stats().sequence_lost_packets, 0);
    let s = d
        .decode(exporter(), &v9(14, 1, 1, 1, &[data()]), t0(), &mut out)
        .unwrap();
    assert_eq!(s.lost, 2);
    assert_eq!(d.stats().sequence_lost_packets, 2);
    assert_eq!(d.stats().sequence_lost_flows, 0);
    // Another source id has its own sequence.
    d.decode(exporter(), &v9(500, 2, 1, 1, &[]), t0(), &mut out)
        .unwrap();
    assert_eq!(d.stats().sequence_lost_packets, 2);
}

#[test]
fn ipfix_sequence_counts_data_records() {
    let mut d = FlowDecoder::new(Limits::default());
    decode(&mut d, &template_msg(100), t0());
    decode(&mut d, &data_msg(100, 2), t0()); // next expected: 102
    let mut out = Vec::new();
    let s = d
        .decode(exporter(), &data_msg(102, 3), t0(), &mut out)
        .unwrap();
    assert_eq!(s.lost, 0);
    let s = d
        .decode(exporter(), &data_msg(110, 1), t0(), &mut out)
        .unwrap(); // expected 105
    assert_eq!(s.lost, 5);
    assert_eq!(d.stats().sequence_lost_flows, 5);
}

// ---- absurd templates and floods ---------------------------------------------------------

#[test]
fn absurd_templates_are_rejected_and_counted() {
    let mut d = FlowDecoder::new(Limits::default());
    // Field count above max_template_fields (256).
    let many: Vec<(u16, u16)> = (0..300).map(|i| (1 + (i % 100) as u16, 1)).collect();
    decode(
        &mut d,
        &ipfix(0, 1, 0, &[set(2, &ipfix_template(256, &many))]),
        t0(),
    );
    assert_eq!(d.stats().templates_invalid_field_count, 1);
    // Field count larger than the set: truncated.
    let mut lying = ipfix_template(257, &[(8, 4)]);
    lying[3] = 50;
    decode(&mut d, &ipfix(0, 1, 0, &[set(2, &lying)]), t0());
    assert_eq!(d.stats().templates_truncated, 1);
    // Record length above max_record_length.
    decode(
        &mut d,
        &ipfix(0, 1, 0, &[set(2, &ipfix_template(258, &[(1, 60000)]))]),
        t0(),
    );
    // All fields of length 0: a record of length 0 would never end.
    decode(
        &mut d,
        &ipfix(0, 1, 0, &[set(2, &ipfix_template(259, &[(1, 0), (2, 0)]))]),
        t0(),
    );
    assert_eq!(d.stats().templates_invalid_length, 2);
    // Options template with scope count 0.
    decode(
        &mut d,
        &ipfix(
            0,
            1,
            0,
            &[set(3, &ipfix_options_template(260, 0, &[(1, 4)]))],
        ),
        t0(),
    );
    assert_eq!(d.stats().templates_invalid_field_count, 2);
    assert_eq!(d.template_count(), 0);
}

#[test]
fn template_flood_is_bounded() {
    let limits = Limits {
        max_templates_per_exporter: 4,
        ..Limits::default()
    };
    let mut d = FlowDecoder::new(limits);
    decode(&mut d, &template_msg(0), t0());
    let flood: Vec<Vec<u8>> = (1000..1100)
        .map(|id| set(2, &ipfix_template(id, &[(8, 4)])))
        .collect();
    decode(&mut d, &ipfix(0, 1, 0, &flood), t0());
    assert_eq!(d.template_count(), 4);
    assert_eq!(d.stats().templates_rejected_limit, 97);
    // The existing template still refreshes and decodes.
    decode(&mut d, &template_msg(0), t0());
    assert_eq!(decode(&mut d, &data_msg(0, 1), t0()).len(), 1);
}

#[test]
fn exporters_and_domains_are_bounded() {
    let limits = Limits {
        max_exporters: 3,
        max_domains_per_exporter: 2,
        ..Limits::default()
    };
    let mut d = FlowDecoder::new(limits);
    for port in 0..10u16 {
        let mut out = Vec::new();
        let addr = SocketAddr::from(([192, 0, 2, 1], port));
        d.decode(
            addr,
            &template_msg(0),
            t0() + Duration::seconds(i64::from(port)),
            &mut out,
        )
        .unwrap();
    }
    assert_eq!(d.exporter_count(), 3);
    assert_eq!(d.stats().exporters_evicted, 7);
    for domain in 0..5 {
        decode(&mut d, &ipfix(0, domain, 0, &[]), t0());
    }
    assert_eq!(d.stats().domains_rejected_limit, 3);
}

// ---- errors and truncation ---------------------------------------------------------------

#[test]
fn header_errors_are_specific() {
    let mut d = FlowDecoder::new(Limits::default());
    let mut out = Vec::new();
    let mut err = |p: &[u8]| d.decode(exporter(), p, t0(), &mut out).unwrap_err();
    assert_eq!(err(&[]), DecodeError::Empty);
    assert!(matches!(
        err(&[0, 9, 0]),
        DecodeError::TruncatedHeader { need: 20, .. }
    ));
    assert!(matches!(
        err(&[0, 7, 0, 0]),
        DecodeError::UnknownVersion { version: 7, .. }
    ));
    let mut p = v5(0, 1);
    p[3] = 31;
    assert_eq!(err(&p), DecodeError::BadRecordCount { count: 31 });
    let mut p = template_msg(0);
    p[3] = p[3].wrapping_add(8);
    assert!(matches!(err(&p), DecodeError::BadLength { .. }));
    let p = ipfix(0, 1, 0, &[vec![1, 0, 0, 2]]);
    assert!(matches!(
        err(&p),
        DecodeError::BadSetLength { length: 2, .. }
    ));
    assert_eq!(d.stats().datagrams_rejected, 6);
    let e = DecodeError::BadRecordCount { count: 31 };
    assert_eq!(e.reason(), "bad_record_count");
    assert!(e.to_string().contains("31"));
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/netflow")
            .join(name),
    )
    .unwrap()
}

/// Offsets at which a v9 packet ends exactly after a flowset (a shorter but valid packet).
fn v9_boundaries(p: &[u8]) -> Vec<usize> {
    let mut at = 20;
    let mut out = vec![20];
    while at + 4 <= p.len() {
        let len = usize::from(u16::from_be_bytes([p[at + 2], p[at + 3]]));
        if len == 0 {
            break;
        }
        at += len;
        out.push(at);
    }
    out
}

#[test]
fn truncation_at_every_length_is_an_error_never_a_panic() {
    for (name, prefix) in [
        ("netflow5_test_microtik.dat", None),
        ("netflow9_test_macaddr_tpl.dat", None),
        (
            "netflow9_test_macaddr_data.dat",
            Some("netflow9_test_macaddr_tpl.dat"),
        ),
        ("ipfix_test_netscaler_tpl.dat", None),
        (
            "ipfix_test_netscaler_data.dat",
            Some("ipfix_test_netscaler_tpl.dat"),
        ),
        ("ipfix_test_yaf_tpls_option_tpl.dat", None),
    ] {
        let full = fixture(name);
        let boundaries = v9_boundaries(&full);
        for n in 0..full.len() {
            let mut d = FlowDecoder::new(Limits::default());
            let mut out = Vec::new();
            if let Some(p) = prefix {
                d.decode(exporter(), &fixture(p), t0(), &mut out).unwrap();
            }
            let result = d.decode(exporter(), &full[..n], t0(), &mut out);
            // A v9 packet has no length field: a cut right after a flowset (plus up to 3 zero
            // bytes of padding) is a valid, shorter packet.
            let v9_boundary = full[1] == 9
                && boundaries
                    .iter()
                    .any(|b| n >= *b && n < b + 4 && full[*b..n].iter().all(|x| *x == 0));
            assert!(
                result.is_err() || v9_boundary,
                "{name} cut at {n}: {result:?}"
            );
        }
    }
}

// ---- sFlow counters --------------------------------------------------------------------

#[test]
fn sflow_counter_sample_is_its_own_record() {
    let mut p = Vec::new();
    for w in [5u32, 1, 0xc000_0201, 0, 77, 123_456, 1] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    // Counter sample (format 2): seq, source id (type 0, index 3), 1 record.
    let mut generic = Vec::new();
    for w in [3u32, 6] {
        generic.extend_from_slice(&w.to_be_bytes());
    }
    generic.extend_from_slice(&10_000_000_000u64.to_be_bytes());
    for w in [1u32, 3] {
        generic.extend_from_slice(&w.to_be_bytes());
    }
    generic.extend_from_slice(&123_456_789u64.to_be_bytes());
    for w in [1u32, 2, 3, 4, 5, 6] {
        generic.extend_from_slice(&w.to_be_bytes());
    }
    generic.extend_from_slice(&987_654_321u64.to_be_bytes());
    for w in [7u32, 8, 9, 10, 11, 0] {
        generic.extend_from_slice(&w.to_be_bytes());
    }
    assert_eq!(generic.len(), 88);
    let mut sample = Vec::new();
    for w in [42u32, 3, 1, 1, 88] {
        sample.extend_from_slice(&w.to_be_bytes());
    }
    sample.extend_from_slice(&generic);
    p.extend_from_slice(&2u32.to_be_bytes());
    p.extend_from_slice(&(sample.len() as u32).to_be_bytes());
    p.extend_from_slice(&sample);

    let mut d = SflowDecoder::new(SflowLimits::default());
    let mut out = Vec::new();
    let s = d.decode(exporter(), &p, t0(), &mut out).unwrap();
    assert_eq!(s.counters, 1);
    let SflowRecord::Counters(c) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(c.origin.agent_address.to_string(), "192.0.2.1");
    assert_eq!((c.origin.source_id_type, c.origin.source_id_index), (0, 3));
    let i = c.interface.as_ref().unwrap();
    assert_eq!(
        (i.if_index, i.if_speed, i.in_octets, i.out_octets),
        (3, 10_000_000_000, 123_456_789, 987_654_321)
    );
    assert_eq!((i.in_errors, i.out_errors), (5, 11));
    let json = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(json["type"], "counters");

    // Sequence gap per agent: next datagram 5 instead of 2.
    p[16..20].copy_from_slice(&80u32.to_be_bytes());
    let s = d.decode(exporter(), &p, t0(), &mut out).unwrap();
    assert_eq!(s.lost, 2);
    assert_eq!(d.stats().sequence_lost_datagrams, 2);
    // Truncation at every length: error or fewer samples, never a panic.
    for n in 0..p.len() {
        let _ = d.decode(exporter(), &p[..n], t0(), &mut out);
    }
}
