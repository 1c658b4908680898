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
//! lands: every event and dead-letter row is named by its place in the topic (partition, offset
//! of its packed record, index in it), which the ClickHouse tables deduplicate on; outputs of
//! stage 2 carry their origin and are applied once ([`wire::Marks`]); offense rows are
//! versioned, and an event is counted once per offense by its `event.sequence`.

pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use vigil_correlate::{Detection, Engine, EngineLimits, RuleSet};
use vigil_parsers::normalize::Normalizer;

use crate::bus::kafka::{
    partition_for, KafkaConfig, KafkaConsumer, KafkaProducer, RebalanceEvent, Received, TopicSpec,
};
use crate::bus::memory::MemorySubscriber;
use crate::bus::RawRecord;
use crate::bus::{Received as Queued, Subscriber};
use crate::correlate::{apply_detections, OffenseLimits, RuleMeta, SeenEvents};
use crate::store::clickhouse::{Checkpoint, ClickHouseStore};
use crate::store::{DeadLetter, Store};
use crate::telemetry::Metrics;
use wire::{
    pack, unpack, CorrelateState, DetectionRecord, Marks, MatchRecord, Origin, Topics, WireFormat,
};

/// Records taken from a topic in one batch at most.
const BATCH: usize = 1024;
/// Records taken from the collector queue in one batch at most (packed into a few Kafka
/// records per partition). 16,384 rather than 4,096: 13-17 % more events a second flat out
/// through Kafka and ClickHouse, 2-9 % less CPU an event (BENCHMARKS.md, "End to end,
/// 2026-12-01 later").
const INGEST_BATCH: usize = 16_384;
/// The store stage inserts once it holds this many bytes of records (or waited
/// `store.clickhouse.batch_max_wait_ms`).
const STORE_BATCH_BYTES: usize = 16 * 1024 * 1024;
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
    pub normalizer: Arc<Normalizer>,
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
    /// Partitions of the topics: items are packed per partition.
    pub partitions: i32,
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
        let mut rule_matches =
            crate::pipeline::RuleMatchExport::new(&self.metrics, self.engine.rules());
        loop {
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                let _ = self.enricher.tick(Utc::now(), false);
                // Single-event rules match here; correlations count on the correlate stage.
                rule_matches.export(&self.engine.stats());
            }
            let first = match queue.next_within(Duration::from_secs(1)) {
                Queued::Item(r) => r,
                Queued::Idle => continue,
                Queued::Closed => break,
            };
            let mut batch = vec![first];
            while batch.len() < INGEST_BATCH {
                match queue.try_next() {
                    Some(r) => batch.push(r),
                    None => break,
                }
            }
            let mut out = self.process(batch, &mut seq);
            let n = self.partitions;
            let wire = self.topics.wire;
            for (topic, records) in [
                (
                    &self.topics.events,
                    pack(std::mem::take(&mut out.events), n, wire),
                ),
                (
                    &self.topics.dead_letters,
                    pack(std::mem::take(&mut out.dead_letters), n, wire),
                ),
                (
                    &self.topics.matches,
                    pack(std::mem::take(&mut out.matches), n, wire),
                ),
                (
                    &self.topics.detections,
                    pack(std::mem::take(&mut out.detections), n, wire),
                ),
            ] {
                if !send_all(&rt, &self.producer, topic, &records, &stop, &failures) {
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
        let wire = self.topics.wire;
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
                    let encoded = wire.encode(&*event);
                    for r in routed.drain(..) {
                        let k = r.key().into_bytes();
                        let item = match (wire, &encoded) {
                            // The event is encoded once, not cloned and encoded per match.
                            (WireFormat::Binary, Some(bytes)) => {
                                Some(wire::binary_match(&r, None, bytes))
                            }
                            _ => wire.encode(&MatchRecord {
                                routed: r,
                                event: Arc::clone(&event),
                                origin: None,
                            }),
                        };
                        if let Some(item) = item {
                            out.matches.push((k, item));
                        }
                    }
                    if let Some(item) = encoded {
                        out.events.push((key, item));
                    }
                    for d in dets.drain(..) {
                        let key = d.index_value.as_bytes().to_vec();
                        let rec = DetectionRecord {
                            detection: d,
                            origin: None,
                        };
                        if let Some(item) = wire.encode(&rec) {
                            out.detections.push((key, item));
                        }
                    }
                    match out.events_by_source.iter_mut().find(|(x, _)| *x == source) {
                        Some((_, n)) => *n += 1,
                        None => out.events_by_source.push((source, 1)),
                    }
                }
                Err(d) => {
                    if let Some(item) = wire.encode(&*d) {
                        out.dead_letters.push((key, item));
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
    /// Partitions of the topics (`bus.partitions`): how keys map to partitions.
    pub partitions: i32,
    /// How often correlate nodes save their windows (`bus.checkpoint_secs`).
    pub checkpoint_every: Duration,
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

/// The metrics of a stateful stage-2 consumer.
struct StageMetrics {
    /// Records of its topic that could not be read.
    bad: crate::telemetry::Counter,
    /// Records (or items) skipped because its state already held them.
    replayed: crate::telemetry::Counter,
    /// Partitions taken over with their saved state.
    restored: crate::telemetry::Counter,
    /// Partitions owned now.
    assigned: crate::telemetry::Gauge,
}

impl StageMetrics {
    fn new(metrics: &Metrics, stage: &'static str, topic: &'static str) -> StageMetrics {
        StageMetrics {
            bad: metrics.counter(
                "vigil_bus_bad_records_total",
                "Records on a Vigil topic that could not be read (skipped, logged).",
                &[("topic", topic)],
            ),
            replayed: metrics.counter(
                "vigil_cluster_replayed_total",
                "Records a stage-2 node skipped because its state already held them (a checkpoint, or an earlier copy of the same output), by stage.",
                &[("stage", stage)],
            ),
            restored: metrics.counter(
                "vigil_cluster_partitions_restored_total",
                "Partitions a stage-2 node took over with their saved state, by stage.",
                &[("stage", stage)],
            ),
            assigned: metrics.gauge(
                "vigil_bus_assigned_partitions",
                "Partitions this process owns, by stage.",
                &[("stage", stage)],
            ),
        }
    }
}

/// What a correlate node keeps per partition of the matches topic it owns.
#[derive(Debug, Default)]
struct OwnedMatches {
    /// Last offset applied (-1: none yet).
    applied: i64,
    /// Last offset in a saved checkpoint.
    saved: i64,
    /// Chained matches applied, per input partition.
    marks: Marks,
}

/// The partition (of a topic with `partitions`) a record with `key` goes to.
fn partition_of(key: &str, partitions: i32) -> i32 {
    partition_for(key.as_bytes(), partitions)
}

/// The partitions of `topic` this consumer owns now.
fn owned_partitions(consumer: &KafkaConsumer, topic: &str) -> anyhow::Result<HashSet<i32>> {
    Ok(consumer
        .assignment()?
        .into_iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, p)| p)
        .collect())
}

/// The partitions of `topic` revoked since the last call.
fn revoked_partitions(consumer: &KafkaConsumer, topic: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for ev in consumer.take_rebalance_events() {
        tracing::info!(?ev, group = consumer.group(), "partitions rebalanced");
        if let RebalanceEvent::Revoked(parts) = ev {
            out.extend(
                parts
                    .into_iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| p),
            );
        }
    }
    out
}

/// Stage 2: the correlation windows of this process's partitions of the matches topic.
///
/// Detections go to the detections topic, chained matches back to the matches topic, each
/// tagged with its [`Origin`]. Every `bus.checkpoint_secs` the windows of each owned partition
/// are saved to ClickHouse with the last offset they include, and only then is that offset
/// committed. A node that takes a partition over (a rebalance, or a restart after a crash)
/// restores its checkpoint and skips what the checkpoint already holds; what it processes
/// again produces the same outputs under the same origins, which the consumers drop. Runs
/// until `stop`, then saves a last checkpoint.
pub fn run_correlate(
    stage: &Stage,
    rules: Arc<RuleSet>,
    limits: EngineLimits,
    ch: Arc<ClickHouseStore>,
) -> anyhow::Result<()> {
    let Stage {
        kafka,
        topics,
        metrics,
        rt,
        stop,
        partitions,
        checkpoint_every,
        ..
    } = stage;
    let _rt = rt.enter();
    let group = stage.group("correlate");
    let consumer = KafkaConsumer::new(kafka, &group, &[&topics.matches])?;
    let producer = KafkaProducer::new(kafka)?;
    let mut engine = Engine::new(rules, limits);
    let failures = metrics.counter(
        "vigil_bus_publish_failures_total",
        "Kafka publish attempts that failed (the batch is retried).",
        &[],
    );
    let StageMetrics {
        bad,
        replayed,
        restored,
        assigned,
    } = StageMetrics::new(metrics, "correlate", "matches");
    let sent_detections = metrics.counter(
        "vigil_cluster_detections_total",
        "Detections a correlate node published.",
        &[],
    );
    let mut owned: HashMap<i32, OwnedMatches> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    // Correlations count their matches here; single-event rules on the ingest stage.
    let mut rule_matches = crate::pipeline::RuleMatchExport::new(metrics, engine.rules());
    let in_partition = |p: i32| move |k: &str| partition_of(k, *partitions) == p;
    while !stop.load(Ordering::SeqCst) {
        let batch = rt.block_on(consumer.poll_batch(BATCH, POLL_WAIT))?;
        for p in revoked_partitions(&consumer, &topics.matches) {
            if owned.remove(&p).is_some() {
                engine.remove_keys(in_partition(p));
            }
        }
        let mine = owned_partitions(&consumer, &topics.matches)?;
        assigned.set(mine.len() as u64);
        let mut out: Vec<Detection> = Vec::new();
        let mut out_origins: Vec<Option<Origin>> = Vec::new();
        let mut reroute = Vec::new();
        // Chained matches, with the event that fired the inner correlation.
        let mut chained: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for r in &batch {
            if !mine.contains(&r.partition) {
                // Revoked while this batch was fetched: the new owner processes it.
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = owned.entry(r.partition) {
                let Some(cp) = retry("reading a correlation checkpoint", stop, || {
                    rt.block_on(ch.checkpoint(&group, &topics.matches, r.partition))
                }) else {
                    return Ok(());
                };
                engine.remove_keys(in_partition(r.partition));
                let mut own = OwnedMatches {
                    applied: -1,
                    saved: -1,
                    marks: Marks::default(),
                };
                if let Some(cp) = cp {
                    match CorrelateState::from_bytes(&cp.state)
                        .map_err(|e| e.to_string())
                        .and_then(|s| engine.restore(s.windows).map(|rep| (rep, s.marks)))
                    {
                        Ok((report, marks)) => {
                            tracing::info!(
                                partition = r.partition,
                                offset = cp.offset,
                                keys = report.keys,
                                "matches partition restored from its checkpoint"
                            );
                            own.applied = cp.offset;
                            own.saved = cp.offset;
                            own.marks = marks;
                            restored.inc();
                        }
                        Err(e) => {
                            tracing::error!(partition = r.partition, error = %e, "unreadable correlation checkpoint: the partition's windows start empty");
                        }
                    }
                }
                slot.insert(own);
            }
            let Some(own) = owned.get_mut(&r.partition) else {
                continue;
            };
            if r.offset <= own.applied {
                replayed.inc();
                continue;
            }
            own.applied = r.offset;
            let items = match unpack::<MatchRecord>(&r.payload) {
                Ok(items) => items,
                Err(e) => {
                    bad.inc();
                    tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "unreadable match record skipped");
                    continue;
                }
            };
            // Outputs of this record, numbered per topic: their origins.
            let (mut det_n, mut match_n) = (0u32, 0u32);
            let origin = |n: &mut u32| {
                let o = Origin {
                    partition: r.partition,
                    offset: r.offset,
                    n: *n,
                };
                *n = n.saturating_add(1);
                Some(o)
            };
            for m in items {
                if let Some(o) = m.origin {
                    if !own.marks.fresh(o) {
                        replayed.inc();
                        continue;
                    }
                }
                let event = m.event;
                let before = out.len();
                engine.feed_routed(&m.routed, &event, &mut out, &mut reroute);
                for _ in before..out.len() {
                    out_origins.push(origin(&mut det_n));
                }
                for routed in reroute.drain(..) {
                    let key = routed.key().into_bytes();
                    let rec = MatchRecord {
                        routed,
                        event: Arc::clone(&event),
                        origin: origin(&mut match_n),
                    };
                    if let Some(item) = topics.wire.encode(&rec) {
                        chained.push((key, item));
                    }
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            // Deadlines passed by the clock belong to no input record: no origin.
            engine.advance(Utc::now(), &mut out);
            out_origins.resize(out.len(), None);
        }
        let dets: Vec<(Vec<u8>, Vec<u8>)> = out
            .into_iter()
            .zip(out_origins)
            .filter_map(|(detection, origin)| {
                let key = detection.index_value.as_bytes().to_vec();
                let item = topics.wire.encode(&DetectionRecord { detection, origin })?;
                Some((key, item))
            })
            .collect();
        let published = dets.len() as u64;
        let dets = pack(dets, *partitions, topics.wire);
        let chained = pack(chained, *partitions, topics.wire);
        if !send_all(rt, &producer, &topics.detections, &dets, stop, &failures)
            || !send_all(rt, &producer, &topics.matches, &chained, stop, &failures)
        {
            break;
        }
        sent_detections.add(published);
        if last_checkpoint.elapsed() >= *checkpoint_every {
            last_checkpoint = Instant::now();
            if !checkpoint_matches(stage, &group, &ch, &consumer, &engine, &mut owned)? {
                return Ok(());
            }
        }
        let stats = engine.stats();
        rule_matches.export(&stats);
        metrics
            .gauge(
                "vigil_correlate_keys",
                "Correlation keys held in windows.",
                &[],
            )
            .set(stats.keys_live);
    }
    // Stopping: save what was applied (one attempt; the next owner replays the rest).
    checkpoint_matches(stage, &group, &ch, &consumer, &engine, &mut owned)?;
    Ok(())
}

/// Saves the windows of every owned partition that changed since its last checkpoint, then
/// commits the offsets they include. False if `stop` interrupted the save.
fn checkpoint_matches(
    stage: &Stage,
    group: &str,
    ch: &ClickHouseStore,
    consumer: &KafkaConsumer,
    engine: &Engine,
    owned: &mut HashMap<i32, OwnedMatches>,
) -> anyhow::Result<bool> {
    let mine = owned_partitions(consumer, &stage.topics.matches)?;
    let mut rows = Vec::new();
    for (p, own) in owned.iter() {
        if own.applied <= own.saved || !mine.contains(p) {
            continue;
        }
        let windows = engine.snapshot(|k| partition_of(k, stage.partitions) == *p);
        let state = CorrelateState {
            windows,
            marks: own.marks.clone(),
        };
        // `bus.wire = "json"` (set while upgrading from builds before the compressed form)
        // writes the uncompressed binary body, which those builds read.
        let state = match stage.topics.wire {
            WireFormat::Binary => state.to_compressed(),
            WireFormat::Json => state.to_bytes(),
        };
        rows.push(Checkpoint {
            group: group.to_owned(),
            topic: stage.topics.matches.clone(),
            partition: *p,
            offset: own.applied,
            state,
        });
    }
    if rows.is_empty() {
        return Ok(true);
    }
    let saved = retry("saving correlation checkpoints", &stage.stop, || {
        stage.rt.block_on(ch.put_checkpoints(&rows))
    });
    if saved.is_none() {
        return Ok(false);
    }
    let mut done = Vec::new();
    for row in &rows {
        if let Some(own) = owned.get_mut(&row.partition) {
            own.saved = row.offset;
        }
        done.push((row.topic.clone(), row.partition, row.offset));
    }
    stage
        .metrics
        .counter(
            "vigil_cluster_checkpoints_total",
            "Partition checkpoints saved, by stage.",
            &[("stage", "correlate")],
        )
        .add(rows.len() as u64);
    consumer.commit(&done)?;
    Ok(true)
}

/// The offense stage: detections (keyed by index value, so one index always reaches the same
/// owner) joined into offenses with the embedded bookkeeping (a local SQLite working copy), and
/// every changed offense written to ClickHouse as a new version. Runs until `stop`.
///
/// Exactly once per detection: each applied detection's [`Origin`] advances its partition's
/// [`Marks`] in the same transaction as the offenses it changed, and the marks travel with
/// every offense version written to ClickHouse (one `INSERT`). Offenses changed locally are
/// listed until ClickHouse has them, so a crash between the two is repaired at the next start.
/// A node that takes a partition over replaces its working copy of that partition's open
/// offenses (and marks) with ClickHouse's.
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
    // Offense actions (add_to_set, automatic blocking) are not applied in this stage yet
    // (ARCHITECTURE.md); offense webhooks are.
    let webhooks = config.response.webhooks.as_slice();
    let meta = RuleMeta::all(rules);
    let no_meta = RuleMeta::default();
    let mut seen = SeenEvents::new(1 << 18);
    let mut version: u64 = 0;
    let created = metrics.counter("vigil_offenses_created_total", "Offenses opened.", &[]);
    let updated = metrics.counter(
        "vigil_offenses_updated_total",
        "Detections that joined an open offense.",
        &[],
    );
    let StageMetrics {
        bad,
        replayed,
        restored,
        assigned,
    } = StageMetrics::new(metrics, "offenses", "detections");
    // Detections of one index come from several correlate nodes, each at its own pace. They
    // are held for `reorder` and applied in event-time order (then rule order), the order one
    // embedded engine produces them in, so which rule opens an offense (and so its id) does
    // not depend on which node ran ahead.
    let reorder = Duration::from_millis(config.bus.offense_reorder_ms);
    let rule_order: HashMap<&str, usize> = rules
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut held: std::collections::VecDeque<(Instant, Received)> =
        std::collections::VecDeque::new();
    let mut owned: HashMap<i32, Marks> = HashMap::new();
    // Open offenses held between batches, as in embedded mode (`offenses.held_open`): under
    // attack most detections join an offense already open, which is then read once and
    // written once per batch instead of per detection.
    let mut book = crate::correlate::OffenseBook::new(config.offenses.held_open);
    // What a crash left written locally but not in ClickHouse.
    if !mirror_offenses(stage, &ch, &local, &mut version, &Recent::new())? {
        return Ok(());
    }
    while !stop.load(Ordering::SeqCst) {
        let got = rt.block_on(consumer.poll_batch(BATCH, POLL_WAIT))?;
        for p in revoked_partitions(&consumer, &topics.detections) {
            owned.remove(&p);
        }
        let mine = owned_partitions(&consumer, &topics.detections)?;
        assigned.set(mine.len() as u64);
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
        // Records of partitions revoked meanwhile are the new owner's.
        let batch: Vec<Received> = held
            .drain(..due)
            .map(|(_, r)| r)
            .filter(|r| mine.contains(&r.partition))
            .collect();
        for p in batch.iter().map(|r| r.partition).collect::<HashSet<i32>>() {
            if owned.contains_key(&p) {
                continue;
            }
            let Some(marks) = take_over_offenses(stage, &ch, &mut local, p)? else {
                return Ok(());
            };
            // The working copy's offenses of that partition were replaced on this connection,
            // which the book cannot see.
            book.clear();
            restored.inc();
            owned.insert(p, marks);
        }
        let mut dets: Vec<(i32, Detection)> = Vec::with_capacity(batch.len());
        for r in &batch {
            let items = match unpack::<DetectionRecord>(&r.payload) {
                Ok(items) => items,
                Err(e) => {
                    bad.inc();
                    tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "unreadable detection record skipped");
                    continue;
                }
            };
            for rec in items {
                let fresh = match (rec.origin, owned.get_mut(&r.partition)) {
                    (Some(origin), Some(marks)) => marks.fresh(origin),
                    _ => true,
                };
                if fresh {
                    dets.push((r.partition, rec.detection));
                } else {
                    replayed.inc();
                }
            }
        }
        dets.sort_by_key(|(_, d)| {
            (
                d.last_seen,
                rule_order.get(&*d.rule).copied().unwrap_or(usize::MAX),
            )
        });
        let touched: HashSet<i32> = dets.iter().map(|(p, _)| *p).collect();
        let now = Utc::now();
        // The events this batch stores for each offense, handed to the mirror so that it
        // does not read them back from the working copy.
        let mut recent = Recent::new();
        let applied = local.in_transaction(|store| {
            book.begin(store)?;
            let (mut opened, mut grown) = (0u64, 0u64);
            // Indexes whose open offense this batch has listed as unmirrored already.
            let mut listed: HashSet<(&str, &str)> = HashSet::new();
            let factors: Vec<Option<crate::context::AssetFactor>> = dets
                .iter()
                .map(|(_, d)| zones.events_factor(&d.events))
                .collect();
            // Runs of one index's detections are applied at once (as in embedded mode),
            // unless each change is announced by a webhook or a rule suppresses.
            let groups = crate::correlate::group_detections(
                dets.iter().map(|(_, d)| d),
                |d| crate::correlate::Merge::of(meta.get(&*d.rule), !webhooks.is_empty()),
                limits.inactive_after,
            );
            let member = |j: usize| {
                dets.get(j).map(|(_, d)| {
                    (
                        d,
                        meta.get(&*d.rule).unwrap_or(&no_meta),
                        factors.get(j).and_then(Option::as_ref),
                        j,
                    )
                })
            };
            for group in &groups {
                let Some((&i, rest)) = group.split_first() else {
                    continue;
                };
                let Some(first) = member(i) else { continue };
                let rest: Vec<crate::correlate::Member<'_>> =
                    rest.iter().filter_map(|&j| member(j)).collect();
                let d = first.0;
                // Where the offense's unmirrored events start: its stored events before this
                // batch touched it (later detections of the batch keep that lowest position).
                let index = (&*d.index_field, d.index_value.as_str());
                let before = if listed.insert(index) {
                    match book.peek(index.0, index.1) {
                        Some(o) => Some(o.stored_events),
                        None => Some(
                            store
                                .find_open_offense(index.0, index.1)?
                                .map_or(0, |o| o.stored_events),
                        ),
                    }
                } else {
                    None
                };
                let with_body = !webhooks.is_empty();
                let mut closed_now: Option<(String, u64)> = None;
                let (o, change) = apply_detections(
                    store,
                    &mut book,
                    (first, &rest),
                    &limits,
                    &mut seen,
                    now,
                    |o, change, kept| {
                        recent.add(&o.id, kept);
                        closed_now = kept.closed.map(|(id, n)| (id.to_owned(), n));
                        let body = with_body.then(|| serde_json::to_value(o).unwrap_or_default());
                        ((o.id.clone(), o.event_count, body), change)
                    },
                )?;
                let (id, event_count, body) = o;
                // An offense this run closed as inactive changed too: ClickHouse gets its
                // closed version (no new events).
                if let Some((closed, stored)) = closed_now.take() {
                    store.note_unmirrored(&closed, stored)?;
                }
                grown += rest.len() as u64;
                let first = if change == crate::correlate::OffenseChange::Created {
                    opened += 1;
                    Some(0)
                } else {
                    grown += 1;
                    before
                };
                if let Some(first) = first {
                    store.note_unmirrored(&id, first)?;
                }
                // Webhooks go to this node's outbox in the same transaction as the offense
                // and the partition marks: a replayed detection is dropped by the marks, so
                // it is never announced twice.
                let event = match change {
                    crate::correlate::OffenseChange::Created => Some("offense.created"),
                    crate::correlate::OffenseChange::Updated => Some("offense.updated"),
                    crate::correlate::OffenseChange::Suppressed => None,
                };
                if let (Some(event), Some(body)) = (event, &body) {
                    let subject = format!("{id}@{event_count}");
                    crate::webhook::enqueue(store, webhooks, event, &subject, body, now)?;
                }
            }
            book.flush(store)?;
            for p in &touched {
                if let Some(marks) = owned.get(p) {
                    store.set_cluster_marks(*p, marks)?;
                }
            }
            Ok((opened, grown))
        });
        match applied {
            Ok((opened, grown)) => {
                seen.commit();
                created.add(opened);
                updated.add(grown);
            }
            Err(e) => {
                seen.rollback();
                book.clear();
                return Err(e.into());
            }
        }
        if !mirror_offenses(stage, &ch, &local, &mut version, &recent)? {
            return Ok(());
        }
        // Receive -> offense stored in ClickHouse, per detection (as embedded mode measures
        // receive -> offense committed).
        let stored_at = Utc::now();
        for (_, d) in &dets {
            if let Some(ingested) = d.events.iter().map(|e| e.ingested).max() {
                let secs = (stored_at - ingested).num_microseconds().unwrap_or(0) as f64 / 1e6;
                metrics.offense_latency.observe(secs);
            }
        }
        if !batch.is_empty() {
            consumer.commit(&high_water(&batch))?;
        }
    }
    Ok(())
}

/// The events one batch stored in the working copy, by offense: (position of the first, the
/// events in order). An offense whose additions were not contiguous is marked unusable
/// (`u64::MAX`), and its events are read back instead.
struct Recent(HashMap<String, (u64, Vec<Arc<vigil_parsers::Event>>)>);

impl Recent {
    fn new() -> Recent {
        Recent(HashMap::new())
    }

    fn add(&mut self, id: &str, kept: crate::correlate::Kept<'_>) {
        if kept.events.is_empty() {
            return;
        }
        let (first, events) = self
            .0
            .entry(id.to_owned())
            .or_insert_with(|| (kept.first_seq, Vec::new()));
        if first.checked_add(events.len() as u64) == Some(kept.first_seq) {
            events.extend(kept.events.iter().cloned());
        } else {
            *first = u64::MAX;
            events.clear();
        }
    }

    /// The events of `id` stored from `first` up to `stored`, when this batch stored them all.
    fn events_from(
        &self,
        id: &str,
        first: u64,
        stored: u64,
    ) -> Option<Vec<Arc<vigil_parsers::Event>>> {
        if first == stored {
            return Some(Vec::new());
        }
        let (from, events) = self.0.get(id)?;
        (*from == first && from.checked_add(events.len() as u64) == Some(stored))
            .then(|| events.clone())
    }
}

/// Writes every offense the working copy lists as changed to ClickHouse (events and rules
/// first, then the offense versions with their partitions' marks in one `INSERT`), retrying
/// until stored, then clears the list. An offense's new events come from `recent` when the
/// last batch stored them all, else they are read back from the working copy (after a
/// restart, and for a closed offense joined under suppression, listed from its first event).
/// False if `stop` interrupted it.
fn mirror_offenses(
    stage: &Stage,
    ch: &ClickHouseStore,
    local: &Store,
    version: &mut u64,
    recent: &Recent,
) -> anyhow::Result<bool> {
    let pending = local.unmirrored()?;
    if pending.is_empty() {
        return Ok(true);
    }
    let now = Utc::now();
    let mut rows = Vec::new();
    let mut rule_rows = Vec::new();
    let mut event_rows = Vec::new();
    let mut marks_of: HashMap<i32, String> = HashMap::new();
    for (id, first) in &pending {
        let Some(o) = local.get_offense(id)? else {
            continue;
        };
        *version = (*version).max(u64::try_from(now.timestamp_micros()).unwrap_or(0)) + 1;
        for r in local.offense_rules(id)? {
            rule_rows.push((id.clone(), r, *version));
        }
        let events = match recent.events_from(id, *first, o.stored_events) {
            Some(events) => events,
            None => local
                .offense_events_from(id, *first, u64::MAX)?
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        event_rows.push((id.clone(), *first, events));
        let p = partition_of(&o.index_value, stage.partitions);
        let marks = match marks_of.get(&p) {
            Some(m) => m.clone(),
            None => {
                let m = serde_json::to_string(&local.cluster_marks(p)?)?;
                marks_of.insert(p, m.clone());
                m
            }
        };
        rows.push((o, *version, marks));
    }
    // Parts first, the offense rows last: once an offense version is visible, its events and
    // rules are too.
    let stored = retry("writing offenses to ClickHouse", &stage.stop, || {
        stage.rt.block_on(async {
            ch.add_events_of_offenses(&event_rows).await?;
            ch.put_offense_rules(&rule_rows).await?;
            ch.put_marked_offenses(&rows).await
        })
    });
    if stored.is_none() {
        return Ok(false);
    }
    let ids: Vec<String> = pending.into_iter().map(|(id, _)| id).collect();
    local.clear_unmirrored(&ids)?;
    Ok(true)
}

/// Takes partition `p` of the detections topic over: the working copy's open offenses of
/// that partition are replaced by ClickHouse's (each with its rules as of that version), and
/// the partition's marks by those on its newest offense version. `None` if `stop` interrupted.
fn take_over_offenses(
    stage: &Stage,
    ch: &ClickHouseStore,
    local: &mut Store,
    p: i32,
) -> anyhow::Result<Option<Marks>> {
    let n = stage.partitions;
    let Some(open) = retry("reading open offenses from ClickHouse", &stage.stop, || {
        stage.rt.block_on(ch.open_offense_versions())
    }) else {
        return Ok(None);
    };
    let mine: Vec<(crate::store::Offense, u64, String)> = open
        .into_iter()
        .filter(|(o, _, _)| partition_of(&o.index_value, n) == p)
        .collect();
    let mut parts = Vec::with_capacity(mine.len());
    for (o, v, _) in &mine {
        let Some(rules) = retry("reading offense rules from ClickHouse", &stage.stop, || {
            stage.rt.block_on(ch.offense_rules_as_of(&o.id, *v))
        }) else {
            return Ok(None);
        };
        parts.push(rules);
    }
    let marks: Marks = mine
        .iter()
        .max_by_key(|(_, v, _)| *v)
        .and_then(|(_, _, m)| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let stale: Vec<String> = local
        .open_offense_indexes()?
        .into_iter()
        .filter(|(_, index)| partition_of(index, n) == p)
        .map(|(id, _)| id)
        .collect();
    local.in_transaction(|s| {
        s.forget_offenses(&stale)?;
        for ((o, _, _), rules) in mine.iter().zip(&parts) {
            s.put_offense(o)?;
            for r in rules {
                s.put_offense_rule(&o.id, r)?;
            }
        }
        s.set_cluster_marks(p, &marks)
    })?;
    tracing::info!(
        partition = p,
        offenses = mine.len(),
        "detections partition taken over from ClickHouse"
    );
    Ok(Some(marks))
}

/// The store stage: events and dead letters into ClickHouse in batches (by size or
/// `batch_max_wait_ms`), each row identified by its place in the topic (partition, offset of
/// its packed record, index in it) so a retried or replayed insert does not double rows.
/// Offsets are committed after the insert. Runs until `stop`.
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
    let retried = metrics.counter(
        "vigil_store_retried_batches_total",
        "Inserts into ClickHouse sent again after a failure (rows the failed attempt did write are deduplicated by row identity).",
        &[],
    );
    let failed = metrics.counter(
        "vigil_store_insert_failures_total",
        "Inserts into ClickHouse that failed; each is retried with backoff until it succeeds.",
        &[],
    );
    let max_wait = ch.batch_max_wait();
    let mut pending: Vec<Received> = Vec::new();
    let mut pending_bytes: usize;
    let mut since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let got = rt.block_on(consumer.poll_batch(BATCH * 4, POLL_WAIT))?;
        if pending.is_empty() {
            since = Instant::now();
        }
        pending.extend(got);
        pending_bytes = pending.iter().map(|r| r.payload.len()).sum();
        if pending.is_empty() || (pending_bytes < STORE_BATCH_BYTES && since.elapsed() < max_wait) {
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
        // Each item's row identity is its place in the topic: (topic/partition/offset of its
        // packed record, index in the record). Whatever batch it is written in, again after a
        // retry or after a crash, it is the same row, which the tables deduplicate.
        // Each packed record's items stay in the vector they were read into (an event is
        // about a kilobyte in memory: gathering ~50,000 of them into one growing vector cost
        // more copying than their JSON); the rows only borrow them.
        let mut events: Vec<(String, Vec<vigil_parsers::Event>)> = Vec::new();
        let mut dead: Vec<(String, Vec<DeadLetter>)> = Vec::new();
        let mut unreadable = 0u64;
        for ((topic, partition), recs) in &by_part {
            for r in recs {
                let id = format!("{topic}/{partition}/{}", r.offset);
                if *topic == topics.events {
                    match unpack::<vigil_parsers::Event>(&r.payload) {
                        Ok(items) => events.push((id, items)),
                        Err(_) => unreadable += 1,
                    }
                } else {
                    match unpack::<DeadLetter>(&r.payload) {
                        Ok(items) => dead.push((id, items)),
                        Err(_) => unreadable += 1,
                    }
                }
            }
        }
        fn rows<T>(records: &[(String, Vec<T>)]) -> Vec<(&str, u32, &T)> {
            let mut rows = Vec::with_capacity(records.iter().map(|(_, v)| v.len()).sum());
            for (id, items) in records {
                for (i, item) in items.iter().enumerate() {
                    rows.push((id.as_str(), u32::try_from(i).unwrap_or(u32::MAX), item));
                }
            }
            rows
        }
        let event_rows = rows(&events);
        let dead_rows = rows(&dead);
        let mut attempts = 0u64;
        let inserted = retry("inserting a batch into ClickHouse", stop, || {
            attempts += 1;
            let result = rt.block_on(async {
                let n = ch.insert_identified_events(&event_rows).await?;
                ch.insert_identified_dead_letters(&dead_rows).await?;
                Ok::<u64, crate::store::clickhouse::ChError>(n)
            });
            if result.is_err() {
                failed.inc();
            }
            result
        });
        if attempts > 1 {
            retried.add(attempts - 1);
        }
        match inserted {
            Some(n) => stored.add(n),
            None => return Ok(()),
        }
        bad.add(unreadable);
        consumer.commit(&high_water(&pending))?;
        pending.clear();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use vigil_parsers::Event;

    use super::Recent;
    use crate::correlate::Kept;

    fn events(messages: &[&str]) -> Vec<Arc<Event>> {
        let t = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        messages
            .iter()
            .map(|m| {
                let mut e = Event::new(t, t);
                e.message = Some((*m).into());
                Arc::new(e)
            })
            .collect()
    }

    fn messages(list: &[Arc<Event>]) -> Vec<String> {
        list.iter()
            .map(|e| e.message.as_deref().unwrap_or_default().to_owned())
            .collect()
    }

    /// A batch's kept events are handed to the mirror only when they are exactly the ones the
    /// working copy holds from the mirror's position on; anything else is read back.
    #[test]
    fn recent_events_cover_the_unmirrored_span_or_are_not_used() {
        let mut recent = Recent::new();
        let (a, b) = (events(&["a1", "a2"]), events(&["a3"]));
        recent.add(
            "A",
            Kept {
                first_seq: 5,
                events: &a,
                closed: None,
            },
        );
        recent.add(
            "A",
            Kept {
                first_seq: 7,
                events: &b,
                closed: None,
            },
        );
        recent.add(
            "A",
            Kept {
                first_seq: 8,
                events: &[],
                closed: None,
            },
        );
        assert_eq!(
            messages(&recent.events_from("A", 5, 8).unwrap()),
            ["a1", "a2", "a3"]
        );
        // Events before this batch (a restart's leftovers) or beyond what it stored: read back.
        assert!(recent.events_from("A", 4, 8).is_none());
        assert!(recent.events_from("A", 5, 9).is_none());
        // Nothing new: nothing to read.
        assert!(recent.events_from("B", 3, 3).unwrap().is_empty());
        assert!(recent.events_from("B", 3, 4).is_none());
        // A gap (an id starting again at 0, never expected) makes the offense's list unusable.
        recent.add(
            "C",
            Kept {
                first_seq: 0,
                events: &a,
                closed: None,
            },
        );
        recent.add(
            "C",
            Kept {
                first_seq: 3,
                events: &b,
                closed: None,
            },
        );
        assert!(recent.events_from("C", 0, 3).is_none());
        assert!(recent.events_from("C", 0, 4).is_none());
    }
}
