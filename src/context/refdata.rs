//! Reference data (QRadar's "reference sets and maps"): named, live collections rules and
//! analysts consult while events flow.
//!
//! - A **reference set** is either an IP set (addresses and CIDR networks, IPv4 and IPv6) or a
//!   string set (text compared ASCII-case-insensitively). Rules test membership through
//!   [`ReferenceLookup`] (`source.ip|refset: threat_intel`).
//! - A **reference map** maps a text key to a text value (asset owner by address, department by
//!   user name); keys are compared exactly.
//!
//! Entries come from several places, each tagged with a *source*: `"api"` (an analyst),
//! `"rule:<name>"` (a rule action), `"file:<path>"` and `"url:<url>"` (feeds loaded with
//! [`ReferenceData::parse_list`] / [`ReferenceData::parse_map_csv`] and refreshed with
//! [`ReferenceData::replace_source`] / [`ReferenceData::replace_map_source`]). A set value is
//! held by one or more sources, each with its own expiry (a *claim*): a feed refresh withdraws
//! only that feed's claims, so an address an analyst added stays when a feed drops it. A map key
//! is owned by the source that wrote it last.
//!
//! # Concurrency and the hot path
//!
//! [`ReferenceData`] is shared (`Arc`) between the engine thread (lookups), the API (changes)
//! and loaders. Every set and every map has its own `RwLock`, so a change to one never blocks a
//! lookup in another, plus a writer mutex that serialises changes to it (so a long change can do
//! its expensive part while readers still read). The set list is fixed at construction: the id
//! [`ReferenceLookup::set_id`] returns indexes it and stays valid for the life of the object.
//!
//! An IP set keeps exact addresses in a hash map and networks (prefix shorter than the host
//! length) compiled into a [`PrefixSet`] (merged sorted ranges, binary search). A lookup is one
//! read lock, one hash probe and one binary search. The `PrefixSet` is rebuilt once per change
//! that adds or removes a network (once per [`ReferenceData::replace_source`], not per entry).
//!
//! Bulk refreshes ([`ReferenceData::replace_source`], [`ReferenceData::replace_map_source`]) are
//! copy-on-write: the new contents (and networks) are built on a copy while lookups go on, then
//! swapped in under a write lock held only for the swap; a lookup sees the old or the new
//! contents, never a mix. Single changes ([`ReferenceData::add`], [`ReferenceData::remove`])
//! change the set in place under a brief write lock; when they add or remove a network the
//! `PrefixSet` is then rebuilt from a snapshot taken under the read lock and swapped in, so
//! during that window (milliseconds for 600 k networks) a lookup may still answer from the
//! previous networks.
//!
//! # Expiry
//!
//! There is no clock on the hot path: [`ReferenceLookup::contains`] reports every entry still
//! stored, including one whose expiry has just passed. The owner must call
//! [`ReferenceData::expire`] regularly (every second) to drop expired entries. Calls that take a
//! `now` ([`ReferenceData::contains_value`], [`ReferenceData::map_get`]) check expiry exactly.
//! `expire` is cheap when nothing is due (each set and map tracks a lower bound of its next
//! expiry); when something is due it scans that set under its read lock and takes the write
//! lock only to drop what expired.

use std::collections::hash_map::Entry as HashEntry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use vigil_correlate::net::{Cidr, PrefixSet};
use vigil_correlate::reference::ReferenceLookup;
use vigil_parsers::event::FieldValue;

/// Default cap on the number of distinct values in one set (keys in one map); see
/// [`ReferenceData::with_max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 5_000_000;

/// Longest accepted string value, map key or map value, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// Longest excerpt of an offending line kept in a [`BadLine`], in bytes.
const BAD_LINE_EXCERPT: usize = 200;

/// What a reference set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    /// IP addresses and CIDR networks (IPv4 and IPv6).
    Ip,
    /// Text, compared ASCII-case-insensitively.
    String,
}

impl SetKind {
    /// `"ip"` or `"string"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Ip => "ip",
            SetKind::String => "string",
        }
    }
}

/// A reference set to create: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDecl {
    /// The name rules and the API use.
    pub name: String,
    /// What it holds.
    pub kind: SetKind,
}

/// One value of a set as held by one source (a value held by two sources lists twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value in canonical form: `192.0.2.1`, `10.0.0.0/8`, `2001:db8::/32`, or lowercase
    /// text for string sets.
    pub value: String,
    /// When the entry expires; `None` never.
    pub expires: Option<DateTime<Utc>>,
    /// Who added it: `"api"`, `"rule:<name>"`, `"file:<path>"`, `"url:<url>"`.
    pub source: String,
}

/// One key of a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    /// The key (exact, as given).
    pub key: String,
    /// Its value.
    pub value: String,
    /// When the entry expires; `None` never.
    pub expires: Option<DateTime<Utc>>,
    /// Who wrote it last.
    pub source: String,
}

/// A line of a list or CSV file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// The line (trimmed, cut to 200 bytes).
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

/// The result of [`ReferenceData::parse_list`]: the usable values and the refused lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedList {
    /// Values in file order (IP values in canonical form, text as written).
    pub values: Vec<String>,
    /// Lines that were refused; the rest loaded.
    pub bad: Vec<BadLine>,
}

/// What a source refresh changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplaceReport {
    /// Values (keys) the source did not hold before.
    pub added: usize,
    /// Values (keys) the source held and no longer does.
    pub removed: usize,
    /// Values (keys) the source held and still holds (expiry refreshed).
    pub kept: usize,
    /// Maps only: keys the source still holds with a different value.
    pub updated: usize,
    /// Distinct values (keys) in the whole set (map) afterwards.
    pub entries: usize,
}

/// One line of [`ReferenceData::summaries`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetSummary {
    /// Set or map name.
    pub name: String,
    /// `"ip"`, `"string"` or `"map"`.
    pub kind: &'static str,
    /// Distinct values (sets) or keys (maps) stored, whatever their sources.
    pub entries: usize,
}

/// Why a reference-data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// No set by that name.
    #[error("no reference set named {0:?}")]
    UnknownSet(String),
    /// No map by that name.
    #[error("no reference map named {0:?}")]
    UnknownMap(String),
    /// A value (or key, or TTL) that the set or map cannot take.
    #[error("invalid value {value:?} for {set:?}: {reason}")]
    InvalidValue {
        /// Set or map name.
        set: String,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A URL could not be fetched.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A set, map or file would grow past its limit; nothing was changed.
    #[error("{what} would exceed its limit of {limit} {unit}")]
    TooLarge {
        /// What: `reference set "x"`, `reference map "y"`, `file /path`.
        what: String,
        /// The limit.
        limit: usize,
        /// `"entries"` or `"bytes"`.
        unit: &'static str,
    },
}

/// Live reference data, shared (`Arc`) between the engine thread (rule lookups, hot path), the
/// API (changes) and loaders. See the [module documentation](self) for locking and expiry.
pub struct ReferenceData {
    sets: Vec<SetSlot>,
    set_ids: HashMap<String, usize>,
    maps: Vec<MapSlot>,
    map_ids: HashMap<String, usize>,
    max_entries: usize,
}

// ---------------------------------------------------------------------------------------------
// Internal representation
// ---------------------------------------------------------------------------------------------

type SourceId = u32;

/// Source names interned per set or map (there are few: the API, some rules, some feeds).
#[derive(Debug, Clone, Default)]
struct Sources {
    names: Vec<String>,
    ids: HashMap<String, SourceId>,
}

impl Sources {
    fn intern(&mut self, name: &str) -> SourceId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = SourceId::try_from(self.names.len()).unwrap_or(SourceId::MAX);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn find(&self, name: &str) -> Option<SourceId> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: SourceId) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

/// One source's hold on a set value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    source: SourceId,
    expires: Option<DateTime<Utc>>,
}

/// The claims on one value: usually one, so the first is stored inline (no allocation).
#[derive(Debug, Clone)]
struct Claims {
    first: Claim,
    rest: Vec<Claim>,
}

/// What releasing a source's claim did.
#[derive(Debug, PartialEq, Eq)]
enum Release {
    NotHeld,
    Held,
    Emptied,
}

impl Claims {
    fn new(c: Claim) -> Claims {
        Claims {
            first: c,
            rest: Vec::new(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Claim> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// Adds the claim or refreshes the source's existing one (the later expiry wins, `None`
    /// beats any time). Returns whether the source did not hold the value before.
    fn claim(&mut self, c: Claim) -> bool {
        let existing = if self.first.source == c.source {
            Some(&mut self.first)
        } else {
            self.rest.iter_mut().find(|x| x.source == c.source)
        };
        match existing {
            Some(x) => {
                x.expires = later(x.expires, c.expires);
                false
            }
            None => {
                self.rest.push(c);
                true
            }
        }
    }

    fn release(&mut self, source: SourceId) -> Release {
        if self.first.source == source {
            match self.rest.pop() {
                Some(c) => {
                    self.first = c;
                    Release::Held
                }
                None => Release::Emptied,
            }
        } else {
            let before = self.rest.len();
            self.rest.retain(|c| c.source != source);
            if self.rest.len() < before {
                Release::Held
            } else {
                Release::NotHeld
            }
        }
    }

    fn any_expired(&self, now: DateTime<Utc>) -> bool {
        self.iter().any(|c| expired(c.expires, now))
    }

    fn alive(&self, now: DateTime<Utc>) -> bool {
        self.iter().any(|c| !expired(c.expires, now))
    }

    /// Drops expired claims: (how many, whether none is left).
    fn drop_expired(&mut self, now: DateTime<Utc>) -> (usize, bool) {
        let before = self.rest.len() + 1;
        let mut live: Vec<Claim> = self
            .iter()
            .filter(|c| !expired(c.expires, now))
            .copied()
            .collect();
        let dropped = before - live.len();
        if dropped == 0 {
            return (0, false);
        }
        if live.is_empty() {
            return (dropped, true);
        }
        self.first = live.remove(0);
        self.rest = live;
        (dropped, false)
    }
}

/// The later of two expiries, `None` (never) beating any time.
fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        _ => None,
    }
}

/// The earlier of a pending expiry bound and a new expiry (`None` bound = nothing pending).
fn earlier(bound: Option<DateTime<Utc>>, e: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (bound, e) {
        (Some(b), Some(e)) => Some(b.min(e)),
        (None, e) => e,
        (b, None) => b,
    }
}

fn expired(expires: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires.is_some_and(|e| e <= now)
}

/// A network of an IP set (prefix shorter than the host length), canonical (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Net {
    V4(u32, u8),
    V6(u128, u8),
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Net {
    fn cidr(self) -> Cidr {
        match self {
            Net::V4(a, l) => Cidr::V4(a, mask4(l)),
            Net::V6(a, l) => Cidr::V6(a, mask6(l)),
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Net::V4(a, l) => write!(f, "{}/{l}", Ipv4Addr::from(*a)),
            Net::V6(a, l) => write!(f, "{}/{l}", Ipv6Addr::from(*a)),
        }
    }
}

/// A validated set value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    Net(Net),
    Text(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(a) => write!(f, "{a}"),
            Key::Net(n) => write!(f, "{n}"),
            Key::Text(t) => f.write_str(t),
        }
    }
}

/// Parses an address or CIDR network into its canonical key (IPv4-mapped IPv6 becomes IPv4; a
/// full-length prefix is an address; host bits of a network are cleared).
fn ip_key(text: &str) -> Result<Key, String> {
    let t = text.trim();
    let addr = t.split_once('/').map_or(t, |(a, _)| a);
    if addr.parse::<IpAddr>().is_err() {
        return Err("not an IP address or CIDR network".to_string());
    }
    let cidr = Cidr::parse(t).map_err(|_| "invalid prefix length".to_string())?;
    Ok(match cidr {
        Cidr::V4(a, m) => v4_key(a, m.count_ones() as u8),
        Cidr::V6(a, m) => {
            let len = m.count_ones() as u8;
            if a >> 32 == 0xffff && len >= 96 {
                v4_key(a as u32, len - 96)
            } else if len == 128 {
                Key::Addr(IpAddr::V6(Ipv6Addr::from(a)))
            } else {
                Key::Net(Net::V6(a, len))
            }
        }
    })
}

fn v4_key(a: u32, len: u8) -> Key {
    if len == 32 {
        Key::Addr(IpAddr::V4(Ipv4Addr::from(a)))
    } else {
        Key::Net(Net::V4(a & mask4(len), len))
    }
}

/// Checks a string-set value, map key or map value: not too long, no control characters.
fn check_text(t: &str) -> Result<(), String> {
    if t.len() > MAX_TEXT_LEN {
        return Err(format!("longer than {MAX_TEXT_LEN} bytes"));
    }
    if t.chars().any(char::is_control) {
        return Err("contains a control character".to_string());
    }
    Ok(())
}

/// Validates a value for a set of `kind` into its key.
fn key_for(kind: SetKind, value: &str) -> Result<Key, String> {
    match kind {
        SetKind::Ip => ip_key(value),
        SetKind::String => {
            let t = value.trim();
            if t.is_empty() {
                return Err("empty value".to_string());
            }
            check_text(t)?;
            Ok(Key::Text(t.to_ascii_lowercase()))
        }
    }
}

fn expiry(ttl: Option<Duration>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    match ttl {
        None => Ok(None),
        Some(t) if t <= Duration::zero() => Err(format!("the ttl must be positive, not {t}")),
        // A TTL past the end of representable time never expires.
        Some(t) => Ok(now.checked_add_signed(t)),
    }
}

#[derive(Clone)]
enum Table {
    Ip {
        exact: HashMap<IpAddr, Claims>,
        nets: HashMap<Net, Claims>,
        prefixes: PrefixSet,
    },
    Text(HashMap<String, Claims>),
}

#[derive(Clone)]
struct SetState {
    sources: Sources,
    table: Table,
    /// Lower bound of the earliest claim expiry (`None`: no claim expires).
    next_expiry: Option<DateTime<Utc>>,
}

struct SetSlot {
    name: String,
    kind: SetKind,
    state: RwLock<SetState>,
    /// Serialises changes, so a change can release the state lock while it rebuilds networks.
    writer: Mutex<()>,
}

#[derive(Clone)]
struct MapValue {
    value: String,
    source: SourceId,
    expires: Option<DateTime<Utc>>,
}

#[derive(Clone)]
struct MapState {
    sources: Sources,
    entries: HashMap<String, MapValue>,
    next_expiry: Option<DateTime<Utc>>,
}

struct MapSlot {
    name: String,
    state: RwLock<MapState>,
    writer: Mutex<()>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What changed in one table during a change.
#[derive(Debug, Default)]
struct Delta {
    added: usize,
    removed: usize,
    kept: usize,
    /// Keys that entered the table.
    inserted: usize,
    /// Keys that left the table.
    deleted: usize,
}

/// Dry run of [`replace_in`]: (keys that would leave, keys that would enter).
fn plan_in<K: Hash + Eq>(
    t: &HashMap<K, Claims>,
    source: Option<SourceId>,
    new: &HashSet<K>,
) -> (usize, usize) {
    let leaving = source.map_or(0, |s| {
        t.iter()
            .filter(|(k, c)| c.rest.is_empty() && c.first.source == s && !new.contains(*k))
            .count()
    });
    let entering = new.iter().filter(|k| !t.contains_key(*k)).count();
    (leaving, entering)
}

/// Makes `source` hold exactly the keys in `new` in table `t`.
fn replace_in<K: Hash + Eq>(
    t: &mut HashMap<K, Claims>,
    source: SourceId,
    new: HashSet<K>,
    expires: Option<DateTime<Utc>>,
) -> Delta {
    let mut d = Delta::default();
    t.retain(|k, claims| {
        if new.contains(k) {
            return true;
        }
        match claims.release(source) {
            Release::NotHeld => true,
            Release::Held => {
                d.removed += 1;
                true
            }
            Release::Emptied => {
                d.removed += 1;
                d.deleted += 1;
                false
            }
        }
    });
    let c = Claim { source, expires };
    for k in new {
        match t.entry(k) {
            HashEntry::Occupied(mut o) => {
                if o.get_mut().claim(c) {
                    d.added += 1;
                } else {
                    d.kept += 1;
                }
            }
            HashEntry::Vacant(v) => {
                v.insert(Claims::new(c));
                d.added += 1;
                d.inserted += 1;
            }
        }
    }
    d
}

/// Scans a table for keys with an expired claim; also lowers `next` to the earliest surviving
/// expiry.
fn scan_expired<K: Clone>(
    t: &HashMap<K, Claims>,
    now: DateTime<Utc>,
    next: &mut Option<DateTime<Utc>>,
) -> Vec<K> {
    let mut out = Vec::new();
    for (k, claims) in t {
        if claims.any_expired(now) {
            out.push(k.clone());
        }
        for c in claims.iter() {
            if !expired(c.expires, now) {
                *next = earlier(*next, c.expires);
            }
        }
    }
    out
}

/// Drops the expired claims of `keys`: (claims dropped, keys that left the table).
fn drop_expired_in<K: Hash + Eq>(
    t: &mut HashMap<K, Claims>,
    keys: &[K],
    now: DateTime<Utc>,
) -> (usize, usize) {
    let (mut dropped, mut deleted) = (0, 0);
    for k in keys {
        if let Some(claims) = t.get_mut(k) {
            let (n, empty) = claims.drop_expired(now);
            dropped += n;
            if empty {
                t.remove(k);
                deleted += 1;
            }
        }
    }
    (dropped, deleted)
}

fn entries_of<K: fmt::Display>(t: &HashMap<K, Claims>, sources: &Sources, out: &mut Vec<Entry>) {
    for (k, claims) in t {
        let value = k.to_string();
        for c in claims.iter() {
            out.push(Entry {
                value: value.clone(),
                expires: c.expires,
                source: sources.name(c.source).to_string(),
            });
        }
    }
}

impl SetState {
    fn new(kind: SetKind) -> SetState {
        SetState {
            sources: Sources::default(),
            table: match kind {
                SetKind::Ip => Table::Ip {
                    exact: HashMap::new(),
                    nets: HashMap::new(),
                    prefixes: PrefixSet::default(),
                },
                SetKind::String => Table::Text(HashMap::new()),
            },
            next_expiry: None,
        }
    }

    fn len(&self) -> usize {
        match &self.table {
            Table::Ip { exact, nets, .. } => exact.len() + nets.len(),
            Table::Text(t) => t.len(),
        }
    }

    fn claims(&self, key: &Key) -> Option<&Claims> {
        match (&self.table, key) {
            (Table::Ip { exact, .. }, Key::Addr(a)) => exact.get(a),
            (Table::Ip { nets, .. }, Key::Net(n)) => nets.get(n),
            (Table::Text(t), Key::Text(s)) => t.get(s),
            _ => None,
        }
    }

    /// Adds a claim to `key`: (whether the key is new to the table, whether networks changed).
    fn claim(&mut self, key: Key, c: Claim) -> (bool, bool) {
        self.next_expiry = earlier(self.next_expiry, c.expires);
        fn put<K: Hash + Eq>(t: &mut HashMap<K, Claims>, k: K, c: Claim) -> bool {
            match t.entry(k) {
                HashEntry::Occupied(mut o) => {
                    o.get_mut().claim(c);
                    false
                }
                HashEntry::Vacant(v) => {
                    v.insert(Claims::new(c));
                    true
                }
            }
        }
        match (&mut self.table, key) {
            (Table::Ip { exact, .. }, Key::Addr(a)) => (put(exact, a, c), false),
            (Table::Ip { nets, .. }, Key::Net(n)) => {
                let new = put(nets, n, c);
                (new, new)
            }
            (Table::Text(t), Key::Text(s)) => (put(t, s, c), false),
            _ => (false, false),
        }
    }

    /// Removes `key` whatever its sources: (whether it was there, whether networks changed).
    fn remove(&mut self, key: &Key) -> (bool, bool) {
        match (&mut self.table, key) {
            (Table::Ip { exact, .. }, Key::Addr(a)) => (exact.remove(a).is_some(), false),
            (Table::Ip { nets, .. }, Key::Net(n)) => {
                let gone = nets.remove(n).is_some();
                (gone, gone)
            }
            (Table::Text(t), Key::Text(s)) => (t.remove(s).is_some(), false),
            _ => (false, false),
        }
    }

    /// Whether `key` (or, for IP sets, a network containing it) is held by a live claim.
    fn holds(&self, key: &Key, now: DateTime<Utc>) -> bool {
        if self.claims(key).is_some_and(|c| c.alive(now)) {
            return true;
        }
        let Table::Ip { nets, .. } = &self.table else {
            return false;
        };
        let live = |n: Net| nets.get(&n).is_some_and(|c| c.alive(now));
        match key {
            Key::Addr(IpAddr::V4(a)) => {
                (0..32u8).any(|l| live(Net::V4(u32::from(*a) & mask4(l), l)))
            }
            Key::Addr(IpAddr::V6(a)) => {
                (0..128u8).any(|l| live(Net::V6(u128::from(*a) & mask6(l), l)))
            }
            Key::Net(Net::V4(a, len)) => (0..*len).any(|l| live(Net::V4(a & mask4(l), l))),
            Key::Net(Net::V6(a, len)) => (0..*len).any(|l| live(Net::V6(a & mask6(l), l))),
            Key::Text(_) => false,
        }
    }
}

/// Keys of a refresh, split by table.
#[derive(Default)]
struct NewKeys {
    addrs: HashSet<IpAddr>,
    nets: HashSet<Net>,
    texts: HashSet<String>,
}

impl SetSlot {
    /// Runs a change under the writer mutex and the write lock, then rebuilds the networks if
    /// the change says they changed (outside the write lock; see the module documentation).
    fn modify<R>(
        &self,
        f: impl FnOnce(&mut SetState) -> Result<(R, bool), RefError>,
    ) -> Result<R, RefError> {
        let _writer = lock(&self.writer);
        let (r, nets_changed) = f(&mut write(&self.state))?;
        if nets_changed {
            self.rebuild_prefixes();
        }
        Ok(r)
    }

    /// Runs a bulk change copy-on-write: clones the state under the read lock (lookups go on),
    /// changes the copy and recompiles its networks without any lock, then swaps it in under a
    /// write lock held only for the swap (the old state is dropped after). Costs a second copy
    /// of the set while it runs.
    fn replace_with<R>(
        &self,
        f: impl FnOnce(&mut SetState) -> Result<(R, bool), RefError>,
    ) -> Result<R, RefError> {
        let _writer = lock(&self.writer);
        let mut next = read(&self.state).clone();
        let (r, nets_changed) = f(&mut next)?;
        if nets_changed {
            if let Table::Ip { nets, prefixes, .. } = &mut next.table {
                *prefixes = PrefixSet::new(nets.keys().map(|n| n.cidr()));
            }
        }
        let old = std::mem::replace(&mut *write(&self.state), next);
        drop(old);
        Ok(r)
    }

    /// Recompiles the networks into a [`PrefixSet`]. Call with the writer mutex held.
    fn rebuild_prefixes(&self) {
        let nets: Vec<Cidr> = match &read(&self.state).table {
            Table::Ip { nets, .. } => nets.keys().map(|n| n.cidr()).collect(),
            Table::Text(_) => return,
        };
        let built = PrefixSet::new(nets);
        if let Table::Ip { prefixes, .. } = &mut write(&self.state).table {
            *prefixes = built;
        }
    }

    fn expire(&self, now: DateTime<Utc>) -> usize {
        let _writer = lock(&self.writer);
        let mut next = None;
        let (addrs, nets, texts) = {
            let st = read(&self.state);
            if st.next_expiry.is_none_or(|t| t > now) {
                return 0;
            }
            match &st.table {
                Table::Ip { exact, nets, .. } => (
                    scan_expired(exact, now, &mut next),
                    scan_expired(nets, now, &mut next),
                    Vec::new(),
                ),
                Table::Text(t) => (Vec::new(), Vec::new(), scan_expired(t, now, &mut next)),
            }
        };
        let (dropped, nets_deleted) = {
            let mut st = write(&self.state);
            st.next_expiry = next;
            match &mut st.table {
                Table::Ip { exact, nets: n, .. } => {
                    let (a, _) = drop_expired_in(exact, &addrs, now);
                    let (b, deleted) = drop_expired_in(n, &nets, now);
                    (a + b, deleted)
                }
                Table::Text(t) => (drop_expired_in(t, &texts, now).0, 0),
            }
        };
        if nets_deleted > 0 {
            self.rebuild_prefixes();
        }
        dropped
    }
}

impl MapSlot {
    fn expire(&self, now: DateTime<Utc>) -> usize {
        let _writer = lock(&self.writer);
        let mut next = None;
        let keys: Vec<String> = {
            let st = read(&self.state);
            if st.next_expiry.is_none_or(|t| t > now) {
                return 0;
            }
            let mut keys = Vec::new();
            for (k, v) in &st.entries {
                if expired(v.expires, now) {
                    keys.push(k.clone());
                } else {
                    next = earlier(next, v.expires);
                }
            }
            keys
        };
        let mut st = write(&self.state);
        st.next_expiry = next;
        keys.iter()
            .filter(|k| {
                let gone = st.entries.get(*k).is_some_and(|v| expired(v.expires, now));
                gone && st.entries.remove(*k).is_some()
            })
            .count()
    }
}

fn ip_in(exact: &HashMap<IpAddr, Claims>, prefixes: &PrefixSet, ip: IpAddr) -> bool {
    (!exact.is_empty() && exact.contains_key(&ip.to_canonical())) || prefixes.contains(ip)
}

fn text_in(t: &HashMap<String, Claims>, s: &str) -> bool {
    if t.is_empty() {
        return false;
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        t.contains_key(&s.to_ascii_lowercase())
    } else {
        t.contains_key(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing lists and CSV
// ---------------------------------------------------------------------------------------------

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote inside quotes); unquoted
/// fields are trimmed.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let t = rest.trim_start();
        if let Some(q) = t.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = q.char_indices();
            let after;
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_string()),
                    Some((i, '"')) => {
                        if q[i + 1..].starts_with('"') {
                            field.push('"');
                            chars.next();
                        } else {
                            after = &q[i + 1..];
                            break;
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            }
            fields.push(field);
            let after = after.trim_start();
            if after.is_empty() {
                return Ok(fields);
            }
            match after.strip_prefix(',') {
                Some(r) => rest = r,
                None => return Err("text after a closing quote".to_string()),
            }
        } else {
            match t.split_once(',') {
                Some((f, r)) => {
                    fields.push(f.trim().to_string());
                    rest = r;
                }
                None => {
                    fields.push(t.trim().to_string());
                    return Ok(fields);
                }
            }
        }
    }
}

/// Whether a trimmed line is a whole-line comment.
fn is_comment(line: &str) -> bool {
    line.starts_with('#') || line.starts_with(';')
}

/// Cuts a trailing comment: `#` or `;` after whitespace.
fn strip_inline_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for i in 1..b.len() {
        if (b[i] == b'#' || b[i] == b';') && b[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

fn bad_line(line: usize, text: &str, reason: String) -> BadLine {
    let t = text.trim();
    let mut end = t.len().min(BAD_LINE_EXCERPT);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    BadLine {
        line,
        text: t[..end].to_string(),
        reason,
    }
}

/// Lines of a text, 1-based, with a leading byte-order mark removed.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// Reads a text file of at most `max_bytes` (a list or CSV to feed [`ReferenceData::parse_list`]
/// or [`ReferenceData::parse_map_csv`]). Blocking: call it from `spawn_blocking` in async code.
pub fn read_text_file(path: &Path, max_bytes: usize) -> Result<String, RefError> {
    let io = |source| RefError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() > max_bytes {
        return Err(RefError::TooLarge {
            what: format!("file {}", path.display()),
            limit: max_bytes,
            unit: "bytes",
        });
    }
    String::from_utf8(buf).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// ReferenceData
// ---------------------------------------------------------------------------------------------

impl ReferenceData {
    /// Reference data with the given sets and maps, all empty. Names are unique per kind of
    /// collection (a set and a map may share a name); a repeated name keeps its first
    /// declaration.
    pub fn new(sets: &[SetDecl], maps: &[String]) -> ReferenceData {
        let mut set_ids = HashMap::new();
        let mut slots = Vec::new();
        for d in sets {
            if set_ids.contains_key(&d.name) {
                continue;
            }
            set_ids.insert(d.name.clone(), slots.len());
            slots.push(SetSlot {
                name: d.name.clone(),
                kind: d.kind,
                state: RwLock::new(SetState::new(d.kind)),
                writer: Mutex::new(()),
            });
        }
        let mut map_ids = HashMap::new();
        let mut map_slots = Vec::new();
        for name in maps {
            if map_ids.contains_key(name) {
                continue;
            }
            map_ids.insert(name.clone(), map_slots.len());
            map_slots.push(MapSlot {
                name: name.clone(),
                state: RwLock::new(MapState {
                    sources: Sources::default(),
                    entries: HashMap::new(),
                    next_expiry: None,
                }),
                writer: Mutex::new(()),
            });
        }
        ReferenceData {
            sets: slots,
            set_ids,
            maps: map_slots,
            map_ids,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Caps every set at `max` distinct values and every map at `max` keys (default
    /// [`DEFAULT_MAX_ENTRIES`]): a change that would pass the cap fails with
    /// [`RefError::TooLarge`] and changes nothing.
    pub fn with_max_entries(mut self, max: usize) -> ReferenceData {
        self.max_entries = max;
        self
    }

    fn set(&self, name: &str) -> Result<&SetSlot, RefError> {
        self.set_ids
            .get(name)
            .and_then(|i| self.sets.get(*i))
            .ok_or_else(|| RefError::UnknownSet(name.to_string()))
    }

    fn map(&self, name: &str) -> Result<&MapSlot, RefError> {
        self.map_ids
            .get(name)
            .and_then(|i| self.maps.get(*i))
            .ok_or_else(|| RefError::UnknownMap(name.to_string()))
    }

    fn too_large(&self, what: &str, name: &str) -> RefError {
        RefError::TooLarge {
            what: format!("reference {what} {name:?}"),
            limit: self.max_entries,
            unit: "entries",
        }
    }

    /// Parses a list for a set of `kind`. Accepted, line by line:
    ///
    /// - FireHOL `.netset` / `.ipset` files and plain lists: one address, CIDR network or string
    ///   per line; lines starting with `#` or `;` and blank lines are skipped; a trailing comment
    ///   (`#` or `;` after whitespace) is cut.
    /// - CSV: a line with a comma (or starting with a quote) is a CSV record and its first
    ///   column is the value (quote string values that contain commas). For IP sets, a first
    ///   record whose first field is not an address is a header and is skipped.
    ///
    /// IP values come out in canonical form (`2001:DB8:0::1` → `2001:db8::1`, `::ffff:1.2.3.4`
    /// → `1.2.3.4`, host bits of a network cleared); text values as written (trimmed). A line
    /// that cannot be used is reported in [`ParsedList::bad`] with its line number and reason;
    /// the rest load.
    pub fn parse_list(kind: SetKind, text: &str) -> ParsedList {
        let mut out = ParsedList::default();
        let mut first_record = true;
        for (n, raw) in numbered_lines(text) {
            let line = raw.trim();
            if line.is_empty() || is_comment(line) {
                continue;
            }
            let is_first = std::mem::replace(&mut first_record, false);
            let csv = line.contains(',') || line.starts_with('"');
            let value = if csv {
                match csv_fields(line) {
                    Ok(fields) => fields.into_iter().next().unwrap_or_default(),
                    Err(reason) => {
                        out.bad.push(bad_line(n, raw, reason));
                        continue;
                    }
                }
            } else {
                strip_inline_comment(line).trim().to_string()
            };
            match kind {
                SetKind::Ip => match ip_key(&value) {
                    Ok(k) => out.values.push(k.to_string()),
                    Err(_) if csv && is_first => {} // a header
                    Err(reason) => out.bad.push(bad_line(n, raw, reason)),
                },
                SetKind::String => match key_for(kind, &value) {
                    Ok(_) => out.values.push(value),
                    Err(reason) => out.bad.push(bad_line(n, raw, reason)),
                },
            }
        }
        out
    }

    /// Parses `key,value` lines for a map: quoted fields may hold commas (`"Ops, Team B"`) and
    /// quotes (`""`); blank lines and lines starting with `#` or `;` are skipped; a line that
    /// does not have exactly two fields, has an empty key or an invalid field is reported bad.
    /// There is no header detection: a header line loads as a key.
    pub fn parse_map_csv(text: &str) -> (Vec<(String, String)>, Vec<BadLine>) {
        let mut pairs = Vec::new();
        let mut bad = Vec::new();
        for (n, raw) in numbered_lines(text) {
            let line = raw.trim();
            if line.is_empty() || is_comment(line) {
                continue;
            }
            let fields = match csv_fields(line) {
                Ok(f) => f,
                Err(reason) => {
                    bad.push(bad_line(n, raw, reason));
                    continue;
                }
            };
            let [key, value]: [String; 2] = match fields.try_into() {
                Ok(kv) => kv,
                Err(f) => {
                    let reason = format!("expected 2 fields (key,value), found {}", f.len());
                    bad.push(bad_line(n, raw, reason));
                    continue;
                }
            };
            match check_map_pair(&key, &value) {
                Ok(()) => pairs.push((key, value)),
                Err(reason) => bad.push(bad_line(n, raw, reason)),
            }
        }
        (pairs, bad)
    }

    /// Adds `value` to `set` for `source`, expiring `ttl` after `now` (`None`: never). IP sets
    /// take an address or CIDR network. Adding a value the source already holds refreshes it:
    /// the later expiry is kept, and `None` (never) wins.
    pub fn add(
        &self,
        set: &str,
        value: &str,
        ttl: Option<Duration>,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RefError> {
        let expires = expiry(ttl, now).map_err(|reason| RefError::InvalidValue {
            set: set.to_string(),
            value: value.to_string(),
            reason,
        })?;
        self.add_until(set, value, expires, source)
    }

    /// [`ReferenceData::add`] with an absolute expiry (for restoring persisted entries). An
    /// expiry already past is dropped by the next [`ReferenceData::expire`].
    pub fn add_until(
        &self,
        set: &str,
        value: &str,
        expires: Option<DateTime<Utc>>,
        source: &str,
    ) -> Result<(), RefError> {
        let slot = self.set(set)?;
        let key = key_for(slot.kind, value).map_err(|reason| RefError::InvalidValue {
            set: set.to_string(),
            value: value.to_string(),
            reason,
        })?;
        slot.modify(|st| {
            if st.claims(&key).is_none() && st.len() >= self.max_entries {
                return Err(self.too_large("set", set));
            }
            let source = st.sources.intern(source);
            let (_, nets_changed) = st.claim(key, Claim { source, expires });
            Ok(((), nets_changed))
        })
    }

    /// Removes `value` from `set` whatever source added it; whether it was there. (A feed that
    /// still lists it brings it back at its next refresh.)
    pub fn remove(&self, set: &str, value: &str) -> Result<bool, RefError> {
        let slot = self.set(set)?;
        let key = key_for(slot.kind, value).map_err(|reason| RefError::InvalidValue {
            set: set.to_string(),
            value: value.to_string(),
            reason,
        })?;
        slot.modify(|st| Ok(st.remove(&key)))
    }

    /// Makes `source` hold exactly `values` in `set` (what a file or URL refresh does): values
    /// the source held that are not in `values` lose its claim (and leave the set unless another
    /// source holds them), new ones come, kept ones are refreshed (later expiry wins). Every
    /// value is validated first: one invalid value fails the whole call and changes nothing.
    /// Networks are recompiled once. The change is made on a copy of the set, swapped in under
    /// a write lock held only for the swap, so lookups are not blocked while a large feed loads
    /// (the set takes twice its memory meanwhile).
    pub fn replace_source(
        &self,
        set: &str,
        source: &str,
        values: &[String],
        ttl: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<ReplaceReport, RefError> {
        let slot = self.set(set)?;
        let invalid = |value: &str, reason| RefError::InvalidValue {
            set: set.to_string(),
            value: value.to_string(),
            reason,
        };
        let expires = expiry(ttl, now).map_err(|r| invalid("", r))?;
        let mut new = NewKeys::default();
        for v in values {
            match key_for(slot.kind, v).map_err(|r| invalid(v, r))? {
                Key::Addr(a) => {
                    new.addrs.insert(a);
                }
                Key::Net(n) => {
                    new.nets.insert(n);
                }
                Key::Text(t) => {
                    new.texts.insert(t);
                }
            }
        }
        slot.replace_with(|st| {
            let src = st.sources.find(source);
            let (leaving, entering) = match &st.table {
                Table::Ip { exact, nets, .. } => {
                    let a = plan_in(exact, src, &new.addrs);
                    let b = plan_in(nets, src, &new.nets);
                    (a.0 + b.0, a.1 + b.1)
                }
                Table::Text(t) => plan_in(t, src, &new.texts),
            };
            if st.len() - leaving + entering > self.max_entries {
                return Err(self.too_large("set", set));
            }
            let src = st.sources.intern(source);
            st.next_expiry = earlier(st.next_expiry, expires);
            let (d, nets_changed) = match &mut st.table {
                Table::Ip { exact, nets, .. } => {
                    let a = replace_in(exact, src, new.addrs, expires);
                    let b = replace_in(nets, src, new.nets, expires);
                    let changed = b.inserted + b.deleted > 0;
                    let sum = Delta {
                        added: a.added + b.added,
                        removed: a.removed + b.removed,
                        kept: a.kept + b.kept,
                        inserted: 0,
                        deleted: 0,
                    };
                    (sum, changed)
                }
                Table::Text(t) => (replace_in(t, src, new.texts, expires), false),
            };
            let report = ReplaceReport {
                added: d.added,
                removed: d.removed,
                kept: d.kept,
                updated: 0,
                entries: st.len(),
            };
            Ok((report, nets_changed))
        })
    }

    /// Sets `key` to `value` in `map` for `source`, expiring `ttl` after `now`. If the same
    /// source wrote the key before, the later expiry is kept (`None` wins); a key written by
    /// another source is taken over (value, expiry and source replaced).
    pub fn map_put(
        &self,
        map: &str,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RefError> {
        let invalid = |reason| RefError::InvalidValue {
            set: map.to_string(),
            value: key.to_string(),
            reason,
        };
        let expires = expiry(ttl, now).map_err(invalid)?;
        self.map_put_until(map, key, value, expires, source)
    }

    /// [`ReferenceData::map_put`] with an absolute expiry (for restoring persisted entries).
    pub fn map_put_until(
        &self,
        map: &str,
        key: &str,
        value: &str,
        expires: Option<DateTime<Utc>>,
        source: &str,
    ) -> Result<(), RefError> {
        let slot = self.map(map)?;
        check_map_pair(key, value).map_err(|reason| RefError::InvalidValue {
            set: map.to_string(),
            value: key.to_string(),
            reason,
        })?;
        let _writer = lock(&slot.writer);
        let mut st = write(&slot.state);
        if !st.entries.contains_key(key) && st.entries.len() >= self.max_entries {
            return Err(self.too_large("map", map));
        }
        let source = st.sources.intern(source);
        st.next_expiry = earlier(st.next_expiry, expires);
        put_map_value(&mut st.entries, key.to_string(), value, source, expires);
        Ok(())
    }

    /// The live value of `key` in `map` at `now` (`None` if absent, expired or no such map).
    pub fn map_get(&self, map: &str, key: &str, now: DateTime<Utc>) -> Option<String> {
        let slot = self.map(map).ok()?;
        let st = read(&slot.state);
        st.entries
            .get(key)
            .filter(|v| !expired(v.expires, now))
            .map(|v| v.value.clone())
    }

    /// Removes `key` from `map`; whether it was there.
    pub fn map_remove(&self, map: &str, key: &str) -> Result<bool, RefError> {
        let slot = self.map(map)?;
        let _writer = lock(&slot.writer);
        let removed = write(&slot.state).entries.remove(key).is_some();
        Ok(removed)
    }

    /// Makes `source` own exactly the keys of `pairs` in `map` (a file or URL refresh): keys it
    /// owned that are not in `pairs` go (keys other sources wrote stay), the others are put
    /// (taking over keys other sources wrote). A key repeated in `pairs` keeps its last value.
    /// Every pair is validated first: one invalid pair fails the call and changes nothing. Like
    /// [`ReferenceData::replace_source`], it works on a copy and swaps it in.
    pub fn replace_map_source(
        &self,
        map: &str,
        source: &str,
        pairs: &[(String, String)],
        ttl: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<ReplaceReport, RefError> {
        let slot = self.map(map)?;
        let invalid = |key: &str, reason| RefError::InvalidValue {
            set: map.to_string(),
            value: key.to_string(),
            reason,
        };
        let expires = expiry(ttl, now).map_err(|r| invalid("", r))?;
        let mut new: HashMap<&str, &str> = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            check_map_pair(k, v).map_err(|r| invalid(k, r))?;
            new.insert(k.as_str(), v.as_str());
        }
        // Copy-on-write, as for sets: lookups are not blocked while the copy changes.
        let _writer = lock(&slot.writer);
        let mut st = read(&slot.state).clone();
        let src = st.sources.find(source);
        let leaving = src.map_or(0, |s| {
            st.entries
                .iter()
                .filter(|(k, v)| v.source == s && !new.contains_key(k.as_str()))
                .count()
        });
        let entering = new.keys().filter(|k| !st.entries.contains_key(**k)).count();
        if st.entries.len() - leaving + entering > self.max_entries {
            return Err(self.too_large("map", map));
        }
        let src = st.sources.intern(source);
        st.next_expiry = earlier(st.next_expiry, expires);
        let mut report = ReplaceReport::default();
        st.entries.retain(|k, v| {
            let go = v.source == src && !new.contains_key(k.as_str());
            report.removed += usize::from(go);
            !go
        });
        for (k, v) in new {
            match st.entries.get(k) {
                Some(old) if old.source == src && old.value == v => report.kept += 1,
                Some(old) if old.source == src => report.updated += 1,
                _ => report.added += 1,
            }
            put_map_value(&mut st.entries, k.to_string(), v, src, expires);
        }
        report.entries = st.entries.len();
        let old = std::mem::replace(&mut *write(&slot.state), st);
        drop(old);
        Ok(report)
    }

    /// Drops the entries of every set and map whose expiry is at or before `now`; returns how
    /// many were dropped (set entries count per source, as [`ReferenceData::entries`] lists
    /// them). Call it every second: lookups do not check expiry.
    pub fn expire(&self, now: DateTime<Utc>) -> usize {
        self.sets.iter().map(|s| s.expire(now)).sum::<usize>()
            + self.maps.iter().map(|m| m.expire(now)).sum::<usize>()
    }

    /// The entries of `set` (one per value and source), sorted by value then source.
    pub fn entries(&self, set: &str) -> Result<Vec<Entry>, RefError> {
        let slot = self.set(set)?;
        let mut out = Vec::new();
        {
            let st = read(&slot.state);
            match &st.table {
                Table::Ip { exact, nets, .. } => {
                    entries_of(exact, &st.sources, &mut out);
                    entries_of(nets, &st.sources, &mut out);
                }
                Table::Text(t) => entries_of(t, &st.sources, &mut out),
            }
        }
        out.sort_unstable_by(|a, b| (&a.value, &a.source).cmp(&(&b.value, &b.source)));
        Ok(out)
    }

    /// The entries of `map`, sorted by key.
    pub fn map_entries(&self, map: &str) -> Result<Vec<MapEntry>, RefError> {
        let slot = self.map(map)?;
        let mut out: Vec<MapEntry> = {
            let st = read(&slot.state);
            st.entries
                .iter()
                .map(|(k, v)| MapEntry {
                    key: k.clone(),
                    value: v.value.clone(),
                    expires: v.expires,
                    source: st.sources.name(v.source).to_string(),
                })
                .collect()
        };
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every set (in declaration order) then every map, with its kind and size.
    pub fn summaries(&self) -> Vec<SetSummary> {
        let sets = self.sets.iter().map(|s| SetSummary {
            name: s.name.clone(),
            kind: s.kind.as_str(),
            entries: read(&s.state).len(),
        });
        let maps = self.maps.iter().map(|m| SetSummary {
            name: m.name.clone(),
            kind: "map",
            entries: read(&m.state).entries.len(),
        });
        sets.chain(maps).collect()
    }

    /// Whether `value` is in `set` at `now`, checking expiry exactly (for the API and tests).
    /// For IP sets, `value` is an address (held exactly or inside a network) or a network (held
    /// itself or inside a wider network).
    pub fn contains_value(
        &self,
        set: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RefError> {
        let slot = self.set(set)?;
        let key = key_for(slot.kind, value).map_err(|reason| RefError::InvalidValue {
            set: set.to_string(),
            value: value.to_string(),
            reason,
        })?;
        Ok(read(&slot.state).holds(&key, now))
    }
}

fn check_map_pair(key: &str, value: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("empty key".to_string());
    }
    check_text(key).map_err(|r| format!("key {r}"))?;
    check_text(value).map_err(|r| format!("value {r}"))
}

fn put_map_value(
    entries: &mut HashMap<String, MapValue>,
    key: String,
    value: &str,
    source: SourceId,
    expires: Option<DateTime<Utc>>,
) {
    match entries.entry(key) {
        HashEntry::Occupied(mut o) => {
            let v = o.get_mut();
            if v.source == source {
                v.expires = later(v.expires, expires);
            } else {
                v.source = source;
                v.expires = expires;
            }
            if v.value != value {
                v.value = value.to_string();
            }
        }
        HashEntry::Vacant(e) => {
            e.insert(MapValue {
                value: value.to_string(),
                source,
                expires,
            });
        }
    }
}

impl fmt::Debug for ReferenceData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceData")
            .field("collections", &self.summaries())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl ReferenceLookup for ReferenceData {
    fn set_id(&self, name: &str) -> Option<usize> {
        self.set_ids.get(name).copied()
    }

    /// The hot path: one read lock, a hash probe and (IP sets) a binary search. Does not check
    /// expiry; see [`ReferenceData::expire`]. IP sets match `FieldValue::Ip` and text that
    /// parses as an address; string sets match text (ASCII-case-insensitively), and numbers,
    /// addresses and times by their text.
    fn contains(&self, set: usize, value: &FieldValue<'_>) -> bool {
        let Some(slot) = self.sets.get(set) else {
            return false;
        };
        let st = read(&slot.state);
        match (&st.table, value) {
            (
                Table::Ip {
                    exact, prefixes, ..
                },
                FieldValue::Ip(ip),
            ) => ip_in(exact, prefixes, *ip),
            (
                Table::Ip {
                    exact, prefixes, ..
                },
                FieldValue::Str(s),
            ) => s
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip_in(exact, prefixes, ip)),
            (Table::Ip { .. }, _) => false,
            (Table::Text(t), FieldValue::Str(s)) => text_in(t, s),
            (Table::Text(t), FieldValue::Int(i)) => {
                let mut buf = [0u8; 24];
                let len = {
                    let mut cur = &mut buf[..];
                    if std::io::Write::write_fmt(&mut cur, format_args!("{i}")).is_err() {
                        return false;
                    }
                    24 - cur.len()
                };
                std::str::from_utf8(&buf[..len]).is_ok_and(|s| text_in(t, s))
            }
            (Table::Text(t), other) => text_in(t, &other.as_text()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching feeds
// ---------------------------------------------------------------------------------------------

/// The error and its sources, `: `-joined (hyper's errors say little at the top level).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Fetches a feed over plain HTTP/1.1 (`http://` only) within `timeout`, reading at most
/// `max_bytes` of body (it stops reading past that; nothing is buffered beyond it). Fails with
/// [`RefError::Fetch`] on `https://` (not supported yet), another scheme, connection errors,
/// non-2xx statuses (redirects are not followed), a body over `max_bytes`, a body that is not
/// UTF-8, or the timeout.
pub async fn fetch_url(
    url: &str,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<String, RefError> {
    use axum::body::Bytes;
    use axum::http::{header, Uri};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let fail = |reason: String| RefError::Fetch {
        url: url.to_string(),
        reason,
    };
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "http" => {}
        "https" => {
            return Err(fail(
                "https is not supported yet; use a file or an http mirror".to_string(),
            ))
        }
        _ => return Err(fail("only http:// URLs are supported".to_string())),
    }
    let uri: Uri = url.parse().map_err(|e| fail(format!("invalid URL: {e}")))?;
    if uri.host().is_none() {
        return Err(fail("the URL has no host".to_string()));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let work = async {
        let resp = client
            .get(uri)
            .await
            .map_err(|e| fail(format!("request failed: {}", error_chain(&e))))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(fail(format!(
                "HTTP status {status} (redirects are not followed)"
            )));
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP status {status}")));
        }
        let too_large = || fail(format!("the body is larger than {max_bytes} bytes"));
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            return Err(too_large());
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| fail(format!("reading the body failed: {}", error_chain(&e))))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max_bytes {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        String::from_utf8(buf).map_err(|e| {
            fail(format!(
                "the body is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("timed out after {} ms", timeout.as_millis())))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Test time: `s` seconds after a fixed instant.
    fn at(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(1_800_000_000 + s)
    }

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/refdata")
            .join(name);
        read_text_file(&path, 1 << 20).unwrap_or_else(|e| panic!("{e}"))
    }

    fn data() -> ReferenceData {
        ReferenceData::new(
            &[
                SetDecl {
                    name: "bad_ips".into(),
                    kind: SetKind::Ip,
                },
                SetDecl {
                    name: "svc_accounts".into(),
                    kind: SetKind::String,
                },
            ],
            &["owners".to_string()],
        )
    }

    fn ok<T>(r: Result<T, RefError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn has(d: &ReferenceData, set: &str, v: &str, now: DateTime<Utc>) -> bool {
        ok(d.contains_value(set, v, now))
    }

    /// Membership through the rule-facing trait (no expiry check).
    fn hot(d: &ReferenceData, set: &str, v: &FieldValue<'_>) -> bool {
        let id = d.set_id(set).unwrap_or_else(|| panic!("no set {set}"));
        d.contains(id, v)
    }

    fn ipv(s: &str) -> FieldValue<'static> {
        FieldValue::Ip(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    fn lines(bad: &[BadLine]) -> Vec<usize> {
        bad.iter().map(|b| b.line).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    // --- parsing ------------------------------------------------------------------------------

    #[test]
    fn parses_a_firehol_netset_skipping_its_comment_header() {
        let p = ReferenceData::parse_list(SetKind::Ip, &fixture("firehol_level1.netset"));
        assert_eq!(
            p.values,
            strings(&[
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "192.0.2.0/24",
                "198.51.100.0/25",
                "203.0.113.77"
            ])
        );
        assert!(p.bad.is_empty(), "{:?}", p.bad);
    }

    #[test]
    fn parses_a_firehol_ipset() {
        let p = ReferenceData::parse_list(SetKind::Ip, &fixture("blocklist_de_ssh.ipset"));
        assert_eq!(
            p.values,
            strings(&["192.0.2.10", "192.0.2.11", "198.51.100.200", "203.0.113.5"])
        );
        assert!(p.bad.is_empty(), "{:?}", p.bad);
    }

    #[test]
    fn plain_list_loads_good_lines_and_reports_bad_ones_by_line_number() {
        let p = ReferenceData::parse_list(SetKind::Ip, &fixture("mixed.txt"));
        assert_eq!(
            p.values,
            strings(&[
                "192.0.2.1",
                "192.0.2.0/28",
                "2001:db8::/32",
                "2001:db8::7",
                "198.51.100.9",
                "192.0.2.200"
            ]),
            "comments cut, IPv6 canonical, IPv4-mapped as IPv4"
        );
        assert_eq!(lines(&p.bad), vec![8, 9, 10, 12]);
        assert_eq!(p.bad[0].text, "not-an-ip");
        assert_eq!(p.bad[0].reason, "not an IP address or CIDR network");
        assert_eq!(p.bad[1].reason, "invalid prefix length");
        assert_eq!(p.bad[2].text, "203.0.113.300");
        assert_eq!(p.bad[3].text, "10.1.2.3-10.1.2.9");
    }

    #[test]
    fn csv_takes_the_first_column_and_skips_a_header_for_ip_sets() {
        let p = ReferenceData::parse_list(SetKind::Ip, &fixture("indicators.csv"));
        assert_eq!(
            p.values,
            strings(&["192.0.2.50", "198.51.100.0/24", "203.0.113.9"])
        );
        assert_eq!(lines(&p.bad), vec![5], "only the data row 'bogus' is bad");
        // Only the first record can be a header.
        let p = ReferenceData::parse_list(SetKind::Ip, "192.0.2.1,x\nip,y\n");
        assert_eq!(p.values, strings(&["192.0.2.1"]));
        assert_eq!(lines(&p.bad), vec![2]);
        // A plain first line that is not an address is bad, not a header.
        let p = ReferenceData::parse_list(SetKind::Ip, "address\n192.0.2.1\n");
        assert_eq!(lines(&p.bad), vec![1]);
    }

    #[test]
    fn string_lists_keep_text_cut_comments_and_handle_bom_and_crlf() {
        let p = ReferenceData::parse_list(SetKind::String, &fixture("service_accounts.txt"));
        assert_eq!(
            p.values,
            strings(&["svc_backup", "SVC_Deploy", "oracle", "Domain Admins"])
        );
        assert!(p.bad.is_empty());
        let p = ReferenceData::parse_list(
            SetKind::String,
            "\u{feff}alpha\r\n\r\n# c\r\n\"x, y\",second column\r\nbeta\u{7}\r\n",
        );
        assert_eq!(p.values, strings(&["alpha", "x, y"]));
        assert_eq!(lines(&p.bad), vec![5]);
        assert_eq!(p.bad[0].reason, "contains a control character");
        let p = ReferenceData::parse_list(SetKind::Ip, "\u{feff}192.0.2.1\r\n");
        assert_eq!(p.values, strings(&["192.0.2.1"]), "BOM stripped");
    }

    #[test]
    fn map_csv_allows_quoted_commas_and_reports_malformed_lines() {
        let (pairs, bad) = ReferenceData::parse_map_csv(&fixture("asset_owners.csv"));
        let expect = [
            ("192.0.2.10", "alice"),
            ("192.0.2.11", "Ops, Team B"),
            ("quoted key", "said \"hello\""),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        assert_eq!(pairs, expect);
        assert_eq!(lines(&bad), vec![5, 6, 8, 9]);
        assert_eq!(bad[0].reason, "expected 2 fields (key,value), found 1");
        assert_eq!(bad[1].reason, "unterminated quoted field");
        assert_eq!(bad[2].reason, "empty key");
        assert_eq!(bad[3].reason, "expected 2 fields (key,value), found 3");
    }

    #[test]
    fn csv_fields_follow_rfc4180_quoting() {
        let f = |s: &str| csv_fields(s);
        assert_eq!(f("a, b ,c"), Ok(strings(&["a", "b", "c"])));
        assert_eq!(f("\"a,b\",\"c\"\"d\""), Ok(strings(&["a,b", "c\"d"])));
        assert_eq!(f("a,"), Ok(strings(&["a", ""])));
        assert_eq!(f(" \"q\" , x"), Ok(strings(&["q", "x"])));
        assert!(f("\"a\"b,c").is_err());
        assert!(f("\"open,c").is_err());
    }

    // --- sets ---------------------------------------------------------------------------------

    #[test]
    fn ip_addresses_add_contain_and_remove() {
        let d = data();
        let now = at(0);
        ok(d.add("bad_ips", "192.0.2.7", None, "api", now));
        ok(d.add("bad_ips", "198.51.100.1/32", None, "api", now));
        assert!(has(&d, "bad_ips", "192.0.2.7", now));
        assert!(!has(&d, "bad_ips", "192.0.2.8", now));
        assert!(
            hot(&d, "bad_ips", &ipv("198.51.100.1")),
            "a /32 is an address"
        );
        assert!(hot(&d, "bad_ips", &ipv("::ffff:192.0.2.7")), "IPv4-mapped");
        assert!(ok(d.remove("bad_ips", "192.0.2.7")));
        assert!(!ok(d.remove("bad_ips", "192.0.2.7")));
        assert!(!has(&d, "bad_ips", "192.0.2.7", now));
        assert!(!hot(&d, "bad_ips", &ipv("192.0.2.7")));
        let entries = ok(d.entries("bad_ips"));
        assert_eq!(
            entries,
            vec![Entry {
                value: "198.51.100.1".into(),
                expires: None,
                source: "api".into()
            }]
        );
    }

    #[test]
    fn cidr_membership_is_exact_at_the_network_edges() {
        let d = data();
        let now = at(0);
        ok(d.add("bad_ips", "10.1.0.0/16", None, "api", now));
        ok(d.add("bad_ips", "192.0.2.64/26", None, "api", now));
        // A network given with host bits set is stored canonical.
        ok(d.add("bad_ips", "198.51.100.77/24", None, "api", now));
        for yes in [
            "10.1.0.0",
            "10.1.255.255",
            "192.0.2.64",
            "192.0.2.127",
            "198.51.100.0",
            "198.51.100.255",
        ] {
            assert!(hot(&d, "bad_ips", &ipv(yes)), "{yes}");
            assert!(has(&d, "bad_ips", yes, now), "{yes}");
        }
        for no in [
            "10.0.255.255",
            "10.2.0.0",
            "192.0.2.63",
            "192.0.2.128",
            "198.51.101.0",
        ] {
            assert!(!hot(&d, "bad_ips", &ipv(no)), "{no}");
            assert!(!has(&d, "bad_ips", no, now), "{no}");
        }
        assert!(
            has(&d, "bad_ips", "10.1.2.0/24", now),
            "a subnet of a held network"
        );
        assert!(
            !has(&d, "bad_ips", "10.0.0.0/8", now),
            "a supernet is not held"
        );
        let values: Vec<String> = ok(d.entries("bad_ips"))
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(
            values,
            strings(&["10.1.0.0/16", "192.0.2.64/26", "198.51.100.0/24"])
        );
        // Removing a network recompiles the prefix set.
        assert!(ok(d.remove("bad_ips", "10.1.0.0/16")));
        assert!(!hot(&d, "bad_ips", &ipv("10.1.2.3")));
        assert!(hot(&d, "bad_ips", &ipv("192.0.2.100")));
    }

    #[test]
    fn ipv6_addresses_and_networks() {
        let d = data();
        let now = at(0);
        ok(d.add("bad_ips", "2001:db8:1::/48", None, "api", now));
        ok(d.add("bad_ips", "2001:DB8:0:0:0:0:0:9", None, "api", now));
        assert!(hot(&d, "bad_ips", &ipv("2001:db8:1::")));
        assert!(hot(
            &d,
            "bad_ips",
            &ipv("2001:db8:1:ffff:ffff:ffff:ffff:ffff")
        ));
        assert!(!hot(&d, "bad_ips", &ipv("2001:db8:2::")));
        assert!(hot(&d, "bad_ips", &ipv("2001:db8::9")));
        assert!(!hot(&d, "bad_ips", &ipv("2001:db8::a")));
        assert!(hot(&d, "bad_ips", &FieldValue::Str("2001:db8::9")));
        let values: Vec<String> = ok(d.entries("bad_ips"))
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(values, strings(&["2001:db8:1::/48", "2001:db8::9"]));
    }

    #[test]
    fn string_sets_compare_case_insensitively() {
        let d = data();
        let now = at(0);
        ok(d.add("svc_accounts", "SVC_Backup", None, "api", now));
        ok(d.add("svc_accounts", "  oracle ", None, "api", now));
        ok(d.add("svc_accounts", "8080", None, "api", now));
        assert!(hot(&d, "svc_accounts", &FieldValue::Str("svc_backup")));
        assert!(hot(&d, "svc_accounts", &FieldValue::Str("SVC_BACKUP")));
        assert!(hot(&d, "svc_accounts", &FieldValue::Str("Oracle")));
        assert!(!hot(&d, "svc_accounts", &FieldValue::Str("oracle ")));
        assert!(!hot(&d, "svc_accounts", &FieldValue::Str("svc_backup2")));
        assert!(
            hot(&d, "svc_accounts", &FieldValue::Int(8080)),
            "numbers as text"
        );
        assert!(!hot(&d, "svc_accounts", &FieldValue::Int(-8080)));
        assert!(has(&d, "svc_accounts", "ORACLE", now));
        assert!(ok(d.remove("svc_accounts", "svc_BACKUP")));
        assert!(!hot(&d, "svc_accounts", &FieldValue::Str("svc_backup")));
        let values: Vec<String> = ok(d.entries("svc_accounts"))
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(
            values,
            strings(&["8080", "oracle"]),
            "stored lowercase, sorted"
        );
    }

    #[test]
    fn invalid_values_and_ttls_are_refused() {
        let d = data();
        let now = at(0);
        for v in ["not-an-ip", "10.0.0.0/33", "", "192.0.2.1 x"] {
            match d.add("bad_ips", v, None, "api", now) {
                Err(RefError::InvalidValue { set, value, .. }) => {
                    assert_eq!((set.as_str(), value.as_str()), ("bad_ips", v));
                }
                other => panic!("{v:?}: {other:?}"),
            }
        }
        assert!(matches!(
            d.add("svc_accounts", "   ", None, "api", now),
            Err(RefError::InvalidValue { .. })
        ));
        assert!(matches!(
            d.add(
                "svc_accounts",
                &"x".repeat(MAX_TEXT_LEN + 1),
                None,
                "api",
                now
            ),
            Err(RefError::InvalidValue { .. })
        ));
        assert!(matches!(
            d.add("bad_ips", "192.0.2.1", Some(Duration::zero()), "api", now),
            Err(RefError::InvalidValue { .. })
        ));
        assert!(ok(d.entries("bad_ips")).is_empty());
        assert!(ok(d.entries("svc_accounts")).is_empty());
    }

    #[test]
    fn entries_expire_at_their_ttl_and_re_adding_keeps_the_later_expiry() {
        let d = data();
        ok(d.add(
            "bad_ips",
            "192.0.2.1",
            Some(Duration::seconds(60)),
            "api",
            at(0),
        ));
        ok(d.add(
            "bad_ips",
            "10.0.0.0/8",
            Some(Duration::seconds(30)),
            "api",
            at(0),
        ));
        ok(d.add(
            "svc_accounts",
            "temp",
            Some(Duration::seconds(10)),
            "api",
            at(0),
        ));
        // Re-adding with a shorter TTL does not shorten; a longer one extends.
        ok(d.add(
            "bad_ips",
            "192.0.2.1",
            Some(Duration::seconds(5)),
            "api",
            at(10),
        ));
        ok(d.add(
            "bad_ips",
            "192.0.2.1",
            Some(Duration::seconds(100)),
            "api",
            at(20),
        ));
        // None (never) wins over any expiry.
        ok(d.add(
            "bad_ips",
            "192.0.2.99",
            Some(Duration::seconds(1)),
            "api",
            at(0),
        ));
        ok(d.add("bad_ips", "192.0.2.99", None, "api", at(0)));
        ok(d.add(
            "bad_ips",
            "192.0.2.99",
            Some(Duration::seconds(1)),
            "api",
            at(0),
        ));

        assert_eq!(d.expire(at(9)), 0, "nothing due yet");
        assert!(has(&d, "bad_ips", "10.1.1.1", at(29)));
        assert!(
            !has(&d, "bad_ips", "10.1.1.1", at(30)),
            "contains_value checks the clock"
        );
        assert!(
            hot(&d, "bad_ips", &ipv("10.1.1.1")),
            "the hot path waits for expire()"
        );
        assert_eq!(
            d.expire(at(30)),
            2,
            "the string at 10 s and the network at 30 s"
        );
        assert!(
            !hot(&d, "bad_ips", &ipv("10.1.1.1")),
            "network gone from the prefix set"
        );
        assert!(!hot(&d, "svc_accounts", &FieldValue::Str("temp")));
        assert!(hot(&d, "bad_ips", &ipv("192.0.2.1")));
        assert_eq!(
            ok(d.entries("bad_ips"))
                .iter()
                .find(|e| e.value == "192.0.2.1")
                .and_then(|e| e.expires),
            Some(at(120))
        );
        assert_eq!(d.expire(at(119)), 0);
        assert_eq!(d.expire(at(120)), 1);
        assert!(!hot(&d, "bad_ips", &ipv("192.0.2.1")));
        assert!(hot(&d, "bad_ips", &ipv("192.0.2.99")), "never expires");
        assert_eq!(d.expire(at(1_000_000)), 0);
    }

    #[test]
    fn replace_source_adds_and_removes_only_that_sources_entries() {
        let d = data();
        let now = at(0);
        let feed = "file:/etc/vigil/feed.netset";
        ok(d.add("bad_ips", "192.0.2.1", None, "api", now));
        ok(d.add("bad_ips", "192.0.2.2", None, "rule:brute_force", now));
        let r = ok(d.replace_source(
            "bad_ips",
            feed,
            &strings(&["192.0.2.1", "10.0.0.0/8", "198.51.100.0/24", "203.0.113.5"]),
            None,
            now,
        ));
        assert_eq!(
            r,
            ReplaceReport {
                added: 4,
                removed: 0,
                kept: 0,
                updated: 0,
                entries: 5
            }
        );
        assert!(hot(&d, "bad_ips", &ipv("10.9.9.9")));
        // The next refresh drops 192.0.2.1 and 10/8 and adds 172.16/12.
        let r = ok(d.replace_source(
            "bad_ips",
            feed,
            &strings(&[
                "198.51.100.0/24",
                "203.0.113.5",
                "172.16.0.0/12",
                "203.0.113.5",
            ]),
            None,
            at(60),
        ));
        assert_eq!((r.added, r.removed, r.kept, r.entries), (1, 2, 2, 5));
        assert!(!hot(&d, "bad_ips", &ipv("10.9.9.9")), "network withdrawn");
        assert!(hot(&d, "bad_ips", &ipv("172.16.1.1")), "network added");
        assert!(
            hot(&d, "bad_ips", &ipv("192.0.2.1")),
            "still held by the API"
        );
        assert!(
            hot(&d, "bad_ips", &ipv("192.0.2.2")),
            "other sources untouched"
        );
        let e = ok(d.entries("bad_ips"));
        let rows: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.value.as_str(), e.source.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("172.16.0.0/12", feed),
                ("192.0.2.1", "api"),
                ("192.0.2.2", "rule:brute_force"),
                ("198.51.100.0/24", feed),
                ("203.0.113.5", feed),
            ]
        );
        // An empty refresh withdraws everything the source held, nothing else.
        let r = ok(d.replace_source("bad_ips", feed, &[], None, at(120)));
        assert_eq!((r.added, r.removed, r.entries), (0, 3, 2));
        assert!(!hot(&d, "bad_ips", &ipv("198.51.100.9")));
    }

    #[test]
    fn a_value_held_by_two_sources_stays_until_both_let_go() {
        let d = data();
        ok(d.add("bad_ips", "192.0.2.1", None, "api", at(0)));
        ok(d.replace_source(
            "bad_ips",
            "url:http://x/feed",
            &strings(&["192.0.2.1"]),
            Some(Duration::seconds(10)),
            at(0),
        ));
        assert_eq!(ok(d.entries("bad_ips")).len(), 2, "one entry per source");
        assert_eq!(d.expire(at(10)), 1, "the feed's claim expired");
        assert!(
            hot(&d, "bad_ips", &ipv("192.0.2.1")),
            "the API's claim holds it"
        );
        assert_eq!(d.summaries()[0].entries, 1);
    }

    #[test]
    fn replace_source_is_all_or_nothing() {
        let d = data().with_max_entries(3);
        let now = at(0);
        ok(d.replace_source("bad_ips", "file:a", &strings(&["192.0.2.1"]), None, now));
        let bad = d.replace_source(
            "bad_ips",
            "file:a",
            &strings(&["192.0.2.2", "nope"]),
            None,
            now,
        );
        assert!(matches!(bad, Err(RefError::InvalidValue { ref value, .. }) if value == "nope"));
        let big = d.replace_source(
            "bad_ips",
            "file:a",
            &strings(&["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"]),
            None,
            now,
        );
        assert!(
            matches!(big, Err(RefError::TooLarge { limit: 3, .. })),
            "{big:?}"
        );
        let values: Vec<String> = ok(d.entries("bad_ips"))
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(
            values,
            strings(&["192.0.2.1"]),
            "unchanged after both failures"
        );
        // Replacing within the cap works: the old value leaves as the new ones come.
        let r = ok(d.replace_source(
            "bad_ips",
            "file:a",
            &strings(&["192.0.2.2", "192.0.2.3", "192.0.2.4"]),
            None,
            now,
        ));
        assert_eq!(r.entries, 3);
        assert!(matches!(
            d.add("bad_ips", "192.0.2.9", None, "api", now),
            Err(RefError::TooLarge { .. })
        ));
        ok(d.add("bad_ips", "192.0.2.2", None, "api", now)); // existing value: no growth
    }

    // --- maps ---------------------------------------------------------------------------------

    #[test]
    fn maps_put_get_remove_and_expire() {
        let d = data();
        ok(d.map_put("owners", "192.0.2.10", "alice", None, "api", at(0)));
        ok(d.map_put(
            "owners",
            "192.0.2.11",
            "bob",
            Some(Duration::seconds(30)),
            "api",
            at(0),
        ));
        assert_eq!(
            d.map_get("owners", "192.0.2.10", at(0)).as_deref(),
            Some("alice")
        );
        assert_eq!(
            d.map_get("owners", "192.0.2.11", at(29)).as_deref(),
            Some("bob")
        );
        assert_eq!(
            d.map_get("owners", "192.0.2.11", at(30)),
            None,
            "expired at 30 s"
        );
        assert_eq!(d.map_get("owners", "nope", at(0)), None);
        assert_eq!(d.map_get("no_such_map", "192.0.2.10", at(0)), None);
        // Same source: the value changes, the later expiry stays.
        ok(d.map_put(
            "owners",
            "192.0.2.11",
            "carol",
            Some(Duration::seconds(5)),
            "api",
            at(10),
        ));
        assert_eq!(
            d.map_get("owners", "192.0.2.11", at(29)).as_deref(),
            Some("carol")
        );
        assert_eq!(d.expire(at(29)), 0);
        assert_eq!(d.expire(at(30)), 1);
        assert_eq!(ok(d.map_entries("owners")).len(), 1);
        assert!(ok(d.map_remove("owners", "192.0.2.10")));
        assert!(!ok(d.map_remove("owners", "192.0.2.10")));
        assert!(ok(d.map_entries("owners")).is_empty());
        assert!(matches!(
            d.map_put("owners", "", "x", None, "api", at(0)),
            Err(RefError::InvalidValue { .. })
        ));
    }

    #[test]
    fn map_csv_loads_through_replace_map_source() {
        let d = data();
        let (pairs, _) = ReferenceData::parse_map_csv(&fixture("asset_owners.csv"));
        ok(d.map_put("owners", "192.0.2.99", "manual", None, "api", at(0)));
        let src = "file:asset_owners.csv";
        let r = ok(d.replace_map_source("owners", src, &pairs, None, at(0)));
        assert_eq!((r.added, r.removed, r.entries), (3, 0, 4));
        assert_eq!(
            d.map_get("owners", "192.0.2.11", at(0)).as_deref(),
            Some("Ops, Team B")
        );
        let next = vec![
            ("192.0.2.10".to_string(), "alice".to_string()),
            ("192.0.2.11".to_string(), "Ops".to_string()),
        ];
        let r = ok(d.replace_map_source("owners", src, &next, None, at(1)));
        assert_eq!(
            (r.added, r.removed, r.kept, r.updated, r.entries),
            (0, 1, 1, 1, 3)
        );
        assert_eq!(d.map_get("owners", "quoted key", at(1)), None, "withdrawn");
        assert_eq!(
            d.map_get("owners", "192.0.2.99", at(1)).as_deref(),
            Some("manual")
        );
        let keys: Vec<(String, String)> = ok(d.map_entries("owners"))
            .into_iter()
            .map(|e| (e.key, e.source))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("192.0.2.10".to_string(), src.to_string()),
                ("192.0.2.11".to_string(), src.to_string()),
                ("192.0.2.99".to_string(), "api".to_string()),
            ]
        );
    }

    // --- the rule-facing trait, names, errors -----------------------------------------------------

    #[test]
    fn reference_lookup_resolves_ids_and_matches_field_values() {
        let d = data();
        ok(d.replace_source(
            "bad_ips",
            "file:f",
            &strings(&["203.0.113.0/24", "192.0.2.1", "2001:db8::/32"]),
            None,
            at(0),
        ));
        ok(d.add("svc_accounts", "Admin", None, "api", at(0)));
        assert_eq!(d.set_id("bad_ips"), Some(0));
        assert_eq!(d.set_id("svc_accounts"), Some(1));
        assert_eq!(d.set_id("owners"), None, "maps are not sets");
        assert_eq!(d.set_id("missing"), None);
        let ips = d.set_id("bad_ips").unwrap_or(usize::MAX);
        assert!(d.contains(ips, &ipv("203.0.113.200")));
        assert!(d.contains(ips, &ipv("192.0.2.1")));
        assert!(d.contains(ips, &ipv("2001:db8:ffff::1")));
        assert!(!d.contains(ips, &ipv("192.0.2.2")));
        assert!(
            d.contains(ips, &FieldValue::Str("203.0.113.9")),
            "text parsed as an address"
        );
        assert!(!d.contains(ips, &FieldValue::Str("not an ip")));
        assert!(!d.contains(ips, &FieldValue::Int(1)));
        assert!(!d.contains(ips, &FieldValue::Time(at(0))));
        let names = d.set_id("svc_accounts").unwrap_or(usize::MAX);
        assert!(d.contains(names, &FieldValue::Str("ADMIN")));
        assert!(
            !d.contains(names, &ipv("192.0.2.1")),
            "an address as text is not in it"
        );
        assert!(
            !d.contains(99, &ipv("192.0.2.1")),
            "an unknown id matches nothing"
        );
        assert!(format!("{d:?}").contains("bad_ips"));
    }

    #[test]
    fn the_rule_engine_compiles_and_matches_refset_rules_against_live_data() {
        use vigil_correlate::{LoadOptions, RuleSet, RuleSource};
        use vigil_parsers::event::Event;

        let d = std::sync::Arc::new(data());
        ok(d.add("bad_ips", "198.51.100.0/24", None, "api", at(0)));
        let lookup: std::sync::Arc<dyn ReferenceLookup> = d.clone();
        let rule = "title: Contact with a listed address\nname: listed_contact\n\
                    detection:\n  dst: {destination.ip|refset: bad_ips}\n  \
                    svc: {user.name|refset: svc_accounts}\n  condition: dst and not svc\n";
        let (set, errors) = RuleSet::from_sources_with(
            &[RuleSource {
                path: "listed.yml".into(),
                text: rule.into(),
            }],
            &LoadOptions {
                apply_unserved_logsources: true,
                reference: Some(lookup),
                ..Default::default()
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        let hit = |ip: &str, user: &str| {
            let mut e = Event::new(at(0), at(0));
            e.set("destination.ip", ip)
                .unwrap_or_else(|e| panic!("{e:?}"));
            e.set("user.name", user).unwrap_or_else(|e| panic!("{e:?}"));
            !set.matching_rules(&e).is_empty()
        };
        assert!(hit("198.51.100.42", "bob"));
        assert!(!hit("198.51.101.42", "bob"));
        // Changes after the rule compiled are seen (from another thread, as the API would).
        let d2 = std::sync::Arc::clone(&d);
        std::thread::spawn(move || {
            ok(d2.add("bad_ips", "192.0.2.5", None, "api", at(1)));
            ok(d2.add("svc_accounts", "SVC_X", None, "api", at(1)));
        })
        .join()
        .unwrap_or_else(|_| panic!("writer thread panicked"));
        assert!(hit("192.0.2.5", "bob"));
        assert!(!hit("192.0.2.5", "svc_x"), "excluded by the string set");
        assert!(ok(d.remove("bad_ips", "198.51.100.0/24")));
        assert!(!hit("198.51.100.42", "bob"));
    }

    #[test]
    fn unknown_sets_and_maps_are_errors() {
        let d = data();
        let now = at(0);
        let unknown_set = |r: Result<(), RefError>| {
            assert!(
                matches!(r, Err(RefError::UnknownSet(ref n)) if n == "nope"),
                "{r:?}"
            );
        };
        unknown_set(d.add("nope", "192.0.2.1", None, "api", now));
        unknown_set(d.remove("nope", "x").map(|_| ()));
        unknown_set(d.replace_source("nope", "api", &[], None, now).map(|_| ()));
        unknown_set(d.entries("nope").map(|_| ()));
        unknown_set(d.contains_value("nope", "x", now).map(|_| ()));
        assert!(
            matches!(
                d.add("owners", "x", None, "api", now),
                Err(RefError::UnknownSet(_))
            ),
            "a map is not a set"
        );
        let unknown_map = |r: Result<(), RefError>| {
            assert!(
                matches!(r, Err(RefError::UnknownMap(ref n)) if n == "nope"),
                "{r:?}"
            );
        };
        unknown_map(d.map_put("nope", "k", "v", None, "api", now));
        unknown_map(d.map_remove("nope", "k").map(|_| ()));
        unknown_map(
            d.replace_map_source("nope", "api", &[], None, now)
                .map(|_| ()),
        );
        unknown_map(d.map_entries("nope").map(|_| ()));
        assert!(
            matches!(
                d.map_put("bad_ips", "k", "v", None, "api", now),
                Err(RefError::UnknownMap(_))
            ),
            "a set is not a map"
        );
        assert_eq!(
            RefError::UnknownSet("nope".into()).to_string(),
            "no reference set named \"nope\""
        );
    }

    #[test]
    fn summaries_list_sets_then_maps_with_counts() {
        let d = data();
        ok(d.add("bad_ips", "192.0.2.1", None, "api", at(0)));
        ok(d.add("bad_ips", "10.0.0.0/8", None, "api", at(0)));
        ok(d.map_put("owners", "k", "v", None, "api", at(0)));
        let s: Vec<(String, &str, usize)> = d
            .summaries()
            .into_iter()
            .map(|s| (s.name, s.kind, s.entries))
            .collect();
        assert_eq!(
            s,
            vec![
                ("bad_ips".to_string(), "ip", 2),
                ("svc_accounts".to_string(), "string", 0),
                ("owners".to_string(), "map", 1),
            ]
        );
    }

    #[test]
    fn read_text_file_reports_missing_and_oversized_files() {
        let missing = read_text_file(Path::new("/nonexistent/vigil/list.txt"), 100);
        assert!(matches!(missing, Err(RefError::Io { .. })), "{missing:?}");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/refdata/mixed.txt");
        let big = read_text_file(&path, 10);
        assert!(
            matches!(
                big,
                Err(RefError::TooLarge {
                    limit: 10,
                    unit: "bytes",
                    ..
                })
            ),
            "{big:?}"
        );
    }

    // --- fetching -----------------------------------------------------------------------------

    /// Serves one canned HTTP/1.1 response on 127.0.0.1 and returns the base URL.
    async fn serve_once(response: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            if let Ok((mut sock, _)) = listener.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    fn response(status: &str, body: &str, length: bool) -> Vec<u8> {
        let mut r =
            format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nConnection: close\r\n");
        if length {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r.into_bytes()
    }

    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test]
    async fn fetch_url_returns_the_body_of_a_200() {
        let body = fixture("firehol_level1.netset");
        let base = serve_once(response("200 OK", &body, true)).await;
        let text = fetch_url(&format!("{base}/firehol_level1.netset"), 1 << 20, WAIT).await;
        let text = text.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, body);
        assert_eq!(
            ReferenceData::parse_list(SetKind::Ip, &text).values.len(),
            6
        );
    }

    #[tokio::test]
    async fn fetch_url_refuses_a_404() {
        let base = serve_once(response("404 Not Found", "no such list", true)).await;
        match fetch_url(&format!("{base}/missing.netset"), 1 << 20, WAIT).await {
            Err(RefError::Fetch { reason, .. }) => assert_eq!(reason, "HTTP status 404 Not Found"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn fetch_url_stops_at_max_bytes() {
        let body = "192.0.2.1\n".repeat(1000);
        // No Content-Length: the body is read until the limit trips.
        let base = serve_once(response("200 OK", &body, false)).await;
        match fetch_url(&format!("{base}/big"), 4096, WAIT).await {
            Err(RefError::Fetch { reason, .. }) => {
                assert_eq!(reason, "the body is larger than 4096 bytes");
            }
            other => panic!("{other:?}"),
        }
        // With a Content-Length over the limit, it is refused before reading.
        let base = serve_once(response("200 OK", &body, true)).await;
        match fetch_url(&format!("{base}/big"), 4096, WAIT).await {
            Err(RefError::Fetch { reason, .. }) => {
                assert_eq!(reason, "the body is larger than 4096 bytes");
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        let base = serve_once(response("200 OK", &body, false)).await;
        let text = fetch_url(&format!("{base}/big"), body.len(), WAIT).await;
        assert_eq!(text.map(|t| t.len()).ok(), Some(body.len()));
    }

    #[tokio::test]
    async fn fetch_url_refuses_https_other_schemes_non_utf8_and_slow_servers() {
        match fetch_url("https://example.invalid/list", 100, WAIT).await {
            Err(RefError::Fetch { reason, .. }) => assert_eq!(
                reason,
                "https is not supported yet; use a file or an http mirror"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            fetch_url("ftp://example.invalid/list", 100, WAIT).await,
            Err(RefError::Fetch { .. })
        ));
        let mut bin = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec();
        bin.extend_from_slice(&[0xff, 0xfe]);
        let base = serve_once(bin).await;
        match fetch_url(&format!("{base}/bin"), 100, WAIT).await {
            Err(RefError::Fetch { reason, .. }) => {
                assert!(reason.contains("not UTF-8"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let hold = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            drop(conn);
        });
        let slow = fetch_url(
            &format!("http://{addr}/slow"),
            100,
            std::time::Duration::from_millis(200),
        )
        .await;
        hold.abort();
        match slow {
            Err(RefError::Fetch { reason, .. }) => assert_eq!(reason, "timed out after 200 ms"),
            other => panic!("{other:?}"),
        }
    }
}
