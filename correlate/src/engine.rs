//! The engine: feeds events through the rule set, keeps `event_count` windows per group key in
//! event time, and emits [`Detection`]s.
//!
//! Windows: for each correlation and group key (the values of the `group-by` fields on the
//! event, as text), the engine keeps the matching events ordered by `@timestamp`. The window is
//! `(newest - timespan, newest]` where `newest` is the newest event time seen for that key, so
//! out-of-order events inside the window count. An event at or before `newest - timespan` for its
//! key arrives too late and is counted in [`RuleStats::late_events`], not in the window. An event
//! missing any `group-by` field counts toward no group ([`RuleStats::ungrouped_events`]).
//!
//! Firing: when a key's count first satisfies the condition, one [`DetectionKind::New`] carries
//! the window's events (its `count` is exact; events that arrived while the same key was firing
//! earlier keep only their time, so a firing key costs 16 bytes per event, not the event); while it keeps holding, each further event for that key is a
//! [`DetectionKind::Update`] carrying just that event. When the condition stops holding (or the
//! window has slid past every earlier event of the key) the key re-arms. Conditions are evaluated
//! only when an event arrives, so `lt`/`lte` bounds act on arrival and do not detect absence.
//!
//! Bounds ([`EngineLimits`]): a new key beyond `max_keys_per_rule` evicts the least recently
//! updated key; a window beyond `max_events_per_key` drops its oldest events. Keys whose newest
//! event is two timespans behind the newest event the rule has seen are expired (they can no
//! longer affect any count for events at most one timespan late).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use vigil_parsers::event::Event;

use crate::index::Scratch;
use crate::rules::RuleInfo;
use crate::ruleset::{CorrelationRule, Offense, RuleSet};

/// Bounds on correlation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Group keys kept per correlation rule (least recently updated evicted beyond it; minimum 1).
    pub max_keys_per_rule: usize,
    /// Events kept per key window (oldest dropped beyond it; minimum 1).
    pub max_events_per_key: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_keys_per_rule: 100_000,
            max_events_per_key: 10_000,
        }
    }
}

/// Whether a detection opens an offense or adds to the one a previous detection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectionKind {
    /// A rule fired: a single-event match, or a correlation whose condition became true.
    New,
    /// One more event for a correlation key whose condition still holds.
    Update,
}

/// What a rule found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// New or update.
    pub kind: DetectionKind,
    /// The rule's name (or id if it has no name).
    pub rule: String,
    /// The rule's title.
    pub title: String,
    /// The rule's Sigma level.
    pub level: Option<String>,
    /// The rule's tags.
    pub tags: Vec<String>,
    /// `group-by` field (event name) and value; empty for detection rules.
    pub group: Vec<(String, String)>,
    /// The field indexing the offense.
    pub index_field: String,
    /// Its value on the first event of the firing window, or the rule name when absent.
    pub index_value: String,
    /// Event time of the first event of the window that fired.
    pub window_start: DateTime<Utc>,
    /// Earliest event time in the window.
    pub first_seen: DateTime<Utc>,
    /// Latest event time in the window.
    pub last_seen: DateTime<Utc>,
    /// Events in the window when it fired (`New`), or 1 (`Update`). Exact, even when `events`
    /// holds fewer (see `events`).
    pub count: u64,
    /// The contributing events, oldest first. For `New` these are the window's events, except
    /// those that arrived while the same key was firing earlier (only their times are kept).
    pub events: Vec<Arc<Event>>,
    /// Offense relevance, 0-10.
    pub relevance: u8,
    /// Offense credibility, 0-10.
    pub credibility: u8,
    /// Offense severity, 0-10.
    pub severity: u8,
}

/// Counters for one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// The rule's name.
    pub name: String,
    /// Events that matched (detection rules) or were fed (correlations).
    pub matches: u64,
    /// `New` detections emitted.
    pub detections: u64,
    /// `Update` detections emitted.
    pub updates: u64,
    /// Group keys currently held.
    pub keys_live: u64,
    /// Keys evicted because of `max_keys_per_rule`.
    pub keys_evicted: u64,
    /// Keys dropped because their window had long passed.
    pub keys_expired: u64,
    /// Events dropped from windows because of `max_events_per_key`.
    pub events_evicted: u64,
    /// Events that arrived more than a timespan behind their key's newest event.
    pub late_events: u64,
    /// Events without a value for some `group-by` field.
    pub ungrouped_events: u64,
}

/// Counters for an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events processed.
    pub events: u64,
    /// Per rule, in [`RuleSet::rules`] order.
    pub rules: Vec<RuleStats>,
    /// Group keys held, all rules.
    pub keys_live: u64,
    /// Keys evicted, all rules.
    pub keys_evicted: u64,
    /// Window events evicted, all rules.
    pub events_evicted: u64,
}

struct Firing {
    window_start: DateTime<Utc>,
    index_value: String,
}

/// One event in a key's window: its time always (counts need it), the event itself only while
/// the key is armed. Once the key fires, the `New` detection takes the events and later ones
/// travel in `Update`s, so a firing key holds 16 bytes per event, not the event.
struct Slot {
    ts: DateTime<Utc>,
    event: Option<Arc<Event>>,
}

struct KeyState {
    events: VecDeque<Slot>,
    newest: DateTime<Utc>,
    seq: u64,
    firing: Option<Firing>,
}

type Key = Box<[String]>;

#[derive(Default)]
struct Windows {
    keys: HashMap<Key, KeyState>,
    lru: BTreeMap<u64, Key>,
    seq: u64,
    watermark: Option<DateTime<Utc>>,
}

/// Runs a [`RuleSet`] over a stream of events. One engine owns its correlation state; share the
/// rule set, not the engine.
pub struct Engine {
    rules: Arc<RuleSet>,
    limits: EngineLimits,
    windows: Vec<Windows>,
    stats: Vec<RuleStats>,
    events: u64,
    scratch: Scratch,
    matched: Vec<usize>,
    fed: Vec<usize>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field("limits", &self.limits)
            .field("events", &self.events)
            .finish()
    }
}

fn text_of(event: &Event, field: &str) -> Option<String> {
    event.get(field).map(|v| v.as_text().into_owned())
}

fn base_detection(info: &RuleInfo, offense: &Offense, kind: DetectionKind) -> Detection {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Detection {
        kind,
        rule: info.name.clone(),
        title: info.title.clone(),
        level: info.level.clone(),
        tags: info.tags.clone(),
        group: Vec::new(),
        index_field: offense.index_field.clone(),
        index_value: info.name.clone(),
        window_start: epoch,
        first_seen: epoch,
        last_seen: epoch,
        count: 0,
        events: Vec::new(),
        relevance: offense.relevance,
        credibility: offense.credibility,
        severity: offense.severity,
    }
}

impl Engine {
    /// An engine over `rules` with empty state.
    pub fn new(rules: Arc<RuleSet>, limits: EngineLimits) -> Self {
        let stats = rules
            .rules()
            .iter()
            .map(|r| RuleStats {
                name: r.name.clone(),
                ..RuleStats::default()
            })
            .collect();
        let windows = rules
            .correlations
            .iter()
            .map(|_| Windows::default())
            .collect();
        Engine {
            rules,
            limits,
            windows,
            stats,
            events: 0,
            scratch: Scratch::default(),
            matched: Vec::new(),
            fed: Vec::new(),
        }
    }

    /// Feed one event; detections are pushed to `out`.
    pub fn process(&mut self, event: &Arc<Event>, out: &mut Vec<Detection>) {
        self.events += 1;
        let rules = Arc::clone(&self.rules);
        rules.match_indexed(event, &mut self.scratch, &mut self.matched);
        self.fed.clear();
        for &d in &self.matched {
            let Some(det) = rules.detections.get(d) else {
                continue;
            };
            let Some(info) = rules.infos.get(det.info) else {
                continue;
            };
            if let Some(s) = self.stats.get_mut(det.info) {
                s.matches += 1;
            }
            if info.generate {
                let mut x = base_detection(info, &det.offense, DetectionKind::New);
                x.index_value =
                    text_of(event, &det.offense.index_field).unwrap_or_else(|| info.name.clone());
                x.window_start = event.timestamp;
                x.first_seen = event.timestamp;
                x.last_seen = event.timestamp;
                x.count = 1;
                x.events = vec![Arc::clone(event)];
                if let Some(s) = self.stats.get_mut(det.info) {
                    s.detections += 1;
                }
                out.push(x);
            }
            self.fed.extend_from_slice(&det.feeds);
        }
        self.fed.sort_unstable();
        self.fed.dedup();
        let fed = std::mem::take(&mut self.fed);
        for &c in &fed {
            if let Some(rule) = rules.correlations.get(c) {
                self.feed(&rules, c, rule, event, out);
            }
        }
        self.fed = fed;
    }

    fn feed(
        &mut self,
        rules: &RuleSet,
        c: usize,
        rule: &CorrelationRule,
        event: &Arc<Event>,
        out: &mut Vec<Detection>,
    ) {
        let Some(info) = rules.infos.get(rule.info) else {
            return;
        };
        let Some(stats) = self.stats.get_mut(rule.info) else {
            return;
        };
        let Some(w) = self.windows.get_mut(c) else {
            return;
        };
        stats.matches += 1;
        let mut key = Vec::with_capacity(rule.group_by.len());
        for f in &rule.group_by {
            match text_of(event, f) {
                Some(v) => key.push(v),
                None => {
                    stats.ungrouped_events += 1;
                    return;
                }
            }
        }
        let key: Key = key.into_boxed_slice();
        let ts = event.timestamp;
        let span = rule.timespan;
        let watermark = w.watermark.map_or(ts, |m| m.max(ts));
        w.watermark = Some(watermark);

        // Expire keys whose window has long passed (least recently updated first).
        if let Some(limit) = watermark
            .checked_sub_signed(span)
            .and_then(|t| t.checked_sub_signed(span))
        {
            while let Some((&seq, k)) = w.lru.first_key_value() {
                let expired = w.keys.get(k).is_none_or(|st| st.newest <= limit);
                if !expired {
                    break;
                }
                if let Some(k) = w.lru.remove(&seq) {
                    if w.keys.remove(&k).is_some() {
                        stats.keys_expired += 1;
                    }
                }
            }
        }

        if !w.keys.contains_key(&key) {
            while w.keys.len() >= self.limits.max_keys_per_rule.max(1) {
                let Some((_, old)) = w.lru.pop_first() else {
                    break;
                };
                if w.keys.remove(&old).is_some() {
                    stats.keys_evicted += 1;
                }
            }
            w.keys.insert(
                key.clone(),
                KeyState {
                    events: VecDeque::new(),
                    newest: ts,
                    seq: 0,
                    firing: None,
                },
            );
        }
        let Some(st) = w.keys.get_mut(&key) else {
            return;
        };
        if !st.events.is_empty() && st.newest.checked_sub_signed(span).is_some_and(|h| ts <= h) {
            stats.late_events += 1;
            return;
        }
        let pos = st.events.partition_point(|e| e.ts <= ts);
        let payload = st.firing.is_none().then(|| Arc::clone(event));
        st.events.insert(pos, Slot { ts, event: payload });
        st.newest = st.newest.max(ts);
        if let Some(start) = st.newest.checked_sub_signed(span) {
            while st.events.front().is_some_and(|e| e.ts <= start) {
                st.events.pop_front();
            }
        }
        let mut new_event_kept = true;
        let mut dropped = 0usize;
        while st.events.len() > self.limits.max_events_per_key.max(1) {
            st.events.pop_front();
            dropped += 1;
            stats.events_evicted += 1;
        }
        if dropped > 0 && pos < dropped {
            new_event_kept = false;
        }
        w.lru.remove(&st.seq);
        w.seq += 1;
        st.seq = w.seq;
        w.lru.insert(st.seq, key.clone());

        // A window holding nothing but the new event starts afresh.
        if st.events.len() <= 1 {
            st.firing = None;
        }
        let n = u64::try_from(st.events.len()).unwrap_or(u64::MAX);
        if !rule.condition.holds(n) {
            st.firing = None;
            return;
        }
        let group: Vec<(String, String)> = rule
            .group_by
            .iter()
            .cloned()
            .zip(key.iter().cloned())
            .collect();
        match &st.firing {
            None => {
                let first = st.events.front().map_or(ts, |e| e.ts);
                let last = st.events.back().map_or(ts, |e| e.ts);
                // Events that arrived while the key was firing before kept only their time:
                // the detection carries the rest, and the count stays exact.
                let events: Vec<Arc<Event>> = st
                    .events
                    .iter_mut()
                    .filter_map(|e| e.event.take())
                    .collect();
                let index_value = events
                    .first()
                    .and_then(|e| text_of(e, &rule.offense.index_field))
                    .unwrap_or_else(|| info.name.clone());
                let mut x = base_detection(info, &rule.offense, DetectionKind::New);
                x.group = group;
                x.index_value = index_value.clone();
                x.window_start = first;
                x.first_seen = first;
                x.last_seen = last;
                x.count = n;
                x.events = events;
                st.firing = Some(Firing {
                    window_start: first,
                    index_value,
                });
                stats.detections += 1;
                out.push(x);
            }
            Some(f) => {
                if !new_event_kept {
                    return;
                }
                let mut x = base_detection(info, &rule.offense, DetectionKind::Update);
                x.group = group;
                x.index_value = f.index_value.clone();
                x.window_start = f.window_start;
                x.first_seen = ts;
                x.last_seen = ts;
                x.count = 1;
                x.events = vec![Arc::clone(event)];
                stats.updates += 1;
                out.push(x);
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let mut rules = self.stats.clone();
        for (c, w) in self.windows.iter().enumerate() {
            if let Some(r) = self
                .rules
                .correlations
                .get(c)
                .and_then(|rule| rules.get_mut(rule.info))
            {
                r.keys_live = u64::try_from(w.keys.len()).unwrap_or(u64::MAX);
            }
        }
        EngineStats {
            events: self.events,
            keys_live: rules.iter().map(|r| r.keys_live).sum(),
            keys_evicted: rules.iter().map(|r| r.keys_evicted).sum(),
            events_evicted: rules.iter().map(|r| r.events_evicted).sum(),
            rules,
        }
    }
}
