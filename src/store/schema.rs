//! Versioned schema. Each migration runs once, in order, in a transaction; the version lives in
//! SQLite's `user_version`. Add a migration by appending to [`MIGRATIONS`]; never edit one that
//! has shipped.

use rusqlite::Connection;

use super::StoreError;

/// Migrations, index = version - 1.
const MIGRATIONS: &[&str] = &[
    // 1: offenses, their events, dead letters, API tokens.
    "CREATE TABLE offenses (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        title TEXT NOT NULL,
        index_field TEXT NOT NULL,
        index_value TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
        magnitude INTEGER NOT NULL,
        severity INTEGER NOT NULL,
        relevance INTEGER NOT NULL,
        credibility INTEGER NOT NULL,
        magnitude_reasons TEXT NOT NULL,
        level TEXT,
        tags TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        stored_events INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX offenses_by_index ON offenses (rule, index_field, index_value, status);
    CREATE INDEX offenses_by_magnitude ON offenses (magnitude DESC, last_seen DESC);
    CREATE TABLE offense_events (
        offense_id TEXT NOT NULL REFERENCES offenses (id),
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        event_json TEXT NOT NULL,
        raw BLOB NOT NULL,
        PRIMARY KEY (offense_id, seq)
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at INTEGER NOT NULL,
        observer_type TEXT NOT NULL,
        observer_id TEXT NOT NULL,
        peer TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        raw BLOB NOT NULL
    );
    CREATE INDEX dead_letters_by_reason ON dead_letters (reason, id);
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 2: offenses join across rules (one attacker, one offense), lifecycle fields, notes.
    "ALTER TABLE offenses ADD COLUMN assignee TEXT;
    ALTER TABLE offenses ADD COLUMN closing_reason TEXT;
    ALTER TABLE offenses ADD COLUMN closed_at INTEGER;
    ALTER TABLE offenses ADD COLUMN follow_up INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX offenses_open_by_index ON offenses (index_field, index_value, status);
    CREATE TABLE offense_rules (
        offense_id TEXT NOT NULL REFERENCES offenses (id),
        rule TEXT NOT NULL,
        title TEXT NOT NULL,
        rule_id TEXT,
        author TEXT,
        level TEXT,
        severity INTEGER NOT NULL,
        relevance INTEGER NOT NULL,
        credibility INTEGER NOT NULL,
        detections INTEGER NOT NULL,
        events INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (offense_id, rule)
    );
    INSERT INTO offense_rules (offense_id, rule, title, rule_id, author, level, severity,
        relevance, credibility, detections, events, first_seen, last_seen)
        SELECT id, rule, title, NULL, NULL, level, severity, relevance, credibility, 1,
            event_count, first_seen, last_seen FROM offenses;
    CREATE TABLE offense_notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        offense_id TEXT NOT NULL REFERENCES offenses (id),
        author TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX offense_notes_by_offense ON offense_notes (offense_id, id);",
    // 3: context: the asset factor of an offense's magnitude, reference data entries that must
    // survive a restart (API, offense actions, URL feeds), assets learned from events.
    "ALTER TABLE offenses ADD COLUMN asset_criticality INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE offenses ADD COLUMN asset_reason TEXT;
    CREATE TABLE reference_entries (
        collection TEXT NOT NULL,
        value TEXT NOT NULL,
        map_value TEXT,
        source TEXT NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (collection, value)
    );
    CREATE TABLE assets (
        ip TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        zone TEXT,
        criticality INTEGER NOT NULL,
        names TEXT NOT NULL,
        ports TEXT NOT NULL,
        events INTEGER NOT NULL
    );
    CREATE INDEX assets_by_last_seen ON assets (last_seen DESC);",
    // 4: correlation windows saved at shutdown (and periodically), restored at start.
    "CREATE TABLE engine_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        taken_at INTEGER NOT NULL,
        snapshot BLOB NOT NULL
    );",
    // 5: the scaled-out offense stage's working copy: which detections each consumed
    // partition has applied (per input partition), and offenses changed here but not yet
    // written to ClickHouse.
    "CREATE TABLE cluster_marks (
        partition INTEGER NOT NULL,
        origin INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (partition, origin)
    );
    CREATE TABLE unmirrored (
        offense_id TEXT PRIMARY KEY,
        first_event INTEGER NOT NULL
    );",
    // 6: flow records (NetFlow, IPFIX, sFlow) and superflows (a scan condensed into one row),
    // newest kept up to store.max_flows.
    "CREATE TABLE flows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        exporter TEXT NOT NULL,
        source_ip TEXT,
        source_port INTEGER,
        destination_ip TEXT,
        destination_port INTEGER,
        transport TEXT,
        bytes INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        tcp_flags TEXT,
        community_id TEXT,
        kind TEXT NOT NULL,
        flow_count INTEGER NOT NULL,
        destinations INTEGER NOT NULL,
        ports INTEGER NOT NULL,
        event_json TEXT NOT NULL
    );
    CREATE INDEX flows_by_source ON flows (source_ip, id);
    CREATE INDEX flows_by_destination ON flows (destination_ip, id);",
    // 7: every automatic blocking decision (blocked, dry run, or refused by a guard).
    "CREATE TABLE response_decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        value TEXT NOT NULL,
        offense_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        decision TEXT NOT NULL,
        source TEXT NOT NULL,
        expires_at INTEGER,
        ended INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX response_decisions_live ON response_decisions (ended, expires_at);",
    // 8: the webhook outbox: one row per (event, endpoint), kept until delivered or given up.
    "CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        event TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        delivered_at INTEGER,
        given_up INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (delivered_at, given_up, next_at);",
    // 9: the audit trail of analysts' and responders' changes.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 10: rules an operator switched off (through the API), kept across restarts.
    "CREATE TABLE rule_state (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        changed_by TEXT NOT NULL,
        changed_at INTEGER NOT NULL
    );",
    // 11: an offense's audit records, for its timeline.
    "CREATE INDEX audit_by_target ON audit (target, id);",
    // 12: how far the engine has read the burst spool: `committed` (stored with each batch)
    // and `snapshot` (stored with the saved correlation windows).
    "CREATE TABLE spool_state (
        name TEXT PRIMARY KEY,
        segment INTEGER NOT NULL,
        offset INTEGER NOT NULL
    );",
    // 13: stored events in the binary codec (`vigil_parsers::codec`), exact and far cheaper
    // to write than JSON. New rows leave `event_json` empty (and an offense event's `raw`,
    // which the codec carries); rows from before keep their JSON and are read as before.
    "ALTER TABLE flows ADD COLUMN event_bin BLOB;
    ALTER TABLE offense_events ADD COLUMN event_bin BLOB;",
];

/// Migration 1 alone, for the test that upgrades a version-1 database.
#[cfg(test)]
pub const V1: &str = MIGRATIONS[0];

/// The newest schema version this build knows.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// The version recorded in the database.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Brings the database to [`LATEST`], refusing a database from a newer build.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > LATEST {
        return Err(StoreError::TooNew {
            found: current,
            supported: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let v = i as i64 + 1;
        if v <= current {
            continue;
        }
        // Another connection (the webhook task, an API writer) may be migrating the same file
        // now: take the write lock first and look again under it.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if version(&tx)? >= v {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", v)?;
        tx.commit()?;
    }
    Ok(())
}
