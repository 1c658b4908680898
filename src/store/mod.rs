//! Storage of offenses, their contributing events, dead letters and API credentials.
//!
//! Embedded mode: one SQLite file (rusqlite, bundled SQLite) in WAL mode. The engine thread
//! owns the writing connection; API handlers open their own reading connections and run them
//! with `spawn_blocking`, never on the async threads. Architecture invariant: only this module
//! knows SQL, and every query is parameterized.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use vigil_parsers::Event;

mod blocks;
pub mod clickhouse;
mod cluster;
mod context;
pub mod events;
pub mod flows;
pub mod json_file;
pub mod superflow;
pub mod writer;
pub use flows::StoredFlow;
mod schema;

pub use context::{AuditRecord, DisabledRule, ResponseDecision, StoredAsset, StoredReference};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was written by a newer Vigil.
    #[error("schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

/// Offense status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffenseStatus {
    /// Still collecting matches.
    Open,
    /// Closed by an analyst; later matches open a new offense.
    Closed,
}

impl OffenseStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            OffenseStatus::Open => "open",
            OffenseStatus::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "open" => Ok(OffenseStatus::Open),
            "closed" => Ok(OffenseStatus::Closed),
            other => Err(StoreError::Corrupt(format!("offense status {other:?}"))),
        }
    }
}

/// An offense: what a rule found about one index value (a source IP, a user, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offense {
    /// Deterministic id: hash of (rule, index field, index value, first window start).
    pub id: String,
    /// The rule that raised it.
    pub rule: String,
    /// The rule's title.
    pub title: String,
    /// The field the offense is indexed by (`source.ip`).
    pub index_field: String,
    /// The value it is indexed by (`203.0.113.7`).
    pub index_value: String,
    /// Open or closed.
    pub status: OffenseStatus,
    /// 0-10, from severity, relevance and credibility (see `magnitude_reasons`).
    pub magnitude: u8,
    /// 0-10.
    pub severity: u8,
    /// 0-10.
    pub relevance: u8,
    /// 0-10.
    pub credibility: u8,
    /// Why the magnitude is what it is, one line per factor.
    pub magnitude_reasons: Vec<String>,
    /// Sigma level of the rule.
    pub level: Option<String>,
    /// Rule tags (ATT&CK etc.).
    pub tags: Vec<String>,
    /// Event time of the first contributing event.
    pub first_seen: DateTime<Utc>,
    /// Event time of the last contributing event.
    pub last_seen: DateTime<Utc>,
    /// Contributing events in total (stored ones are capped).
    pub event_count: u64,
    /// Contributing events kept in the store.
    pub stored_events: u64,
    /// Start of the correlation window that first raised it.
    pub window_start: DateTime<Utc>,
    /// When the offense was created (wall clock).
    pub created_at: DateTime<Utc>,
    /// When the offense last changed (wall clock).
    pub updated_at: DateTime<Utc>,
    /// The analyst it is assigned to.
    pub assignee: Option<String>,
    /// Why it was closed.
    pub closing_reason: Option<String>,
    /// When it was closed (wall clock).
    pub closed_at: Option<DateTime<Utc>>,
    /// Flagged for follow-up.
    pub follow_up: bool,
    /// Highest criticality (0-10) of the zones of the hosts its events involve; a floor for
    /// relevance.
    pub asset_criticality: u8,
    /// Which host and zone gave `asset_criticality`.
    pub asset_reason: Option<String>,
}

/// One rule's part in an offense: an offense indexed by a source address collects every rule
/// that fired for that address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffenseRule {
    /// Rule name.
    pub rule: String,
    /// Rule title.
    pub title: String,
    /// Sigma rule id.
    pub rule_id: Option<String>,
    /// Rule author (kept with every offense, as the Detection Rule License asks).
    pub author: Option<String>,
    /// Sigma level.
    pub level: Option<String>,
    /// 0-10.
    pub severity: u8,
    /// 0-10.
    pub relevance: u8,
    /// 0-10.
    pub credibility: u8,
    /// Detections of this rule in the offense (new windows and updates).
    pub detections: u64,
    /// Events this rule contributed.
    pub events: u64,
    /// First contributing event of this rule (event time).
    pub first_seen: DateTime<Utc>,
    /// Last contributing event of this rule (event time).
    pub last_seen: DateTime<Utc>,
}

/// An analyst's note on an offense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffenseNote {
    /// Row id.
    pub id: i64,
    /// Who wrote it.
    pub author: String,
    /// When (wall clock).
    pub created_at: DateTime<Utc>,
    /// The note.
    pub text: String,
}

/// A record that could not become an event, kept with its raw bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Row id (0 before insertion).
    pub id: i64,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Collector kind.
    pub observer_type: String,
    /// Log source identity.
    pub observer_id: String,
    /// Sending peer.
    pub peer: Option<String>,
    /// Stable reason label (`pri`, `invalid_utf8`, `frame_too_long`, ...).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The bytes as received (possibly truncated for oversized frames; see `detail`).
    #[serde(with = "b64")]
    pub raw: Vec<u8>,
}

/// Filters for listing offenses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OffenseFilter {
    /// Only this status.
    pub status: Option<OffenseStatus>,
    /// Only offenses with magnitude at least this.
    pub min_magnitude: Option<u8>,
    /// Only offenses whose last event is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only offenses indexed by this value (an address, a user, an API key).
    pub index_value: Option<String>,
    /// Only offenses this rule contributed to.
    pub rule: Option<String>,
    /// Page size.
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
}

/// The store handle. One writer (the engine thread); readers open their own with
/// [`Store::open_reader`].
pub struct Store {
    conn: Connection,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// An event stored as the binary codec (`bin`: `vigil.db` from migration 13 on, `events.db` and
/// `flows.db` rows of newer builds) or, before, as JSON with its exact bytes beside it.
pub(crate) fn stored_event(
    json: &str,
    raw: Vec<u8>,
    bin: Option<&[u8]>,
) -> Result<Event, StoreError> {
    if let Some(bin) = bin {
        return decoded_event(bin);
    }
    let mut e: Event = serde_json::from_str(json)
        .map_err(|err| StoreError::Corrupt(format!("stored event: {err}")))?;
    e.raw = raw;
    Ok(e)
}

/// An event stored in the binary codec.
pub(crate) fn decoded_event(bin: &[u8]) -> Result<Event, StoreError> {
    vigil_parsers::codec::decode(bin)
        .map_err(|err| StoreError::Corrupt(format!("stored event: {err}")))
}

/// Copies the write-ahead log back into the database file from a thread of its own, so the
/// engine's commits never stop for a checkpoint (SQLite otherwise runs one inside the commit
/// that takes the log past 1,000 pages). Made by [`Store::checkpoint_in_background`]; dropping
/// it stops the thread (the last connection to close checkpoints what is left).
///
/// Bounded: a passive checkpoint every [`Checkpointer::EVERY`] never waits for the writer;
/// when the log has held more than [`Checkpointer::MAX_LOG_PAGES`] for 5 s of them (readers
/// kept it from completing or from starting over), a `RESTART` checkpoint waits up to 100 ms
/// for them so that the next commit writes the log from its start again.
pub struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// How often the thread checkpoints.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(250);
    /// Log pages (4 KiB each) beyond which the thread waits for readers (64 MiB).
    pub const MAX_LOG_PAGES: i64 = 16_384;
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Store {
    /// Stops this connection's own checkpoints and starts a [`Checkpointer`] on `path` (the
    /// file this store was opened from). Keep the checkpointer as long as the connection writes.
    pub fn checkpoint_in_background(&self, path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        // Short: a RESTART that cannot get its way soon gives up and is tried again on the next
        // round, rather than hold the write lock while the engine waits to commit.
        conn.busy_timeout(std::time::Duration::from_millis(100))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        let handle = std::thread::Builder::new()
            .name("vigil-checkpoint".into())
            .spawn(move || {
                let checkpoint = |mode: &str| -> rusqlite::Result<(i64, i64, i64)> {
                    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                };
                // Rounds in a row that ended with the log over its bound.
                let mut over = 0u32;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Checkpointer::EVERY);
                    match checkpoint("PASSIVE") {
                        Ok((_, log, _)) if log > Checkpointer::MAX_LOG_PAGES => over += 1,
                        Ok(_) => over = 0,
                        Err(e) => tracing::warn!(error = %e, "store checkpoint failed"),
                    }
                    // A RESTART holds the write lock while it waits (at most 100 ms): only
                    // after the log stayed over its bound for 20 rounds (5 s), so it can take
                    // at most 2 % of the engine's time.
                    if over >= 20 {
                        over = 0;
                        if let Err(e) = checkpoint("RESTART") {
                            tracing::warn!(error = %e, "store checkpoint (restart) failed");
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("starting the checkpointer: {e}")))?;
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
        })
    }

    /// Opens (creating and migrating) the store file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // SQLite's default page cache (2 MiB). A 64 MiB cache helped while flows were stored
        // here, but on the syslog path every commit walked the larger cache
        // (`pcache1TruncateUnsafe`, a quarter of the engine thread; BENCHMARKS.md, "End to
        // end, night of 2026-11-29/30"). Flows now have flows.db.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// Opens another connection to the same file for reading (API handlers).
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { conn })
    }

    /// A private in-memory store (replay, tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
        };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.conn)
    }

    /// Runs `f` in one transaction (the engine commits each batch this way).
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    // SQLite may leave the transaction open after a failed COMMIT (disk full,
                    // I/O error): end it, or every later BEGIN fails.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The connection itself, for tests that need to break the database on purpose.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection commits to the
    /// database (never for this connection's own commits).
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// The open offense for this index (field and value), whichever rules raised it.
    pub fn find_open_offense(
        &self,
        index_field: &str,
        index_value: &str,
    ) -> Result<Option<Offense>, StoreError> {
        self.latest_offense(index_field, index_value, OffenseStatus::Open)
    }

    /// The most recently closed offense for this index (field and value), if any.
    pub fn find_last_closed_offense(
        &self,
        index_field: &str,
        index_value: &str,
    ) -> Result<Option<Offense>, StoreError> {
        self.latest_offense(index_field, index_value, OffenseStatus::Closed)
    }

    /// The offense with this index and status whose last event is latest.
    fn latest_offense(
        &self,
        index_field: &str,
        index_value: &str,
        status: OffenseStatus,
    ) -> Result<Option<Offense>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OFFENSE_COLUMNS} FROM offenses
             WHERE index_field = ?1 AND index_value = ?2 AND status = ?3
             ORDER BY last_seen DESC, created_at DESC LIMIT 1"
        ))?;
        stmt.query_row(
            params![index_field, index_value, status.as_str()],
            row_to_offense,
        )
        .optional()?
        .transpose()
    }

    /// The rules that contributed to an offense, first contribution first.
    pub fn offense_rules(&self, offense_id: &str) -> Result<Vec<OffenseRule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rule, title, rule_id, author, level, severity, relevance, credibility,
                 detections, events, first_seen, last_seen
             FROM offense_rules WHERE offense_id = ?1 ORDER BY first_seen, rule",
        )?;
        let rows = stmt.query_map(params![offense_id], |r| {
            Ok(OffenseRule {
                rule: r.get(0)?,
                title: r.get(1)?,
                rule_id: r.get(2)?,
                author: r.get(3)?,
                level: r.get(4)?,
                severity: r.get(5)?,
                relevance: r.get(6)?,
                credibility: r.get(7)?,
                detections: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                events: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
                first_seen: from_ms(r.get(10)?),
                last_seen: from_ms(r.get(11)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes the columns of a stored rule part that detections change (what the upsert of
    /// [`Store::put_offense_rule`] changes). Returns whether the row was there.
    pub fn put_offense_rule_counts(
        &self,
        offense_id: &str,
        r: &OffenseRule,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE offense_rules SET detections = ?3, events = ?4, first_seen = ?5,
                 last_seen = ?6, severity = ?7, relevance = ?8, credibility = ?9
             WHERE offense_id = ?1 AND rule = ?2",
        )?;
        let n = stmt.execute(params![
            offense_id,
            r.rule,
            i64::try_from(r.detections).unwrap_or(i64::MAX),
            i64::try_from(r.events).unwrap_or(i64::MAX),
            ms(r.first_seen),
            ms(r.last_seen),
            r.severity,
            r.relevance,
            r.credibility,
        ])?;
        Ok(n == 1)
    }

    /// Inserts or replaces one rule's part in an offense.
    pub fn put_offense_rule(&self, offense_id: &str, r: &OffenseRule) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO offense_rules (offense_id, rule, title, rule_id, author, level, severity,
                 relevance, credibility, detections, events, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT(offense_id, rule) DO UPDATE SET detections = excluded.detections,
                 events = excluded.events, first_seen = excluded.first_seen,
                 last_seen = excluded.last_seen, severity = excluded.severity,
                 relevance = excluded.relevance, credibility = excluded.credibility",
        )?;
        stmt.execute(params![
            offense_id,
            r.rule,
            r.title,
            r.rule_id,
            r.author,
            r.level,
            r.severity,
            r.relevance,
            r.credibility,
            i64::try_from(r.detections).unwrap_or(i64::MAX),
            i64::try_from(r.events).unwrap_or(i64::MAX),
            ms(r.first_seen),
            ms(r.last_seen),
        ])?;
        Ok(())
    }

    /// Adds a note to an offense.
    pub fn add_note(&self, offense_id: &str, author: &str, text: &str) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO offense_notes (offense_id, author, created_at, text) VALUES (?1, ?2, ?3, ?4)",
            params![offense_id, author, ms(Utc::now()), text],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The notes of an offense, oldest first.
    pub fn offense_notes(&self, offense_id: &str) -> Result<Vec<OffenseNote>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, author, created_at, text FROM offense_notes WHERE offense_id = ?1
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![offense_id], |r| {
            Ok(OffenseNote {
                id: r.get(0)?,
                author: r.get(1)?,
                created_at: from_ms(r.get(2)?),
                text: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One offense by id.
    pub fn get_offense(&self, id: &str) -> Result<Option<Offense>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OFFENSE_COLUMNS} FROM offenses WHERE id = ?1"
        ))?;
        stmt.query_row(params![id], row_to_offense)
            .optional()?
            .transpose()
    }

    /// Writes an offense's counts and times (`first_seen`, `last_seen`, `event_count`,
    /// `stored_events`, `updated_at`), all that events joining an offense change when its other
    /// columns are as stored. Returns whether the row was there (nothing is written if not).
    pub fn put_offense_counts(&self, o: &Offense) -> Result<bool, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE offenses SET first_seen = ?2, last_seen = ?3, event_count = ?4,
                 stored_events = ?5, updated_at = ?6
             WHERE id = ?1",
        )?;
        let n = stmt.execute(params![
            o.id,
            ms(o.first_seen),
            ms(o.last_seen),
            i64::try_from(o.event_count).unwrap_or(i64::MAX),
            i64::try_from(o.stored_events).unwrap_or(i64::MAX),
            ms(o.updated_at),
        ])?;
        Ok(n == 1)
    }

    /// Inserts or replaces an offense row.
    pub fn put_offense(&self, o: &Offense) -> Result<(), StoreError> {
        let tags = serde_json::to_string(&o.tags).unwrap_or_else(|_| "[]".into());
        let reasons = serde_json::to_string(&o.magnitude_reasons).unwrap_or_else(|_| "[]".into());
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO offenses (id, rule, title, index_field, index_value, status, magnitude,
                 severity, relevance, credibility, magnitude_reasons, level, tags, first_seen,
                 last_seen, event_count, stored_events, window_start, created_at, updated_at,
                 assignee, closing_reason, closed_at, follow_up, asset_criticality, asset_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)
             ON CONFLICT(id) DO UPDATE SET rule = excluded.rule, title = excluded.title,
                 status = excluded.status,
                 magnitude = excluded.magnitude, severity = excluded.severity,
                 relevance = excluded.relevance, credibility = excluded.credibility,
                 magnitude_reasons = excluded.magnitude_reasons, level = excluded.level,
                 tags = excluded.tags, first_seen = excluded.first_seen,
                 last_seen = excluded.last_seen, event_count = excluded.event_count,
                 stored_events = excluded.stored_events, updated_at = excluded.updated_at,
                 assignee = excluded.assignee, closing_reason = excluded.closing_reason,
                 closed_at = excluded.closed_at, follow_up = excluded.follow_up,
                 asset_criticality = excluded.asset_criticality,
                 asset_reason = excluded.asset_reason",
        )?;
        stmt.execute(params![
            o.id,
            o.rule,
            o.title,
            o.index_field,
            o.index_value,
            o.status.as_str(),
            o.magnitude,
            o.severity,
            o.relevance,
            o.credibility,
            reasons,
            o.level,
            tags,
            ms(o.first_seen),
            ms(o.last_seen),
            i64::try_from(o.event_count).unwrap_or(i64::MAX),
            i64::try_from(o.stored_events).unwrap_or(i64::MAX),
            ms(o.window_start),
            ms(o.created_at),
            ms(o.updated_at),
            o.assignee,
            o.closing_reason,
            o.closed_at.map(ms),
            o.follow_up,
            o.asset_criticality,
            o.asset_reason,
        ])?;
        Ok(())
    }

    /// Stores contributing events of an offense under sequence numbers starting at `first_seq`.
    pub fn add_offense_events(
        &self,
        offense_id: &str,
        first_seq: u64,
        events: &[Arc<Event>],
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO offense_events (offense_id, seq, ts, event_json, raw, event_bin)
             VALUES (?1, ?2, ?3, '', X'', ?4)",
        )?;
        let mut bin = Vec::new();
        for (i, e) in events.iter().enumerate() {
            bin.clear();
            vigil_parsers::codec::encode(e, &mut bin);
            let seq = i64::try_from(first_seq + i as u64).unwrap_or(i64::MAX);
            stmt.execute(params![offense_id, seq, ms(e.timestamp), bin])?;
        }
        Ok(())
    }

    /// Stored contributing events of an offense, in arrival order.
    pub fn offense_events(&self, offense_id: &str, limit: u64) -> Result<Vec<Event>, StoreError> {
        self.offense_events_from(offense_id, 0, limit)
    }

    /// An offense's stored events from position `first_seq` on, oldest first, at most `limit`.
    pub fn offense_events_from(
        &self,
        offense_id: &str,
        first_seq: u64,
        limit: u64,
    ) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_json, raw, event_bin FROM offense_events
             WHERE offense_id = ?1 AND seq >= ?3 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![offense_id, clamp_i64(limit), clamp_i64(first_seq)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (json, raw, bin) = row?;
            out.push(stored_event(&json, raw, bin.as_deref())?);
        }
        Ok(out)
    }

    /// Offenses matching `filter`, highest magnitude then most recent first, and the total
    /// number matching (for paging).
    pub fn list_offenses(&self, filter: &OffenseFilter) -> Result<(Vec<Offense>, u64), StoreError> {
        let status = filter.status.map(|s| s.as_str());
        let min_mag = filter.min_magnitude.map(i64::from);
        let since = filter.since.map(ms);
        let where_clause = "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR magnitude >= ?2)
                            AND (?3 IS NULL OR last_seen >= ?3)
                            AND (?4 IS NULL OR index_value = ?4)
                            AND (?5 IS NULL OR EXISTS (SELECT 1 FROM offense_rules r
                                 WHERE r.offense_id = offenses.id AND r.rule = ?5))";
        let (value, rule) = (filter.index_value.as_deref(), filter.rule.as_deref());
        let total: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM offenses {where_clause}"),
            params![status, min_mag, since, value, rule],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OFFENSE_COLUMNS} FROM offenses {where_clause}
             ORDER BY magnitude DESC, last_seen DESC, id LIMIT ?6 OFFSET ?7"
        ))?;
        let rows = stmt.query_map(
            params![
                status,
                min_mag,
                since,
                value,
                rule,
                clamp_i64(filter.limit),
                clamp_i64(filter.offset)
            ],
            row_to_offense,
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    /// Every offense, oldest first (replay output).
    pub fn all_offenses(&self) -> Result<Vec<Offense>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OFFENSE_COLUMNS} FROM offenses ORDER BY first_seen, id"
        ))?;
        let rows = stmt.query_map([], row_to_offense)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Keeps a dead letter; deletes the oldest beyond `max_kept` and returns how many it
    /// deleted.
    pub fn insert_dead_letter(&self, d: &DeadLetter, max_kept: u64) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO dead_letters (received_at, observer_type, observer_id, peer, reason,
                 detail, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        stmt.execute(params![
            ms(d.received_at),
            d.observer_type,
            d.observer_id,
            d.peer,
            d.reason,
            d.detail,
            d.raw
        ])?;
        let id = self.conn.last_insert_rowid();
        let cutoff = id - clamp_i64(max_kept);
        if cutoff > 0 {
            let deleted = self
                .conn
                .prepare_cached("DELETE FROM dead_letters WHERE id <= ?1")?
                .execute(params![cutoff])?;
            return Ok(deleted as u64);
        }
        Ok(0)
    }

    /// Dead letters, newest first, optionally only one reason; and the total matching.
    pub fn list_dead_letters(
        &self,
        reason: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<DeadLetter>, u64), StoreError> {
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM dead_letters WHERE (?1 IS NULL OR reason = ?1)",
            params![reason],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, received_at, observer_type, observer_id, peer, reason, detail, raw
             FROM dead_letters WHERE (?1 IS NULL OR reason = ?1)
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![reason, clamp_i64(limit), clamp_i64(offset)], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                received_at: from_ms(r.get(1)?),
                observer_type: r.get(2)?,
                observer_id: r.get(3)?,
                peer: r.get(4)?,
                reason: r.get(5)?,
                detail: r.get(6)?,
                raw: r.get(7)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }

    /// Deletes closed offenses (with their events, rules and notes) closed before `before`;
    /// returns how many offenses it deleted.
    pub fn delete_closed_offenses_before(
        &mut self,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.in_transaction(|s| {
            let cutoff = ms(before);
            for table in ["offense_events", "offense_rules", "offense_notes"] {
                s.conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE offense_id IN (SELECT id FROM offenses
                         WHERE status = 'closed' AND closed_at IS NOT NULL AND closed_at < ?1)"
                    ),
                    params![cutoff],
                )?;
            }
            let n = s.conn.execute(
                "DELETE FROM offenses WHERE status = 'closed' AND closed_at IS NOT NULL
                 AND closed_at < ?1",
                params![cutoff],
            )?;
            Ok(n as u64)
        })
    }

    /// The stored hash of the named API token.
    pub fn token_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT sha256 FROM api_tokens WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores (or replaces) the hash of the named API token.
    pub fn set_token_hash(&self, name: &str, sha256_hex: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO api_tokens (name, sha256, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256",
            params![name, sha256_hex, ms(Utc::now())],
        )?;
        Ok(())
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const OFFENSE_COLUMNS: &str = "id, rule, title, index_field, index_value, status, magnitude,
    severity, relevance, credibility, magnitude_reasons, level, tags, first_seen, last_seen,
    event_count, stored_events, window_start, created_at, updated_at, assignee, closing_reason,
    closed_at, follow_up, asset_criticality, asset_reason";

fn row_to_offense(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Offense, StoreError>> {
    let status: String = r.get(5)?;
    let reasons: String = r.get(10)?;
    let tags: String = r.get(12)?;
    let event_count: i64 = r.get(15)?;
    let stored_events: i64 = r.get(16)?;
    let status = match OffenseStatus::parse(&status) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Offense {
        id: r.get(0)?,
        rule: r.get(1)?,
        title: r.get(2)?,
        index_field: r.get(3)?,
        index_value: r.get(4)?,
        status,
        magnitude: r.get(6)?,
        severity: r.get(7)?,
        relevance: r.get(8)?,
        credibility: r.get(9)?,
        magnitude_reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        level: r.get(11)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        first_seen: from_ms(r.get(13)?),
        last_seen: from_ms(r.get(14)?),
        event_count: u64::try_from(event_count).unwrap_or(0),
        stored_events: u64::try_from(stored_events).unwrap_or(0),
        window_start: from_ms(r.get(17)?),
        created_at: from_ms(r.get(18)?),
        updated_at: from_ms(r.get(19)?),
        assignee: r.get(20)?,
        closing_reason: r.get(21)?,
        closed_at: r.get::<_, Option<i64>>(22)?.map(from_ms),
        follow_up: r.get(23)?,
        asset_criticality: r.get(24)?,
        asset_reason: r.get(25)?,
    }))
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(raw: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(raw))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offense(id: &str, magnitude: u8) -> Offense {
        let t = from_ms(1_700_000_000_000);
        Offense {
            id: id.into(),
            rule: "r".into(),
            title: "R".into(),
            index_field: "source.ip".into(),
            index_value: "203.0.113.7".into(),
            status: OffenseStatus::Open,
            magnitude,
            severity: 7,
            relevance: 6,
            credibility: 8,
            magnitude_reasons: vec!["because".into()],
            level: Some("high".into()),
            tags: vec!["attack.t1110".into()],
            first_seen: t,
            last_seen: t,
            event_count: 10,
            stored_events: 0,
            window_start: t,
            created_at: t,
            updated_at: t,
            assignee: None,
            closing_reason: None,
            closed_at: None,
            follow_up: false,
            asset_criticality: 0,
            asset_reason: None,
        }
    }

    #[test]
    fn offenses_round_trip_and_filter() -> Result<(), StoreError> {
        let store = Store::open_in_memory()?;
        store.put_offense(&offense("a", 7))?;
        store.put_offense(&offense("b", 3))?;
        let got = store.get_offense("a")?;
        assert_eq!(got, Some(offense("a", 7)));
        let (list, total) = store.list_offenses(&OffenseFilter {
            min_magnitude: Some(5),
            limit: 10,
            ..Default::default()
        })?;
        assert_eq!(total, 1);
        assert_eq!(list.first().map(|o| o.id.as_str()), Some("a"));
        let found = store.find_open_offense("source.ip", "203.0.113.7")?;
        assert!(found.is_some());
        Ok(())
    }

    #[test]
    fn dead_letters_are_capped_oldest_first() -> Result<(), StoreError> {
        let store = Store::open_in_memory()?;
        let d = DeadLetter {
            id: 0,
            received_at: Utc::now(),
            observer_type: "syslog".into(),
            observer_id: "syslog/udp/127.0.0.1".into(),
            peer: Some("127.0.0.1".into()),
            reason: "pri".into(),
            detail: "bad".into(),
            raw: vec![0xff, 0x00, b'x'],
        };
        let mut deleted = 0;
        for _ in 0..5 {
            deleted += store.insert_dead_letter(&d, 3)?;
        }
        assert_eq!(deleted, 2);
        let (list, total) = store.list_dead_letters(None, 10, 0)?;
        assert_eq!(total, 3);
        assert_eq!(
            list.first().map(|d| d.raw.clone()),
            Some(vec![0xff, 0x00, b'x'])
        );
        Ok(())
    }

    #[test]
    fn offense_events_read_back_exactly_whether_stored_as_json_or_binary() -> Result<(), StoreError>
    {
        let store = Store::open_in_memory()?;
        store.put_offense(&offense("o", 5))?;
        let t = from_ms(1_700_000_000_123);
        let mut e = Event::new(t, t);
        e.source_ip = Some(
            "203.0.113.7"
                .parse()
                .map_err(|_| StoreError::Corrupt("ip".into()))?,
        );
        e.message = Some("Failed password".into());
        e.raw = vec![0xff, b'x'];
        // A row as a build before migration 13 wrote it: JSON, and the exact bytes beside it.
        let json = serde_json::to_string(&e).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        store.conn.execute(
            "INSERT INTO offense_events (offense_id, seq, ts, event_json, raw) VALUES ('o', 0, 1, ?1, ?2)",
            params![json, e.raw],
        )?;
        let mut second = e.clone();
        second.user_name = Some("root".into());
        store.add_offense_events("o", 1, &[Arc::new(second.clone())])?;
        assert_eq!(store.offense_events("o", 10)?, vec![e, second]);
        Ok(())
    }

    #[test]
    fn the_checkpointer_copies_the_log_into_the_file_while_commits_do_not() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vigil.db");
        let store = Store::open(&path)?;
        let file_bytes = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let checkpointer = store.checkpoint_in_background(&path)?;
        let own: i64 = store
            .conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?;
        assert_eq!(own, 0, "the writer's commits no longer checkpoint");
        let cache: i64 = store
            .conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))?;
        assert_eq!(
            cache, -2000,
            "the engine's connection keeps SQLite's default 2 MiB cache: a larger one costs each commit"
        );
        let before = file_bytes();
        // 8 MiB in one commit: past SQLite's 1,000-page automatic checkpoint, which the
        // commit no longer runs, so the database file only grows once the thread copies it.
        store
            .conn
            .execute_batch("CREATE TABLE filler (b BLOB); BEGIN;")?;
        for _ in 0..2048 {
            store
                .conn
                .execute("INSERT INTO filler VALUES (zeroblob(4096))", [])?;
        }
        store.conn.execute_batch("COMMIT;")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while file_bytes() < before + 8 * 1024 * 1024 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            file_bytes() >= before + 8 * 1024 * 1024,
            "the checkpointer copied the log into the file"
        );
        drop(checkpointer);
        Ok(())
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_offenses_kept() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vigil.db");
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(schema::V1)?;
            conn.pragma_update(None, "user_version", 1)?;
            conn.execute(
                "INSERT INTO offenses VALUES ('old', 'r', 'R', 'source.ip', '203.0.113.7', 'open',
                 7, 7, 6, 8, '[]', 'high', '[]', 1000, 2000, 10, 10, 1000, 1000, 2000)",
                [],
            )?;
        }
        let store = Store::open(&path)?;
        assert_eq!(store.schema_version()?, schema::LATEST);
        let old = store.get_offense("old")?;
        assert_eq!(old.as_ref().map(|o| o.event_count), Some(10));
        assert_eq!(old.map(|o| o.assignee), Some(None));
        let rules = store.offense_rules("old")?;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules.first().map(|r| r.events), Some(10));
        Ok(())
    }

    #[test]
    fn closed_offenses_past_retention_are_deleted_with_their_parts() -> Result<(), StoreError> {
        let mut store = Store::open_in_memory()?;
        let t = from_ms(1_700_000_000_000);
        let mut old = offense("old", 7);
        old.status = OffenseStatus::Closed;
        old.closed_at = Some(t);
        store.put_offense(&old)?;
        store.add_note("old", "alice", "done")?;
        let mut recent = offense("recent", 7);
        recent.status = OffenseStatus::Closed;
        recent.closed_at = Some(t + chrono::Duration::days(30));
        store.put_offense(&recent)?;
        store.put_offense(&offense("open", 7))?;
        let deleted = store.delete_closed_offenses_before(t + chrono::Duration::days(1))?;
        assert_eq!(deleted, 1);
        assert!(store.get_offense("old")?.is_none());
        assert!(store.offense_notes("old")?.is_empty());
        assert!(store.get_offense("recent")?.is_some());
        assert!(store.get_offense("open")?.is_some());
        Ok(())
    }

    #[test]
    fn notes_are_kept_in_order() -> Result<(), StoreError> {
        let store = Store::open_in_memory()?;
        store.put_offense(&offense("a", 7))?;
        store.add_note("a", "alice", "blocked at the edge")?;
        store.add_note("a", "bob", "false positive? no")?;
        let notes = store.offense_notes("a")?;
        let texts: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(texts, ["blocked at the edge", "false positive? no"]);
        Ok(())
    }

    #[test]
    fn reopening_a_file_keeps_data_and_schema_version() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vigil.db");
        {
            let store = Store::open(&path)?;
            store.put_offense(&offense("a", 7))?;
        }
        let store = Store::open(&path)?;
        assert_eq!(store.schema_version()?, schema::LATEST);
        assert!(store.get_offense("a")?.is_some());
        Ok(())
    }
}
