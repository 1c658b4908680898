//! Log sources: every sender Vigil hears from (`observer.id`: `syslog/udp/10.0.0.5`,
//! `file:/var/log/auth.log`), what kind of source it is, how busy, how healthy.
//!
//! Detection, like QRadar's log-source auto-detection: each source is typed by the parser
//! definition (`event.dataset`) that fits most of its recent records; when a different one
//! starts fitting most of them, the source is re-detected (counted). A source whose records
//! match no definition is `generic` (still events, counted). Bounded: at most `max_sources`
//! are tracked; the least recently seen is forgotten beyond it (counted).
//!
//! The pipeline reports once per batch ([`Sources::record_batch`]), so the hot path takes no
//! lock per record; the API reads a snapshot.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::telemetry::{Counter, Metrics};

/// How many recent records decide a source's type.
pub const DETECTION_WINDOW: usize = 64;

/// What one batch saw from one source.
#[derive(Debug, Clone, Default)]
pub struct SourceBatch {
    /// Collector kind (`syslog`, `file`).
    pub kind: &'static str,
    /// Records that became events, by dataset (`None`: no definition matched).
    pub events: Vec<(Option<String>, u64)>,
    /// Records kept as dead letters.
    pub dead_letters: u64,
    /// Receive time of the newest record.
    pub last_seen: DateTime<Utc>,
}

impl SourceBatch {
    /// Counts one event of `dataset`.
    pub fn event(&mut self, dataset: Option<&str>) {
        match self
            .events
            .iter_mut()
            .find(|(d, _)| d.as_deref() == dataset)
        {
            Some((_, n)) => *n += 1,
            None => self.events.push((dataset.map(str::to_owned), 1)),
        }
    }
}

/// A source as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceView {
    /// The source identity (`observer.id`).
    pub id: String,
    /// Collector kind.
    pub kind: String,
    /// Detected type: the parser definition fitting most recent records, or `generic`.
    pub detected: String,
    /// How many times the detected type changed.
    pub redetections: u64,
    /// First record (receive time).
    pub first_seen: DateTime<Utc>,
    /// Last record (receive time).
    pub last_seen: DateTime<Utc>,
    /// Records that became events, in all.
    pub events: u64,
    /// Records kept as dead letters, in all.
    pub dead_letters: u64,
    /// Dead letters / records, in all.
    pub parse_failure_rate: f64,
    /// Records per second over the last minute.
    pub eps: f64,
}

#[derive(Debug)]
struct Entry {
    kind: &'static str,
    /// The last DETECTION_WINDOW records' datasets ("" = generic), as a ring.
    recent: Vec<String>,
    next: usize,
    detected: Option<String>,
    redetections: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    events: u64,
    dead_letters: u64,
    /// Records per second-of-receive-time for the last 60 s: (second, count).
    per_second: Vec<(i64, u64)>,
}

impl Entry {
    fn push_recent(&mut self, dataset: &str) {
        if self.recent.len() < DETECTION_WINDOW {
            self.recent.push(dataset.to_owned());
        } else if let Some(slot) = self.recent.get_mut(self.next) {
            dataset.clone_into(slot);
        }
        self.next = (self.next + 1) % DETECTION_WINDOW;
    }

    fn majority(&self) -> Option<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for d in &self.recent {
            *counts.entry(d.as_str()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(d, _)| d.to_owned())
    }
}

/// The registry of sources, shared by the engine thread and the API.
#[derive(Debug)]
pub struct Sources {
    map: Mutex<HashMap<String, Entry>>,
    max_sources: usize,
    evicted: Counter,
    redetected: Counter,
    generic: Counter,
}

fn rate_window_secs() -> i64 {
    60
}

impl Sources {
    /// An empty registry tracking at most `max_sources`.
    pub fn new(max_sources: usize, metrics: &Metrics) -> Self {
        Sources {
            map: Mutex::new(HashMap::new()),
            max_sources: max_sources.max(1),
            evicted: metrics.counter(
                "vigil_sources_evicted_total",
                "Log sources forgotten to stay under the source limit (least recently seen).",
                &[],
            ),
            redetected: metrics.counter(
                "vigil_sources_redetected_total",
                "Times a log source's detected type changed.",
                &[],
            ),
            generic: metrics.counter(
                "vigil_sources_generic_events_total",
                "Events that matched no parser definition (generic syslog).",
                &[],
            ),
        }
    }

    /// Adds what one batch saw, per source.
    pub fn record_batch(&self, batch: HashMap<String, SourceBatch>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (id, b) in batch {
            if !map.contains_key(&id) && map.len() >= self.max_sources {
                // Full: forget the least recently seen tenth in one pass, so a flood of new
                // (possibly spoofed) senders costs O(1) per source, not a scan each.
                let mut by_age: Vec<(DateTime<Utc>, String)> =
                    map.iter().map(|(k, e)| (e.last_seen, k.clone())).collect();
                let n = (self.max_sources / 10).max(1).min(by_age.len());
                if n > 0 {
                    by_age.select_nth_unstable(n - 1);
                    for (_, k) in by_age.into_iter().take(n) {
                        map.remove(&k);
                        self.evicted.inc();
                    }
                }
            }
            let e = map.entry(id).or_insert_with(|| Entry {
                kind: b.kind,
                recent: Vec::with_capacity(DETECTION_WINDOW),
                next: 0,
                detected: None,
                redetections: 0,
                first_seen: b.last_seen,
                last_seen: b.last_seen,
                events: 0,
                dead_letters: 0,
                per_second: Vec::new(),
            });
            let mut records = b.dead_letters;
            for (dataset, n) in &b.events {
                records += n;
                e.events += n;
                if dataset.is_none() {
                    self.generic.add(*n);
                }
                // The window needs at most its size of the newest records.
                for _ in 0..(*n).min(DETECTION_WINDOW as u64) {
                    e.push_recent(dataset.as_deref().unwrap_or(""));
                }
            }
            e.dead_letters += b.dead_letters;
            e.last_seen = e.last_seen.max(b.last_seen);
            let second = b.last_seen.timestamp();
            match e.per_second.last_mut() {
                Some((s, n)) if *s == second => *n += records,
                _ => e.per_second.push((second, records)),
            }
            let horizon = second - rate_window_secs();
            e.per_second.retain(|(s, _)| *s > horizon);
            if let Some(now) = e.majority().filter(|m| !m.is_empty() || e.events > 0) {
                let now = Some(now);
                if e.detected.is_some() && e.detected != now {
                    e.redetections += 1;
                    self.redetected.inc();
                }
                e.detected = now;
            }
        }
    }

    /// Every tracked source, most recently seen first.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Vec<SourceView> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = now.timestamp() - rate_window_secs();
        let mut out: Vec<SourceView> = map
            .iter()
            .map(|(id, e)| {
                let recent: u64 = e
                    .per_second
                    .iter()
                    .filter(|(s, _)| *s > horizon)
                    .map(|(_, n)| n)
                    .sum();
                let total = e.events + e.dead_letters;
                SourceView {
                    id: id.clone(),
                    kind: e.kind.to_owned(),
                    detected: match e.detected.as_deref() {
                        None | Some("") => "generic".to_owned(),
                        Some(d) => d.to_owned(),
                    },
                    redetections: e.redetections,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    events: e.events,
                    dead_letters: e.dead_letters,
                    parse_failure_rate: if total == 0 {
                        0.0
                    } else {
                        e.dead_letters as f64 / total as f64
                    },
                    eps: recent as f64 / rate_window_secs() as f64,
                }
            })
            .collect();
        out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn batch(at: DateTime<Utc>, datasets: &[(Option<&str>, u64)], dead: u64) -> SourceBatch {
        let mut b = SourceBatch {
            kind: "syslog",
            last_seen: at,
            dead_letters: dead,
            ..SourceBatch::default()
        };
        for (d, n) in datasets {
            for _ in 0..*n {
                b.event(*d);
            }
        }
        b
    }

    fn one(id: &str, b: SourceBatch) -> HashMap<String, SourceBatch> {
        HashMap::from([(id.to_owned(), b)])
    }

    #[test]
    fn a_source_is_typed_by_its_majority_and_re_detected_when_it_changes() {
        let m = Metrics::new();
        let s = Sources::new(10, &m);
        let t = Utc::now();
        s.record_batch(one(
            "syslog/udp/10.0.0.5",
            batch(t, &[(Some("openssh"), 50), (None, 5)], 5),
        ));
        let v = s.snapshot(t);
        assert_eq!(v[0].detected, "openssh");
        assert_eq!(v[0].events, 55);
        assert!((v[0].parse_failure_rate - 5.0 / 60.0).abs() < 1e-9);
        assert!((v[0].eps - 1.0).abs() < 1e-9);
        // The sender becomes a firewall: after enough records it is re-detected.
        s.record_batch(one(
            "syslog/udp/10.0.0.5",
            batch(t, &[(Some("cisco_asa"), 64)], 0),
        ));
        let v = s.snapshot(t);
        assert_eq!(v[0].detected, "cisco_asa");
        assert_eq!(v[0].redetections, 1);
        assert_eq!(m.counter_value("vigil_sources_redetected_total", &[]), 1);
    }

    #[test]
    fn unknown_sources_are_generic_and_the_registry_is_bounded() {
        let m = Metrics::new();
        let s = Sources::new(2, &m);
        let t = Utc::now();
        s.record_batch(one("a", batch(t, &[(None, 3)], 0)));
        s.record_batch(one(
            "b",
            batch(t + chrono::Duration::seconds(1), &[(None, 1)], 0),
        ));
        s.record_batch(one(
            "c",
            batch(t + chrono::Duration::seconds(2), &[(None, 1)], 0),
        ));
        let v = s.snapshot(t + chrono::Duration::seconds(2));
        let ids: Vec<&str> = v.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["c", "b"]);
        assert!(v.iter().all(|v| v.detected == "generic"));
        assert_eq!(m.counter_value("vigil_sources_evicted_total", &[]), 1);
        assert_eq!(
            m.counter_value("vigil_sources_generic_events_total", &[]),
            5
        );
    }
}
