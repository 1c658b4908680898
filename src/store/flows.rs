//! Flow records in embedded mode: one row per flow event (NetFlow, IPFIX, sFlow) or per
//! superflow (a scan condensed, see [`super::superflow`]) in `data_dir/flows.db`, a SQLite file
//! of its own written by its own thread (see [`super::writer`]): a copy for search, like the
//! log events in `events.db`, so that detection never waits for it. The newest
//! `store.max_flows` are kept (older rows deleted as new ones come, counted), searchable by
//! address for the API. The whole event is kept in the binary codec (`vigil_parsers::codec`;
//! rows from before migration 13 as JSON), a superflow's summary as JSON; the columns are for
//! the search. Builds before this file existed kept flows in `vigil.db`: they are moved here
//! once, at start ([`FlowStore::adopt_legacy`]).

use std::net::IpAddr;

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;
use vigil_parsers::Event;

use super::superflow::FlowRow;
use super::writer::{Names, Sink, Table};
use super::{clamp_i64, from_ms, ms, StoreError};
use crate::telemetry::Metrics;

/// The columns of a flow row, in the order of [`SCHEMA`] (the legacy table has the same).
const COLUMNS: &str = "id, start, end, exporter, source_ip, source_port, destination_ip,
    destination_port, transport, bytes, packets, tcp_flags, community_id, kind, flow_count,
    destinations, ports, event_json, event_bin";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS flows (
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
    event_json TEXT NOT NULL,
    event_bin BLOB
);
CREATE INDEX IF NOT EXISTS flows_by_source ON flows (source_ip, id);
CREATE INDEX IF NOT EXISTS flows_by_destination ON flows (destination_ip, id);";

/// One stored flow as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredFlow {
    /// Row id (grows with arrival).
    pub id: i64,
    /// Flow start.
    pub start: DateTime<Utc>,
    /// Flow end.
    pub end: DateTime<Utc>,
    /// Exporter address.
    pub exporter: String,
    /// `flow`, or `superflow` (a scan condensed: `event` is its summary).
    pub kind: String,
    /// Flow records this row stands for (1 for a flow).
    pub flows: u64,
    /// The flow event (ECS fields), or the superflow's summary.
    pub event: serde_json::Value,
}

/// Whether `e` is a flow record event (from a flow collector).
pub fn is_flow(e: &Event) -> bool {
    e.action.as_deref() == Some("flow")
        && matches!(
            e.dataset.as_deref(),
            Some("netflow") | Some("ipfix") | Some("sflow")
        )
}

/// A flow event's time named by `key` (`flow.start`, `flow.end`), or its `@timestamp`.
pub fn flow_time(e: &Event, key: &str) -> DateTime<Utc> {
    e.extra
        .get(key)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(e.timestamp, |t| t.with_timezone(&Utc))
}

/// The flow store (one connection).
pub struct FlowStore {
    conn: Connection,
}

impl FlowStore {
    /// Opens (creating) the file for writing.
    pub fn open(path: &Path) -> Result<FlowStore, StoreError> {
        // 64 MiB: the two address indexes take each flow at a random place; at 50 k flows/s
        // the writer kept 73 % of them with 2 MiB (one run), 79–86 % with 64 MiB (BENCHMARKS.md,
        // "End to end, night of 2026-11-29/30").
        let conn = super::writer::open_for_writing(path, SCHEMA, 64)?;
        Ok(FlowStore { conn })
    }

    /// Opens the file for searching (the API); a store not yet created is created empty.
    pub fn open_reader(path: &Path) -> Result<FlowStore, StoreError> {
        let conn = super::writer::open_for_reading(path, SCHEMA)?;
        Ok(FlowStore { conn })
    }

    /// Moves the flows an older build kept in `vigil_db` (its `flows` table) into this store,
    /// oldest first, and empties that table; returns how many moved. Run at start, before the
    /// engine writes. The table itself stays (its schema belongs to `vigil.db`'s migrations).
    pub fn adopt_legacy(&mut self, vigil_db: &Path) -> Result<u64, StoreError> {
        let Some(path) = vigil_db.to_str() else {
            return Ok(0);
        };
        self.conn.execute("ATTACH DATABASE ?1 AS legacy", [path])?;
        let moved = (|| -> Result<u64, StoreError> {
            let exists: i64 = self.conn.query_row(
                "SELECT count(*) FROM legacy.sqlite_master WHERE type = 'table' AND name = 'flows'",
                [],
                |r| r.get(0),
            )?;
            if exists == 0 {
                return Ok(0);
            }
            let tx = self.conn.transaction()?;
            let moved = tx.execute(
                &format!(
                    "INSERT INTO main.flows ({COLUMNS}) SELECT {COLUMNS} FROM legacy.flows
                     WHERE id > (SELECT coalesce(max(id), 0) FROM main.flows) ORDER BY id"
                ),
                [],
            )?;
            tx.execute("DELETE FROM legacy.flows", [])?;
            tx.commit()?;
            Ok(moved as u64)
        })();
        self.conn.execute("DETACH DATABASE legacy", [])?;
        moved
    }

    /// Stores flows and superflows in one transaction, deleting the oldest beyond `max_kept`;
    /// returns how many it deleted.
    pub fn insert_flows(&mut self, rows: &[FlowRow], max_kept: u64) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        let deleted = insert_rows(&tx, rows, max_kept)?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Flows from or to `ip` (all flows when `None`), newest first, and how many match.
    pub fn list_flows(
        &self,
        ip: Option<IpAddr>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<StoredFlow>, u64), StoreError> {
        let ip = ip.map(|a| a.to_string());
        let total: i64 = self.conn.query_row(
            "SELECT count(*) FROM flows WHERE ?1 IS NULL OR source_ip = ?1 OR destination_ip = ?1",
            params![ip],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, start, end, exporter, kind, flow_count, event_json, event_bin FROM flows
             WHERE ?1 IS NULL OR source_ip = ?1 OR destination_ip = ?1
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![ip, clamp_i64(limit), clamp_i64(offset)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, start, end, exporter, kind, flows, json, bin) = row?;
            let event = match bin {
                // A flow: its event, as the API has always shown it (JSON).
                Some(bin) => serde_json::to_value(super::decoded_event(&bin)?)
                    .map_err(|err| StoreError::Corrupt(format!("stored flow: {err}")))?,
                None => serde_json::from_str(&json)
                    .map_err(|err| StoreError::Corrupt(format!("stored flow: {err}")))?,
            };
            out.push(StoredFlow {
                id,
                start: from_ms(start),
                end: from_ms(end),
                exporter,
                kind,
                flows: u64::try_from(flows).unwrap_or(0),
                event,
            });
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }
}

fn insert_rows(conn: &Connection, rows: &[FlowRow], max_kept: u64) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO flows (start, end, exporter, source_ip, source_port, destination_ip,
                 destination_port, transport, bytes, packets, tcp_flags, community_id, kind,
                 flow_count, destinations, ports, event_json, event_bin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18)",
    )?;
    let mut bin = Vec::new();
    let corrupt = |err: serde_json::Error| StoreError::Corrupt(format!("flow to json: {err}"));
    for row in rows {
        match row {
            FlowRow::Flow(e) => {
                bin.clear();
                vigil_parsers::codec::encode(e, &mut bin);
                stmt.execute(params![
                    ms(flow_time(e, "flow.start")),
                    ms(flow_time(e, "flow.end")),
                    e.extra.get("flow.exporter").map_or("", |t| t.as_str()),
                    e.source_ip.map(|a| a.to_string()),
                    e.source_port,
                    e.destination_ip.map(|a| a.to_string()),
                    e.destination_port,
                    e.network_transport,
                    clamp_i64(e.network_bytes.unwrap_or(0)),
                    clamp_i64(e.network_packets.unwrap_or(0)),
                    e.extra.get("tcp.flags").map(|t| t.as_str()),
                    e.network_community_id,
                    "flow",
                    1,
                    1,
                    1,
                    "",
                    bin,
                ])?;
            }
            FlowRow::Super(s) => {
                stmt.execute(params![
                    ms(s.first),
                    ms(s.last),
                    s.exporter,
                    s.source_ip.to_string(),
                    None::<u16>,
                    None::<String>,
                    None::<u16>,
                    s.transports.join(","),
                    clamp_i64(s.bytes),
                    clamp_i64(s.packets),
                    None::<String>,
                    None::<String>,
                    "superflow",
                    clamp_i64(s.flows),
                    clamp_i64(s.destinations),
                    clamp_i64(s.ports),
                    serde_json::to_string(s).map_err(corrupt)?,
                    None::<Vec<u8>>,
                ])?;
            }
        }
    }
    let id = conn.last_insert_rowid();
    let cutoff = id - clamp_i64(max_kept);
    if cutoff > 0 {
        let deleted = conn
            .prepare_cached("DELETE FROM flows WHERE id <= ?1")?
            .execute(params![cutoff])?;
        return Ok(deleted as u64);
    }
    Ok(0)
}

impl Table for FlowStore {
    type Row = FlowRow;

    fn insert(&mut self, rows: &[FlowRow], max_kept: u64) -> Result<u64, StoreError> {
        self.insert_flows(rows, max_kept)
    }
}

/// Hands flow records and superflows to the `flows.db` writer (see [`super::writer`]).
pub type FlowSink = Sink<FlowRow>;

/// Starts the writer thread of `path`; it ends when every [`FlowSink`] is dropped, after
/// storing what was queued.
pub fn spawn_writer(
    store: FlowStore,
    max_kept: u64,
    queue_limit: usize,
    metrics: &Metrics,
) -> Result<(FlowSink, std::thread::JoinHandle<()>), StoreError> {
    let names = Names {
        thread: "vigil-flows",
        rows: "flow records",
        dropped: (
            "vigil_store_flows_dropped_total",
            "Flow records not kept for search (the flow writer fell behind; detection is unaffected).",
        ),
        stored: (
            "vigil_store_flows_stored_total",
            "Flow rows (flows and superflows) written to the flow store.",
        ),
        evicted: (
            "vigil_store_flows_evicted_total",
            "Oldest flow records deleted to stay under store.max_flows.",
        ),
    };
    super::writer::spawn(store, names, max_kept, queue_limit, metrics)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, bytes: u64) -> Event {
        let t = from_ms(1_795_000_000_000);
        let mut e = Event::new(t, t);
        e.action = Some("flow".into());
        e.dataset = Some("netflow".into());
        e.source_ip = src.parse().ok();
        e.destination_ip = dst.parse().ok();
        e.network_bytes = Some(bytes);
        e.extra.insert("flow.exporter".into(), "192.0.2.250".into());
        e
    }

    fn row(e: Event) -> FlowRow {
        FlowRow::Flow(std::sync::Arc::new(e))
    }

    #[test]
    fn flows_are_kept_up_to_the_limit_and_found_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FlowStore::open(&dir.path().join("flows.db")).unwrap();
        let a = flow("10.0.0.1", "198.51.100.7", 100);
        let b = flow("10.0.0.2", "198.51.100.7", 200);
        let c = flow("10.0.0.3", "203.0.113.9", 300);
        assert!(is_flow(&a));
        assert_eq!(s.insert_flows(&[row(a), row(b)], 2).unwrap(), 0);
        assert_eq!(s.insert_flows(&[row(c)], 2).unwrap(), 1, "the oldest goes");
        let (all, total) = s.list_flows(None, 10, 0).unwrap();
        assert_eq!(total, 2);
        assert_eq!(all[0].event["network.bytes"], 300);
        let (to, total) = s.list_flows("198.51.100.7".parse().ok(), 10, 0).unwrap();
        assert_eq!((to.len(), total), (1, 1));
        assert_eq!(to[0].event["source.ip"], "10.0.0.2");
        assert_eq!(to[0].exporter, "192.0.2.250");
        assert_eq!((to[0].kind.as_str(), to[0].flows), ("flow", 1));
    }

    #[test]
    fn flows_an_older_build_kept_in_vigil_db_move_once_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let vigil_db = dir.path().join("vigil.db");
        // An older build's table in vigil.db (same columns), with two flows.
        {
            let legacy = FlowStore::open(&vigil_db).unwrap();
            let mut legacy = legacy;
            legacy
                .insert_flows(
                    &[
                        row(flow("10.0.0.1", "198.51.100.7", 100)),
                        row(flow("10.0.0.2", "198.51.100.8", 200)),
                    ],
                    10,
                )
                .unwrap();
        }
        let mut s = FlowStore::open(&dir.path().join("flows.db")).unwrap();
        assert_eq!(s.adopt_legacy(&vigil_db).unwrap(), 2);
        assert_eq!(s.adopt_legacy(&vigil_db).unwrap(), 0, "moved only once");
        s.insert_flows(&[row(flow("10.0.0.3", "203.0.113.9", 300))], 10)
            .unwrap();
        let (all, total) = s.list_flows(None, 10, 0).unwrap();
        assert_eq!(total, 3);
        let bytes: Vec<_> = all
            .iter()
            .map(|f| f.event["network.bytes"].clone())
            .collect();
        assert_eq!(bytes, [300, 200, 100], "newest first, the moved ones older");
        let left: i64 = Connection::open(&vigil_db)
            .unwrap()
            .query_row("SELECT count(*) FROM flows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "emptied in vigil.db");
        // A vigil.db without the table (a fresh one) moves nothing.
        let other = dir.path().join("other.db");
        Connection::open(&other).unwrap();
        assert_eq!(s.adopt_legacy(&other).unwrap(), 0);
    }

    #[test]
    fn the_writer_stores_what_is_sent_and_counts_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        let metrics = Metrics::new();
        let (sink, handle) =
            spawn_writer(FlowStore::open(&path).unwrap(), 1_000, 3, &metrics).unwrap();
        sink.send(
            (0..5)
                .map(|_| row(flow("10.0.0.1", "192.0.2.1", 1)))
                .collect(),
        );
        sink.send(
            (0..2)
                .map(|_| row(flow("10.0.0.1", "192.0.2.1", 1)))
                .collect(),
        );
        drop(sink);
        handle.join().unwrap();
        let text = metrics.render();
        assert!(
            text.contains("vigil_store_flows_dropped_total{reason=\"queue_full\"} 5"),
            "{text}"
        );
        assert!(text.contains("vigil_store_flows_stored_total 2"), "{text}");
        let (_, total) = FlowStore::open_reader(&path)
            .unwrap()
            .list_flows(None, 10, 0)
            .unwrap();
        assert_eq!(total, 2);
    }
}
