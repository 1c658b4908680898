//! sFlow v5 (<https://sflow.org/sflow_version_5.txt>): flow samples (compact and expanded) become
//! [`FlowRecord`]s (raw packet headers decoded: Ethernet/802.1Q, IPv4, IPv6, TCP, UDP, ICMP;
//! sampled IPv4/IPv6 and Ethernet records; extended switch/router/gateway), counter samples
//! become [`CounterRecord`]s (generic interface and Ethernet counters decoded, others kept raw)
//! and discarded-packet samples (format 5) become [`DiscardRecord`]s.
//!
//! sFlow is XDR (big-endian 32-bit words). Each sample and record is sliced by its declared
//! length; one that runs past the datagram stops decoding (counted, not an error), like
//! goflow2. Bytes after the declared samples are ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::DecodeError;
use crate::fields::{hex, FieldValue, MacAddr, Role};
use crate::packet::{self, PacketSummary};
use crate::record::{FlowRecord, FlowSource, RecordBuilder, RecordCtx, RecordKind};

/// Bounds of an [`SflowDecoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SflowLimits {
    /// Samples per datagram; more is an error (goflow2 uses 1000).
    pub max_samples: u32,
    /// Records per sample; a sample with more is skipped.
    pub max_records: u32,
    /// Agents whose datagram sequence numbers are tracked.
    pub max_agents: usize,
    /// Sequence jumps up to this many datagrams count as loss; larger ones as a reset.
    pub max_sequence_gap: u32,
}

impl Default for SflowLimits {
    fn default() -> Self {
        SflowLimits {
            max_samples: 1000,
            max_records: 1000,
            max_agents: 4096,
            max_sequence_gap: 100_000,
        }
    }
}

/// Cumulative sFlow counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SflowStats {
    /// Datagrams passed to `decode`.
    pub datagrams: u64,
    /// Datagrams rejected with an error.
    pub datagrams_rejected: u64,
    /// Flow samples (formats 1 and 3) decoded.
    pub flow_samples: u64,
    /// Counter samples (formats 2 and 4) decoded.
    pub counter_samples: u64,
    /// Discarded-packet samples (format 5) decoded.
    pub discard_samples: u64,
    /// Samples with an enterprise other than 0 or an unknown format, skipped.
    pub unknown_samples: u64,
    /// Flow/counter/discard records of unknown format (kept raw for counters and discards).
    pub unknown_records: u64,
    /// Samples or records whose declared length runs past their container (decoding stopped).
    pub truncated: u64,
    /// Samples skipped because their own fields are malformed or too many records.
    pub samples_malformed: u64,
    /// Datagrams missing according to the agent's datagram sequence number.
    pub sequence_lost_datagrams: u64,
    /// Sequence jumps too large or backwards (agent restart).
    pub sequence_resets: u64,
    /// Datagrams with bytes after the declared samples.
    pub datagrams_with_trailing_bytes: u64,
}

/// What one `decode` call produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SflowSummary {
    /// Samples announced by the header.
    pub samples_declared: u32,
    /// Samples walked (decoded or skipped).
    pub samples: usize,
    /// Flow records produced.
    pub flows: usize,
    /// Counter records produced.
    pub counters: usize,
    /// Discard records produced.
    pub discards: usize,
    /// Datagrams lost before this one (agent sequence).
    pub lost: u64,
    /// Bytes after the declared samples.
    pub trailing_bytes: usize,
}

/// One output of the sFlow decoder.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SflowRecord {
    /// A sampled packet as a flow (bytes/packets scaled by the sampling rate).
    Flow(FlowRecord),
    /// A counter sample.
    Counters(CounterRecord),
    /// A discarded-packet sample.
    Discarded(DiscardRecord),
}

/// Datagram and sample identity shared by counter and discard records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampleOrigin {
    /// UDP source of the datagram.
    pub exporter: SocketAddr,
    /// Agent address from the datagram.
    pub agent_address: IpAddr,
    /// Sub-agent id.
    pub sub_agent_id: u32,
    /// Datagram sequence number.
    pub datagram_sequence: u32,
    /// Agent uptime in milliseconds.
    pub uptime_ms: u32,
    /// Sample sequence number.
    pub sample_sequence: u32,
    /// Source id type (0 ifIndex, 1 VLAN, 2 physical entity).
    pub source_id_type: u32,
    /// Source id index.
    pub source_id_index: u32,
    /// Receive time passed by the caller.
    pub received_at: DateTime<Utc>,
}

/// A record kept undecoded: enterprise, format and hex data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RawRecord {
    /// Enterprise number.
    pub enterprise: u32,
    /// Record format.
    pub format: u32,
    /// Record bytes, lowercase hex.
    pub data: String,
}

/// Generic interface counters (counter record format 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct InterfaceCounters {
    pub if_index: u32,
    pub if_type: u32,
    pub if_speed: u64,
    pub if_direction: u32,
    pub if_status: u32,
    pub in_octets: u64,
    pub in_ucast_pkts: u32,
    pub in_multicast_pkts: u32,
    pub in_broadcast_pkts: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_ucast_pkts: u32,
    pub out_multicast_pkts: u32,
    pub out_broadcast_pkts: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous_mode: u32,
}

/// Ethernet interface counters (counter record format 2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct EthernetCounters {
    pub alignment_errors: u32,
    pub fcs_errors: u32,
    pub single_collision_frames: u32,
    pub multiple_collision_frames: u32,
    pub sqe_test_errors: u32,
    pub deferred_transmissions: u32,
    pub late_collisions: u32,
    pub excessive_collisions: u32,
    pub internal_mac_transmit_errors: u32,
    pub carrier_sense_errors: u32,
    pub frame_too_longs: u32,
    pub internal_mac_receive_errors: u32,
    pub symbol_errors: u32,
}

/// A counter sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CounterRecord {
    /// Where it came from.
    #[serde(flatten)]
    pub origin: SampleOrigin,
    /// Generic interface counters, if present.
    pub interface: Option<InterfaceCounters>,
    /// Ethernet counters, if present.
    pub ethernet: Option<EthernetCounters>,
    /// Other counter records, undecoded.
    pub other: Vec<RawRecord>,
}

/// Extended ACL record of a discarded-packet sample (format 1037).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclInfo {
    /// ACL number.
    pub number: u32,
    /// ACL name.
    pub name: String,
    /// 0 unknown, 1 ingress, 2 egress.
    pub direction: u32,
}

/// A discarded-packet sample (sFlow drop notifications, format 5).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiscardRecord {
    /// Where it came from.
    #[serde(flatten)]
    pub origin: SampleOrigin,
    /// Drops counter of the source.
    pub drops: u32,
    /// Input interface (raw sFlow encoding).
    pub input: u32,
    /// Output interface (raw sFlow encoding).
    pub output: u32,
    /// Drop reason code.
    pub reason: u32,
    /// Egress queue (record 1036).
    pub egress_queue: Option<u32>,
    /// ACL (record 1037).
    pub acl: Option<AclInfo>,
    /// Function symbol (record 1038).
    pub function: Option<String>,
    /// Sampled header of the dropped packet (record 1), decoded.
    pub packet: Option<PacketSummary>,
    /// Other records, undecoded.
    pub other: Vec<RawRecord>,
}

/// Stateful sFlow v5 decoder (state: per-agent datagram sequence numbers).
#[derive(Debug)]
pub struct SflowDecoder {
    limits: SflowLimits,
    stats: SflowStats,
    sequences: HashMap<(IpAddr, u32), u32>,
}

/// One `type, length, body` element: (enterprise, format, body), or `Err` when truncated.
type Element<'a> = Result<(u32, u32, &'a [u8]), ()>;

/// Bounds-checked XDR reader.
struct Xdr<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Xdr<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Xdr { buf, pos: 0 }
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_be_bytes(b.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        Some(u64::from_be_bytes(b.try_into().ok()?))
    }
    /// XDR opaque/string: length, bytes, padding to 4 (padding optional at the end).
    fn opaque(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        let data = self.bytes(len)?;
        let pad = (4 - len % 4) % 4;
        self.pos = self.pos.saturating_add(pad).min(self.buf.len());
        Some(data)
    }
    fn address(&mut self) -> Option<IpAddr> {
        match self.u32()? {
            1 => {
                let raw: [u8; 4] = self.bytes(4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(raw)))
            }
            2 => {
                let raw: [u8; 16] = self.bytes(16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(raw)))
            }
            _ => None,
        }
    }
    /// Next `type, length, body` element; `None` at the end or when it runs past the buffer.
    fn element(&mut self) -> Option<Element<'a>> {
        if self.remaining() == 0 {
            return None;
        }
        let (Some(kind), Some(len)) = (self.u32(), self.u32()) else {
            return Some(Err(()));
        };
        match usize::try_from(len).ok().and_then(|l| self.bytes(l)) {
            Some(body) => Some(Ok((kind >> 12, kind & 0xfff, body))),
            None => Some(Err(())),
        }
    }
}

struct DatagramHeader {
    agent: IpAddr,
    sub_agent_id: u32,
    sequence: u32,
    uptime_ms: u32,
}

/// A flow or counter sample's head: (sequence, source id type, source id index), from the
/// compact form (type in the top byte of one word) or the expanded one (two words).
fn sample_head(x: &mut Xdr<'_>, expanded: bool) -> Option<(u32, u32, u32)> {
    let sequence = x.u32()?;
    let (source_type, source_index) = if expanded {
        (x.u32()?, x.u32()?)
    } else {
        let id = x.u32()?;
        (id >> 24, id & 0x00ff_ffff)
    };
    Some((sequence, source_type, source_index))
}

impl SflowDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: SflowLimits) -> Self {
        SflowDecoder {
            limits,
            stats: SflowStats::default(),
            sequences: HashMap::new(),
        }
    }

    /// Cumulative counters.
    pub fn stats(&self) -> &SflowStats {
        &self.stats
    }

    /// Decodes one sFlow datagram from `exporter` received at `now`, appending to `out`.
    pub fn decode(
        &mut self,
        exporter: SocketAddr,
        payload: &[u8],
        now: DateTime<Utc>,
        out: &mut Vec<SflowRecord>,
    ) -> Result<SflowSummary, DecodeError> {
        self.stats.datagrams += 1;
        let result = self.decode_inner(exporter, payload, now, out);
        match &result {
            Ok(s) if s.trailing_bytes > 0 => self.stats.datagrams_with_trailing_bytes += 1,
            Ok(_) => {}
            Err(_) => self.stats.datagrams_rejected += 1,
        }
        result
    }

    fn decode_inner(
        &mut self,
        exporter: SocketAddr,
        payload: &[u8],
        now: DateTime<Utc>,
        out: &mut Vec<SflowRecord>,
    ) -> Result<SflowSummary, DecodeError> {
        if payload.is_empty() {
            return Err(DecodeError::Empty);
        }
        let mut x = Xdr::new(payload);
        let truncated = |need| DecodeError::TruncatedHeader {
            protocol: "sFlow",
            need,
            have: payload.len(),
        };
        let version = x.u32().ok_or_else(|| truncated(28))?;
        if version != 5 {
            return Err(DecodeError::UnknownVersion {
                protocol: "sflow",
                version,
            });
        }
        let addr_type = x.u32().ok_or_else(|| truncated(28))?;
        let need = match addr_type {
            1 => 28,
            2 => 40,
            other => return Err(DecodeError::BadAgentAddressType(other)),
        };
        if payload.len() < need {
            return Err(truncated(need));
        }
        let agent = match addr_type {
            1 => {
                let raw: [u8; 4] = x
                    .bytes(4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| truncated(need))?;
                IpAddr::V4(Ipv4Addr::from(raw))
            }
            _ => {
                let raw: [u8; 16] = x
                    .bytes(16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| truncated(need))?;
                IpAddr::V6(Ipv6Addr::from(raw))
            }
        };
        let (Some(sub_agent_id), Some(sequence), Some(uptime_ms), Some(count)) =
            (x.u32(), x.u32(), x.u32(), x.u32())
        else {
            return Err(truncated(need));
        };
        if count > self.limits.max_samples {
            return Err(DecodeError::TooMany {
                what: "samples",
                count,
                limit: self.limits.max_samples,
            });
        }
        let header = DatagramHeader {
            agent,
            sub_agent_id,
            sequence,
            uptime_ms,
        };
        let mut summary = SflowSummary {
            samples_declared: count,
            ..SflowSummary::default()
        };
        summary.lost = self.check_sequence(agent, sub_agent_id, sequence);

        for _ in 0..count {
            let Some(element) = x.element() else { break };
            let Ok((enterprise, format, body)) = element else {
                self.stats.truncated += 1;
                break;
            };
            summary.samples += 1;
            if enterprise != 0 {
                self.stats.unknown_samples += 1;
                continue;
            }
            let produced = match format {
                1 | 3 => self.flow_sample(exporter, &header, format == 3, body, now),
                2 | 4 => self.counter_sample(exporter, &header, format == 4, body, now),
                5 => self.discard_sample(exporter, &header, body, now),
                _ => {
                    self.stats.unknown_samples += 1;
                    continue;
                }
            };
            match produced {
                Some(record) => {
                    match &record {
                        SflowRecord::Flow(_) => summary.flows += 1,
                        SflowRecord::Counters(_) => summary.counters += 1,
                        SflowRecord::Discarded(_) => summary.discards += 1,
                    }
                    out.push(record);
                }
                None => self.stats.samples_malformed += 1,
            }
        }
        summary.trailing_bytes = x.remaining();
        Ok(summary)
    }

    fn check_sequence(&mut self, agent: IpAddr, sub_agent: u32, sequence: u32) -> u64 {
        let key = (agent, sub_agent);
        let expected = self.sequences.get(&key).copied();
        if expected.is_none() && self.sequences.len() >= self.limits.max_agents {
            return 0;
        }
        self.sequences.insert(key, sequence.wrapping_add(1));
        let Some(expected) = expected else { return 0 };
        let diff = sequence.wrapping_sub(expected);
        if diff == 0 {
            0
        } else if diff <= self.limits.max_sequence_gap {
            self.stats.sequence_lost_datagrams += u64::from(diff);
            u64::from(diff)
        } else {
            self.stats.sequence_resets += 1;
            0
        }
    }

    fn origin(
        exporter: SocketAddr,
        h: &DatagramHeader,
        sample_sequence: u32,
        source_id_type: u32,
        source_id_index: u32,
        now: DateTime<Utc>,
    ) -> SampleOrigin {
        SampleOrigin {
            exporter,
            agent_address: h.agent,
            sub_agent_id: h.sub_agent_id,
            datagram_sequence: h.sequence,
            uptime_ms: h.uptime_ms,
            sample_sequence,
            source_id_type,
            source_id_index,
            received_at: now,
        }
    }

    fn flow_sample(
        &mut self,
        exporter: SocketAddr,
        h: &DatagramHeader,
        expanded: bool,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<SflowRecord> {
        let mut x = Xdr::new(body);
        let (sample_sequence, source_type, source_index) = sample_head(&mut x, expanded)?;
        let rate = x.u32()?;
        let pool = x.u32()?;
        let drops = x.u32()?;
        let (input_format, input, output_format, output) = if expanded {
            (x.u32()?, x.u32()?, x.u32()?, x.u32()?)
        } else {
            let i = x.u32()?;
            let o = x.u32()?;
            (i >> 30, i & 0x3fff_ffff, o >> 30, o & 0x3fff_ffff)
        };
        let n = x.u32()?;
        if n > self.limits.max_records {
            return None;
        }
        self.stats.flow_samples += 1;

        let u = |v: u32| FieldValue::Unsigned(u64::from(v));
        let mut b = RecordBuilder::with_capacity(32);
        b.add("agent_address", Role::None, FieldValue::Ip(h.agent));
        b.add("sub_agent_id", Role::None, u(h.sub_agent_id));
        b.add("sample_sequence_number", Role::None, u(sample_sequence));
        b.add("source_id_type", Role::None, u(source_type));
        b.add("source_id_index", Role::None, u(source_index));
        b.add("sampling_rate", Role::SamplingInterval, u(rate));
        b.add("sample_pool", Role::None, u(pool));
        b.add("drops", Role::None, u(drops));
        b.add("input_format", Role::None, u(input_format));
        let in_role = if input_format == 0 && input != 0x3fff_ffff {
            Role::InIf
        } else {
            Role::None
        };
        b.add("input", in_role, u(input));
        b.add("output_format", Role::None, u(output_format));
        let out_role = if output_format == 0 && output != 0x3fff_ffff {
            Role::OutIf
        } else {
            Role::None
        };
        b.add("output", out_role, u(output));
        let mut packets_set = false;

        for _ in 0..n {
            let Some(element) = x.element() else { break };
            let Ok((enterprise, format, rec)) = element else {
                self.stats.truncated += 1;
                break;
            };
            if enterprise != 0 {
                self.stats.unknown_records += 1;
                continue;
            }
            let mut r = Xdr::new(rec);
            match format {
                1 => {
                    let (Some(proto), Some(frame_len), Some(stripped), Some(data)) =
                        (r.u32(), r.u32(), r.u32(), r.opaque())
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("header_protocol", Role::None, u(proto));
                    b.add("frame_length", Role::Bytes(0), u(frame_len));
                    b.add("stripped", Role::None, u(stripped));
                    b.add("header_length", Role::None, u(data.len() as u32));
                    b.add("header", Role::None, FieldValue::Octets(data.to_vec()));
                    add_packet(&mut b, &packet::parse(proto, data));
                    packets_set = true;
                }
                2 => {
                    let (Some(len), Some(src), Some(dst), Some(ty)) =
                        (r.u32(), r.bytes(8), r.bytes(8), r.u32())
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("frame_length", Role::Bytes(1), u(len));
                    if let Some(m) = mac6(src) {
                        b.add("src_mac", Role::SrcMac, FieldValue::Mac(m));
                    }
                    if let Some(m) = mac6(dst) {
                        b.add("dst_mac", Role::DstMac, FieldValue::Mac(m));
                    }
                    b.add("ether_type", Role::None, u(ty));
                    packets_set = true;
                }
                3 | 4 => {
                    let addr_len = if format == 3 { 4 } else { 16 };
                    let (Some(len), Some(proto), Some(src), Some(dst)) =
                        (r.u32(), r.u32(), r.bytes(addr_len), r.bytes(addr_len))
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    let (Some(sp), Some(dp), Some(flags), Some(tos)) =
                        (r.u32(), r.u32(), r.u32(), r.u32())
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("ip_length", Role::Bytes(2), u(len));
                    b.add("ip_protocol", Role::Protocol, u(proto));
                    if let (Some(s), Some(d)) = (ip_from(src), ip_from(dst)) {
                        b.add("src_addr", Role::SrcAddr, FieldValue::Ip(s));
                        b.add("dst_addr", Role::DstAddr, FieldValue::Ip(d));
                    }
                    b.add("src_port", Role::SrcPort, u(sp));
                    b.add("dst_port", Role::DstPort, u(dp));
                    b.add("tcp_flags", Role::TcpFlags, u(flags));
                    b.add("ip_tos", Role::None, u(tos));
                    packets_set = true;
                }
                1001 => {
                    let (Some(sv), Some(sp), Some(dv), Some(dp)) =
                        (r.u32(), r.u32(), r.u32(), r.u32())
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("src_vlan", Role::Vlan, u(sv));
                    b.add("src_priority", Role::None, u(sp));
                    b.add("dst_vlan", Role::None, u(dv));
                    b.add("dst_priority", Role::None, u(dp));
                }
                1002 => {
                    let (Some(nh), Some(sm), Some(dm)) = (r.address(), r.u32(), r.u32()) else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("next_hop", Role::NextHop, FieldValue::Ip(nh));
                    b.add("src_mask_len", Role::SrcMask, u(sm));
                    b.add("dst_mask_len", Role::DstMask, u(dm));
                }
                1003 => {
                    let (Some(nh), Some(asn), Some(src_as), Some(peer_as), Some(segments)) =
                        (r.address(), r.u32(), r.u32(), r.u32(), r.u32())
                    else {
                        self.stats.truncated += 1;
                        continue;
                    };
                    b.add("bgp_next_hop", Role::None, FieldValue::Ip(nh));
                    b.add("as", Role::None, u(asn));
                    b.add("src_as", Role::SrcAs, u(src_as));
                    b.add("src_peer_as", Role::None, u(peer_as));
                    let mut dst_as = None;
                    for _ in 0..segments.min(64) {
                        let (Some(_ty), Some(len)) = (r.u32(), r.u32()) else {
                            break;
                        };
                        for _ in 0..len.min(256) {
                            match r.u32() {
                                Some(a) => dst_as = Some(a),
                                None => break,
                            }
                        }
                    }
                    if let Some(a) = dst_as {
                        b.add("dst_as", Role::DstAs, u(a));
                    }
                }
                _ => self.stats.unknown_records += 1,
            }
        }
        if packets_set {
            b.add("packets", Role::Packets(0), FieldValue::Unsigned(1));
        }
        let ctx = RecordCtx {
            kind: RecordKind::Flow,
            source: FlowSource::SflowV5,
            version: 5,
            exporter,
            domain: h.sub_agent_id,
            template_id: None,
            sequence: h.sequence,
            export_time: now,
            uptime_ms: Some(h.uptime_ms),
            received_at: now,
        };
        let mut record = b.finish(&ctx, None);
        record.flow_start = Some(now);
        record.flow_end = Some(now);
        Some(SflowRecord::Flow(record))
    }

    fn counter_sample(
        &mut self,
        exporter: SocketAddr,
        h: &DatagramHeader,
        expanded: bool,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<SflowRecord> {
        let mut x = Xdr::new(body);
        let (sample_sequence, source_type, source_index) = sample_head(&mut x, expanded)?;
        let n = x.u32()?;
        if n > self.limits.max_records {
            return None;
        }
        self.stats.counter_samples += 1;
        let mut record = CounterRecord {
            origin: Self::origin(exporter, h, sample_sequence, source_type, source_index, now),
            interface: None,
            ethernet: None,
            other: Vec::new(),
        };
        for _ in 0..n {
            let Some(element) = x.element() else { break };
            let Ok((enterprise, format, rec)) = element else {
                self.stats.truncated += 1;
                break;
            };
            let mut r = Xdr::new(rec);
            match (enterprise, format) {
                (0, 1) => match generic_counters(&mut r) {
                    Some(c) => record.interface = Some(c),
                    None => self.stats.truncated += 1,
                },
                (0, 2) => {
                    let mut v = [0u32; 13];
                    if v.iter_mut()
                        .all(|slot| r.u32().map(|x| *slot = x).is_some())
                    {
                        record.ethernet = Some(EthernetCounters {
                            alignment_errors: v[0],
                            fcs_errors: v[1],
                            single_collision_frames: v[2],
                            multiple_collision_frames: v[3],
                            sqe_test_errors: v[4],
                            deferred_transmissions: v[5],
                            late_collisions: v[6],
                            excessive_collisions: v[7],
                            internal_mac_transmit_errors: v[8],
                            carrier_sense_errors: v[9],
                            frame_too_longs: v[10],
                            internal_mac_receive_errors: v[11],
                            symbol_errors: v[12],
                        });
                    } else {
                        self.stats.truncated += 1;
                    }
                }
                _ => {
                    self.stats.unknown_records += 1;
                    record.other.push(RawRecord {
                        enterprise,
                        format,
                        data: hex(rec),
                    });
                }
            }
        }
        Some(SflowRecord::Counters(record))
    }

    fn discard_sample(
        &mut self,
        exporter: SocketAddr,
        h: &DatagramHeader,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<SflowRecord> {
        let mut x = Xdr::new(body);
        let sample_sequence = x.u32()?;
        let source_type = x.u32()?;
        let source_index = x.u32()?;
        let drops = x.u32()?;
        let input = x.u32()?;
        let output = x.u32()?;
        let reason = x.u32()?;
        let n = x.u32()?;
        if n > self.limits.max_records {
            return None;
        }
        self.stats.discard_samples += 1;
        let mut record = DiscardRecord {
            origin: Self::origin(exporter, h, sample_sequence, source_type, source_index, now),
            drops,
            input,
            output,
            reason,
            egress_queue: None,
            acl: None,
            function: None,
            packet: None,
            other: Vec::new(),
        };
        for _ in 0..n {
            let Some(element) = x.element() else { break };
            let Ok((enterprise, format, rec)) = element else {
                self.stats.truncated += 1;
                break;
            };
            let mut r = Xdr::new(rec);
            let ok = match (enterprise, format) {
                (0, 1) => match (r.u32(), r.u32(), r.u32(), r.opaque()) {
                    (Some(proto), Some(_frame), Some(_stripped), Some(data)) => {
                        record.packet = Some(packet::parse(proto, data));
                        true
                    }
                    _ => false,
                },
                (0, 1036) => r.u32().map(|q| record.egress_queue = Some(q)).is_some(),
                (0, 1037) => match (r.u32(), r.opaque(), r.u32()) {
                    (Some(number), Some(name), Some(direction)) => {
                        record.acl = Some(AclInfo {
                            number,
                            name: String::from_utf8_lossy(name).into_owned(),
                            direction,
                        });
                        true
                    }
                    _ => false,
                },
                (0, 1038) => match r.opaque() {
                    Some(symbol) => {
                        record.function = Some(String::from_utf8_lossy(symbol).into_owned());
                        true
                    }
                    None => false,
                },
                _ => {
                    self.stats.unknown_records += 1;
                    record.other.push(RawRecord {
                        enterprise,
                        format,
                        data: hex(rec),
                    });
                    true
                }
            };
            if !ok {
                self.stats.truncated += 1;
            }
        }
        Some(SflowRecord::Discarded(record))
    }
}

fn generic_counters(r: &mut Xdr<'_>) -> Option<InterfaceCounters> {
    Some(InterfaceCounters {
        if_index: r.u32()?,
        if_type: r.u32()?,
        if_speed: r.u64()?,
        if_direction: r.u32()?,
        if_status: r.u32()?,
        in_octets: r.u64()?,
        in_ucast_pkts: r.u32()?,
        in_multicast_pkts: r.u32()?,
        in_broadcast_pkts: r.u32()?,
        in_discards: r.u32()?,
        in_errors: r.u32()?,
        in_unknown_protos: r.u32()?,
        out_octets: r.u64()?,
        out_ucast_pkts: r.u32()?,
        out_multicast_pkts: r.u32()?,
        out_broadcast_pkts: r.u32()?,
        out_discards: r.u32()?,
        out_errors: r.u32()?,
        promiscuous_mode: r.u32()?,
    })
}

fn mac6(b: &[u8]) -> Option<MacAddr> {
    let raw: [u8; 6] = b.get(..6)?.try_into().ok()?;
    Some(MacAddr(raw))
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => {
            let raw: [u8; 4] = b.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(raw)))
        }
        16 => {
            let raw: [u8; 16] = b.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(raw)))
        }
        _ => None,
    }
}

/// Adds the decoded sampled header to a flow record.
fn add_packet(b: &mut RecordBuilder, p: &PacketSummary) {
    let u = |v: u64| FieldValue::Unsigned(v);
    if let Some(m) = p.src_mac {
        b.add("src_mac", Role::SrcMac, FieldValue::Mac(m));
    }
    if let Some(m) = p.dst_mac {
        b.add("dst_mac", Role::DstMac, FieldValue::Mac(m));
    }
    if let Some(t) = p.ether_type {
        b.add("ether_type", Role::None, u(u64::from(t)));
    }
    if let Some(v) = p.vlan {
        b.add("vlan", Role::VlanAlt, u(u64::from(v)));
    }
    if let Some(v) = p.ip_version {
        b.add("ip_version", Role::None, u(u64::from(v)));
    }
    if let Some(a) = p.src_addr {
        b.add("src_addr", Role::SrcAddr, FieldValue::Ip(a));
    }
    if let Some(a) = p.dst_addr {
        b.add("dst_addr", Role::DstAddr, FieldValue::Ip(a));
    }
    if let Some(v) = p.ip_protocol {
        b.add("ip_protocol", Role::Protocol, u(u64::from(v)));
    }
    if let Some(v) = p.ip_tos {
        b.add("ip_tos", Role::None, u(u64::from(v)));
    }
    if let Some(v) = p.ip_ttl {
        b.add("ip_ttl", Role::None, u(u64::from(v)));
    }
    if let Some(v) = p.src_port {
        b.add("src_port", Role::SrcPort, u(u64::from(v)));
    }
    if let Some(v) = p.dst_port {
        b.add("dst_port", Role::DstPort, u(u64::from(v)));
    }
    if let Some(v) = p.tcp_flags {
        b.add("tcp_flags", Role::TcpFlags, u(u64::from(v)));
    }
    if let Some(v) = p.icmp_type {
        b.add("icmp_type", Role::IcmpType, u(u64::from(v)));
    }
    if let Some(v) = p.icmp_code {
        b.add("icmp_code", Role::IcmpCode, u(u64::from(v)));
    }
}
