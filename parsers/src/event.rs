//! The normalized event: one schema for every source.
//!
//! Typed core fields carry ECS-style dotted names on the wire (`source.ip`, `event.outcome`, ...),
//! everything a parser finds that has no core field goes to `extra`, and the raw bytes are kept.
//! Rules, the store and the API address fields by their wire names through [`Event::get`] and
//! [`Event::set`], so a field added here is usable everywhere at once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Text of an `extra` name or value: kept inline up to 24 bytes (most names and values), so
/// an event's extra fields cost no allocation each.
pub type Text = compact_str::CompactString;

/// An event's fields without a core slot: names to values, sorted by name, in one vector.
/// An event has a handful to a few dozen of them: one allocation, searched by bisection, is
/// cheaper to build, read, copy and free than a B-tree's nodes. A map on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Extra(Vec<(Text, Text)>);

impl Extra {
    /// No fields.
    pub const fn new() -> Extra {
        Extra(Vec::new())
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<str>) -> Option<&Text> {
        let i = self.find(key.as_ref()).ok()?;
        self.0.get(i).map(|(_, v)| v)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: impl AsRef<str>) -> bool {
        self.find(key.as_ref()).is_ok()
    }

    /// Sets `key`, returning the value it replaced.
    pub fn insert(&mut self, key: Text, value: Text) -> Option<Text> {
        match self.find(&key) {
            Ok(i) => self.0.get_mut(i).map(|(_, v)| std::mem::replace(v, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: impl AsRef<str>) -> Option<Text> {
        let i = self.find(key.as_ref()).ok()?;
        Some(self.0.remove(i).1)
    }

    /// The fields, by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Text, &Text)> + DoubleEndedIterator {
        self.into_iter()
    }

    /// Appends `key` when it sorts after every name already set (what decoding stored fields
    /// gives, at no search); otherwise inserts it.
    pub fn push_sorted(&mut self, key: Text, value: Text) {
        if self.0.last().is_none_or(|(last, _)| *last < key) {
            self.0.push((key, value));
        } else {
            self.insert(key, value);
        }
    }
}

impl<'a> IntoIterator for &'a Extra {
    type Item = (&'a Text, &'a Text);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Text, Text)>,
        fn(&'a (Text, Text)) -> (&'a Text, &'a Text),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(Text, Text)> for Extra {
    /// As a map: a name given twice keeps its last value.
    fn from_iter<I: IntoIterator<Item = (Text, Text)>>(iter: I) -> Extra {
        let mut v: Vec<(Text, Text)> = iter.into_iter().collect();
        // Stable: among equal names the last given stays last, and is the one kept.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Text, Text)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => out.push((k, val)),
            }
        }
        Extra(out)
    }
}

impl Extend<(Text, Text)> for Extra {
    fn extend<I: IntoIterator<Item = (Text, Text)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Extra, D::Error> {
        let map = BTreeMap::<Text, Text>::deserialize(d)?;
        Ok(Extra(map.into_iter().collect()))
    }
}

/// One normalized event. The fields most events leave unset (GeoIP, and those of HTTP and
/// API gateway logs) live out of line in [`Rare`] ([`Event::rare`], [`Event::rare_mut`]): an event
/// crosses three threads and is copied, encoded and dropped whole, and those twenty fields were
/// 480 of its 1,160 bytes. On the wire (JSON) all fields are flat, as `EventWire` lays them out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "EventWire", into = "EventWire")]
pub struct Event {
    /// Event time: when the source says it happened (`@timestamp`).
    pub timestamp: DateTime<Utc>,
    /// When Vigil received the record (`event.ingested`).
    pub ingested: DateTime<Utc>,
    /// `event.kind`: `event`, `alert`, ...
    pub kind: Option<Text>,
    /// `event.category`: `authentication`, `network`, `web`, ...
    pub category: Option<Text>,
    /// `event.type`: `start`, `end`, `denied`, `info`, ...
    pub event_type: Option<Text>,
    /// `event.outcome`: `success`, `failure`, `unknown`.
    pub outcome: Option<Text>,
    /// `event.action`: what happened, in the parser definition's words (`ssh_login`, ...).
    pub action: Option<Text>,
    /// `event.severity`: the source's severity (syslog severity 0-7 for syslog).
    pub severity: Option<u8>,
    /// `event.sequence`: the pipeline's number for this event, unique within a running Vigil
    /// and increasing; offenses use it to count an event once however many rules report it.
    pub sequence: Option<u64>,
    /// `event.dataset`: which parser definition produced the event (`openssh`, ...).
    pub dataset: Option<Text>,
    /// `observer.id`: the log source identity (`syslog/udp/10.0.0.5`, `file:/var/log/auth.log`).
    pub observer_id: Option<Text>,
    /// `observer.type`: the collector kind (`syslog`, `file`, `netflow`, ...).
    pub observer_type: Option<Text>,
    /// `observer.ip`: the network peer that sent the record.
    pub observer_ip: Option<IpAddr>,
    /// `host.name`: the host the record is about (syslog HOSTNAME).
    pub host_name: Option<Text>,
    /// `source.ip`.
    pub source_ip: Option<IpAddr>,
    /// `source.port`.
    pub source_port: Option<u16>,
    /// `destination.ip`.
    pub destination_ip: Option<IpAddr>,
    /// `destination.port`.
    pub destination_port: Option<u16>,
    /// `network.transport`: `tcp`, `udp`, `icmp`, ...
    pub network_transport: Option<Text>,
    /// `network.protocol`: application protocol (`ssh`, `http`, ...).
    pub network_protocol: Option<Text>,
    /// `network.bytes`.
    pub network_bytes: Option<u64>,
    /// `network.packets`.
    pub network_packets: Option<u64>,
    /// `network.community_id` (Community ID v1).
    pub network_community_id: Option<Text>,
    /// `source.as.number`: Autonomous system number from the ASN database.
    pub source_as_number: Option<u32>,
    /// `source.zone`: Network zone from the configured network hierarchy (`dmz`, `core-banking`).
    pub source_zone: Option<Text>,
    /// `source.internal`: Whether the address is inside one of the configured internal networks.
    pub source_internal: Option<bool>,
    /// `destination.as.number`: Autonomous system number from the ASN database.
    pub destination_as_number: Option<u32>,
    /// `destination.zone`: Network zone from the configured network hierarchy (`dmz`, `core-banking`).
    pub destination_zone: Option<Text>,
    /// `destination.internal`: Whether the address is inside one of the configured internal networks.
    pub destination_internal: Option<bool>,
    /// `network.direction`: `inbound`, `outbound`, `internal` or `external`, from the network
    /// hierarchy (or the source, for flows that know it).
    pub network_direction: Option<Text>,
    /// `user.name`.
    pub user_name: Option<Text>,
    /// `process.name` (syslog APP-NAME / tag).
    pub process_name: Option<Text>,
    /// `process.pid` (syslog PROCID when numeric).
    pub process_pid: Option<u32>,
    /// `http.response.bytes`: response size.
    pub http_response_bytes: Option<u64>,
    /// `event.duration`: how long the event took, in nanoseconds (gateway latency).
    pub duration_ns: Option<u64>,
    /// `http.response.status_code`.
    pub http_response_status_code: Option<u16>,
    /// `log.syslog.facility.code`.
    pub syslog_facility: Option<u8>,
    /// `log.syslog.severity.code`.
    pub syslog_severity: Option<u8>,
    /// `message`: the free-text part of the record.
    pub message: Option<Text>,
    /// Every field without a core slot, by its dotted name (`sshd.auth_method`, SD params as
    /// `sd.<id>.<param>`, ...).
    pub extra: Extra,
    /// The record exactly as received (`event.original`). Serialized as text; bytes that are not
    /// UTF-8 are replaced on the wire, the store keeps them exactly.
    pub raw: Vec<u8>,
    /// The rarely set fields (boxed; `None` while all are unset).
    rare: RareBox,
}

/// The fields of an [`Event`] that most events leave unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rare {
    /// `source.geo.country_iso_code`: ISO 3166 country code from GeoIP (`GB`).
    pub source_geo_country_iso_code: Option<Text>,
    /// `source.geo.country_name`: Country name (English) from GeoIP.
    pub source_geo_country_name: Option<Text>,
    /// `source.geo.city_name`: City name (English) from GeoIP.
    pub source_geo_city_name: Option<Text>,
    /// `source.geo.continent_code`: Continent code from GeoIP (`EU`).
    pub source_geo_continent_code: Option<Text>,
    /// `source.as.organization.name`: Autonomous system organization.
    pub source_as_organization_name: Option<Text>,
    /// `destination.geo.country_iso_code`: ISO 3166 country code from GeoIP (`GB`).
    pub destination_geo_country_iso_code: Option<Text>,
    /// `destination.geo.country_name`: Country name (English) from GeoIP.
    pub destination_geo_country_name: Option<Text>,
    /// `destination.geo.city_name`: City name (English) from GeoIP.
    pub destination_geo_city_name: Option<Text>,
    /// `destination.geo.continent_code`: Continent code from GeoIP (`EU`).
    pub destination_geo_continent_code: Option<Text>,
    /// `destination.as.organization.name`: Autonomous system organization.
    pub destination_as_organization_name: Option<Text>,
    /// `http.request.method`.
    pub http_request_method: Option<Text>,
    /// `url.path`.
    pub url_path: Option<Text>,
    /// `url.original`: the request target as sent (path and query).
    pub url_original: Option<Text>,
    /// `url.query`: the query string, without `?`.
    pub url_query: Option<Text>,
    /// `url.domain`: the host the request was for.
    pub url_domain: Option<Text>,
    /// `http.version` (`1.1`, `2`).
    pub http_version: Option<Text>,
    /// `user_agent.original`.
    pub user_agent_original: Option<Text>,
    /// `api.key`: the API key a gateway request used.
    pub api_key: Option<Text>,
    /// `api.consumer`: the gateway's consumer / application.
    pub api_consumer: Option<Text>,
    /// `api.route`: the gateway route or API operation.
    pub api_route: Option<Text>,
}

impl Rare {
    /// Every field (all are texts). Destructured, so a field added to `Rare` must be added
    /// here too (the event's weight in windows counts these).
    pub fn texts(&self) -> [&Option<Text>; 20] {
        let Rare {
            source_geo_country_iso_code,
            source_geo_country_name,
            source_geo_city_name,
            source_geo_continent_code,
            source_as_organization_name,
            destination_geo_country_iso_code,
            destination_geo_country_name,
            destination_geo_city_name,
            destination_geo_continent_code,
            destination_as_organization_name,
            http_request_method,
            url_path,
            url_original,
            url_query,
            url_domain,
            http_version,
            user_agent_original,
            api_key,
            api_consumer,
            api_route,
        } = self;
        [
            source_geo_country_iso_code,
            source_geo_country_name,
            source_geo_city_name,
            source_geo_continent_code,
            source_as_organization_name,
            destination_geo_country_iso_code,
            destination_geo_country_name,
            destination_geo_city_name,
            destination_geo_continent_code,
            destination_as_organization_name,
            http_request_method,
            url_path,
            url_original,
            url_query,
            url_domain,
            http_version,
            user_agent_original,
            api_key,
            api_consumer,
            api_route,
        ]
    }
}

/// A field of an [`Event`] by its name in the struct, wherever it lives: `core` in place, `rare`
/// in [`Rare`], read through [`Event::rare`] or, with `mut`, written through
/// [`Event::rare_mut`] (which boxes). For code that lists fields with their place: the binary
/// codec and the ClickHouse columns.
#[macro_export]
macro_rules! event_field {
    (core, $event:expr, $field:ident) => {
        $event.$field
    };
    (rare, $event:expr, $field:ident) => {
        $event.rare().$field
    };
    (mut core, $event:expr, $field:ident) => {
        $event.$field
    };
    (mut rare, $event:expr, $field:ident) => {
        $event.rare_mut().$field
    };
}

/// All of [`Rare`] unset, for events without them.
static NO_RARE: Rare = Rare {
    source_geo_country_iso_code: None,
    source_geo_country_name: None,
    source_geo_city_name: None,
    source_geo_continent_code: None,
    source_as_organization_name: None,
    destination_geo_country_iso_code: None,
    destination_geo_country_name: None,
    destination_geo_city_name: None,
    destination_geo_continent_code: None,
    destination_as_organization_name: None,
    http_request_method: None,
    url_path: None,
    url_original: None,
    url_query: None,
    url_domain: None,
    http_version: None,
    user_agent_original: None,
    api_key: None,
    api_consumer: None,
    api_route: None,
};

/// [`Event`]'s out-of-line fields: equal when the fields are, boxed or not.
#[derive(Debug, Clone, Default)]
struct RareBox(Option<Box<Rare>>);

impl PartialEq for RareBox {
    fn eq(&self, other: &RareBox) -> bool {
        self.0.as_deref().unwrap_or(&NO_RARE) == other.0.as_deref().unwrap_or(&NO_RARE)
    }
}

/// An [`Event`] as it is written and read as JSON: every field flat, with its wire name.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Event", deny_unknown_fields)]
struct EventWire {
    /// Event time: when the source says it happened (`@timestamp`).
    #[serde(rename = "@timestamp")]
    pub timestamp: DateTime<Utc>,
    /// When Vigil received the record (`event.ingested`).
    #[serde(rename = "event.ingested")]
    pub ingested: DateTime<Utc>,
    /// `event.kind`: `event`, `alert`, ...
    #[serde(
        rename = "event.kind",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Text>,
    /// `event.category`: `authentication`, `network`, `web`, ...
    #[serde(
        rename = "event.category",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub category: Option<Text>,
    /// `event.type`: `start`, `end`, `denied`, `info`, ...
    #[serde(
        rename = "event.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_type: Option<Text>,
    /// `event.outcome`: `success`, `failure`, `unknown`.
    #[serde(
        rename = "event.outcome",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub outcome: Option<Text>,
    /// `event.action`: what happened, in the parser definition's words (`ssh_login`, ...).
    #[serde(
        rename = "event.action",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<Text>,
    /// `event.severity`: the source's severity (syslog severity 0-7 for syslog).
    #[serde(
        rename = "event.severity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub severity: Option<u8>,
    /// `event.sequence`: the pipeline's number for this event, unique within a running Vigil
    /// and increasing; offenses use it to count an event once however many rules report it.
    #[serde(
        rename = "event.sequence",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sequence: Option<u64>,
    /// `event.dataset`: which parser definition produced the event (`openssh`, ...).
    #[serde(
        rename = "event.dataset",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dataset: Option<Text>,
    /// `observer.id`: the log source identity (`syslog/udp/10.0.0.5`, `file:/var/log/auth.log`).
    #[serde(
        rename = "observer.id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observer_id: Option<Text>,
    /// `observer.type`: the collector kind (`syslog`, `file`, `netflow`, ...).
    #[serde(
        rename = "observer.type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observer_type: Option<Text>,
    /// `observer.ip`: the network peer that sent the record.
    #[serde(
        rename = "observer.ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observer_ip: Option<IpAddr>,
    /// `host.name`: the host the record is about (syslog HOSTNAME).
    #[serde(rename = "host.name", default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<Text>,
    /// `source.ip`.
    #[serde(rename = "source.ip", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// `source.port`.
    #[serde(
        rename = "source.port",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_port: Option<u16>,
    /// `destination.ip`.
    #[serde(
        rename = "destination.ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_ip: Option<IpAddr>,
    /// `destination.port`.
    #[serde(
        rename = "destination.port",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_port: Option<u16>,
    /// `network.transport`: `tcp`, `udp`, `icmp`, ...
    #[serde(
        rename = "network.transport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_transport: Option<Text>,
    /// `network.protocol`: application protocol (`ssh`, `http`, ...).
    #[serde(
        rename = "network.protocol",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_protocol: Option<Text>,
    /// `network.bytes`.
    #[serde(
        rename = "network.bytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_bytes: Option<u64>,
    /// `network.packets`.
    #[serde(
        rename = "network.packets",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_packets: Option<u64>,
    /// `network.community_id` (Community ID v1).
    #[serde(
        rename = "network.community_id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_community_id: Option<Text>,
    /// `source.geo.country_iso_code`: ISO 3166 country code from GeoIP (`GB`).
    #[serde(
        rename = "source.geo.country_iso_code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_geo_country_iso_code: Option<Text>,
    /// `source.geo.country_name`: Country name (English) from GeoIP.
    #[serde(
        rename = "source.geo.country_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_geo_country_name: Option<Text>,
    /// `source.geo.city_name`: City name (English) from GeoIP.
    #[serde(
        rename = "source.geo.city_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_geo_city_name: Option<Text>,
    /// `source.geo.continent_code`: Continent code from GeoIP (`EU`).
    #[serde(
        rename = "source.geo.continent_code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_geo_continent_code: Option<Text>,
    /// `source.as.number`: Autonomous system number from the ASN database.
    #[serde(
        rename = "source.as.number",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_as_number: Option<u32>,
    /// `source.as.organization.name`: Autonomous system organization.
    #[serde(
        rename = "source.as.organization.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_as_organization_name: Option<Text>,
    /// `source.zone`: Network zone from the configured network hierarchy (`dmz`, `core-banking`).
    #[serde(
        rename = "source.zone",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_zone: Option<Text>,
    /// `source.internal`: Whether the address is inside one of the configured internal networks.
    #[serde(
        rename = "source.internal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_internal: Option<bool>,
    /// `destination.geo.country_iso_code`: ISO 3166 country code from GeoIP (`GB`).
    #[serde(
        rename = "destination.geo.country_iso_code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_geo_country_iso_code: Option<Text>,
    /// `destination.geo.country_name`: Country name (English) from GeoIP.
    #[serde(
        rename = "destination.geo.country_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_geo_country_name: Option<Text>,
    /// `destination.geo.city_name`: City name (English) from GeoIP.
    #[serde(
        rename = "destination.geo.city_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_geo_city_name: Option<Text>,
    /// `destination.geo.continent_code`: Continent code from GeoIP (`EU`).
    #[serde(
        rename = "destination.geo.continent_code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_geo_continent_code: Option<Text>,
    /// `destination.as.number`: Autonomous system number from the ASN database.
    #[serde(
        rename = "destination.as.number",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_as_number: Option<u32>,
    /// `destination.as.organization.name`: Autonomous system organization.
    #[serde(
        rename = "destination.as.organization.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_as_organization_name: Option<Text>,
    /// `destination.zone`: Network zone from the configured network hierarchy (`dmz`, `core-banking`).
    #[serde(
        rename = "destination.zone",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_zone: Option<Text>,
    /// `destination.internal`: Whether the address is inside one of the configured internal networks.
    #[serde(
        rename = "destination.internal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_internal: Option<bool>,
    /// `network.direction`: `inbound`, `outbound`, `internal` or `external`, from the network
    /// hierarchy (or the source, for flows that know it).
    #[serde(
        rename = "network.direction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_direction: Option<Text>,
    /// `user.name`.
    #[serde(rename = "user.name", default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<Text>,
    /// `process.name` (syslog APP-NAME / tag).
    #[serde(
        rename = "process.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_name: Option<Text>,
    /// `process.pid` (syslog PROCID when numeric).
    #[serde(
        rename = "process.pid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_pid: Option<u32>,
    /// `http.request.method`.
    #[serde(
        rename = "http.request.method",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_request_method: Option<Text>,
    /// `url.path`.
    #[serde(rename = "url.path", default, skip_serializing_if = "Option::is_none")]
    pub url_path: Option<Text>,
    /// `url.original`: the request target as sent (path and query).
    #[serde(
        rename = "url.original",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub url_original: Option<Text>,
    /// `url.query`: the query string, without `?`.
    #[serde(rename = "url.query", default, skip_serializing_if = "Option::is_none")]
    pub url_query: Option<Text>,
    /// `url.domain`: the host the request was for.
    #[serde(
        rename = "url.domain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub url_domain: Option<Text>,
    /// `http.version` (`1.1`, `2`).
    #[serde(
        rename = "http.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_version: Option<Text>,
    /// `http.response.bytes`: response size.
    #[serde(
        rename = "http.response.bytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_response_bytes: Option<u64>,
    /// `user_agent.original`.
    #[serde(
        rename = "user_agent.original",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent_original: Option<Text>,
    /// `event.duration`: how long the event took, in nanoseconds (gateway latency).
    #[serde(
        rename = "event.duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_ns: Option<u64>,
    /// `http.response.status_code`.
    #[serde(
        rename = "http.response.status_code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_response_status_code: Option<u16>,
    /// `api.key`: the API key a gateway request used.
    #[serde(rename = "api.key", default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Text>,
    /// `api.consumer`: the gateway's consumer / application.
    #[serde(
        rename = "api.consumer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_consumer: Option<Text>,
    /// `api.route`: the gateway route or API operation.
    #[serde(rename = "api.route", default, skip_serializing_if = "Option::is_none")]
    pub api_route: Option<Text>,
    /// `log.syslog.facility.code`.
    #[serde(
        rename = "log.syslog.facility.code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub syslog_facility: Option<u8>,
    /// `log.syslog.severity.code`.
    #[serde(
        rename = "log.syslog.severity.code",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub syslog_severity: Option<u8>,
    /// `message`: the free-text part of the record.
    #[serde(rename = "message", default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Text>,
    /// Every field without a core slot, by its dotted name (`sshd.auth_method`, SD params as
    /// `sd.<id>.<param>`, ...).
    #[serde(rename = "extra", default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// The record exactly as received (`event.original`). Serialized as text; bytes that are not
    /// UTF-8 are replaced on the wire, the store keeps them exactly.
    #[serde(rename = "event.original", default, with = "raw_text")]
    pub raw: Vec<u8>,
}

impl From<EventWire> for Event {
    fn from(w: EventWire) -> Event {
        let rare = Rare {
            source_geo_country_iso_code: w.source_geo_country_iso_code,
            source_geo_country_name: w.source_geo_country_name,
            source_geo_city_name: w.source_geo_city_name,
            source_geo_continent_code: w.source_geo_continent_code,
            source_as_organization_name: w.source_as_organization_name,
            destination_geo_country_iso_code: w.destination_geo_country_iso_code,
            destination_geo_country_name: w.destination_geo_country_name,
            destination_geo_city_name: w.destination_geo_city_name,
            destination_geo_continent_code: w.destination_geo_continent_code,
            destination_as_organization_name: w.destination_as_organization_name,
            http_request_method: w.http_request_method,
            url_path: w.url_path,
            url_original: w.url_original,
            url_query: w.url_query,
            url_domain: w.url_domain,
            http_version: w.http_version,
            user_agent_original: w.user_agent_original,
            api_key: w.api_key,
            api_consumer: w.api_consumer,
            api_route: w.api_route,
        };
        Event {
            timestamp: w.timestamp,
            ingested: w.ingested,
            kind: w.kind,
            category: w.category,
            event_type: w.event_type,
            outcome: w.outcome,
            action: w.action,
            severity: w.severity,
            sequence: w.sequence,
            dataset: w.dataset,
            observer_id: w.observer_id,
            observer_type: w.observer_type,
            observer_ip: w.observer_ip,
            host_name: w.host_name,
            source_ip: w.source_ip,
            source_port: w.source_port,
            destination_ip: w.destination_ip,
            destination_port: w.destination_port,
            network_transport: w.network_transport,
            network_protocol: w.network_protocol,
            network_bytes: w.network_bytes,
            network_packets: w.network_packets,
            network_community_id: w.network_community_id,
            source_as_number: w.source_as_number,
            source_zone: w.source_zone,
            source_internal: w.source_internal,
            destination_as_number: w.destination_as_number,
            destination_zone: w.destination_zone,
            destination_internal: w.destination_internal,
            network_direction: w.network_direction,
            user_name: w.user_name,
            process_name: w.process_name,
            process_pid: w.process_pid,
            http_response_bytes: w.http_response_bytes,
            duration_ns: w.duration_ns,
            http_response_status_code: w.http_response_status_code,
            syslog_facility: w.syslog_facility,
            syslog_severity: w.syslog_severity,
            message: w.message,
            extra: w.extra,
            raw: w.raw,
            rare: RareBox((rare != NO_RARE).then(|| Box::new(rare))),
        }
    }
}

impl From<Event> for EventWire {
    fn from(e: Event) -> EventWire {
        let rare = e.rare.0.map(|b| *b).unwrap_or_default();
        EventWire {
            timestamp: e.timestamp,
            ingested: e.ingested,
            kind: e.kind,
            category: e.category,
            event_type: e.event_type,
            outcome: e.outcome,
            action: e.action,
            severity: e.severity,
            sequence: e.sequence,
            dataset: e.dataset,
            observer_id: e.observer_id,
            observer_type: e.observer_type,
            observer_ip: e.observer_ip,
            host_name: e.host_name,
            source_ip: e.source_ip,
            source_port: e.source_port,
            destination_ip: e.destination_ip,
            destination_port: e.destination_port,
            network_transport: e.network_transport,
            network_protocol: e.network_protocol,
            network_bytes: e.network_bytes,
            network_packets: e.network_packets,
            network_community_id: e.network_community_id,
            source_as_number: e.source_as_number,
            source_zone: e.source_zone,
            source_internal: e.source_internal,
            destination_as_number: e.destination_as_number,
            destination_zone: e.destination_zone,
            destination_internal: e.destination_internal,
            network_direction: e.network_direction,
            user_name: e.user_name,
            process_name: e.process_name,
            process_pid: e.process_pid,
            http_response_bytes: e.http_response_bytes,
            duration_ns: e.duration_ns,
            http_response_status_code: e.http_response_status_code,
            syslog_facility: e.syslog_facility,
            syslog_severity: e.syslog_severity,
            message: e.message,
            extra: e.extra,
            raw: e.raw,
            source_geo_country_iso_code: rare.source_geo_country_iso_code,
            source_geo_country_name: rare.source_geo_country_name,
            source_geo_city_name: rare.source_geo_city_name,
            source_geo_continent_code: rare.source_geo_continent_code,
            source_as_organization_name: rare.source_as_organization_name,
            destination_geo_country_iso_code: rare.destination_geo_country_iso_code,
            destination_geo_country_name: rare.destination_geo_country_name,
            destination_geo_city_name: rare.destination_geo_city_name,
            destination_geo_continent_code: rare.destination_geo_continent_code,
            destination_as_organization_name: rare.destination_as_organization_name,
            http_request_method: rare.http_request_method,
            url_path: rare.url_path,
            url_original: rare.url_original,
            url_query: rare.url_query,
            url_domain: rare.url_domain,
            http_version: rare.http_version,
            user_agent_original: rare.user_agent_original,
            api_key: rare.api_key,
            api_consumer: rare.api_consumer,
            api_route: rare.api_route,
        }
    }
}

/// A field's value, borrowed from an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// Text.
    Str(&'a str),
    /// A whole number (ports, counts, codes).
    Int(i64),
    /// An IP address.
    Ip(IpAddr),
    /// A point in time.
    Time(DateTime<Utc>),
}

impl FieldValue<'_> {
    /// The value as text, the way rules compare it (`203.0.113.7`, `22`, RFC 3339 time).
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Str(s) => Cow::Borrowed(s),
            FieldValue::Int(i) => Cow::Owned(i.to_string()),
            FieldValue::Ip(ip) => Cow::Owned(ip_text(*ip).into()),
            FieldValue::Time(t) => Cow::Owned(t.to_rfc3339()),
        }
    }
}

impl fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

/// An address as text (`192.0.2.1`, `2001:db8::1`), the way `Display` writes it; IPv4 without
/// the formatting machinery (rules and window keys turn addresses into text for every event).
pub fn ip_text(ip: IpAddr) -> Text {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 15];
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                let mut digit = |d: u8| {
                    if let Some(slot) = b.get_mut(n) {
                        *slot = d;
                        n += 1;
                    }
                };
                if i > 0 {
                    digit(b'.');
                }
                if o >= 100 {
                    digit(b'0' + o / 100);
                }
                if o >= 10 {
                    digit(b'0' + (o / 10) % 10);
                }
                digit(b'0' + o % 10);
            }
            Text::new(std::str::from_utf8(b.get(..n).unwrap_or_default()).unwrap_or_default())
        }
        v6 => compact_str::ToCompactString::to_compact_string(&v6),
    }
}

/// Why [`Event::set`] refused a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The value does not fit the field's type (`source.ip` = `not-an-ip`).
    #[error("field {field}: {value:?} is not a valid {expected}")]
    InvalidValue {
        /// The field name.
        field: String,
        /// The refused value.
        value: String,
        /// What the field holds.
        expected: &'static str,
    },
    /// The name is reserved and cannot be set by a parser (`@timestamp`, `event.original`).
    #[error("field {0} cannot be set by a parser")]
    ReadOnly(String),
}

/// Reads one core field of an event.
type CoreReader = for<'a> fn(&'a Event) -> Option<FieldValue<'a>>;

/// A field name resolved once: reading it from an event then costs no name lookup (a core
/// field's reader, or the `extra` key). Reads exactly what [`Event::get`] reads for the name;
/// two are equal when their names are.
#[derive(Clone)]
pub struct FieldRef {
    name: Text,
    read: Resolved,
}

#[derive(Clone)]
enum Resolved {
    Core(CoreReader),
    Extra(Text),
}

impl FieldRef {
    /// Resolves a wire name, as [`Event::get`] does.
    pub fn new(name: &str) -> FieldRef {
        FieldRef {
            name: name.into(),
            read: match Event::core_reader(name) {
                Some(read) => Resolved::Core(read),
                None => Resolved::Extra(name.strip_prefix("extra.").unwrap_or(name).into()),
            },
        }
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The field of `event`.
    #[inline]
    pub fn get<'a>(&self, event: &'a Event) -> Option<FieldValue<'a>> {
        match &self.read {
            Resolved::Core(read) => read(event),
            Resolved::Extra(key) => event.extra.get(key).map(|v| FieldValue::Str(v.as_str())),
        }
    }
}

impl PartialEq for FieldRef {
    fn eq(&self, other: &FieldRef) -> bool {
        self.name == other.name
    }
}

impl Eq for FieldRef {}

impl std::fmt::Debug for FieldRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldRef({})", self.name)
    }
}

/// The core fields set after normalization, by the engine's thread: context enrichment
/// (GeoIP, AS, zones, internal, direction) and the event's sequence number. Work done on a
/// normalized event ahead of the engine (the rules' literal prescan) reads none of them; a
/// test in the service checks that enrichment writes nothing else.
pub const LATE_FIELDS: &[&str] = &[
    "event.sequence",
    "source.geo.country_iso_code",
    "source.geo.country_name",
    "source.geo.city_name",
    "source.geo.continent_code",
    "source.as.number",
    "source.as.organization.name",
    "source.zone",
    "source.internal",
    "destination.geo.country_iso_code",
    "destination.geo.country_name",
    "destination.geo.city_name",
    "destination.geo.continent_code",
    "destination.as.number",
    "destination.as.organization.name",
    "destination.zone",
    "destination.internal",
    "network.direction",
];

/// Every core field name, in schema order. Anything else lives in `extra`.
pub const CORE_FIELDS: &[&str] = &[
    "@timestamp",
    "event.ingested",
    "event.kind",
    "event.category",
    "event.type",
    "event.outcome",
    "event.action",
    "event.severity",
    "event.sequence",
    "event.dataset",
    "observer.id",
    "observer.type",
    "observer.ip",
    "host.name",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "network.transport",
    "network.protocol",
    "network.bytes",
    "network.packets",
    "network.community_id",
    "source.geo.country_iso_code",
    "source.geo.country_name",
    "source.geo.city_name",
    "source.geo.continent_code",
    "source.as.number",
    "source.as.organization.name",
    "source.zone",
    "source.internal",
    "destination.geo.country_iso_code",
    "destination.geo.country_name",
    "destination.geo.city_name",
    "destination.geo.continent_code",
    "destination.as.number",
    "destination.as.organization.name",
    "destination.zone",
    "destination.internal",
    "network.direction",
    "user.name",
    "process.name",
    "process.pid",
    "http.request.method",
    "url.path",
    "url.original",
    "url.query",
    "url.domain",
    "http.version",
    "http.response.bytes",
    "user_agent.original",
    "event.duration",
    "http.response.status_code",
    "api.key",
    "api.consumer",
    "api.route",
    "log.syslog.facility.code",
    "log.syslog.severity.code",
    "message",
    "event.original",
];

impl Event {
    /// An empty event at `timestamp`, received at `ingested`.
    pub fn new(timestamp: DateTime<Utc>, ingested: DateTime<Utc>) -> Self {
        Event {
            timestamp,
            ingested,
            kind: None,
            category: None,
            event_type: None,
            outcome: None,
            action: None,
            severity: None,
            sequence: None,
            dataset: None,
            observer_id: None,
            observer_type: None,
            observer_ip: None,
            host_name: None,
            source_ip: None,
            source_port: None,
            destination_ip: None,
            destination_port: None,
            network_transport: None,
            network_protocol: None,
            network_bytes: None,
            network_packets: None,
            network_community_id: None,
            source_as_number: None,
            source_zone: None,
            source_internal: None,
            destination_as_number: None,
            destination_zone: None,
            destination_internal: None,
            network_direction: None,
            user_name: None,
            process_name: None,
            process_pid: None,
            http_response_bytes: None,
            duration_ns: None,
            http_response_status_code: None,
            syslog_facility: None,
            syslog_severity: None,
            message: None,
            extra: Extra::new(),
            raw: Vec::new(),
            rare: RareBox(None),
        }
    }

    /// The rarely set fields ([`Rare`]), all unset when the event has none.
    pub fn rare(&self) -> &Rare {
        self.rare.0.as_deref().unwrap_or(&NO_RARE)
    }

    /// Whether the rarely set fields are boxed (some are set, or were).
    pub fn rare_boxed(&self) -> bool {
        self.rare.0.is_some()
    }

    /// The rarely set fields to write (boxed on first use).
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.0.get_or_insert_with(Box::default)
    }

    /// Whether `name` is a core field (otherwise it addresses `extra`).
    pub fn is_core_field(name: &str) -> bool {
        CORE_FIELDS.contains(&name)
    }

    /// A field by its wire name. Names that are not core fields are looked up in `extra`
    /// (with or without an `extra.` prefix). To read one field of many events, resolve its name
    /// once with [`FieldRef::new`].
    pub fn get(&self, name: &str) -> Option<FieldValue<'_>> {
        match Event::core_reader(name) {
            Some(read) => read(self),
            None => {
                let key = name.strip_prefix("extra.").unwrap_or(name);
                self.extra.get(key).map(|v| FieldValue::Str(v.as_str()))
            }
        }
    }

    /// The reader of a core field, by wire name (`None`: not a core field).
    fn core_reader(name: &str) -> Option<CoreReader> {
        fn s(v: &Option<Text>) -> Option<FieldValue<'_>> {
            v.as_deref().map(FieldValue::Str)
        }
        fn n<T: Into<i64> + Copy>(v: &Option<T>) -> Option<FieldValue<'static>> {
            v.map(|x| FieldValue::Int(x.into()))
        }
        let read: CoreReader = match name {
            "@timestamp" => |e| Some(FieldValue::Time(e.timestamp)),
            "event.ingested" => |e| Some(FieldValue::Time(e.ingested)),
            "event.kind" => |e| s(&e.kind),
            "event.category" => |e| s(&e.category),
            "event.type" => |e| s(&e.event_type),
            "event.outcome" => |e| s(&e.outcome),
            "event.action" => |e| s(&e.action),
            "event.severity" => |e| n(&e.severity),
            "event.sequence" => |e| e.sequence.map(|s| FieldValue::Int(saturating_i64(s))),
            "event.dataset" => |e| s(&e.dataset),
            "observer.id" => |e| s(&e.observer_id),
            "observer.type" => |e| s(&e.observer_type),
            "observer.ip" => |e| e.observer_ip.map(FieldValue::Ip),
            "host.name" => |e| s(&e.host_name),
            "source.ip" => |e| e.source_ip.map(FieldValue::Ip),
            "source.port" => |e| n(&e.source_port),
            "destination.ip" => |e| e.destination_ip.map(FieldValue::Ip),
            "destination.port" => |e| n(&e.destination_port),
            "network.transport" => |e| s(&e.network_transport),
            "network.protocol" => |e| s(&e.network_protocol),
            "network.bytes" => |e| e.network_bytes.map(|b| FieldValue::Int(saturating_i64(b))),
            "network.packets" => |e| {
                e.network_packets
                    .map(|b| FieldValue::Int(saturating_i64(b)))
            },
            "network.community_id" => |e| s(&e.network_community_id),
            "source.geo.country_iso_code" => |e| s(&e.rare().source_geo_country_iso_code),
            "source.geo.country_name" => |e| s(&e.rare().source_geo_country_name),
            "source.geo.city_name" => |e| s(&e.rare().source_geo_city_name),
            "source.geo.continent_code" => |e| s(&e.rare().source_geo_continent_code),
            "source.as.number" => |e| n(&e.source_as_number),
            "source.as.organization.name" => |e| s(&e.rare().source_as_organization_name),
            "source.zone" => |e| s(&e.source_zone),
            "source.internal" => |e| {
                e.source_internal
                    .map(|b| FieldValue::Str(if b { "true" } else { "false" }))
            },
            "destination.geo.country_iso_code" => |e| s(&e.rare().destination_geo_country_iso_code),
            "destination.geo.country_name" => |e| s(&e.rare().destination_geo_country_name),
            "destination.geo.city_name" => |e| s(&e.rare().destination_geo_city_name),
            "destination.geo.continent_code" => |e| s(&e.rare().destination_geo_continent_code),
            "destination.as.number" => |e| n(&e.destination_as_number),
            "destination.as.organization.name" => |e| s(&e.rare().destination_as_organization_name),
            "destination.zone" => |e| s(&e.destination_zone),
            "destination.internal" => |e| {
                e.destination_internal
                    .map(|b| FieldValue::Str(if b { "true" } else { "false" }))
            },
            "network.direction" => |e| s(&e.network_direction),
            "user.name" => |e| s(&e.user_name),
            "process.name" => |e| s(&e.process_name),
            "process.pid" => |e| n(&e.process_pid),
            "http.request.method" => |e| s(&e.rare().http_request_method),
            "url.path" => |e| s(&e.rare().url_path),
            "url.original" => |e| s(&e.rare().url_original),
            "url.query" => |e| s(&e.rare().url_query),
            "url.domain" => |e| s(&e.rare().url_domain),
            "http.version" => |e| s(&e.rare().http_version),
            "http.response.bytes" => |e| {
                e.http_response_bytes
                    .map(|b| FieldValue::Int(saturating_i64(b)))
            },
            "user_agent.original" => |e| s(&e.rare().user_agent_original),
            "event.duration" => |e| e.duration_ns.map(|d| FieldValue::Int(saturating_i64(d))),
            "http.response.status_code" => |e| n(&e.http_response_status_code),
            "api.key" => |e| s(&e.rare().api_key),
            "api.consumer" => |e| s(&e.rare().api_consumer),
            "api.route" => |e| s(&e.rare().api_route),
            "log.syslog.facility.code" => |e| n(&e.syslog_facility),
            "log.syslog.severity.code" => |e| n(&e.syslog_severity),
            "message" => |e| s(&e.message),
            "event.original" => |e| std::str::from_utf8(&e.raw).ok().map(FieldValue::Str),
            _ => return None,
        };
        Some(read)
    }

    /// Sets a field by its wire name from text, converting to the field's type. Names that are
    /// not core fields go to `extra`. Time fields and `event.original` are read-only here.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), FieldError> {
        fn text(slot: &mut Option<Text>, value: &str) -> Result<(), FieldError> {
            *slot = Some(value.into());
            Ok(())
        }
        fn parsed<T: std::str::FromStr>(
            slot: &mut Option<T>,
            field: &str,
            value: &str,
            expected: &'static str,
        ) -> Result<(), FieldError> {
            match value.trim().parse::<T>() {
                Ok(v) => {
                    *slot = Some(v);
                    Ok(())
                }
                Err(_) => Err(FieldError::InvalidValue {
                    field: field.to_owned(),
                    value: value.to_owned(),
                    expected,
                }),
            }
        }
        match name {
            "@timestamp" | "event.ingested" | "event.original" => {
                Err(FieldError::ReadOnly(name.to_owned()))
            }
            "event.kind" => text(&mut self.kind, value),
            "event.category" => text(&mut self.category, value),
            "event.type" => text(&mut self.event_type, value),
            "event.outcome" => text(&mut self.outcome, value),
            "event.action" => text(&mut self.action, value),
            "event.severity" => parsed(&mut self.severity, name, value, "severity (0-255)"),
            "event.sequence" => Err(FieldError::ReadOnly(name.to_owned())),
            "event.dataset" => text(&mut self.dataset, value),
            "observer.id" => text(&mut self.observer_id, value),
            "observer.type" => text(&mut self.observer_type, value),
            "observer.ip" => parsed(&mut self.observer_ip, name, value, "IP address"),
            "host.name" => text(&mut self.host_name, value),
            "source.ip" => parsed(&mut self.source_ip, name, value, "IP address"),
            "source.port" => parsed(&mut self.source_port, name, value, "port (0-65535)"),
            "destination.ip" => parsed(&mut self.destination_ip, name, value, "IP address"),
            "destination.port" => parsed(&mut self.destination_port, name, value, "port (0-65535)"),
            "network.transport" => text(&mut self.network_transport, value),
            "network.protocol" => text(&mut self.network_protocol, value),
            "network.bytes" => parsed(&mut self.network_bytes, name, value, "byte count"),
            "network.packets" => parsed(&mut self.network_packets, name, value, "packet count"),
            "network.community_id" => text(&mut self.network_community_id, value),
            "source.geo.country_iso_code" => {
                text(&mut self.rare_mut().source_geo_country_iso_code, value)
            }
            "source.geo.country_name" => text(&mut self.rare_mut().source_geo_country_name, value),
            "source.geo.city_name" => text(&mut self.rare_mut().source_geo_city_name, value),
            "source.geo.continent_code" => {
                text(&mut self.rare_mut().source_geo_continent_code, value)
            }
            "source.as.number" => parsed(&mut self.source_as_number, name, value, "AS number"),
            "source.as.organization.name" => {
                text(&mut self.rare_mut().source_as_organization_name, value)
            }
            "source.zone" => text(&mut self.source_zone, value),
            "source.internal" => parsed(&mut self.source_internal, name, value, "true or false"),
            "destination.geo.country_iso_code" => {
                text(&mut self.rare_mut().destination_geo_country_iso_code, value)
            }
            "destination.geo.country_name" => {
                text(&mut self.rare_mut().destination_geo_country_name, value)
            }
            "destination.geo.city_name" => {
                text(&mut self.rare_mut().destination_geo_city_name, value)
            }
            "destination.geo.continent_code" => {
                text(&mut self.rare_mut().destination_geo_continent_code, value)
            }
            "destination.as.number" => {
                parsed(&mut self.destination_as_number, name, value, "AS number")
            }
            "destination.as.organization.name" => {
                text(&mut self.rare_mut().destination_as_organization_name, value)
            }
            "destination.zone" => text(&mut self.destination_zone, value),
            "destination.internal" => {
                parsed(&mut self.destination_internal, name, value, "true or false")
            }
            "network.direction" => text(&mut self.network_direction, value),
            "user.name" => text(&mut self.user_name, value),
            "process.name" => text(&mut self.process_name, value),
            "process.pid" => parsed(&mut self.process_pid, name, value, "process id"),
            "http.request.method" => text(&mut self.rare_mut().http_request_method, value),
            "url.path" => text(&mut self.rare_mut().url_path, value),
            "url.original" => text(&mut self.rare_mut().url_original, value),
            "url.query" => text(&mut self.rare_mut().url_query, value),
            "url.domain" => text(&mut self.rare_mut().url_domain, value),
            "http.version" => text(&mut self.rare_mut().http_version, value),
            "http.response.bytes" => {
                parsed(&mut self.http_response_bytes, name, value, "byte count")
            }
            "user_agent.original" => text(&mut self.rare_mut().user_agent_original, value),
            "event.duration" => parsed(&mut self.duration_ns, name, value, "duration in ns"),
            "http.response.status_code" => parsed(
                &mut self.http_response_status_code,
                name,
                value,
                "HTTP status code",
            ),
            "api.key" => text(&mut self.rare_mut().api_key, value),
            "api.consumer" => text(&mut self.rare_mut().api_consumer, value),
            "api.route" => text(&mut self.rare_mut().api_route, value),
            "log.syslog.facility.code" => {
                parsed(&mut self.syslog_facility, name, value, "syslog facility")
            }
            "log.syslog.severity.code" => {
                parsed(&mut self.syslog_severity, name, value, "syslog severity")
            }
            "message" => text(&mut self.message, value),
            other => {
                let key = other.strip_prefix("extra.").unwrap_or(other);
                self.extra.insert(key.into(), value.into());
                Ok(())
            }
        }
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

mod raw_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(raw: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(raw))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let v4 = IpAddr::from(if i < 256 {
                [i as u8, 0, 9, 99]
            } else {
                (seed as u32).to_be_bytes()
            });
            assert_eq!(ip_text(v4).as_str(), v4.to_string());
            assert_eq!(FieldValue::Ip(v4).as_text(), v4.to_string());
            let v6 = IpAddr::from(std::net::Ipv6Addr::from(u128::from(seed) << (i % 64)));
            assert_eq!(ip_text(v6).as_str(), v6.to_string());
        }
    }

    use super::*;

    #[test]
    fn extra_is_a_sorted_map() {
        let mut x = Extra::new();
        assert_eq!(x.insert("b".into(), "1".into()), None);
        assert_eq!(x.insert("a".into(), "2".into()), None);
        assert_eq!(x.insert("b".into(), "3".into()).as_deref(), Some("1"));
        x.push_sorted("c".into(), "4".into());
        // Out of order: inserted in its place all the same.
        x.push_sorted("0".into(), "5".into());
        let keys: Vec<&str> = x.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["0", "a", "b", "c"]);
        assert_eq!(x.get("b").map(Text::as_str), Some("3"));
        assert!(x.contains_key("c") && !x.contains_key("d"));
        assert_eq!(x.remove("a").as_deref(), Some("2"));
        assert_eq!(x.len(), 3);
        // Collected: sorted, and a name given twice keeps its last value.
        let y: Extra = [("z", "1"), ("m", "2"), ("z", "3")]
            .into_iter()
            .map(|(k, v)| (Text::from(k), Text::from(v)))
            .collect();
        let pairs: Vec<(&str, &str)> = y.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("m", "2"), ("z", "3")]);
        // A JSON object on the wire, in name order; a repeated name keeps the last.
        let json = serde_json::to_string(&y).unwrap_or_default();
        assert_eq!(json, r#"{"m":"2","z":"3"}"#);
        let back: Extra = serde_json::from_str(r#"{"z":"1","m":"2","z":"3"}"#).unwrap_or_default();
        assert_eq!(back, y);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn typed_fields_round_trip_through_set_and_get() {
        let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:01Z"));
        assert_eq!(e.set("source.ip", "203.0.113.7"), Ok(()));
        assert_eq!(e.set("source.port", "50022"), Ok(()));
        assert_eq!(e.set("sshd.method", "password"), Ok(()));
        assert_eq!(
            e.get("source.ip").map(|v| v.to_string()).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(e.get("source.port"), Some(FieldValue::Int(50022)));
        assert_eq!(e.get("sshd.method"), Some(FieldValue::Str("password")));
        assert_eq!(
            e.get("extra.sshd.method"),
            Some(FieldValue::Str("password"))
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_with_the_field_named() {
        let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
        let err = e.set("source.ip", "not-an-ip").err();
        assert!(
            matches!(err, Some(FieldError::InvalidValue { ref field, .. }) if field == "source.ip")
        );
        assert_eq!(e.source_ip, None);
        assert!(e.set("@timestamp", "x").is_err());
    }

    #[test]
    fn wire_names_are_ecs_style_and_json_round_trips() {
        let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
        e.set("source.ip", "2001:db8::1").ok();
        e.set("event.outcome", "failure").ok();
        e.raw = b"raw line".to_vec();
        let json = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(json["source.ip"], "2001:db8::1");
        assert_eq!(json["event.outcome"], "failure");
        assert_eq!(json["event.original"], "raw line");
        let back: Event = serde_json::from_value(json).unwrap_or_else(|_| e.clone());
        assert_eq!(back, e);
    }

    /// The rarely set fields are out of line but flat on the wire: JSON names them like the
    /// others, reading JSON boxes them only when one is there, and an event whose box holds
    /// nothing equals one without.
    #[test]
    fn rare_fields_are_boxed_only_when_set_and_flat_on_the_wire() {
        let t = at("2026-01-01T00:00:00Z");
        let mut e = Event::new(t, t);
        e.set("url.path", "/v1/accounts").ok();
        e.set("source.geo.country_iso_code", "DE").ok();
        e.set("source.ip", "203.0.113.7").ok();
        assert!(e.rare_boxed());
        assert_eq!(e.rare().url_path.as_deref(), Some("/v1/accounts"));
        let json = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(json["url.path"], "/v1/accounts");
        assert_eq!(json["source.geo.country_iso_code"], "DE");
        assert!(json.get("rare").is_none(), "{json}");
        let back: Event = serde_json::from_value(json).unwrap_or_else(|_| Event::new(t, t));
        assert_eq!(back, e);
        assert!(back.rare_boxed());

        let mut plain = Event::new(t, t);
        plain.set("source.ip", "203.0.113.7").ok();
        let json = serde_json::to_value(&plain).unwrap_or_default();
        let back: Event = serde_json::from_value(json).unwrap_or_else(|_| e.clone());
        assert!(!back.rare_boxed(), "no rare field, no box");
        assert_eq!(back, plain);
        let mut emptied = plain.clone();
        emptied.rare_mut().url_path = None;
        assert!(emptied.rare_boxed());
        assert_eq!(emptied, plain, "an empty box equals none");
        emptied.rare_mut().api_key = Some("k".into());
        assert_ne!(emptied, plain);
        // Unknown names are still refused.
        let mut json = serde_json::to_value(&plain).unwrap_or_default();
        json["rare"] = serde_json::json!({});
        assert!(serde_json::from_value::<Event>(json).is_err());
    }

    /// An event is copied, encoded and dropped whole on every thread it crosses: a field added
    /// in line (rather than to [`Rare`], if most events leave it unset) must be worth its bytes.
    #[test]
    fn an_event_stays_small() {
        assert!(
            std::mem::size_of::<Event>() <= 704,
            "{} bytes",
            std::mem::size_of::<Event>()
        );
    }

    #[test]
    fn every_core_field_name_is_known_to_get_or_set() {
        let mut e = Event::new(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
        for name in CORE_FIELDS {
            // A core field must never fall through to `extra`.
            let _ = e.set(name, "1");
            assert!(!e.extra.contains_key(*name), "{name} fell through to extra");
        }
    }

    /// A resolved name reads what `get` reads: every core field (set and unset), `extra` keys
    /// with and without the prefix, and names of neither; and the core readers are exactly the
    /// core fields.
    #[test]
    fn field_refs_read_what_get_reads() {
        let t = at("2026-01-01T00:00:00Z");
        let empty = Event::new(t, t);
        let mut full = Event::new(t, t);
        for (i, name) in CORE_FIELDS.iter().enumerate() {
            let value = match *name {
                "source.ip" | "destination.ip" | "observer.ip" => "2001:db8::7".to_owned(),
                "source.internal" | "destination.internal" => "true".to_owned(),
                _ => (i + 1).to_string(),
            };
            let _ = full.set(name, &value);
            assert!(
                Event::core_reader(name).is_some(),
                "{name} has no core reader"
            );
        }
        full.raw = b"raw line".to_vec();
        full.extra.insert("CommandLine".into(), "cmd /c".into());
        full.extra.insert("extra.odd".into(), "kept".into());
        let names = CORE_FIELDS.iter().copied().chain([
            "CommandLine",
            "extra.CommandLine",
            "odd",
            "extra.odd",
            "nope",
            "",
        ]);
        let mut seen = 0;
        for name in names {
            for e in [&empty, &full] {
                let direct = e.get(name);
                assert_eq!(FieldRef::new(name).get(e), direct, "{name}");
                seen += usize::from(direct.is_some());
            }
        }
        assert!(seen > CORE_FIELDS.len(), "{seen}");
        assert!(Event::core_reader("CommandLine").is_none());
        assert!(Event::core_reader("extra.message").is_none());
    }
}
