//! Community ID flow hashing, version 1 (<https://github.com/corelight/community-id-spec>).
//!
//! `1:` + base64(SHA1(seed u16 BE | src addr | dst addr | proto | 0 | src port BE | dst port BE)),
//! with the endpoints ordered so that the smaller (address, port) comes first. For ICMP and
//! ICMPv6 the "ports" are the type and code; request/reply types are mapped to their
//! counterpart (two-way), other types keep their order (one-way).

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

const ICMP: u8 = 1;
const ICMP6: u8 = 58;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// The counterpart of an ICMPv4 type in a two-way exchange.
fn icmp4_counterpart(t: u16) -> Option<u16> {
    Some(match t {
        8 => 0,   // echo -> echo reply
        0 => 8,   // echo reply -> echo
        13 => 14, // timestamp
        14 => 13,
        15 => 16, // information request
        16 => 15,
        10 => 9, // router solicitation -> advertisement
        9 => 10,
        17 => 18, // address mask
        18 => 17,
        _ => return None,
    })
}

/// The counterpart of an ICMPv6 type in a two-way exchange.
fn icmp6_counterpart(t: u16) -> Option<u16> {
    Some(match t {
        128 => 129, // echo request/reply
        129 => 128,
        133 => 134, // router solicitation/advertisement
        134 => 133,
        135 => 136, // neighbor solicitation/advertisement
        136 => 135,
        130 => 131, // multicast listener query/report
        131 => 130,
        139 => 140, // node information query/response
        140 => 139,
        144 => 145, // home agent address discovery request/reply
        145 => 144,
        _ => return None,
    })
}

/// Computes a Community ID v1 string.
///
/// `ports` are (source, destination) ports for TCP/UDP/SCTP and (type, code) for ICMP/ICMPv6;
/// pass `None` for protocols without ports or when they are unknown. Returns `None` when the
/// two addresses are of different families.
pub fn community_id_v1(
    seed: u16,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ports: Option<(u16, u16)>,
) -> Option<String> {
    let (src_bytes, dst_bytes): (Vec<u8>, Vec<u8>) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => return None,
    };
    let mut one_way = false;
    let ports = match (proto, ports) {
        (ICMP | ICMP6, Some((icmp_type, code))) => {
            let counterpart = if proto == ICMP {
                icmp4_counterpart(icmp_type)
            } else {
                icmp6_counterpart(icmp_type)
            };
            match counterpart {
                Some(other) => Some((icmp_type, other)),
                None => {
                    one_way = true;
                    Some((icmp_type, code))
                }
            }
        }
        (TCP | UDP | SCTP, p) => p,
        _ => None,
    };

    let (sport, dport) = ports.unwrap_or((0, 0));
    let keep = one_way || src_bytes < dst_bytes || (src_bytes == dst_bytes && sport < dport);
    let (a, b, pa, pb) = if keep {
        (&src_bytes, &dst_bytes, sport, dport)
    } else {
        (&dst_bytes, &src_bytes, dport, sport)
    };

    let mut hasher = Sha1::new();
    hasher.update(seed.to_be_bytes());
    hasher.update(a);
    hasher.update(b);
    hasher.update([proto, 0]);
    if ports.is_some() {
        hasher.update(pa.to_be_bytes());
        hasher.update(pb.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(30);
    out.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(digest, &mut out);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(src: &str, dst: &str, proto: u8, ports: Option<(u16, u16)>) -> String {
        community_id_v1(0, src.parse().unwrap(), dst.parse().unwrap(), proto, ports).unwrap()
    }

    #[test]
    fn spec_vectors_from_the_brief() {
        assert_eq!(
            id("128.232.110.120", "66.35.250.204", TCP, Some((34855, 80))),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        // Same flow seen in the reverse direction hashes identically.
        assert_eq!(
            id("66.35.250.204", "128.232.110.120", TCP, Some((80, 34855))),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        assert_eq!(
            id("192.168.1.52", "8.8.8.8", UDP, Some((54585, 53))),
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ="
        );
        assert_eq!(
            id("192.168.0.89", "192.168.0.1", ICMP, Some((8, 0))),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
        // The echo reply belongs to the same conversation.
        assert_eq!(
            id("192.168.0.1", "192.168.0.89", ICMP, Some((0, 0))),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
    }

    /// Baseline vectors of the spec (also used verbatim by Zeek's, Vector's and other
    /// implementations' test suites), seeds 0 and 1.
    #[test]
    fn spec_baseline_vectors() {
        let v6a = "fe80:1:203:405:607:809:a0b:c0d";
        let v6b = "fe80:1011:1213:1415:1617:1819:1a1b:1c1d";
        type Case<'a> = (u16, &'a str, &'a str, u8, Option<(u16, u16)>, &'a str);
        let cases: [Case; 9] = [
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                TCP,
                Some((1122, 3344)),
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                UDP,
                Some((1122, 3344)),
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                ICMP,
                Some((8, 0)),
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
            ),
            (
                0,
                "5.6.7.8",
                "1.2.3.4",
                ICMP,
                Some((0, 0)),
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
            ),
            (
                0,
                v6a,
                v6b,
                ICMP6,
                Some((128, 0)),
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                46,
                None,
                "1:ikv3kmf89luf73WPz1jOs49S768=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                TCP,
                Some((1122, 3344)),
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                UDP,
                Some((1122, 3344)),
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                ICMP,
                Some((8, 0)),
                "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=",
            ),
        ];
        for (seed, src, dst, proto, ports, want) in cases {
            let got = community_id_v1(
                seed,
                src.parse().unwrap(),
                dst.parse().unwrap(),
                proto,
                ports,
            );
            assert_eq!(
                got.as_deref(),
                Some(want),
                "{src} -> {dst} proto {proto} seed {seed}"
            );
        }
        assert_eq!(
            community_id_v1(
                1,
                v6a.parse().unwrap(),
                v6b.parse().unwrap(),
                ICMP6,
                Some((128, 0))
            )
            .as_deref(),
            Some("1:IO27GQzPuCtNnwFvjWALMHu5tJE=")
        );
    }

    #[test]
    fn mixed_families_have_no_id() {
        assert!(community_id_v1(
            0,
            "1.2.3.4".parse().unwrap(),
            "::1".parse().unwrap(),
            TCP,
            Some((1, 2))
        )
        .is_none());
    }
}
