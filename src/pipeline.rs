//! The pipeline every record goes through, shared by `vigil run` and `vigil replay`:
//! normalize -> rule engine -> offenses -> store, one store transaction per batch.
//!
//! Architecture invariant: live and replay call the same [`Pipeline::process_batch`], so a rule
//! gives the same offenses on replayed history as it would have live.

use std::sync::Arc;

use chrono::Utc;
use vigil_correlate::{Detection, Engine, EngineLimits, RuleSet};
use vigil_parsers::normalize::{Normalizer, RecordMeta};

use crate::bus::RawRecord;
use crate::correlate::{apply_detection, OffenseChange};
use crate::store::{DeadLetter, Store, StoreError};
use crate::telemetry::{Counter, Metrics};

/// Limits the pipeline enforces.
#[derive(Debug, Clone, Copy)]
pub struct PipelineLimits {
    /// Contributing events stored per offense.
    pub max_events_per_offense: u64,
    /// Dead letters kept in the store.
    pub max_dead_letters: u64,
}

/// Offense changes of a batch, with the receive time of the record that caused each.
type Changes = Vec<(OffenseChange, Option<chrono::DateTime<Utc>>)>;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records that became events.
    pub events: u64,
    /// Records kept as dead letters.
    pub dead_letters: u64,
    /// Offenses opened.
    pub offenses_created: u64,
    /// Offense updates (events joining an open offense).
    pub offenses_updated: u64,
}

/// Normalizer, engine and store, wired.
pub struct Pipeline {
    normalizer: Normalizer,
    engine: Engine,
    store: Store,
    limits: PipelineLimits,
    metrics: Arc<Metrics>,
    detections: Vec<Detection>,
    events_by_source: Vec<(&'static str, Counter)>,
    /// `vigil_rule_matches_total` per rule, in the rule set's order.
    rule_matches: Vec<Counter>,
    offenses_created: Counter,
    offenses_updated: Counter,
    dead_letters_evicted: Counter,
    store_errors: Counter,
}

impl Pipeline {
    /// Wires a pipeline.
    pub fn new(
        normalizer: Normalizer,
        rules: Arc<RuleSet>,
        engine_limits: EngineLimits,
        store: Store,
        limits: PipelineLimits,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        let rule_matches = rules
            .rules()
            .iter()
            .map(|r| {
                metrics.counter(
                    "vigil_rule_matches_total",
                    "Events a rule matched (detection rules) or counted (correlations).",
                    &[("rule", &r.name)],
                )
            })
            .collect();
        Pipeline {
            normalizer,
            engine: Engine::new(rules, engine_limits),
            rule_matches,
            store,
            limits,
            offenses_created: metrics.counter(
                "vigil_offenses_created_total",
                "Offenses opened.",
                &[],
            ),
            offenses_updated: metrics.counter(
                "vigil_offenses_updated_total",
                "Detections that joined an open offense.",
                &[],
            ),
            dead_letters_evicted: metrics.counter(
                "vigil_store_dead_letters_evicted_total",
                "Oldest dead letters deleted to stay under store.max_dead_letters.",
                &[],
            ),
            store_errors: metrics.counter(
                "vigil_store_errors_total",
                "Store transactions that failed (the batch is retried).",
                &[],
            ),
            metrics,
            detections: Vec::new(),
            events_by_source: Vec::new(),
        }
    }

    /// The store (for reading results after a replay).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Processes records: normalizes and evaluates them once, then writes dead letters and
    /// offense changes in one store transaction. A failed transaction is rolled back and
    /// retried (3 attempts, backoff 50 ms x4) without re-running the engine, so nothing is
    /// counted twice; after the last attempt the error is returned (and counted).
    pub fn process_batch(&mut self, records: Vec<RawRecord>) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut dead = Vec::new();
        self.detections.clear();
        for rec in records {
            let source = source_label(&rec);
            let meta = RecordMeta {
                observer_type: rec.observer_type,
                observer_id: &rec.observer_id,
                peer: rec.peer,
                received_at: rec.received_at,
            };
            let result = match &rec.refused {
                Some((reason, detail)) => Err((*reason, detail.clone())),
                None => self
                    .normalizer
                    .normalize(&rec.bytes, &meta)
                    .map_err(|r| (r.reason, r.detail)),
            };
            match result {
                Ok(event) => {
                    outcome.events += 1;
                    self.events_counter(source).inc();
                    self.engine.process(&Arc::new(event), &mut self.detections);
                }
                Err((reason, detail)) => {
                    outcome.dead_letters += 1;
                    self.metrics
                        .counter(
                            "vigil_parse_dead_letters_total",
                            "Records kept as dead letters, by reason.",
                            &[("source", source), ("reason", reason)],
                        )
                        .inc();
                    dead.push(DeadLetter {
                        id: 0,
                        received_at: rec.received_at,
                        observer_type: rec.observer_type.to_owned(),
                        observer_id: rec.observer_id.clone(),
                        peer: rec.peer.map(|p| p.to_string()),
                        reason: reason.to_owned(),
                        detail,
                        raw: rec.bytes,
                    });
                }
            }
        }
        for d in &self.detections {
            self.metrics
                .counter(
                    "vigil_rule_detections_total",
                    "Detections raised by rules (new offenses and updates).",
                    &[("rule", &d.rule)],
                )
                .inc();
        }
        let mut delay = std::time::Duration::from_millis(50);
        let mut attempt = 0;
        let (changes, evicted) = loop {
            match self.commit(&dead) {
                Ok(done) => break done,
                Err(e) => {
                    self.store_errors.inc();
                    attempt += 1;
                    if attempt >= 3 {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "store transaction failed, retrying");
                    std::thread::sleep(delay);
                    delay *= 4;
                }
            }
        };
        self.dead_letters_evicted.add(evicted);
        let committed = Utc::now();
        for (change, ingested) in changes {
            match change {
                OffenseChange::Created => {
                    outcome.offenses_created += 1;
                    self.offenses_created.inc();
                }
                OffenseChange::Updated => {
                    outcome.offenses_updated += 1;
                    self.offenses_updated.inc();
                }
            }
            if let Some(ingested) = ingested {
                let secs = (committed - ingested).num_microseconds().unwrap_or(0) as f64 / 1e6;
                self.metrics.offense_latency.observe(secs);
            }
        }
        self.export_engine_stats();
        Ok(outcome)
    }

    fn commit(&mut self, dead: &[DeadLetter]) -> Result<(Changes, u64), StoreError> {
        let now = Utc::now();
        let max_events = self.limits.max_events_per_offense;
        let max_dead = self.limits.max_dead_letters;
        let detections = &self.detections;
        self.store.in_transaction(|store| {
            let mut evicted = 0;
            for d in dead {
                evicted += store.insert_dead_letter(d, max_dead)?;
            }
            let mut changes = Vec::with_capacity(detections.len());
            for d in detections {
                let (_, change) = apply_detection(store, d, max_events, now)?;
                changes.push((change, d.events.last().map(|e| e.ingested)));
            }
            Ok((changes, evicted))
        })
    }

    /// The `vigil_parse_events_total` handle of a source, cached: the registry lock is taken
    /// once per source, not once per record.
    fn events_counter(&mut self, source: &'static str) -> &Counter {
        let i = match self.events_by_source.iter().position(|(s, _)| *s == source) {
            Some(i) => i,
            None => {
                let c = self.metrics.counter(
                    "vigil_parse_events_total",
                    "Records that became events.",
                    &[("source", source)],
                );
                self.events_by_source.push((source, c));
                self.events_by_source.len() - 1
            }
        };
        &self.events_by_source[i].1
    }

    fn export_engine_stats(&self) {
        let stats = self.engine.stats();
        for (counter, rule) in self.rule_matches.iter().zip(&stats.rules) {
            counter.mirror(rule.matches);
        }
        self.metrics
            .gauge(
                "vigil_correlate_keys",
                "Correlation keys held in windows.",
                &[],
            )
            .set(stats.keys_live);
        self.metrics
            .gauge(
                "vigil_correlate_keys_evicted",
                "Correlation keys evicted to stay under rules.max_keys_per_rule (since start).",
                &[],
            )
            .set(stats.keys_evicted);
        self.metrics
            .gauge(
                "vigil_correlate_events_evicted",
                "Events dropped from full windows, rules.max_events_per_key (since start).",
                &[],
            )
            .set(stats.events_evicted);
    }
}

fn source_label(rec: &RawRecord) -> &'static str {
    match (rec.observer_type, rec.observer_id.as_bytes()) {
        ("syslog", id) if id.starts_with(b"syslog/udp") => "syslog_udp",
        ("syslog", _) => "syslog_tcp",
        (other, _) => other,
    }
}
