//! The offense book: open offenses held in memory between detections.
//!
//! Under load most detections join an offense that is already open (a brute-forcing address
//! fails again), and each used to cost two reads (the open offense, its rule parts) and two
//! upserts. The book keeps open offenses and their rule parts after a detection, and writes
//! what changed once per transaction ([`OffenseBook::flush`], before the commit), so an
//! offense that grows a hundred times in a batch is read at most once and written once.
//!
//! Invariants:
//! - What the book holds is what the database holds once the transaction commits. The book
//!   only serves the connection that writes through it; every batch begins with
//!   [`OffenseBook::begin`], which empties the book when another connection (an analyst
//!   closing or assigning an offense through the API, another process) committed since the
//!   last batch (`PRAGMA data_version`). A rolled-back transaction must be followed by
//!   [`OffenseBook::clear`].
//! - Only open offenses are held. A closed one (inactive, or joined under suppression) is
//!   written at once.
//! - Bounded: at most `capacity` offenses between batches (plus those one batch touches);
//!   when full at the start of a batch the book is emptied, and the evicted offenses are
//!   counted. A capacity of 0 writes through, as if there were no book.

use std::collections::HashMap;

/// Index fields and values come from the network: a seeded hash (foldhash's), fast on short
/// keys, not SipHash (a tenth of a busy commit went to hashing them).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::store::{Offense, OffenseRule, Store, StoreError};

/// Open offenses held between detections: default capacity.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// An open offense and its rule parts, with what changed since they were last written.
#[derive(Debug, Clone)]
pub(crate) struct Booked {
    pub offense: Offense,
    pub rules: Vec<OffenseRule>,
    /// The offense row differs from the database.
    pub dirty: bool,
    /// Parallel to `rules`: which parts differ from the database.
    pub dirty_rules: Vec<bool>,
    /// The book's key for it (the index value), kept so that giving it back allocates nothing.
    key: Option<String>,
    /// Read from the database since the last detection: its magnitude is recomputed once, so
    /// that an offense written by an older build gets this build's figures and reasons.
    pub loaded: bool,
    /// The row as the database holds it, when known (read, or written from here): a write
    /// that changes nothing but counts and times updates just those.
    stored: Option<Offense>,
}

impl Booked {
    /// As read from the database: nothing to write.
    pub fn clean(offense: Offense, rules: Vec<OffenseRule>) -> Booked {
        let dirty_rules = vec![false; rules.len()];
        Booked {
            stored: Some(offense.clone()),
            offense,
            rules,
            dirty: false,
            dirty_rules,
            key: None,
            loaded: true,
        }
    }

    /// A new offense, not in the database yet.
    pub fn new(offense: Offense) -> Booked {
        Booked {
            offense,
            rules: Vec::new(),
            dirty: false,
            dirty_rules: Vec::new(),
            key: None,
            loaded: true,
            stored: None,
        }
    }

    /// Writes the offense row and the changed rule parts, and marks them written. A row that
    /// only counted events (the usual case) gets its counts and times; parts already stored
    /// get the columns detections change.
    pub fn write(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.dirty {
            let counts_only = self
                .stored
                .as_ref()
                .is_some_and(|s| same_but_counts(s, &self.offense));
            if counts_only && store.put_offense_counts(&self.offense)? {
                if let Some(s) = &mut self.stored {
                    s.first_seen = self.offense.first_seen;
                    s.last_seen = self.offense.last_seen;
                    s.event_count = self.offense.event_count;
                    s.stored_events = self.offense.stored_events;
                    s.updated_at = self.offense.updated_at;
                }
            } else {
                store.put_offense(&self.offense)?;
                self.stored = Some(self.offense.clone());
            }
            self.dirty = false;
        }
        for (r, dirty) in self.rules.iter().zip(self.dirty_rules.iter_mut()) {
            if *dirty {
                if !store.put_offense_rule_counts(&self.offense.id, r)? {
                    store.put_offense_rule(&self.offense.id, r)?;
                }
                *dirty = false;
            }
        }
        Ok(())
    }
}

/// Whether two versions of an offense differ at most in what events joining it change (the
/// columns [`Store::put_offense_counts`] writes). Every field is named: a new one must be
/// placed on one side or the other.
fn same_but_counts(a: &Offense, b: &Offense) -> bool {
    let Offense {
        id,
        rule,
        title,
        index_field,
        index_value,
        status,
        magnitude,
        severity,
        relevance,
        credibility,
        magnitude_reasons,
        level,
        tags,
        first_seen: _,
        last_seen: _,
        event_count: _,
        stored_events: _,
        window_start,
        created_at,
        updated_at: _,
        assignee,
        closing_reason,
        closed_at,
        follow_up,
        asset_criticality,
        asset_reason,
    } = a;
    *id == b.id
        && *rule == b.rule
        && *title == b.title
        && *index_field == b.index_field
        && *index_value == b.index_value
        && *status == b.status
        && *magnitude == b.magnitude
        && *severity == b.severity
        && *relevance == b.relevance
        && *credibility == b.credibility
        && *magnitude_reasons == b.magnitude_reasons
        && *level == b.level
        && *tags == b.tags
        && *window_start == b.window_start
        && *created_at == b.created_at
        && *assignee == b.assignee
        && *closing_reason == b.closing_reason
        && *closed_at == b.closed_at
        && *follow_up == b.follow_up
        && *asset_criticality == b.asset_criticality
        && *asset_reason == b.asset_reason
}

/// What the book did, for metrics: totals since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BookStats {
    /// Offense lookups (one per run of detections) that found the open offense in the book.
    pub hits: u64,
    /// Offense lookups that had to read the database.
    pub misses: u64,
    /// Offenses dropped because the book was full.
    pub evicted: u64,
    /// Times the book was emptied because another connection changed the database.
    pub invalidated: u64,
}

/// Open offenses by index field, then index value. See the module documentation.
#[derive(Debug)]
pub struct OffenseBook {
    capacity: usize,
    /// By field then value, so that a lookup borrows the detection's strings.
    open: Map<String, Map<String, Booked>>,
    /// Offenses in `open`.
    len: usize,
    data_version: Option<i64>,
    stats: BookStats,
}

impl OffenseBook {
    /// A book holding up to `capacity` open offenses between batches; 0 writes through.
    pub fn new(capacity: usize) -> OffenseBook {
        OffenseBook {
            capacity,
            open: Map::default(),
            len: 0,
            data_version: None,
            stats: BookStats::default(),
        }
    }

    /// A book that holds nothing: every detection reads and writes the database.
    pub fn write_through() -> OffenseBook {
        OffenseBook::new(0)
    }

    /// Starts a batch, inside its transaction: empties the book if another connection
    /// committed since the last batch, or if it is full.
    pub fn begin(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.capacity == 0 {
            return Ok(());
        }
        let version = store.data_version()?;
        if self.data_version.is_some_and(|v| v != version) && self.len > 0 {
            self.stats.invalidated += 1;
            self.forget();
        }
        self.data_version = Some(version);
        if self.len >= self.capacity {
            self.stats.evicted += self.len as u64;
            self.forget();
        }
        Ok(())
    }

    /// Writes every change the batch made. Call before the commit.
    pub fn flush(&mut self, store: &Store) -> Result<(), StoreError> {
        for b in self.open.values_mut().flat_map(|m| m.values_mut()) {
            b.write(store)?;
        }
        Ok(())
    }

    /// Forgets everything (the transaction rolled back, so the book may be ahead of the
    /// database).
    pub fn clear(&mut self) {
        self.forget();
        self.data_version = None;
    }

    fn forget(&mut self) {
        self.open.clear();
        self.len = 0;
    }

    /// Offenses held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the book holds no offense.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Totals since the book was made.
    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// The open offense the book holds for this index, if it holds one (without reading the
    /// database).
    pub fn peek(&self, index_field: &str, index_value: &str) -> Option<&Offense> {
        self.open
            .get(index_field)
            .and_then(|m| m.get(index_value))
            .map(|b| &b.offense)
    }

    /// Takes the open offense for this index out of the book, or reads it (and its rule
    /// parts) from the database. Give it back with [`OffenseBook::keep`] while it is open.
    pub(crate) fn take(
        &mut self,
        store: &Store,
        index_field: &str,
        index_value: &str,
    ) -> Result<Option<Booked>, StoreError> {
        if let Some((key, mut b)) = self
            .open
            .get_mut(index_field)
            .and_then(|m| m.remove_entry(index_value))
        {
            self.len -= 1;
            self.stats.hits += 1;
            b.key = Some(key);
            return Ok(Some(b));
        }
        self.stats.misses += 1;
        let Some(offense) = store.find_open_offense(index_field, index_value)? else {
            return Ok(None);
        };
        let rules = store.offense_rules(&offense.id)?;
        Ok(Some(Booked::clean(offense, rules)))
    }

    /// Keeps an open offense for the next detections, or writes it now when the book writes
    /// through.
    pub(crate) fn keep(&mut self, store: &Store, mut booked: Booked) -> Result<(), StoreError> {
        if self.capacity == 0 {
            return booked.write(store);
        }
        let key = booked
            .key
            .take()
            .unwrap_or_else(|| booked.offense.index_value.clone());
        if !self.open.contains_key(booked.offense.index_field.as_str()) {
            self.open
                .insert(booked.offense.index_field.clone(), Map::default());
        }
        if let Some(values) = self.open.get_mut(booked.offense.index_field.as_str()) {
            if values.insert(key, booked).is_none() {
                self.len += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use vigil_correlate::{Detection, Engine, RuleSet, RuleSource};
    use vigil_parsers::Event;

    use super::*;
    use crate::correlate::{apply_detection, OffenseChange, OffenseLimits, RuleMeta, SeenEvents};
    use crate::store::{OffenseFilter, OffenseStatus};

    const RULES: &str = "title: Root login failure
name: root_failure
detection:
  sel: {user.name: root, event.outcome: failure}
  condition: sel
level: medium
vigil:
  offense: {index: source.ip, relevance: 4, credibility: 5}
---
title: Failure from a documentation range
name: docnet_failure
detection:
  sel: {source.ip|cidr: 203.0.113.0/24, event.outcome: failure}
  condition: sel
level: high
vigil:
  offense: {index: source.ip, relevance: 6, credibility: 8}
";

    fn t0() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    /// Feeds events through an engine and applies their detections, one transaction per
    /// batch, the way the pipeline does.
    struct Feed {
        engine: Engine,
        seen: SeenEvents,
        seq: u64,
    }

    impl Feed {
        fn new() -> Feed {
            let (set, errors) = RuleSet::from_sources(&[RuleSource {
                path: "t.yml".into(),
                text: RULES.into(),
            }]);
            assert!(errors.is_empty(), "{errors:?}");
            Feed {
                engine: Engine::new(Arc::new(set), Default::default()),
                seen: SeenEvents::new(10_000),
                seq: 0,
            }
        }

        /// One batch: a failed root login from each address, in order.
        fn batch(
            &mut self,
            store: &mut Store,
            book: &mut OffenseBook,
            ips: &[&str],
        ) -> Result<Vec<(Offense, OffenseChange)>, StoreError> {
            let mut detections = Vec::new();
            for ip in ips {
                self.seq += 1;
                let t = t0() + chrono::Duration::seconds(self.seq as i64);
                let mut e = Event::new(t, t);
                for (k, v) in [
                    ("user.name", "root"),
                    ("event.outcome", "failure"),
                    ("source.ip", ip),
                ] {
                    e.set(k, v)
                        .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                }
                e.sequence = Some(self.seq);
                self.engine.process(&Arc::new(e), &mut detections);
            }
            let seen = &mut self.seen;
            let result = store.in_transaction(|s| {
                book.begin(s)?;
                let mut out = Vec::new();
                for d in &detections {
                    out.push(apply_detection(
                        s,
                        book,
                        d,
                        None,
                        &RuleMeta::default(),
                        &OffenseLimits::default(),
                        seen,
                        t0(),
                    )?);
                }
                book.flush(s)?;
                Ok(out)
            });
            match &result {
                Ok(_) => self.seen.commit(),
                Err(_) => {
                    self.seen.rollback();
                    book.clear();
                }
            }
            result
        }
    }

    /// An offense with its rule parts and the sequences of its stored events.
    type Stored = (Offense, Vec<OffenseRule>, Vec<Option<u64>>);

    /// Every offense with its rule parts and stored event sequences.
    fn everything(store: &Store) -> Result<Vec<Stored>, StoreError> {
        let (mut all, _) = store.list_offenses(&OffenseFilter {
            limit: 1000,
            ..Default::default()
        })?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.into_iter()
            .map(|o| {
                let rules = store.offense_rules(&o.id)?;
                let events = store
                    .offense_events(&o.id, 1000)?
                    .iter()
                    .map(|e| e.sequence)
                    .collect();
                Ok((o, rules, events))
            })
            .collect()
    }

    #[test]
    fn the_book_stores_exactly_what_writing_through_stores() -> Result<(), StoreError> {
        let batches: Vec<Vec<&str>> = vec![
            vec!["203.0.113.7", "203.0.113.7", "198.51.100.1", "203.0.113.7"],
            vec!["198.51.100.1", "203.0.113.8", "203.0.113.7"],
            vec![],
            vec!["203.0.113.8", "198.51.100.2", "198.51.100.1", "203.0.113.7"],
        ];
        let run = |capacity: usize| -> Result<_, StoreError> {
            let mut store = Store::open_in_memory()?;
            let mut book = OffenseBook::new(capacity);
            let mut feed = Feed::new();
            let mut changes = Vec::new();
            for b in &batches {
                changes.extend(feed.batch(&mut store, &mut book, b)?);
            }
            Ok((everything(&store)?, changes, book.stats()))
        };
        let (direct, direct_changes, _) = run(0)?;
        let (booked, booked_changes, stats) = run(DEFAULT_CAPACITY)?;
        // Two rules match the 203.0.113.0/24 addresses: those get two parts.
        assert_eq!(direct.len(), 4);
        assert!(direct.iter().any(|(_, rules, _)| rules.len() == 2));
        assert_eq!(booked, direct);
        assert_eq!(booked_changes, direct_changes);
        // 18 detections (two per 203.0.113.x event) on 4 offenses: the database was read for
        // the first detection of each offense only.
        assert_eq!((stats.hits, stats.misses), (14, 4));
        // A book of 2 empties itself when full, and still stores the same.
        let (small, small_changes, stats) = run(2)?;
        assert_eq!(small, direct);
        assert_eq!(small_changes, direct_changes);
        assert!(stats.evicted > 0, "{stats:?}");
        Ok(())
    }

    #[test]
    fn an_analyst_closing_an_offense_between_batches_is_seen() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = dir.path().join("vigil.db");
        let mut engine_side = Store::open(&path)?;
        let analyst_side = Store::open(&path)?;
        let mut book = OffenseBook::new(DEFAULT_CAPACITY);
        let mut feed = Feed::new();
        let first = feed.batch(&mut engine_side, &mut book, &["198.51.100.1"])?;
        assert_eq!(first.len(), 1);
        let (mut closed, _) = first[0].clone();
        assert_eq!(book.len(), 1);
        // The analyst closes it through another connection (the API's).
        closed.status = OffenseStatus::Closed;
        closed.closing_reason = Some("false positive".into());
        analyst_side.put_offense(&closed)?;
        // The next failure opens a new offense; the closed one stays as the analyst left it.
        let next = feed.batch(&mut engine_side, &mut book, &["198.51.100.1"])?;
        assert_eq!(next[0].1, OffenseChange::Created);
        assert_ne!(next[0].0.id, closed.id);
        let stored = engine_side
            .get_offense(&closed.id)?
            .ok_or_else(|| StoreError::Corrupt("closed offense gone".into()))?;
        assert_eq!(stored.status, OffenseStatus::Closed);
        assert_eq!(stored.event_count, 1);
        assert_eq!(book.stats().invalidated, 1);
        // With no other writer, the engine's own commits keep the book.
        feed.batch(&mut engine_side, &mut book, &["198.51.100.1"])?;
        assert_eq!(book.stats().invalidated, 1);
        assert_eq!(book.stats().hits, 1);
        Ok(())
    }

    #[test]
    fn a_rolled_back_batch_leaves_nothing_in_the_book() -> Result<(), StoreError> {
        let mut store = Store::open_in_memory()?;
        let mut book = OffenseBook::new(DEFAULT_CAPACITY);
        let mut feed = Feed::new();
        feed.batch(&mut store, &mut book, &["198.51.100.1"])?;
        // A batch that fails after applying its detection rolls back; the book is emptied.
        store.conn_for_tests().execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON offense_events
             BEGIN SELECT RAISE(ABORT, 'disk trouble'); END",
        )?;
        assert!(feed
            .batch(&mut store, &mut book, &["198.51.100.1"])
            .is_err());
        assert!(book.is_empty());
        store.conn_for_tests().execute_batch("DROP TRIGGER fail")?;
        let (o, change) = feed
            .batch(&mut store, &mut book, &["198.51.100.1"])?
            .remove(0);
        assert_eq!(change, OffenseChange::Updated);
        // The rolled-back event is not counted: 1 from the first batch, 1 from this one.
        assert_eq!(o.event_count, 2);
        assert_eq!(everything(&store)?[0].0.event_count, 2);
        Ok(())
    }

    /// Detections of three rules on three indexes, in a shuffled order with repeats: events
    /// that two rules report, correlation `New`s carrying several events and counts,
    /// shed evidence, asset factors, and gaps longer than `inactive_after` that close offenses.
    fn random_detections(
        seed: u64,
        n: usize,
    ) -> Vec<(Detection, Option<crate::context::AssetFactor>)> {
        let mut x = seed;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut clock = 0i64;
        let mut events: Vec<Arc<Event>> = Vec::new();
        let mut out = Vec::new();
        for _ in 0..n {
            // Now and then a jump past inactive_after (100 s), or a late one.
            clock += match next(20) {
                0 => 150,
                1 => -30,
                _ => next(4) as i64,
            };
            let t = t0() + chrono::Duration::seconds(clock);
            let rule = next(3);
            let index = format!("10.0.0.{}", next(3));
            let mut e = Event::new(t, t);
            e.sequence = Some(events.len() as u64 + 1);
            let e = Arc::new(e);
            events.push(Arc::clone(&e));
            let mut carried = match next(10) {
                // Evidence shed under the memory budget.
                0 => vec![],
                // An event another rule reported already.
                1 => vec![Arc::clone(&events[next(events.len() as u64) as usize])],
                _ => vec![e],
            };
            let (count, fresh) = if next(8) == 0 {
                // A correlation firing with earlier events of the index.
                carried.push(Arc::clone(&events[next(events.len() as u64) as usize]));
                (3, 2)
            } else {
                (1, 1)
            };
            let d = Detection {
                kind: if count > 1 {
                    vigil_correlate::DetectionKind::New
                } else {
                    vigil_correlate::DetectionKind::Update
                },
                rule: format!("rule_{rule}").into(),
                title: format!("Rule {rule}").into(),
                level: Some("high".into()),
                // Now and then the rule's next version, with one more tag (two versions can
                // meet in one scaled-out batch).
                tags: if next(12) == 0 {
                    vec![format!("tag_{rule}"), "attack.t1110".into(), "v2".into()].into()
                } else {
                    vec![format!("tag_{rule}"), "attack.t1110".into()].into()
                },
                group: Vec::new(),
                index_field: "source.ip".into(),
                index_value: index,
                window_start: t,
                first_seen: t - chrono::Duration::seconds(next(3) as i64),
                last_seen: t,
                count,
                fresh,
                distinct: None,
                sum: None,
                events: carried,
                relevance: 2 + rule as u8,
                credibility: 3,
                severity: 4 + rule as u8,
            };
            let factor = (next(6) == 0).then(|| crate::context::AssetFactor {
                criticality: next(10) as u8,
                reason: format!("zone {}", next(100)),
            });
            out.push((d, factor));
        }
        out
    }

    #[test]
    fn runs_applied_at_once_store_what_detections_one_by_one_store() -> Result<(), StoreError> {
        let limits = OffenseLimits {
            max_events_per_offense: 7,
            inactive_after: chrono::Duration::seconds(100),
            held_open: DEFAULT_CAPACITY,
        };
        // rule_0 and rule_2 suppress re-alerts (join runs, lead none), rule_1 does not.
        let metas: Vec<RuleMeta> = [Some(60), None, Some(400)]
            .into_iter()
            .map(|secs| RuleMeta {
                suppress: secs.map(chrono::Duration::seconds),
                ..RuleMeta::default()
            })
            .collect();
        let meta_of = |d: &Detection| {
            let i: usize = d.rule.trim_start_matches("rule_").parse().unwrap_or(1);
            &metas[i]
        };
        let merge = |d: &Detection| {
            if meta_of(d).suppress.is_some() {
                crate::correlate::Merge::Join
            } else {
                crate::correlate::Merge::Any
            }
        };
        let mut suppressed_somewhere = false;
        // A small seen-events memory forgets while the batches go on: what it forgets first
        // must not depend on the runs.
        for (seed, remembered) in [
            (1u64, 10_000),
            (7, 10_000),
            (42, 37),
            (1234, 37),
            (99_991, 11),
        ] {
            let all = random_detections(seed, 600);
            let run = |grouped: bool| -> Result<_, StoreError> {
                let mut store = Store::open_in_memory()?;
                let mut book = OffenseBook::new(DEFAULT_CAPACITY);
                let mut seen = SeenEvents::new(remembered);
                let mut changes = Vec::new();
                for (batch_no, batch) in all.chunks(64).enumerate() {
                    if batch_no % 3 == 2 {
                        // An analyst closes the open offenses of one address (another
                        // connection would empty the book; this one does it by hand).
                        for mut o in store.all_offenses()? {
                            if o.status == OffenseStatus::Open && o.index_value == "10.0.0.1" {
                                o.status = OffenseStatus::Closed;
                                o.closing_reason = Some("resolved".into());
                                o.closed_at = Some(t0());
                                store.put_offense(&o)?;
                            }
                        }
                        book.clear();
                    }
                    let result = store.in_transaction(|s| {
                        book.begin(s)?;
                        let mut out = Vec::new();
                        if grouped {
                            let groups = crate::correlate::group_detections(
                                batch.iter().map(|(d, _)| d),
                                merge,
                                limits.inactive_after,
                            );
                            for g in &groups {
                                let members: Vec<crate::correlate::Member<'_>> = g
                                    .iter()
                                    .map(|&j| {
                                        let d = &batch[j].0;
                                        (d, meta_of(d), batch[j].1.as_ref(), j)
                                    })
                                    .collect();
                                let change = crate::correlate::apply_detections(
                                    s,
                                    &mut book,
                                    (members[0], &members[1..]),
                                    &limits,
                                    &mut seen,
                                    t0(),
                                    |_, c, _| c,
                                )?;
                                out.push(change);
                                let later = match change {
                                    OffenseChange::Suppressed => OffenseChange::Suppressed,
                                    _ => OffenseChange::Updated,
                                };
                                out.extend(std::iter::repeat_n(later, members.len() - 1));
                            }
                            // Every detection is in exactly one run.
                            let mut positions: Vec<usize> = groups.concat();
                            positions.sort_unstable();
                            assert_eq!(positions, (0..batch.len()).collect::<Vec<_>>());
                            book.flush(s)?;
                            Ok((out, groups.len()))
                        } else {
                            for (d, f) in batch {
                                let (_, c) = apply_detection(
                                    s,
                                    &mut book,
                                    d,
                                    f.as_ref(),
                                    meta_of(d),
                                    &limits,
                                    &mut seen,
                                    t0(),
                                )?;
                                out.push(c);
                            }
                            book.flush(s)?;
                            Ok((out, batch.len()))
                        }
                    });
                    let (out, _) = match result {
                        Ok(r) => {
                            seen.commit();
                            r
                        }
                        Err(e) => return Err(e),
                    };
                    // What the book holds is what the database holds, whichever way each row
                    // was written (whole, or counts and times only).
                    for b in book.open.values().flat_map(|m| m.values()) {
                        let row = store.get_offense(&b.offense.id)?;
                        assert_eq!(
                            row.as_ref(),
                            Some(&b.offense),
                            "seed {seed} batch {batch_no}"
                        );
                        let mut parts = store.offense_rules(&b.offense.id)?;
                        let mut held = b.rules.clone();
                        parts.sort_by(|x, y| x.rule.cmp(&y.rule));
                        held.sort_by(|x, y| x.rule.cmp(&y.rule));
                        assert_eq!(parts, held, "seed {seed}");
                    }
                    // Not in detection order when grouped: compared as counts.
                    changes.extend(out);
                }
                let mut tally = [0usize; 3];
                for c in &changes {
                    tally[*c as usize] += 1;
                }
                Ok((everything(&store)?, tally))
            };
            let (one_by_one, tally) = run(false)?;
            let (grouped, grouped_tally) = run(true)?;
            suppressed_somewhere |= tally[OffenseChange::Suppressed as usize] > 0;
            assert!(
                one_by_one.len() > 6,
                "offenses closed and reopened: {}",
                one_by_one.len()
            );
            assert!(one_by_one.iter().any(|(_, rules, _)| rules.len() == 3));
            assert!(one_by_one
                .iter()
                .any(|(o, _, _)| o.tags.iter().any(|t| t == "v2")));
            assert_eq!(grouped, one_by_one, "seed {seed}");
            assert_eq!(grouped_tally, tally, "seed {seed}");
        }
        assert!(
            suppressed_somewhere,
            "some detections joined a closed offense"
        );
        // The runs are long on a plain stream of one index's single-event detections.
        let plain: Vec<Detection> = random_detections(5, 200)
            .into_iter()
            .map(|(mut d, _)| {
                d.index_value = "10.0.0.1".into();
                d.count = 1;
                d.fresh = 1;
                d.events.truncate(1);
                d.first_seen = t0();
                d.last_seen = t0();
                d
            })
            .collect();
        let groups = crate::correlate::group_detections(
            plain.iter(),
            |_| crate::correlate::Merge::Any,
            limits.inactive_after,
        );
        assert_eq!(groups.len(), 1);
        Ok(())
    }
}
