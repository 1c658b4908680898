//! Flow records in embedded mode: each flow event (NetFlow, IPFIX, sFlow) or superflow (a scan
//! condensed, see [`super::superflow`]) in `data_dir/flows.db`, a SQLite file of its own written
//! by its own thread (see [`super::writer`]): a copy for search, like the log events in
//! `events.db`, so that detection never waits for it. The newest `store.max_flows` are kept
//! (plus up to one block; older ones deleted as new ones come, counted), searchable by address
//! for the API.
//!
//! Flows are stored in blocks ([`super::blocks`]), keyed by their source and destination
//! addresses; each record is a small header (kind, start, end, flows, addresses, exporter) and
//! the flow's event in the binary codec, or a superflow's summary as JSON. Rows of older builds
//! (the `flows` table, one row per flow with two address indexes) are listed after the blocks
//! (they are older) and evicted first; builds before this file existed kept those rows in
//! `vigil.db`: they are moved here once, at start ([`FlowStore::adopt_legacy`]).

use std::net::IpAddr;

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;
use vigil_parsers::Event;

use super::blocks::{holds_key, ip_key, BlockMeta, BlockWriter, Framed};
use super::superflow::FlowRow;
use super::writer::{Names, Sink, Table};
use super::{clamp_i64, from_ms, ms, StoreError};
use crate::bytes::{put_long, put_opt_ip, Cursor};
use crate::telemetry::Metrics;

/// The columns of an older build's flow row, in the order of [`LEGACY_SCHEMA`].
const COLUMNS: &str = "id, start, end, exporter, source_ip, source_port, destination_ip,
    destination_port, transport, bytes, packets, tcp_flags, community_id, kind, flow_count,
    destinations, ports, event_json, event_bin";

/// The row table of older builds (kept: flows moved from `vigil.db` land there).
const LEGACY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS flows (
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

/// The store's blocks (see [`super::blocks`]).
const BLOCKS: &str = "flow";

/// The key tag of a flow's addresses (source and destination alike: a search asks for either).
const KEY_ADDRESS: u8 = 1;

fn schema() -> String {
    format!("{LEGACY_SCHEMA}\n{}", super::blocks::schema(BLOCKS))
}

/// The flow store (one connection).
pub struct FlowStore {
    conn: Connection,
    /// The blocks' writer (`None` for a reader).
    blocks: Option<BlockWriter>,
}

const KIND_FLOW: u8 = 0;
const KIND_SUPER: u8 = 1;

impl Framed for FlowRow {
    fn time_ms(&self) -> i64 {
        match self {
            FlowRow::Flow(e) => ms(flow_time(e, "flow.start")),
            FlowRow::Super(s) => ms(s.first),
        }
    }

    fn keys(&self, out: &mut Vec<u64>) {
        let (a, b) = match self {
            FlowRow::Flow(e) => (e.source_ip, e.destination_ip),
            FlowRow::Super(s) => (Some(s.source_ip), None),
        };
        out.extend(a.into_iter().chain(b).map(|ip| ip_key(KEY_ADDRESS, ip)));
    }

    /// `[kind][start ms][end ms][flows: u64][source][destination][exporter: u32 length, bytes]`
    /// then the body (the event's codec, or the superflow as JSON); an address is 0, or 4 or 6
    /// and its octets.
    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, start, end, flows, src, dst, exporter) = match self {
            FlowRow::Flow(e) => (
                KIND_FLOW,
                ms(flow_time(e, "flow.start")),
                ms(flow_time(e, "flow.end")),
                1,
                e.source_ip,
                e.destination_ip,
                e.extra.get("flow.exporter").map_or("", |t| t.as_str()),
            ),
            FlowRow::Super(s) => (
                KIND_SUPER,
                ms(s.first),
                ms(s.last),
                s.flows,
                Some(s.source_ip),
                None,
                s.exporter.as_str(),
            ),
        };
        out.push(kind);
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&flows.to_le_bytes());
        put_opt_ip(out, src);
        put_opt_ip(out, dst);
        put_long(out, exporter.as_bytes());
        match self {
            FlowRow::Flow(e) => vigil_parsers::codec::encode(e, out),
            // Serializing plain fields cannot fail; were it to, the body is empty JSON.
            FlowRow::Super(s) => match serde_json::to_writer(&mut *out, &**s) {
                Ok(()) => {}
                Err(_) => out.extend_from_slice(b"{}"),
            },
        }
    }
}

/// A stored flow record's header, read without decoding its body.
struct FlowFrame<'a> {
    kind: u8,
    start: i64,
    end: i64,
    flows: u64,
    source: Option<IpAddr>,
    destination: Option<IpAddr>,
    exporter: &'a str,
    body: &'a [u8],
}

fn bad_frame() -> StoreError {
    StoreError::Corrupt("stored flow: unknown kind".into())
}

impl<'a> FlowFrame<'a> {
    fn parse(b: &'a [u8]) -> Result<FlowFrame<'a>, StoreError> {
        let mut c = Cursor(b);
        let mut read = || -> Result<FlowFrame<'a>, String> {
            Ok(FlowFrame {
                kind: c.u8()?,
                start: i64::from_le_bytes(c.array()?),
                end: i64::from_le_bytes(c.array()?),
                flows: u64::from_le_bytes(c.array()?),
                source: c.opt_ip("source")?,
                destination: c.opt_ip("destination")?,
                exporter: Cursor::text(c.long()?)?,
                body: c.0,
            })
        };
        read().map_err(|e| StoreError::Corrupt(format!("stored flow: {e}")))
    }

    fn stored(&self, id: i64) -> Result<StoredFlow, StoreError> {
        let event = match self.kind {
            // A flow: its event, as the API has always shown it (JSON).
            KIND_FLOW => serde_json::to_value(super::decoded_event(self.body)?),
            KIND_SUPER => serde_json::from_slice(self.body),
            _ => return Err(bad_frame()),
        }
        .map_err(|err| StoreError::Corrupt(format!("stored flow: {err}")))?;
        Ok(StoredFlow {
            id,
            start: from_ms(self.start),
            end: from_ms(self.end),
            exporter: self.exporter.to_owned(),
            kind: if self.kind == KIND_FLOW {
                "flow"
            } else {
                "superflow"
            }
            .to_owned(),
            flows: self.flows,
            event,
        })
    }
}

impl FlowStore {
    /// Opens (creating) the file for writing.
    pub fn open(path: &Path) -> Result<FlowStore, StoreError> {
        // Blocks need no more than SQLite's default cache. Older rows, while any are left, are
        // deleted through two address indexes at random places: 64 MiB then, as before blocks
        // (at 50 k flows/s the row writer kept 73 % with 2 MiB, 79–86 % with 64 MiB;
        // BENCHMARKS.md, "End to end, night of 2026-11-29/30").
        let conn = super::writer::open_for_writing(path, &schema(), 2)?;
        let last = legacy_last(&conn)?;
        if last > 0 {
            conn.pragma_update(None, "cache_size", -64 * 1024)?;
        }
        let blocks = BlockWriter::open(&conn, BLOCKS, last)?;
        Ok(FlowStore {
            conn,
            blocks: Some(blocks),
        })
    }

    /// Opens the file for searching (the API); a store not yet created is created empty.
    pub fn open_reader(path: &Path) -> Result<FlowStore, StoreError> {
        let conn = super::writer::open_for_reading(path, &schema())?;
        Ok(FlowStore { conn, blocks: None })
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
        // Numbering continues after the moved rows.
        if let Some(blocks) = self.blocks.as_mut() {
            let last = legacy_last(&self.conn)?;
            blocks.committed(blocks.next().max(last.saturating_add(1)));
        }
        moved
    }

    /// Stores flows and superflows in one transaction, deleting the oldest beyond `max_kept`
    /// (whole blocks, older rows first); returns how many it deleted.
    pub fn insert_flows(&mut self, rows: &[FlowRow], max_kept: u64) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let Some(blocks) = self.blocks.as_mut() else {
            return Err(StoreError::Corrupt(
                "the flow store was opened for reading".into(),
            ));
        };
        let tx = self.conn.transaction()?;
        let next = blocks.write(&tx, rows)?;
        let cut = (next - 1).saturating_sub(clamp_i64(max_kept));
        let mut deleted = 0;
        if cut > 0 {
            deleted += tx
                .prepare_cached("DELETE FROM flows WHERE id <= ?1")?
                .execute(params![cut])? as u64;
            deleted += blocks.evict(&tx, cut)?;
        }
        tx.commit()?;
        blocks.committed(next);
        Ok(deleted)
    }

    /// Flows from or to `ip` (all flows when `None`), newest first, and how many match.
    pub fn list_flows(
        &self,
        ip: Option<IpAddr>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<StoredFlow>, u64), StoreError> {
        // One snapshot for the blocks and the older rows, whatever the writer commits meanwhile.
        let _snapshot = self.conn.unchecked_transaction()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut skip = offset;
        let mut page = Vec::new();
        let mut total = 0u64;
        let key = ip.map(|ip| ip_key(KEY_ADDRESS, ip));
        let mut blocks = self.conn.prepare_cached(&format!(
            "SELECT id, first_event, events, ts_max, keys FROM {BLOCKS}_blocks ORDER BY id DESC"
        ))?;
        let mut data = self
            .conn
            .prepare_cached(&super::blocks::data_query(BLOCKS))?;
        let mut rows = blocks.query([])?;
        while let Some(row) = rows.next()? {
            let block = BlockMeta::from_row(row)?;
            if key.is_some_and(|k| !holds_key(&block.keys, k)) {
                continue;
            }
            let count = u64::try_from(block.count).unwrap_or(0);
            if ip.is_none() {
                // Every record matches: counted without reading, read only for the page.
                total = total.saturating_add(count);
                if page.len() >= limit {
                    continue;
                }
                if skip >= count {
                    skip -= count;
                    continue;
                }
            }
            let frames = block.frames(&mut data)?;
            for (number, _, bytes) in block.records(&frames)?.into_iter().rev() {
                let f = FlowFrame::parse(bytes)?;
                if let Some(ip) = ip {
                    if f.source != Some(ip) && f.destination != Some(ip) {
                        continue;
                    }
                    total = total.saturating_add(1);
                }
                if skip > 0 {
                    skip -= 1;
                } else if page.len() < limit {
                    page.push(f.stored(number)?);
                } else if ip.is_none() {
                    break;
                }
            }
        }
        let (legacy_page, legacy_total) =
            self.list_legacy(ip, limit.saturating_sub(page.len()), skip)?;
        page.extend(legacy_page);
        Ok((page, total.saturating_add(legacy_total)))
    }

    /// Rows of older builds' table (all older than any block).
    fn list_legacy(
        &self,
        ip: Option<IpAddr>,
        limit: usize,
        offset: u64,
    ) -> Result<(Vec<StoredFlow>, u64), StoreError> {
        let ip = ip.map(|a| a.to_string());
        let total: i64 = self.conn.query_row(
            "SELECT count(*) FROM flows WHERE ?1 IS NULL OR source_ip = ?1 OR destination_ip = ?1",
            params![ip],
            |r| r.get(0),
        )?;
        if total == 0 || limit == 0 {
            return Ok((Vec::new(), u64::try_from(total).unwrap_or(0)));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, start, end, exporter, kind, flow_count, event_json, event_bin FROM flows
             WHERE ?1 IS NULL OR source_ip = ?1 OR destination_ip = ?1
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(
            params![
                ip,
                i64::try_from(limit).unwrap_or(i64::MAX),
                clamp_i64(offset)
            ],
            |r| {
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
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (id, start, end, exporter, kind, flows, json, bin) = row?;
            let event = match bin {
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

/// The last id of the older rows (0: none).
fn legacy_last(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM flows", [], |r| r.get(0))?)
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
    super::writer::spawn(
        store,
        names,
        max_kept,
        (queue_limit, super::writer::Overflow::Shed),
        metrics,
    )
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

    /// A row as builds before blocks wrote it.
    fn legacy_row(conn: &Connection, e: &Event) {
        let mut bin = Vec::new();
        vigil_parsers::codec::encode(e, &mut bin);
        conn.execute(
            "INSERT INTO flows (start, end, exporter, source_ip, destination_ip, bytes, packets,
                 kind, flow_count, destinations, ports, event_json, event_bin)
             VALUES (?1, ?1, '192.0.2.250', ?2, ?3, ?4, 1, 'flow', 1, 1, 1, '', ?5)",
            params![
                ms(e.timestamp),
                e.source_ip.map(|a| a.to_string()),
                e.destination_ip.map(|a| a.to_string()),
                clamp_i64(e.network_bytes.unwrap_or(0)),
                bin
            ],
        )
        .unwrap();
    }

    #[test]
    fn a_flow_header_reads_back_and_every_truncation_is_an_error() {
        let r = row(flow("10.0.0.1", "2001:db8::9", 42));
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        let f = FlowFrame::parse(&bytes).unwrap();
        assert_eq!(f.source, "10.0.0.1".parse().ok());
        assert_eq!(f.destination, "2001:db8::9".parse().ok());
        assert_eq!((f.kind, f.flows, f.exporter), (KIND_FLOW, 1, "192.0.2.250"));
        assert_eq!(f.stored(7).unwrap().event["network.bytes"], 42);
        let body = bytes.len() - f.body.len();
        for n in 0..body {
            assert!(FlowFrame::parse(&bytes[..n]).is_err(), "header cut at {n}");
        }
        for n in body..bytes.len() {
            let cut = FlowFrame::parse(&bytes[..n]).unwrap();
            assert!(cut.stored(7).is_err(), "body cut at {n}");
        }
    }

    /// Listing by address, paging and totals over many blocks, superflows and older rows
    /// give what a filter of every stored record, newest first, gives.
    #[test]
    fn listings_equal_a_filter_of_everything() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        let ips = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "198.51.100.7"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // (id, source, destination, bytes) of every record, oldest first.
        let mut all: Vec<(i64, Option<IpAddr>, Option<IpAddr>, u64)> = Vec::new();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(LEGACY_SCHEMA).unwrap();
            for i in 0..25 {
                let e = flow(ips[i % 4], ips[(i + 1) % 4], i as u64);
                legacy_row(&conn, &e);
                all.push((i as i64 + 1, e.source_ip, e.destination_ip, i as u64));
            }
        }
        let mut s = FlowStore::open(&path).unwrap();
        for _ in 0..30 {
            let n = rng.random_range(1..200);
            let rows: Vec<FlowRow> = (0..n)
                .map(|_| {
                    let bytes = rng.random_range(0..1_000_000);
                    let id = all.len() as i64 + 1;
                    if rng.random_bool(0.1) {
                        let src: IpAddr = ips[rng.random_range(0..4)].parse().unwrap();
                        all.push((id, Some(src), None, bytes));
                        FlowRow::Super(Box::new(super::super::superflow::SuperFlow {
                            source_ip: src,
                            flows: 9,
                            packets: 9,
                            bytes,
                            first: from_ms(1_795_000_000_000),
                            last: from_ms(1_795_000_060_000),
                            destinations: 9,
                            ports: 1,
                            transports: vec!["tcp".into()],
                            sample_destinations: Vec::new(),
                            exporter: "192.0.2.250".into(),
                        }))
                    } else {
                        let e = flow(
                            ips[rng.random_range(0..4)],
                            ips[rng.random_range(0..4)],
                            bytes,
                        );
                        all.push((id, e.source_ip, e.destination_ip, bytes));
                        row(e)
                    }
                })
                .collect();
            s.insert_flows(&rows, 1_000_000).unwrap();
        }
        for round in 0..300 {
            let ip: Option<IpAddr> = rng
                .random_bool(0.7)
                .then(|| ips[rng.random_range(0..4)].parse().unwrap());
            let limit = rng.random_range(1..50);
            let offset = rng.random_range(0..all.len() as u64 + 20);
            let matching: Vec<_> = all
                .iter()
                .rev()
                .filter(|(_, src, dst, _)| ip.is_none() || *src == ip || *dst == ip)
                .collect();
            let expected: Vec<(i64, u64)> = matching
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .map(|(id, _, _, bytes)| (*id, *bytes))
                .collect();
            let (page, total) = s.list_flows(ip, limit, offset).unwrap();
            let got: Vec<(i64, u64)> = page
                .iter()
                .map(|f| (f.id, f.event["network.bytes"].as_u64().unwrap()))
                .collect();
            assert_eq!(got, expected, "round {round}: {ip:?} {limit} {offset}");
            assert_eq!(total, matching.len() as u64, "round {round}");
        }
        // Older rows go first, then whole blocks.
        let before = all.len() as u64;
        let gone = s
            .insert_flows(&[row(flow("10.0.0.1", "10.0.0.2", 1))], before - 30)
            .unwrap();
        assert!(gone >= 25, "all 25 older rows at least: {gone}");
        let (_, total) = s.list_flows(None, 1, 0).unwrap();
        assert_eq!(total, before + 1 - gone);
        let (oldest, _) = s.list_flows(None, 1, total - 1).unwrap();
        assert_eq!(oldest[0].id, gone as i64 + 1, "whole blocks, oldest first");
    }

    #[test]
    fn flows_are_kept_up_to_the_limit_and_found_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FlowStore::open(&dir.path().join("flows.db")).unwrap();
        let a = flow("10.0.0.1", "198.51.100.7", 100);
        let b = flow("10.0.0.2", "198.51.100.7", 200);
        let c = flow("10.0.0.3", "203.0.113.9", 300);
        assert!(is_flow(&a));
        assert_eq!(s.insert_flows(&[row(a)], 2).unwrap(), 0);
        assert_eq!(s.insert_flows(&[row(b)], 2).unwrap(), 0);
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
            let conn = Connection::open(&vigil_db).unwrap();
            conn.execute_batch(LEGACY_SCHEMA).unwrap();
            legacy_row(&conn, &flow("10.0.0.1", "198.51.100.7", 100));
            legacy_row(&conn, &flow("10.0.0.2", "198.51.100.8", 200));
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
