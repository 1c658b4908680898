//! The compiled rule set: rule infos, compiled detections and correlations, and the dispatch
//! index. Immutable once built, shared between engines (`Send + Sync`).

use chrono::Duration;
use vigil_parsers::event::{Event, FieldRef};

use crate::detection::Detection;
use crate::index::{Index, Scratch};
use crate::rules::RuleInfo;

/// How a rule's detections are weighed and indexed, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offense {
    pub(crate) index_field: String,
    /// `index_field`, resolved.
    pub(crate) index_at: FieldRef,
    /// `index_field`, shared with every detection.
    pub(crate) index_shared: std::sync::Arc<str>,
    pub(crate) relevance: u8,
    pub(crate) credibility: u8,
    pub(crate) severity: u8,
}

/// A compiled detection rule.
#[derive(Debug)]
pub(crate) struct DetectionRule {
    /// Index into [`RuleSet::rules`].
    pub(crate) info: usize,
    /// `(field, value)` alternatives from `logsource`; `None`: all events.
    pub(crate) logsource: Option<&'static [(&'static str, &'static str)]>,
    pub(crate) detection: Detection,
    /// Correlations this rule feeds: (index into `correlations`, position of this rule in the
    /// correlation's `rules` list).
    pub(crate) feeds: Vec<(usize, usize)>,
    pub(crate) offense: Offense,
}

impl DetectionRule {
    /// Full evaluation: logsource then detection.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        if let Some(tests) = self.logsource {
            let hit = tests.iter().any(|(f, v)| {
                event
                    .get(f)
                    .is_some_and(|x| x.as_text().eq_ignore_ascii_case(v))
            });
            if !hit {
                return false;
            }
        }
        self.detection.matches(event)
    }
}

/// An `event_count` condition: every bound given must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CountCondition {
    pub(crate) gt: Option<u64>,
    pub(crate) gte: Option<u64>,
    pub(crate) lt: Option<u64>,
    pub(crate) lte: Option<u64>,
    pub(crate) eq: Option<u64>,
}

impl CountCondition {
    pub(crate) fn holds(&self, n: u64) -> bool {
        self.gt.is_none_or(|b| n > b)
            && self.gte.is_none_or(|b| n >= b)
            && self.lt.is_none_or(|b| n < b)
            && self.lte.is_none_or(|b| n <= b)
            && self.eq.is_none_or(|b| n == b)
    }
}

/// What a correlation measures in a key's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Events in the window.
    EventCount,
    /// Distinct values of a field (per referenced rule, aliases applied) in the window.
    ValueCount(Vec<String>),
    /// Distinct referenced rules matched in the window.
    Temporal,
    /// Referenced rules matched in the order listed (length of the longest in-order prefix).
    TemporalOrdered,
    /// Sum of a numeric field (per referenced rule, aliases applied) in the window.
    ValueSum(Vec<String>),
    /// The first referenced rule not followed by the second within the timespan (a deadline
    /// per key, fired as time passes; no condition).
    Absence,
    /// A key not seen for the timespan (a deadline per key moved by every occurrence, fired as
    /// time passes; no condition).
    Silence,
    /// Occurrences in the window when they come at a regular period: the median absolute
    /// deviation of the gaps between them is at most `max_jitter` times the median gap, and the
    /// median gap is at least `min_interval_ns` (0 when irregular or too few).
    Periodic {
        /// Allowed jitter in millionths of the period (100_000 = 10 %).
        max_jitter_ppm: u32,
        /// Shortest period that counts (keeps bursts and tight polling loops out).
        min_interval_ns: i64,
    },
}

impl Measure {
    /// Whether the rule fires on time passing (deadlines) rather than on an arriving occurrence.
    pub(crate) fn is_timed(&self) -> bool {
        matches!(self, Measure::Absence | Measure::Silence)
    }
}

/// A compiled correlation (any type).
#[derive(Debug)]
pub(crate) struct CorrelationRule {
    pub(crate) info: usize,
    pub(crate) measure: Measure,
    /// Group-by names as written (aliases kept, other names resolved to event names): the names
    /// [`crate::Detection::group`] reports.
    pub(crate) group_names: Vec<String>,
    /// Per referenced rule (by position in `rules`): the event field of each group-by name
    /// (aliases resolved for that rule), resolved.
    pub(crate) group_fields: Vec<Vec<FieldRef>>,
    /// `value_count` and `value_sum`: the measured field per referenced rule, resolved.
    pub(crate) value_fields: Vec<FieldRef>,
    /// Referenced rules (after deduplication): the width of the rule mask.
    pub(crate) n_rules: usize,
    pub(crate) timespan: Duration,
    pub(crate) condition: CountCondition,
    pub(crate) offense: Offense,
    /// Position of the offense index field among `group_names`, when it is one.
    pub(crate) index_in_key: Option<usize>,
    /// Outer correlations this one's `New` detections feed: (correlation, position).
    pub(crate) feeds: Vec<(usize, usize)>,
}

/// A compiled, immutable set of rules. Build it with [`RuleSet::from_sources`], share it in an
/// `Arc` between [`crate::Engine`]s.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub(crate) infos: Vec<RuleInfo>,
    pub(crate) detections: Vec<DetectionRule>,
    pub(crate) correlations: Vec<CorrelationRule>,
    pub(crate) index: Index,
}

impl RuleSet {
    /// Every loaded rule (detections and correlations) in load order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.infos
    }

    /// How many rules loaded.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// Whether no rule loaded.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// How many detection rules sit behind the literal prefilter (the rest are dispatched by
    /// logsource or evaluated for every event).
    pub fn prefiltered_rules(&self) -> usize {
        self.index.prefiltered
    }

    /// The detection rules `event` matches, as indices into [`RuleSet::rules`], ascending. Uses
    /// the dispatch index.
    pub fn matching_rules(&self, event: &Event) -> Vec<usize> {
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        self.match_indexed(event, &mut scratch, None, &mut out);
        out.into_iter()
            .filter_map(|d| self.detections.get(d).map(|r| r.info))
            .collect()
    }

    /// The same as [`RuleSet::matching_rules`] but evaluating every rule, bypassing the dispatch
    /// index: the reference the index is checked against.
    pub fn matching_rules_exhaustive(&self, event: &Event) -> Vec<usize> {
        self.detections
            .iter()
            .filter(|r| r.matches(event))
            .map(|r| r.info)
            .collect()
    }

    /// Matching detection rules (indices into `detections`, ascending) through the index.
    pub(crate) fn match_indexed(
        &self,
        event: &Event,
        scratch: &mut Scratch,
        prescanned: Option<&[u32]>,
        out: &mut Vec<usize>,
    ) {
        out.clear();
        self.index
            .candidates(event, self.detections.len(), scratch, prescanned);
        for r in &scratch.candidates {
            let r = *r as usize;
            if self.detections.get(r).is_some_and(|d| d.matches(event)) {
                out.push(r);
            }
        }
    }
}

/// Most rules one event's prescan keeps; past it the engine scans that event itself. Bounds a
/// batch's [`Prescan`] at 64 rule numbers an event.
const PRESCAN_MAX_HITS: usize = 64;

/// The rules' literal prefilter run over a batch of normalized events ahead of the engine, on
/// another thread (the service's normalize thread): for each event, the detection rules whose
/// literals its fields final at normalization contain. The engine takes these instead of
/// scanning those fields itself ([`crate::Engine::process_prescanned`]) when they were found
/// with the rule set it runs; any other rule set's are ignored, so a rule reload between the
/// two threads changes nothing. With 1,000 SigmaHQ rules the scan (an aho-corasick automaton
/// of their keywords over every `message`) was a fifth of the engine thread's time.
#[derive(Debug)]
pub struct Prescan {
    rules: std::sync::Arc<RuleSet>,
    scratch: Scratch,
    hits: Vec<u32>,
    /// Per event: its range in `hits`, or `None` when it was not prescanned.
    spans: Vec<Option<(u32, u32)>>,
    one: Vec<u32>,
}

impl Prescan {
    /// An empty prescan with `rules`.
    pub fn new(rules: std::sync::Arc<RuleSet>) -> Prescan {
        Prescan {
            rules,
            scratch: Scratch::default(),
            hits: Vec::new(),
            spans: Vec::new(),
            one: Vec::new(),
        }
    }

    /// Empties it for a new batch, with `rules` (the engine's current ones).
    pub fn reset(&mut self, rules: std::sync::Arc<RuleSet>) {
        self.rules = rules;
        self.hits.clear();
        self.spans.clear();
    }

    /// Scans the next event of the batch (`None`: a record without an event, a dead letter).
    pub fn push(&mut self, event: Option<&Event>) {
        let span = event.and_then(|e| {
            let n = self.rules.detections.len();
            let kept =
                self.rules
                    .index
                    .prescan(e, n, &mut self.scratch, PRESCAN_MAX_HITS, &mut self.one);
            let start = u32::try_from(self.hits.len()).ok()?;
            let end = start.checked_add(u32::try_from(self.one.len()).ok()?)?;
            kept.then(|| {
                self.hits.extend_from_slice(&self.one);
                (start, end)
            })
        });
        self.spans.push(span);
    }

    /// What was found for the `i`-th event pushed, if it was prescanned with `rules`.
    pub(crate) fn hits(&self, rules: &std::sync::Arc<RuleSet>, i: usize) -> Option<&[u32]> {
        if !std::sync::Arc::ptr_eq(&self.rules, rules) {
            return None;
        }
        let (start, end) = (*self.spans.get(i)?)?;
        self.hits.get(start as usize..end as usize)
    }

    /// Events pushed since the last reset.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no event was pushed since the last reset.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}
