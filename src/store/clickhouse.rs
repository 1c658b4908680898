//! The scaled-out store: events, offenses, dead letters and the audit trail in ClickHouse.
//!
//! Any number of stage-1, stage-2 and API processes share one ClickHouse database through this
//! module. It runs unchanged on Debian's ClickHouse 18.16 (the test server) and on current
//! ClickHouse, so the schema keeps to long-stable features: `UInt*`/`Int*`, `String`,
//! `FixedString`, `DateTime`, `Date`, `Array`, `Nullable`, `Enum8`; `MergeTree`,
//! `ReplacingMergeTree`, `FINAL`, `LIMIT n BY`, `ALTER TABLE … DROP PARTITION` and
//! `ALTER TABLE … DELETE`. No `IPv4`/`IPv6`, `DateTime64`, `LowCardinality` or table `TTL`
//! (18.16 lacks them). The client runs with `with_validation(false)` (plain `RowBinary`): with
//! validation on, the `clickhouse` crate sends a setting 18.16 does not know and every query
//! fails. Architecture invariant: every value reaches SQL through the crate's `?` binding; the
//! only names spliced into SQL are this module's constants and the configured database name,
//! which must match `^[A-Za-z_][A-Za-z0-9_]*$` and is bound as an identifier.
//!
//! # Schema (migration 1; see [`MIGRATIONS`] for the exact DDL)
//!
//! - `events`: `ReplacingMergeTree`, `PARTITION BY toYYYYMMDD(day)` (`day` = UTC date of
//!   `@timestamp`), `ORDER BY (day, observer_type, source_ip, ts_ms, batch_id, row_in_batch)`.
//!   An analyst narrows by time first (partition and first key column), then by kind of source
//!   (`observer_type`: a handful of values, so flows and logs sit in separate key ranges), then
//!   by address, then reads in time order. The whole event is kept in the event codec
//!   (`event_bin`, migration 4) plus the bytes exactly as received (`raw`); the other columns
//!   exist for filtering and dashboards. Absent text fields are `''`.
//! - `event_bin` leaves out what has a column of its own: `raw`, and the texts of
//!   [`COLUMN_FIELDS`] when set and not empty (reading sets them again from their columns, so
//!   the event comes back exact). Rows written before migration 4 have `event_bin` empty and
//!   the whole event as JSON in `event_json` (read as before); their migration-4 columns
//!   (`network_bytes`, `flow_exporter`, `source_country`, …) are `DEFAULT` expressions over
//!   that JSON, so SQL sees them for old and new rows alike. Why not JSON any more: it was
//!   two thirds of each row's bytes, and ClickHouse's CPU per stored event (parts written,
//!   then merged) follows the bytes: 11 µs an event with JSON, about 7 without it, measured
//!   end to end (BENCHMARKS.md, "Scaled out, 2026-11-30 evening"). SQL tools read the typed
//!   columns; the whole event is what the API returns.
//! - `offense_events.event_bin` is likewise the event without `raw` (rows before it: JSON).
//! - Addresses (`source_ip`, `destination_ip`) are `FixedString(16)`: the IPv6 address, IPv4 as
//!   IPv4-mapped (`::ffff:a.b.c.d`), absent as 16 zero bytes (`::`). Sixteen bytes sort in
//!   address order, so a CIDR block is one key range and an address lookup uses the primary
//!   index; text would make every CIDR query a per-row function and cost up to 39 bytes.
//!   Rendering: in SQL `IPv6NumToString(source_ip)` (IPv4 shows as `::ffff:1.2.3.4`; use
//!   `IPv4NumToString(reinterpretAsUInt32(reverse(substring(source_ip, 13, 4))))` for the
//!   dotted form); in Rust an IPv4-mapped value becomes an `IpAddr::V4` again.
//! - `offenses`: `ReplacingMergeTree(version) ORDER BY id`: every change is a new row with a
//!   higher version; readers use `FINAL`, so the newest version wins and a retried write of the
//!   same version changes nothing.
//! - `offense_rules`: `ReplacingMergeTree(version) ORDER BY (offense_id, rule)`.
//! - `offense_events`: `ReplacingMergeTree ORDER BY (offense_id, seq)`; read with `FINAL`.
//! - `dead_letters`: `ReplacingMergeTree`, `PARTITION BY toYYYYMMDD(day)`, raw bytes kept
//!   exactly in a `String` (ClickHouse strings are bytes).
//! - `audit`: plain `MergeTree`, `PARTITION BY toYYYYMMDD(day)`.
//! - `schema_migrations (version UInt32, applied DateTime)`: which migrations ran.
//!
//! Times: offense and dead-letter times are `Int64` epoch milliseconds (`*_ms`), as exact as
//! the SQLite store, so both stores order offenses identically. Events carry both a
//! `DateTime('UTC')` (for dashboards) and `ts_ms UInt64`.
//!
//! # Retried batches
//!
//! 18.16 deduplicates a repeated `INSERT` block only for `Replicated*` tables, and a stage-1
//! process that dies after writing but before committing its Kafka offsets writes the same
//! batch again. So the batch carries its identity: the caller names it (`batch_id`, e.g. the
//! topic, partition and first offset it came from) and each row gets `row_in_batch`. Both end
//! the `ReplacingMergeTree` sorting key, so a retried row has the same key as the first copy
//! (the columns before them are functions of the event, and a retried batch holds the same
//! events) and lands in the same partition. Background merges then drop the copy; until they
//! do, readers see each row once: counts read with `FINAL`, event searches with
//! `LIMIT 1 BY batch_id, row_in_batch` (cheaper than `FINAL` on a big table, and correct
//! because the copies are identical). The alternatives were worse: a "batch done" marker table
//! leaves a window between the data insert and the marker, and a plain `MergeTree` with
//! `count(DISTINCT …)` keeps the duplicates forever.
//!
//! # Retention
//!
//! [`ClickHouseStore::apply_retention`] drops whole day partitions of `events`,
//! `dead_letters` and `audit` (no `TTL` on 18.16). Closed offenses cannot be dropped by
//! partition: an offense can stay open for months, and its rules and events do not carry its
//! dates. They are removed with `ALTER TABLE … DELETE WHERE has([ids], id)` mutations on
//! `offenses`, `offense_rules` and `offense_events`, for the ids whose newest version is closed
//! before the cutoff; the call waits for the mutations to finish.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::clickhouse::sql::Identifier;
use ::clickhouse::{Client, Row};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_parsers::codec::{self, Omit};
use vigil_parsers::{Event, Text};

use super::{from_ms, ms, DeadLetter, Offense, OffenseFilter, OffenseRule, OffenseStatus};

/// A ClickHouse store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChError {
    /// The server or the client reported an error (connection, SQL, decoding).
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    /// A configured name is not a plain identifier.
    #[error("invalid name {0:?}: expected letters, digits and '_', not starting with a digit")]
    InvalidName(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer Vigil.
    #[error("schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// Newest version recorded in the database.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The server did not finish background work in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// How to reach ClickHouse and how long to keep data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface URL (`http://127.0.0.1:8123`). Plain HTTP only: the crate is built
    /// without TLS.
    pub url: String,
    /// Database name; created if missing. Letters, digits and `_`, not starting with a digit.
    pub database: String,
    /// User name (the server's `default` user when `None`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Most rows sent in one `INSERT`; larger slices are split (identity is unchanged).
    pub batch_rows: usize,
    /// Longest a writer should hold rows before inserting a partial batch, in milliseconds
    /// (read by the writer loop that feeds [`ClickHouseStore::insert_events`]).
    pub batch_max_wait_ms: u64,
    /// How long each kind of data is kept.
    pub retention_days: RetentionDays,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "vigil".into(),
            user: None,
            password: None,
            batch_rows: 100_000,
            batch_max_wait_ms: 1000,
            retention_days: RetentionDays::default(),
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("batch_rows", &self.batch_rows)
            .field("batch_max_wait_ms", &self.batch_max_wait_ms)
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// Days each kind of data is kept; 0 keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionDays {
    /// Events, by the day of their `@timestamp`.
    pub events: u32,
    /// Dead letters, by the day they were received.
    pub dead_letters: u32,
    /// Closed offenses (with their rules and events), counted from `closed_at`.
    pub offenses_closed: u32,
    /// Audit entries.
    pub audit: u32,
}

impl Default for RetentionDays {
    fn default() -> Self {
        RetentionDays {
            events: 30,
            dead_letters: 7,
            offenses_closed: 90,
            audit: 365,
        }
    }
}

/// One audit-trail entry (who did what to which object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (wall clock).
    pub ts: DateTime<Utc>,
    /// Who (token name, analyst).
    pub actor: String,
    /// What (`offense.close`, `reference.add`, ...).
    pub action: String,
    /// On what (an offense id, a set name).
    pub target: String,
    /// Free-form detail.
    pub detail: String,
}

/// Every table the migrations create, for checks and tests.
pub const TABLES: &[&str] = &[
    "schema_migrations",
    "events",
    "offenses",
    "offense_rules",
    "offense_events",
    "dead_letters",
    "audit",
    "checkpoints",
];

/// Versioned migrations, index = version - 1. ClickHouse has no transactional DDL, so every
/// statement must be idempotent (`IF NOT EXISTS`): a migration interrupted half-way runs again
/// whole. Append new migrations; never edit one that has shipped.
pub const MIGRATIONS: &[&[&str]] = &[
    // 1: events, offenses (versioned), their rules and events, dead letters, audit.
    &[
        "CREATE TABLE IF NOT EXISTS events (
            day Date,
            timestamp DateTime('UTC'),
            ts_ms UInt64,
            ingested DateTime('UTC'),
            observer_type String,
            observer_id String,
            dataset String,
            category String,
            action String,
            outcome String,
            source_ip FixedString(16),
            source_port UInt16,
            destination_ip FixedString(16),
            destination_port UInt16,
            user_name String,
            host_name String,
            sequence UInt64,
            batch_id String,
            row_in_batch UInt32,
            event_json String,
            raw String
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMMDD(day)
        ORDER BY (day, observer_type, source_ip, ts_ms, batch_id, row_in_batch)",
        "CREATE TABLE IF NOT EXISTS offenses (
            id String,
            version UInt64,
            rule String,
            title String,
            index_field String,
            index_value String,
            status Enum8('open' = 1, 'closed' = 2),
            magnitude UInt8,
            severity UInt8,
            relevance UInt8,
            credibility UInt8,
            magnitude_reasons Array(String),
            level Nullable(String),
            tags Array(String),
            first_seen_ms Int64,
            last_seen_ms Int64,
            event_count UInt64,
            stored_events UInt64,
            window_start_ms Int64,
            created_at_ms Int64,
            updated_at_ms Int64,
            assignee Nullable(String),
            closing_reason Nullable(String),
            closed_at_ms Nullable(Int64),
            follow_up UInt8,
            asset_criticality UInt8,
            asset_reason Nullable(String)
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY id",
        "CREATE TABLE IF NOT EXISTS offense_rules (
            offense_id String,
            rule String,
            version UInt64,
            title String,
            rule_id Nullable(String),
            author Nullable(String),
            level Nullable(String),
            severity UInt8,
            relevance UInt8,
            credibility UInt8,
            detections UInt64,
            events UInt64,
            first_seen_ms Int64,
            last_seen_ms Int64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (offense_id, rule)",
        "CREATE TABLE IF NOT EXISTS offense_events (
            offense_id String,
            seq UInt64,
            ts_ms Int64,
            event_json String,
            raw String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (offense_id, seq)",
        "CREATE TABLE IF NOT EXISTS dead_letters (
            day Date,
            id Int64,
            received_ms Int64,
            observer_type String,
            observer_id String,
            peer Nullable(String),
            reason String,
            detail String,
            raw String,
            batch_id String,
            row_in_batch UInt32
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMMDD(day)
        ORDER BY (day, reason, received_ms, batch_id, row_in_batch)",
        "CREATE TABLE IF NOT EXISTS audit (
            day Date,
            ts DateTime('UTC'),
            actor String,
            action String,
            target String,
            detail String
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMMDD(day)
        ORDER BY (day, ts, actor)",
    ],
    // 2: the scaled-out mode's stage-2 state: correlation checkpoints per consumed partition,
    // and on every offense version the offense stage's applied-detection marks.
    &[
        "CREATE TABLE IF NOT EXISTS checkpoints (
            consumer_group String,
            topic String,
            part Int32,
            version UInt64,
            last_offset Int64,
            written_ms Int64,
            state String
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (consumer_group, topic, part)",
        "ALTER TABLE offenses ADD COLUMN marks String DEFAULT ''",
    ],
    // 3: the event's message, for the API's event search.
    &["ALTER TABLE events ADD COLUMN message String DEFAULT ''"],
    // 4: events stored in the event codec (`event_bin`) instead of JSON, and columns for what
    // dashboards read out of the JSON. Rows written before keep their JSON; the new columns
    // of those rows are computed from it when read.
    &[
        "ALTER TABLE events ADD COLUMN event_bin String DEFAULT ''",
        "ALTER TABLE events ADD COLUMN network_transport String DEFAULT visitParamExtractString(event_json, 'network.transport')",
        "ALTER TABLE events ADD COLUMN network_bytes UInt64 DEFAULT visitParamExtractUInt(event_json, 'network.bytes')",
        "ALTER TABLE events ADD COLUMN network_packets UInt64 DEFAULT visitParamExtractUInt(event_json, 'network.packets')",
        "ALTER TABLE events ADD COLUMN flow_exporter String DEFAULT visitParamExtractString(event_json, 'flow.exporter')",
        "ALTER TABLE events ADD COLUMN source_country String DEFAULT visitParamExtractString(event_json, 'source.geo.country_iso_code')",
        "ALTER TABLE events ADD COLUMN source_country_name String DEFAULT visitParamExtractString(event_json, 'source.geo.country_name')",
        "ALTER TABLE events ADD COLUMN destination_country String DEFAULT visitParamExtractString(event_json, 'destination.geo.country_iso_code')",
        "ALTER TABLE offense_events ADD COLUMN event_bin String DEFAULT ''",
    ],
];

/// The newest schema version this build knows.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    applied DateTime
) ENGINE = ReplacingMergeTree
ORDER BY version";

/// Longest sending one chunk of an `INSERT` may take.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the server may take to acknowledge an `INSERT`.
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest [`ClickHouseStore::apply_retention`] waits for its delete mutations.
const MUTATION_PATIENCE: Duration = Duration::from_secs(120);
/// Offense ids per `ALTER TABLE … DELETE` (keeps the statement under `max_query_size`).
const DELETE_CHUNK: usize = 1000;

/// The ClickHouse store handle. Cheap to clone; every clone shares the HTTP connection pool.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
    database: String,
    batch_rows: usize,
    batch_max_wait: Duration,
    retention: RetentionDays,
}

impl fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("database", &self.database)
            .field("batch_rows", &self.batch_rows)
            .finish_non_exhaustive()
    }
}

/// Whether `name` may be used as a database or table name.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ClickHouseStore {
    /// Connects, creates the database if missing and brings the schema to [`LATEST`].
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<Self, ChError> {
        if !is_valid_identifier(&cfg.database) {
            return Err(ChError::InvalidName(cfg.database.clone()));
        }
        let mut base = Client::default()
            .with_url(cfg.url.clone())
            .with_validation(false);
        if let Some(user) = &cfg.user {
            base = base.with_user(user.clone());
        }
        if let Some(password) = &cfg.password {
            base = base.with_password(password.clone());
        }
        base.query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(Identifier(&cfg.database))
            .execute()
            .await?;
        let store = ClickHouseStore {
            client: base.with_database(cfg.database.clone()),
            database: cfg.database.clone(),
            batch_rows: cfg.batch_rows.max(1),
            batch_max_wait: Duration::from_millis(cfg.batch_max_wait_ms),
            retention: cfg.retention_days,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The database this store writes to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// How long a writer should hold rows before inserting a partial batch.
    pub fn batch_max_wait(&self) -> Duration {
        self.batch_max_wait
    }

    /// Versioned migrations like the SQLite store: a `schema_migrations` table
    /// (`version UInt32, applied DateTime`) and the ordered list [`MIGRATIONS`]; each is
    /// applied once, then recorded. Refuses a database migrated by a newer build.
    ///
    /// Two processes migrating at once both run the (idempotent) DDL and may both record the
    /// version; `schema_migrations` is a `ReplacingMergeTree` and is read with `DISTINCT`.
    pub async fn migrate(&self) -> Result<(), ChError> {
        self.client.query(SCHEMA_MIGRATIONS_DDL).execute().await?;
        let applied = self.applied_versions().await?;
        if let Some(&found) = applied.iter().max() {
            if found > LATEST {
                return Err(ChError::TooNew {
                    found,
                    supported: LATEST,
                });
            }
        }
        for (i, statements) in MIGRATIONS.iter().enumerate() {
            let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if applied.contains(&version) {
                continue;
            }
            for sql in statements.iter() {
                if let Some((table, column)) = added_column(sql) {
                    if self.has_column(table, column).await? {
                        continue;
                    }
                }
                self.client.query(sql).execute().await?;
            }
            let mut insert = self
                .client
                .insert::<MigrationRow>("schema_migrations")
                .await?;
            insert
                .write(&MigrationRow {
                    version,
                    applied: datetime_secs(Utc::now()),
                })
                .await?;
            insert.end().await?;
            tracing::info!(version, database = %self.database, "clickhouse schema migrated");
        }
        Ok(())
    }

    /// The newest migration recorded in the database (0 before any).
    pub async fn schema_version(&self) -> Result<u32, ChError> {
        Ok(self
            .applied_versions()
            .await?
            .into_iter()
            .max()
            .unwrap_or(0))
    }

    /// Whether `table` of this database has `column` (18.16 has no `ADD COLUMN IF NOT
    /// EXISTS`, so a migration interrupted after its `ALTER` checks before running it again).
    async fn has_column(&self, table: &str, column: &str) -> Result<bool, ChError> {
        Ok(self
            .client
            .query(
                "SELECT count() FROM system.columns
                 WHERE database = currentDatabase() AND table = ? AND name = ?",
            )
            .bind(table)
            .bind(column)
            .fetch_one::<u64>()
            .await?
            > 0)
    }

    async fn applied_versions(&self) -> Result<Vec<u32>, ChError> {
        Ok(self
            .client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all::<u32>()
            .await?)
    }

    /// Writes a batch of events and returns how many rows it sent.
    ///
    /// `batch_id` names the batch (e.g. `events/3/184467`: topic, partition, first offset):
    /// writing the same batch again (same id, same events in the same order) after a failure
    /// or a crash leaves every event visible once. Slices larger than `batch_rows` are sent as
    /// several `INSERT`s; the identity of each row (`batch_id`, index in `events`) is unchanged.
    pub async fn insert_events(&self, batch_id: &str, events: &[Event]) -> Result<u64, ChError> {
        let rows: Vec<(&str, u32, &Event)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (batch_id, u32::try_from(i).unwrap_or(u32::MAX), e))
            .collect();
        self.insert_identified_events(&rows).await
    }

    /// Writes events each under its own identity (batch id, row): the store stage names a
    /// record by its topic, partition and offset, so a record written again after a crash or
    /// a retry (in whatever batch) is the same row. Returns how many rows it sent.
    pub async fn insert_identified_events(
        &self,
        rows: &[(&str, u32, &Event)],
    ) -> Result<u64, ChError> {
        let mut sent = 0u64;
        let mut buf = Vec::with_capacity(1024);
        for chunk in rows.chunks(self.batch_rows) {
            let mut insert = self
                .client
                .insert::<EventRow<'_>>("events")
                .await?
                .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
            for &(batch_id, row_in_batch, e) in chunk {
                let texts = column_texts(e);
                let mut omit = Omit {
                    fields: 0,
                    raw: true,
                };
                for (text, bit) in texts.iter().zip(COLUMN_BITS.iter()) {
                    if text.is_some_and(|t| !t.is_empty()) {
                        omit.fields |= bit;
                    }
                }
                let [observer_type, observer_id, dataset, category, action, outcome, user_name, host_name, message, network_transport, source_country, source_country_name, destination_country] =
                    texts.map(|t| t.map_or("", Text::as_str));
                let row = EventRow {
                    day: day_number(e.timestamp),
                    timestamp: datetime_secs(e.timestamp),
                    ts_ms: u64::try_from(ms(e.timestamp)).unwrap_or(0),
                    ingested: datetime_secs(e.ingested),
                    observer_type,
                    observer_id,
                    dataset,
                    category,
                    action,
                    outcome,
                    source_ip: ip_bytes(e.source_ip),
                    source_port: e.source_port.unwrap_or(0),
                    destination_ip: ip_bytes(e.destination_ip),
                    destination_port: e.destination_port.unwrap_or(0),
                    user_name,
                    host_name,
                    sequence: e.sequence.unwrap_or(0),
                    batch_id,
                    row_in_batch,
                    event_json: "",
                    event_bin: {
                        buf.clear();
                        codec::encode_omitting(e, omit, &mut buf);
                        &buf
                    },
                    raw: &e.raw,
                    message,
                    network_transport,
                    network_bytes: e.network_bytes.unwrap_or(0),
                    network_packets: e.network_packets.unwrap_or(0),
                    flow_exporter: e.extra.get("flow.exporter").map_or("", |t| t.as_str()),
                    source_country,
                    source_country_name,
                    destination_country,
                };
                insert.write(&row).await?;
            }
            insert.end().await?;
            sent += chunk.len() as u64;
        }
        Ok(sent)
    }

    /// Stored event rows that are extra copies of another row (a retried or replayed batch)
    /// and not merged away yet: `count()` minus `count()` with `FINAL`. Reads the whole table.
    pub async fn duplicate_events(&self) -> Result<u64, ChError> {
        let all = self
            .client
            .query("SELECT count() FROM events")
            .fetch_one::<u64>()
            .await?;
        Ok(all.saturating_sub(self.count_events().await?))
    }

    /// Visible events (each retried row once). For tests and statistics: it reads the whole
    /// table with `FINAL`.
    pub async fn count_events(&self) -> Result<u64, ChError> {
        Ok(self
            .client
            .query("SELECT count() FROM events FINAL")
            .fetch_one::<u64>()
            .await?)
    }

    /// Flow events (NetFlow, IPFIX, sFlow) from or to `ip` (all when `None`), newest first, as
    /// the embedded store lists them, and how many match.
    pub async fn list_flows(
        &self,
        ip: Option<IpAddr>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<super::StoredFlow>, u64), ChError> {
        let filter = "observer_type IN ('netflow', 'ipfix', 'sflow')
             AND (? = '' OR source_ip = unhex(?) OR destination_ip = unhex(?))";
        let bytes = ip
            .map(|a| hex::encode(ip_bytes(Some(a))))
            .unwrap_or_default();
        let total = self
            .client
            .query(&format!("SELECT count() FROM events FINAL WHERE {filter}"))
            .bind(&bytes)
            .bind(&bytes)
            .bind(&bytes)
            .fetch_one::<u64>()
            .await?;
        let rows = self
            .client
            .query(&format!(
                "SELECT ?fields FROM events WHERE {filter}
                 ORDER BY ts_ms DESC, batch_id DESC, row_in_batch DESC
                 LIMIT 1 BY batch_id, row_in_batch
                 LIMIT ?, ?"
            ))
            .bind(&bytes)
            .bind(&bytes)
            .bind(&bytes)
            .bind(offset)
            .bind(limit)
            .fetch_all::<StoredEventRow>()
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let e = row.into_event()?;
            out.push(super::StoredFlow {
                id: i64::try_from(offset).unwrap_or(0) + i as i64,
                start: super::flows::flow_time(&e, "flow.start"),
                end: super::flows::flow_time(&e, "flow.end"),
                exporter: e
                    .extra
                    .get("flow.exporter")
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                kind: "flow".to_owned(),
                flows: 1,
                event: serde_json::to_value(&e)
                    .map_err(|err| ChError::Corrupt(format!("flow to json: {err}")))?,
            });
        }
        Ok((out, total))
    }

    /// The API's event search ([`crate::store::events::EventSearch`]) over log events (flows
    /// have their own listing), newest first, and whether there are more. The server stops a
    /// query after [`crate::store::events::QUERY_BUDGET`].
    pub async fn search_events(
        &self,
        q: &crate::store::events::EventSearch,
    ) -> Result<(Vec<Event>, bool), ChError> {
        let mut sql = String::from(
            "SELECT ?fields FROM events
             WHERE day >= toDate(?) AND day <= toDate(?) AND ts_ms >= ? AND ts_ms < ?
               AND NOT (action = 'flow' AND dataset IN ('netflow', 'ipfix', 'sflow'))",
        );
        let mut text_args: Vec<String> = Vec::new();
        let mut ip_args: Vec<String> = Vec::new();
        for (column, v) in q.equalities() {
            if column.ends_with("_ip") {
                sql.push_str(&format!(" AND {column} = unhex(?)"));
                let ip: IpAddr = v.parse().map_err(|_| ChError::Corrupt(format!("ip {v}")))?;
                ip_args.push(hex::encode(ip_bytes(Some(ip))));
            } else {
                sql.push_str(&format!(" AND {column} = ?"));
                text_args.push(v);
            }
        }
        if q.text.is_some() {
            sql.push_str(" AND positionCaseInsensitiveUTF8(message, ?) > 0");
        }
        sql.push_str(
            " ORDER BY ts_ms DESC, batch_id DESC, row_in_batch DESC
              LIMIT 1 BY batch_id, row_in_batch
              LIMIT ?, ?",
        );
        let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
        let mut query = self
            .client
            .query(&sql)
            .with_setting(
                "max_execution_time",
                crate::store::events::QUERY_BUDGET.as_secs().to_string(),
            )
            .bind(day(q.from))
            .bind(day(q.to))
            .bind(u64::try_from(ms(q.from)).unwrap_or(0))
            .bind(u64::try_from(ms(q.to)).unwrap_or(0));
        // Equalities in the order they were written: the IP ones come first in `equalities`.
        for v in &ip_args {
            query = query.bind(v);
        }
        for v in &text_args {
            query = query.bind(v);
        }
        if let Some(t) = &q.text {
            query = query.bind(t);
        }
        let rows = query
            .bind(q.offset)
            .bind(q.limit.saturating_add(1))
            .fetch_all::<StoredEventRow>()
            .await?;
        let mut out: Vec<Event> = rows
            .into_iter()
            .map(StoredEventRow::into_event)
            .collect::<Result<_, _>>()?;
        let more = out.len() as u64 > q.limit;
        out.truncate(usize::try_from(q.limit).unwrap_or(usize::MAX));
        Ok((out, more))
    }

    /// Events whose source or destination is `ip`, newest first, at most `limit`.
    pub async fn events_for_ip(&self, ip: IpAddr, limit: u64) -> Result<Vec<Event>, ChError> {
        let bytes = hex::encode(ip_bytes(Some(ip)));
        let rows = self
            .client
            .query(
                "SELECT ?fields FROM events
                 WHERE source_ip = unhex(?) OR destination_ip = unhex(?)
                 ORDER BY ts_ms DESC, batch_id, row_in_batch
                 LIMIT 1 BY batch_id, row_in_batch
                 LIMIT ?",
            )
            .bind(&bytes)
            .bind(&bytes)
            .bind(limit)
            .fetch_all::<StoredEventRow>()
            .await?;
        rows.into_iter().map(StoredEventRow::into_event).collect()
    }

    /// Writes dead letters and returns how many rows it sent. `batch_id` works as for
    /// [`ClickHouseStore::insert_events`]; each letter's `id` is derived from (`batch_id`,
    /// index), so it is stable across retries (the `id` field of the input is ignored).
    pub async fn insert_dead_letters(
        &self,
        batch_id: &str,
        d: &[DeadLetter],
    ) -> Result<u64, ChError> {
        let rows: Vec<(&str, u32, &DeadLetter)> = d
            .iter()
            .enumerate()
            .map(|(i, l)| (batch_id, u32::try_from(i).unwrap_or(u32::MAX), l))
            .collect();
        self.insert_identified_dead_letters(&rows).await
    }

    /// Writes dead letters each under its own identity (batch id, row), as
    /// [`ClickHouseStore::insert_identified_events`].
    pub async fn insert_identified_dead_letters(
        &self,
        rows: &[(&str, u32, &DeadLetter)],
    ) -> Result<u64, ChError> {
        let mut sent = 0u64;
        for chunk in rows.chunks(self.batch_rows) {
            let mut insert = self
                .client
                .insert::<DeadLetterRow>("dead_letters")
                .await?
                .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
            for &(batch_id, row_in_batch, l) in chunk {
                let row = DeadLetterRow {
                    day: day_number(l.received_at),
                    id: dead_letter_id(batch_id, row_in_batch),
                    received_ms: ms(l.received_at),
                    observer_type: l.observer_type.clone(),
                    observer_id: l.observer_id.clone(),
                    peer: l.peer.clone(),
                    reason: l.reason.clone(),
                    detail: l.detail.clone(),
                    raw: l.raw.clone(),
                    batch_id: batch_id.to_owned(),
                    row_in_batch,
                };
                insert.write(&row).await?;
            }
            insert.end().await?;
            sent += chunk.len() as u64;
        }
        Ok(sent)
    }

    /// Dead letters, newest first, optionally only one reason; and the total matching.
    pub async fn list_dead_letters(
        &self,
        reason: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<DeadLetter>, u64), ChError> {
        let where_clause = if reason.is_some() {
            "WHERE reason = ?"
        } else {
            ""
        };
        let mut count = self.client.query(&format!(
            "SELECT count() FROM dead_letters FINAL {where_clause}"
        ));
        let mut list = self.client.query(&format!(
            "SELECT ?fields FROM dead_letters FINAL {where_clause}
             ORDER BY received_ms DESC, batch_id DESC, row_in_batch DESC LIMIT ?, ?"
        ));
        if let Some(reason) = reason {
            count = count.bind(reason);
            list = list.bind(reason);
        }
        let total = count.fetch_one::<u64>().await?;
        let rows = list
            .bind(offset)
            .bind(limit)
            .fetch_all::<DeadLetterRow>()
            .await?;
        let letters = rows
            .into_iter()
            .map(|r| DeadLetter {
                id: r.id,
                received_at: from_ms(r.received_ms),
                observer_type: r.observer_type,
                observer_id: r.observer_id,
                peer: r.peer,
                reason: r.reason,
                detail: r.detail,
                raw: r.raw,
            })
            .collect();
        Ok((letters, total))
    }

    /// Writes offense versions. `version` must grow with every change of an offense (a
    /// per-offense update counter, or the update time in ms); readers see the highest version,
    /// and writing the same version again is harmless.
    pub async fn put_offenses(&self, rows: &[(Offense, u64)]) -> Result<(), ChError> {
        let rows: Vec<(Offense, u64, String)> = rows
            .iter()
            .map(|(o, v)| (o.clone(), *v, String::new()))
            .collect();
        self.put_marked_offenses(&rows).await
    }

    /// Writes offense versions, each with the offense stage's applied-detection marks (JSON)
    /// for the partition its index belongs to, in one `INSERT` (one block: the server writes it
    /// whole or not at all, so the marks never run ahead of the offenses they describe).
    pub async fn put_marked_offenses(
        &self,
        rows: &[(Offense, u64, String)],
    ) -> Result<(), ChError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<OffenseRow>("offenses")
            .await?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for (o, version, marks) in rows {
            let mut row = OffenseRow::new(o, *version);
            row.marks = marks.clone();
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Every open offense's newest version: (offense, version, marks JSON). What an offense
    /// stage node reads when it takes over partitions of the detections topic.
    pub async fn open_offense_versions(&self) -> Result<Vec<(Offense, u64, String)>, ChError> {
        let rows = self
            .client
            .query("SELECT ?fields FROM offenses FINAL WHERE status = ?")
            .bind(OffenseStatus::Open.as_str())
            .fetch_all::<OffenseRow>()
            .await?;
        rows.into_iter()
            .map(|r| {
                let (version, marks) = (r.version, r.marks.clone());
                Ok((r.into_offense()?, version, marks))
            })
            .collect()
    }

    /// The rules' parts of an offense as of offense version `version` (a crash may have left
    /// newer parts whose offense row was never written).
    pub async fn offense_rules_as_of(
        &self,
        id: &str,
        version: u64,
    ) -> Result<Vec<OffenseRule>, ChError> {
        let rows = self
            .client
            .query(
                "SELECT ?fields FROM offense_rules WHERE offense_id = ? AND version <= ?
                 ORDER BY version DESC LIMIT 1 BY rule",
            )
            .bind(id)
            .bind(version)
            .fetch_all::<OffenseRuleRow>()
            .await?;
        let mut rules: Vec<OffenseRule> = rows.into_iter().map(OffenseRuleRow::into_rule).collect();
        rules.sort_by(|a, b| (a.first_seen, &a.rule).cmp(&(b.first_seen, &b.rule)));
        Ok(rules)
    }

    /// Saves stage-2 checkpoints. The version is the last offset applied, so the most advanced
    /// state of a partition wins whoever wrote it (a node that lost the partition may still
    /// write an older one).
    pub async fn put_checkpoints(&self, rows: &[Checkpoint]) -> Result<(), ChError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<CheckpointRow>("checkpoints")
            .await?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        let now = ms(Utc::now());
        for c in rows {
            insert
                .write(&CheckpointRow {
                    consumer_group: c.group.clone(),
                    topic: c.topic.clone(),
                    part: c.partition,
                    version: u64::try_from(c.offset.saturating_add(1)).unwrap_or(0),
                    last_offset: c.offset,
                    written_ms: now,
                    state: c.state.clone(),
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The newest checkpoint of a partition.
    pub async fn checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, ChError> {
        let row = self
            .client
            .query(
                "SELECT ?fields FROM checkpoints FINAL
                 WHERE consumer_group = ? AND topic = ? AND part = ? LIMIT 1",
            )
            .bind(group)
            .bind(topic)
            .bind(partition)
            .fetch_optional::<CheckpointRow>()
            .await?;
        Ok(row.map(|r| Checkpoint {
            group: r.consumer_group,
            topic: r.topic,
            partition: r.part,
            offset: r.last_offset,
            state: r.state,
        }))
    }

    /// Writes versions of rules' parts in offenses: (offense id, rule part, version).
    pub async fn put_offense_rules(
        &self,
        rows: &[(String, OffenseRule, u64)],
    ) -> Result<(), ChError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<OffenseRuleRow>("offense_rules")
            .await?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for (offense_id, r, version) in rows {
            let row = OffenseRuleRow {
                offense_id: offense_id.clone(),
                rule: r.rule.clone(),
                version: *version,
                title: r.title.clone(),
                rule_id: r.rule_id.clone(),
                author: r.author.clone(),
                level: r.level.clone(),
                severity: r.severity,
                relevance: r.relevance,
                credibility: r.credibility,
                detections: r.detections,
                events: r.events,
                first_seen_ms: ms(r.first_seen),
                last_seen_ms: ms(r.last_seen),
            };
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Stores contributing events of an offense under sequence numbers from `first_seq`.
    /// (`offense_id`, seq) is the identity: writing the same events again is harmless.
    pub async fn add_offense_events(
        &self,
        offense_id: &str,
        first_seq: u64,
        events: &[Arc<Event>],
    ) -> Result<(), ChError> {
        self.add_events_of_offenses(&[(offense_id.to_owned(), first_seq, events.to_vec())])
            .await
    }

    /// [`ClickHouseStore::add_offense_events`] for several offenses in one `INSERT` (one part
    /// on the server, not one per offense).
    pub async fn add_events_of_offenses(
        &self,
        offenses: &[(String, u64, Vec<Arc<Event>>)],
    ) -> Result<(), ChError> {
        if offenses.iter().all(|(_, _, e)| e.is_empty()) {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<OffenseEventRow<'_>>("offense_events")
            .await?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        let mut buf = Vec::with_capacity(1024);
        for (offense_id, first_seq, events) in offenses {
            for (i, e) in events.iter().enumerate() {
                buf.clear();
                codec::encode_omitting(
                    e,
                    Omit {
                        fields: 0,
                        raw: true,
                    },
                    &mut buf,
                );
                let row = OffenseEventRow {
                    offense_id,
                    seq: first_seq.saturating_add(i as u64),
                    ts_ms: ms(e.timestamp),
                    event_json: "",
                    event_bin: &buf,
                    raw: &e.raw,
                };
                insert.write(&row).await?;
            }
        }
        insert.end().await?;
        Ok(())
    }

    /// One offense by id (its newest version).
    pub async fn get_offense(&self, id: &str) -> Result<Option<Offense>, ChError> {
        self.client
            .query("SELECT ?fields FROM offenses FINAL WHERE id = ? LIMIT 1")
            .bind(id)
            .fetch_optional::<OffenseRow>()
            .await?
            .map(OffenseRow::into_offense)
            .transpose()
    }

    /// Offenses matching `filter`, highest magnitude then most recent first (then id), and the
    /// total number matching: the same order and filters as the SQLite store.
    pub async fn list_offenses(
        &self,
        filter: &OffenseFilter,
    ) -> Result<(Vec<Offense>, u64), ChError> {
        // `FINAL` first, then `WHERE`: the filters see only each offense's newest version.
        let mut conditions = Vec::new();
        if filter.status.is_some() {
            conditions.push("status = ?");
        }
        if filter.min_magnitude.is_some() {
            conditions.push("magnitude >= ?");
        }
        if filter.since.is_some() {
            conditions.push("last_seen_ms >= ?");
        }
        if filter.index_value.is_some() {
            conditions.push("index_value = ?");
        }
        if filter.rule.is_some() {
            conditions.push("id IN (SELECT offense_id FROM offense_rules FINAL WHERE rule = ?)");
        }
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let mut count = self.client.query(&format!(
            "SELECT count() FROM offenses FINAL {where_clause}"
        ));
        let mut list = self.client.query(&format!(
            "SELECT ?fields FROM offenses FINAL {where_clause}
             ORDER BY magnitude DESC, last_seen_ms DESC, id LIMIT ?, ?"
        ));
        if let Some(status) = filter.status {
            count = count.bind(status.as_str());
            list = list.bind(status.as_str());
        }
        if let Some(m) = filter.min_magnitude {
            count = count.bind(m);
            list = list.bind(m);
        }
        if let Some(since) = filter.since {
            count = count.bind(ms(since));
            list = list.bind(ms(since));
        }
        if let Some(v) = &filter.index_value {
            count = count.bind(v.as_str());
            list = list.bind(v.as_str());
        }
        if let Some(r) = &filter.rule {
            count = count.bind(r.as_str());
            list = list.bind(r.as_str());
        }
        let total = count.fetch_one::<u64>().await?;
        let rows = list
            .bind(filter.offset)
            .bind(filter.limit)
            .fetch_all::<OffenseRow>()
            .await?;
        let offenses = rows
            .into_iter()
            .map(OffenseRow::into_offense)
            .collect::<Result<_, _>>()?;
        Ok((offenses, total))
    }

    /// The open offense for this index (field and value) whose last event is latest.
    pub async fn find_open_offense(
        &self,
        index_field: &str,
        index_value: &str,
    ) -> Result<Option<Offense>, ChError> {
        self.client
            .query(
                "SELECT ?fields FROM offenses FINAL
                 WHERE index_field = ? AND index_value = ? AND status = ?
                 ORDER BY last_seen_ms DESC, created_at_ms DESC LIMIT 1",
            )
            .bind(index_field)
            .bind(index_value)
            .bind(OffenseStatus::Open.as_str())
            .fetch_optional::<OffenseRow>()
            .await?
            .map(OffenseRow::into_offense)
            .transpose()
    }

    /// The rules that contributed to an offense, first contribution first.
    pub async fn offense_rules(&self, id: &str) -> Result<Vec<OffenseRule>, ChError> {
        let rows = self
            .client
            .query(
                "SELECT ?fields FROM offense_rules FINAL WHERE offense_id = ?
                 ORDER BY first_seen_ms, rule",
            )
            .bind(id)
            .fetch_all::<OffenseRuleRow>()
            .await?;
        Ok(rows.into_iter().map(OffenseRuleRow::into_rule).collect())
    }

    /// Stored contributing events of an offense in sequence order, at most `limit`.
    pub async fn offense_events(&self, id: &str, limit: u64) -> Result<Vec<Event>, ChError> {
        let rows = self
            .client
            .query(
                "SELECT ?fields FROM offense_events FINAL WHERE offense_id = ?
                 ORDER BY seq LIMIT ?",
            )
            .bind(id)
            .bind(limit)
            .fetch_all::<StoredOffenseEventRow>()
            .await?;
        rows.into_iter()
            .map(|r| stored_event(&r.event_json, &r.event_bin, r.raw))
            .collect()
    }

    /// Appends entries to the audit trail.
    pub async fn insert_audit(&self, entries: &[AuditEntry]) -> Result<(), ChError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<AuditRow<'_>>("audit")
            .await?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for a in entries {
            let row = AuditRow {
                day: day_number(a.ts),
                ts: datetime_secs(a.ts),
                actor: &a.actor,
                action: &a.action,
                target: &a.target,
                detail: &a.detail,
            };
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Audit entries of one day, oldest first.
    pub async fn audit_on(&self, day: NaiveDate) -> Result<Vec<AuditEntry>, ChError> {
        // 18.16 compares a `Date` with a date literal, not with a number of days.
        let day = day.format("%Y-%m-%d").to_string();
        let rows = self
            .client
            .query("SELECT ?fields FROM audit WHERE day = toDate(?) ORDER BY ts, actor")
            .bind(day)
            .fetch_all::<AuditReadRow>()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                ts: from_ms(i64::from(r.ts) * 1000),
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: r.detail,
            })
            .collect())
    }

    /// Applies the configured retention as of `today` and returns the rows removed.
    ///
    /// `events`, `dead_letters` and `audit` are partitioned by `toYYYYMMDD(day)`: with a
    /// retention of N days, every partition of a day before `today - N` is dropped whole
    /// (`ALTER TABLE … DROP PARTITION`); the count is the partition's stored rows, which may
    /// still include not-yet-merged retried copies. Closed offenses whose `closed_at` is before
    /// `today - N` (midnight UTC) are deleted with their rules and stored events by
    /// `ALTER TABLE … DELETE` mutations (see the module docs for why not by partition); they
    /// count one row per offense. The call returns when the mutations have finished. A
    /// retention of 0 keeps that kind of data.
    pub async fn apply_retention(&self, today: NaiveDate) -> Result<u64, ChError> {
        let mut removed = 0u64;
        for (table, days) in [
            ("events", self.retention.events),
            ("dead_letters", self.retention.dead_letters),
            ("audit", self.retention.audit),
        ] {
            if days == 0 {
                continue;
            }
            let cutoff = yyyymmdd(today - chrono::Days::new(u64::from(days)));
            removed += self.drop_partitions_before(table, cutoff).await?;
        }
        if self.retention.offenses_closed > 0 {
            let cutoff = (today - chrono::Days::new(u64::from(self.retention.offenses_closed)))
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            removed += self.delete_closed_offenses_before(cutoff).await?;
        }
        Ok(removed)
    }

    /// Drops the partitions of `table` whose day (YYYYMMDD) is before `cutoff`; returns their
    /// rows.
    async fn drop_partitions_before(&self, table: &str, cutoff: u32) -> Result<u64, ChError> {
        let parts = self
            .client
            .query(
                "SELECT partition, sum(rows) AS rows FROM system.parts
                 WHERE database = ? AND table = ? AND active GROUP BY partition",
            )
            .bind(&self.database)
            .bind(table)
            .fetch_all::<PartitionRow>()
            .await?;
        let mut removed = 0;
        for p in parts {
            let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
                tracing::warn!(table, partition = %p.partition, "unexpected partition, kept");
                continue;
            };
            if day >= cutoff {
                continue;
            }
            self.client
                .query("ALTER TABLE ? DROP PARTITION ?")
                .bind(Identifier(table))
                .bind(day)
                .execute()
                .await?;
            tracing::info!(table, day, rows = p.rows, "retention dropped partition");
            removed += p.rows;
        }
        Ok(removed)
    }

    /// Deletes offenses whose newest version is closed before `cutoff`, with their rules and
    /// events; returns how many offenses.
    async fn delete_closed_offenses_before(&self, cutoff: DateTime<Utc>) -> Result<u64, ChError> {
        let ids = self
            .client
            .query(
                "SELECT id FROM offenses FINAL
                 WHERE status = ? AND closed_at_ms < ? ORDER BY id",
            )
            .bind(OffenseStatus::Closed.as_str())
            .bind(ms(cutoff))
            .fetch_all::<String>()
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        for chunk in ids.chunks(DELETE_CHUNK) {
            for (table, column) in [
                ("offense_events", "offense_id"),
                ("offense_rules", "offense_id"),
                ("offenses", "id"),
            ] {
                self.client
                    .query("ALTER TABLE ? DELETE WHERE has(?, ?)")
                    .bind(Identifier(table))
                    .bind(chunk)
                    .bind(Identifier(column))
                    .execute()
                    .await?;
            }
        }
        self.wait_for_mutations().await?;
        tracing::info!(offenses = ids.len(), "retention deleted closed offenses");
        Ok(ids.len() as u64)
    }

    /// Waits until no mutation of this database is pending.
    async fn wait_for_mutations(&self) -> Result<(), ChError> {
        let started = Instant::now();
        loop {
            let pending = self
                .client
                .query("SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0")
                .bind(&self.database)
                .fetch_one::<u64>()
                .await?;
            if pending == 0 {
                return Ok(());
            }
            if started.elapsed() > MUTATION_PATIENCE {
                return Err(ChError::Timeout(format!(
                    "{pending} delete mutation(s) in {}",
                    self.database
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// --- rows as ClickHouse sees them ---------------------------------------------------------

#[derive(Row, Serialize)]
struct MigrationRow {
    version: u32,
    applied: u32,
}

#[derive(Row, Serialize)]
struct EventRow<'a> {
    day: u16,
    timestamp: u32,
    ts_ms: u64,
    ingested: u32,
    observer_type: &'a str,
    observer_id: &'a str,
    dataset: &'a str,
    category: &'a str,
    action: &'a str,
    outcome: &'a str,
    source_ip: [u8; 16],
    source_port: u16,
    destination_ip: [u8; 16],
    destination_port: u16,
    user_name: &'a str,
    host_name: &'a str,
    sequence: u64,
    batch_id: &'a str,
    row_in_batch: u32,
    event_json: &'a str,
    #[serde(serialize_with = "bytes::serialize")]
    event_bin: &'a [u8],
    #[serde(serialize_with = "bytes::serialize")]
    raw: &'a [u8],
    message: &'a str,
    network_transport: &'a str,
    network_bytes: u64,
    network_packets: u64,
    flow_exporter: &'a str,
    source_country: &'a str,
    source_country_name: &'a str,
    destination_country: &'a str,
}

/// Declares, from one list of the event's text fields that `events` keeps in columns of their
/// own, their names ([`COLUMN_FIELDS`]) and their values read ([`column_texts`]) and written
/// ([`COLUMN_SLOTS`]), in that order.
macro_rules! column_fields {
    ($($place:ident $field:ident),* $(,)?) => {
        /// The event's text fields that `events` keeps in columns of their own, by their names
        /// in [`Event`]. A stored event leaves each out of its `event_bin` when it is set and
        /// not empty, and reading sets it again from its column; an empty text stays in the
        /// blob, so `Some("")` and `None` both come back as they were.
        const COLUMN_FIELDS: [&str; COLUMNS] = [$(stringify!($field)),*];

        fn column_texts(e: &Event) -> [Option<&Text>; COLUMNS] {
            [$(vigil_parsers::event_field!($place, e, $field).as_ref()),*]
        }

        /// Each column's field to write (a rare one is boxed: write only a value).
        const COLUMN_SLOTS: [fn(&mut Event) -> &mut Option<Text>; COLUMNS] =
            [$(|e| &mut vigil_parsers::event_field!(mut $place, e, $field)),*];
    };
}

/// How many of the event's texts have a column.
const COLUMNS: usize = 13;

column_fields!(
    core observer_type,
    core observer_id,
    core dataset,
    core category,
    core action,
    core outcome,
    core user_name,
    core host_name,
    core message,
    core network_transport,
    rare source_geo_country_iso_code,
    rare source_geo_country_name,
    rare destination_geo_country_iso_code,
);

/// The codec's mask bits of [`COLUMN_FIELDS`].
static COLUMN_BITS: std::sync::LazyLock<[u64; COLUMNS]> =
    std::sync::LazyLock::new(|| COLUMN_FIELDS.map(|f| codec::field_bit(f).unwrap_or(0)));

/// An event read back from `events`: its blob (or, written by builds before it, its JSON),
/// the exact bytes, and the columns the blob leaves out.
#[derive(Row, Deserialize)]
struct StoredEventRow {
    event_json: String,
    #[serde(deserialize_with = "bytes::deserialize")]
    event_bin: Vec<u8>,
    #[serde(deserialize_with = "bytes::deserialize")]
    raw: Vec<u8>,
    observer_type: String,
    observer_id: String,
    dataset: String,
    category: String,
    action: String,
    outcome: String,
    user_name: String,
    host_name: String,
    message: String,
    network_transport: String,
    source_country: String,
    source_country_name: String,
    destination_country: String,
}

impl StoredEventRow {
    fn into_event(self) -> Result<Event, ChError> {
        let from_blob = !self.event_bin.is_empty();
        let mut e = stored_event(&self.event_json, &self.event_bin, self.raw)?;
        if from_blob {
            let columns = [
                self.observer_type,
                self.observer_id,
                self.dataset,
                self.category,
                self.action,
                self.outcome,
                self.user_name,
                self.host_name,
                self.message,
                self.network_transport,
                self.source_country,
                self.source_country_name,
                self.destination_country,
            ];
            for (slot, text) in COLUMN_SLOTS.iter().zip(columns) {
                if text.is_empty() {
                    continue;
                }
                let slot = slot(&mut e);
                if slot.is_none() {
                    *slot = Some(text.into());
                }
            }
        }
        Ok(e)
    }
}

/// An event read back from `offense_events`.
#[derive(Row, Deserialize)]
struct StoredOffenseEventRow {
    event_json: String,
    #[serde(deserialize_with = "bytes::deserialize")]
    event_bin: Vec<u8>,
    #[serde(deserialize_with = "bytes::deserialize")]
    raw: Vec<u8>,
}

/// A stored event from its blob (the event codec without `raw`) or, when the blob is empty
/// (rows written before migration 4), its JSON; `raw` from its column.
fn stored_event(json: &str, blob: &[u8], raw: Vec<u8>) -> Result<Event, ChError> {
    let mut e: Event = if blob.is_empty() {
        serde_json::from_str(json)
            .map_err(|err| ChError::Corrupt(format!("stored event: {err}")))?
    } else {
        codec::decode(blob).map_err(|err| ChError::Corrupt(format!("stored event: {err}")))?
    };
    e.raw = raw;
    Ok(e)
}

#[derive(Row, Serialize)]
struct OffenseEventRow<'a> {
    offense_id: &'a str,
    seq: u64,
    ts_ms: i64,
    event_json: &'a str,
    #[serde(serialize_with = "bytes::serialize")]
    event_bin: &'a [u8],
    #[serde(serialize_with = "bytes::serialize")]
    raw: &'a [u8],
}

#[derive(Row, Serialize, Deserialize)]
struct DeadLetterRow {
    day: u16,
    id: i64,
    received_ms: i64,
    observer_type: String,
    observer_id: String,
    peer: Option<String>,
    reason: String,
    detail: String,
    #[serde(with = "bytes")]
    raw: Vec<u8>,
    batch_id: String,
    row_in_batch: u32,
}

#[derive(Row, Serialize)]
struct AuditRow<'a> {
    day: u16,
    ts: u32,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: &'a str,
}

#[derive(Row, Deserialize)]
struct AuditReadRow {
    ts: u32,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Row, Deserialize)]
struct PartitionRow {
    partition: String,
    rows: u64,
}

/// `Enum8('open' = 1, 'closed' = 2)` on the wire.
const STATUS_OPEN: i8 = 1;
const STATUS_CLOSED: i8 = 2;

#[derive(Row, Serialize, Deserialize)]
struct OffenseRow {
    id: String,
    version: u64,
    rule: String,
    title: String,
    index_field: String,
    index_value: String,
    status: i8,
    magnitude: u8,
    severity: u8,
    relevance: u8,
    credibility: u8,
    magnitude_reasons: Vec<String>,
    level: Option<String>,
    tags: Vec<String>,
    first_seen_ms: i64,
    last_seen_ms: i64,
    event_count: u64,
    stored_events: u64,
    window_start_ms: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    assignee: Option<String>,
    closing_reason: Option<String>,
    closed_at_ms: Option<i64>,
    follow_up: u8,
    asset_criticality: u8,
    asset_reason: Option<String>,
    marks: String,
}

impl OffenseRow {
    fn new(o: &Offense, version: u64) -> Self {
        OffenseRow {
            id: o.id.clone(),
            version,
            rule: o.rule.clone(),
            title: o.title.clone(),
            index_field: o.index_field.clone(),
            index_value: o.index_value.clone(),
            status: match o.status {
                OffenseStatus::Open => STATUS_OPEN,
                OffenseStatus::Closed => STATUS_CLOSED,
            },
            magnitude: o.magnitude,
            severity: o.severity,
            relevance: o.relevance,
            credibility: o.credibility,
            magnitude_reasons: o.magnitude_reasons.clone(),
            level: o.level.clone(),
            tags: o.tags.clone(),
            first_seen_ms: ms(o.first_seen),
            last_seen_ms: ms(o.last_seen),
            event_count: o.event_count,
            stored_events: o.stored_events,
            window_start_ms: ms(o.window_start),
            created_at_ms: ms(o.created_at),
            updated_at_ms: ms(o.updated_at),
            assignee: o.assignee.clone(),
            closing_reason: o.closing_reason.clone(),
            closed_at_ms: o.closed_at.map(ms),
            follow_up: u8::from(o.follow_up),
            asset_criticality: o.asset_criticality,
            asset_reason: o.asset_reason.clone(),
            marks: String::new(),
        }
    }

    fn into_offense(self) -> Result<Offense, ChError> {
        let status = match self.status {
            STATUS_OPEN => OffenseStatus::Open,
            STATUS_CLOSED => OffenseStatus::Closed,
            other => {
                return Err(ChError::Corrupt(format!(
                    "offense {} status {other}",
                    self.id
                )))
            }
        };
        Ok(Offense {
            id: self.id,
            rule: self.rule,
            title: self.title,
            index_field: self.index_field,
            index_value: self.index_value,
            status,
            magnitude: self.magnitude,
            severity: self.severity,
            relevance: self.relevance,
            credibility: self.credibility,
            magnitude_reasons: self.magnitude_reasons,
            level: self.level,
            tags: self.tags,
            first_seen: from_ms(self.first_seen_ms),
            last_seen: from_ms(self.last_seen_ms),
            event_count: self.event_count,
            stored_events: self.stored_events,
            window_start: from_ms(self.window_start_ms),
            created_at: from_ms(self.created_at_ms),
            updated_at: from_ms(self.updated_at_ms),
            assignee: self.assignee,
            closing_reason: self.closing_reason,
            closed_at: self.closed_at_ms.map(from_ms),
            follow_up: self.follow_up != 0,
            asset_criticality: self.asset_criticality,
            asset_reason: self.asset_reason,
        })
    }
}

#[derive(Row, Serialize, Deserialize)]
struct OffenseRuleRow {
    offense_id: String,
    rule: String,
    version: u64,
    title: String,
    rule_id: Option<String>,
    author: Option<String>,
    level: Option<String>,
    severity: u8,
    relevance: u8,
    credibility: u8,
    detections: u64,
    events: u64,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

impl OffenseRuleRow {
    fn into_rule(self) -> OffenseRule {
        OffenseRule {
            rule: self.rule,
            title: self.title,
            rule_id: self.rule_id,
            author: self.author,
            level: self.level,
            severity: self.severity,
            relevance: self.relevance,
            credibility: self.credibility,
            detections: self.detections,
            events: self.events,
            first_seen: from_ms(self.first_seen_ms),
            last_seen: from_ms(self.last_seen_ms),
        }
    }
}

#[derive(Row, Serialize, Deserialize)]
struct CheckpointRow {
    consumer_group: String,
    topic: String,
    part: i32,
    version: u64,
    last_offset: i64,
    written_ms: i64,
    #[serde(with = "bytes")]
    state: Vec<u8>,
}

/// The saved state of one consumed partition of a stage-2 consumer group: everything the
/// records up to and including `offset` did to the stage's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Last offset applied.
    pub offset: i64,
    /// The stage's state (JSON).
    pub state: Vec<u8>,
}

// --- conversions --------------------------------------------------------------------------

/// 16 bytes: IPv6 as is, IPv4 mapped (`::ffff:a.b.c.d`), absent as zeros.
fn ip_bytes(ip: Option<IpAddr>) -> [u8; 16] {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

/// The address stored as [`ip_bytes`] (zeros are "absent").
pub fn ip_from_bytes(bytes: [u8; 16]) -> Option<IpAddr> {
    if bytes == [0; 16] {
        return None;
    }
    let v6 = Ipv6Addr::from(bytes);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

/// ClickHouse `Date`: days since 1970-01-01, clamped to its range.
/// (table, column) of an `ALTER TABLE <table> ADD COLUMN <column> ...` migration statement.
fn added_column(sql: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    match words.as_slice() {
        ["ALTER", "TABLE", table, "ADD", "COLUMN", column, ..] => Some((table, column)),
        _ => None,
    }
}

fn day_number(t: DateTime<Utc>) -> u16 {
    let days = t.timestamp().div_euclid(86_400);
    u16::try_from(days.max(0)).unwrap_or(u16::MAX)
}

/// ClickHouse `DateTime`: seconds since the epoch, clamped to its range.
fn datetime_secs(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}

/// The partition id of a day (`toYYYYMMDD`).
fn yyyymmdd(d: NaiveDate) -> u32 {
    use chrono::Datelike;
    let year = u32::try_from(d.year().max(0)).unwrap_or(0);
    year * 10_000 + d.month() * 100 + d.day()
}

/// A dead letter's id: stable for (batch, row), positive.
fn dead_letter_id(batch_id: &str, row_in_batch: u32) -> i64 {
    let mut h = Sha256::new();
    h.update(batch_id.as_bytes());
    h.update([0]);
    h.update(row_in_batch.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::try_from(u64::from_be_bytes(first) >> 1).unwrap_or(i64::MAX)
}

/// `String` columns as bytes (they may hold anything, e.g. invalid UTF-8).
mod bytes {
    use std::fmt;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer, T: AsRef<[u8]> + ?Sized>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v.as_ref())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_fields_name_the_fields_their_slots_hold() {
        let mut e = Event::new(Utc::now(), Utc::now());
        for (i, slot) in COLUMN_SLOTS.iter().enumerate() {
            *slot(&mut e) = Some(format!("v{i}").into());
        }
        for (i, (name, bit)) in COLUMN_FIELDS.iter().zip(COLUMN_BITS.iter()).enumerate() {
            assert_ne!(*bit, 0, "{name} is not an optional field of the codec");
            assert_eq!(
                column_texts(&e)[i].map(Text::as_str),
                Some(format!("v{i}").as_str()),
                "{name}: column_texts and COLUMN_SLOTS agree"
            );
            // Leaving out the field named `name` empties exactly slot i.
            let mut blob = Vec::new();
            codec::encode_omitting(
                &e,
                Omit {
                    fields: *bit,
                    raw: true,
                },
                &mut blob,
            );
            let mut back = codec::decode(&blob).unwrap_or_else(|err| panic!("{name}: {err}"));
            for (j, slot) in COLUMN_SLOTS.iter().enumerate() {
                let want = (j != i).then(|| format!("v{j}"));
                assert_eq!(*slot(&mut back), want.map(Into::into), "{name}: slot {j}");
            }
        }
    }

    #[test]
    fn added_columns_are_recognized_in_migrations() {
        assert_eq!(
            added_column("ALTER TABLE offenses ADD COLUMN marks String DEFAULT ''"),
            Some(("offenses", "marks"))
        );
        assert_eq!(added_column("CREATE TABLE IF NOT EXISTS x (a UInt8)"), None);
    }

    #[test]
    fn identifiers_are_plain_names_only() {
        assert!(is_valid_identifier("vigil"));
        assert!(is_valid_identifier("_t1"));
        assert!(!is_valid_identifier(""));
        assert!(!is_valid_identifier("1abc"));
        assert!(!is_valid_identifier("a-b"));
        assert!(!is_valid_identifier("a`; DROP"));
    }

    #[test]
    fn addresses_round_trip_through_sixteen_bytes() {
        for text in ["203.0.113.7", "2001:db8::1", "::1", "0.0.0.1"] {
            let ip: IpAddr = text.parse().unwrap_or(IpAddr::V4([0, 0, 0, 0].into()));
            assert_eq!(ip_from_bytes(ip_bytes(Some(ip))), Some(ip), "{text}");
        }
        assert_eq!(ip_from_bytes(ip_bytes(None)), None);
    }

    #[test]
    fn day_partitions_are_utc_dates() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap_or_default();
        assert_eq!(yyyymmdd(d), 20260309);
        let t = d.and_hms_opt(23, 59, 59).unwrap_or_default().and_utc();
        assert_eq!(
            i64::from(day_number(t)),
            (d - NaiveDate::default()).num_days()
        );
    }
}
