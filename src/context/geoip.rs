//! GeoIP enrichment: country, city, continent, coordinates and autonomous system of an address,
//! read from MaxMind DB files (GeoIP2/GeoLite2 City or Country, GeoLite2 ASN or GeoIP2 ISP) with
//! the `maxminddb` crate.
//!
//! # Memory-mapped databases
//! The files are memory-mapped rather than read into the heap: a production City database is tens
//! of megabytes, the kernel shares its pages between processes and keeps only the parts lookups
//! touch, and opening is instant. The price is a contract with the operator: **a database must be
//! replaced by writing a new file and renaming it over the old path** (what `geoipupdate` does),
//! never rewritten or truncated in place, because the old reader keeps its mapping of the old file
//! until it is swapped out.
//!
//! # Reloading
//! [`GeoIp::reload_if_changed`] compares each file's modification time and size (and inode, on
//! Unix) with those of the file in use. A changed file is opened and validated as at start-up
//! (the open checks the metadata and the search-tree layout, then the search-tree walk for a few
//! public addresses must not fail) before it replaces the old reader, which also clears the cache.
//! A file that fails validation is rejected: the old reader stays in use, and that same file (same
//! time, size and inode) is not tried again until it changes. Each database is handled on its own.
//! Records are not decoded during validation: a corrupt record fails only the lookups reaching it.
//!
//! # Lookups and cache
//! [`GeoIp::lookup`] never fails: a record that cannot be decoded (corrupt file) is counted in
//! [`GeoStats::errors`] and leaves its fields empty, and the other database still answers.
//! Private, loopback, link-local and unspecified addresses are never in GeoIP, so they are not
//! looked up nor cached. Results are cached per address in two generations of
//! `cache_entries / 2` addresses (at least one) each: when the young generation is full the old
//! one is dropped (counted in [`GeoStats::cache_evictions`]) and the young one takes its place,
//! so the cache never holds more than `max(cache_entries, 2)` addresses and an address used again
//! survives one more generation. Results with a lookup error are not cached, so each affected
//! lookup is counted.

use std::collections::HashMap;
use std::fmt;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use maxminddb::{LookupResult, MaxMindDbError, Mmap, Reader};
use serde::Deserialize;

/// Where the databases are and how lookups are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// GeoIP2/GeoLite2 City or Country database (None: no geo fields).
    pub city: Option<PathBuf>,
    /// GeoLite2 ASN (or GeoIP2 ISP) database (None: no AS fields).
    pub asn: Option<PathBuf>,
    /// Lookups remembered (per address); 0 disables the cache.
    pub cache_entries: usize,
}

/// What GeoIP knows of one address (English names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 code of the country where the address is located (`country.iso_code`).
    pub country_iso_code: Option<vigil_parsers::Text>,
    /// English name of that country (`country.names.en`).
    pub country_name: Option<vigil_parsers::Text>,
    /// English name of the city (`city.names.en`; never set by a Country database).
    pub city_name: Option<vigil_parsers::Text>,
    /// Two-letter continent code, e.g. `EU` (`continent.code`).
    pub continent_code: Option<vigil_parsers::Text>,
    /// Approximate latitude in degrees (`location.latitude`).
    pub latitude: Option<f64>,
    /// Approximate longitude in degrees (`location.longitude`).
    pub longitude: Option<f64>,
    /// Autonomous system number (`autonomous_system_number`).
    pub as_number: Option<u32>,
    /// Organization of that autonomous system (`autonomous_system_organization`).
    pub as_organization: Option<vigil_parsers::Text>,
}

/// A database that could not be (re)loaded, with the file named.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be inspected (missing, no permission).
    #[error("GeoIP database {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file could not be opened as a MaxMind DB (unreadable, bad metadata or search tree).
    #[error("GeoIP database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The reader's reason.
        source: MaxMindDbError,
    },
    /// The file opened but a probe lookup failed: its search tree is corrupt.
    #[error("GeoIP database {}: probe lookup of {ip} failed: {source}", path.display())]
    Probe {
        /// The file.
        path: PathBuf,
        /// The probed address.
        ip: IpAddr,
        /// The reader's reason.
        source: MaxMindDbError,
    },
}

/// Counters of a [`GeoIp`], for metrics (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeoStats {
    /// Calls to [`GeoIp::lookup`].
    pub lookups: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Cached addresses dropped to keep the cache bounded.
    pub cache_evictions: u64,
    /// Database lookups or record decodes that failed (corrupt database).
    pub errors: u64,
    /// Databases swapped for a changed file.
    pub reloads: u64,
    /// Changed files rejected (unreadable or failing validation).
    pub rejected_reloads: u64,
}

/// GeoIP enrichment over memory-mapped databases, with a bounded per-address cache.
pub struct GeoIp {
    city: Option<Database>,
    asn: Option<Database>,
    cache: Cache,
    /// Shared answer for addresses GeoIP knows nothing of.
    empty: Arc<GeoInfo>,
    stats: GeoStats,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("city", &self.city.as_ref().map(|db| &db.path))
            .field("asn", &self.asn.as_ref().map(|db| &db.path))
            .field("cached", &self.cache.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GeoIp {
    /// Opens the configured databases; a database that cannot be opened or fails validation is
    /// an error naming the file.
    pub fn open(cfg: &GeoConfig) -> Result<GeoIp, GeoError> {
        let open = |path: &Option<PathBuf>, kind| {
            path.as_deref().map(|p| Database::open(p, kind)).transpose()
        };
        Ok(GeoIp {
            city: open(&cfg.city, Kind::City)?,
            asn: open(&cfg.asn, Kind::Asn)?,
            cache: Cache::new(cfg.cache_entries),
            empty: Arc::new(GeoInfo::default()),
            stats: GeoStats::default(),
        })
    }

    /// What the databases say of `ip` (cached). Not found → `GeoInfo::default()`, fields all
    /// None; a record that fails to decode counts a lookup error and returns what the other
    /// database gave (never panics).
    pub fn lookup(&mut self, ip: IpAddr) -> Arc<GeoInfo> {
        self.stats.lookups += 1;
        if !is_public(ip) {
            return Arc::clone(&self.empty);
        }
        if let Some(hit) = self.cache.get(ip) {
            self.stats.cache_hits += 1;
            return hit;
        }
        let mut info = GeoInfo::default();
        let mut clean = true;
        for db in [&self.city, &self.asn].into_iter().flatten() {
            if let Err(error) = db.fill(ip, &mut info) {
                tracing::debug!(%ip, file = %db.path.display(), %error, "GeoIP lookup failed");
                self.stats.errors += 1;
                clean = false;
            }
        }
        let info = if info == GeoInfo::default() {
            Arc::clone(&self.empty)
        } else {
            Arc::new(info)
        };
        if clean {
            self.cache.insert(ip, Arc::clone(&info));
        }
        info
    }

    /// Checks each file's modification time and size; if one changed, opens the new file,
    /// validates it (open + a probe lookup that must not error), and swaps it in atomically
    /// (clearing the cache). A broken new file is rejected: Err names the file and reason, the
    /// old reader stays in use, and the same broken file is not retried until it changes again.
    /// Ok(true) when something was swapped.
    ///
    /// Both databases are checked even when the first fails; the first error is returned, and
    /// a database swapped meanwhile stays swapped (see [`GeoStats::reloads`]).
    pub fn reload_if_changed(&mut self) -> Result<bool, GeoError> {
        let mut swapped = false;
        let mut first_error = None;
        for db in [&mut self.city, &mut self.asn].into_iter().flatten() {
            match db.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(file = %db.path.display(), "GeoIP database reloaded");
                    self.stats.reloads += 1;
                    swapped = true;
                }
                Err(error) => {
                    self.stats.rejected_reloads += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        if swapped {
            self.cache.clear();
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(swapped),
        }
    }

    /// Counters for metrics: lookups, cache hits, cache evictions, decode/lookup errors,
    /// reloads, rejected reloads.
    pub fn stats(&self) -> GeoStats {
        GeoStats {
            // Counted by the cache itself, which also evicts on promotion in `Cache::get`.
            cache_evictions: self.cache.evicted,
            ..self.stats
        }
    }
}

/// Whether an address can be in GeoIP at all (not private, loopback, link-local, unspecified),
/// looking through IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
fn is_public(ip: IpAddr) -> bool {
    fn v4(ip: Ipv4Addr) -> bool {
        !(ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_unspecified())
    }
    fn v6(ip: Ipv6Addr) -> bool {
        match ip.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => {
                !(ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_unique_local()
                    || ip.is_unicast_link_local())
            }
        }
    }
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => v6(ip),
    }
}

/// Which record schema a database is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// City or Country: `country`, `city`, `continent`, `location`.
    City,
    /// ASN or ISP: `autonomous_system_number`, `autonomous_system_organization`.
    Asn,
}

/// Addresses whose search-tree lookup must succeed before a database is used.
const PROBES: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
];

/// What identifies the version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Result<FileStamp, GeoError> {
        let meta = std::fs::metadata(path).map_err(|source| GeoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

/// One configured database file and the reader of the version in use.
struct Database {
    path: PathBuf,
    kind: Kind,
    reader: Reader<Mmap>,
    /// The file version `reader` maps.
    loaded: FileStamp,
    /// The last file version rejected, not tried again.
    rejected: Option<FileStamp>,
}

impl Database {
    fn open(path: &Path, kind: Kind) -> Result<Database, GeoError> {
        let loaded = FileStamp::of(path)?;
        Ok(Database {
            path: path.to_path_buf(),
            kind,
            reader: open_validated(path)?,
            loaded,
            rejected: None,
        })
    }

    /// Swaps in the file at `path` if it changed and is valid; Ok(true) when swapped.
    fn reload_if_changed(&mut self) -> Result<bool, GeoError> {
        // The stamp is taken before the file is opened: if it is replaced in between, the next
        // check sees a newer stamp and opens it again, which is harmless.
        let stamp = FileStamp::of(&self.path)?;
        if stamp == self.loaded || Some(stamp) == self.rejected {
            return Ok(false);
        }
        match open_validated(&self.path) {
            Ok(reader) => {
                self.reader = reader;
                self.loaded = stamp;
                self.rejected = None;
                Ok(true)
            }
            Err(error) => {
                self.rejected = Some(stamp);
                Err(error)
            }
        }
    }

    /// Adds what this database says of `ip` to `info`.
    fn fill(&self, ip: IpAddr, info: &mut GeoInfo) -> Result<(), MaxMindDbError> {
        match self.kind {
            Kind::City => {
                if let Some(record) = decode::<CityRecord>(&self.reader, ip)? {
                    record.fill(info);
                }
            }
            Kind::Asn => {
                if let Some(record) = decode::<AsnRecord>(&self.reader, ip)? {
                    record.fill(info);
                }
            }
        }
        Ok(())
    }
}

/// Maps `path` and checks it: metadata and search-tree layout (by the open), then the probe
/// lookups. Records are not decoded here: a corrupt record only fails the lookups that reach it.
fn open_validated(path: &Path) -> Result<Reader<Mmap>, GeoError> {
    // SAFETY: the mapping is only undefined behaviour if the file is modified or truncated while
    // mapped. Databases are replaced by renaming a new file over the path (module documentation),
    // which leaves the mapped file untouched.
    let reader = unsafe { Reader::open_mmap(path) }.map_err(|source| GeoError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    for ip in PROBES {
        search(&reader, ip).map_err(|source| GeoError::Probe {
            path: path.to_path_buf(),
            ip,
            source,
        })?;
    }
    Ok(reader)
}

/// Walks the search tree for `ip`; None for an IPv6 address that is not IPv4-mapped, in an
/// IPv4-only database (which would be an error).
fn search(
    reader: &Reader<Mmap>,
    ip: IpAddr,
) -> Result<Option<LookupResult<'_, Mmap>>, MaxMindDbError> {
    let ip = match ip {
        IpAddr::V6(v6) if reader.metadata().ip_version == 4 => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return Ok(None),
        },
        ip => ip,
    };
    reader.lookup(ip).map(Some)
}

/// The record of `ip`, or None when the database has none.
fn decode<'a, T: Deserialize<'a>>(
    reader: &'a Reader<Mmap>,
    ip: IpAddr,
) -> Result<Option<T>, MaxMindDbError> {
    match search(reader, ip)? {
        Some(found) => found.decode(),
        None => Ok(None),
    }
}

/// The fields read from a City or Country record; the others are skipped.
#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Place<'a>>,
    #[serde(borrow)]
    city: Option<Place<'a>>,
    #[serde(borrow)]
    continent: Option<Continent<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Place<'a> {
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Continent<'a> {
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl CityRecord<'_> {
    fn fill(self, info: &mut GeoInfo) {
        let english = |place: &Option<Place<'_>>| {
            place
                .as_ref()
                .and_then(|p| p.names.as_ref())
                .and_then(|n| n.en)
                .map(str::to_owned)
        };
        info.country_name = english(&self.country).map(Into::into);
        info.city_name = english(&self.city).map(Into::into);
        info.country_iso_code = self.country.and_then(|c| c.iso_code).map(Into::into);
        info.continent_code = self.continent.and_then(|c| c.code).map(Into::into);
        info.latitude = self.location.as_ref().and_then(|l| l.latitude);
        info.longitude = self.location.and_then(|l| l.longitude);
    }
}

/// The fields read from an ASN or ISP record.
#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

impl AsnRecord<'_> {
    fn fill(self, info: &mut GeoInfo) {
        info.as_number = self.autonomous_system_number;
        info.as_organization = self.autonomous_system_organization.map(Into::into);
    }
}

/// A bounded per-address cache of two generations (see the module documentation).
struct Cache {
    /// Addresses per generation; 0 disables the cache.
    generation: usize,
    young: HashMap<IpAddr, Arc<GeoInfo>>,
    old: HashMap<IpAddr, Arc<GeoInfo>>,
    /// Entries dropped by generation turnover.
    evicted: u64,
}

impl Cache {
    fn new(entries: usize) -> Cache {
        Cache {
            generation: if entries == 0 {
                0
            } else {
                (entries / 2).max(1)
            },
            young: HashMap::new(),
            old: HashMap::new(),
            evicted: 0,
        }
    }

    /// The cached answer; an old-generation entry moves to the young one.
    fn get(&mut self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        if let Some(info) = self.young.get(&ip) {
            return Some(Arc::clone(info));
        }
        let info = self.old.remove(&ip)?;
        self.insert(ip, Arc::clone(&info));
        Some(info)
    }

    fn insert(&mut self, ip: IpAddr, info: Arc<GeoInfo>) {
        if self.generation == 0 {
            return;
        }
        if self.young.len() >= self.generation {
            // The old generation is dropped, the young one ages; the map's allocation is reused.
            self.evicted += self.old.len() as u64;
            mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
        self.young.insert(ip, info);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/maxmind")
            .join(relative)
    }

    fn json(relative: &str) -> Value {
        let path = fixture(relative);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn geo(city: Option<&str>, asn: Option<&str>, cache_entries: usize) -> GeoIp {
        let cfg = GeoConfig {
            city: city.map(fixture),
            asn: asn.map(fixture),
            cache_entries,
        };
        GeoIp::open(&cfg).unwrap_or_else(|e| panic!("open {cfg:?}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|e| panic!("bad address {text}: {e}"))
    }

    /// First and last address of a CIDR such as `1.0.0.0/24`, `2001:218::/32` or `::1.2.3.0/120`.
    fn bounds(cidr: &str) -> (IpAddr, IpAddr) {
        let (addr, len) = cidr
            .split_once('/')
            .unwrap_or_else(|| panic!("not a CIDR: {cidr}"));
        let len: u32 = len
            .parse()
            .unwrap_or_else(|e| panic!("bad prefix in {cidr}: {e}"));
        match ip(addr) {
            IpAddr::V4(a) => {
                assert!(len <= 32, "{cidr}");
                let host = u32::MAX.checked_shr(len).unwrap_or(0);
                let first = u32::from(a) & !host;
                (IpAddr::V4(first.into()), IpAddr::V4((first | host).into()))
            }
            IpAddr::V6(a) => {
                assert!(len <= 128, "{cidr}");
                let host = u128::MAX.checked_shr(len).unwrap_or(0);
                let first = u128::from(a) & !host;
                (IpAddr::V6(first.into()), IpAddr::V6((first | host).into()))
            }
        }
    }

    #[test]
    fn cidr_bounds_helper() {
        assert_eq!(bounds("1.0.0.0/24"), (ip("1.0.0.0"), ip("1.0.0.255")));
        assert_eq!(
            bounds("1.128.0.0/11"),
            (ip("1.128.0.0"), ip("1.159.255.255"))
        );
        assert_eq!(
            bounds("81.2.69.160/32"),
            (ip("81.2.69.160"), ip("81.2.69.160"))
        );
        assert_eq!(bounds("0.0.0.0/0"), (ip("0.0.0.0"), ip("255.255.255.255")));
        assert_eq!(
            bounds("2001:218::/32"),
            (
                ip("2001:218::"),
                ip("2001:218:ffff:ffff:ffff:ffff:ffff:ffff")
            )
        );
        assert_eq!(
            bounds("::214.0.1.0/120"),
            (ip("::214.0.1.0"), ip("::214.0.1.255"))
        );
        assert_eq!(
            bounds("::/0"),
            (ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
    }

    /// The GeoInfo a source-data or expected-lookups record stands for.
    fn expected(record: &Value) -> GeoInfo {
        let text = |pointer: &str| {
            record
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        GeoInfo {
            country_iso_code: text("/country/iso_code").map(Into::into),
            country_name: text("/country/names/en").map(Into::into),
            city_name: text("/city/names/en").map(Into::into),
            continent_code: text("/continent/code").map(Into::into),
            latitude: record.pointer("/location/latitude").and_then(Value::as_f64),
            longitude: record
                .pointer("/location/longitude")
                .and_then(Value::as_f64),
            as_number: record
                .pointer("/autonomous_system_number")
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or_else(|e| panic!("AS number {n}: {e}"))),
            as_organization: text("/autonomous_system_organization").map(Into::into),
        }
    }

    /// Looks up the first and last address of every network of a source-data file in `geo` and
    /// compares with the record; returns the number of networks and of non-empty answers.
    fn check_source_data(geo: &mut GeoIp, relative: &str) -> (usize, usize) {
        let entries = json(relative);
        let entries = entries
            .as_array()
            .unwrap_or_else(|| panic!("{relative}: not an array"));
        let mut answered = 0;
        for entry in entries {
            let object = entry
                .as_object()
                .unwrap_or_else(|| panic!("{relative}: entry {entry} is not an object"));
            assert_eq!(object.len(), 1, "{relative}: {entry}");
            for (cidr, record) in object {
                let want = expected(record);
                let (first, last) = bounds(cidr);
                for addr in [first, last] {
                    let got = geo.lookup(addr);
                    assert_eq!(*got, want, "{relative}: {cidr}: lookup of {addr}");
                    if *got != GeoInfo::default() {
                        answered += 1;
                    }
                }
            }
        }
        (entries.len(), answered)
    }

    #[test]
    fn city_source_data_every_network_first_and_last_address() {
        let mut g = geo(Some("GeoIP2-City-Test.mmdb"), None, 0);
        let (networks, answered) = check_source_data(&mut g, "source-data/GeoIP2-City-Test.json");
        assert_eq!(networks, 251);
        // Every record has a continent or a location except one: answers are not empty.
        assert!(answered >= 2 * 250, "only {answered} non-empty answers");
        let stats = g.stats();
        assert_eq!(stats.lookups, 2 * 251);
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.cache_hits, 0, "cache disabled");
    }

    #[test]
    fn asn_source_data_every_network_first_and_last_address() {
        let mut g = geo(None, Some("GeoLite2-ASN-Test.mmdb"), 0);
        let (networks, answered) = check_source_data(&mut g, "source-data/GeoLite2-ASN-Test.json");
        assert_eq!(networks, 720);
        assert_eq!(answered, 2 * 720, "every ASN record has a number");
        assert_eq!(g.stats().errors, 0);
    }

    #[test]
    fn expected_lookups_of_city_asn_and_country_databases() {
        let all = json("expected-lookups.json");
        let mut checked = 0;
        for (file, count) in [
            ("GeoIP2-City-Test.mmdb", 14),
            ("GeoLite2-ASN-Test.mmdb", 7),
            ("GeoIP2-Country-Test.mmdb", 5),
        ] {
            let mut g = match file {
                "GeoLite2-ASN-Test.mmdb" => geo(None, Some(file), 0),
                _ => geo(Some(file), None, 0),
            };
            let lookups = all
                .pointer(&format!("/lookups/{file}/lookups"))
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("no lookups for {file}"));
            assert_eq!(lookups.len(), count, "{file}");
            for case in lookups {
                let addr = ip(case["ip"].as_str().unwrap_or_else(|| panic!("{case}")));
                let want = if case["found"] == Value::Bool(true) {
                    expected(&case["record"])
                } else {
                    GeoInfo::default()
                };
                assert_eq!(*g.lookup(addr), want, "{file}: {addr}");
                checked += 1;
            }
            assert_eq!(g.stats().errors, 0, "{file}");
        }
        assert_eq!(checked, 26);
    }

    #[test]
    fn known_facts_with_both_databases() {
        let mut g = geo(
            Some("GeoIP2-City-Test.mmdb"),
            Some("GeoLite2-ASN-Test.mmdb"),
            100,
        );
        for addr in ["81.2.69.160", "::ffff:81.2.69.160", "2002:5102:45a0::"] {
            let info = g.lookup(ip(addr));
            assert_eq!(info.city_name.as_deref(), Some("London"), "{addr}");
            assert_eq!(info.country_iso_code.as_deref(), Some("GB"), "{addr}");
            assert_eq!(
                info.country_name.as_deref(),
                Some("United Kingdom"),
                "{addr}"
            );
            assert_eq!(info.continent_code.as_deref(), Some("EU"), "{addr}");
            assert_eq!(
                (info.latitude, info.longitude),
                (Some(51.5142), Some(-0.0931)),
                "{addr}"
            );
        }
        let telstra = g.lookup(ip("1.128.0.0"));
        assert_eq!(telstra.as_number, Some(1221));
        assert_eq!(telstra.as_organization.as_deref(), Some("Telstra Pty Ltd"));
        // The City database knows 2001:218::/32 (JP) without a city.
        let japan = g.lookup(ip("2001:218::1"));
        assert_eq!(japan.country_iso_code.as_deref(), Some("JP"));
        assert_eq!(japan.city_name, None);
        for nothing in [
            "1.1.1.1",
            "10.0.0.1",
            "::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert_eq!(*g.lookup(ip(nothing)), GeoInfo::default(), "{nothing}");
        }
        // Private, loopback and link-local addresses are not cached; 1.1.1.1 (a miss) is.
        assert_eq!(g.cache.len(), 6);
        assert_eq!(g.stats().lookups, 10);
        assert_eq!(g.stats().errors, 0);
    }

    /// One file of `broken/expected-errors.json`.
    struct BrokenFile {
        name: String,
        opens: bool,
        /// Address and expected outcome (`ok`, `not_found`, `decode_error`, `lookup_error`).
        lookups: Vec<(IpAddr, String)>,
    }

    fn broken_files() -> Vec<BrokenFile> {
        let all = json("broken/expected-errors.json");
        let files = all["files"]
            .as_array()
            .unwrap_or_else(|| panic!("expected-errors.json: no files"));
        files
            .iter()
            .map(|f| {
                let name = f["file"].as_str().unwrap_or_else(|| panic!("{f}"));
                let opens = match f["open"].as_str() {
                    Some("ok") => true,
                    Some("error") => false,
                    other => panic!("{name}: open {other:?}"),
                };
                let lookups = f["lookups"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let lookups = lookups
                    .iter()
                    .map(|l| {
                        let addr = ip(l["ip"].as_str().unwrap_or_else(|| panic!("{l}")));
                        let result = l["result"].as_str().unwrap_or_else(|| panic!("{l}"));
                        (addr, result.to_owned())
                    })
                    .collect();
                BrokenFile {
                    name: name.to_owned(),
                    opens,
                    lookups,
                }
            })
            .collect()
    }

    #[test]
    fn broken_databases_behave_as_expected_errors_json_says() {
        let files = broken_files();
        assert_eq!(files.len(), 4);
        let mut outcomes = 0;
        for BrokenFile {
            name,
            opens,
            lookups,
        } in files
        {
            let relative = format!("broken/{name}");
            let cfg = GeoConfig {
                city: Some(fixture(&relative)),
                asn: None,
                cache_entries: 10,
            };
            let mut g = match GeoIp::open(&cfg) {
                Ok(g) => {
                    assert!(opens, "{name} must not open");
                    g
                }
                Err(e) => {
                    assert!(!opens, "{name} must open: {e}");
                    assert!(matches!(e, GeoError::Open { .. }), "{name}: {e:?}");
                    assert!(e.to_string().contains(&name), "error names the file: {e}");
                    continue;
                }
            };
            for (addr, result) in lookups {
                let before = g.stats().errors;
                // Twice: a failed lookup is not cached, so it fails (and is counted) again.
                for _ in 0..2 {
                    let info = g.lookup(addr);
                    assert_eq!(*info, GeoInfo::default(), "{name}: {addr}");
                }
                let failures = g.stats().errors - before;
                match result.as_str() {
                    "ok" | "not_found" => assert_eq!(failures, 0, "{name}: {addr} {result}"),
                    "decode_error" | "lookup_error" => {
                        assert_eq!(failures, 2, "{name}: {addr} {result}")
                    }
                    other => panic!("{name}: {addr}: unknown result {other}"),
                }
                outcomes += 1;
            }
        }
        assert_eq!(outcomes, 3 + 4 + 2);
    }

    #[test]
    fn deep_nesting_is_a_depth_error_not_a_stack_overflow() {
        let path = fixture("broken/libmaxminddb-deep-nesting.mmdb");
        let reader = open_validated(&path).unwrap_or_else(|e| panic!("{e}"));
        for addr in ["1.1.1.1", "128.0.0.1"] {
            match decode::<CityRecord>(&reader, ip(addr)) {
                Err(e) => assert!(
                    e.to_string().contains("maximum data structure depth"),
                    "{e}"
                ),
                Ok(_) => panic!("{addr}: 600 nested maps decoded"),
            }
        }
    }

    #[test]
    fn decode_error_in_one_database_keeps_the_other_answer() {
        let mut g = geo(
            Some("broken/GeoIP2-City-Test-Broken-Double-Format.mmdb"),
            Some("GeoLite2-ASN-Test.mmdb"),
            10,
        );
        // 81.2.69.160 has a City record that fails to decode; ASN answers for 1.128.0.0 too.
        let telstra = g.lookup(ip("1.128.0.0"));
        assert_eq!(telstra.as_number, Some(1221));
        let london = g.lookup(ip("81.2.69.160"));
        assert_eq!(london.city_name, None);
        assert_eq!(g.stats().errors, 1);
    }

    #[test]
    fn open_errors_name_the_file() {
        let missing = fixture("no-such.mmdb");
        let cfg = GeoConfig {
            city: None,
            asn: Some(missing.clone()),
            cache_entries: 0,
        };
        let err = GeoIp::open(&cfg)
            .err()
            .unwrap_or_else(|| panic!("opened a missing file"));
        assert!(
            matches!(err, GeoError::Io { ref path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such.mmdb"), "{err}");

        // Not a MaxMind DB at all.
        let not_db = fixture("LICENSE-MIT");
        let cfg = GeoConfig {
            city: Some(not_db),
            asn: None,
            cache_entries: 0,
        };
        let err = GeoIp::open(&cfg)
            .err()
            .unwrap_or_else(|| panic!("opened LICENSE-MIT"));
        assert!(matches!(err, GeoError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("LICENSE-MIT"), "{err}");
    }

    /// Replaces `path` the way operators deploy: write a temporary file, then rename over it.
    fn deploy(from: &str, path: &Path, mtime: SystemTime) {
        let tmp = path.with_extension("tmp");
        std::fs::copy(fixture(from), &tmp).unwrap_or_else(|e| panic!("copy {from}: {e}"));
        let file = std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
        file.set_modified(mtime)
            .unwrap_or_else(|e| panic!("set mtime: {e}"));
        drop(file);
        std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename: {e}"));
    }

    #[test]
    fn hot_reload_rejects_broken_file_then_swaps_in_valid_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("GeoIP2-City.mmdb");
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let later = |s: u64| t0 + std::time::Duration::from_secs(s);
        deploy("GeoIP2-City-Test.mmdb", &path, t0);
        let cfg = GeoConfig {
            city: Some(path.clone()),
            asn: None,
            cache_entries: 100,
        };
        let mut g = GeoIp::open(&cfg).unwrap_or_else(|e| panic!("open: {e}"));
        let london = ip("81.2.69.160");
        assert_eq!(g.lookup(london).city_name.as_deref(), Some("London"));
        assert!(
            matches!(g.reload_if_changed(), Ok(false)),
            "nothing changed"
        );

        // A broken file is rejected, the old reader keeps answering (cache or not).
        deploy(
            "broken/GeoIP2-City-Test-Invalid-Node-Count.mmdb",
            &path,
            later(60),
        );
        match g.reload_if_changed() {
            Err(e @ GeoError::Open { .. }) => {
                assert!(
                    e.to_string().contains("GeoIP2-City.mmdb"),
                    "names the file: {e}"
                )
            }
            other => panic!("broken file accepted: {other:?}"),
        }
        assert_eq!(g.lookup(london).city_name.as_deref(), Some("London"));
        assert_eq!(
            g.lookup(ip("2.125.160.216")).city_name.as_deref(),
            Some("Boxford")
        );
        // The same broken file is not tried again.
        assert!(matches!(g.reload_if_changed(), Ok(false)));
        assert_eq!(g.stats().rejected_reloads, 1);
        assert_eq!(g.stats().reloads, 0);

        // A valid Country database is swapped in and the cache is cleared.
        deploy("GeoIP2-Country-Test.mmdb", &path, later(120));
        assert!(matches!(g.reload_if_changed(), Ok(true)));
        let info = g.lookup(london);
        assert_eq!(info.country_iso_code.as_deref(), Some("GB"));
        assert_eq!(info.city_name, None, "answered by the Country database");
        assert!(matches!(g.reload_if_changed(), Ok(false)));
        let stats = g.stats();
        assert_eq!((stats.reloads, stats.rejected_reloads), (1, 1));

        // A file that disappears is an error naming it; the reader in use stays.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove: {e}"));
        assert!(matches!(g.reload_if_changed(), Err(GeoError::Io { .. })));
        assert_eq!(g.lookup(london).country_iso_code.as_deref(), Some("GB"));
    }

    #[test]
    fn cache_is_bounded_and_counts_hits_and_evictions() {
        let mut g = geo(
            Some("GeoIP2-City-Test.mmdb"),
            Some("GeoLite2-ASN-Test.mmdb"),
            2,
        );
        let addrs = [
            "81.2.69.160",
            "2.125.160.216",
            "216.160.83.56",
            "89.160.20.112",
            "1.128.0.0",
        ];
        let mut uncached = geo(
            Some("GeoIP2-City-Test.mmdb"),
            Some("GeoLite2-ASN-Test.mmdb"),
            0,
        );
        for round in 0..2 {
            for addr in addrs {
                let want = uncached.lookup(ip(addr));
                assert_ne!(*want, GeoInfo::default(), "{addr}");
                // The second lookup in a row is a hit.
                assert_eq!(g.lookup(ip(addr)), want, "round {round}: {addr}");
                assert_eq!(g.lookup(ip(addr)), want, "round {round}: {addr} again");
                assert!(g.cache.len() <= 2, "cache holds {}", g.cache.len());
            }
        }
        let stats = g.stats();
        assert_eq!(stats.lookups, 20);
        assert_eq!(stats.cache_hits, 10);
        assert!(stats.cache_evictions > 0, "{stats:?}");
        assert_eq!(uncached.stats().cache_hits, 0);
        assert_eq!(uncached.cache.len(), 0);
    }

    #[test]
    fn old_generation_entries_are_kept_when_used_again() {
        let mut cache = Cache::new(4);
        let info = Arc::new(GeoInfo::default());
        let a = ip("1.0.0.1");
        let b = ip("1.0.0.2");
        let c = ip("1.0.0.3");
        cache.insert(a, Arc::clone(&info));
        cache.insert(b, Arc::clone(&info));
        cache.insert(c, Arc::clone(&info)); // a and b age
        assert!(cache.get(a).is_some()); // a moves back to the young generation
        cache.insert(ip("1.0.0.4"), Arc::clone(&info)); // b is dropped
        assert!(cache.get(a).is_some());
        assert!(cache.get(b).is_none());
        assert_eq!(cache.evicted, 1);
        assert!(cache.len() <= 4);
    }

    #[test]
    fn public_address_classification() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
        for public in [
            "1.1.1.1",
            "81.2.69.160",
            "2001:218::1",
            "::ffff:81.2.69.160",
            "2002:5102:45a0::",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
    }
}
