//! The scaled-out mode: the stages of the embedded pipeline, split over Kafka, with ClickHouse
//! as the shared store.
//!
//! ```text
//!  collectors ─► ingest (stage 1, any number of processes)
//!                 normalize → enrich → Engine::route (single-event rules)
//!                   ├─► <p>.events        keyed by log source      ─► store stage → ClickHouse
//!                   ├─► <p>.dead_letters  keyed by log source      ─► store stage → ClickHouse
//!                   ├─► <p>.matches       keyed by Routed::key     ─► correlate stage
//!                   └─► <p>.detections    keyed by offense index   ─► offense stage
//!  correlate (stage 2, one consumer group): Engine::feed_routed on the windows of its
//!    partitions; detections ─► <p>.detections, chained matches ─► <p>.matches
//!  offense stage (one consumer group): detections of one index always reach one owner, which
//!    joins them into offenses exactly as embedded mode does and writes versioned rows to
//!    ClickHouse
//! ```
//!
//! Every consumer commits its offsets only after what the records produced is acknowledged by
//! Kafka or stored in ClickHouse: at least once end to end. Retried work is harmless where it
//! lands: event and dead-letter batches carry a deterministic batch id (topic, partition, offset
//! range) that the ClickHouse tables deduplicate on, offense rows are versioned, and an event is
//! counted once per offense by its `event.sequence`.

pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use vigil_correlate::{Detection, Engine, EngineLimits, RuleSet};
use vigil_parsers::normalize::Normalizer;

use crate::bus::kafka::{KafkaConfig, KafkaConsumer, KafkaProducer, Received, TopicSpec};
use crate::bus::memory::MemorySubscriber;
use crate::bus::RawRecord;
use crate::bus::{Received as Queued, Subscriber};
use crate::correlate::{apply_detection, OffenseLimits, RuleMeta, SeenEvents};
use crate::store::clickhouse::ClickHouseStore;
use crate::store::{DeadLetter, Store};
use crate::telemetry::Metrics;
use wire::{MatchRecord, Topics};

/// Records taken from the collector queue (or a topic) in one batch at most.
const BATCH: usize = 1024;
/// How long a consumer waits for a first record before doing its periodic work.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// Creates the deployment's topics if missing (`bus.partitions` each).
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
    partitions: i32,
) -> anyhow::Result<()> {
    let specs: Vec<TopicSpec> = topics
        .all()
        .iter()
        .map(|t| TopicSpec::new(*t, partitions))
        .collect();
    crate::bus::kafka::ensure_topics(kafka, &specs).await?;
    Ok(())
}

/// Unique `event.sequence` numbers across processes: a random 16-bit node prefix (chosen at
/// start) over a 47-bit counter.
#[derive(Debug)]
pub struct Sequencer {
    prefix: u64,
    next: u64,
}

impl Sequencer {
    /// A sequencer with a random node prefix.
    pub fn new() -> Sequencer {
        Sequencer {
            prefix: u64::from(rand::random::<u16>()) << 47,
            next: 0,
        }
    }

    /// The next number.
    pub fn next_sequence(&mut self) -> u64 {
        self.next = (self.next + 1) & ((1u64 << 47) - 1);
        self.prefix | self.next
    }
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

/// Runs `attempt` until it succeeds, backing off from 100 ms to 5 s between tries and logging
/// each failure; `None` if `stop` is set first. Nothing a stage consumed is dropped on a
/// transient Kafka or ClickHouse failure: the stage waits, and its consumer does not commit.
fn retry<T, E: std::fmt::Display>(
    what: &str,
    stop: &AtomicBool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Option<T> {
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt() {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed, retrying");
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sends `records` to `topic` until Kafka acknowledges them all (a retry may write some twice,
/// which the consumers tolerate), or until `stop` is set.
fn send_all(
    rt: &tokio::runtime::Handle,
    producer: &KafkaProducer,
    topic: &str,
    records: &[(Vec<u8>, Vec<u8>)],
    stop: &AtomicBool,
    failures: &crate::telemetry::Counter,
) -> bool {
    records.is_empty()
        || retry(&format!("publishing to {topic}"), stop, || {
            rt.block_on(producer.send_batch(topic, records))
                .inspect_err(|_| failures.inc())
        })
        .is_some()
}

/// Stage 1: what the embedded engine thread does up to the rules, publishing instead of
/// storing. Runs until the collector queue closes.
pub struct Ingest {
    /// Parsers.
    pub normalizer: Normalizer,
    /// Context.
    pub enricher: crate::context::Enricher,
    /// Single-event rules (routing only; holds no windows).
    pub engine: Engine,
    /// Topic names.
    pub topics: Topics,
    /// Producer.
    pub producer: Arc<KafkaProducer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Log-source accounting.
    pub sources: Arc<crate::sources::Sources>,
}

impl Ingest {
    /// Runs until the queue closes.
    pub fn run(
        mut self,
        mut queue: MemorySubscriber<RawRecord>,
        rt: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
    ) {
        let _rt = rt.enter();
        let mut seq = Sequencer::new();
        let failures = self.metrics.counter(
            "vigil_bus_publish_failures_total",
            "Kafka publish attempts that failed (the batch is retried).",
            &[],
        );
        let mut last_tick = Instant::now();
        loop {
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                let _ = self.enricher.tick(Utc::now(), false);
            }
            let first = match queue.next_within(Duration::from_secs(1)) {
                Queued::Item(r) => r,
                Queued::Idle => continue,
                Queued::Closed => break,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_next() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
            let out = self.process(batch, &mut seq);
            for (topic, records) in [
                (&self.topics.events, &out.events),
                (&self.topics.dead_letters, &out.dead_letters),
                (&self.topics.matches, &out.matches),
                (&self.topics.detections, &out.detections),
            ] {
                if !send_all(&rt, &self.producer, topic, records, &stop, &failures) {
                    return;
                }
            }
            // Counted once published: a metric never runs ahead of what the next stage can see.
            self.sources.record_batch(out.per_source);
            for (source, n) in out.events_by_source {
                self.metrics
                    .counter(
                        "vigil_parse_events_total",
                        "Records that became events.",
                        &[("source", source)],
                    )
                    .add(n);
            }
            for (source, reason) in out.dead_reasons {
                self.metrics
                    .counter(
                        "vigil_parse_dead_letters_total",
                        "Records kept as dead letters, by reason.",
                        &[("source", source), ("reason", &reason)],
                    )
                    .inc();
            }
        }
    }

    fn process(&mut self, batch: Vec<RawRecord>, seq: &mut Sequencer) -> IngestOut {
        let mut out = IngestOut::default();
        let mut dets: Vec<Detection> = Vec::new();
        let mut routed = Vec::new();
        for rec in batch {
            let source = crate::pipeline::source_label(&rec);
            let key = rec.observer_id.as_bytes().to_vec();
            match crate::pipeline::normalize_record(&self.normalizer, rec, &mut out.per_source) {
                Ok(mut event) => {
                    event.sequence = Some(seq.next_sequence());
                    self.enricher.enrich(&mut event);
                    let event = Arc::new(event);
                    dets.clear();
                    routed.clear();
                    self.engine.route(&event, &mut dets, &mut routed);
                    if let Ok(json) = serde_json::to_vec(&*event) {
                        out.events.push((key, json));
                    }
                    for r in routed.drain(..) {
                        let k = r.key().into_bytes();
                        let rec = MatchRecord {
                            routed: r,
                            event: (*event).clone(),
                        };
                        if let Ok(json) = serde_json::to_vec(&rec) {
                            out.matches.push((k, json));
                        }
                    }
                    for d in &dets {
                        if let Ok(json) = serde_json::to_vec(d) {
                            out.detections
                                .push((d.index_value.as_bytes().to_vec(), json));
                        }
                    }
                    match out.events_by_source.iter_mut().find(|(x, _)| *x == source) {
                        Some((_, n)) => *n += 1,
                        None => out.events_by_source.push((source, 1)),
                    }
                }
                Err(d) => {
                    if let Ok(json) = serde_json::to_vec(&*d) {
                        out.dead_letters.push((key, json));
                    }
                    out.dead_reasons.push((source, d.reason));
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct IngestOut {
    events: Vec<(Vec<u8>, Vec<u8>)>,
    dead_letters: Vec<(Vec<u8>, Vec<u8>)>,
    matches: Vec<(Vec<u8>, Vec<u8>)>,
    detections: Vec<(Vec<u8>, Vec<u8>)>,
    per_source: std::collections::HashMap<String, crate::sources::SourceBatch>,
    events_by_source: Vec<(&'static str, u64)>,
    dead_reasons: Vec<(&'static str, String)>,
}

/// What the stage-2 threads of one process share.
#[derive(Clone)]
pub struct Stage {
    /// Kafka client settings.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: Topics,
    /// Consumer groups are `<prefix>-correlate`, `<prefix>-offenses`, `<prefix>-store`.
    pub group_prefix: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The runtime the Kafka and ClickHouse clients run on.
    pub rt: tokio::runtime::Handle,
    /// Set at shutdown.
    pub stop: Arc<AtomicBool>,
}

impl Stage {
    /// The consumer group of stage `name`.
    fn group(&self, name: &str) -> String {
        format!("{}-{name}", self.group_prefix)
    }
}

/// The highest offset per (topic, partition) of a batch: what to commit once it is done.
fn high_water(batch: &[Received]) -> Vec<(String, i32, i64)> {
    let mut hw: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in batch {
        let e = hw.entry((r.topic.clone(), r.partition)).or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    hw.into_iter().map(|((t, p), o)| (t, p, o)).collect()
}

/// Stage 2: the correlation windows of this process's partitions of the matches topic.
/// Detections go to the detections topic, chained matches back to the matches topic; offsets
/// are committed once both are acknowledged. Runs until `stop`.
pub fn run_correlate(
    stage: &Stage,
    rules: Arc<RuleSet>,
    limits: EngineLimits,
) -> anyhow::Result<()> {
    let Stage {
        kafka,
        topics,
        metrics,
        rt,
        stop,
        ..
    } = stage;
    let _rt = rt.enter();
    let consumer = KafkaConsumer::new(kafka, &stage.group("correlate"), &[&topics.matches])?;
    let producer = KafkaProducer::new(kafka)?;
    let mut engine = Engine::new(rules, limits);
    let failures = metrics.counter(
        "vigil_bus_publish_failures_total",
        "Kafka publish attempts that failed (the batch is retried).",
        &[],
    );
    let bad = metrics.counter(
        "vigil_bus_bad_records_total",
        "Records on a Vigil topic that could not be read (skipped, logged).",
        &[("topic", "matches")],
    );
    let mut last_tick = Instant::now();
    let assigned = metrics.gauge(
        "vigil_bus_assigned_partitions",
        "Partitions this process owns, by stage.",
        &[("stage", "correlate")],
    );
    while !stop.load(Ordering::SeqCst) {
        for ev in consumer.take_rebalance_events() {
            tracing::info!(?ev, "matches partitions rebalanced");
        }
        assigned.set(consumer.assignment().map_or(0, |a| a.len() as u64));
        let batch = rt.block_on(consumer.poll_batch(BATCH, POLL_WAIT))?;
        let mut out: Vec<Detection> = Vec::new();
        let mut reroute = Vec::new();
        // Chained matches, with the event that fired the inner correlation.
        let mut chained: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for r in &batch {
            match serde_json::from_slice::<MatchRecord>(&r.payload) {
                Ok(m) => {
                    let event = Arc::new(m.event);
                    engine.feed_routed(&m.routed, &event, &mut out, &mut reroute);
                    for routed in reroute.drain(..) {
                        let key = routed.key().into_bytes();
                        let rec = MatchRecord {
                            routed,
                            event: (*event).clone(),
                        };
                        if let Ok(json) = serde_json::to_vec(&rec) {
                            chained.push((key, json));
                        }
                    }
                }
                Err(e) => {
                    bad.inc();
                    tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "unreadable match record skipped");
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            engine.advance(Utc::now(), &mut out);
        }
        let dets: Vec<(Vec<u8>, Vec<u8>)> = out
            .iter()
            .filter_map(|d| {
                let json = serde_json::to_vec(d).ok()?;
                Some((d.index_value.as_bytes().to_vec(), json))
            })
            .collect();
        if !send_all(rt, &producer, &topics.detections, &dets, stop, &failures)
            || !send_all(rt, &producer, &topics.matches, &chained, stop, &failures)
        {
            break;
        }
        if !batch.is_empty() {
            consumer.commit(&high_water(&batch))?;
        }
        let stats = engine.stats();
        metrics
            .gauge(
                "vigil_correlate_keys",
                "Correlation keys held in windows.",
                &[],
            )
            .set(stats.keys_live);
    }
    Ok(())
}

/// The offense stage: detections (keyed by index value, so one index always reaches the same
/// owner) joined into offenses with the embedded bookkeeping (a local SQLite working copy), and
/// every changed offense written to ClickHouse as a new version. Runs until `stop`.
pub fn run_offenses(
    stage: &Stage,
    config: &crate::config::Config,
    rules: &RuleSet,
    ch: Arc<ClickHouseStore>,
) -> anyhow::Result<()> {
    let Stage {
        kafka,
        topics,
        metrics,
        rt,
        stop,
        ..
    } = stage;
    let _rt = rt.enter();
    let consumer = KafkaConsumer::new(kafka, &stage.group("offenses"), &[&topics.detections])?;
    let mut local = Store::open(&config.data_dir.join("offenses-local.db"))?;
    let zones = crate::context::Zones::new(&config.context.networks);
    let limits = OffenseLimits::from_config(&config.offenses);
    // Offense actions (add_to_set) are not applied in this stage yet (ARCHITECTURE.md).
    let meta = RuleMeta::all(rules);
    let no_meta = RuleMeta::default();
    let mut seen = SeenEvents::new(1 << 18);
    let mut version: u64 = 0;
    let created = metrics.counter("vigil_offenses_created_total", "Offenses opened.", &[]);
    let bad = metrics.counter(
        "vigil_bus_bad_records_total",
        "Records on a Vigil topic that could not be read (skipped, logged).",
        &[("topic", "detections")],
    );
    // Detections of one index come from several correlate nodes, each at its own pace. They
    // are held for `reorder` and applied in event-time order (then rule order), the order one
    // embedded engine produces them in, so which rule opens an offense (and so its id) does
    // not depend on which node ran ahead.
    let reorder = Duration::from_millis(config.bus.offense_reorder_ms);
    let rule_order: std::collections::HashMap<&str, usize> = rules
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut held: std::collections::VecDeque<(Instant, Received)> =
        std::collections::VecDeque::new();
    let assigned = metrics.gauge(
        "vigil_bus_assigned_partitions",
        "Partitions this process owns, by stage.",
        &[("stage", "offenses")],
    );
    while !stop.load(Ordering::SeqCst) {
        assigned.set(consumer.assignment().map_or(0, |a| a.len() as u64));
        let got = rt.block_on(consumer.poll_batch(BATCH, POLL_WAIT))?;
        let at = Instant::now();
        held.extend(got.into_iter().map(|r| (at, r)));
        let due = held
            .iter()
            .take_while(|(t, _)| t.elapsed() >= reorder)
            .count();
        if due == 0 {
            continue;
        }
        // Records of a partition are received in offset order, so releasing by receipt time
        // releases each partition's offsets in order: committing their high water is safe.
        let batch: Vec<Received> = held.drain(..due).map(|(_, r)| r).collect();
        let mut dets: Vec<Detection> = batch
            .iter()
            .filter_map(|r| match serde_json::from_slice::<Detection>(&r.payload) {
                Ok(d) => Some(d),
                Err(e) => {
                    bad.inc();
                    tracing::warn!(error = %e, "unreadable detection record skipped");
                    None
                }
            })
            .collect();
        dets.sort_by_key(|d| {
            (
                d.last_seen,
                rule_order
                    .get(d.rule.as_str())
                    .copied()
                    .unwrap_or(usize::MAX),
            )
        });
        let now = Utc::now();
        // (offense, first new event position) per changed offense.
        let changed = local.in_transaction(|store| {
            let mut changed: Vec<(crate::store::Offense, u64, bool)> = Vec::new();
            for d in &dets {
                let factor = d
                    .events
                    .iter()
                    .filter_map(|e| zones.asset_factor(e))
                    .max_by_key(|f| f.criticality);
                let before = store
                    .find_open_offense(&d.index_field, &d.index_value)?
                    .map_or(0, |o| o.stored_events);
                let (o, change) = apply_detection(
                    store,
                    d,
                    factor.as_ref(),
                    meta.get(&d.rule).unwrap_or(&no_meta),
                    &limits,
                    &mut seen,
                    now,
                )?;
                let new = change == crate::correlate::OffenseChange::Created;
                match changed.iter_mut().find(|(x, _, _)| x.id == o.id) {
                    Some(c) => c.0 = o,
                    None => changed.push((o, before, new)),
                }
            }
            Ok(changed)
        });
        let changed = match changed {
            Ok(c) => {
                seen.commit();
                c
            }
            Err(e) => {
                seen.rollback();
                return Err(e.into());
            }
        };
        // Mirror to ClickHouse, retrying until stored; only then commit the offsets.
        let mut rows = Vec::new();
        let mut rule_rows = Vec::new();
        let mut event_rows = Vec::new();
        for (o, first, new) in &changed {
            version = version.max(u64::try_from(now.timestamp_micros()).unwrap_or(0)) + 1;
            for r in local.offense_rules(&o.id)? {
                rule_rows.push((o.id.clone(), r, version));
            }
            let events = local.offense_events_from(&o.id, *first, u64::MAX)?;
            event_rows.push((o.id.clone(), *first, events));
            rows.push((o.clone(), version));
            if *new {
                created.inc();
            }
        }
        // Parts first, the offense row last: once an offense version is visible, its events
        // and rules are too.
        let stored = retry("writing offenses to ClickHouse", stop, || {
            rt.block_on(async {
                for (id, first, events) in &event_rows {
                    let events: Vec<Arc<vigil_parsers::Event>> =
                        events.iter().cloned().map(Arc::new).collect();
                    ch.add_offense_events(id, *first, &events).await?;
                }
                ch.put_offense_rules(&rule_rows).await?;
                ch.put_offenses(&rows).await
            })
        });
        if stored.is_none() {
            return Ok(());
        }
        consumer.commit(&high_water(&batch))?;
    }
    Ok(())
}

/// The store stage: events and dead letters into ClickHouse in batches (by size or
/// `batch_max_wait_ms`), each batch identified by its topic, partition and offset range so a
/// retried insert does not double rows. Offsets are committed after the insert. Runs until
/// `stop`.
pub fn run_store(stage: &Stage, ch: Arc<ClickHouseStore>) -> anyhow::Result<()> {
    let Stage {
        kafka,
        topics,
        metrics,
        rt,
        stop,
        ..
    } = stage;
    let _rt = rt.enter();
    let consumer = KafkaConsumer::new(
        kafka,
        &stage.group("store"),
        &[&topics.events, &topics.dead_letters],
    )?;
    let stored = metrics.counter(
        "vigil_store_events_total",
        "Events written to the store.",
        &[],
    );
    let bad = metrics.counter(
        "vigil_bus_bad_records_total",
        "Records on a Vigil topic that could not be read (skipped, logged).",
        &[("topic", "events")],
    );
    let max_wait = ch.batch_max_wait();
    let mut pending: Vec<Received> = Vec::new();
    let mut since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let got = rt.block_on(consumer.poll_batch(BATCH * 4, POLL_WAIT))?;
        if pending.is_empty() {
            since = Instant::now();
        }
        pending.extend(got);
        if pending.is_empty() || (pending.len() < BATCH * 8 && since.elapsed() < max_wait) {
            continue;
        }
        // One insert per (topic, partition) run, named by its offsets.
        let mut by_part: BTreeMap<(String, i32), Vec<&Received>> = BTreeMap::new();
        for r in &pending {
            by_part
                .entry((r.topic.clone(), r.partition))
                .or_default()
                .push(r);
        }
        let inserted = retry("inserting a batch into ClickHouse", stop, || {
            rt.block_on(async {
                let mut n = 0u64;
                for ((topic, partition), recs) in &by_part {
                    let first = recs.first().map_or(0, |r| r.offset);
                    let last = recs.last().map_or(0, |r| r.offset);
                    let batch_id = format!("{topic}/{partition}/{first}-{last}");
                    if *topic == topics.events {
                        let events: Vec<vigil_parsers::Event> = recs
                            .iter()
                            .filter_map(|r| serde_json::from_slice(&r.payload).ok())
                            .collect();
                        n += ch.insert_events(&batch_id, &events).await?;
                    } else {
                        let dead: Vec<DeadLetter> = recs
                            .iter()
                            .filter_map(|r| serde_json::from_slice(&r.payload).ok())
                            .collect();
                        ch.insert_dead_letters(&batch_id, &dead).await?;
                    }
                }
                Ok::<u64, crate::store::clickhouse::ChError>(n)
            })
        });
        match inserted {
            Some(n) => stored.add(n),
            None => return Ok(()),
        }
        let unreadable = pending
            .iter()
            .filter(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).is_err())
            .count();
        bad.add(unreadable as u64);
        consumer.commit(&high_water(&pending))?;
        pending.clear();
    }
    Ok(())
}
