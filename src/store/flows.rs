//! Flow records in the embedded store: one row per flow event (NetFlow, IPFIX, sFlow) or per
//! superflow (a scan condensed, see [`super::superflow`]), the newest `store.max_flows` kept
//! (older rows deleted as new ones come, counted), searchable by address for the API. The
//! whole event is kept in the binary codec (`vigil_parsers::codec`; rows from before migration
//! 13 as JSON), a superflow's summary as JSON; the columns are for the search.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;
use vigil_parsers::Event;

use super::superflow::FlowRow;
use super::{clamp_i64, from_ms, ms, Store, StoreError};

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

impl Store {
    /// Stores flows and superflows, deleting the oldest beyond `max_kept`; returns how many it
    /// deleted.
    pub fn insert_flows(&self, rows: &[FlowRow], max_kept: u64) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut stmt = self.conn.prepare_cached(
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
                        e.extra.get("flow.exporter").cloned().unwrap_or_default(),
                        e.source_ip.map(|a| a.to_string()),
                        e.source_port,
                        e.destination_ip.map(|a| a.to_string()),
                        e.destination_port,
                        e.network_transport,
                        clamp_i64(e.network_bytes.unwrap_or(0)),
                        clamp_i64(e.network_packets.unwrap_or(0)),
                        e.extra.get("tcp.flags"),
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
        let id = self.conn.last_insert_rowid();
        let cutoff = id - clamp_i64(max_kept);
        if cutoff > 0 {
            let deleted = self
                .conn
                .prepare_cached("DELETE FROM flows WHERE id <= ?1")?
                .execute(params![cutoff])?;
            return Ok(deleted as u64);
        }
        Ok(0)
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

    #[test]
    fn flows_are_kept_up_to_the_limit_and_found_by_address() {
        let s = Store::open_in_memory().unwrap();
        let a = flow("10.0.0.1", "198.51.100.7", 100);
        let b = flow("10.0.0.2", "198.51.100.7", 200);
        let c = flow("10.0.0.3", "203.0.113.9", 300);
        assert!(is_flow(&a));
        let row = |e: Event| FlowRow::Flow(std::sync::Arc::new(e));
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
}
