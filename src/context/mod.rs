//! Context for every event before correlation, the way QRadar's rules and magnitude lean on it:
//! where an address is ([`geoip`]), whether it is ours and how much it matters ([`Zones`]),
//! whether it is on a list ([`refdata`]), and what we know of the host ([`Assets`]).
//!
//! [`Enricher::enrich`] runs on the engine thread for every event, after parsing and before the
//! rule engine, so rules see `source.geo.*`, `source.as.*`, `source.zone`, `source.internal`
//! (same for `destination`) and `network.direction`. Reference sets are not copied onto events:
//! rules ask them directly (`|refset`), through the shared [`refdata::ReferenceData`].
//!
//! Bounded: the GeoIP cache, the asset table (and ports and names per asset) have limits, and
//! what they evict is counted.

mod enrich;
pub mod geoip;
pub mod loader;
pub mod refdata;

pub use enrich::Enricher;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use vigil_correlate::net::Cidr;

use crate::config::NetworkZone;
use crate::telemetry::{Counter, Metrics};

/// The network hierarchy: named zones of CIDRs, each with a criticality. An address belongs to
/// the most specific zone holding it (longest prefix).
#[derive(Debug, Clone, Default)]
pub struct Zones {
    /// (network, prefix length, zone index), most specific first.
    nets: Vec<(Cidr, u32, usize)>,
    zones: Vec<NetworkZone>,
}

/// What the hierarchy says of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneInfo<'a> {
    /// Zone name.
    pub name: &'a str,
    /// 0-10.
    pub criticality: u8,
    /// Whether the zone is ours.
    pub internal: bool,
}

impl Zones {
    /// Zones from the configuration (validated: every CIDR parses).
    pub fn new(zones: &[NetworkZone]) -> Zones {
        let mut nets = Vec::new();
        for (i, z) in zones.iter().enumerate() {
            for c in &z.cidrs {
                if let Ok(net) = Cidr::parse(c) {
                    let len = match net {
                        Cidr::V4(_, mask) => mask.count_ones(),
                        Cidr::V6(_, mask) => mask.count_ones(),
                    };
                    nets.push((net, len, i));
                }
            }
        }
        // Most specific first; IPv4 and IPv6 never both contain one address.
        nets.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        Zones {
            nets,
            zones: zones.to_vec(),
        }
    }

    /// The zone of `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<ZoneInfo<'_>> {
        let (_, _, i) = self.nets.iter().find(|(net, _, _)| net.contains(ip))?;
        let z = self.zones.get(*i)?;
        Some(ZoneInfo {
            name: &z.name,
            criticality: z.criticality,
            internal: z.internal,
        })
    }

    /// A detection's asset factor: the most critical among its events' (the last of equals).
    pub fn events_factor(
        &self,
        events: &[std::sync::Arc<vigil_parsers::Event>],
    ) -> Option<AssetFactor> {
        // A detection can hold hundreds of events: the reason is written once, for the winner.
        events
            .iter()
            .filter_map(|e| self.most_critical(e))
            .max_by_key(|(_, _, z)| z.criticality)
            .map(|(side, ip, z)| Self::factor(side, ip, z))
    }

    /// The most critical zone among an event's addresses, with the reason.
    pub fn asset_factor(&self, ev: &vigil_parsers::Event) -> Option<AssetFactor> {
        self.most_critical(ev)
            .map(|(side, ip, z)| Self::factor(side, ip, z))
    }

    /// The side, address and zone of an event's most critical address (the destination of
    /// equals).
    fn most_critical(
        &self,
        ev: &vigil_parsers::Event,
    ) -> Option<(&'static str, IpAddr, ZoneInfo<'_>)> {
        [("source", ev.source_ip), ("destination", ev.destination_ip)]
            .into_iter()
            .filter_map(|(side, ip)| {
                let ip = ip?;
                Some((side, ip, self.lookup(ip)?))
            })
            .max_by_key(|(_, _, z)| z.criticality)
    }

    fn factor(side: &str, ip: IpAddr, z: ZoneInfo<'_>) -> AssetFactor {
        AssetFactor {
            criticality: z.criticality,
            reason: format!(
                "{side} {ip} in zone {} (criticality {})",
                z.name, z.criticality
            ),
        }
    }

    /// The criticality of a zone by name.
    pub fn criticality(&self, zone: &str) -> Option<u8> {
        self.zones
            .iter()
            .find(|z| z.name == zone)
            .map(|z| z.criticality)
    }
}

/// A host learned from events (QRadar's asset profile, the part events can teach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Asset {
    /// Its address.
    pub ip: IpAddr,
    /// Event time it was first seen.
    pub first_seen: DateTime<Utc>,
    /// Event time it was last seen.
    pub last_seen: DateTime<Utc>,
    /// Its zone.
    pub zone: Option<String>,
    /// Criticality 0-10 (from its zone).
    pub criticality: u8,
    /// Host names it reported (syslog HOSTNAME of records it sent), at most [`MAX_NAMES`].
    pub names: BTreeSet<String>,
    /// Ports it was contacted on (successful or neutral outcomes), at most the configured count.
    pub ports: BTreeSet<u16>,
    /// Events that mentioned it.
    pub events: u64,
}

/// Most host names remembered per asset.
pub const MAX_NAMES: usize = 8;

/// Assets learned from events, bounded: beyond `max`, the least recently seen tenth... of a
/// percent is forgotten in one pass (amortized O(1) per insert) and counted.
#[derive(Debug)]
pub struct Assets {
    map: HashMap<IpAddr, Asset>,
    max: usize,
    max_ports: usize,
    /// Assets changed since the last [`Assets::take_dirty`].
    dirty: BTreeSet<IpAddr>,
    /// Assets forgotten since the last [`Assets::take_evicted`] (to delete from the store).
    evicted: Vec<IpAddr>,
    evicted_total: Counter,
    ports_dropped: Counter,
    /// The oldest tenth of the table at its last scan, oldest last, each with the time it was
    /// last seen then: evictions take from here, skipping assets seen since, and scan the table
    /// again only when it runs out (a scan of a full table for every hundredth new address was
    /// a twentieth of the engine thread under a flow storm of new addresses).
    stale: Vec<(DateTime<Utc>, IpAddr)>,
}

impl Assets {
    /// An empty table.
    pub fn new(max: usize, max_ports: usize, metrics: &Metrics) -> Assets {
        Assets {
            map: HashMap::new(),
            max: max.max(1),
            max_ports,
            dirty: BTreeSet::new(),
            evicted: Vec::new(),
            stale: Vec::new(),
            evicted_total: metrics.counter(
                "vigil_assets_evicted_total",
                "Assets forgotten because context.max_assets was reached (least recently seen first).",
                &[],
            ),
            ports_dropped: metrics.counter(
                "vigil_asset_ports_dropped_total",
                "Observed ports not remembered because an asset had context.max_ports_per_asset.",
                &[],
            ),
        }
    }

    /// Restores assets (from the store at start), up to the limit.
    pub fn restore(&mut self, assets: Vec<Asset>) {
        for a in assets.into_iter().take(self.max) {
            self.map.insert(a.ip, a);
        }
    }

    /// Records that `ip` (in `zone`) was seen at `at`, maybe on `port`, maybe naming itself
    /// `name`.
    pub fn touch(
        &mut self,
        ip: IpAddr,
        zone: ZoneInfo<'_>,
        at: DateTime<Utc>,
        port: Option<u16>,
        name: Option<&str>,
    ) {
        if !self.map.contains_key(&ip) {
            if self.map.len() >= self.max {
                self.evict();
            }
            // A new asset last seen before the scan's candidates (a source's clock behind, or
            // late logs) would outlive them: the next eviction scans again.
            if self.stale.first().is_some_and(|(newest, _)| at < *newest) {
                self.stale.clear();
            }
        }
        let a = self.map.entry(ip).or_insert_with(|| Asset {
            ip,
            first_seen: at,
            last_seen: at,
            zone: None,
            criticality: 0,
            names: BTreeSet::new(),
            ports: BTreeSet::new(),
            events: 0,
        });
        a.first_seen = a.first_seen.min(at);
        a.last_seen = a.last_seen.max(at);
        if a.zone.as_deref() != Some(zone.name) {
            a.zone = Some(zone.name.to_owned());
        }
        a.criticality = zone.criticality;
        a.events += 1;
        if let Some(p) = port {
            if !a.ports.contains(&p) {
                if a.ports.len() < self.max_ports {
                    a.ports.insert(p);
                } else {
                    self.ports_dropped.inc();
                }
            }
        }
        if let Some(n) = name.filter(|n| !n.is_empty() && n.len() <= 255) {
            if a.names.len() < MAX_NAMES && !a.names.contains(n) {
                a.names.insert(n.to_owned());
            }
        }
        self.dirty.insert(ip);
    }

    /// Forgets the least recently seen ~1% (at least one).
    fn evict(&mut self) {
        let n = (self.max / 100).max(1);
        let mut gone = 0;
        while gone < n {
            let Some((seen, ip)) = self.stale.pop().or_else(|| self.rescan()) else {
                break;
            };
            // Seen again since the scan: no longer among the oldest.
            if self.map.get(&ip).is_some_and(|a| a.last_seen == seen) {
                self.map.remove(&ip);
                self.dirty.remove(&ip);
                self.evicted.push(ip);
                self.evicted_total.inc();
                gone += 1;
            }
        }
    }

    /// Takes the oldest tenth of the table (by last seen) into `stale` and returns the oldest;
    /// `None` for an empty table.
    fn rescan(&mut self) -> Option<(DateTime<Utc>, IpAddr)> {
        let mut by_age: Vec<(DateTime<Utc>, IpAddr)> =
            self.map.values().map(|a| (a.last_seen, a.ip)).collect();
        let k = (self.max / 10).max(1).min(by_age.len());
        if k == 0 {
            return None;
        }
        by_age.select_nth_unstable(k - 1);
        by_age.truncate(k);
        // Newest first, so that popping gives the oldest.
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        self.stale = by_age;
        self.stale.pop()
    }

    /// Assets changed since the last call (to write to the store).
    pub fn take_dirty(&mut self) -> Vec<Asset> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|ip| self.map.get(&ip).cloned())
            .collect()
    }

    /// Assets forgotten since the last call (to delete from the store).
    pub fn take_evicted(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.evicted)
    }

    /// One asset.
    pub fn get(&self, ip: IpAddr) -> Option<&Asset> {
        self.map.get(&ip)
    }

    /// Assets held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The highest criticality among the zones of an event's addresses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetFactor {
    /// 0-10.
    pub criticality: u8,
    /// `destination 10.1.2.3 in zone core-banking (criticality 9)`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, cidrs: &[&str], criticality: u8, internal: bool) -> NetworkZone {
        NetworkZone {
            name: name.into(),
            cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            criticality,
            internal,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn the_most_specific_zone_wins() {
        let z = Zones::new(&[
            zone("private", &["10.0.0.0/8"], 5, true),
            zone(
                "core-banking",
                &["10.20.0.0/16", "2001:db8:20::/48"],
                9,
                true,
            ),
            zone("partners", &["198.51.100.0/24"], 3, false),
        ]);
        assert_eq!(
            z.lookup(ip("10.20.1.1")).map(|z| z.name),
            Some("core-banking")
        );
        assert_eq!(z.lookup(ip("10.21.1.1")).map(|z| z.name), Some("private"));
        assert_eq!(
            z.lookup(ip("2001:db8:20::5")).map(|z| z.criticality),
            Some(9)
        );
        assert_eq!(
            z.lookup(ip("198.51.100.9")).map(|z| z.internal),
            Some(false)
        );
        assert_eq!(z.lookup(ip("8.8.8.8")), None);
        assert_eq!(z.criticality("core-banking"), Some(9));
    }

    #[test]
    fn assets_are_bounded_and_forget_the_least_recently_seen() {
        let metrics = Metrics::new();
        let mut a = Assets::new(100, 2, &metrics);
        let z = ZoneInfo {
            name: "private",
            criticality: 5,
            internal: true,
        };
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        for i in 0..100u32 {
            let at = t0 + chrono::Duration::seconds(i64::from(i));
            a.touch(IpAddr::V4((0x0a00_0000 + i).into()), z, at, Some(22), None);
        }
        a.touch(
            ip("10.0.0.5"),
            z,
            t0 + chrono::Duration::seconds(500),
            Some(443),
            None,
        );
        a.touch(
            ip("10.0.0.5"),
            z,
            t0 + chrono::Duration::seconds(501),
            Some(8443),
            None,
        );
        assert_eq!(a.len(), 100);
        a.touch(
            ip("10.9.9.9"),
            z,
            t0 + chrono::Duration::seconds(600),
            None,
            Some("db1"),
        );
        assert_eq!(a.len(), 100, "one evicted to make room");
        assert_eq!(a.take_evicted(), vec![ip("10.0.0.0")], "the oldest went");
        // The next evictions take the next oldest from the same scan, except one seen since.
        a.touch(
            ip("10.0.0.1"),
            z,
            t0 + chrono::Duration::seconds(700),
            None,
            None,
        );
        for (i, new) in ["10.8.0.1", "10.8.0.2"].into_iter().enumerate() {
            let at = t0 + chrono::Duration::seconds(701 + i as i64);
            a.touch(ip(new), z, at, None, None);
        }
        assert_eq!(
            a.take_evicted(),
            vec![ip("10.0.0.2"), ip("10.0.0.3")],
            "the oldest not seen since went"
        );
        assert!(a.get(ip("10.0.0.1")).is_some());
        // A new address last seen before the remaining candidates (late logs) goes before
        // them: making room for it takes the next candidate, making room for the next
        // address takes it.
        a.touch(ip("10.7.0.1"), z, t0, None, None);
        a.touch(
            ip("10.8.0.3"),
            z,
            t0 + chrono::Duration::seconds(703),
            None,
            None,
        );
        assert_eq!(
            a.take_evicted(),
            vec![ip("10.0.0.4"), ip("10.7.0.1")],
            "late logs of an old address"
        );
        let five = a.get(ip("10.0.0.5")).cloned();
        assert_eq!(
            five.map(|f| f.ports.into_iter().collect::<Vec<_>>()),
            Some(vec![22, 443]),
            "ports are capped at max_ports_per_asset"
        );
        assert!(metrics
            .render()
            .contains("vigil_asset_ports_dropped_total 1"));
        assert!(metrics.render().contains("vigil_assets_evicted_total 5"));
        assert_eq!(a.take_dirty().len(), 100);
        assert!(a.take_dirty().is_empty());
    }
}
