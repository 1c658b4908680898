//! The searchable event store of embedded mode: every normalized log event (flows have their
//! own file, see [`super::flows`]) in `data_dir/events.db`, a SQLite file of its own so its writes never wait on the
//! engine's offense transactions, written by its own thread.
//!
//! Invariants:
//! - bounded: at most `store.max_events` rows (the oldest are deleted, counted), and at most
//!   `store.event_queue` events waiting for the writer; beyond that a batch is not stored and
//!   is counted (`vigil_store_events_dropped_total{reason="queue_full"}`). Offenses never
//!   depend on this store: an event dropped here still counted in its rules and offenses, and
//!   offenses keep their own evidence (`offense_events`).
//! - searches are bounded too: a time range of at most [`MAX_RANGE_HOURS`], a page of at most
//!   `api.max_page_size`, an offset of at most [`MAX_OFFSET`], and [`QUERY_BUDGET`] of SQLite
//!   work, after which the query is interrupted and the caller told to narrow it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params_from_iter, Connection};
use vigil_parsers::Event;

use super::writer::{Names, Sink, Table};
use super::StoreError;
use crate::telemetry::Metrics;

/// Longest time range one search may cover.
pub const MAX_RANGE_HOURS: i64 = 7 * 24;
/// Deepest offset a search may page to (narrow the range instead).
pub const MAX_OFFSET: u64 = 10_000;
/// Wall-clock budget of one search before SQLite interrupts it.
pub const QUERY_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    source_ip TEXT,
    destination_ip TEXT,
    user_name TEXT,
    host_name TEXT,
    category TEXT,
    outcome TEXT,
    dataset TEXT,
    message TEXT,
    json TEXT NOT NULL,
    raw BLOB NOT NULL,
    event_bin BLOB
);
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_by_source ON events (source_ip, ts);
DROP INDEX IF EXISTS events_by_destination;
DROP INDEX IF EXISTS events_by_user;";

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

impl EventStore {
    /// Opens (creating) the file for writing.
    pub fn open(path: &Path) -> Result<EventStore, StoreError> {
        // SQLite's default 2 MiB: at 64 MiB the commits' walk of the cache took a fifth of this
        // writer's CPU (BENCHMARKS.md, "End to end, night of 2026-11-29/30").
        let conn = super::writer::open_for_writing(path, SCHEMA, 2)?;
        add_binary_column(&conn)?;
        Ok(EventStore { conn })
    }

    /// Opens the file for searching (the API); a store not yet created is created empty.
    pub fn open_reader(path: &Path) -> Result<EventStore, StoreError> {
        let conn = super::writer::open_for_reading(path, SCHEMA)?;
        Ok(EventStore { conn })
    }

    /// Stores `events` in one transaction and deletes the oldest rows beyond `max_kept`;
    /// returns how many it deleted.
    pub fn insert(&mut self, events: &[Arc<Event>], max_kept: u64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (ts, source_ip, destination_ip, user_name, host_name,
                    category, outcome, dataset, message, json, raw, event_bin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '', X'', ?10)",
            )?;
            let mut bin = Vec::new();
            for e in events {
                bin.clear();
                vigil_parsers::codec::encode(e, &mut bin);
                stmt.execute(rusqlite::params![
                    e.timestamp.timestamp_millis(),
                    e.source_ip.map(|ip| ip.to_string()),
                    e.destination_ip.map(|ip| ip.to_string()),
                    e.user_name,
                    e.host_name,
                    e.category,
                    e.outcome,
                    e.dataset,
                    e.message,
                    bin,
                ])?;
            }
        }
        let last = tx.last_insert_rowid();
        let cut = last - i64::try_from(max_kept).unwrap_or(i64::MAX);
        let evicted = if cut > 0 {
            tx.execute("DELETE FROM events WHERE id <= ?1", [cut])? as u64
        } else {
            0
        };
        tx.commit()?;
        Ok(evicted)
    }

    /// Events matching `q`, newest first, and whether there are more. Interrupted (see
    /// [`is_interrupted`]) after [`QUERY_BUDGET`].
    pub fn search(&self, q: &EventSearch) -> Result<(Vec<Event>, bool), StoreError> {
        self.search_within(q, QUERY_BUDGET)
    }

    /// [`EventStore::search`] with another time budget.
    pub fn search_within(
        &self,
        q: &EventSearch,
        budget: std::time::Duration,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let mut sql =
            String::from("SELECT json, raw, event_bin FROM events WHERE ts >= ? AND ts < ?");
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
        sql.push_str(" ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?");
        args.push(
            i64::try_from(q.limit.saturating_add(1))
                .unwrap_or(i64::MAX)
                .into(),
        );
        args.push(i64::try_from(q.offset).unwrap_or(i64::MAX).into());
        let deadline = std::time::Instant::now() + budget;
        self.conn
            .progress_handler(10_000, Some(move || std::time::Instant::now() > deadline));
        let result = (|| -> Result<Vec<Event>, StoreError> {
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (json, raw, bin) = row?;
                out.push(super::stored_event(&json, raw, bin.as_deref())?);
            }
            Ok(out)
        })();
        self.conn.progress_handler(0, None::<fn() -> bool>);
        let mut out = result?;
        let more = out.len() as u64 > q.limit;
        out.truncate(usize::try_from(q.limit).unwrap_or(usize::MAX));
        Ok((out, more))
    }
}

/// Rows are the event in the binary codec (`event_bin`; `json` and `raw` left empty): encoding
/// it costs a fraction of serializing JSON, on the writer that competes with the engine for
/// CPU. Files written by an older build have JSON rows and no such column: it is added, and
/// both kinds of row are read.
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
    queue_limit: usize,
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
    super::writer::spawn(
        EventStore::open(path)?,
        names,
        max_kept,
        queue_limit,
        metrics,
    )
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
        assert_eq!(store.insert(&events, 25).unwrap(), 5, "bounded to 25 rows");
        // Rows 5..30 remain.
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
        q.offset = 20;
        let (hits, more) = store.search(&q).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(!more);
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
        let (sink, handle) =
            spawn_writer(&dir.path().join("events.db"), 1_000, 3, &metrics).unwrap();
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
        let bin_rows: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM events WHERE event_bin IS NOT NULL AND json = ''",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bin_rows, 1, "new rows are stored in the binary codec");
    }
}
