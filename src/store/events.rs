//! The searchable event store of embedded mode: every normalized log event (flows have their
//! own file, see [`super::flows`]) in `data_dir/events.db`, a SQLite file of its own so its
//! writes never wait on the engine's offense transactions, written by its own thread.
//!
//! Events are kept in blocks, not rows: up to [`BLOCK_EVENTS`] events of one write, in the
//! binary codec, LZ4-compressed, with the block's time range and the sorted hashes of its
//! searchable values (addresses, user, host, category, outcome, dataset). A row per event with
//! two indexes cost the writer about 7.5 µs an event, most of it SQLite writing each page
//! twice (log, then checkpoint); a block costs about 2 µs an event (BENCHMARKS.md, "End to
//! end, 2026-11-30 afternoon"). A search reads the blocks overlapping its time range, newest
//! first, skips those whose hashes lack a value it asks for, and stops once no event of a
//! block can be newer than the page's oldest (by time, then arrival: blocks of one instant
//! stop the search too once the page holds later arrivals). Files of older builds keep their row table
//! (`events`): it is searched too, its rows are evicted first, and it is dropped once empty.
//!
//! Invariants:
//! - bounded: at most `store.max_events` events, plus up to one block (whole blocks are
//!   deleted, oldest first, counted), and at most `store.event_queue` events waiting for the
//!   writer; beyond that a batch is not stored and is counted
//!   (`vigil_store_events_dropped_total{reason="queue_full"}`). Offenses never depend on this
//!   store: an event dropped here still counted in its rules and offenses, and offenses keep
//!   their own evidence (`offense_events`).
//! - a search answers what a filter and sort of every stored event would (newest first by
//!   time, then arrival; tested against that on random data); a block's hashes only ever skip
//!   blocks, the events themselves are compared.
//! - searches are bounded too: a time range of at most [`MAX_RANGE_HOURS`], a page of at most
//!   `api.max_page_size`, an offset of at most [`MAX_OFFSET`], and [`QUERY_BUDGET`] of work,
//!   after which the search is interrupted and the caller told to narrow it; a block is never
//!   decompressed beyond [`MAX_BLOCK_BYTES`] (a corrupt size is an error, not an allocation).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params_from_iter, Connection};
use vigil_parsers::Event;

use super::blocks::{holds_key, ip_key, value_key, BlockMeta, BlockWriter, Framed};
use super::writer::{Names, Sink, Table};
use super::StoreError;
use crate::telemetry::Metrics;

/// Longest time range one search may cover.
pub const MAX_RANGE_HOURS: i64 = 7 * 24;
/// Deepest offset a search may page to (narrow the range instead).
pub const MAX_OFFSET: u64 = 10_000;
/// Wall-clock budget of one search before SQLite interrupts it.
pub const QUERY_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// What to search for (the API's `GET /api/v1/events` query, checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSearch {
    /// Event time from (inclusive).
    pub from: DateTime<Utc>,
    /// Event time to (exclusive).
    pub to: DateTime<Utc>,
    /// Text the message contains (case-insensitive for ASCII).
    pub text: Option<String>,
    /// `source.ip`.
    pub source_ip: Option<IpAddr>,
    /// `destination.ip`.
    pub destination_ip: Option<IpAddr>,
    /// `user.name`.
    pub user: Option<String>,
    /// `host.name`.
    pub host: Option<String>,
    /// `event.category`.
    pub category: Option<String>,
    /// `event.outcome`.
    pub outcome: Option<String>,
    /// `event.dataset`.
    pub dataset: Option<String>,
    /// Page size.
    pub limit: u64,
    /// Rows skipped.
    pub offset: u64,
}

impl EventSearch {
    /// The search's filters as (column, value) pairs, in a fixed order; the SQLite and
    /// ClickHouse searches both build their `WHERE` from it.
    pub fn equalities(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(ip) = self.source_ip {
            out.push(("source_ip", ip.to_string()));
        }
        if let Some(ip) = self.destination_ip {
            out.push(("destination_ip", ip.to_string()));
        }
        for (column, v) in [
            ("user_name", &self.user),
            ("host_name", &self.host),
            ("category", &self.category),
            ("outcome", &self.outcome),
            ("dataset", &self.dataset),
        ] {
            if let Some(v) = v {
                out.push((column, v.clone()));
            }
        }
        out
    }
}

/// The event store (one connection).
pub struct EventStore {
    conn: Connection,
    /// Writer: the row table of builds before blocks (`events`) is present: its rows are
    /// evicted first (they are the oldest), and it is dropped once empty. A search looks for
    /// that table itself, in its own snapshot.
    legacy: bool,
    /// The blocks' writer (`None` for a reader). Events are numbered in arrival order,
    /// across the legacy rows and the blocks.
    blocks: Option<BlockWriter>,
}

/// The store's blocks (see [`super::blocks`]).
const BLOCKS: &str = "event";

impl Framed for Arc<Event> {
    fn time_ms(&self) -> i64 {
        self.timestamp.timestamp_millis()
    }

    fn keys(&self, out: &mut Vec<u64>) {
        event_keys(self, out);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        vigil_parsers::codec::encode(self, out);
    }
}

/// `%`, `_` and `\` in `text` escaped for `LIKE ... ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Whether `e` is SQLite's "interrupted" (a search over its budget).
pub fn is_interrupted(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::OperationInterrupted
    )
}

/// The error of a search stopped at its budget between blocks (the same as SQLite's own).
fn interrupted() -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
        Some("the search ran over its time budget".into()),
    ))
}

/// The searchable fields, each with its own tag in [`value_key`].
const KEY_SOURCE_IP: u8 = 1;
const KEY_DESTINATION_IP: u8 = 2;
const KEY_USER: u8 = 3;
const KEY_HOST: u8 = 4;
const KEY_CATEGORY: u8 = 5;
const KEY_OUTCOME: u8 = 6;
const KEY_DATASET: u8 = 7;

/// The keys of the searchable values present: source and destination address, then user,
/// host, category, outcome and dataset. Blocks and searches both take their keys from here,
/// so a value is hashed the same way on both sides.
fn field_keys(
    source_ip: Option<IpAddr>,
    destination_ip: Option<IpAddr>,
    [user, host, category, outcome, dataset]: [Option<&str>; 5],
    out: &mut Vec<u64>,
) {
    out.extend(source_ip.map(|ip| ip_key(KEY_SOURCE_IP, ip)));
    out.extend(destination_ip.map(|ip| ip_key(KEY_DESTINATION_IP, ip)));
    for (tag, v) in [
        (KEY_USER, user),
        (KEY_HOST, host),
        (KEY_CATEGORY, category),
        (KEY_OUTCOME, outcome),
        (KEY_DATASET, dataset),
    ] {
        out.extend(v.map(|v| value_key(tag, v.as_bytes())));
    }
}

/// The keys of `e`'s searchable values.
fn event_keys(e: &Event, out: &mut Vec<u64>) {
    field_keys(
        e.source_ip,
        e.destination_ip,
        [
            e.user_name.as_deref(),
            e.host_name.as_deref(),
            e.category.as_deref(),
            e.outcome.as_deref(),
            e.dataset.as_deref(),
        ],
        out,
    );
}

impl EventSearch {
    /// The keys a block must hold to contain a match.
    fn keys(&self) -> Vec<u64> {
        let mut out = Vec::new();
        field_keys(
            self.source_ip,
            self.destination_ip,
            [
                self.user.as_deref(),
                self.host.as_deref(),
                self.category.as_deref(),
                self.outcome.as_deref(),
                self.dataset.as_deref(),
            ],
            &mut out,
        );
        out
    }

    /// Whether `e` matches the equalities (the time range is checked apart). `needle`: the
    /// text, ASCII-lowercased; `scratch`: a reused buffer.
    fn matches(&self, e: &Event, needle: Option<&[u8]>, scratch: &mut Vec<u8>) -> bool {
        let same = |want: &Option<String>, have: &Option<vigil_parsers::Text>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        let fields_match = self.source_ip.is_none_or(|ip| e.source_ip == Some(ip))
            && self
                .destination_ip
                .is_none_or(|ip| e.destination_ip == Some(ip))
            && same(&self.user, &e.user_name)
            && same(&self.host, &e.host_name)
            && same(&self.category, &e.category)
            && same(&self.outcome, &e.outcome)
            && same(&self.dataset, &e.dataset);
        if !fields_match {
            return false;
        }
        let Some(needle) = needle else {
            return true;
        };
        // SQLite's LIKE, as the row store searched: case-insensitive for ASCII only, and an
        // event without a message never matches.
        let Some(message) = &e.message else {
            return false;
        };
        scratch.clear();
        scratch.extend(message.bytes().map(|b| b.to_ascii_lowercase()));
        memchr::memmem::find(scratch, needle).is_some()
    }
}

/// A search hit, ordered as results are: by time, then by arrival.
struct Hit {
    ts: i64,
    number: i64,
    event: Event,
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.number) == (other.ts, other.number)
    }
}
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.number).cmp(&(other.ts, other.number))
    }
}

/// The newest `want` hits seen (a bounded min-heap).
struct Newest {
    want: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Hit>>,
}

impl Newest {
    /// Whether a hit at (`ts`, `number`) would be kept.
    fn admits(&self, ts: i64, number: i64) -> bool {
        self.heap.len() < self.want
            || self
                .heap
                .peek()
                .is_some_and(|std::cmp::Reverse(min)| (ts, number) > (min.ts, min.number))
    }

    /// Whether nothing at or before (`ts`, `number`) can be kept any more: the page is full
    /// and its oldest hit is newer.
    fn full_after(&self, ts: i64, number: i64) -> bool {
        self.heap.len() >= self.want
            && self
                .heap
                .peek()
                .is_some_and(|std::cmp::Reverse(min)| (ts, number) < (min.ts, min.number))
    }

    fn push(&mut self, hit: Hit) {
        if self.admits(hit.ts, hit.number) {
            self.heap.push(std::cmp::Reverse(hit));
            if self.heap.len() > self.want {
                self.heap.pop();
            }
        }
    }
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

impl EventStore {
    /// Opens (creating) the file for writing.
    pub fn open(path: &Path) -> Result<EventStore, StoreError> {
        // SQLite's default 2 MiB: at 64 MiB the commits' walk of the cache took a fifth of this
        // writer's CPU (BENCHMARKS.md, "End to end, night of 2026-11-29/30").
        let conn = super::writer::open_for_writing(path, &super::blocks::schema(BLOCKS), 2)?;
        let legacy = table_exists(&conn, "events")?;
        let mut after = 0;
        if legacy {
            add_binary_column(&conn)?;
            after = conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
        }
        let blocks = BlockWriter::open(&conn, BLOCKS, after)?;
        Ok(EventStore {
            conn,
            legacy,
            blocks: Some(blocks),
        })
    }

    /// Opens the file for searching (the API); a store not yet created is created empty.
    pub fn open_reader(path: &Path) -> Result<EventStore, StoreError> {
        let conn = super::writer::open_for_reading(path, &super::blocks::schema(BLOCKS))?;
        Ok(EventStore {
            conn,
            legacy: false,
            blocks: None,
        })
    }

    /// Stores `events` in one transaction and deletes the oldest beyond `max_kept` (whole
    /// blocks: up to a block more is kept); returns how many it deleted.
    pub fn insert(&mut self, events: &[Arc<Event>], max_kept: u64) -> Result<u64, StoreError> {
        let Some(blocks) = self.blocks.as_mut() else {
            return Err(StoreError::Corrupt(
                "the event store was opened for reading".into(),
            ));
        };
        let tx = self.conn.transaction()?;
        let next = blocks.write(&tx, events)?;
        let cut = (next - 1).saturating_sub(i64::try_from(max_kept).unwrap_or(i64::MAX));
        let mut evicted = 0;
        let mut legacy = self.legacy;
        if cut > 0 {
            if legacy {
                evicted += tx.execute("DELETE FROM events WHERE id <= ?1", [cut])? as u64;
                let left: bool =
                    tx.query_row("SELECT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))?;
                if !left {
                    tx.execute_batch("DROP TABLE events")?;
                    legacy = false;
                }
            }
            evicted += blocks.evict(&tx, cut)?;
        }
        tx.commit()?;
        blocks.committed(next);
        self.legacy = legacy;
        Ok(evicted)
    }

    /// Events matching `q`, newest first, and whether there are more. Interrupted (see
    /// [`is_interrupted`]) after [`QUERY_BUDGET`].
    pub fn search(&self, q: &EventSearch) -> Result<(Vec<Event>, bool), StoreError> {
        self.search_within(q, QUERY_BUDGET)
    }

    /// [`EventStore::search`] with another time budget.
    ///
    /// Blocks are read newest last-event first, skipped when their time range misses the
    /// search's or their keys lack a value it asks for, and the search stops at the first
    /// block whose newest event is older than the page's oldest.
    pub fn search_within(
        &self,
        q: &EventSearch,
        budget: std::time::Duration,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let deadline = std::time::Instant::now() + budget;
        // One snapshot for the blocks and the older rows (whose table the writer drops once
        // it is empty), whatever the writer commits meanwhile.
        let _snapshot = self.conn.unchecked_transaction()?;
        let legacy = table_exists(&self.conn, "events")?;
        self.conn
            .progress_handler(10_000, Some(move || std::time::Instant::now() > deadline));
        let want = usize::try_from(q.offset.saturating_add(q.limit).saturating_add(1))
            .unwrap_or(usize::MAX);
        let mut newest = Newest {
            want,
            heap: std::collections::BinaryHeap::new(),
        };
        let result = self
            .search_legacy(q, legacy, want, &mut newest)
            .and_then(|()| self.search_blocks(q, deadline, &mut newest));
        self.conn.progress_handler(0, None::<fn() -> bool>);
        result?;
        let mut hits = newest.heap.into_sorted_vec();
        // Sorted ascending by Reverse: newest first.
        let skip = usize::try_from(q.offset).unwrap_or(usize::MAX);
        let page = usize::try_from(q.limit).unwrap_or(usize::MAX);
        let more = hits.len().saturating_sub(skip) > page;
        let out = hits
            .drain(..)
            .skip(skip)
            .take(page)
            .map(|std::cmp::Reverse(h)| h.event)
            .collect();
        Ok((out, more))
    }

    fn search_blocks(
        &self,
        q: &EventSearch,
        deadline: std::time::Instant,
        newest: &mut Newest,
    ) -> Result<(), StoreError> {
        let (from, to) = (q.from.timestamp_millis(), q.to.timestamp_millis());
        let wanted_keys = q.keys();
        let needle: Option<Vec<u8>> = q.text.as_ref().map(|t| t.to_ascii_lowercase().into_bytes());
        let mut scratch = Vec::new();
        let mut blocks = self.conn.prepare_cached(&format!(
            "SELECT id, first_event, events, ts_max, keys FROM {BLOCKS}_blocks
             WHERE ts_max >= ?1 AND ts_min < ?2 ORDER BY ts_max DESC, id DESC"
        ))?;
        let mut data = self
            .conn
            .prepare_cached(&super::blocks::data_query(BLOCKS))?;
        let mut rows = blocks.query([from, to])?;
        while let Some(row) = rows.next()? {
            if std::time::Instant::now() > deadline {
                return Err(interrupted());
            }
            let block = BlockMeta::from_row(row)?;
            // No event of this block is after (its newest time, its last number); blocks come
            // in that order (newest time, then id, and numbers grow with ids), so neither is
            // any event of the blocks still to come.
            if newest.full_after(block.ts_max, block.first.saturating_add(block.count - 1)) {
                break;
            }
            if !wanted_keys.iter().all(|&k| holds_key(&block.keys, k)) {
                continue;
            }
            let frames = block.frames(&mut data)?;
            // Newest first: within a block time mostly grows with arrival, so once the page
            // is full the older records are refused before they are decoded.
            for (number, ts, bin) in block.records(&frames)?.into_iter().rev() {
                if ts < from || ts >= to || !newest.admits(ts, number) {
                    continue;
                }
                // The message's bytes are in the record as they are: a record whose bytes
                // lack the text (ASCII case folded) cannot match, and is not decoded.
                if let Some(needle) = &needle {
                    scratch.clear();
                    scratch.extend(bin.iter().map(u8::to_ascii_lowercase));
                    if memchr::memmem::find(&scratch, needle).is_none() {
                        continue;
                    }
                }
                let event = super::decoded_event(bin)?;
                if q.matches(&event, needle.as_deref(), &mut scratch) {
                    newest.push(Hit { ts, number, event });
                }
            }
        }
        Ok(())
    }

    /// The rows of an older build's row table (the newest `want` that match).
    fn search_legacy(
        &self,
        q: &EventSearch,
        legacy: bool,
        want: usize,
        newest: &mut Newest,
    ) -> Result<(), StoreError> {
        if !legacy {
            return Ok(());
        }
        let mut sql = String::from(
            "SELECT json, raw, event_bin, ts, id FROM events WHERE ts >= ? AND ts < ?",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            q.from.timestamp_millis().into(),
            q.to.timestamp_millis().into(),
        ];
        for (column, v) in q.equalities() {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.into());
        }
        if let Some(t) = &q.text {
            sql.push_str(" AND message LIKE ? ESCAPE '\\'");
            args.push(like_pattern(t).into());
        }
        sql.push_str(" ORDER BY ts DESC, id DESC LIMIT ?");
        args.push(i64::try_from(want).unwrap_or(i64::MAX).into());
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        for row in rows {
            let (json, raw, bin, ts, id) = row?;
            newest.push(Hit {
                ts,
                number: id,
                event: super::stored_event(&json, raw, bin.as_deref())?,
            });
        }
        Ok(())
    }
}

/// Older builds' row table: rows are the event in the binary codec (`event_bin`; `json` and
/// `raw` left empty), or, older still, JSON with no such column: it is added so both kinds of
/// row are read.
fn add_binary_column(conn: &Connection) -> Result<(), StoreError> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('events') WHERE name = 'event_bin'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE events ADD COLUMN event_bin BLOB")?;
    }
    Ok(())
}

impl Table for EventStore {
    type Row = Arc<Event>;

    fn insert(&mut self, rows: &[Arc<Event>], max_kept: u64) -> Result<u64, StoreError> {
        EventStore::insert(self, rows, max_kept)
    }
}

/// Hands log events to the `events.db` writer (see [`super::writer`]).
pub type EventSink = Sink<Arc<Event>>;

/// Starts the writer thread of `path`; it ends when every [`EventSink`] is dropped, after
/// storing what was queued.
pub fn spawn_writer(
    path: &Path,
    max_kept: u64,
    queue: (usize, super::writer::Overflow),
    metrics: &Metrics,
) -> Result<(EventSink, std::thread::JoinHandle<()>), StoreError> {
    let names = Names {
        thread: "vigil-events",
        rows: "events",
        dropped: (
            "vigil_store_events_dropped_total",
            "Events not kept in the searchable event store (its writer fell behind; offenses are unaffected).",
        ),
        stored: (
            "vigil_store_events_stored_total",
            "Events written to the searchable event store.",
        ),
        evicted: (
            "vigil_store_events_evicted_total",
            "Oldest events deleted from the event store beyond store.max_events.",
        ),
    };
    super::writer::spawn(EventStore::open(path)?, names, max_kept, queue, metrics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(ts: i64, ip: &str, user: &str, message: &str) -> Arc<Event> {
        let mut e = Event::new(
            DateTime::from_timestamp(ts, 0).unwrap(),
            DateTime::from_timestamp(ts, 0).unwrap(),
        );
        e.source_ip = ip.parse().ok();
        e.user_name = Some(user.into());
        e.message = Some(message.into());
        e.dataset = Some("openssh".into());
        Arc::new(e)
    }

    fn search(from: i64, to: i64) -> EventSearch {
        EventSearch {
            from: DateTime::from_timestamp(from, 0).unwrap(),
            to: DateTime::from_timestamp(to, 0).unwrap(),
            limit: 10,
            ..EventSearch::default()
        }
    }

    #[test]
    fn filters_text_range_paging_and_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("events.db")).unwrap();
        let events: Vec<_> = (0..30)
            .map(|i| {
                event(
                    1_000 + i,
                    if i % 2 == 0 {
                        "203.0.113.7"
                    } else {
                        "198.51.100.1"
                    },
                    if i % 3 == 0 { "root" } else { "alice" },
                    &format!("Failed password for user{i} 100%_done"),
                )
            })
            .collect();
        // Three writes, three blocks; the bound drops whole blocks, oldest first.
        assert_eq!(store.insert(&events[..10], 20).unwrap(), 0);
        assert_eq!(store.insert(&events[10..20], 20).unwrap(), 0);
        assert_eq!(
            store.insert(&events[20..], 20).unwrap(),
            10,
            "bounded to 20"
        );
        // Rows 10..30 remain.
        let (all, more) = store.search(&search(0, 10_000)).unwrap();
        assert_eq!(all.len(), 10);
        assert!(more);
        assert_eq!(all[0].timestamp.timestamp(), 1_029, "newest first");
        let mut q = search(1_010, 1_020);
        q.source_ip = "203.0.113.7".parse().ok();
        q.user = Some("root".into());
        let (hits, more) = store.search(&q).unwrap();
        let times: Vec<i64> = hits.iter().map(|e| e.timestamp.timestamp()).collect();
        assert_eq!(times, vec![1_018, 1_012]);
        assert!(!more);
        let mut q = search(0, 10_000);
        q.text = Some("USER17 100%_".into());
        let (hits, _) = store.search(&q).unwrap();
        assert_eq!(hits.len(), 1, "case-insensitive, % and _ literal");
        q.text = Some("user1_ 100".into());
        assert!(store.search(&q).unwrap().0.is_empty(), "_ is no wildcard");
        let mut q = search(0, 10_000);
        q.offset = 15;
        let (hits, more) = store.search(&q).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(!more);
        assert_eq!(hits[4].timestamp.timestamp(), 1_010, "the oldest kept");
    }

    #[test]
    fn a_search_over_its_budget_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("events.db")).unwrap();
        let events: Vec<_> = (0..20_000)
            .map(|i| event(1_000 + i, "203.0.113.7", "root", "Failed password"))
            .collect();
        store.insert(&events, 1_000_000).unwrap();
        let mut q = search(0, 100_000);
        q.text = Some("no such text anywhere".into());
        let err = store
            .search_within(&q, std::time::Duration::ZERO)
            .unwrap_err();
        assert!(is_interrupted(&err), "{err}");
        // The connection is usable afterwards, with the budget lifted.
        assert!(store.search(&q).unwrap().0.is_empty());
    }

    #[test]
    fn the_sink_counts_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (sink, handle) = spawn_writer(
            &dir.path().join("events.db"),
            1_000,
            (3, super::super::writer::Overflow::Shed),
            &metrics,
        )
        .unwrap();
        sink.send((0..5).map(|i| event(i, "192.0.2.1", "u", "m")).collect());
        sink.send((0..2).map(|i| event(i, "192.0.2.1", "u", "m")).collect());
        drop(sink);
        handle.join().unwrap();
        let text = metrics.render();
        assert!(
            text.contains("vigil_store_events_dropped_total{reason=\"queue_full\"} 5"),
            "{text}"
        );
        assert!(text.contains("vigil_store_events_stored_total 2"), "{text}");
        let store = EventStore::open_reader(&dir.path().join("events.db")).unwrap();
        assert_eq!(store.search(&search(0, 100)).unwrap().0.len(), 2);
    }

    /// Waiting (`store.event_overflow = "wait"`), a queue far smaller than what is sent
    /// keeps every event: the sender waits for room instead of dropping.
    #[test]
    fn a_waiting_sink_keeps_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (sink, handle) = spawn_writer(
            &dir.path().join("events.db"),
            100_000,
            (3, super::super::writer::Overflow::Wait),
            &metrics,
        )
        .unwrap();
        let mut sent = 0;
        for b in 0..40 {
            let n = 1 + b % 4;
            sink.send(
                (0..n)
                    .map(|i| event(b * 10 + i, "192.0.2.1", "u", "m"))
                    .collect(),
            );
            sent += n;
        }
        drop(sink);
        handle.join().unwrap();
        let text = metrics.render();
        assert!(
            text.contains("vigil_store_events_dropped_total{reason=\"queue_full\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(&format!("vigil_store_events_stored_total {sent}")),
            "{text}"
        );
        let store = EventStore::open_reader(&dir.path().join("events.db")).unwrap();
        let all = EventSearch {
            limit: 1_000,
            ..search(0, 1_000)
        };
        assert_eq!(store.search(&all).unwrap().0.len(), sent as usize);
    }

    #[test]
    fn rows_keep_the_exact_event_and_older_json_rows_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        // A file as an older build wrote it: no event_bin column, the event as JSON and its
        // raw bytes beside it.
        let old = event(1_000, "203.0.113.7", "root", "old row");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
                    source_ip TEXT, destination_ip TEXT, user_name TEXT, host_name TEXT,
                    category TEXT, outcome TEXT, dataset TEXT, message TEXT,
                    json TEXT NOT NULL, raw BLOB NOT NULL)",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (ts, source_ip, message, json, raw)
                 VALUES (1000000, '203.0.113.7', 'old row', ?1, X'6f6c64ff')",
                [serde_json::to_string(&*old).unwrap()],
            )
            .unwrap();
        }
        let mut store = EventStore::open(&path).unwrap();
        let mut new = (*event(1_001, "203.0.113.7", "root", "new row")).clone();
        new.raw = vec![0xff, 0xfe, b'x', 0];
        new.timestamp += chrono::Duration::nanoseconds(123_456_789);
        new.extra.insert("kv.custom".into(), "value".into());
        store.insert(&[Arc::new(new.clone())], 1_000).unwrap();
        let (found, _) = store.search(&search(0, 2_000)).unwrap();
        assert_eq!(found.len(), 2);
        // Newest first: the new row exactly as sent (raw bytes, nanoseconds, extra fields).
        assert_eq!(found[0], new);
        let mut expected_old = (*old).clone();
        expected_old.raw = b"old\xff".to_vec();
        assert_eq!(found[1], expected_old);
        let legacy_rows: i64 = store
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(legacy_rows, 1, "new events go to blocks, not the old table");
        // Numbers continue after the old rows, and the old rows are evicted first; once
        // empty, the old table is dropped.
        assert_eq!(
            store
                .insert(&[event(1_002, "192.0.2.9", "u", "third")], 2)
                .unwrap(),
            1
        );
        assert!(!table_exists(&store.conn, "events").unwrap());
        let (found, _) = store.search(&search(0, 2_000)).unwrap();
        let messages: Vec<_> = found.iter().map(|e| e.message.clone().unwrap()).collect();
        assert_eq!(messages, vec!["third", "new row"]);
        drop(store);
        let reopened = EventStore::open(&path).unwrap();
        assert_eq!(
            reopened.blocks.as_ref().unwrap().next(),
            4,
            "numbering resumes after a restart"
        );
    }

    /// Searches over many blocks, late events and ties in time give what a plain filter and
    /// sort of every stored event gives, page by page.
    #[test]
    fn block_searches_equal_a_sort_of_everything() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("events.db")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ips = ["203.0.113.7", "198.51.100.1", "2001:db8::4", "192.0.2.1"];
        let users = ["root", "alice", "bob"];
        let mut all = Vec::new();
        for batch in 0..40 {
            let n = rng.random_range(1..300);
            let events: Vec<_> = (0..n)
                .map(|i| {
                    // Mostly in order, some late by up to a minute, many on the same second.
                    let ts = 10_000 + batch * 3 + i / 60 - rng.random_range(0..3) * 2;
                    let mut e = (*event(
                        ts,
                        ips[rng.random_range(0..ips.len())],
                        users[rng.random_range(0..users.len())],
                        if rng.random_bool(0.1) {
                            "Accepted KEY"
                        } else {
                            "Failed password"
                        },
                    ))
                    .clone();
                    if rng.random_bool(0.05) {
                        e.message = None;
                    }
                    Arc::new(e)
                })
                .collect();
            store.insert(&events, 1_000_000).unwrap();
            all.extend(events);
        }
        // Numbered in arrival order from 1: newest first is time, then number, descending.
        let mut numbered: Vec<(i64, i64, Arc<Event>)> = all
            .iter()
            .enumerate()
            .map(|(i, e)| (e.timestamp.timestamp_millis(), i as i64 + 1, Arc::clone(e)))
            .collect();
        numbered.sort_by_key(|b| std::cmp::Reverse((b.0, b.1)));
        let mut scratch = Vec::new();
        for round in 0..1_000 {
            let from = rng.random_range(9_990..10_130);
            let mut q = search(from, from + rng.random_range(1..90));
            q.limit = rng.random_range(1..60);
            q.offset = rng.random_range(0..400);
            if rng.random_bool(0.5) {
                q.source_ip = ips[rng.random_range(0..ips.len())].parse().ok();
            }
            if rng.random_bool(0.3) {
                q.user = Some(users[rng.random_range(0..users.len())].into());
            }
            if rng.random_bool(0.2) {
                q.text = Some("accepted".into());
            }
            let needle = q.text.as_ref().map(|t| t.to_ascii_lowercase().into_bytes());
            let expected: Vec<&Event> = numbered
                .iter()
                .filter(|(ts, _, e)| {
                    *ts >= q.from.timestamp_millis()
                        && *ts < q.to.timestamp_millis()
                        && q.matches(e, needle.as_deref(), &mut scratch)
                })
                .map(|(_, _, e)| &**e)
                .collect();
            let (got, more) = store.search(&q).unwrap();
            let page: Vec<&Event> = expected
                .iter()
                .skip(q.offset as usize)
                .take(q.limit as usize)
                .copied()
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), page, "round {round}: {q:?}");
            assert_eq!(
                more,
                expected.len() > (q.offset + q.limit) as usize,
                "round {round}"
            );
        }
    }

    /// With nothing to keep, the newest block still stays: numbers go on after a restart.
    #[test]
    fn the_newest_block_stays_so_numbers_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let mut store = EventStore::open(&path).unwrap();
        let at = |m| event(1_000, "203.0.113.7", "root", m);
        assert_eq!(store.insert(&[at("a"), at("b")], 0).unwrap(), 0);
        assert_eq!(
            store.insert(&[at("c")], 0).unwrap(),
            2,
            "the older block goes"
        );
        drop(store);
        let mut store = EventStore::open(&path).unwrap();
        assert_eq!(store.blocks.as_ref().unwrap().next(), 4);
        assert_eq!(store.insert(&[at("d")], 0).unwrap(), 1);
        let (found, _) = store.search(&search(0, 2_000)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message.as_deref(), Some("d"));
    }

    /// A later block whose newest event ties the page's oldest in time still holds newer
    /// arrivals at that time: it is read, not skipped.
    #[test]
    fn a_block_tying_the_oldest_of_the_page_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("events.db")).unwrap();
        let at = |ts, m| event(ts, "203.0.113.7", "root", m);
        store
            .insert(&[at(100, "#1"), at(50, "#2"), at(50, "#3")], 100)
            .unwrap();
        store.insert(&[at(50, "#4")], 100).unwrap();
        let mut q = search(0, 1_000);
        q.limit = 2;
        let (page, more) = store.search(&q).unwrap();
        let messages: Vec<_> = page.iter().map(|e| e.message.clone().unwrap()).collect();
        assert_eq!(messages, vec!["#1", "#4"]);
        assert!(more);
    }

    #[test]
    fn a_corrupt_block_is_an_error_not_a_crash_or_a_huge_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EventStore::open(&dir.path().join("events.db")).unwrap();
        store
            .insert(&[event(1_000, "203.0.113.7", "root", "m")], 100)
            .unwrap();
        for bad in [
            vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
            vec![1, 2],
            vec![40, 0, 0, 0, 9],
        ] {
            store
                .conn
                .execute("UPDATE event_block_data SET data = ?1", [&bad])
                .unwrap();
            let err = store.search(&search(0, 2_000));
            assert!(
                matches!(err, Err(StoreError::Corrupt(_))),
                "{bad:?}: {err:?}"
            );
        }
    }
}
