//! The normalized output record ([`FlowRecord`]) and the builder every decoder fills.
//!
//! Decoders push each decoded field into a [`RecordBuilder`] together with its [`Role`]; the
//! builder keeps the field under its table name (so nothing the exporter sent is lost) and
//! collects the normalized columns: addresses, ports, protocol, counters with sampling applied,
//! absolute flow start/end times, interfaces, direction, VLAN, MACs, AS numbers, ICMP type and
//! code, and the Community ID.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

use crate::community_id::community_id_v1;
use crate::fields::{Field, FieldValue, Fields, MacAddr, Role};

/// Which export protocol produced a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowSource {
    /// NetFlow v5.
    NetflowV5,
    /// NetFlow v9 (RFC 3954).
    NetflowV9,
    /// IPFIX (RFC 7011, version 10).
    Ipfix,
    /// sFlow v5 flow sample.
    SflowV5,
}

/// Data record or options data record (exporter metadata such as sampling or interface names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A flow.
    Flow,
    /// An options data record (v9 option template / IPFIX options template).
    Options,
}

/// Flow direction as reported by the exporter (flowDirection, IE 61).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Observed on ingress.
    Ingress,
    /// Observed on egress.
    Egress,
}

/// One normalized flow (or options) record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowRecord {
    /// Flow or options data.
    pub kind: RecordKind,
    /// Export protocol.
    pub source: FlowSource,
    /// Version number from the export header (5, 9, 10; 5 for sFlow v5).
    pub protocol_version: u16,
    /// UDP source of the datagram, as passed by the caller.
    pub exporter: SocketAddr,
    /// v9 source id / IPFIX observation domain / v5 `engine_type << 8 | engine_id` / sFlow sub-agent id.
    pub observation_domain: u32,
    /// Template (v9 flowset / IPFIX set) id the record was decoded with.
    pub template_id: Option<u16>,
    /// Sequence number of the export header.
    pub sequence: u32,
    /// Export time from the header (v5 with nanoseconds).
    pub export_time: DateTime<Utc>,
    /// Exporter sysUpTime in milliseconds (v5, v9, sFlow).
    pub exporter_uptime_ms: Option<u32>,
    /// Receive time passed by the caller.
    pub received_at: DateTime<Utc>,
    /// Source address.
    pub src_addr: Option<IpAddr>,
    /// Destination address.
    pub dst_addr: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// IP protocol number.
    pub ip_protocol: Option<u8>,
    /// Transport name for `ip_protocol` (`tcp`, `udp`, `icmp`, `ipv6-icmp`, ...).
    pub transport: Option<&'static str>,
    /// Bytes with the sampling rate applied.
    pub bytes: u64,
    /// Packets with the sampling rate applied.
    pub packets: u64,
    /// Sampling rate applied to `bytes` and `packets` (1 = unsampled or unknown).
    pub sampling_rate: u32,
    /// Absolute flow start.
    pub flow_start: Option<DateTime<Utc>>,
    /// Absolute flow end.
    pub flow_end: Option<DateTime<Utc>>,
    /// Cumulative TCP flags.
    pub tcp_flags: Option<u8>,
    /// Names of the set TCP flags (`fin`, `syn`, `rst`, `psh`, `ack`, `urg`, `ece`, `cwr`).
    pub tcp_flag_names: Vec<&'static str>,
    /// Input interface index.
    pub input_interface: Option<u32>,
    /// Output interface index.
    pub output_interface: Option<u32>,
    /// Direction, when the exporter says.
    pub direction: Option<Direction>,
    /// VLAN id.
    pub vlan: Option<u16>,
    /// Source MAC.
    pub src_mac: Option<MacAddr>,
    /// Destination MAC.
    pub dst_mac: Option<MacAddr>,
    /// Next-hop address.
    pub next_hop: Option<IpAddr>,
    /// Source AS.
    pub src_as: Option<u32>,
    /// Destination AS.
    pub dst_as: Option<u32>,
    /// Source prefix length.
    pub src_mask: Option<u8>,
    /// Destination prefix length.
    pub dst_mask: Option<u8>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// ICMP code.
    pub icmp_code: Option<u8>,
    /// Community ID v1 (`1:<base64>`); empty when addresses or protocol are unknown.
    pub community_id: String,
    /// Every decoded field by its mapped name (Logstash v9 names / IANA and vendor IPFIX names).
    pub fields: Fields,
}

impl FlowRecord {
    /// Shortcut for `self.fields.get(name)`.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.get(name)
    }
}

/// Name of an IP protocol number, as used in the `transport` column.
pub fn transport_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        0 => "hopopt",
        1 => "icmp",
        2 => "igmp",
        4 => "ipv4",
        6 => "tcp",
        17 => "udp",
        41 => "ipv6",
        43 => "ipv6-route",
        44 => "ipv6-frag",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "ipv6-icmp",
        59 => "ipv6-nonxt",
        60 => "ipv6-opts",
        88 => "eigrp",
        89 => "ospf",
        103 => "pim",
        112 => "vrrp",
        115 => "l2tp",
        132 => "sctp",
        136 => "udplite",
        137 => "mpls-in-ip",
        _ => return None,
    })
}

/// Names of the flags set in `flags`, lowest bit first.
pub fn tcp_flag_names(flags: u8) -> Vec<&'static str> {
    const NAMES: [&str; 8] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1u8 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Header-level context of a record.
#[derive(Clone, Debug)]
pub(crate) struct RecordCtx {
    pub kind: RecordKind,
    pub source: FlowSource,
    pub version: u16,
    pub exporter: SocketAddr,
    pub domain: u32,
    pub template_id: Option<u16>,
    pub sequence: u32,
    pub export_time: DateTime<Utc>,
    pub uptime_ms: Option<u32>,
    pub received_at: DateTime<Utc>,
}

/// Per-domain state that affects record normalization.
#[derive(Clone, Debug, Default)]
pub(crate) struct DomainInfo {
    /// Sampling rate from the latest options data (or the v5 header).
    pub sampling_rate: Option<u32>,
    /// Sampling rate per sampler / selector id (from options data).
    pub samplers: HashMap<u64, u32>,
    /// systemInitTimeMilliseconds from options data (IPFIX sysUpTime-relative times).
    pub system_init_ms: Option<i64>,
}

/// Accumulates fields and normalized columns for one record.
#[derive(Default)]
pub(crate) struct RecordBuilder {
    pub fields: Vec<Field>,
    src_addr: Option<IpAddr>,
    dst_addr: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    src_port_alt: Option<u16>,
    dst_port_alt: Option<u16>,
    protocol: Option<u8>,
    bytes: [Option<u64>; 4],
    packets: [Option<u64>; 4],
    tcp_flags: Option<u8>,
    tcp_flags_alt: Option<u8>,
    in_if: Option<u32>,
    out_if: Option<u32>,
    in_if_alt: Option<u32>,
    out_if_alt: Option<u32>,
    direction: Option<Direction>,
    vlan: Option<u16>,
    vlan_alt: Option<u16>,
    src_mac: Option<MacAddr>,
    dst_mac: Option<MacAddr>,
    post_src_mac: Option<MacAddr>,
    post_dst_mac: Option<MacAddr>,
    next_hop: Option<IpAddr>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    src_mask: Option<u8>,
    dst_mask: Option<u8>,
    icmp_type_code: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    start_uptime: Option<u32>,
    end_uptime: Option<u32>,
    start_abs: Option<DateTime<Utc>>,
    end_abs: Option<DateTime<Utc>>,
    start_delta_us: Option<u64>,
    end_delta_us: Option<u64>,
    duration_us: Option<u64>,
    sampling_interval: Option<u64>,
    sampler_id: Option<u64>,
    sampler_random_interval: Option<u64>,
    sampling_packet_interval: Option<u64>,
    sampling_packet_space: Option<u64>,
    pub(crate) system_init_ms: Option<i64>,
}

fn small<T: TryFrom<u64>>(v: Option<u64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

fn abs_time(value: &FieldValue, unit: Role) -> Option<DateTime<Utc>> {
    if let FieldValue::Time(t) = value {
        return Some(*t);
    }
    let v = i64::try_from(value.as_u64()?).ok()?;
    match unit {
        Role::StartSeconds | Role::EndSeconds => Utc.timestamp_opt(v, 0).single(),
        Role::StartMillis | Role::EndMillis => Utc.timestamp_millis_opt(v).single(),
        _ => None,
    }
}

impl RecordBuilder {
    pub fn with_capacity(n: usize) -> Self {
        RecordBuilder {
            fields: Vec::with_capacity(n),
            ..RecordBuilder::default()
        }
    }

    /// Records the normalized meaning of a value (the field itself is pushed by [`Self::push`]).
    pub fn apply(&mut self, role: Role, value: &FieldValue) {
        let num = || value.as_u64();
        match role {
            Role::None => {}
            Role::SrcAddr => self.src_addr = self.src_addr.or(value.as_ip()),
            Role::DstAddr => self.dst_addr = self.dst_addr.or(value.as_ip()),
            Role::SrcPort => self.src_port = small(num()),
            Role::DstPort => self.dst_port = small(num()),
            Role::SrcPortAlt => self.src_port_alt = self.src_port_alt.or(small(num())),
            Role::DstPortAlt => self.dst_port_alt = self.dst_port_alt.or(small(num())),
            Role::Protocol => self.protocol = small(num()),
            Role::Bytes(pref) => {
                if let Some(slot) = self.bytes.get_mut(usize::from(pref)) {
                    *slot = num();
                }
            }
            Role::Packets(pref) => {
                if let Some(slot) = self.packets.get_mut(usize::from(pref)) {
                    *slot = num();
                }
            }
            Role::TcpFlags => self.tcp_flags = num().map(|v| (v & 0xff) as u8),
            Role::TcpFlagsAlt => {
                if let Some(v) = num() {
                    self.tcp_flags_alt = Some(self.tcp_flags_alt.unwrap_or(0) | (v & 0xff) as u8);
                }
            }
            Role::InIf => self.in_if = small(num()),
            Role::OutIf => self.out_if = small(num()),
            Role::InIfAlt => self.in_if_alt = small(num()),
            Role::OutIfAlt => self.out_if_alt = small(num()),
            Role::Direction => {
                self.direction = match num() {
                    Some(0) => Some(Direction::Ingress),
                    Some(1) => Some(Direction::Egress),
                    _ => None,
                }
            }
            Role::Vlan => self.vlan = small(num()),
            Role::VlanAlt => self.vlan_alt = small(num()),
            Role::SrcMac | Role::DstMac | Role::PostSrcMac | Role::PostDstMac => {
                if let FieldValue::Mac(mac) = value {
                    let slot = match role {
                        Role::SrcMac => &mut self.src_mac,
                        Role::DstMac => &mut self.dst_mac,
                        Role::PostSrcMac => &mut self.post_src_mac,
                        _ => &mut self.post_dst_mac,
                    };
                    *slot = Some(*mac);
                }
            }
            Role::NextHop => self.next_hop = self.next_hop.or(value.as_ip()),
            Role::SrcAs => self.src_as = small(num()),
            Role::DstAs => self.dst_as = small(num()),
            Role::SrcMask => self.src_mask = small(num()),
            Role::DstMask => self.dst_mask = small(num()),
            Role::IcmpTypeCode => self.icmp_type_code = small(num()),
            Role::IcmpType => self.icmp_type = small(num()),
            Role::IcmpCode => self.icmp_code = small(num()),
            Role::StartUptime => self.start_uptime = small(num()),
            Role::EndUptime => self.end_uptime = small(num()),
            Role::StartSeconds | Role::StartMillis | Role::StartNtp => {
                if let Some(t) = abs_time(value, role) {
                    self.start_abs = Some(t);
                }
            }
            Role::EndSeconds | Role::EndMillis | Role::EndNtp => {
                if let Some(t) = abs_time(value, role) {
                    self.end_abs = Some(t);
                }
            }
            Role::StartDeltaMicros => self.start_delta_us = num(),
            Role::EndDeltaMicros => self.end_delta_us = num(),
            Role::DurationMillis => self.duration_us = num().map(|v| v.saturating_mul(1000)),
            Role::DurationMicros => self.duration_us = num(),
            Role::SamplingInterval => self.sampling_interval = num(),
            Role::SamplerId => self.sampler_id = num(),
            Role::SamplerRandomInterval => self.sampler_random_interval = num(),
            Role::SamplingPacketInterval => self.sampling_packet_interval = num(),
            Role::SamplingPacketSpace => self.sampling_packet_space = num(),
            Role::SystemInitMillis => {
                self.system_init_ms = num().and_then(|v| i64::try_from(v).ok())
            }
        }
    }

    /// Keeps a field under its name.
    pub fn push(&mut self, name: Cow<'static, str>, value: FieldValue) {
        self.fields.push(Field { name, value });
    }

    /// Pushes and applies in one step.
    pub fn add(&mut self, name: &'static str, role: Role, value: FieldValue) {
        self.apply(role, &value);
        self.fields.push(Field {
            name: Cow::Borrowed(name),
            value,
        });
    }

    /// Sampling information carried by an options record, as (sampler id, rate).
    pub fn sampling_rate_here(&self) -> Option<u32> {
        let rate = match (self.sampling_packet_interval, self.sampling_packet_space) {
            (Some(interval), space) if interval > 0 => {
                Some(interval.saturating_add(space.unwrap_or(0)) / interval)
            }
            _ => self
                .sampling_interval
                .filter(|v| *v > 0)
                .or(self.sampler_random_interval.filter(|v| *v > 0)),
        }?;
        u32::try_from(rate).ok().filter(|r| *r > 0)
    }

    pub fn sampler_id(&self) -> Option<u64> {
        self.sampler_id
    }

    /// Builds the record. `domain` supplies sampling and system-init state.
    pub fn finish(self, ctx: &RecordCtx, domain: Option<&DomainInfo>) -> FlowRecord {
        let is_flow = ctx.kind == RecordKind::Flow;
        let rate = if is_flow {
            self.sampling_rate_here()
                .or_else(|| {
                    let d = domain?;
                    self.sampler_id
                        .and_then(|id| d.samplers.get(&id).copied())
                        .or(d.sampling_rate)
                })
                .unwrap_or(1)
                .max(1)
        } else {
            1
        };
        let raw_bytes = self.bytes.iter().flatten().next().copied().unwrap_or(0);
        let raw_packets = self.packets.iter().flatten().next().copied().unwrap_or(0);

        let protocol = self.protocol;
        let src_port = self.src_port.or(self.src_port_alt);
        let dst_port = self.dst_port.or(self.dst_port_alt);
        let is_icmp = matches!(protocol, Some(1) | Some(58));
        let (icmp_type, icmp_code) = if !is_icmp {
            (None, None)
        } else if let Some(t) = self.icmp_type {
            (Some(t), Some(self.icmp_code.unwrap_or(0)))
        } else if let Some(tc) = self.icmp_type_code {
            (Some((tc >> 8) as u8), Some((tc & 0xff) as u8))
        } else if let (None | Some(0), Some(dp)) = (src_port, dst_port) {
            // Common v5/v9 encoding: type * 256 + code in the destination port.
            (Some((dp >> 8) as u8), Some((dp & 0xff) as u8))
        } else {
            (None, None)
        };

        // Times.
        let uptime_to_abs = |value: u32| -> Option<DateTime<Utc>> {
            match ctx.uptime_ms {
                Some(uptime) => {
                    // Distance before the export, modulo 2^32 (uptime wraps after 49.7 days).
                    let ago = i64::from(uptime.wrapping_sub(value) as i32);
                    ctx.export_time
                        .checked_sub_signed(Duration::milliseconds(ago))
                }
                None => {
                    let init = self
                        .system_init_ms
                        .or(domain.and_then(|d| d.system_init_ms))?;
                    let ms = init.checked_add(i64::from(value))?;
                    Utc.timestamp_millis_opt(ms).single()
                }
            }
        };
        let delta = |us: u64| -> Option<DateTime<Utc>> {
            let us = i64::try_from(us).ok()?;
            ctx.export_time
                .checked_sub_signed(Duration::microseconds(us))
        };
        let mut start = self
            .start_abs
            .or_else(|| self.start_delta_us.and_then(delta))
            .or_else(|| self.start_uptime.and_then(uptime_to_abs));
        let mut end = self
            .end_abs
            .or_else(|| self.end_delta_us.and_then(delta))
            .or_else(|| self.end_uptime.and_then(uptime_to_abs));
        if let Some(us) = self.duration_us.and_then(|v| i64::try_from(v).ok()) {
            let d = Duration::microseconds(us);
            match (start, end) {
                (Some(s), None) => end = s.checked_add_signed(d),
                (None, Some(e)) => start = e.checked_sub_signed(d),
                _ => {}
            }
        }

        let tcp_flags = self.tcp_flags.or(self.tcp_flags_alt);
        let community_id = match (self.src_addr, self.dst_addr, protocol) {
            (Some(src), Some(dst), Some(proto)) if is_flow => {
                let ports = if is_icmp {
                    icmp_type.map(|t| (u16::from(t), u16::from(icmp_code.unwrap_or(0))))
                } else {
                    src_port.zip(dst_port)
                };
                community_id_v1(0, src, dst, proto, ports).unwrap_or_default()
            }
            _ => String::new(),
        };

        FlowRecord {
            kind: ctx.kind,
            source: ctx.source,
            protocol_version: ctx.version,
            exporter: ctx.exporter,
            observation_domain: ctx.domain,
            template_id: ctx.template_id,
            sequence: ctx.sequence,
            export_time: ctx.export_time,
            exporter_uptime_ms: ctx.uptime_ms,
            received_at: ctx.received_at,
            src_addr: self.src_addr,
            dst_addr: self.dst_addr,
            src_port,
            dst_port,
            ip_protocol: protocol,
            transport: protocol.and_then(transport_name),
            bytes: raw_bytes.saturating_mul(u64::from(rate)),
            packets: raw_packets.saturating_mul(u64::from(rate)),
            sampling_rate: rate,
            flow_start: start,
            flow_end: end,
            tcp_flags,
            tcp_flag_names: tcp_flags.map(tcp_flag_names).unwrap_or_default(),
            input_interface: self.in_if.or(self.in_if_alt),
            output_interface: self.out_if.or(self.out_if_alt),
            direction: self.direction,
            vlan: self.vlan.or(self.vlan_alt),
            src_mac: self.src_mac.or(self.post_src_mac),
            dst_mac: self.dst_mac.or(self.post_dst_mac),
            next_hop: self.next_hop,
            src_as: self.src_as,
            dst_as: self.dst_as,
            src_mask: self.src_mask,
            dst_mask: self.dst_mask,
            icmp_type,
            icmp_code,
            community_id,
            fields: Fields(self.fields),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flag_names() {
        assert_eq!(tcp_flag_names(0x12), vec!["syn", "ack"]);
        assert!(tcp_flag_names(0).is_empty());
        assert_eq!(transport_name(58), Some("ipv6-icmp"));
    }
}
