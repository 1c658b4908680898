//! Minimal, bounds-checked decoding of a sampled packet header (sFlow raw header record):
//! Ethernet II with 802.1Q / 802.1ad tags, IPv4, IPv6 (skipping extension headers), TCP
//! (ports, flags), UDP, ICMP and ICMPv6. Truncated headers yield what could be read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::fields::MacAddr;

/// What could be read from a sampled packet header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PacketSummary {
    /// Ethernet source.
    pub src_mac: Option<MacAddr>,
    /// Ethernet destination.
    pub dst_mac: Option<MacAddr>,
    /// EtherType after VLAN tags.
    pub ether_type: Option<u16>,
    /// Outermost 802.1Q VLAN id.
    pub vlan: Option<u16>,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    /// Source address.
    pub src_addr: Option<IpAddr>,
    /// Destination address.
    pub dst_addr: Option<IpAddr>,
    /// IP protocol / IPv6 next header (after extension headers).
    pub ip_protocol: Option<u8>,
    /// TOS / traffic class.
    pub ip_tos: Option<u8>,
    /// TTL / hop limit.
    pub ip_ttl: Option<u8>,
    /// IP total length (IPv4) or payload length + 40 (IPv6).
    pub ip_length: Option<u16>,
    /// Source port (TCP/UDP/SCTP).
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// TCP flags (low 8 bits).
    pub tcp_flags: Option<u8>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at.checked_add(2)?)? {
        &[x, y] => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

fn mac(b: &[u8], at: usize) -> Option<MacAddr> {
    let raw: [u8; 6] = b.get(at..at + 6)?.try_into().ok()?;
    Some(MacAddr(raw))
}

/// sFlow header protocol numbers.
pub(crate) const HEADER_ETHERNET: u32 = 1;
pub(crate) const HEADER_IPV4: u32 = 11;
pub(crate) const HEADER_IPV6: u32 = 12;

/// Decodes a sampled header of the given sFlow header protocol.
pub(crate) fn parse(header_protocol: u32, data: &[u8]) -> PacketSummary {
    let mut s = PacketSummary::default();
    match header_protocol {
        HEADER_ETHERNET => parse_ethernet(data, &mut s),
        HEADER_IPV4 => parse_ipv4(data, &mut s),
        HEADER_IPV6 => parse_ipv6(data, &mut s),
        _ => {}
    }
    s
}

fn parse_ethernet(data: &[u8], s: &mut PacketSummary) {
    s.dst_mac = mac(data, 0);
    s.src_mac = mac(data, 6);
    let mut at = 12usize;
    let mut ether_type = match be16(data, at) {
        Some(t) => t,
        None => return,
    };
    // Up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, old QinQ 0x9100).
    for _ in 0..2 {
        if !matches!(ether_type, 0x8100 | 0x88a8 | 0x9100) {
            break;
        }
        let Some(tci) = be16(data, at + 2) else {
            s.ether_type = Some(ether_type);
            return;
        };
        if s.vlan.is_none() {
            s.vlan = Some(tci & 0x0fff);
        }
        at += 4;
        ether_type = match be16(data, at) {
            Some(t) => t,
            None => return,
        };
    }
    s.ether_type = Some(ether_type);
    let payload = data.get(at + 2..).unwrap_or_default();
    match ether_type {
        0x0800 => parse_ipv4(payload, s),
        0x86dd => parse_ipv6(payload, s),
        _ => {}
    }
}

fn parse_ipv4(data: &[u8], s: &mut PacketSummary) {
    let Some(&vihl) = data.first() else { return };
    if vihl >> 4 != 4 {
        return;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 || data.len() < 20 {
        return;
    }
    s.ip_version = Some(4);
    s.ip_tos = data.get(1).copied();
    s.ip_length = be16(data, 2);
    s.ip_ttl = data.get(8).copied();
    s.ip_protocol = data.get(9).copied();
    if let (Some(src), Some(dst)) = (data.get(12..16), data.get(16..20)) {
        let src: Option<[u8; 4]> = src.try_into().ok();
        let dst: Option<[u8; 4]> = dst.try_into().ok();
        s.src_addr = src.map(|a| IpAddr::V4(Ipv4Addr::from(a)));
        s.dst_addr = dst.map(|a| IpAddr::V4(Ipv4Addr::from(a)));
    }
    // Only the first fragment carries the transport header.
    let fragment_offset = be16(data, 6).map_or(0, |v| v & 0x1fff);
    if fragment_offset == 0 {
        if let (Some(proto), Some(l4)) = (s.ip_protocol, data.get(ihl..)) {
            parse_transport(proto, l4, s);
        }
    }
}

fn parse_ipv6(data: &[u8], s: &mut PacketSummary) {
    let Some(&v) = data.first() else { return };
    if v >> 4 != 6 || data.len() < 40 {
        return;
    }
    s.ip_version = Some(6);
    let tc = (be16(data, 0).unwrap_or(0) >> 4) & 0xff;
    s.ip_tos = Some(tc as u8);
    s.ip_length = be16(data, 4).map(|l| l.saturating_add(40));
    s.ip_ttl = data.get(7).copied();
    if let (Some(src), Some(dst)) = (data.get(8..24), data.get(24..40)) {
        let src: Option<[u8; 16]> = src.try_into().ok();
        let dst: Option<[u8; 16]> = dst.try_into().ok();
        s.src_addr = src.map(|a| IpAddr::V6(Ipv6Addr::from(a)));
        s.dst_addr = dst.map(|a| IpAddr::V6(Ipv6Addr::from(a)));
    }
    let mut next = data.get(6).copied();
    let mut at = 40usize;
    // Skip a bounded number of extension headers.
    for _ in 0..8 {
        match next {
            Some(0 | 43 | 60) => {
                let (Some(nh), Some(len)) = (data.get(at).copied(), data.get(at + 1).copied())
                else {
                    next = None;
                    break;
                };
                next = Some(nh);
                at += (usize::from(len) + 1) * 8;
            }
            Some(44) => {
                // Fragment header: transport only in the first fragment.
                let nh = data.get(at).copied();
                let offset = be16(data, at + 2).map_or(0, |v| v >> 3);
                s.ip_protocol = nh;
                if offset != 0 {
                    return;
                }
                next = nh;
                at += 8;
            }
            Some(51) => {
                let (Some(nh), Some(len)) = (data.get(at).copied(), data.get(at + 1).copied())
                else {
                    next = None;
                    break;
                };
                next = Some(nh);
                at += (usize::from(len) + 2) * 4;
            }
            _ => break,
        }
    }
    s.ip_protocol = next;
    if let (Some(proto), Some(l4)) = (next, data.get(at..)) {
        parse_transport(proto, l4, s);
    }
}

fn parse_transport(proto: u8, l4: &[u8], s: &mut PacketSummary) {
    match proto {
        6 | 17 | 132 | 136 => {
            s.src_port = be16(l4, 0);
            s.dst_port = be16(l4, 2);
            if proto == 6 {
                s.tcp_flags = l4.get(13).copied();
            }
        }
        1 | 58 => {
            s.icmp_type = l4.first().copied();
            s.icmp_code = l4.get(1).copied();
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vlan_icmp_frame() {
        // From the goflow2 basic flow sample: 802.1Q VLAN 32, ICMP echo.
        let frame = [
            0x00, 0xff, 0x12, 0x34, 0x35, 0x1b, 0xff, 0xab, 0xcd, 0xef, 0xab, 0x64, 0x81, 0x00,
            0x00, 0x20, 0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x5c, 0x07, 0x00, 0x00, 0x7c, 0x01,
            0x48, 0xa0, 0xac, 0x10, 0x20, 0xfe, 0xac, 0x10, 0x20, 0xf1, 0x08, 0x00, 0x97, 0x61,
        ];
        let s = parse(HEADER_ETHERNET, &frame);
        assert_eq!(s.vlan, Some(32));
        assert_eq!(s.src_addr, Some("172.16.32.254".parse().unwrap()));
        assert_eq!(s.dst_addr, Some("172.16.32.241".parse().unwrap()));
        assert_eq!(s.ip_protocol, Some(1));
        assert_eq!((s.icmp_type, s.icmp_code), (Some(8), Some(0)));
        for n in 0..frame.len() {
            let _ = parse(HEADER_ETHERNET, &frame[..n]);
        }
    }
}
