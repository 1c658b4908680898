//! A compact binary form of a [`FlowRecord`]: what a collector hands to the engine (through
//! the spool), so the record, not its event, crosses the queue and the disk. About 170 bytes
//! for a NetFlow v5 record (its event in the binary codec: about 500), no allocation to
//! encode; to decode, the box, the Community ID and the flag names.
//!
//! Carried: every normalized column. Not carried: `fields` (every decoded field by its table
//! name, for the golden tests and diagnostics), which comes back empty; `tcp_flag_names` is
//! derived from `tcp_flags` and `transport` from `ip_protocol`, as the decoder does.
//!
//! Layout (little-endian): format byte, kind, source, protocol version (u16), exporter (address
//! tag 4 or 6, octets, port u16), observation domain (u32), sequence (u32), export and receive
//! times (i64 seconds, u32 nanoseconds each), bytes, packets (u64), sampling rate (u32), a u32
//! bitmask of the optional columns present, each present column in bit order, and the
//! Community ID (u8 length, text).

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};

use crate::fields::{Fields, MacAddr};
use crate::record::{
    tcp_flag_names, transport_name, Direction, FlowRecord, FlowSource, RecordKind,
};

const FORMAT: u8 = 1;

const TEMPLATE_ID: u32 = 1;
const UPTIME: u32 = 1 << 1;
const SRC_ADDR: u32 = 1 << 2;
const DST_ADDR: u32 = 1 << 3;
const SRC_PORT: u32 = 1 << 4;
const DST_PORT: u32 = 1 << 5;
const PROTOCOL: u32 = 1 << 6;
const START: u32 = 1 << 7;
const END: u32 = 1 << 8;
const TCP_FLAGS: u32 = 1 << 9;
const IN_IF: u32 = 1 << 10;
const OUT_IF: u32 = 1 << 11;
const DIRECTION: u32 = 1 << 12;
const VLAN: u32 = 1 << 13;
const SRC_MAC: u32 = 1 << 14;
const DST_MAC: u32 = 1 << 15;
const NEXT_HOP: u32 = 1 << 16;
const SRC_AS: u32 = 1 << 17;
const DST_AS: u32 = 1 << 18;
const SRC_MASK: u32 = 1 << 19;
const DST_MASK: u32 = 1 << 20;
const ICMP_TYPE: u32 = 1 << 21;
const ICMP_CODE: u32 = 1 << 22;
const KNOWN: u32 = (1 << 23) - 1;

/// Why [`FlowRecord::decode_compact`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compact flow record: {0}")]
pub struct CompactError(pub &'static str);

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_time(out: &mut Vec<u8>, t: DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

impl FlowRecord {
    /// Appends the compact form of this record to `out` (see the module documentation).
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.push(match self.kind {
            RecordKind::Flow => 0,
            RecordKind::Options => 1,
        });
        out.push(match self.source {
            FlowSource::NetflowV5 => 5,
            FlowSource::NetflowV9 => 9,
            FlowSource::Ipfix => 10,
            FlowSource::SflowV5 => 65,
        });
        out.extend_from_slice(&self.protocol_version.to_le_bytes());
        put_ip(out, self.exporter.ip());
        out.extend_from_slice(&self.exporter.port().to_le_bytes());
        out.extend_from_slice(&self.observation_domain.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        put_time(out, self.export_time);
        put_time(out, self.received_at);
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.packets.to_le_bytes());
        out.extend_from_slice(&self.sampling_rate.to_le_bytes());
        let mut mask = 0u32;
        let mut bit = |present: bool, b: u32| {
            if present {
                mask |= b;
            }
        };
        bit(self.template_id.is_some(), TEMPLATE_ID);
        bit(self.exporter_uptime_ms.is_some(), UPTIME);
        bit(self.src_addr.is_some(), SRC_ADDR);
        bit(self.dst_addr.is_some(), DST_ADDR);
        bit(self.src_port.is_some(), SRC_PORT);
        bit(self.dst_port.is_some(), DST_PORT);
        bit(self.ip_protocol.is_some(), PROTOCOL);
        bit(self.flow_start.is_some(), START);
        bit(self.flow_end.is_some(), END);
        bit(self.tcp_flags.is_some(), TCP_FLAGS);
        bit(self.input_interface.is_some(), IN_IF);
        bit(self.output_interface.is_some(), OUT_IF);
        bit(self.direction.is_some(), DIRECTION);
        bit(self.vlan.is_some(), VLAN);
        bit(self.src_mac.is_some(), SRC_MAC);
        bit(self.dst_mac.is_some(), DST_MAC);
        bit(self.next_hop.is_some(), NEXT_HOP);
        bit(self.src_as.is_some(), SRC_AS);
        bit(self.dst_as.is_some(), DST_AS);
        bit(self.src_mask.is_some(), SRC_MASK);
        bit(self.dst_mask.is_some(), DST_MASK);
        bit(self.icmp_type.is_some(), ICMP_TYPE);
        bit(self.icmp_code.is_some(), ICMP_CODE);
        out.extend_from_slice(&mask.to_le_bytes());
        if let Some(v) = self.template_id {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.exporter_uptime_ms {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.src_addr {
            put_ip(out, v);
        }
        if let Some(v) = self.dst_addr {
            put_ip(out, v);
        }
        if let Some(v) = self.src_port {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.dst_port {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.ip_protocol {
            out.push(v);
        }
        if let Some(v) = self.flow_start {
            put_time(out, v);
        }
        if let Some(v) = self.flow_end {
            put_time(out, v);
        }
        if let Some(v) = self.tcp_flags {
            out.push(v);
        }
        if let Some(v) = self.input_interface {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.output_interface {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.direction {
            out.push(match v {
                Direction::Ingress => 0,
                Direction::Egress => 1,
            });
        }
        if let Some(v) = self.vlan {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.src_mac {
            out.extend_from_slice(&v.0);
        }
        if let Some(v) = self.dst_mac {
            out.extend_from_slice(&v.0);
        }
        if let Some(v) = self.next_hop {
            put_ip(out, v);
        }
        if let Some(v) = self.src_as {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.dst_as {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.src_mask {
            out.push(v);
        }
        if let Some(v) = self.dst_mask {
            out.push(v);
        }
        if let Some(v) = self.icmp_type {
            out.push(v);
        }
        if let Some(v) = self.icmp_code {
            out.push(v);
        }
        let id = self.community_id.as_bytes();
        let id = id.get(..id.len().min(255)).unwrap_or_default();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }

    /// Reads back what [`FlowRecord::encode_compact`] wrote (the whole of `bytes`).
    pub fn decode_compact(bytes: &[u8]) -> Result<FlowRecord, CompactError> {
        let mut r = Reader(bytes);
        if r.u8()? != FORMAT {
            return Err(CompactError("unknown format"));
        }
        let kind = match r.u8()? {
            0 => RecordKind::Flow,
            1 => RecordKind::Options,
            _ => return Err(CompactError("unknown record kind")),
        };
        let source = match r.u8()? {
            5 => FlowSource::NetflowV5,
            9 => FlowSource::NetflowV9,
            10 => FlowSource::Ipfix,
            65 => FlowSource::SflowV5,
            _ => return Err(CompactError("unknown flow source")),
        };
        let protocol_version = r.u16()?;
        let exporter_ip = r.ip()?;
        let exporter = SocketAddr::new(exporter_ip, r.u16()?);
        let observation_domain = r.u32()?;
        let sequence = r.u32()?;
        let export_time = r.time()?;
        let received_at = r.time()?;
        let flow_bytes = r.u64()?;
        let packets = r.u64()?;
        let sampling_rate = r.u32()?;
        let mask = r.u32()?;
        if mask & !KNOWN != 0 {
            return Err(CompactError("unknown optional columns"));
        }
        let has = |b: u32| mask & b != 0;
        let template_id = has(TEMPLATE_ID).then(|| r.u16()).transpose()?;
        let exporter_uptime_ms = has(UPTIME).then(|| r.u32()).transpose()?;
        let src_addr = has(SRC_ADDR).then(|| r.ip()).transpose()?;
        let dst_addr = has(DST_ADDR).then(|| r.ip()).transpose()?;
        let src_port = has(SRC_PORT).then(|| r.u16()).transpose()?;
        let dst_port = has(DST_PORT).then(|| r.u16()).transpose()?;
        let ip_protocol = has(PROTOCOL).then(|| r.u8()).transpose()?;
        let flow_start = has(START).then(|| r.time()).transpose()?;
        let flow_end = has(END).then(|| r.time()).transpose()?;
        let tcp_flags = has(TCP_FLAGS).then(|| r.u8()).transpose()?;
        let input_interface = has(IN_IF).then(|| r.u32()).transpose()?;
        let output_interface = has(OUT_IF).then(|| r.u32()).transpose()?;
        let direction = match has(DIRECTION).then(|| r.u8()).transpose()? {
            None => None,
            Some(0) => Some(Direction::Ingress),
            Some(1) => Some(Direction::Egress),
            Some(_) => return Err(CompactError("unknown direction")),
        };
        let vlan = has(VLAN).then(|| r.u16()).transpose()?;
        let src_mac = has(SRC_MAC).then(|| r.mac()).transpose()?;
        let dst_mac = has(DST_MAC).then(|| r.mac()).transpose()?;
        let next_hop = has(NEXT_HOP).then(|| r.ip()).transpose()?;
        let src_as = has(SRC_AS).then(|| r.u32()).transpose()?;
        let dst_as = has(DST_AS).then(|| r.u32()).transpose()?;
        let src_mask = has(SRC_MASK).then(|| r.u8()).transpose()?;
        let dst_mask = has(DST_MASK).then(|| r.u8()).transpose()?;
        let icmp_type = has(ICMP_TYPE).then(|| r.u8()).transpose()?;
        let icmp_code = has(ICMP_CODE).then(|| r.u8()).transpose()?;
        let id_len = usize::from(r.u8()?);
        let community_id = std::str::from_utf8(r.take(id_len)?)
            .map_err(|_| CompactError("Community ID is not UTF-8"))?
            .to_owned();
        if !r.0.is_empty() {
            return Err(CompactError("bytes after the record"));
        }
        Ok(FlowRecord {
            kind,
            source,
            protocol_version,
            exporter,
            observation_domain,
            template_id,
            sequence,
            export_time,
            exporter_uptime_ms,
            received_at,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            ip_protocol,
            transport: ip_protocol.and_then(transport_name),
            bytes: flow_bytes,
            packets,
            sampling_rate,
            flow_start,
            flow_end,
            tcp_flags,
            tcp_flag_names: tcp_flags.map(tcp_flag_names).unwrap_or_default(),
            input_interface,
            output_interface,
            direction,
            vlan,
            src_mac,
            dst_mac,
            next_hop,
            src_as,
            dst_as,
            src_mask,
            dst_mask,
            icmp_type,
            icmp_code,
            community_id,
            fields: Fields::default(),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        if self.0.len() < n {
            return Err(CompactError("record ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CompactError> {
        self.take(N)?
            .try_into()
            .map_err(|_| CompactError("record ends early"))
    }
    fn u8(&mut self) -> Result<u8, CompactError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CompactError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, CompactError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CompactError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn ip(&mut self) -> Result<IpAddr, CompactError> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            _ => Err(CompactError("unknown address family")),
        }
    }
    fn mac(&mut self) -> Result<MacAddr, CompactError> {
        Ok(MacAddr(self.array()?))
    }
    fn time(&mut self) -> Result<DateTime<Utc>, CompactError> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = self.u32()?;
        DateTime::from_timestamp(secs, nanos).ok_or(CompactError("time out of range"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{FlowDecoder, Limits};

    fn strip(mut r: FlowRecord) -> FlowRecord {
        r.fields = Fields::default();
        r
    }

    #[test]
    fn every_column_round_trips() {
        let at = |s: i64, n: u32| DateTime::from_timestamp(1_764_000_000 + s, n).unwrap();
        let full = FlowRecord {
            kind: RecordKind::Flow,
            source: FlowSource::Ipfix,
            protocol_version: 10,
            exporter: "[2001:db8::1]:4739".parse().unwrap(),
            observation_domain: 7,
            template_id: Some(256),
            sequence: 99,
            export_time: at(10, 0),
            exporter_uptime_ms: Some(123_456),
            received_at: at(11, 123_456_789),
            src_addr: Some("10.0.0.1".parse().unwrap()),
            dst_addr: Some("2001:db8::2".parse().unwrap()),
            src_port: Some(51_000),
            dst_port: Some(443),
            ip_protocol: Some(6),
            transport: Some("tcp"),
            bytes: u64::MAX,
            packets: 12,
            sampling_rate: 100,
            flow_start: Some(at(1, 5)),
            flow_end: Some(at(9, 999_999_999)),
            tcp_flags: Some(0x1b),
            tcp_flag_names: tcp_flag_names(0x1b),
            input_interface: Some(3),
            output_interface: Some(u32::MAX),
            direction: Some(Direction::Egress),
            vlan: Some(4094),
            src_mac: Some(MacAddr([1, 2, 3, 4, 5, 6])),
            dst_mac: Some(MacAddr([0xff; 6])),
            next_hop: Some("192.0.2.254".parse().unwrap()),
            src_as: Some(64_512),
            dst_as: Some(15_169),
            src_mask: Some(24),
            dst_mask: Some(128),
            icmp_type: Some(8),
            icmp_code: Some(0),
            community_id: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=".into(),
            fields: Fields::default(),
        };
        let mut b = Vec::new();
        full.encode_compact(&mut b);
        assert_eq!(FlowRecord::decode_compact(&b).unwrap(), full);

        let bare = FlowRecord {
            kind: RecordKind::Options,
            source: FlowSource::SflowV5,
            protocol_version: 5,
            exporter: "192.0.2.9:6343".parse().unwrap(),
            template_id: None,
            exporter_uptime_ms: None,
            src_addr: None,
            dst_addr: None,
            src_port: None,
            dst_port: None,
            ip_protocol: None,
            transport: None,
            flow_start: None,
            flow_end: None,
            tcp_flags: None,
            tcp_flag_names: Vec::new(),
            input_interface: None,
            output_interface: None,
            direction: Some(Direction::Ingress),
            vlan: None,
            src_mac: None,
            dst_mac: None,
            next_hop: None,
            src_as: None,
            dst_as: None,
            src_mask: None,
            dst_mask: None,
            icmp_type: None,
            icmp_code: None,
            community_id: String::new(),
            ..full
        };
        b.clear();
        bare.encode_compact(&mut b);
        assert_eq!(FlowRecord::decode_compact(&b).unwrap(), bare);
    }

    #[test]
    fn decoded_netflow_records_round_trip_without_their_field_list() {
        // A NetFlow v5 datagram: header and two records.
        let mut d = vec![0u8, 5, 0, 2];
        d.extend_from_slice(&1_000_000u32.to_be_bytes()); // uptime
        d.extend_from_slice(&1_764_000_000u32.to_be_bytes()); // secs
        d.extend_from_slice(&0u32.to_be_bytes()); // nsecs
        d.extend_from_slice(&42u32.to_be_bytes()); // sequence
        d.extend_from_slice(&[0, 0, 0, 0]); // engine, sampling
        for i in 0..2u8 {
            d.extend_from_slice(&[10, 0, 0, 1 + i]); // src
            d.extend_from_slice(&[198, 51, 100, 7]); // dst
            d.extend_from_slice(&[0, 0, 0, 0]); // next hop
            d.extend_from_slice(&[0, 1, 0, 2]); // ifaces
            d.extend_from_slice(&3u32.to_be_bytes()); // packets
            d.extend_from_slice(&180u32.to_be_bytes()); // bytes
            d.extend_from_slice(&990_000u32.to_be_bytes()); // first
            d.extend_from_slice(&999_000u32.to_be_bytes()); // last
            d.extend_from_slice(&40_000u16.to_be_bytes());
            d.extend_from_slice(&443u16.to_be_bytes());
            d.extend_from_slice(&[0, 0x12, 6, 0]); // pad, flags, proto, tos
            d.extend_from_slice(&[0, 1, 0, 2, 24, 24, 0, 0]); // AS, masks, pad
        }
        let mut out = Vec::new();
        let now = DateTime::from_timestamp(1_764_000_001, 0).unwrap();
        FlowDecoder::new(Limits::default())
            .decode("192.0.2.1:2055".parse().unwrap(), &d, now, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        for rec in out {
            assert!(!rec.community_id.is_empty());
            let mut b = Vec::new();
            rec.encode_compact(&mut b);
            assert!(b.len() < 200, "a v5 record in {} bytes", b.len());
            assert_eq!(FlowRecord::decode_compact(&b).unwrap(), strip(rec));
        }
    }

    #[test]
    fn damaged_input_is_an_error_never_a_panic() {
        let rec = FlowRecord::decode_compact(&[]).unwrap_err();
        assert_eq!(rec.0, "record ends early");
        let mut b = Vec::new();
        let at = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        FlowRecord {
            kind: RecordKind::Flow,
            source: FlowSource::NetflowV5,
            protocol_version: 5,
            exporter: "192.0.2.1:2055".parse().unwrap(),
            observation_domain: 0,
            template_id: None,
            sequence: 1,
            export_time: at,
            exporter_uptime_ms: Some(1),
            received_at: at,
            src_addr: Some("10.0.0.1".parse().unwrap()),
            dst_addr: Some("10.0.0.2".parse().unwrap()),
            src_port: Some(1),
            dst_port: Some(2),
            ip_protocol: Some(17),
            transport: Some("udp"),
            bytes: 1,
            packets: 1,
            sampling_rate: 1,
            flow_start: Some(at),
            flow_end: Some(at),
            tcp_flags: None,
            tcp_flag_names: Vec::new(),
            input_interface: None,
            output_interface: None,
            direction: None,
            vlan: None,
            src_mac: None,
            dst_mac: None,
            next_hop: None,
            src_as: None,
            dst_as: None,
            src_mask: None,
            dst_mask: None,
            icmp_type: None,
            icmp_code: None,
            community_id: "1:x".into(),
            fields: Fields::default(),
        }
        .encode_compact(&mut b);
        // Every truncation and every single-byte change either decodes or is refused.
        for n in 0..b.len() {
            assert!(FlowRecord::decode_compact(&b[..n]).is_err(), "prefix {n}");
            for v in [0u8, 1, 7, 0x80, 0xff] {
                let mut c = b.clone();
                c[n] = v;
                let _ = FlowRecord::decode_compact(&c);
            }
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(FlowRecord::decode_compact(&longer).is_err());
    }
}
