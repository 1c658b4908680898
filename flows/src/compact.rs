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

/// Optional columns: bit `i` of the mask says whether the `i`-th is present, and the present
/// ones follow the mask in that order.
const OPTIONAL_COLUMNS: u32 = 23;

/// Why [`FlowRecord::decode_compact`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compact flow record: {0}")]
pub struct CompactError(pub &'static str);

/// A column's value, written and read back (little-endian numbers).
trait Col: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Result<Self, CompactError>;
}

macro_rules! number_col {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, CompactError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
number_col!(u8, u16, u32, u64, i64);

impl Col for IpAddr {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
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
    fn get(r: &mut Reader<'_>) -> Result<Self, CompactError> {
        match u8::get(r)? {
            4 => Ok(IpAddr::from(r.array::<4>()?)),
            6 => Ok(IpAddr::from(r.array::<16>()?)),
            _ => Err(CompactError("unknown address family")),
        }
    }
}

impl Col for DateTime<Utc> {
    fn put(&self, out: &mut Vec<u8>) {
        self.timestamp().put(out);
        self.timestamp_subsec_nanos().put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CompactError> {
        let secs = i64::get(r)?;
        let nanos = u32::get(r)?;
        DateTime::from_timestamp(secs, nanos).ok_or(CompactError("time out of range"))
    }
}

impl Col for MacAddr {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CompactError> {
        Ok(MacAddr(r.array()?))
    }
}

impl Col for Direction {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(match self {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        });
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CompactError> {
        match u8::get(r)? {
            0 => Ok(Direction::Ingress),
            1 => Ok(Direction::Egress),
            _ => Err(CompactError("unknown direction")),
        }
    }
}

/// Writes the optional columns: the mask (filled in at the end), then each present value.
struct Optionals<'a> {
    out: &'a mut Vec<u8>,
    mask_at: usize,
    mask: u32,
    next: u32,
}

impl<'a> Optionals<'a> {
    fn start(out: &'a mut Vec<u8>) -> Self {
        let mask_at = out.len();
        out.extend_from_slice(&[0; 4]);
        Optionals {
            out,
            mask_at,
            mask: 0,
            next: 0,
        }
    }
    fn put<T: Col>(&mut self, value: &Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.mask |= 1 << self.next;
            v.put(self.out);
        }
        self.next += 1;
        self
    }
    fn finish(&mut self) {
        debug_assert_eq!(self.next, OPTIONAL_COLUMNS);
        if let Some(m) = self.out.get_mut(self.mask_at..self.mask_at + 4) {
            m.copy_from_slice(&self.mask.to_le_bytes());
        }
    }
}

/// Reads the optional columns back, in the order [`Optionals`] wrote them.
struct Present {
    mask: u32,
    next: u32,
}

impl Present {
    fn get<T: Col>(&mut self, r: &mut Reader<'_>) -> Result<Option<T>, CompactError> {
        let here = self.mask & (1 << self.next) != 0;
        self.next += 1;
        here.then(|| T::get(r)).transpose()
    }
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
        self.protocol_version.put(out);
        self.exporter.ip().put(out);
        self.exporter.port().put(out);
        self.observation_domain.put(out);
        self.sequence.put(out);
        self.export_time.put(out);
        self.received_at.put(out);
        self.bytes.put(out);
        self.packets.put(out);
        self.sampling_rate.put(out);
        Optionals::start(out)
            .put(&self.template_id)
            .put(&self.exporter_uptime_ms)
            .put(&self.src_addr)
            .put(&self.dst_addr)
            .put(&self.src_port)
            .put(&self.dst_port)
            .put(&self.ip_protocol)
            .put(&self.flow_start)
            .put(&self.flow_end)
            .put(&self.tcp_flags)
            .put(&self.input_interface)
            .put(&self.output_interface)
            .put(&self.direction)
            .put(&self.vlan)
            .put(&self.src_mac)
            .put(&self.dst_mac)
            .put(&self.next_hop)
            .put(&self.src_as)
            .put(&self.dst_as)
            .put(&self.src_mask)
            .put(&self.dst_mask)
            .put(&self.icmp_type)
            .put(&self.icmp_code)
            .finish();
        let id = self.community_id.as_bytes();
        let id = id.get(..id.len().min(255)).unwrap_or_default();
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    }

    /// Reads back what [`FlowRecord::encode_compact`] wrote (the whole of `bytes`).
    pub fn decode_compact(bytes: &[u8]) -> Result<FlowRecord, CompactError> {
        let mut r = Reader(bytes);
        if u8::get(&mut r)? != FORMAT {
            return Err(CompactError("unknown format"));
        }
        let kind = match u8::get(&mut r)? {
            0 => RecordKind::Flow,
            1 => RecordKind::Options,
            _ => return Err(CompactError("unknown record kind")),
        };
        let source = match u8::get(&mut r)? {
            5 => FlowSource::NetflowV5,
            9 => FlowSource::NetflowV9,
            10 => FlowSource::Ipfix,
            65 => FlowSource::SflowV5,
            _ => return Err(CompactError("unknown flow source")),
        };
        let protocol_version = u16::get(&mut r)?;
        let exporter_ip = IpAddr::get(&mut r)?;
        let exporter = SocketAddr::new(exporter_ip, u16::get(&mut r)?);
        let observation_domain = u32::get(&mut r)?;
        let sequence = u32::get(&mut r)?;
        let export_time = DateTime::get(&mut r)?;
        let received_at = DateTime::get(&mut r)?;
        let flow_bytes = u64::get(&mut r)?;
        let packets = u64::get(&mut r)?;
        let sampling_rate = u32::get(&mut r)?;
        let mask = u32::get(&mut r)?;
        if mask >> OPTIONAL_COLUMNS != 0 {
            return Err(CompactError("unknown optional columns"));
        }
        let mut o = Present { mask, next: 0 };
        let template_id = o.get(&mut r)?;
        let exporter_uptime_ms = o.get(&mut r)?;
        let src_addr = o.get(&mut r)?;
        let dst_addr = o.get(&mut r)?;
        let src_port = o.get(&mut r)?;
        let dst_port = o.get(&mut r)?;
        let ip_protocol: Option<u8> = o.get(&mut r)?;
        let flow_start = o.get(&mut r)?;
        let flow_end = o.get(&mut r)?;
        let tcp_flags: Option<u8> = o.get(&mut r)?;
        let input_interface = o.get(&mut r)?;
        let output_interface = o.get(&mut r)?;
        let direction = o.get(&mut r)?;
        let vlan = o.get(&mut r)?;
        let src_mac = o.get(&mut r)?;
        let dst_mac = o.get(&mut r)?;
        let next_hop = o.get(&mut r)?;
        let src_as = o.get(&mut r)?;
        let dst_as = o.get(&mut r)?;
        let src_mask = o.get(&mut r)?;
        let dst_mask = o.get(&mut r)?;
        let icmp_type = o.get(&mut r)?;
        let icmp_code = o.get(&mut r)?;
        debug_assert_eq!(o.next, OPTIONAL_COLUMNS);
        let id_len = usize::from(u8::get(&mut r)?);
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
