//! IP networks for rules and reference data: [`Cidr`] (one network) and, for sets of many
//! networks, [`PrefixSet`].

use std::net::IpAddr;

/// An IP network for `cidr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    /// An IPv4 network: address bits and mask.
    V4(u32, u32),
    /// An IPv6 network: address bits and mask.
    V6(u128, u128),
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a plain address (a host network).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let (addr, len) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{t:?} is not a cidr network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u32 = match len {
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{t:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Cidr::V4(u32::from(v4) & mask, mask)
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Cidr::V6(u128::from(v6) & mask, mask)
            }
        })
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self, ip) {
            (Cidr::V4(net, mask), IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6(net, mask), IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

/// Membership of an address in many networks (a reference set of 600 k CIDRs): the networks are
/// merged into disjoint, sorted address ranges, one table per family, and a lookup is one binary
/// search. IPv4-mapped IPv6 addresses look up as IPv4.
///
/// With many IPv4 ranges (at least [`V4_INDEX_MIN`]), a first-level table indexed by the top 16
/// bits of the address (65,537 `u32`, 256 KiB) narrows the binary search to the ranges starting
/// in the address's /16: a lookup then touches the table and a few ranges instead of ~18 levels
/// of a large array (fewer dependent cache misses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// Empty, or `v4_index[b]` = the first range of `v4` starting at or after `b << 16`
    /// (`b` in `0..=65536`).
    v4_index: Vec<u32>,
}

/// Number of IPv4 ranges from which [`PrefixSet`] builds its /16 first-level table.
pub const V4_INDEX_MIN: usize = 4096;

impl PrefixSet {
    /// A set of the given networks (overlaps and adjacent networks merge).
    pub fn new(nets: impl IntoIterator<Item = Cidr>) -> PrefixSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in nets {
            match n {
                Cidr::V4(net, mask) => v4.push((net, net | !mask)),
                Cidr::V6(net, mask) => v6.push((net, net | !mask)),
            }
        }
        let v4 = merge(v4);
        let v4_index = if v4.len() >= V4_INDEX_MIN && u32::try_from(v4.len()).is_ok() {
            let mut index = Vec::with_capacity(65_537);
            let mut i = 0usize;
            for b in 0..=65_536u32 {
                while i < v4.len() && (v4[i].0 >> 16) < b {
                    i += 1;
                }
                index.push(i as u32);
            }
            index
        } else {
            Vec::new()
        };
        PrefixSet {
            v4,
            v6: merge(v6),
            v4_index,
        }
    }

    /// Whether `ip` is inside one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => self.contains_v4(u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }

    fn contains_v4(&self, x: u32) -> bool {
        let b = (x >> 16) as usize;
        match (self.v4_index.get(b), self.v4_index.get(b + 1)) {
            (Some(&lo), Some(&hi)) => {
                let (lo, hi) = (lo as usize, hi as usize);
                // The last range starting at or before x: in x's /16, or the one before it.
                let j = lo + self.v4[lo..hi].partition_point(|&(start, _)| start <= x);
                j > 0 && self.v4[j - 1].1 >= x
            }
            _ => within(&self.v4, x),
        }
    }

    /// Number of disjoint ranges held (after merging).
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Sorts inclusive ranges and merges overlapping or adjacent ones.
fn merge<T: Ord + Copy + num_step::Step>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1.next_or_max() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` falls in one of the sorted disjoint inclusive ranges.
fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x.
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_step {
    /// The next value, saturating at the maximum (for merging adjacent ranges).
    pub trait Step {
        fn next_or_max(self) -> Self;
    }
    impl Step for u32 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Step for u128 {
        fn next_or_max(self) -> Self {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> PrefixSet {
        PrefixSet::new(nets.iter().filter_map(|n| Cidr::parse(n).ok()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn membership_is_exact_at_network_edges() {
        let s = set(&[
            "10.0.0.0/8",
            "192.0.2.0/24",
            "2001:db8::/32",
            "198.51.100.7",
        ]);
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.255",
            "2001:db8::1",
            "198.51.100.7",
        ] {
            assert!(s.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.3.0",
            "2001:db9::",
            "198.51.100.8",
        ] {
            assert!(!s.contains(ip(no)), "{no}");
        }
        assert!(
            s.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped looks up as IPv4"
        );
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let s = set(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "0.0.0.0/0",
            "::/0",
        ]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("255.255.255.255")));
        let t = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25"]);
        assert_eq!(t.ranges(), 1);
        assert!(!t.contains(ip("10.0.2.0")));
        assert!(set(&[]).is_empty());
    }

    #[test]
    fn the_first_level_table_agrees_with_the_plain_binary_search() {
        // Enough ranges for the /16 table, including ranges that straddle /16 boundaries and
        // crowd one /16.
        let mut nets: Vec<Cidr> = (0u32..20_000)
            .map(|i| {
                let len = 14 + (i * 7) % 19;
                let addr = i.wrapping_mul(2_654_435_761);
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Cidr::V4(addr & mask, mask)
            })
            .collect();
        nets.extend((0u32..2_000).map(|i| Cidr::V4(0x0a0a_0000 | (i * 8), u32::MAX << 2)));
        let s = PrefixSet::new(nets);
        assert!(s.v4.len() >= V4_INDEX_MIN && s.v4_index.len() == 65_537);
        let check = |x: u32| {
            let a = IpAddr::V4(x.into());
            assert_eq!(s.contains(a), within(&s.v4, x), "{a}");
        };
        for &(lo, hi) in &s.v4 {
            for x in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                check(x);
            }
        }
        for k in 0u32..200_000 {
            check(k.wrapping_mul(40_503).wrapping_mul(65_537));
        }
        check(0);
        check(u32::MAX);
    }

    #[test]
    fn agrees_with_a_linear_scan_of_the_networks() {
        let nets: Vec<Cidr> = (0u32..500)
            .map(|i| {
                let len = 8 + (i * 7) % 25;
                let addr = i.wrapping_mul(2_654_435_761);
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Cidr::V4(addr & mask, mask)
            })
            .collect();
        let s = PrefixSet::new(nets.clone());
        for k in 0u32..20_000 {
            let a = IpAddr::V4(k.wrapping_mul(40_503).wrapping_mul(65_537).into());
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(a)), "{a}");
        }
    }
}
