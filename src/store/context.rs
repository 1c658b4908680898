//! Context the store keeps: assets learned from events and reference-data entries that must
//! survive a restart (added through the API, by offense actions, or fetched from a URL; entries
//! from files are read again from the files).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::{from_ms, ms, Store, StoreError};
use crate::context::Asset;

/// One stored reference-data entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredReference {
    /// Set or map name.
    pub collection: String,
    /// The value (set) or key (map).
    pub value: String,
    /// For maps, the value.
    pub map_value: Option<String>,
    /// Where it came from (`api`, `rule:<name>`, `url:<url>`).
    pub source: String,
    /// When it expires (never when `None`).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The saved correlation state: when it was taken, and the snapshot (JSON).
pub type SavedState = (DateTime<Utc>, Vec<u8>);

/// An asset as listed by the API.
pub type StoredAsset = Asset;

impl Store {
    /// Inserts or replaces a reference entry.
    pub fn put_reference(&self, r: &StoredReference) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO reference_entries (collection, value, map_value, source, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(collection, value) DO UPDATE SET map_value = excluded.map_value,
                     source = excluded.source, expires_at = excluded.expires_at",
            )?
            .execute(params![
                r.collection,
                r.value,
                r.map_value,
                r.source,
                r.expires_at.map(ms)
            ])?;
        Ok(())
    }

    /// Deletes a reference entry; whether it existed.
    pub fn delete_reference(&self, collection: &str, value: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM reference_entries WHERE collection = ?1 AND value = ?2",
            params![collection, value],
        )?;
        Ok(n > 0)
    }

    /// Deletes every entry of `collection` from `source` (a URL feed replaced).
    pub fn delete_reference_source(
        &self,
        collection: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM reference_entries WHERE collection = ?1 AND source = ?2",
            params![collection, source],
        )?;
        Ok(n as u64)
    }

    /// Every stored entry that has not expired at `now`.
    pub fn references(&self, now: DateTime<Utc>) -> Result<Vec<StoredReference>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT collection, value, map_value, source, expires_at FROM reference_entries
             WHERE expires_at IS NULL OR expires_at > ?1 ORDER BY collection, value",
        )?;
        let rows = stmt.query_map(params![ms(now)], |r| {
            Ok(StoredReference {
                collection: r.get(0)?,
                value: r.get(1)?,
                map_value: r.get(2)?,
                source: r.get(3)?,
                expires_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes entries expired at `now`; how many.
    pub fn delete_expired_references(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM reference_entries WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            params![ms(now)],
        )?;
        Ok(n as u64)
    }

    /// Saves the correlation engine's state (one row, replaced), as builds before the state file
    /// (`correlate::saved`) did; kept for the test of moving such a state to the file.
    #[cfg(test)]
    pub fn put_engine_state(
        &self,
        taken_at: DateTime<Utc>,
        snapshot: &[u8],
    ) -> Result<(), StoreError> {
        // Room first, then the bytes written into it in place: binding a blob this size (it
        // can be hundreds of MiB) would make SQLite copy all of it first. Two steps, so the
        // caller runs this in a transaction (the pipeline does, with the spool position).
        let len = i64::try_from(snapshot.len()).unwrap_or(i64::MAX);
        // Deleted, not updated: an update could read the old state back.
        self.conn
            .execute("DELETE FROM engine_state WHERE id = 1", [])?;
        self.conn.execute(
            "INSERT INTO engine_state (id, taken_at, snapshot) VALUES (1, ?1, zeroblob(?2))",
            params![ms(taken_at), len],
        )?;
        let mut blob =
            self.conn
                .blob_open(rusqlite::MAIN_DB, "engine_state", "snapshot", 1, false)?;
        std::io::Write::write_all(&mut blob, snapshot)
            .map_err(|e| StoreError::Corrupt(format!("writing the saved state: {e}")))?;
        Ok(())
    }

    /// The saved correlation engine state, with when it was taken.
    pub fn engine_state(&self) -> Result<Option<SavedState>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT taken_at, snapshot FROM engine_state WHERE id = 1",
                [],
                |r| Ok((from_ms(r.get(0)?), r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?)
    }

    /// Deletes the saved state and its spool position (moved to the state file).
    pub fn delete_engine_state(&self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM engine_state WHERE id = 1", [])?;
        self.conn
            .execute("DELETE FROM spool_state WHERE name = 'snapshot'", [])?;
        Ok(())
    }

    /// Writes assets (insert or replace).
    pub fn put_assets(&self, assets: &[Asset]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO assets (ip, first_seen, last_seen, zone, criticality, names, ports, events)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(ip) DO UPDATE SET first_seen = excluded.first_seen,
                 last_seen = excluded.last_seen, zone = excluded.zone,
                 criticality = excluded.criticality, names = excluded.names,
                 ports = excluded.ports, events = excluded.events",
        )?;
        for a in assets {
            stmt.execute(params![
                a.ip.to_string(),
                ms(a.first_seen),
                ms(a.last_seen),
                a.zone,
                a.criticality,
                serde_json::to_string(&a.names).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&a.ports).unwrap_or_else(|_| "[]".into()),
                i64::try_from(a.events).unwrap_or(i64::MAX),
            ])?;
        }
        Ok(())
    }

    /// Deletes assets (forgotten under `context.max_assets`).
    pub fn delete_assets(&self, ips: &[IpAddr]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM assets WHERE ip = ?1")?;
        for ip in ips {
            stmt.execute(params![ip.to_string()])?;
        }
        Ok(())
    }

    /// Assets, most recently seen first; `zone` filters; (page, total).
    pub fn list_assets(
        &self,
        zone: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Asset>, u64), StoreError> {
        let total: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM assets WHERE ?1 IS NULL OR zone = ?1",
            params![zone],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT ip, first_seen, last_seen, zone, criticality, names, ports, events FROM assets
             WHERE ?1 IS NULL OR zone = ?1 ORDER BY last_seen DESC, ip LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(
            params![
                zone,
                i64::try_from(limit).unwrap_or(i64::MAX),
                i64::try_from(offset).unwrap_or(i64::MAX)
            ],
            |r| {
                let ip: String = r.get(0)?;
                let names: String = r.get(5)?;
                let ports: String = r.get(6)?;
                let events: i64 = r.get(7)?;
                Ok(ip.parse::<IpAddr>().ok().map(|ip| Asset {
                    ip,
                    first_seen: from_ms(r.get(1).unwrap_or(0)),
                    last_seen: from_ms(r.get(2).unwrap_or(0)),
                    zone: r.get(3).unwrap_or(None),
                    criticality: r.get(4).unwrap_or(0),
                    names: serde_json::from_str(&names).unwrap_or_default(),
                    ports: serde_json::from_str(&ports).unwrap_or_default(),
                    events: u64::try_from(events).unwrap_or(0),
                }))
            },
        )?;
        let mut out = Vec::new();
        for r in rows {
            if let Some(a) = r? {
                out.push(a);
            }
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_deliveries_and_old_decisions_are_pruned_but_live_blocks_kept() {
        let s = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let t0 = from_ms(1_795_000_000_000);
        let later = t0 + chrono::Duration::days(8);
        s.outbox_put("a", "soar", "ip.blocked", "{}", t0)
            .unwrap_or_default();
        s.outbox_put("b", "soar", "ip.blocked", "{}", t0)
            .unwrap_or_default();
        s.outbox_put("c", "soar", "ip.blocked", "{}", t0)
            .unwrap_or_default();
        s.outbox_done("a", t0).unwrap_or_default();
        s.outbox_give_up("b", "down").unwrap_or_default();
        let decision = |v: &str, d: &str| ResponseDecision {
            at: t0,
            value: v.into(),
            offense_id: "o".into(),
            rule: "r".into(),
            decision: d.into(),
            source: "policy:magnitude".into(),
            expires_at: None,
        };
        s.insert_response_decision(&decision("203.0.113.1", "blocked"))
            .unwrap_or_default();
        s.insert_response_decision(&decision("10.0.0.1", "internal"))
            .unwrap_or_default();
        s.insert_response_decision(&decision("10.0.0.2", "internal"))
            .unwrap_or_default();
        let pruned = s
            .prune_response(later - chrono::Duration::days(7), 1)
            .unwrap_or_default();
        assert_eq!(
            pruned, 3,
            "two finished deliveries, one old refused decision"
        );
        let due = s.outbox_due(later, 10).unwrap_or_default();
        assert_eq!(due.len(), 1, "the pending delivery stays");
        let (left, _) = s.list_response_decisions(10, 0).unwrap_or_default();
        let values: Vec<&str> = left.iter().map(|d| d.value.as_str()).collect();
        assert_eq!(
            values,
            vec!["10.0.0.2", "203.0.113.1"],
            "the live block stays"
        );
    }

    #[test]
    fn reference_entries_round_trip_and_expire() {
        let store = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        let entry = |v: &str, exp: Option<i64>| StoredReference {
            collection: "blocked_ips".into(),
            value: v.into(),
            map_value: None,
            source: "rule:ssh_brute_force".into(),
            expires_at: exp.map(t),
        };
        for e in [entry("203.0.113.7", Some(100)), entry("203.0.113.8", None)] {
            store.put_reference(&e).unwrap_or_else(|e| panic!("{e}"));
        }
        let live = store.references(t(50)).unwrap_or_default();
        assert_eq!(live.len(), 2);
        assert_eq!(live[0], entry("203.0.113.7", Some(100)));
        assert_eq!(store.references(t(100)).unwrap_or_default().len(), 1);
        assert_eq!(store.delete_expired_references(t(100)).ok(), Some(1));
        assert_eq!(
            store.delete_reference("blocked_ips", "203.0.113.8").ok(),
            Some(true)
        );
        assert!(store.references(t(0)).unwrap_or_default().is_empty());
    }

    #[test]
    fn assets_round_trip_newest_first_and_filter_by_zone() {
        let store = Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        let asset = |ip: &str, seen: i64, zone: &str| Asset {
            ip: ip
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            first_seen: t(1),
            last_seen: t(seen),
            zone: Some(zone.into()),
            criticality: 9,
            names: ["db1".to_string()].into(),
            ports: [5432u16].into(),
            events: 3,
        };
        let a = asset("10.20.0.5", 10, "core-banking");
        let b = asset("10.0.0.9", 20, "private");
        store
            .put_assets(&[a.clone(), b.clone()])
            .unwrap_or_else(|e| panic!("{e}"));
        let (all, total) = store.list_assets(None, 10, 0).unwrap_or_default();
        assert_eq!((all, total), (vec![b.clone(), a.clone()], 2));
        let (core, _) = store
            .list_assets(Some("core-banking"), 10, 0)
            .unwrap_or_default();
        assert_eq!(core, vec![a]);
        store
            .delete_assets(&[b.ip])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.list_assets(None, 10, 0).unwrap_or_default().1, 1);
    }
}

/// One automatic blocking decision, as `GET /api/v1/response/decisions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseDecision {
    /// When.
    pub at: DateTime<Utc>,
    /// The offense's index value (the address).
    pub value: String,
    /// The offense.
    pub offense_id: String,
    /// The rule whose detection led to it.
    pub rule: String,
    /// `blocked`, `dry_run`, `internal`, `allow_listed`, `rate_limited`, `not_an_address`.
    pub decision: String,
    /// What asked: `rule:<name>` (an `add_to_set` action) or `policy:magnitude`.
    pub source: String,
    /// When the block ends (blocked only; `None` never).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records a blocking decision.
    pub fn insert_response_decision(&self, d: &ResponseDecision) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO response_decisions (at, value, offense_id, rule, decision, source,
                     expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                ms(d.at),
                d.value,
                d.offense_id,
                d.rule,
                d.decision,
                d.source,
                d.expires_at.map(ms)
            ])?;
        Ok(())
    }

    /// Blocking decisions, newest first, and how many there are.
    pub fn list_response_decisions(
        &self,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<ResponseDecision>, u64), StoreError> {
        self.page_of(
            "SELECT count(*) FROM response_decisions",
            "SELECT at, value, offense_id, rule, decision, source, expires_at
             FROM response_decisions ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            limit,
            offset,
            |r| {
                Ok(ResponseDecision {
                    at: from_ms(r.get(0)?),
                    value: r.get(1)?,
                    offense_id: r.get(2)?,
                    rule: r.get(3)?,
                    decision: r.get(4)?,
                    source: r.get(5)?,
                    expires_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
                })
            },
        )
    }
}

impl Store {
    /// Blocks whose time is up at `now` and not yet ended, oldest first (at most `limit`).
    pub fn expired_blocks(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(i64, ResponseDecision)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, value, offense_id, rule, decision, source, expires_at
             FROM response_decisions
             WHERE decision = 'blocked' AND ended = 0 AND expires_at IS NOT NULL
               AND expires_at <= ?1
             ORDER BY expires_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![ms(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    ResponseDecision {
                        at: from_ms(r.get(1)?),
                        value: r.get(2)?,
                        offense_id: r.get(3)?,
                        rule: r.get(4)?,
                        decision: r.get(5)?,
                        source: r.get(6)?,
                        expires_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
                    },
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Marks a block as ended (its unblock was recorded).
    pub fn end_block(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE response_decisions SET ended = 1 WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }
}

impl Store {
    /// Deletes webhook deliveries finished (delivered or given up) before `done_before`, and
    /// blocking decisions beyond the newest `keep_decisions` (live blocks are kept). Returns
    /// how many rows it deleted.
    pub fn prune_response(
        &self,
        done_before: DateTime<Utc>,
        keep_decisions: u64,
    ) -> Result<u64, StoreError> {
        let outbox = self
            .conn
            .prepare_cached(
                "DELETE FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < ?1)
                 OR (given_up = 1 AND created_at < ?1)",
            )?
            .execute(params![ms(done_before)])?;
        let max_id: Option<i64> =
            self.conn
                .query_row("SELECT max(id) FROM response_decisions", [], |r| r.get(0))?;
        let cutoff = max_id.unwrap_or(0) - i64::try_from(keep_decisions).unwrap_or(i64::MAX);
        let decisions = if cutoff > 0 {
            self.conn
                .prepare_cached(
                    "DELETE FROM response_decisions WHERE id <= ?1
                     AND NOT (decision = 'blocked' AND ended = 0)",
                )?
                .execute(params![cutoff])?
        } else {
            0
        };
        Ok((outbox + decisions) as u64)
    }

    /// Adds a webhook delivery to the outbox (due now); an id already there is left alone.
    pub fn outbox_put(
        &self,
        id: &str,
        endpoint: &str,
        event: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (id, endpoint, event, body, created_at, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?
            .execute(params![id, endpoint, event, body, ms(now)])?;
        Ok(())
    }

    /// Deliveries due at `now` (not delivered, not given up), oldest first, at most `limit`.
    pub fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<crate::webhook::Delivery>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, endpoint, event, body, attempts, created_at FROM outbox
             WHERE delivered_at IS NULL AND given_up = 0 AND next_at <= ?1
             ORDER BY created_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![ms(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(crate::webhook::Delivery {
                    id: r.get(0)?,
                    endpoint: r.get(1)?,
                    event: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    created_at: from_ms(r.get(5)?),
                })
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Marks a delivery acknowledged.
    pub fn outbox_done(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE outbox SET delivered_at = ?2, last_error = NULL WHERE id = ?1")?
            .execute(params![id, ms(now)])?;
        Ok(())
    }

    /// Schedules the next attempt of a failed delivery.
    pub fn outbox_retry(
        &self,
        id: &str,
        attempts: u32,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1",
            )?
            .execute(params![id, attempts, ms(next_at), error])?;
        Ok(())
    }

    /// Gives a delivery up (kept, with its last error).
    pub fn outbox_give_up(&self, id: &str, error: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE outbox SET given_up = 1, last_error = ?2 WHERE id = ?1")?
            .execute(params![id, error])?;
        Ok(())
    }
}

/// One audit entry (embedded store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the token's name).
    pub actor: String,
    /// What (`offense.close`, `offense.note`, ...).
    pub action: String,
    /// On what (an offense id).
    pub target: String,
    /// The change, as JSON text.
    pub detail: String,
}

impl Store {
    /// Appends to the audit trail.
    pub fn insert_audit_record(&self, a: &AuditRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ms(a.at), a.actor, a.action, a.target, a.detail])?;
        Ok(())
    }

    /// The audit trail, newest first, and its length.
    pub fn list_audit_records(
        &self,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<AuditRecord>, u64), StoreError> {
        self.page_of(
            "SELECT count(*) FROM audit",
            "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            limit,
            offset,
            audit_row,
        )
    }

    /// The audit records of one target (an offense id), oldest first, at most `limit`.
    pub fn audit_of(&self, target: &str, limit: u64) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, actor, action, target, detail FROM audit WHERE target = ?1
             ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![target, i64::try_from(limit).unwrap_or(i64::MAX)],
            audit_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One page of rows (`select` takes the limit and offset as `?1` and `?2`) and the total
    /// `count` gives.
    fn page_of<T>(
        &self,
        count: &str,
        select: &str,
        limit: u64,
        offset: u64,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<(Vec<T>, u64), StoreError> {
        let total: i64 = self.conn.query_row(count, [], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(select)?;
        let rows = stmt.query_map(
            params![
                i64::try_from(limit).unwrap_or(i64::MAX),
                i64::try_from(offset).unwrap_or(i64::MAX)
            ],
            map,
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok((out, u64::try_from(total).unwrap_or(0)))
    }
}

/// One `audit` row of `SELECT at, actor, action, target, detail`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        at: from_ms(r.get(0)?),
        actor: r.get(1)?,
        action: r.get(2)?,
        target: r.get(3)?,
        detail: r.get(4)?,
    })
}

/// A rule an operator switched off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisabledRule {
    /// The rule's name.
    pub name: String,
    /// Who switched it off.
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
}

impl Store {
    /// Rules switched off, by name.
    pub fn disabled_rules(&self) -> Result<Vec<DisabledRule>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, changed_by, changed_at FROM rule_state WHERE enabled = 0 ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DisabledRule {
                name: r.get(0)?,
                changed_by: r.get(1)?,
                changed_at: from_ms(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Switches rule `name` on or off (`by`, at `at`).
    pub fn set_rule_enabled(
        &self,
        name: &str,
        enabled: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if enabled {
            self.conn
                .prepare_cached("DELETE FROM rule_state WHERE name = ?1")?
                .execute([name])?;
        } else {
            self.conn
                .prepare_cached(
                    "INSERT INTO rule_state (name, enabled, changed_by, changed_at)
                     VALUES (?1, 0, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET enabled = 0, changed_by = ?2, changed_at = ?3",
                )?
                .execute(params![name, by, ms(at)])?;
        }
        Ok(())
    }
}

impl Store {
    /// A spool position by name (`committed`, `snapshot`): (segment, offset).
    pub fn spool_position(&self, name: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT segment, offset FROM spool_state WHERE name = ?1")?;
        let mut rows = stmt.query([name])?;
        match rows.next()? {
            Some(r) => {
                let (seg, off): (i64, i64) = (r.get(0)?, r.get(1)?);
                Ok(Some((
                    u64::try_from(seg).unwrap_or(0),
                    u64::try_from(off).unwrap_or(0),
                )))
            }
            None => Ok(None),
        }
    }

    /// Records a spool position.
    pub fn set_spool_position(&self, name: &str, pos: (u64, u64)) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO spool_state (name, segment, offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET segment = ?2, offset = ?3",
            )?
            .execute(params![
                name,
                i64::try_from(pos.0).unwrap_or(i64::MAX),
                i64::try_from(pos.1).unwrap_or(i64::MAX)
            ])?;
        Ok(())
    }
}
