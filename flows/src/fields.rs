//! Field naming and value decoding shared by NetFlow v9 and IPFIX.
//!
//! The explicit name-mapping table lives in [`crate::tables`] (generated from `tables/*.txt`):
//! NetFlow v9 field types use Logstash's `netflow.yaml` names (`in_bytes`, `ipv4_src_addr`, ...),
//! IPFIX information elements their IANA names (`octetDeltaCount`, ...) and, for enterprise
//! elements, vendor names (`netscalerHttpReqUrl`, `FW_Rule`, ...). This module looks names up,
//! assigns each field a normalisation [`Role`], and turns raw bytes into a [`FieldValue`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::tables::{IPFIX_FIELDS, V9_FIELDS};

/// How the bytes of a field are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldKind {
    /// Big-endian unsigned integer of the template length (reduced-size encoding allowed).
    Unsigned,
    /// Big-endian two's complement integer.
    Signed,
    /// float32 (widened) or float64.
    Float,
    /// IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// MAC address, rendered `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// String, trailing NULs trimmed, invalid UTF-8 replaced.
    String,
    /// octetArray, rendered as lowercase hex.
    Octets,
    /// RFC 7270 forwardingStatus: `{status, reason}` from the first byte.
    ForwardingStatus,
    /// RFC 6759 application id, rendered `engine..selector` (`engine..pen..selector` for engine 20).
    ApplicationId,
    /// MPLS label stack entry: `{label, experimental, bottom_of_stack, ttl}`.
    MplsLabel,
    /// Cisco ASA ACL id (12 bytes), rendered as three 8-digit hex words joined by `-`.
    AsaAclId,
    /// Consumed but not reported (padding, lists).
    Skip,
    /// dateTimeSeconds (IPFIX).
    TimeSeconds,
    /// dateTimeMilliseconds (IPFIX).
    TimeMillis,
    /// dateTimeMicroseconds, NTP format (IPFIX).
    TimeMicrosNtp,
    /// dateTimeNanoseconds, NTP format (IPFIX).
    TimeNanosNtp,
}

/// A decoded field value.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// Unsigned integer.
    Unsigned(u64),
    /// Signed integer.
    Signed(i64),
    /// Floating point (float32 values are widened, not rounded).
    Float(f64),
    /// IP address.
    Ip(IpAddr),
    /// MAC address.
    Mac(MacAddr),
    /// Text.
    String(String),
    /// Raw bytes (serialized as lowercase hex).
    Octets(Vec<u8>),
    /// Absolute time.
    Time(DateTime<Utc>),
    /// RFC 7270 forwarding status.
    ForwardingStatus {
        /// Top two bits: 0 unknown, 1 forwarded, 2 dropped, 3 consumed.
        status: u8,
        /// Low six bits: reason code.
        reason: u8,
    },
    /// One MPLS label stack entry.
    MplsLabel {
        /// 20-bit label.
        label: u32,
        /// 3-bit traffic class.
        experimental: u8,
        /// Bottom-of-stack bit.
        bottom_of_stack: u8,
        /// TTL (0 when the exporter sent only 3 bytes).
        ttl: u8,
    },
}

impl FieldValue {
    /// The value as an unsigned integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            FieldValue::Unsigned(v) => Some(*v),
            FieldValue::Signed(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as an IP address, when it is one.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            FieldValue::Ip(ip) => Some(*ip),
            _ => None,
        }
    }

    /// The value as a string slice, when it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Unsigned(v) => serializer.serialize_u64(*v),
            FieldValue::Signed(v) => serializer.serialize_i64(*v),
            FieldValue::Float(v) => serializer.serialize_f64(*v),
            FieldValue::Ip(ip) => serializer.collect_str(ip),
            FieldValue::Mac(mac) => serializer.collect_str(mac),
            FieldValue::String(s) => serializer.serialize_str(s),
            FieldValue::Octets(bytes) => serializer.serialize_str(&hex(bytes)),
            FieldValue::Time(t) => {
                serializer.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            FieldValue::ForwardingStatus { status, reason } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("status", status)?;
                map.serialize_entry("reason", reason)?;
                map.end()
            }
            FieldValue::MplsLabel {
                label,
                experimental,
                bottom_of_stack,
                ttl,
            } => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("label", label)?;
                map.serialize_entry("experimental", experimental)?;
                map.serialize_entry("bottom_of_stack", bottom_of_stack)?;
                map.serialize_entry("ttl", ttl)?;
                map.end()
            }
        }
    }
}

/// A 48-bit MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One named field of a record.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Name from the mapping table (`unknown_v9_<type>` / `unknown_<pen>_<id>` when unmapped).
    pub name: Cow<'static, str>,
    /// Decoded value.
    pub value: FieldValue,
}

/// Every field the exporter sent, in template order, by name. Serialized as a JSON object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields(pub Vec<Field>);

impl Fields {
    /// First value with this name.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Iterates over `(name, value)` pairs in decode order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|f| (f.name.as_ref(), &f.value))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for field in &self.0 {
            map.serialize_entry(field.name.as_ref(), &field.value)?;
        }
        map.end()
    }
}

/// What a field means for the normalized [`crate::FlowRecord`] (independent of its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    None,
    SrcAddr,
    DstAddr,
    SrcPort,
    DstPort,
    /// Fallback ports (udp/tcp specific elements).
    SrcPortAlt,
    DstPortAlt,
    Protocol,
    /// Byte counters by preference (0 best).
    Bytes(u8),
    Packets(u8),
    TcpFlags,
    /// YAF initial/union flags, OR-ed when tcpControlBits is absent.
    TcpFlagsAlt,
    InIf,
    OutIf,
    InIfAlt,
    OutIfAlt,
    Direction,
    Vlan,
    VlanAlt,
    SrcMac,
    DstMac,
    PostSrcMac,
    PostDstMac,
    NextHop,
    SrcAs,
    DstAs,
    SrcMask,
    DstMask,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    StartUptime,
    EndUptime,
    StartSeconds,
    EndSeconds,
    StartMillis,
    EndMillis,
    StartNtp,
    EndNtp,
    StartDeltaMicros,
    EndDeltaMicros,
    DurationMillis,
    DurationMicros,
    SamplingInterval,
    SamplerId,
    SamplerRandomInterval,
    SamplingPacketInterval,
    SamplingPacketSpace,
    SystemInitMillis,
}

/// Role of an IANA element / NetFlow v9 field type (the numbering is shared up to 433).
fn iana_role(id: u16) -> Role {
    match id {
        1 => Role::Bytes(0),
        2 => Role::Packets(0),
        4 => Role::Protocol,
        6 => Role::TcpFlags,
        7 => Role::SrcPort,
        8 | 27 => Role::SrcAddr,
        9 | 29 => Role::SrcMask,
        10 => Role::InIf,
        11 => Role::DstPort,
        12 | 28 => Role::DstAddr,
        13 | 30 => Role::DstMask,
        14 => Role::OutIf,
        15 | 62 => Role::NextHop,
        16 => Role::SrcAs,
        17 => Role::DstAs,
        21 => Role::EndUptime,
        22 => Role::StartUptime,
        23 => Role::Bytes(3),
        24 => Role::Packets(3),
        32 | 139 => Role::IcmpTypeCode,
        34 => Role::SamplingInterval,
        48 => Role::SamplerId,
        50 => Role::SamplerRandomInterval,
        56 => Role::SrcMac,
        57 => Role::PostDstMac,
        58 => Role::Vlan,
        61 => Role::Direction,
        80 => Role::DstMac,
        81 => Role::PostSrcMac,
        85 => Role::Bytes(1),
        86 => Role::Packets(1),
        150 => Role::StartSeconds,
        151 => Role::EndSeconds,
        152 => Role::StartMillis,
        153 => Role::EndMillis,
        154 | 156 => Role::StartNtp,
        155 | 157 => Role::EndNtp,
        158 => Role::StartDeltaMicros,
        159 => Role::EndDeltaMicros,
        160 => Role::SystemInitMillis,
        161 => Role::DurationMillis,
        162 => Role::DurationMicros,
        176 | 178 => Role::IcmpType,
        177 | 179 => Role::IcmpCode,
        180 | 182 => Role::SrcPortAlt,
        181 | 183 => Role::DstPortAlt,
        231 => Role::Bytes(2),
        243 => Role::VlanAlt,
        252 => Role::InIfAlt,
        253 => Role::OutIfAlt,
        298 => Role::Packets(2),
        302 => Role::SamplerId,
        305 => Role::SamplingPacketInterval,
        306 => Role::SamplingPacketSpace,
        _ => Role::None,
    }
}

/// Name, kind and role of a NetFlow v9 field type. Unknown types are kept as octets.
pub(crate) fn v9_field(id: u16) -> (Cow<'static, str>, FieldKind, Role) {
    let role = if id <= 433 { iana_role(id) } else { Role::None };
    match V9_FIELDS.binary_search_by_key(&id, |row| row.0) {
        Ok(i) => {
            let (_, kind, name) = V9_FIELDS[i];
            (Cow::Borrowed(name), kind, role)
        }
        Err(_) => (
            Cow::Owned(format!("unknown_v9_{id}")),
            FieldKind::Octets,
            role,
        ),
    }
}

/// Name of a NetFlow v9 options scope field type.
pub(crate) fn v9_scope_name(id: u16) -> Cow<'static, str> {
    match id {
        1 => Cow::Borrowed("scope_system"),
        2 => Cow::Borrowed("scope_interface"),
        3 => Cow::Borrowed("scope_line_card"),
        4 => Cow::Borrowed("scope_netflow_cache"),
        5 => Cow::Borrowed("scope_template"),
        _ => Cow::Owned(format!("scope_{id}")),
    }
}

/// Name, kind and role of an IPFIX information element (`pen` 0 = IANA).
pub(crate) fn ipfix_field(pen: u32, id: u16) -> (Cow<'static, str>, FieldKind, Role) {
    let role = match pen {
        0 => iana_role(id),
        6871 if id == 14 || id == 15 => Role::TcpFlagsAlt,
        _ => Role::None,
    };
    match IPFIX_FIELDS.binary_search_by(|row| (row.0, row.1).cmp(&(pen, id))) {
        Ok(i) => {
            let (_, _, kind, name) = IPFIX_FIELDS[i];
            (Cow::Borrowed(name), kind, role)
        }
        Err(_) => (
            Cow::Owned(format!("unknown_{pen}_{id}")),
            FieldKind::Octets,
            role,
        ),
    }
}

/// Seconds between the NTP epoch (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

fn be_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Decodes one field. `None` means "nothing to report" ([`FieldKind::Skip`], or an empty value of
/// a kind that has no empty form).
pub(crate) fn decode_value(kind: FieldKind, bytes: &[u8]) -> Option<FieldValue> {
    if kind == FieldKind::Skip {
        return None;
    }
    if bytes.is_empty() {
        // Only variable-length fields can be empty here; keep empty text and octets.
        return match kind {
            FieldKind::String => Some(FieldValue::String(String::new())),
            FieldKind::Octets => Some(FieldValue::Octets(Vec::new())),
            _ => None,
        };
    }
    let octets = || Some(FieldValue::Octets(bytes.to_vec()));
    match kind {
        FieldKind::Unsigned => match be_uint(bytes) {
            Some(v) => Some(FieldValue::Unsigned(v)),
            None => octets(),
        },
        FieldKind::Signed => match be_uint(bytes) {
            Some(v) => {
                let shift = 64u32.saturating_sub(8u32.saturating_mul(bytes.len() as u32));
                Some(FieldValue::Signed(((v << shift) as i64) >> shift))
            }
            None => octets(),
        },
        FieldKind::Float => match bytes.len() {
            4 => {
                let raw: [u8; 4] = bytes.try_into().ok()?;
                Some(FieldValue::Float(f64::from(f32::from_be_bytes(raw))))
            }
            8 => {
                let raw: [u8; 8] = bytes.try_into().ok()?;
                Some(FieldValue::Float(f64::from_be_bytes(raw)))
            }
            _ => octets(),
        },
        FieldKind::Ipv4 => match <[u8; 4]>::try_from(bytes) {
            Ok(raw) => Some(FieldValue::Ip(IpAddr::V4(Ipv4Addr::from(raw)))),
            Err(_) => octets(),
        },
        FieldKind::Ipv6 => match <[u8; 16]>::try_from(bytes) {
            Ok(raw) => Some(FieldValue::Ip(IpAddr::V6(Ipv6Addr::from(raw)))),
            Err(_) => octets(),
        },
        FieldKind::Mac => match <[u8; 6]>::try_from(bytes) {
            Ok(raw) => Some(FieldValue::Mac(MacAddr(raw))),
            Err(_) => octets(),
        },
        FieldKind::String => {
            let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            let trimmed = bytes.get(..end).unwrap_or_default();
            Some(FieldValue::String(
                String::from_utf8_lossy(trimmed).into_owned(),
            ))
        }
        FieldKind::Octets => octets(),
        FieldKind::ForwardingStatus => {
            let first = *bytes.first()?;
            Some(FieldValue::ForwardingStatus {
                status: first >> 6,
                reason: first & 0x3f,
            })
        }
        FieldKind::ApplicationId => Some(FieldValue::String(application_id(bytes))),
        FieldKind::MplsLabel => {
            if bytes.len() < 3 || bytes.len() > 4 {
                return octets();
            }
            let b0 = u32::from(bytes[0]);
            let b1 = u32::from(bytes[1]);
            let b2 = bytes[2];
            Some(FieldValue::MplsLabel {
                label: (b0 << 12) | (b1 << 4) | u32::from(b2 >> 4),
                experimental: (b2 >> 1) & 0x07,
                bottom_of_stack: b2 & 0x01,
                ttl: bytes.get(3).copied().unwrap_or(0),
            })
        }
        FieldKind::AsaAclId => {
            if bytes.len() != 12 {
                return octets();
            }
            let parts: Vec<String> = bytes.chunks(4).map(hex).collect();
            Some(FieldValue::String(parts.join("-")))
        }
        FieldKind::TimeSeconds => {
            let secs = be_uint(bytes)?;
            match i64::try_from(secs)
                .ok()
                .and_then(|s| Utc.timestamp_opt(s, 0).single())
            {
                Some(t) => Some(FieldValue::Time(t)),
                None => Some(FieldValue::Unsigned(secs)),
            }
        }
        FieldKind::TimeMillis => {
            let ms = be_uint(bytes)?;
            match i64::try_from(ms)
                .ok()
                .and_then(|m| Utc.timestamp_millis_opt(m).single())
            {
                Some(t) => Some(FieldValue::Time(t)),
                None => Some(FieldValue::Unsigned(ms)),
            }
        }
        FieldKind::TimeMicrosNtp | FieldKind::TimeNanosNtp => {
            let raw = be_uint(bytes)?;
            if bytes.len() != 8 {
                return Some(FieldValue::Unsigned(raw));
            }
            match ntp_to_utc(raw) {
                Some(t) => Some(FieldValue::Time(t)),
                None => Some(FieldValue::Unsigned(raw)),
            }
        }
        FieldKind::Skip => None,
    }
}

/// Converts a 64-bit NTP timestamp (seconds since 1900 + 2^-32 fractions) to UTC.
pub(crate) fn ntp_to_utc(raw: u64) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(raw >> 32).ok()?;
    let frac = raw & 0xffff_ffff;
    let nanos = u32::try_from((frac * 1_000_000_000) >> 32).ok()?;
    Utc.timestamp_opt(secs.checked_sub(NTP_UNIX_OFFSET)?, nanos)
        .single()
}

/// RFC 6759 rendering: `engine..selector`, or `engine..pen..selector` for engine 20 (PANA-L7-PEN).
fn application_id(bytes: &[u8]) -> String {
    let Some((&engine, rest)) = bytes.split_first() else {
        return String::new();
    };
    let render = |part: &[u8]| match be_uint(part) {
        Some(v) => v.to_string(),
        None if part.is_empty() => "0".to_string(),
        None => hex(part),
    };
    if engine == 20 && rest.len() > 4 {
        let (pen, selector) = rest.split_at(4);
        format!("{engine}..{}..{}", render(pen), render(selector))
    } else {
        format!("{engine}..{}", render(rest))
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(V9_FIELDS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(IPFIX_FIELDS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    }

    #[test]
    fn names_resolve() {
        assert_eq!(v9_field(1).0, "in_bytes");
        assert_eq!(ipfix_field(0, 1).0, "octetDeltaCount");
        assert_eq!(ipfix_field(29305, 1).0, "reverseOctetDeltaCount");
        assert_eq!(ipfix_field(5951, 330).0, "netscalerUnknown330");
        assert_eq!(ipfix_field(1, 1).0, "unknown_1_1");
        assert_eq!(v9_field(60000).0, "unknown_v9_60000");
    }

    #[test]
    fn values() {
        assert_eq!(
            decode_value(FieldKind::Unsigned, &[1, 0]),
            Some(FieldValue::Unsigned(256))
        );
        assert_eq!(
            decode_value(FieldKind::Signed, &[0xff, 0xfe]),
            Some(FieldValue::Signed(-2))
        );
        assert_eq!(
            decode_value(
                FieldKind::ApplicationId,
                &[20, 0, 0, 0x30, 0x44, 0, 0, 0x8f, 0x34]
            ),
            Some(FieldValue::String("20..12356..36660".into()))
        );
        assert_eq!(
            decode_value(FieldKind::ApplicationId, &[1, 0, 0, 13]),
            Some(FieldValue::String("1..13".into()))
        );
        assert_eq!(
            decode_value(FieldKind::String, b"abc\0\0"),
            Some(FieldValue::String("abc".into()))
        );
        assert_eq!(decode_value(FieldKind::Unsigned, &[]), None);
        assert_eq!(
            decode_value(FieldKind::String, &[]),
            Some(FieldValue::String(String::new()))
        );
        assert_eq!(
            decode_value(FieldKind::Unsigned, &[0; 9]),
            Some(FieldValue::Octets(vec![0; 9]))
        );
    }
}
