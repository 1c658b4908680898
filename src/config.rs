//! The configuration: one TOML file, every field documented, defaults = embedded mode.
//!
//! Unknown keys are rejected with the key named (`serde(deny_unknown_fields)`), so a typo never
//! silently falls back to a default. `vigil config check` loads this, the parser definitions and
//! the rules, and reports every problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder for the SQLite store and other state. Created if missing.
    pub data_dir: PathBuf,
    /// Syslog collector (UDP and TCP).
    pub syslog: SyslogConfig,
    /// Flow collectors (NetFlow, IPFIX, sFlow).
    pub flows: crate::collect::flow::FlowsConfig,
    /// Automatic IP blocking and its guards.
    pub response: crate::response::ResponseConfig,
    /// Parsing.
    pub parse: ParseConfig,
    /// Rules and correlation state.
    pub rules: RulesConfig,
    /// Offenses and their stored events.
    pub offenses: OffenseConfig,
    /// Internal queues between stages.
    pub bus: BusConfig,
    /// Store limits.
    pub store: StoreConfig,
    /// HTTP API, console and metrics.
    pub api: ApiConfig,
    /// Log-source tracking.
    pub sources: SourcesConfig,
    /// Enrichment: GeoIP, network hierarchy, reference data, assets.
    pub context: ContextConfig,
}

/// Context added to every event before correlation (see `src/context/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// GeoIP2/GeoLite2 City (or Country) database; unset: no `*.geo.*` fields.
    pub geoip_city: Option<PathBuf>,
    /// GeoLite2 ASN (or GeoIP2 ISP) database; unset: no `*.as.*` fields.
    pub geoip_asn: Option<PathBuf>,
    /// GeoIP lookups remembered per address (0: no cache).
    pub geoip_cache_entries: usize,
    /// How often the GeoIP files are checked for a new version (swapped in atomically; a broken
    /// new file is refused and the old one kept).
    pub geoip_reload_check_secs: u64,
    /// Most assets (internal hosts) remembered; the least recently seen is forgotten beyond it
    /// and counted.
    pub max_assets: usize,
    /// Most destination ports remembered per asset.
    pub max_ports_per_asset: usize,
    /// Named networks (zones) with a criticality. The most specific network containing an
    /// address gives its `*.zone`; internal zones make an address `*.internal = true`.
    pub networks: Vec<NetworkZone>,
    /// Reference sets rules can test with `|refset` and offenses can add to.
    pub reference_sets: Vec<ReferenceSetConfig>,
    /// Reference maps (key -> value), loaded from CSV files and changed through the API.
    pub reference_maps: Vec<ReferenceMapConfig>,
    /// Most bytes a reference-data file or URL may hold.
    pub max_reference_bytes: usize,
}

/// One zone of the network hierarchy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkZone {
    /// Zone name (`dmz`, `core-banking`, ...).
    pub name: String,
    /// Networks in the zone (`10.1.0.0/16`, `2001:db8::/32`, or one address).
    pub cidrs: Vec<String>,
    /// How much the zone's hosts matter, 0-10 (raises the relevance of offenses that involve
    /// them).
    #[serde(default = "default_criticality")]
    pub criticality: u8,
    /// Whether the zone is ours (`*.internal = true`, assets are learned in it).
    #[serde(default = "default_true")]
    pub internal: bool,
}

fn default_criticality() -> u8 {
    5
}

fn default_true() -> bool {
    true
}

/// A reference set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSetConfig {
    /// Name rules use (`source.ip|refset: threat_intel`).
    pub name: String,
    /// `ip` (addresses and CIDRs) or `string`.
    #[serde(default = "default_set_kind")]
    pub kind: String,
    /// Files loaded at start and reloaded when they change: FireHOL `.netset`/`.ipset`, plain
    /// lists (one value per line, `#` comments) or CSV (first column).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// An `http://` URL fetched every `refresh_secs` (off when unset or 0); its entries replace
    /// those of the previous fetch.
    #[serde(default)]
    pub url: Option<String>,
    /// Seconds between URL fetches (0: off).
    #[serde(default)]
    pub refresh_secs: u64,
    /// Entries from files and the URL expire after this many seconds unless refreshed (0: never).
    #[serde(default)]
    pub ttl_secs: u64,
}

fn default_set_kind() -> String {
    "ip".into()
}

/// A reference map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceMapConfig {
    /// Map name.
    pub name: String,
    /// CSV files of `key,value` lines loaded at start and reloaded when they change.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            geoip_city: None,
            geoip_asn: None,
            geoip_cache_entries: 65_536,
            geoip_reload_check_secs: 60,
            max_assets: 100_000,
            max_ports_per_asset: 32,
            networks: vec![NetworkZone {
                name: "private".into(),
                cidrs: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
                    .map(String::from)
                    .to_vec(),
                criticality: 5,
                internal: true,
            }],
            reference_sets: vec![
                ReferenceSetConfig {
                    name: "threat_intel".into(),
                    kind: "ip".into(),
                    files: Vec::new(),
                    url: None,
                    refresh_secs: 0,
                    ttl_secs: 0,
                },
                ReferenceSetConfig {
                    name: "blocked_ips".into(),
                    kind: "ip".into(),
                    files: Vec::new(),
                    url: None,
                    refresh_secs: 0,
                    ttl_secs: 0,
                },
            ],
            reference_maps: Vec::new(),
            max_reference_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Log-source tracking (`GET /api/v1/sources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Most log sources tracked; the least recently seen is forgotten beyond it and counted.
    pub max_sources: usize,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            max_sources: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            syslog: SyslogConfig::default(),
            flows: crate::collect::flow::FlowsConfig::default(),
            response: crate::response::ResponseConfig::default(),
            parse: ParseConfig::default(),
            rules: RulesConfig::default(),
            offenses: OffenseConfig::default(),
            bus: BusConfig::default(),
            store: StoreConfig::default(),
            api: ApiConfig::default(),
            sources: SourcesConfig::default(),
            context: ContextConfig::default(),
        }
    }
}

/// Syslog listeners. RFC 6587 framing on TCP (octet counting or newline, detected per
/// connection); one datagram = one record on UDP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// UDP listen address; empty string disables UDP.
    pub udp_listen: String,
    /// TCP listen address; empty string disables TCP.
    pub tcp_listen: String,
    /// Longest accepted record in bytes (UDP datagram or TCP frame). Longer ones are refused,
    /// counted (`reason="frame_too_long"`) and kept as dead letters: a UDP datagram with its first
    /// `max_message_bytes`; a TCP frame, discarded as it streams so memory stays bounded, with
    /// its size and position in the detail.
    pub max_message_bytes: usize,
    /// Most TCP connections open at once; further ones are closed at accept and counted.
    pub max_connections: usize,
    /// A TCP connection that sends nothing for this long is closed and counted.
    pub idle_timeout_secs: u64,
    /// UDP socket receive buffer to ask the kernel for, in bytes (0 = system default).
    pub udp_recv_buffer_bytes: usize,
    /// Syslog over TLS (RFC 5425, usually port 6514) listen address; empty disables it. Needs
    /// `tls_cert` and `tls_key`. Framing as on TCP; `max_connections` counts both.
    pub tls_listen: String,
    /// Server certificate chain (PEM) for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// When set, clients must present a certificate this CA (PEM) signed.
    pub tls_client_ca: Option<PathBuf>,
    /// A TLS handshake that does not finish within this many seconds is dropped and counted.
    pub tls_handshake_timeout_secs: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            udp_listen: "127.0.0.1:5514".into(),
            tcp_listen: "127.0.0.1:5514".into(),
            max_message_bytes: 64 * 1024,
            max_connections: 1024,
            idle_timeout_secs: 300,
            udp_recv_buffer_bytes: 8 * 1024 * 1024,
            tls_listen: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout_secs: 10,
        }
    }
}

/// How records become events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseConfig {
    /// Folder of extra parser definitions (`*.yml`), loaded after the built-in ones. When set,
    /// it must exist: a missing folder or a broken file in it is reported by `config check` and
    /// logged at start (the built-in definitions still load).
    pub definitions_dir: Option<PathBuf>,
    /// UTC offset for timestamps that carry none (RFC 3164, file lines), e.g. `+02:00`.
    pub default_utc_offset: String,
    /// What to do with records that are not valid UTF-8: `dead_letter` keeps them aside with
    /// their raw bytes; `replace` parses them with U+FFFD replacement characters.
    pub invalid_utf8: Utf8Policy,
    /// How far past its receive time a record's own timestamp may be, in seconds. A later one
    /// (a wrong clock, or a forged record that would push correlation windows into the future)
    /// is replaced by the receive time, kept in `extra.log.original_timestamp`, and counted; so
    /// is a time before 2000-01-01 (a clock reset to 1970).
    pub max_future_skew_secs: u64,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            definitions_dir: None,
            default_utc_offset: "+00:00".into(),
            invalid_utf8: Utf8Policy::DeadLetter,
            max_future_skew_secs: 300,
        }
    }
}

/// Policy for records that are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utf8Policy {
    /// Keep the record as a dead letter (reason `invalid_utf8`).
    DeadLetter,
    /// Replace invalid bytes with U+FFFD and parse.
    Replace,
}

/// Where rules come from and how much correlation state they may hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Folder of rule files (`*.yml`, `*.yaml`). When it does not exist, the rule pack built
    /// into the binary is used.
    pub dir: PathBuf,
    /// Most correlation keys (group-by values) one rule may track; the least recently updated
    /// key is evicted and counted beyond it.
    pub max_keys_per_rule: usize,
    /// Most events one correlation key keeps in its window; the oldest are dropped and counted.
    pub max_events_per_key: usize,
    /// Most distinct values a `value_count` key tracks; the oldest occurrences are dropped and
    /// counted beyond it.
    pub max_values_per_key: usize,
    /// How far behind a rule's newest event time an event may arrive and still count, in
    /// seconds; older events are counted as late and not applied.
    pub allowed_lateness_secs: u64,
    /// Most bytes of events the correlation windows hold as evidence (all rules together).
    /// Beyond it the events of the least recently updated keys are dropped (counted in
    /// `vigil_correlate_payloads_dropped`); their times stay, so counts stay exact and only the
    /// evidence attached to a later offense is sampled.
    pub max_payload_bytes: usize,
    /// Correlation windows are saved (`data_dir/engine-state.bin`, off the engine thread) at
    /// shutdown and every this many seconds, and restored at start, so a restart does not
    /// forget nine failed logins of ten. After a crash the records since the last save are
    /// read again from the spool. 0: saved only at shutdown; windows start empty after a crash.
    pub state_save_secs: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from("rules"),
            max_keys_per_rule: 100_000,
            max_events_per_key: 10_000,
            max_values_per_key: 10_000,
            allowed_lateness_secs: 0,
            max_payload_bytes: 256 * 1024 * 1024,
            state_save_secs: 300,
        }
    }
}

/// Offense bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffenseConfig {
    /// Most contributing events stored per offense; the total count keeps counting past it.
    pub max_events_per_offense: usize,
    /// An open offense whose last event is this much older (in event time) than a new
    /// detection for its index is closed as `inactive`, and the detection opens a new offense.
    pub inactive_after_secs: u64,
    /// Open offenses held in memory between detections, so that a detection joining one
    /// neither reads it back nor rewrites it until the batch ends (0: none held).
    pub held_open: usize,
}

impl Default for OffenseConfig {
    fn default() -> Self {
        OffenseConfig {
            max_events_per_offense: 1000,
            inactive_after_secs: 5 * 24 * 3600,
            held_open: 10_000,
        }
    }
}

/// How records travel: in-process queues (embedded), or Kafka between stages (scaled out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Capacity of the queue from collectors to the engine, in records. When full, TCP readers
    /// wait (back-pressure) and UDP records are dropped and counted.
    pub queue_capacity: usize,
    /// Most bytes of records the queue may hold (with `queue_capacity`, whichever is reached
    /// first); same back-pressure and drop rules.
    pub queue_bytes: usize,
    /// Embedded mode: put every record on the burst spool on disk (`data_dir/spool/`) between
    /// the collectors and the engine, so bursts are absorbed and a crash loses nothing
    /// accepted. Off: the memory queue alone.
    pub spool: bool,
    /// Most bytes the spool keeps; when full, TCP and HTTP senders wait and UDP records are
    /// dropped (counted).
    pub spool_max_bytes: u64,
    /// Size at which a spool segment file is closed and a new one started.
    pub spool_segment_bytes: u64,
    /// How often the spool is flushed to the disk (`fsync`): what a power loss can take. A
    /// crash of Vigil alone loses nothing accepted.
    pub spool_fsync_ms: u64,
    /// `memory` (embedded: one process does everything) or `kafka` (scaled out).
    pub kind: BusKind,
    /// With `kafka`: the stages this process runs. `ingest`: collect, parse, enrich, single-event
    /// rules, publish. `correlate`: correlation windows of its partitions, offenses, storage.
    /// `all`: both.
    pub role: Role,
    /// Kafka client settings.
    pub kafka: crate::bus::kafka::KafkaConfig,
    /// Topic names start with this (`vigil.matches`, `vigil.detections`, `vigil.events`,
    /// `vigil.dead_letters`).
    pub topic_prefix: String,
    /// Partitions of the topics Vigil creates (existing topics are left as they are). The most
    /// correlate processes that can share the work.
    pub partitions: i32,
    /// The offense stage holds detections this long and applies them in event-time order, so
    /// correlate nodes running at different paces open the same offenses as one engine would.
    /// Offenses appear this much later.
    pub offense_reorder_ms: u64,
    /// How often a correlate node saves the windows of its partitions to ClickHouse (and only
    /// then commits their offsets). A node taking a partition over processes again at most
    /// this much of its records.
    pub checkpoint_secs: u64,
    /// How this process writes items on the topics: `binary` (events in the event codec: exact
    /// bytes, several times cheaper per hop) or `json` (readable by any Kafka consumer; raw
    /// bytes that are not UTF-8 travel replaced). Every process reads both, so a deployment
    /// can switch one process at a time.
    pub wire: crate::cluster::wire::WireFormat,
}

/// [`BusConfig::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process queues.
    Memory,
    /// Kafka.
    Kafka,
}

/// [`BusConfig::role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stage 1 and stage 2.
    All,
    /// Stage 1 only.
    Ingest,
    /// Stage 2 only.
    Correlate,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            queue_capacity: 65_536,
            queue_bytes: 64 * 1024 * 1024,
            spool: true,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 64 << 20,
            spool_fsync_ms: 1000,
            kind: BusKind::Memory,
            role: Role::All,
            kafka: crate::bus::kafka::KafkaConfig {
                brokers: "127.0.0.1:9092".into(),
                ..Default::default()
            },
            topic_prefix: "vigil".into(),
            partitions: 12,
            offense_reorder_ms: 2000,
            checkpoint_secs: 10,
            wire: crate::cluster::wire::WireFormat::Binary,
        }
    }
}

/// Store limits (embedded SQLite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most dead letters kept; the oldest are deleted beyond it and counted.
    pub max_dead_letters: u64,
    /// Most flow records kept (embedded store, `data_dir/flows.db`); the oldest are deleted
    /// beyond it, a block (up to 4,096 records) at a time, and counted.
    pub max_flows: u64,
    /// A source that sends this many probe flows (≤ 2 packets each) within a minute is stored
    /// as one superflow row with counts instead (0 stores every flow as it is).
    pub superflow_min_flows: usize,
    /// Embedded store: keep every normalized log event searchable (`GET /api/v1/events`) in
    /// `data_dir/events.db`, written by its own thread. Scaled out, ClickHouse keeps them.
    pub search_events: bool,
    /// Most events kept in `events.db`; the oldest are deleted beyond it, a block (up to
    /// 4,096 events) at a time, and counted.
    pub max_events: u64,
    /// Most events waiting for the `events.db` writer; beyond it a batch is not kept for
    /// search (counted in `vigil_store_events_dropped_total`; offenses are unaffected; at least
    /// 32,768, the largest batch, or full batches would never be kept when shedding: refused
    /// at start), or, with `event_overflow = "wait"`, the engine waits for room.
    pub event_queue: usize,
    /// `shed` (default): under overload the searchable copy gives way (counted), offenses
    /// never wait. `wait`: every event is kept searchable; the engine, and the senders behind
    /// the spool, slow to the writer's pace.
    pub event_overflow: crate::store::writer::Overflow,
    /// Most flow rows waiting for the `flows.db` writer; beyond it a batch is not kept for
    /// search (counted in `vigil_store_flows_dropped_total`; detection is unaffected; at least
    /// 32,768, the largest batch: refused at start).
    pub flow_queue: usize,
    /// Closed offenses (with their events, rules and notes) are deleted this many days after
    /// they were closed (checked hourly, counted). Open offenses are never deleted.
    pub closed_offense_retention_days: u64,
    /// `sqlite` (embedded, `data_dir/vigil.db`) or `clickhouse` (scaled out; the API reads it).
    pub kind: StoreKind,
    /// ClickHouse connection, batching and retention.
    pub clickhouse: crate::store::clickhouse::ClickHouseConfig,
}

/// [`StoreConfig::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in the data folder.
    Sqlite,
    /// ClickHouse.
    Clickhouse,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_dead_letters: 100_000,
            max_flows: 1_000_000,
            superflow_min_flows: 16,
            search_events: true,
            max_events: 2_000_000,
            event_queue: 200_000,
            event_overflow: crate::store::writer::Overflow::Shed,
            flow_queue: 200_000,
            closed_offense_retention_days: 90,
            kind: StoreKind::Sqlite,
            clickhouse: crate::store::clickhouse::ClickHouseConfig::default(),
        }
    }
}

/// HTTP API and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address; empty string disables the API.
    pub listen: String,
    /// Bearer token for `/api` and `/metrics`. When unset (and `VIGIL_API_TOKEN` is unset), a
    /// token is generated on first start, stored hashed, and printed once.
    pub token: Option<String>,
    /// Largest page a list call returns.
    pub max_page_size: usize,
    /// Largest body `POST /api/v1/ingest` accepts, in bytes (larger ones get 413).
    pub max_ingest_bytes: usize,
    /// More tokens, each with a role (`[[api.tokens]]`); `api.token` is the admin's.
    pub tokens: Vec<crate::api::roles::TokenConfig>,
    /// Serve the API and console over TLS with this certificate chain (PEM)...
    pub tls_cert: Option<PathBuf>,
    /// ...and this private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            token: None,
            tokens: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_page_size: 500,
            max_ingest_bytes: 1024 * 1024,
        }
    }
}

/// A configuration problem, with the file named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or has an unknown key (the message names it and the line).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The parser's message, with the key and location.
        message: String,
    },
}

impl Config {
    /// Loads a config file; `None` gives the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (key, addr) in [
            ("syslog.udp_listen", &self.syslog.udp_listen),
            ("syslog.tcp_listen", &self.syslog.tcp_listen),
            ("syslog.tls_listen", &self.syslog.tls_listen),
            ("api.listen", &self.api.listen),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(format!("{key}: {addr:?} is not an ip:port address"));
            }
        }
        if !self.syslog.tls_listen.is_empty()
            && (self.syslog.tls_cert.is_none() || self.syslog.tls_key.is_none())
        {
            return Err("syslog.tls_listen: needs syslog.tls_cert and syslog.tls_key".into());
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err("api.tls_cert and api.tls_key: set both (TLS) or neither".into());
        }
        if self.syslog.max_message_bytes < 64 {
            return Err("syslog.max_message_bytes: must be at least 64".into());
        }
        if self.syslog.max_message_bytes > 16 << 20 {
            // A stored event holds its raw bytes and its message: well under the 64 MiB a
            // searchable block may hold.
            return Err("syslog.max_message_bytes: must be at most 16 MiB".into());
        }
        if self.syslog.max_connections == 0 {
            return Err("syslog.max_connections: must be at least 1".into());
        }
        if self.bus.spool && self.bus.spool_segment_bytes < 4096 {
            return Err("bus.spool_segment_bytes: must be at least 4096".into());
        }
        if self.bus.spool && self.bus.spool_max_bytes < 2 * self.bus.spool_segment_bytes {
            return Err(
                "bus.spool_max_bytes: must be at least twice bus.spool_segment_bytes".into(),
            );
        }
        if self.bus.queue_capacity == 0 {
            return Err("bus.queue_capacity: must be at least 1".into());
        }
        if self.bus.queue_bytes < self.syslog.max_message_bytes {
            return Err("bus.queue_bytes: must be at least syslog.max_message_bytes".into());
        }
        if self.api.max_page_size == 0 {
            return Err("api.max_page_size: must be at least 1".into());
        }
        // A searchable-copy queue smaller than a batch would shed every full batch.
        for (key, limit) in [
            ("store.event_queue", self.store.event_queue),
            ("store.flow_queue", self.store.flow_queue),
        ] {
            if limit < crate::app::BATCH_RECORDS {
                return Err(format!(
                    "{key}: must be at least {} (the largest batch; a smaller queue would never \
                     keep a full batch searchable)",
                    crate::app::BATCH_RECORDS
                ));
            }
        }
        crate::response::BlockGuard::new(&self.response)?;
        for t in &self.api.tokens {
            t.validate()?;
        }
        if self
            .response
            .blocklist_token
            .as_deref()
            .is_some_and(|t| t.len() < 16)
        {
            return Err("response.blocklist_token: use at least 16 characters".into());
        }
        parse_utc_offset(&self.parse.default_utc_offset)
            .map_err(|e| format!("parse.default_utc_offset: {e}"))?;
        if self.bus.kind == BusKind::Kafka && self.store.kind != StoreKind::Clickhouse {
            return Err(
                "bus.kind = \"kafka\" needs store.kind = \"clickhouse\": offenses and events must be \
                 shared by every node"
                    .into(),
            );
        }
        if self.bus.partitions < 1 {
            return Err("bus.partitions: must be at least 1".into());
        }
        if !crate::store::clickhouse::is_valid_identifier(&self.store.clickhouse.database) {
            return Err("store.clickhouse.database: letters, digits and _ only".into());
        }
        self.context.validate()
    }
}

impl ContextConfig {
    /// Zone networks parse, criticality is 0-10, set kinds are known, names are unique.
    pub fn validate(&self) -> Result<(), String> {
        for z in &self.networks {
            if z.criticality > 10 {
                return Err(format!(
                    "context.networks {}: criticality must be 0-10",
                    z.name
                ));
            }
            for c in &z.cidrs {
                vigil_correlate::net::Cidr::parse(c)
                    .map_err(|e| format!("context.networks {}: {e}", z.name))?;
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.reference_sets {
            if !matches!(s.kind.as_str(), "ip" | "string") {
                return Err(format!(
                    "context.reference_sets {}: kind must be \"ip\" or \"string\", not {:?}",
                    s.name, s.kind
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!(
                    "context.reference_sets: {} is declared twice",
                    s.name
                ));
            }
            if let Some(url) = &s.url {
                if !url.starts_with("http://") {
                    return Err(format!(
                        "context.reference_sets {}: url must be http:// (https is not supported yet)",
                        s.name
                    ));
                }
            }
        }
        for m in &self.reference_maps {
            if !names.insert(m.name.as_str()) {
                return Err(format!(
                    "context.reference_maps: {} is declared twice",
                    m.name
                ));
            }
        }
        Ok(())
    }
}

/// Parses `+02:00`, `-0500`, `Z` or `UTC` into a fixed offset.
pub fn parse_utc_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") || t.is_empty() {
        return chrono::FixedOffset::east_opt(0).ok_or_else(|| "invalid offset".to_string());
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(format!("{text:?} is not an offset like +02:00")),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{text:?} is not an offset like +02:00"));
    }
    let hours: i32 = digits[..2].parse().map_err(|_| "bad hours".to_string())?;
    let minutes: i32 = digits[2..].parse().map_err(|_| "bad minutes".to_string())?;
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded_mode_on_loopback() {
        let c = Config::default();
        assert_eq!(c.syslog.udp_listen, "127.0.0.1:5514");
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn unknown_key_is_rejected_with_the_key_named() {
        let err = Config::from_toml("[syslog]\nmax_mesage_bytes = 10\n").err();
        let err = err.unwrap_or_default();
        assert!(err.contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn a_searchable_copy_queue_below_one_batch_is_rejected() {
        for key in ["event_queue", "flow_queue"] {
            let err = Config::from_toml(&format!("[store]\n{key} = 32767\n")).err();
            assert!(err.unwrap_or_default().contains(&format!("store.{key}")));
            let ok = Config::from_toml(&format!("[store]\n{key} = 32768\n"));
            assert!(ok.is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn bad_listen_address_is_rejected() {
        let err = Config::from_toml("[api]\nlisten = \"localhost\"\n").err();
        assert!(err.unwrap_or_default().contains("api.listen"));
    }

    #[test]
    fn the_annotated_example_file_is_exactly_the_defaults() {
        let example = Config::from_toml(include_str!("../vigil.example.toml"));
        assert_eq!(example, Ok(Config::default()));
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(
            parse_utc_offset("+02:00").map(|o| o.local_minus_utc()),
            Ok(7200)
        );
        assert_eq!(
            parse_utc_offset("-0530").map(|o| o.local_minus_utc()),
            Ok(-19800)
        );
        assert!(parse_utc_offset("2").is_err());
    }
}
