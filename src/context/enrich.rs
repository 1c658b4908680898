//! [`Enricher`]: adds GeoIP, zone, internal and direction fields to events and learns assets.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use vigil_parsers::event::Event;

use super::{geoip, refdata, AssetFactor, Assets, Zones};
use crate::config::ContextConfig;
use crate::telemetry::{Counter, Metrics};

/// Adds context to events; owned by the engine thread.
pub struct Enricher {
    geo: Option<geoip::GeoIp>,
    zones: Zones,
    assets: Assets,
    reference: Arc<refdata::ReferenceData>,
    geo_metrics: GeoMetrics,
}

/// GeoIP counters mirrored into metrics on each tick.
struct GeoMetrics {
    lookups: Counter,
    cache_hits: Counter,
    cache_evictions: Counter,
    errors: Counter,
    reloads: Counter,
    reloads_rejected: Counter,
}

impl Enricher {
    /// An enricher over opened parts.
    pub fn new(
        geo: Option<geoip::GeoIp>,
        config: &ContextConfig,
        reference: Arc<refdata::ReferenceData>,
        metrics: &Metrics,
    ) -> Enricher {
        let c = |name: &'static str, help: &'static str, labels: &[(&'static str, &str)]| {
            metrics.counter(name, help, labels)
        };
        Enricher {
            geo,
            zones: Zones::new(&config.networks),
            assets: Assets::new(config.max_assets, config.max_ports_per_asset, metrics),
            reference,
            geo_metrics: GeoMetrics {
                lookups: c("vigil_geoip_lookups_total", "GeoIP lookups.", &[]),
                cache_hits: c(
                    "vigil_geoip_cache_hits_total",
                    "GeoIP lookups answered by the cache.",
                    &[],
                ),
                cache_evictions: c(
                    "vigil_geoip_cache_evictions_total",
                    "GeoIP cache entries evicted (context.geoip_cache_entries reached).",
                    &[],
                ),
                errors: c(
                    "vigil_geoip_errors_total",
                    "GeoIP records that failed to decode (corrupt database).",
                    &[],
                ),
                reloads: c(
                    "vigil_geoip_reloads_total",
                    "GeoIP database reloads.",
                    &[("outcome", "ok")],
                ),
                reloads_rejected: c(
                    "vigil_geoip_reloads_total",
                    "GeoIP database reloads.",
                    &[("outcome", "rejected")],
                ),
            },
        }
    }

    /// The network hierarchy.
    pub fn zones(&self) -> &Zones {
        &self.zones
    }

    /// The asset table.
    pub fn assets_mut(&mut self) -> &mut Assets {
        &mut self.assets
    }

    /// The live reference data.
    pub fn reference(&self) -> &Arc<refdata::ReferenceData> {
        &self.reference
    }

    /// Adds geo, AS, zone, internal and direction fields; learns assets.
    pub fn enrich(&mut self, ev: &mut Event) {
        let src = ev.source_ip.map(|ip| self.side(ip, ev, Side::Source));
        let dst = ev
            .destination_ip
            .map(|ip| self.side(ip, ev, Side::Destination));
        if ev.network_direction.is_none() {
            ev.network_direction = match (src, dst) {
                (Some(true), Some(true)) => Some("internal".into()),
                (Some(true), Some(false)) => Some("outbound".into()),
                (Some(false), Some(true)) => Some("inbound".into()),
                (Some(false), Some(false)) => Some("external".into()),
                _ => None,
            };
        }
        // The sender of a syslog record names itself in HOSTNAME.
        if let (Some(peer), Some(name)) = (ev.observer_ip, ev.host_name.as_deref()) {
            if let Some(z) = self.zones.lookup(peer).filter(|z| z.internal) {
                self.assets.touch(peer, z, ev.timestamp, None, Some(name));
            }
        }
    }

    /// Enriches one side; returns whether the address is internal.
    fn side(&mut self, ip: IpAddr, ev: &mut Event, side: Side) -> bool {
        if let Some(geo) = self.geo.as_mut() {
            let info = geo.lookup(ip);
            match side {
                Side::Source => ev.source_as_number = info.as_number,
                Side::Destination => ev.destination_as_number = info.as_number,
            }
            let texts = [
                &info.country_iso_code,
                &info.country_name,
                &info.city_name,
                &info.continent_code,
                &info.as_organization,
            ];
            // The GeoIP texts are among the event's rarely set fields: boxed only for a value
            // (or to clear one a parser set).
            if texts.iter().any(|t| t.is_some()) || ev.rare_boxed() {
                let r = ev.rare_mut();
                let slots = match side {
                    Side::Source => [
                        &mut r.source_geo_country_iso_code,
                        &mut r.source_geo_country_name,
                        &mut r.source_geo_city_name,
                        &mut r.source_geo_continent_code,
                        &mut r.source_as_organization_name,
                    ],
                    Side::Destination => [
                        &mut r.destination_geo_country_iso_code,
                        &mut r.destination_geo_country_name,
                        &mut r.destination_geo_city_name,
                        &mut r.destination_geo_continent_code,
                        &mut r.destination_as_organization_name,
                    ],
                };
                for (slot, text) in slots.into_iter().zip(texts) {
                    slot.clone_from(text);
                }
            }
        }
        let zone = self.zones.lookup(ip);
        let internal = zone.is_some_and(|z| z.internal);
        let (zone_slot, internal_slot) = match side {
            Side::Source => (&mut ev.source_zone, &mut ev.source_internal),
            Side::Destination => (&mut ev.destination_zone, &mut ev.destination_internal),
        };
        *zone_slot = zone.map(|z| z.name.into());
        *internal_slot = Some(internal);
        if let Some(z) = zone.filter(|z| z.internal) {
            // A destination is contacted on its port unless the event says it was refused.
            let refused = ev.outcome.as_deref() == Some("failure")
                || ev.event_type.as_deref() == Some("denied");
            let port = match side {
                Side::Destination if !refused => ev.destination_port,
                _ => None,
            };
            self.assets.touch(ip, z, ev.timestamp, port, None);
        }
        internal
    }

    /// A detection's asset factor ([`Zones::events_factor`]).
    pub fn events_factor(&self, events: &[std::sync::Arc<Event>]) -> Option<AssetFactor> {
        self.zones.events_factor(events)
    }

    /// Periodic work: GeoIP reload check, reference-data expiry, metrics. Returns a GeoIP
    /// reload error to log, if one happened.
    pub fn tick(&mut self, now: DateTime<Utc>, check_geo: bool) -> Option<String> {
        self.reference.expire(now);
        let mut err = None;
        if let Some(geo) = self.geo.as_mut() {
            if check_geo {
                match geo.reload_if_changed() {
                    Ok(true) => self.geo_metrics.reloads.inc(),
                    Ok(false) => {}
                    Err(e) => {
                        self.geo_metrics.reloads_rejected.inc();
                        err = Some(e.to_string());
                    }
                }
            }
            let s = geo.stats();
            self.geo_metrics.lookups.mirror(s.lookups);
            self.geo_metrics.cache_hits.mirror(s.cache_hits);
            self.geo_metrics.cache_evictions.mirror(s.cache_evictions);
            self.geo_metrics.errors.mirror(s.errors);
        }
        err
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Destination,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigil_parsers::event::{CORE_FIELDS, LATE_FIELDS};

    /// The rules' literal prescan runs on the normalize thread, before enrichment, and trusts
    /// every field outside `LATE_FIELDS` to be final: enrichment (GeoIP city and AS, zones,
    /// direction) writes nothing else, and does write each of its fields for some event.
    #[test]
    fn enrichment_writes_only_the_late_fields() {
        let fixture = |f: &str| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/maxmind")
                .join(f)
        };
        let geo = geoip::GeoIp::open(&geoip::GeoConfig {
            city: Some(fixture("GeoIP2-City-Test.mmdb")),
            asn: Some(fixture("GeoLite2-ASN-Test.mmdb")),
            cache_entries: 16,
        })
        .unwrap();
        let config = ContextConfig {
            networks: vec![crate::config::NetworkZone {
                name: "core-banking".into(),
                cidrs: vec!["10.20.0.0/16".into()],
                criticality: 9,
                internal: true,
            }],
            ..ContextConfig::default()
        };
        let metrics = Metrics::new();
        let reference = Arc::new(refdata::ReferenceData::new(&[], &[]));
        let mut enricher = Enricher::new(Some(geo), &config, reference, &metrics);
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let mut written = std::collections::BTreeSet::new();
        let addresses = [
            "81.2.69.160",
            "10.20.1.5",
            "1.128.0.1",
            "2001:218::1",
            "8.8.8.8",
        ];
        for src in addresses {
            for dst in addresses {
                let mut e = Event::new(t, t);
                e.source_ip = Some(src.parse().unwrap());
                e.destination_ip = Some(dst.parse().unwrap());
                e.destination_port = Some(443);
                e.host_name = Some("gw01".into());
                e.observer_ip = Some("10.20.0.1".parse().unwrap());
                e.message = Some("Accepted publickey for root".into());
                e.extra.insert("user.name".into(), "root".into());
                let before = e.clone();
                enricher.enrich(&mut e);
                for f in CORE_FIELDS {
                    if e.get(f) != before.get(f) {
                        written.insert(*f);
                    }
                }
                assert_eq!(e.extra, before.extra);
            }
        }
        let late: std::collections::BTreeSet<&str> = LATE_FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "event.sequence")
            .collect();
        assert_eq!(written, late);
    }
}
