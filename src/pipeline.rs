//! The pipeline every record goes through, shared by `vigil run` and `vigil replay`:
//! normalize -> rule engine -> offenses -> store, one store transaction per batch.
//!
//! Architecture invariant: live and replay run the same [`prepare`] then the same batch
//! processing ([`Pipeline::process_batch`] is both), so a rule gives the same offenses on
//! replayed history as it would have live; live, `prepare` runs on a thread of its own.

use std::sync::Arc;

use chrono::Utc;
use vigil_correlate::{Detection, Engine, EngineLimits, Prescan, RuleSet};
use vigil_parsers::normalize::{Normalizer, RecordMeta, ORIGINAL_TIMESTAMP_FIELD};
use vigil_parsers::Event;

use crate::bus::RawRecord;
use crate::correlate::{
    apply_detections, Member, Merge, OffenseChange, OffenseLimits, RuleMeta, SeenEvents,
};
use crate::store::{DeadLetter, Store, StoreError};
use crate::telemetry::{Counter, Metrics};

/// Limits the pipeline enforces.
#[derive(Debug, Clone)]
pub struct PipelineLimits {
    /// Offense bookkeeping.
    pub offenses: OffenseLimits,
    /// Dead letters kept in the store.
    pub max_dead_letters: u64,
    /// A source's probe flows are stored as one superflow from this many in a minute (0: off).
    pub superflow_min_flows: usize,
    /// Automatic blocking.
    pub response: crate::response::ResponseConfig,
    /// Closed offenses are deleted this long after closing.
    pub closed_offense_retention: chrono::Duration,
}

/// Blocking decisions kept in the store (the oldest are deleted hourly beyond it).
const MAX_DECISIONS: u64 = 100_000;

/// (offense, event) pairs remembered for counting each event once per offense.
const SEEN_EVENTS_CAPACITY: usize = 1 << 18;

/// What the commit needs of an offense a group of detections changed: not the offense itself,
/// which would be a copy per group.
struct Applied {
    id: String,
    event_count: u64,
    magnitude: u8,
    /// The offense as JSON, made only when webhooks announce its changes.
    body: Option<serde_json::Value>,
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
    /// Detections that joined a recently closed offense under `vigil.suppress`.
    pub offenses_suppressed: u64,
}

/// Normalizer, engine and store, wired.
pub struct Pipeline {
    normalizer: Arc<Normalizer>,
    engine: Engine,
    store: Store,
    limits: PipelineLimits,
    metrics: Arc<Metrics>,
    detections: Vec<Detection>,
    events_by_source: Vec<(&'static str, Counter)>,
    /// `vigil_rule_matches_total` per rule, in the rule set's order, with what the counter
    /// held when this engine started (the engine counts from 0 after a rules swap).
    rule_matches: Vec<(Counter, u64)>,
    /// Events each offense already counted (one event, several rules).
    seen: SeenEvents,
    /// Open offenses held between detections (read once, written once per batch).
    book: crate::correlate::OffenseBook,
    /// The engine's limits (the scaled-out stages build their engines with them).
    engine_limits: EngineLimits,
    /// Per-source accounting (detected type, rates), shared with the API.
    sources: Arc<crate::sources::Sources>,
    /// Next `event.sequence`.
    next_sequence: u64,
    /// Rule facts offenses keep (id, author), by rule name.
    rule_meta: crate::correlate::RuleMetas,
    offenses_created: Counter,
    /// Store transactions of batches (the events counter over it: records a transaction).
    batches: Counter,
    offenses_updated: Counter,
    offenses_suppressed: Counter,
    dead_letters_evicted: Counter,
    /// Flow rows (flows and superflows) of the batch, handed to `flow_sink` once it is stored.
    flows: Vec<crate::store::superflow::FlowRow>,
    /// Where stored batches' flow rows go to be searchable (none: not kept).
    flow_sink: Option<crate::store::flows::FlowSink>,
    /// Holds probe flows per source and condenses scans into superflows.
    condenser: crate::store::superflow::Condenser,
    superflows: Counter,
    superflow_evicted: Counter,
    /// Set by [`Pipeline::flush_flows`]: the next batch stores every held flow.
    flush_all_flows: bool,
    /// The automatic-blocking guards (`None`: automatic blocking off, the config was invalid).
    guard: Option<crate::response::BlockGuard>,
    /// This batch's blocking decisions: (address, decision).
    decisions: Vec<(String, crate::response::Decision)>,
    store_errors: Counter,
    timestamps_clamped: Counter,
    /// GeoIP, zones, reference data, assets (none: events pass unenriched).
    enricher: Option<crate::context::Enricher>,
    /// Asset-factor of each detection of the current batch (same order).
    asset_factors: Vec<Option<crate::context::AssetFactor>>,
    /// Reference entries offense actions added in the current batch, applied to the live sets
    /// once the batch is stored.
    set_additions: Vec<crate::store::StoredReference>,
    /// When GeoIP files were last checked for a new version.
    geo_checked: Option<chrono::DateTime<Utc>>,
    geo_check_every: chrono::Duration,
    /// When freed memory was last given back to the system (after a state save; at most once
    /// per [`GIVE_BACK_EVERY`]).
    gave_back: std::cell::Cell<Option<std::time::Instant>>,
    reference_added: Counter,
    reference_add_failed: Counter,
    /// Where stored batches' log events go to be searchable (none: not kept).
    event_sink: Option<crate::store::events::EventSink>,
    /// This batch's log events for the event sink.
    searchable: Vec<Arc<Event>>,
    /// The last processed batch's record vector, emptied, for the normalize thread to fill
    /// again ([`Pipeline::take_spare`]): a batch's vector is a megabyte, and a fresh one each
    /// batch is fresh pages for the kernel to zero.
    spare: Option<Spare>,
    /// The rules the engine runs, for the normalize thread's prescan ([`Pipeline::rules_now`]).
    rules_now: Arc<std::sync::Mutex<Arc<RuleSet>>>,
    /// Rules of the rule files that did not load, one line each.
    rule_problems: Vec<String>,
    /// The burst spool position after the current batch's last record (stored with the
    /// batch), and after the last batch stored (stored with saved windows).
    spool_position: Option<(u64, u64)>,
}

/// `vigil_rule_matches_total` fed from one engine's counts by what they added since the last
/// export, so that the engines of one process (the scaled-out stages: single-event rules on
/// the ingest stage, correlations on the correlate stage) add up instead of overwriting each
/// other.
pub struct RuleMatchExport {
    counters: Vec<(Counter, u64)>,
}

impl RuleMatchExport {
    /// The counters of `rules`, in order.
    pub fn new(metrics: &Metrics, rules: &RuleSet) -> Self {
        RuleMatchExport {
            counters: rule_match_counters(metrics, rules)
                .into_iter()
                .map(|(c, _)| (c, 0))
                .collect(),
        }
    }

    /// Adds what each rule's matches grew by since the last call.
    pub fn export(&mut self, stats: &vigil_correlate::EngineStats) {
        for ((counter, last), rule) in self.counters.iter_mut().zip(&stats.rules) {
            if rule.matches > *last {
                counter.add(rule.matches - *last);
                *last = rule.matches;
            }
        }
    }
}

/// `vigil_rule_matches_total` of each rule of `rules`, in order, with its value now.
fn rule_match_counters(metrics: &Metrics, rules: &RuleSet) -> Vec<(Counter, u64)> {
    rules
        .rules()
        .iter()
        .map(|r| {
            let c = metrics.counter(
                "vigil_rule_matches_total",
                "Events a rule matched (detection rules) or counted (correlations).",
                &[("rule", &r.name)],
            );
            let base = c.get();
            (c, base)
        })
        .collect()
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
        sources: Arc<crate::sources::Sources>,
    ) -> Pipeline {
        let guard = match crate::response::BlockGuard::new(&limits.response) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!(error = %e, "automatic blocking off");
                None
            }
        };
        let condenser =
            crate::store::superflow::Condenser::new(limits.superflow_min_flows, 100_000);
        let rule_matches = rule_match_counters(&metrics, &rules);
        let rule_meta = RuleMeta::all(&rules);
        Pipeline {
            normalizer: Arc::new(normalizer),
            engine: Engine::new(Arc::clone(&rules), engine_limits),
            engine_limits,
            rule_matches,
            rule_meta,
            seen: SeenEvents::new(SEEN_EVENTS_CAPACITY),
            book: crate::correlate::OffenseBook::new(limits.offenses.held_open),
            sources,
            // Sequences start at the start time in microseconds, so they keep increasing
            // across restarts.
            next_sequence: u64::try_from(Utc::now().timestamp_micros()).unwrap_or(1),
            store,
            limits,
            offenses_created: metrics.counter(
                "vigil_offenses_created_total",
                "Offenses opened.",
                &[],
            ),
            batches: metrics.counter(
                "vigil_pipeline_batches_total",
                "Batches of records stored, one store transaction each.",
                &[],
            ),
            offenses_updated: metrics.counter(
                "vigil_offenses_updated_total",
                "Detections that joined an open offense.",
                &[],
            ),
            offenses_suppressed: metrics.counter(
                "vigil_offenses_suppressed_total",
                "Detections that joined a recently closed offense (vigil.suppress) instead of \
                 opening a new one.",
                &[],
            ),
            flows: Vec::new(),
            flow_sink: None,
            condenser,
            superflows: metrics.counter(
                "vigil_store_superflows_total",
                "Scans stored as one superflow row instead of their flows.",
                &[],
            ),
            superflow_evicted: metrics.counter(
                "vigil_store_superflow_sources_evicted_total",
                "Sources whose held probe flows were stored early because too many sources were held.",
                &[],
            ),
            flush_all_flows: false,
            event_sink: None,
            searchable: Vec::new(),
            spare: None,
            rules_now: Arc::new(std::sync::Mutex::new(Arc::clone(&rules))),
            rule_problems: Vec::new(),
            spool_position: None,
            guard,
            decisions: Vec::new(),
            dead_letters_evicted: metrics.counter(
                "vigil_store_dead_letters_evicted_total",
                "Oldest dead letters deleted to stay under store.max_dead_letters.",
                &[],
            ),
            timestamps_clamped: metrics.counter(
                "vigil_parse_timestamps_clamped_total",
                "Records whose timestamp was too far in the future; the receive time was used.",
                &[],
            ),
            store_errors: metrics.counter(
                "vigil_store_errors_total",
                "Store transactions that failed (the batch is retried).",
                &[],
            ),
            reference_added: metrics.counter(
                "vigil_reference_actions_total",
                "Offense index values added to a reference set by a rule's add_to_set.",
                &[("outcome", "added")],
            ),
            reference_add_failed: metrics.counter(
                "vigil_reference_actions_total",
                "Offense index values added to a reference set by a rule's add_to_set.",
                &[("outcome", "refused")],
            ),
            metrics,
            detections: Vec::new(),
            events_by_source: Vec::new(),
            enricher: None,
            asset_factors: Vec::new(),
            set_additions: Vec::new(),
            geo_checked: None,
            gave_back: std::cell::Cell::new(None),
            geo_check_every: chrono::Duration::seconds(60),
        }
    }

    /// Adds context (GeoIP, zones, reference data, assets) to every event before the engine;
    /// GeoIP files are checked for a new version every `geo_check_every`.
    pub fn with_enricher(
        mut self,
        enricher: crate::context::Enricher,
        geo_check_every: chrono::Duration,
    ) -> Pipeline {
        self.enricher = Some(enricher);
        self.geo_check_every = geo_check_every;
        self
    }

    /// Takes the pipeline apart for the scaled-out stages, which use its parts without the
    /// SQLite bookkeeping: the normalizer, the enricher, the rules and the engine limits.
    pub fn into_parts(
        self,
    ) -> (
        Arc<Normalizer>,
        Option<crate::context::Enricher>,
        Arc<RuleSet>,
        EngineLimits,
    ) {
        (
            self.normalizer,
            self.enricher,
            Arc::clone(self.engine.rules()),
            self.engine_limits,
        )
    }

    /// The burst spool position after the next batch's last record: stored in that batch's
    /// transaction (see `bus::spool`).
    pub fn set_spool_position(&mut self, position: (u64, u64)) {
        self.spool_position = Some(position);
    }

    /// What the open-offense book did so far.
    pub fn book_stats(&self) -> crate::correlate::book::BookStats {
        self.book.stats()
    }

    /// The spool position of the last stored batch.
    pub fn committed_spool_position(&self) -> Result<Option<(u64, u64)>, StoreError> {
        self.store.spool_position("committed")
    }

    /// Runs records that are already stored (read again from the spool after a crash, between
    /// the saved windows' position and the last stored batch's) through the rules, so the
    /// windows are as they were; their detections, dead letters and flows were stored then and
    /// are dropped now.
    pub fn rebuild_windows(&mut self, records: Vec<RawRecord>) {
        let mut per_source = std::collections::HashMap::new();
        let mut dropped = Vec::new();
        let n = records.len() as u64;
        for rec in records {
            if let Ok(mut event) = normalize_record(&self.normalizer, rec, &mut per_source) {
                event.sequence = Some(self.next_sequence);
                self.next_sequence += 1;
                if let Some(en) = self.enricher.as_mut() {
                    en.enrich(&mut event);
                }
                self.engine.process(&Arc::new(event), &mut dropped);
                dropped.clear();
            }
        }
        self.metrics
            .counter(
                "vigil_spool_rebuilt_total",
                "Stored records run through the rules again at start to rebuild the windows.",
                &[],
            )
            .add(n);
    }

    /// Records the problems of the rule load (the API lists them).
    pub fn with_rule_problems(mut self, problems: Vec<String>) -> Self {
        self.rule_problems = problems;
        self
    }

    /// The running rules and the problems of their load.
    pub fn rules(&self) -> (&Arc<RuleSet>, &[String]) {
        (self.engine.rules(), &self.rule_problems)
    }

    /// Runs `rules` from now on (a reload, a rule switched on or off), keeping the windows of
    /// every correlation that still exists and groups the same way; the others' are dropped
    /// (counted in the report).
    pub fn replace_rules(
        &mut self,
        rules: Arc<RuleSet>,
    ) -> Result<vigil_correlate::RestoreReport, String> {
        let mut engine = Engine::new(Arc::clone(&rules), self.engine_limits);
        let report = engine.restore(self.engine.snapshot_all())?;
        self.engine = engine;
        if let Ok(mut now) = self.rules_now.lock() {
            *now = Arc::clone(&rules);
        }
        self.rule_meta = RuleMeta::all(&rules);
        self.rule_matches = rule_match_counters(&self.metrics, &rules);
        self.metrics
            .gauge("vigil_rules_loaded", "Rules loaded.", &[])
            .set(rules.len() as u64);
        Ok(report)
    }

    /// Keeps every stored batch's log events searchable through `sink` (`events.db`).
    pub fn with_event_sink(mut self, sink: crate::store::events::EventSink) -> Self {
        self.event_sink = Some(sink);
        self
    }

    /// Keeps every stored batch's flow records and superflows searchable through `sink`
    /// (`flows.db`).
    pub fn with_flow_sink(mut self, sink: crate::store::flows::FlowSink) -> Self {
        self.flow_sink = Some(sink);
        self
    }

    /// The enricher, if any.
    pub fn enricher(&self) -> Option<&crate::context::Enricher> {
        self.enricher.as_ref()
    }

    /// The correlation windows, for [`crate::correlate::saved`] to write (the service does at
    /// shutdown, after the queue is drained, and every `rules.state_save_secs`). Taken between
    /// batches: the windows hold exactly the records before the last batch's spool position.
    /// Held events are shared with the windows, not copied.
    pub fn engine_snapshot(&self) -> vigil_correlate::EngineSnapshot {
        self.engine_cut().into_snapshot()
    }

    /// [`Pipeline::engine_snapshot`] as the engine thread takes it: a cut of the windows that
    /// shares their long runs of occurrences, made into a snapshot later on the saving thread
    /// ([`vigil_correlate::Engine::cut`]).
    pub fn engine_cut(&self) -> vigil_correlate::SnapshotCut {
        let started = std::time::Instant::now();
        let cut = self.engine.cut();
        self.metrics
            .gauge(
                "vigil_correlate_state_snapshot_milliseconds",
                "How long the engine thread took to take the last snapshot of its windows for saving (it processes nothing meanwhile).",
                &[],
            )
            .set(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        cut
    }

    /// After a save was written: its size as a metric, and the memory the snapshot held given
    /// back to the system (it was allocated here and freed on the saving thread).
    pub fn engine_state_saved(&self, bytes: u64, took: std::time::Duration) {
        self.metrics
            .gauge(
                "vigil_correlate_state_saved_bytes",
                "Size of the last saved correlation state.",
                &[],
            )
            .set(bytes);
        self.metrics
            .gauge(
                "vigil_correlate_state_save_milliseconds",
                "How long the saving thread took to write the last saved state.",
                &[],
            )
            .set(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        self.metrics
            .counter(
                "vigil_correlate_state_saves_total",
                "Correlation states saved (periodic, when the spool fills, at shutdown).",
                &[],
            )
            .inc();
        // A filling spool makes saves come every few seconds; a give-back each time would hand
        // the pipeline's working memory back to the system only for it to be faulted in and
        // zeroed again. (No throughput change was measurable either way: BENCHMARKS.md.)
        let now = std::time::Instant::now();
        if self
            .gave_back
            .get()
            .is_none_or(|at| now.duration_since(at) >= GIVE_BACK_EVERY)
        {
            self.gave_back.set(Some(now));
            give_back_memory();
        }
    }

    /// Stores every flow the superflow condenser still holds (the service calls it at
    /// shutdown, after the queue is drained).
    pub fn flush_flows(&mut self) {
        self.flush_all_flows = true;
        self.process_prepared_until_stored(Prepared::default());
    }

    /// Restores correlation windows saved by [`crate::correlate::saved`]. Windows of rules
    /// that no longer exist or now group by other fields are skipped (counted).
    pub fn restore_engine_snapshot(
        &mut self,
        snap: vigil_correlate::EngineSnapshot,
    ) -> Result<vigil_correlate::RestoreReport, String> {
        let report = self.engine.restore(snap)?;
        self.metrics
            .counter(
                "vigil_correlate_state_restored_keys_total",
                "Correlation keys restored from the saved state at start.",
                &[],
            )
            .add(report.keys);
        self.metrics
            .counter(
                "vigil_correlate_state_skipped_keys_total",
                "Saved correlation keys not restored (their rule is gone or groups differently).",
                &[],
            )
            .add(report.skipped);
        self.export_engine_stats();
        Ok(report)
    }

    /// Periodic context work (the live service calls it every second): GeoIP reload check,
    /// reference-data expiry, assets written to the store.
    pub fn maintain_context(&mut self, now: chrono::DateTime<Utc>) {
        let Some(en) = self.enricher.as_mut() else {
            return;
        };
        let check_geo = self
            .geo_checked
            .is_none_or(|t| now - t >= self.geo_check_every);
        if check_geo {
            self.geo_checked = Some(now);
        }
        if let Some(e) = en.tick(now, check_geo) {
            tracing::error!(error = %e, "GeoIP database refused; the previous one stays in use");
        }
        let assets = en.assets_mut();
        let dirty = assets.take_dirty();
        let evicted = assets.take_evicted();
        if dirty.is_empty() && evicted.is_empty() {
            return;
        }
        let result = self.store.in_transaction(|store| {
            store.put_assets(&dirty)?;
            store.delete_assets(&evicted)?;
            Ok(())
        });
        if let Err(e) = result {
            self.store_errors.inc();
            tracing::warn!(error = %e, "writing assets failed; they are written again when they change");
        }
    }

    /// The store (for reading results after a replay).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Processes records: normalizes and evaluates them once, then writes dead letters and
    /// offense changes in one store transaction. A failed transaction is rolled back and
    /// retried (3 attempts, backoff 50 ms x4) without re-running the engine, so nothing is
    /// counted twice; after the last attempt the error is returned. Replay uses this.
    pub fn process_batch(&mut self, records: Vec<RawRecord>) -> Result<BatchOutcome, StoreError> {
        let mut records = records;
        let batch = prepare(&self.normalizer, &mut records, None, self.spare.take());
        self.process(batch, Some(3), None)
    }

    /// The vectors of the last batch processed, emptied, to be filled by [`prepare`] again.
    pub fn take_spare(&mut self) -> Option<Spare> {
        self.spare.take()
    }

    /// The rules the engine runs, kept current across reloads: the normalize thread prescans
    /// its batches with them ([`prepare`]).
    pub fn rules_now(&self) -> Arc<std::sync::Mutex<Arc<RuleSet>>> {
        Arc::clone(&self.rules_now)
    }

    /// The normalizer, for a thread that prepares batches ahead of this pipeline ([`prepare`]).
    pub fn normalizer(&self) -> Arc<Normalizer> {
        Arc::clone(&self.normalizer)
    }

    /// [`Pipeline::process_batch`] for the live service, of a batch already normalized by
    /// [`prepare`] (on its `vigil-normalize` thread): a store failure (disk full, I/O error) is
    /// retried until it succeeds, with backoff capped at 5 s, counted in
    /// `vigil_store_errors_total` and logged. Meanwhile the queue fills and TCP senders are held
    /// back: records wait, none is dropped.
    pub fn process_prepared_until_stored(&mut self, batch: Prepared) -> BatchOutcome {
        self.process(batch, None, None).unwrap_or_default()
    }

    /// Tells the engine the time is `now` (wall clock in the live service), so rules waiting
    /// for something not to happen (`absence`, `silence`) fire even when no event arrives; their
    /// detections are stored like any other, retried until stored.
    pub fn tick(&mut self, now: chrono::DateTime<Utc>) -> BatchOutcome {
        self.process(Prepared::default(), None, Some(now))
            .unwrap_or_default()
    }

    /// Ends the blocks whose TTL passed: each gets an `unblocked` decision in the audit and an
    /// `ip.unblocked` webhook, in one transaction (the reference entry expires by itself). The
    /// live service calls it about once a second.
    pub fn end_expired_blocks(&mut self, now: chrono::DateTime<Utc>) {
        let webhooks = self.limits.response.webhooks.as_slice();
        let result = self.store.in_transaction(|store| {
            let expired = store.expired_blocks(now, 256)?;
            for (id, d) in &expired {
                store.end_block(*id)?;
                store.insert_response_decision(&crate::store::ResponseDecision {
                    at: now,
                    value: d.value.clone(),
                    offense_id: d.offense_id.clone(),
                    rule: d.rule.clone(),
                    decision: "unblocked".into(),
                    source: "expiry".into(),
                    expires_at: None,
                })?;
                crate::webhook::enqueue(
                    store,
                    webhooks,
                    "ip.unblocked",
                    &format!("unblock:{id}"),
                    &serde_json::json!({
                        "ip": d.value,
                        "offense_id": d.offense_id,
                        "blocked_at": d.at,
                    }),
                    now,
                )?;
            }
            Ok(expired.len())
        });
        match result {
            Ok(n) if n > 0 => self
                .metrics
                .counter(
                    "vigil_response_decisions_total",
                    "Automatic blocking decisions, by outcome (blocked, dry_run, or the guard that refused).",
                    &[("decision", "unblocked")],
                )
                .add(n as u64),
            Ok(_) => {}
            Err(e) => {
                self.store_errors.inc();
                tracing::warn!(error = %e, "ending expired blocks failed; retried next second");
            }
        }
    }

    /// Deletes closed offenses past their retention (`store.closed_offense_retention_days`) and
    /// stored reference entries past their expiry; the live service calls it hourly. Errors are
    /// logged and counted; the next call retries.
    pub fn expire_closed_offenses(&mut self, now: chrono::DateTime<Utc>) {
        let before = now - self.limits.closed_offense_retention;
        match self.store.delete_closed_offenses_before(before) {
            Ok(n) => self
                .metrics
                .counter(
                    "vigil_store_offenses_expired_total",
                    "Closed offenses deleted after store.closed_offense_retention_days.",
                    &[],
                )
                .add(n),
            Err(e) => {
                self.store_errors.inc();
                tracing::warn!(error = %e, "deleting expired offenses failed");
            }
        }
        // Expired entries are never read back (restores skip them); this only frees the rows.
        if let Err(e) = self.store.delete_expired_references(now) {
            self.store_errors.inc();
            tracing::warn!(error = %e, "deleting expired reference entries failed");
        }
        // Webhook deliveries done (delivered or given up) a week ago, and blocking decisions
        // beyond the newest MAX_DECISIONS, are deleted: both tables stay bounded.
        match self
            .store
            .prune_response(now - chrono::Duration::days(7), MAX_DECISIONS)
        {
            Ok(n) => self
                .metrics
                .counter(
                    "vigil_store_response_pruned_total",
                    "Finished webhook deliveries (after 7 days) and old blocking decisions (beyond 100,000) deleted.",
                    &[],
                )
                .add(n),
            Err(e) => {
                self.store_errors.inc();
                tracing::warn!(error = %e, "pruning the outbox and decisions failed");
            }
        }
    }

    fn process(
        &mut self,
        batch: Prepared,
        max_attempts: Option<u32>,
        tick: Option<chrono::DateTime<Utc>>,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut dead = Vec::new();
        let mut events_by_source: Vec<(&'static str, u64)> = Vec::new();
        let Prepared {
            mut records,
            per_source,
            clamped,
            prescan,
        } = batch;
        self.detections.clear();
        self.flows.clear();
        let flush_all = std::mem::take(&mut self.flush_all_flows);
        self.condenser
            .flush(std::time::Instant::now(), flush_all, &mut self.flows);
        if let Some(now) = tick {
            self.engine.advance(now, &mut self.detections);
            if self.detections.is_empty() && self.flows.is_empty() {
                return Ok(outcome);
            }
        }
        // The superflow condenser's clock: once a batch (its hold is a minute), not a clock read
        // for every flow.
        let batch_started = std::time::Instant::now();
        self.timestamps_clamped.add(clamped);
        for (i, (source, result)) in records.drain(..).enumerate() {
            match result {
                Ok(mut shared) => {
                    outcome.events += 1;
                    // Made on the normalize thread and held nowhere else yet: no copy.
                    let event = Arc::make_mut(&mut shared);
                    event.sequence = Some(self.next_sequence);
                    self.next_sequence += 1;
                    match events_by_source.iter_mut().find(|(s, _)| *s == source) {
                        Some((_, n)) => *n += 1,
                        None => events_by_source.push((source, 1)),
                    }
                    if let Some(en) = self.enricher.as_mut() {
                        en.enrich(event);
                    }
                    let event = shared;
                    if crate::store::flows::is_flow(&event) {
                        self.condenser
                            .push(Arc::clone(&event), batch_started, &mut self.flows);
                    } else if self.event_sink.is_some() {
                        self.searchable.push(Arc::clone(&event));
                    }
                    match &prescan {
                        Some(p) => {
                            self.engine
                                .process_prescanned(&event, p, i, &mut self.detections)
                        }
                        None => self.engine.process(&event, &mut self.detections),
                    }
                }
                Err(d) => {
                    outcome.dead_letters += 1;
                    dead.push((source, *d));
                }
            }
        }
        self.spare = Some(Spare { records, prescan });
        self.asset_factors.clear();
        if let Some(en) = &self.enricher {
            self.asset_factors
                .extend(self.detections.iter().map(|d| en.events_factor(&d.events)));
        }
        let mut delay = std::time::Duration::from_millis(50);
        let mut attempt = 0;
        let (changes, evicted) = loop {
            match self.commit(&dead) {
                Ok(done) => break done,
                Err(e) => {
                    self.store_errors.inc();
                    attempt += 1;
                    if max_attempts.is_some_and(|max| attempt >= max) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "store transaction failed, retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 4).min(std::time::Duration::from_secs(5));
                }
            }
        };
        self.batches.inc();
        // The next batch's lists start at this one's size: grown once, not by doubling.
        if let Some(sink) = &self.event_sink {
            let n = self.searchable.len();
            sink.send(std::mem::replace(
                &mut self.searchable,
                Vec::with_capacity(n),
            ));
        }
        if let Some(sink) = &self.flow_sink {
            let n = self.flows.len();
            sink.send(std::mem::replace(&mut self.flows, Vec::with_capacity(n)));
        }
        // Counted only now that the batch is stored: a metric never runs ahead of what the API
        // can show.
        if !per_source.is_empty() {
            self.sources.record_batch(per_source);
        }
        for (source, n) in events_by_source {
            self.events_counter(source).add(n);
        }
        for (source, d) in &dead {
            self.metrics
                .counter(
                    "vigil_parse_dead_letters_total",
                    "Records kept as dead letters, by reason.",
                    &[("source", source), ("reason", &d.reason)],
                )
                .inc();
        }
        // Counted per rule once a batch: the registry's lookup is not per detection.
        let mut by_rule: std::collections::HashMap<&str, u64, foldhash::fast::RandomState> =
            std::collections::HashMap::default();
        for d in &self.detections {
            *by_rule.entry(&*d.rule).or_default() += 1;
        }
        for (rule, n) in by_rule {
            self.metrics
                .counter(
                    "vigil_rule_detections_total",
                    "Detections raised by rules (new offenses and updates).",
                    &[("rule", rule)],
                )
                .add(n);
        }
        self.dead_letters_evicted.add(evicted);
        self.apply_set_additions();
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
                OffenseChange::Suppressed => {
                    outcome.offenses_suppressed += 1;
                    self.offenses_suppressed.inc();
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

    fn commit(
        &mut self,
        dead: &[(&'static str, DeadLetter)],
    ) -> Result<(Changes, u64), StoreError> {
        let now = Utc::now();
        let offense_limits = self.limits.offenses;
        let max_dead = self.limits.max_dead_letters;
        let detections = &self.detections;
        let factors = &self.asset_factors;
        let rule_meta = &self.rule_meta;
        let no_meta = RuleMeta::default();
        let seen = &mut self.seen;
        let book = &mut self.book;
        let additions = &mut self.set_additions;
        additions.clear();
        let guard = &mut self.guard;
        let block_set = self.limits.response.block_set.as_str();
        let webhooks = self.limits.response.webhooks.as_slice();
        let enricher = self.enricher.as_ref();
        let decisions = &mut self.decisions;
        decisions.clear();
        let spool_position = self.spool_position;
        let result = self.store.in_transaction(|store| {
            book.begin(store)?;
            if let Some(p) = spool_position {
                store.set_spool_position("committed", p)?;
            }
            let mut evicted = 0;
            for (_, d) in dead {
                evicted += store.insert_dead_letter(d, max_dead)?;
            }
            let mut changes = Vec::with_capacity(detections.len());
            // Runs of one index's detections (any rules) are applied at once, unless a
            // detection can have effects of its own: a webhook per change, a set addition or
            // a block decision (a rule's, or the magnitude policy's after any change). The
            // guards alone (always there when the response config is valid) decide nothing
            // without a block asked for. A suppressing rule's detection joins runs only.
            let per_change =
                !webhooks.is_empty() || guard.as_ref().is_some_and(|g| g.min_magnitude > 0);
            let merge = |d: &Detection| Merge::of(rule_meta.get(&*d.rule), per_change);
            let groups = crate::correlate::group_detections(
                detections.iter(),
                merge,
                offense_limits.inactive_after,
            );
            for group in &groups {
                let Some((&i, rest)) = group.split_first() else {
                    continue;
                };
                let member = |j: usize| {
                    detections.get(j).map(|d| {
                        let meta = rule_meta.get(&*d.rule).unwrap_or(&no_meta);
                        (d, meta, factors.get(j).and_then(Option::as_ref), j)
                    })
                };
                let Some(first) = member(i) else { continue };
                let rest: Vec<Member<'_>> = rest.iter().filter_map(|&j| member(j)).collect();
                let (d, meta, _, _) = first;
                let with_body = !webhooks.is_empty();
                let (change, offense) = apply_detections(
                    store,
                    book,
                    (first, &rest),
                    &offense_limits,
                    seen,
                    now,
                    |o, change, _| {
                        let body = with_body.then(|| serde_json::to_value(o).unwrap_or_default());
                        (
                            change,
                            Applied {
                                id: o.id.clone(),
                                event_count: o.event_count,
                                magnitude: o.magnitude,
                                body,
                            },
                        )
                    },
                )?;
                // Each member is one change, as if applied alone: the first's, then updates.
                let later = match change {
                    OffenseChange::Suppressed => OffenseChange::Suppressed,
                    _ => OffenseChange::Updated,
                };
                changes.push((change, d.events.last().map(|e| e.ingested)));
                for (m, _, _, _) in &rest {
                    changes.push((later, m.events.last().map(|e| e.ingested)));
                }
                let event = match change {
                    OffenseChange::Created => Some("offense.created"),
                    OffenseChange::Updated => Some("offense.updated"),
                    OffenseChange::Suppressed => None,
                };
                if let (Some(event), Some(body)) = (event, &offense.body) {
                    let subject = format!("{}@{}", offense.id, offense.event_count);
                    crate::webhook::enqueue(store, webhooks, event, &subject, body, now)?;
                }
                // A block (into the block set) asked by the rule or by the magnitude policy
                // passes the response guards; other sets take the rule's additions as they are.
                let mut block: Option<(Option<chrono::Duration>, String)> = None;
                if let Some((set, ttl)) = &meta.add_to_set {
                    if *set == block_set {
                        // Without valid guards (reported at start) nothing is blocked.
                        if guard.is_some() {
                            block = Some((*ttl, format!("rule:{}", d.rule)));
                        }
                    } else {
                        let entry = crate::store::StoredReference {
                            collection: set.clone(),
                            value: d.index_value.clone(),
                            map_value: None,
                            source: format!("rule:{}", d.rule),
                            expires_at: ttl.map(|t| now + t),
                        };
                        store.put_reference(&entry)?;
                        additions.push(entry);
                    }
                }
                if let Some(g) = guard.as_ref() {
                    if block.is_none()
                        && g.min_magnitude > 0
                        && offense.magnitude >= g.min_magnitude
                    {
                        block = Some((Some(g.ttl), "policy:magnitude".to_owned()));
                    }
                }
                if let (Some((ttl, source)), Some(g)) = (block, guard.as_mut()) {
                    let value = &d.index_value;
                    let held = enricher.is_some_and(|en| {
                        en.reference()
                            .contains_value(&g.block_set, value, now)
                            .unwrap_or(false)
                    }) || additions
                        .iter()
                        .any(|a| a.collection == g.block_set && a.value == *value)
                        || decisions.iter().any(|(v, _)| v == value);
                    if !held {
                        let internal = |ip: std::net::IpAddr| {
                            enricher
                                .is_some_and(|en| en.zones().lookup(ip).is_some_and(|z| z.internal))
                        };
                        let decision = g.decide(value, internal, std::time::Instant::now());
                        let expires_at = ttl.map(|t| now + t);
                        store.insert_response_decision(&crate::store::ResponseDecision {
                            at: now,
                            value: value.clone(),
                            offense_id: offense.id.clone(),
                            rule: d.rule.to_string(),
                            decision: decision.as_str().to_owned(),
                            source: source.clone(),
                            expires_at: (decision == crate::response::Decision::Blocked)
                                .then_some(expires_at)
                                .flatten(),
                        })?;
                        decisions.push((value.clone(), decision));
                        if decision == crate::response::Decision::Blocked {
                            crate::webhook::enqueue(
                                store,
                                webhooks,
                                "ip.blocked",
                                &format!("block:{value}:{}", offense.id),
                                &serde_json::json!({
                                    "ip": value,
                                    "offense_id": offense.id,
                                    "rule": d.rule,
                                    "source": source,
                                    "expires_at": expires_at,
                                }),
                                now,
                            )?;
                            let entry = crate::store::StoredReference {
                                collection: g.block_set.clone(),
                                value: value.clone(),
                                map_value: None,
                                source,
                                expires_at,
                            };
                            store.put_reference(&entry)?;
                            additions.push(entry);
                        }
                    }
                }
            }
            book.flush(store)?;
            Ok((changes, evicted))
        });
        match &result {
            Ok(_) => {
                self.seen.commit();
                let supers = self
                    .flows
                    .iter()
                    .filter(|r| matches!(r, crate::store::superflow::FlowRow::Super(_)))
                    .count();
                self.superflows.add(supers as u64);
                self.superflow_evicted
                    .add(std::mem::take(&mut self.condenser.evicted));
                for (_, decision) in &self.decisions {
                    self.metrics
                        .counter(
                            "vigil_response_decisions_total",
                            "Automatic blocking decisions, by outcome (blocked, dry_run, or the guard that refused).",
                            &[("decision", decision.as_str())],
                        )
                        .inc();
                }
            }
            Err(_) => {
                self.seen.rollback();
                self.book.clear();
            }
        }
        result
    }

    /// Applies the stored `add_to_set` entries of the last batch to the live reference sets.
    fn apply_set_additions(&mut self) {
        let Some(en) = &self.enricher else { return };
        for e in self.set_additions.drain(..) {
            match en
                .reference()
                .add_until(&e.collection, &e.value, e.expires_at, &e.source)
            {
                Ok(()) => self.reference_added.inc(),
                Err(err) => {
                    self.reference_add_failed.inc();
                    tracing::warn!(error = %err, set = %e.collection, value = %e.value,
                        "offense action could not add to the reference set");
                }
            }
        }
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
        for ((counter, base), rule) in self.rule_matches.iter().zip(&stats.rules) {
            counter.mirror(base + rule.matches);
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
                "vigil_correlate_payloads_dropped",
                "Events dropped from windows to stay under rules.max_payload_bytes; their times \
                 stay (since start).",
                &[],
            )
            .set(stats.payloads_dropped);
        self.metrics
            .gauge(
                "vigil_correlate_payload_bytes",
                "Bytes of events held as evidence in correlation windows.",
                &[],
            )
            .set(stats.payload_bytes);
        self.metrics
            .gauge(
                "vigil_correlate_events_evicted",
                "Events dropped from full windows, rules.max_events_per_key (since start).",
                &[],
            )
            .set(stats.events_evicted);
        let book = self.book.stats();
        for (name, help, value) in [
            (
                "vigil_offense_book_hits",
                "Detections whose open offense was held in memory (since start).",
                book.hits,
            ),
            (
                "vigil_offense_book_misses",
                "Detections that read their open offense from the database (since start).",
                book.misses,
            ),
            (
                "vigil_offense_book_evicted",
                "Open offenses dropped from memory because the book was full (since start).",
                book.evicted,
            ),
            (
                "vigil_offense_book_invalidated",
                "Times the held offenses were dropped because another connection changed the \
                 database, such as an analyst's action (since start).",
                book.invalidated,
            ),
            (
                "vigil_offense_book_offenses",
                "Open offenses held in memory now.",
                self.book.len() as u64,
            ),
        ] {
            self.metrics.gauge(name, help, &[]).set(value);
        }
    }
}

/// Least time between two [`give_back_memory`] calls after state saves.
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Returns freed heap memory to the system, on the calling thread (the engine's), after a
/// window save. The binary allocates with mimalloc (`src/main.rs`): blocks the engine
/// allocated and other threads freed (events, after the event store wrote them) wait in the
/// engine heap's lists until this thread collects them, which `mi_collect(true)` does, returning
/// what it can to the system. Under glibc's allocator (tests), `malloc_trim` does the same; the
/// mimalloc call is then a no-op on an empty heap. Not called every second: the soak with a
/// collect per tick fell behind where the one without kept up (BENCHMARKS.md).
fn give_back_memory() {
    // SAFETY: mi_collect takes no pointer and only touches the calling thread's heap.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One record through the parsers: its event, or the dead letter it becomes (a collector's
/// refusal, or the parser's rejection, with the raw bytes). The sender's accounting in
/// `per_source` (last seen, events by dataset, dead letters) is updated either way. Shared by
/// the embedded pipeline and the scaled-out ingest stage.
pub(crate) fn normalize_record(
    normalizer: &Normalizer,
    rec: RawRecord,
    per_source: &mut std::collections::HashMap<String, crate::sources::SourceBatch>,
) -> Result<vigil_parsers::Event, Box<DeadLetter>> {
    let meta = RecordMeta {
        observer_type: rec.observer_type,
        observer_id: &rec.observer_id,
        peer: rec.peer,
        received_at: rec.received_at,
    };
    let seen_from = match per_source.get_mut(rec.observer_id.as_str()) {
        Some(b) => b,
        None => per_source
            .entry(rec.observer_id.to_string())
            .or_insert_with(|| crate::sources::SourceBatch {
                kind: rec.observer_type,
                last_seen: rec.received_at,
                ..Default::default()
            }),
    };
    seen_from.last_seen = seen_from.last_seen.max(rec.received_at);
    let mut bytes = rec.bytes;
    let result = match (&rec.refused, rec.decoded) {
        (Some((reason, detail)), _) => Err((*reason, detail.clone())),
        (None, Some(decoded)) => Ok(match decoded {
            crate::bus::Decoded::Event(event) => *event,
            crate::bus::Decoded::Flow(flow) => {
                crate::collect::flow::flow_event(&flow, &rec.observer_id)
            }
        }),
        // The record's bytes become the event's `raw`, or come back for its dead letter.
        (None, None) => normalizer
            .normalize_owned(std::mem::take(&mut bytes), &meta)
            .map_err(|(r, back)| {
                bytes = back;
                (r.reason, r.detail)
            }),
    };
    match result {
        Ok(event) => {
            seen_from.event(event.dataset.as_deref());
            Ok(event)
        }
        Err((reason, detail)) => {
            seen_from.dead_letters += 1;
            Err(Box::new(DeadLetter {
                id: 0,
                received_at: rec.received_at,
                observer_type: rec.observer_type.to_owned(),
                observer_id: rec.observer_id.into(),
                peer: rec.peer.map(|p| p.to_string()),
                reason: reason.to_owned(),
                detail,
                raw: bytes,
            }))
        }
    }
}

/// A record normalized: its event (not shared yet), or its dead letter.
pub type Normalized = Result<Arc<vigil_parsers::Event>, Box<DeadLetter>>;

/// A batch's normalized records, each with its `source` label.
pub type PreparedRecords = Vec<(&'static str, Normalized)>;

/// A processed batch's vectors, emptied, for [`prepare`] to fill again: a batch's records are
/// a megabyte, and fresh vectors each batch are fresh pages for the kernel to zero.
#[derive(Default)]
pub struct Spare {
    records: PreparedRecords,
    prescan: Option<Prescan>,
}

/// Records normalized ahead of the engine ([`prepare`]): each with its `source` label, the
/// event or its dead letter; and what each sender sent (kept for the API's source list once
/// the batch is stored).
#[derive(Default)]
pub struct Prepared {
    records: PreparedRecords,
    /// The rules' literal prescan of the events, when made ahead of the engine.
    prescan: Option<Prescan>,
    per_source: std::collections::HashMap<String, crate::sources::SourceBatch>,
    /// Events whose time was clamped (counted here, where the event is still in cache).
    clamped: u64,
}

/// Normalizes `records` (parsing and the parser definitions, or a flow record's event): the
/// part of a batch that depends on nothing but the record, so the live service runs it on a
/// thread of its own ahead of the engine. With `rules` (the engine's, [`Pipeline::rules_now`])
/// the events are also prescanned by the rules' literal prefilter ([`Prescan`]), work the
/// engine then skips. `records` is left empty with its capacity, and the batch is made in
/// `spare` when given (a processed batch's vectors back from the engine,
/// [`Pipeline::take_spare`]): every vector is reused batch after batch.
pub fn prepare(
    normalizer: &Normalizer,
    records: &mut Vec<RawRecord>,
    rules: Option<&Arc<RuleSet>>,
    spare: Option<Spare>,
) -> Prepared {
    let mut per_source = std::collections::HashMap::new();
    let mut clamped = 0;
    let Spare {
        records: mut out,
        prescan,
    } = spare.unwrap_or_default();
    let mut prescan = rules.map(|rules| match prescan {
        Some(mut p) => {
            p.reset(Arc::clone(rules));
            p
        }
        None => Prescan::new(Arc::clone(rules)),
    });
    out.clear();
    out.reserve(records.len());
    out.extend(records.drain(..).map(|rec| {
        let source = source_label(&rec);
        let result = normalize_record(normalizer, rec, &mut per_source).map(|e| {
            clamped += u64::from(e.extra.contains_key(ORIGINAL_TIMESTAMP_FIELD));
            Arc::new(e)
        });
        if let Some(p) = prescan.as_mut() {
            p.push(result.as_deref().ok());
        }
        (source, result)
    }));
    let records = out;
    Prepared {
        records,
        per_source,
        clamped,
        prescan,
    }
}

/// The `source` label of a record's metrics.
pub(crate) fn source_label(rec: &RawRecord) -> &'static str {
    match (rec.observer_type, rec.observer_id.as_bytes()) {
        ("syslog", id) if id.starts_with(b"syslog/udp") => "syslog_udp",
        ("syslog", _) => "syslog_tcp",
        (other, _) => other,
    }
}
