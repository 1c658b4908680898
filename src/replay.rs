//! `vigil replay FILE...`: the live pipeline over files, in event time, with an in-memory
//! store; the resulting offenses are printed as JSON lines, oldest first. The output holds no
//! wall-clock fields, so the same files and rules always print the same bytes.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::{build_pipeline, BATCH_RECORDS};
use crate::config::Config;
use crate::store::{Offense, Store};
use crate::telemetry::Metrics;

/// An offense as replay prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayOffense {
    /// Deterministic offense id.
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// Rule title.
    pub title: String,
    /// Index field.
    pub index_field: String,
    /// Index value.
    pub index_value: String,
    /// Magnitude 0-10.
    pub magnitude: u8,
    /// Rule level.
    pub level: Option<String>,
    /// First contributing event (event time).
    pub first_seen: DateTime<Utc>,
    /// Last contributing event (event time).
    pub last_seen: DateTime<Utc>,
    /// Contributing events.
    pub event_count: u64,
    /// Every rule that contributed, first contribution first.
    pub rules: Vec<ReplayRule>,
}

/// One rule's part in a replayed offense.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRule {
    /// Rule name.
    pub rule: String,
    /// Events it contributed.
    pub events: u64,
}

impl ReplayOffense {
    fn new(o: Offense, rules: Vec<ReplayRule>) -> Self {
        ReplayOffense {
            rules,
            id: o.id,
            rule: o.rule,
            title: o.title,
            index_field: o.index_field,
            index_value: o.index_value,
            magnitude: o.magnitude,
            level: o.level,
            first_seen: o.first_seen,
            last_seen: o.last_seen,
            event_count: o.event_count,
        }
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Lines read.
    pub lines: u64,
    /// Lines that became events.
    pub events: u64,
    /// Lines kept as dead letters.
    pub dead_letters: u64,
}

/// Replays `files` through the pipeline and returns the offenses, oldest first. Writes a
/// progress line to stderr about once a second when `progress` is set.
pub fn replay(
    config: &Config,
    files: &[PathBuf],
    progress: bool,
) -> anyhow::Result<(Vec<ReplayOffense>, ReplaySummary)> {
    let metrics = Metrics::new();
    let sources = std::sync::Arc::new(crate::sources::Sources::new(
        config.sources.max_sources,
        &metrics,
    ));
    let mut pipeline = build_pipeline(config, Store::open_in_memory()?, metrics, sources)?;
    let mut summary = ReplaySummary::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    for file in files {
        let lines = crate::collect::file::read_lines(file, BATCH_RECORDS, |batch| {
            let outcome = pipeline.process_batch(batch)?;
            summary.events += outcome.events;
            summary.dead_letters += outcome.dead_letters;
            if progress && last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                let done = summary.events + summary.dead_letters;
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "replay: {} records ({} dead letters), {:.0} records/s",
                    done, summary.dead_letters, rate
                );
            }
            Ok(())
        })?;
        summary.lines += lines;
    }
    let store = pipeline.store();
    let mut offenses = Vec::new();
    for o in store.all_offenses()? {
        let rules = store
            .offense_rules(&o.id)?
            .into_iter()
            .map(|r| ReplayRule {
                rule: r.rule,
                events: r.events,
            })
            .collect();
        offenses.push(ReplayOffense::new(o, rules));
    }
    Ok((offenses, summary))
}

/// Writes offenses as JSON lines.
pub fn write_json_lines(out: &mut impl Write, offenses: &[ReplayOffense]) -> anyhow::Result<()> {
    for o in offenses {
        serde_json::to_writer(&mut *out, o)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
