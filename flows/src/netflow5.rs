//! NetFlow v5: 24-byte header + `count` (1..=30) fixed 48-byte records.
//!
//! Field names follow Logstash (`ipv4_src_addr`, `in_bytes`, `first_switched`, ...). The
//! header's engine type/id and sampling fields are kept in every record's field map as well.
//! `first_switched`/`last_switched` stay raw sysUptime milliseconds in the map; the absolute
//! `flow_start`/`flow_end` are computed from the header's unix time and uptime (modulo 2^32).
//! `flow_sequence` counts flows, so the next expected value is `sequence + count`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use chrono::{DateTime, TimeZone, Utc};

use crate::decoder::{check_sequence, domain_state, DomainKey, ExporterState, Shared};
use crate::error::DecodeError;
use crate::fields::{FieldValue, Role};
use crate::record::{FlowRecord, FlowSource, RecordBuilder, RecordCtx, RecordKind};
use crate::stats::DecodeSummary;

const HEADER_LEN: usize = 24;
const RECORD_LEN: usize = 48;
/// Largest record count a v5 header may announce.
pub(crate) const MAX_COUNT: u16 = 30;

pub(crate) struct Header {
    count: u16,
    uptime_ms: u32,
    export_time: DateTime<Utc>,
    sequence: u32,
    engine_type: u8,
    engine_id: u8,
    sampling_algorithm: u8,
    sampling_interval: u16,
    end: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

pub(crate) fn parse_header(payload: &[u8]) -> Result<Header, DecodeError> {
    if payload.len() < HEADER_LEN {
        return Err(DecodeError::TruncatedHeader {
            protocol: "NetFlow v5",
            need: HEADER_LEN,
            have: payload.len(),
        });
    }
    let count = be16(payload, 2);
    if count == 0 || count > MAX_COUNT {
        return Err(DecodeError::BadRecordCount { count });
    }
    let end = HEADER_LEN + RECORD_LEN * usize::from(count);
    if payload.len() < end {
        return Err(DecodeError::BadLength {
            protocol: "NetFlow v5",
            declared: end,
            have: payload.len(),
        });
    }
    let secs = i64::from(be32(payload, 8));
    let nsecs = be32(payload, 12);
    let export_time = Utc
        .timestamp_opt(secs, nsecs)
        .single()
        .or_else(|| Utc.timestamp_opt(secs, 0).single())
        .unwrap_or_default();
    let sampling = be16(payload, 22);
    Ok(Header {
        count,
        uptime_ms: be32(payload, 4),
        export_time,
        sequence: be32(payload, 16),
        engine_type: byte(payload, 20),
        engine_id: byte(payload, 21),
        sampling_algorithm: (sampling >> 14) as u8,
        sampling_interval: sampling & 0x3fff,
        end,
    })
}

pub(crate) fn decode(
    mut shared: Shared<'_>,
    state: &mut ExporterState,
    exporter: SocketAddr,
    header: &Header,
    payload: &[u8],
    now: DateTime<Utc>,
    out: &mut Vec<FlowRecord>,
) -> DecodeSummary {
    let mut summary = DecodeSummary {
        version: 5,
        trailing_bytes: payload.len().saturating_sub(header.end),
        ..DecodeSummary::default()
    };
    let domain_id = (u32::from(header.engine_type) << 8) | u32::from(header.engine_id);
    let key = DomainKey {
        version: 5,
        domain: domain_id,
    };
    let Some(domain) = domain_state(&mut shared, &mut state.domains, key) else {
        summary.sets_skipped = 1;
        return summary;
    };
    summary.lost = check_sequence(&mut shared, domain.next_sequence, header.sequence, false);
    domain.next_sequence = Some(header.sequence.wrapping_add(u32::from(header.count)));
    domain.info.sampling_rate = Some(u32::from(header.sampling_interval)).filter(|r| *r > 0);

    let ctx = RecordCtx {
        kind: RecordKind::Flow,
        source: FlowSource::NetflowV5,
        version: 5,
        exporter,
        domain: domain_id,
        template_id: None,
        sequence: header.sequence,
        export_time: header.export_time,
        uptime_ms: Some(header.uptime_ms),
        received_at: now,
    };
    let records = payload.get(HEADER_LEN..header.end).unwrap_or_default();
    for r in records.chunks_exact(RECORD_LEN) {
        let ip = |at| FieldValue::Ip(IpAddr::V4(Ipv4Addr::from(be32(r, at))));
        let u = |v: u32| FieldValue::Unsigned(u64::from(v));
        let mut b = RecordBuilder::with_capacity(24);
        b.add("engine_type", Role::None, u(u32::from(header.engine_type)));
        b.add("engine_id", Role::None, u(u32::from(header.engine_id)));
        b.add(
            "sampling_algorithm",
            Role::None,
            u(u32::from(header.sampling_algorithm)),
        );
        b.add(
            "sampling_interval",
            Role::None,
            u(u32::from(header.sampling_interval)),
        );
        b.add("flow_records", Role::None, u(u32::from(header.count)));
        b.add("ipv4_src_addr", Role::SrcAddr, ip(0));
        b.add("ipv4_dst_addr", Role::DstAddr, ip(4));
        b.add("ipv4_next_hop", Role::NextHop, ip(8));
        b.add("input_snmp", Role::InIf, u(u32::from(be16(r, 12))));
        b.add("output_snmp", Role::OutIf, u(u32::from(be16(r, 14))));
        b.add("in_pkts", Role::Packets(0), u(be32(r, 16)));
        b.add("in_bytes", Role::Bytes(0), u(be32(r, 20)));
        b.add("first_switched", Role::StartUptime, u(be32(r, 24)));
        b.add("last_switched", Role::EndUptime, u(be32(r, 28)));
        b.add("l4_src_port", Role::SrcPort, u(u32::from(be16(r, 32))));
        b.add("l4_dst_port", Role::DstPort, u(u32::from(be16(r, 34))));
        b.add("tcp_flags", Role::TcpFlags, u(u32::from(byte(r, 37))));
        b.add("protocol", Role::Protocol, u(u32::from(byte(r, 38))));
        b.add("src_tos", Role::None, u(u32::from(byte(r, 39))));
        b.add("src_as", Role::SrcAs, u(u32::from(be16(r, 40))));
        b.add("dst_as", Role::DstAs, u(u32::from(be16(r, 42))));
        b.add("src_mask", Role::SrcMask, u(u32::from(byte(r, 44))));
        b.add("dst_mask", Role::DstMask, u(u32::from(byte(r, 45))));
        out.push(b.finish(&ctx, Some(&domain.info)));
        summary.records += 1;
    }
    shared.stats.flow_records += summary.records as u64;
    summary
}
