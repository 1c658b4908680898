//! The engine: feeds events through the rule set, keeps correlation windows per group key in
//! event time, and emits [`Detection`]s.
//!
//! # Windows
//!
//! For each correlation and group key (the values of the `group-by` fields on the event, as
//! text; with `aliases`, the field read depends on which referenced rule the event matched), the
//! engine keeps the key's occurrences ordered by `@timestamp` (ties keep arrival order). The
//! window is `(newest - timespan, newest]` where `newest` is the newest event time seen for that
//! key, so out-of-order events inside the window count. An event at or before
//! `newest - timespan` for its key arrives too late for the window and is counted in
//! [`RuleStats::late_events`], not applied. An event missing any `group-by` field counts toward
//! no group ([`RuleStats::ungrouped_events`]).
//!
//! Allowed lateness ([`EngineLimits::allowed_lateness`]): each correlation has a watermark, the
//! newest event time it has been fed. With a lateness `L > 0`, an event older than
//! `watermark - L` is late for the whole rule (counted in `late_events`, not applied), and keys
//! whose newest event is at or before `watermark - L - timespan` are expired (no event the rule
//! still accepts can share a window with them). With `L = 0` (the default) there is no rule-wide
//! bound: only the per-key check above applies and keys expire once their newest event is two
//! timespans behind the watermark.
//!
//! # What is measured
//!
//! - `event_count`: the occurrences in the window.
//! - `value_count`: the distinct values of the counted field among the window's occurrences
//!   (values compared as text through a 64-bit hash; occurrences without the field are skipped
//!   and counted in [`RuleStats::valueless_events`]). At most
//!   [`EngineLimits::max_values_per_key`] distinct values are tracked: beyond it the window's
//!   oldest occurrences are dropped ([`RuleStats::values_evicted`] counts the values lost), so a
//!   condition above that cap cannot hold.
//! - `temporal`: how many of the referenced rules have an occurrence in the window (the default
//!   condition is "all of them").
//! - `temporal_ordered`: how many of the referenced rules, in the order listed, are matched by
//!   occurrences in time order: the length of the longest prefix of the list that is a
//!   subsequence of the window (an occurrence matching several consecutive rules advances through
//!   all of them). The default condition is "all of them".
//! - `value_sum` (Vigil extension): the sum of the counted field over the window's occurrences,
//!   as `u64`. A value is a non-negative whole number or decimal text (decimals truncated toward
//!   zero); an occurrence whose field is missing, negative or not a number is skipped (not in the
//!   window, not in `count`) and counted in [`RuleStats::valueless_events`]. The sum is kept
//!   exactly (128 bits) as occurrences enter and leave the window and reported saturated at
//!   `u64::MAX` in [`Detection::sum`]. Firing, `fresh`, re-arming: as for the other types.
//! - `absence` and `silence` (Vigil extensions) measure nothing: they fire on time passing, see
//!   below.
//!
//! An occurrence is an event that matched a referenced detection rule or, for a correlation that
//! references another correlation (chaining), the event that made the inner correlation fire a
//! `New` detection (its `Update`s do not feed the outer one). Inner correlations are evaluated
//! before outer ones for the same event.
//!
//! # Firing
//!
//! When a key's measure first satisfies the condition, one [`DetectionKind::New`] reports the
//! window; while it keeps holding, each further occurrence for that key is a
//! [`DetectionKind::Update`] reporting just that occurrence. When the condition stops holding (or
//! the window has slid past every earlier occurrence of the key) the key re-arms, and may fire a
//! `New` again whose window overlaps occurrences already reported.
//!
//! Each occurrence is reported once per rule and key: a slot is marked reported when a `New` or
//! `Update` reports it. [`Detection::count`] is the measure's input (occurrences in the window,
//! exact), [`Detection::fresh`] the occurrences reported for the first time (an `Update`: 1; a
//! `New`: the window's occurrences not reported before), and [`Detection::events`] the payloads
//! of exactly those fresh occurrences. Summing `fresh` over a key's detections counts every
//! occurrence that was ever part of a firing window exactly once. A reported occurrence keeps
//! only its time (the detection took the event), so a firing key costs 24 bytes per occurrence,
//! not the event.
//! Conditions are evaluated only when an occurrence arrives, so `lt`/`lte` bounds act on arrival
//! and do not detect absence (the `absence` and `silence` types do). A rule whose [`RuleInfo::generate`] is false (referenced by a
//! correlation without `generate: true`) still fires and feeds its correlations, but its
//! detections are not pushed.
//!
//! # Time-driven types: `absence` and `silence`
//!
//! Engine time is the newest event time [`Engine::process`] has seen or [`Engine::advance`] was
//! given; it never goes backwards. `process` advances it to each event's time before applying
//! the event, so a deadline fires when a later event of any key (even one no rule matches)
//! passes it, or when the caller advances time. A deadline `d` fires once engine time minus
//! [`EngineLimits::allowed_lateness`] is strictly after `d`; detections come out in deadline
//! order.
//!
//! - `absence` (`rules: [A, B]`): an `A` occurrence for a key with no pending deadline starts
//!   one at its time plus the timespan, holding the `A` event (further `A`s while it is pending
//!   change nothing). A `B` occurrence for the key timed at or after that `A` and at or before
//!   the deadline cancels it; a `B` with no pending deadline (including one processed before
//!   its `A`, out of order, or after the detection) does nothing. When the deadline passes the
//!   rule fires one `New`: `window_start`, `first_seen` and `last_seen` the `A`'s time, `count`
//!   and `fresh` 1, `events` the `A` event; the key is then forgotten, so the next `A` starts
//!   afresh.
//! - `silence` (`rules: [X]`): every `X` occurrence for a key moves the key's deadline to its time
//!   plus the timespan and is kept as the key's last event (an older one changes nothing). When
//!   the deadline passes the rule fires one `New` the same way, carrying the last event, and
//!   forgets the key: it fires once per silent period and re-arms when the key is seen again. A
//!   key never seen never goes silent.
//!
//! `index_value` is the key's part when the offense index field is a `group-by` field (the
//! default: the first), else the field on the held event, else the rule name. A starting event
//! (`A`, or `X`) whose deadline has already passed when it arrives (`time + timespan` before
//! engine time minus the lateness), or with a lateness `L > 0` one older than engine time minus
//! `L`, is late: counted in [`RuleStats::late_events`], not applied. Held events are payloads
//! like window events: under the payload budget they may be dropped, and the detection then has
//! `fresh` 1 and no `events`. Keys are bounded by `max_keys_per_rule` (least recently updated
//! evicted, its deadline lost, counted in [`RuleStats::keys_evicted`]); a key lives until its
//! deadline fires or is cancelled. These rules cannot be referenced by other correlations
//! (refused at load), so they feed nothing.
//!
//! # Bounds
//!
//! ([`EngineLimits`]): a new key beyond `max_keys_per_rule` evicts the least recently updated
//! key; a window beyond `max_events_per_key` drops its oldest occurrences. Keys are expired as
//! described above. [`EngineStats::approx_bytes`] estimates the memory the windows hold,
//! payloads included.
//!
//! Event payloads (the `Arc<Event>` of occurrences not yet reported) are bounded by
//! [`EngineLimits::max_payload_bytes`] for the whole engine, each payload weighed with
//! [`approx_event_bytes`] (once per window slot holding it, so an event held by two correlations
//! weighs twice). When the payloads exceed the budget, the engine drops payloads down to 7/8 of
//! it (in batches, so a full engine does not shed on every event): keys in least recently
//! updated order across all correlations (one engine-wide update sequence, so the key idle the
//! longest in any correlation goes first), a key's oldest occurrences first. A dropped payload
//! leaves the slot's time and tag, so measures, `count` and `fresh` stay exact; the detection
//! that later reports the slot just carries fewer `events` than `fresh` (evidence sampled under
//! memory pressure, counts exact). [`RuleStats::payloads_dropped`] counts them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use vigil_parsers::event::{Event, FieldRef, FieldValue, Text};

use crate::chunked::ChunkDeque;
use crate::index::Scratch;
use crate::rules::RuleInfo;
use crate::ruleset::{CorrelationRule, Measure, Offense, RuleSet};

/// Bounds on correlation state. Build it with struct update syntax from
/// `EngineLimits::default()` so fields added later keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Group keys kept per correlation rule (least recently updated evicted beyond it; minimum 1).
    pub max_keys_per_rule: usize,
    /// Events kept per key window (oldest dropped beyond it; minimum 1).
    pub max_events_per_key: usize,
    /// Distinct values a `value_count` key tracks (oldest occurrences dropped beyond it;
    /// minimum 1). Default 10 000.
    pub max_values_per_key: usize,
    /// How far behind a correlation's watermark (newest event time fed to it) an event may be
    /// and still be applied; zero (the default) means no rule-wide bound (see the module doc).
    pub allowed_lateness: Duration,
    /// Budget, in [`approx_event_bytes`], for all event payloads held in the engine's windows
    /// (all correlations together). Beyond it payloads of the least recently updated keys are
    /// dropped, keeping counts exact (see the module doc). Zero keeps no payloads in windows (a
    /// detection still carries the event that triggered it, which never waits in a window).
    /// Default 256 MiB.
    pub max_payload_bytes: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_keys_per_rule: 100_000,
            max_events_per_key: 10_000,
            max_values_per_key: 10_000,
            allowed_lateness: Duration::zero(),
            max_payload_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Whether a detection opens an offense or adds to the one a previous detection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DetectionKind {
    /// A rule fired: a single-event match, or a correlation whose condition became true.
    New,
    /// One more event for a correlation key whose condition still holds.
    Update,
}

/// What a rule found. Serializable: the scaled-out mode carries detections between stages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// New or update.
    pub kind: DetectionKind,
    /// The rule's name (or id if it has no name). Shared with the rule: a detection copies no
    /// rule text.
    pub rule: Arc<str>,
    /// The rule's title.
    pub title: Arc<str>,
    /// The rule's Sigma level.
    pub level: Option<Arc<str>>,
    /// The rule's tags.
    pub tags: Arc<[String]>,
    /// `group-by` field (event name) and value; empty for detection rules.
    pub group: Vec<(String, String)>,
    /// The field indexing the offense.
    pub index_field: Arc<str>,
    /// Its value: the group key's when it is a `group-by` field, else its value on the first
    /// event the firing `New` carries (the window's first occurrence unless an earlier detection
    /// reported it or its payload was dropped under memory pressure), else the rule name.
    /// `Update`s repeat their `New`'s.
    pub index_value: String,
    /// Event time of the first event of the window that fired.
    pub window_start: DateTime<Utc>,
    /// Earliest event time in the window.
    pub first_seen: DateTime<Utc>,
    /// Latest event time in the window.
    pub last_seen: DateTime<Utc>,
    /// Occurrences in the window when it fired (`New`), or 1 (`Update`; single-event rules: 1).
    /// Exact. A key that re-arms and fires again reports a window that can overlap occurrences
    /// earlier detections of the key already reported: to total an offense's events, sum
    /// [`Detection::fresh`], not `count`.
    pub count: u64,
    /// Occurrences this detection reports for the first time for its rule and group key (never
    /// reported by an earlier `New` or `Update` of the same rule and key). `Update` and
    /// single-event rules: 1; correlation `New`: the window's occurrences not reported before
    /// (at least 1, unless a bound evicted the arriving occurrence itself). Exact, even when
    /// `events` holds fewer. For a chained correlation, each firing of the inner correlation is
    /// one occurrence of the outer.
    pub fresh: u64,
    /// `value_count` `New` detections: the distinct values in the window; else `None`.
    pub distinct: Option<u64>,
    /// `value_sum` detections (`New` and `Update`): the sum of the counted field over the
    /// window's occurrences after this occurrence arrived, saturating at `u64::MAX`; else
    /// `None`.
    pub sum: Option<u64>,
    /// The events of the `fresh` occurrences, oldest first: a `New` never re-sends an event an
    /// earlier detection of the same key carried. Fewer than `fresh` when payloads were dropped
    /// under memory pressure ([`EngineLimits::max_payload_bytes`]): evidence sampled, counts
    /// exact.
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
    /// Events that arrived more than a timespan behind their key's newest event (`absence` and
    /// `silence`: starting events whose deadline had already passed, see [`Engine::advance`]).
    pub late_events: u64,
    /// Events without a value for some `group-by` field.
    pub ungrouped_events: u64,
    /// `value_count`: events without a value for the counted field; `value_sum`: events whose
    /// summed field is missing or not a non-negative number (skipped, not counted in the window).
    pub valueless_events: u64,
    /// `value_count`: distinct values dropped because of `max_values_per_key`.
    pub values_evicted: u64,
    /// Event payloads dropped from the rule's windows because of `max_payload_bytes` (the
    /// occurrences stay counted; their detections carry fewer events).
    pub payloads_dropped: u64,
    /// Event payloads the rule's windows hold now, in [`approx_event_bytes`].
    pub payload_bytes: u64,
    /// Approximate heap bytes the rule's windows hold (keys, occurrences, value tables, the
    /// key index, and `payload_bytes`): computed from capacities (hash tables by their buckets)
    /// rounded up to the allocator's chunks, plus event sizes; not an allocator measurement,
    /// but within a few percent of one for the state without payloads.
    pub approx_bytes: u64,
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
    /// Event payloads dropped under `max_payload_bytes`, all rules.
    pub payloads_dropped: u64,
    /// Event payloads held, all rules, in [`approx_event_bytes`] (at most
    /// [`EngineLimits::max_payload_bytes`] once an event has been processed).
    pub payload_bytes: u64,
    /// Approximate heap bytes held by correlation windows, all rules (see
    /// [`RuleStats::approx_bytes`]).
    pub approx_bytes: u64,
    /// Routed matches ([`Engine::feed_routed`]) naming a correlation this engine's rule set
    /// does not have.
    pub unroutable: u64,
}

impl EngineStats {
    /// Average approximate bytes per live key (0 without keys).
    pub fn bytes_per_key(&self) -> u64 {
        self.approx_bytes.checked_div(self.keys_live).unwrap_or(0)
    }
}

/// The open firing of a key (boxed in [`KeyState`]: most keys are not firing).
struct Firing {
    /// Time of the first occurrence of the window that fired (nanoseconds).
    start: i64,
    /// The offense index value, when it is not a part of the key (empty otherwise).
    index_value: Box<str>,
}

/// One occurrence in a key's window: its time always (measures need it), whether a detection
/// reported it, and the event itself only until then (or until the payload budget drops it).
/// The detection that reports an occurrence takes its event, so a firing key holds 24 bytes per
/// occurrence. The occurrence's tag (the value hash for `value_count`, the value for
/// `value_sum`, the mask of referenced rules matched for temporal types) lives in the key's
/// [`Tally`], for the types that have one.
#[derive(Clone)]
struct Slot {
    ts: i64,
    event: Option<Arc<Event>>,
    /// The held event's [`approx_event_bytes`], weighed once when it was put in: shedding and
    /// reporting subtract it without touching the (by then cold) event again. It fills what
    /// was padding, so a slot stays 24 bytes.
    weight: u32,
    reported: bool,
}

impl Slot {
    fn new(ts: i64, event: Option<Arc<Event>>) -> Slot {
        let weight = event.as_deref().map_or(0, weigh);
        Slot::weighed(ts, event, weight)
    }

    /// With the event's [`weigh`]t known (computed once per event, not once per window).
    fn weighed(ts: i64, event: Option<Arc<Event>>, weight: u32) -> Slot {
        Slot {
            ts,
            event,
            weight,
            reported: false,
        }
    }

    /// What the held event weighs (0 when none is held).
    fn weight(&self) -> usize {
        if self.event.is_some() {
            self.weight as usize
        } else {
            0
        }
    }

    /// Takes the held event with its weight.
    fn take(&mut self) -> Option<(Arc<Event>, usize)> {
        let weight = self.weight();
        self.event.take().map(|e| (e, weight))
    }
}

/// Approximate bytes one event held in a window costs: the fixed struct and `Arc` header, the raw
/// record, the message and every string field, and the `extra` entries (text plus a per-entry
/// overhead). Cheap (no allocation, one pass over `extra`); used for
/// [`EngineLimits::max_payload_bytes`].
pub fn approx_event_bytes(event: &Event) -> usize {
    /// Two `String` headers plus B-tree node overhead, per `extra` entry.
    const EXTRA_ENTRY: usize = 2 * std::mem::size_of::<String>() + 16;
    /// The `Arc` counters in front of the event.
    const ARC_HEADER: usize = 2 * std::mem::size_of::<usize>();
    // Texts up to 24 bytes are inline in the event: only longer ones take heap bytes.
    let text = |s: &Option<vigil_parsers::Text>| {
        s.as_ref()
            .map_or(0, |t| if t.is_heap_allocated() { t.len() } else { 0 })
    };
    let strings = text(&event.kind)
        + text(&event.category)
        + text(&event.event_type)
        + text(&event.outcome)
        + text(&event.action)
        + text(&event.dataset)
        + text(&event.observer_id)
        + text(&event.observer_type)
        + text(&event.host_name)
        + text(&event.network_transport)
        + text(&event.network_protocol)
        + text(&event.network_community_id)
        + text(&event.user_name)
        + text(&event.process_name)
        + text(&event.message);
    // The rarely set fields, when boxed: the box and its texts.
    let rare = if event.rare_boxed() {
        let texts: usize = event.rare().texts().into_iter().map(text).sum();
        std::mem::size_of::<vigil_parsers::event::Rare>() + texts
    } else {
        0
    };
    let extra: usize = event
        .extra
        .iter()
        .map(|(k, v)| k.len() + v.len() + EXTRA_ENTRY)
        .sum();
    ARC_HEADER + std::mem::size_of::<Event>() + event.raw.len() + strings + rare + extra
}

/// Bytes the allocator takes for a request of `n` bytes: a glibc-style chunk (an 8-byte header,
/// 16-byte granularity, 32 bytes at least); 0 for no allocation. Large requests (served by
/// `mmap`, page-granular) are rare and few, so the same rule is close enough for them.
fn alloc_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// Heap bytes of a `HashMap`'s table: its buckets (a power of two; the map's capacity is 7/8 of
/// them, or one less below 8), an entry and a control byte each, plus one group of trailing
/// control bytes. Empty maps allocate nothing.
fn table_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    let cap = map.capacity();
    if cap == 0 {
        return 0;
    }
    let buckets = if cap < 8 {
        (cap + 1).next_power_of_two()
    } else {
        (cap * 8 / 7).next_power_of_two()
    };
    alloc_bytes((buckets * std::mem::size_of::<(K, V)>()).next_multiple_of(16) + buckets + 16)
}

/// A key's text (the [`encode_key`] of its group values), inline when short (an IPv4 address,
/// a host or user name): no allocation of its own for most keys.
#[derive(Clone)]
enum KeyText {
    Inline {
        len: u8,
        bytes: [u8; KeyText::INLINE],
    },
    Heap(Box<str>),
}

impl KeyText {
    /// Longest text kept inline.
    const INLINE: usize = 22;

    fn new(s: &str) -> Self {
        let mut bytes = [0u8; KeyText::INLINE];
        match (u8::try_from(s.len()), bytes.get_mut(..s.len())) {
            (Ok(len), Some(dst)) => {
                dst.copy_from_slice(s.as_bytes());
                KeyText::Inline { len, bytes }
            }
            _ => KeyText::Heap(s.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            KeyText::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            KeyText::Heap(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` whole, so always valid.
            KeyText::Inline { .. } => std::str::from_utf8(self.bytes()).unwrap_or_default(),
            KeyText::Heap(s) => s,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            KeyText::Inline { .. } => 0,
            KeyText::Heap(s) => alloc_bytes(s.len()),
        }
    }
}

/// A key's neighbours in its window's update order (slab ids, [`NIL`] for none): an intrusive
/// doubly linked list, so an update moves the key to the end in place (no per-update entry,
/// nothing stale to compact).
#[derive(Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

/// No key: an end of the update order, or an id never given out.
const NIL: u32 = u32::MAX;

impl Links {
    const NONE: Links = Links {
        prev: NIL,
        next: NIL,
    };
}

/// A key's occurrences, oldest first: the first one inline (most keys of a large key set are
/// seen once, and absence/silence keys hold exactly one), a ring buffer from the second on, and
/// shared chunks past [`BIG_KEY`] occurrences (a snapshot of the windows shares them instead
/// of copying every occurrence on the engine thread: see [`crate::chunked`]). Cloning shares
/// a big key's chunks and copies the others' occurrences.
#[derive(Clone)]
enum Slots {
    One(Slot),
    Many(VecDeque<Slot>),
    Big(Box<ChunkDeque<Slot>>),
}

/// Occurrences beyond which a key's ring buffer becomes shared chunks (and at or below which
/// [`Slots::shrink_to_fit`] makes it a ring buffer again). A snapshot copies at most this many
/// occurrences of a key.
const BIG_KEY: usize = 2 * crate::chunked::CHUNK;

impl Default for Slots {
    fn default() -> Self {
        Slots::Many(VecDeque::new())
    }
}

/// [`Slots::iter`].
enum SlotsIter<'a> {
    Flat(std::iter::Chain<std::slice::Iter<'a, Slot>, std::slice::Iter<'a, Slot>>),
    Chunked(crate::chunked::Iter<'a, Slot>),
}

impl<'a> Iterator for SlotsIter<'a> {
    type Item = &'a Slot;

    fn next(&mut self) -> Option<&'a Slot> {
        match self {
            SlotsIter::Flat(i) => i.next(),
            SlotsIter::Chunked(i) => i.next(),
        }
    }
}

/// [`Slots::iter_mut`].
enum SlotsIterMut<'a> {
    Flat(std::iter::Chain<std::slice::IterMut<'a, Slot>, std::slice::IterMut<'a, Slot>>),
    Chunked(crate::chunked::IterMut<'a, Slot>),
}

impl<'a> Iterator for SlotsIterMut<'a> {
    type Item = &'a mut Slot;

    fn next(&mut self) -> Option<&'a mut Slot> {
        match self {
            SlotsIterMut::Flat(i) => i.next(),
            SlotsIterMut::Chunked(i) => i.next(),
        }
    }
}

impl Slots {
    /// Empty, with room for `n` occurrences (inline for one; a big key's chunks are made as
    /// it grows).
    fn with_capacity(n: usize) -> Self {
        if n <= 1 {
            Slots::default()
        } else {
            Slots::Many(VecDeque::with_capacity(n.min(BIG_KEY + 1)))
        }
    }

    fn len(&self) -> usize {
        match self {
            Slots::One(_) => 1,
            Slots::Many(d) => d.len(),
            Slots::Big(c) => c.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> SlotsIter<'_> {
        match self {
            Slots::One(s) => SlotsIter::Flat(std::slice::from_ref(s).iter().chain(&[])),
            Slots::Many(d) => {
                let (a, b) = d.as_slices();
                SlotsIter::Flat(a.iter().chain(b))
            }
            Slots::Big(c) => SlotsIter::Chunked(c.iter()),
        }
    }

    /// Every occurrence, mutably (a big key's chunks a snapshot shares are copied first).
    fn iter_mut(&mut self) -> SlotsIterMut<'_> {
        match self {
            Slots::One(s) => SlotsIterMut::Flat(std::slice::from_mut(s).iter_mut().chain(&mut [])),
            Slots::Many(d) => {
                let (a, b) = d.as_mut_slices();
                SlotsIterMut::Flat(a.iter_mut().chain(b))
            }
            Slots::Big(c) => SlotsIterMut::Chunked(c.iter_mut()),
        }
    }

    fn front(&self) -> Option<&Slot> {
        match self {
            Slots::One(s) => Some(s),
            Slots::Many(d) => d.front(),
            Slots::Big(c) => c.front(),
        }
    }

    fn front_mut(&mut self) -> Option<&mut Slot> {
        match self {
            Slots::One(s) => Some(s),
            Slots::Many(d) => d.front_mut(),
            Slots::Big(c) => c.front_mut(),
        }
    }

    fn back(&self) -> Option<&Slot> {
        match self {
            Slots::One(s) => Some(s),
            Slots::Many(d) => d.back(),
            Slots::Big(c) => c.back(),
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        match self {
            Slots::One(s) => (i == 0).then_some(s),
            Slots::Many(d) => d.get_mut(i),
            Slots::Big(c) => c.get_mut(i),
        }
    }

    /// The number of leading occurrences `pred` holds for (they must come first).
    fn partition_point(&self, mut pred: impl FnMut(&Slot) -> bool) -> usize {
        // Occurrences mostly arrive in time order, after the newest: one look at the back
        // instead of a binary search over a window that may hold thousands.
        if self.back().is_some_and(&mut pred) {
            return self.len();
        }
        match self {
            Slots::One(_) => 0,
            Slots::Many(d) => d.partition_point(pred),
            Slots::Big(c) => c.partition_point(pred),
        }
    }

    /// Inserts `slot` at position `at` (at most the length).
    fn insert(&mut self, at: usize, slot: Slot) {
        match self {
            Slots::Many(d) if d.capacity() == 0 => *self = Slots::One(slot),
            Slots::Many(d) if d.len() >= BIG_KEY => {
                let mut c = ChunkDeque::from_deque(std::mem::take(d));
                c.insert(at, slot);
                *self = Slots::Big(Box::new(c));
            }
            Slots::Many(d) => {
                reserve_one(d);
                d.insert(at.min(d.len()), slot);
            }
            Slots::Big(c) => c.insert(at, slot),
            Slots::One(_) => {
                let Slots::One(first) = std::mem::take(self) else {
                    return;
                };
                let mut d = VecDeque::with_capacity(3);
                if at == 0 {
                    d.extend([slot, first]);
                } else {
                    d.extend([first, slot]);
                }
                *self = Slots::Many(d);
            }
        }
    }

    fn pop_front(&mut self) -> Option<Slot> {
        match self {
            Slots::One(_) => match std::mem::take(self) {
                Slots::One(s) => Some(s),
                _ => None,
            },
            Slots::Many(d) => d.pop_front(),
            Slots::Big(c) => {
                let s = c.pop_front();
                if c.len() == 0 {
                    *self = Slots::default();
                }
                s
            }
        }
    }

    /// Gives back the buffer's slack (a single occurrence goes back inline, a big key that
    /// shrank to [`BIG_KEY`] back to a ring buffer).
    fn shrink_to_fit(&mut self) {
        match self {
            Slots::Many(d) if d.len() == 1 => {
                if let Some(s) = d.pop_front() {
                    *self = Slots::One(s);
                }
            }
            Slots::Many(d) => d.shrink_to_fit(),
            Slots::Big(c) if c.len() <= BIG_KEY => {
                if let Slots::Big(c) = std::mem::take(self) {
                    *self = Slots::Many(c.into_deque());
                    self.shrink_to_fit();
                }
            }
            Slots::Big(_) | Slots::One(_) => {}
        }
    }

    /// Heap bytes of the buffer (none inline). A big key's chunks are counted full (the estimate
    /// stays a function of the length, not of what the last snapshot shared).
    fn heap_bytes(&self) -> usize {
        match self {
            Slots::One(_) => 0,
            Slots::Many(d) => alloc_bytes(d.capacity() * std::mem::size_of::<Slot>()),
            Slots::Big(c) => {
                let chunk = alloc_bytes(
                    2 * std::mem::size_of::<usize>() + std::mem::size_of::<VecDeque<Slot>>(),
                ) + alloc_bytes(crate::chunked::CHUNK * std::mem::size_of::<Slot>());
                alloc_bytes(std::mem::size_of::<ChunkDeque<Slot>>())
                    + alloc_bytes(c.chunk_capacity() * std::mem::size_of::<usize>())
                    + c.chunk_count() * chunk
            }
        }
    }
}

struct KeyState {
    key: KeyText,
    slots: Slots,
    /// The engine-wide update sequence at the key's last update.
    seq: u64,
    /// Its place in the window's update order.
    lru: Links,
    firing: Option<Box<Firing>>,
    /// `value_count`, `value_sum` and the temporal types: the occurrences' tags and what they
    /// add up to. Boxed so keys of the other types pay 8 bytes for it.
    tally: Option<Box<Tally>>,
}

/// What a key tracks beyond its occurrences' times, by correlation type.
struct Tally {
    /// The tag of each slot, in slot order.
    tags: VecDeque<u64>,
    kind: TallyKind,
}

enum TallyKind {
    /// `value_count` and `temporal`: occurrences per tag in the window.
    Tags(HashMap<u64, u32>),
    /// `value_sum`: the sum of the slots' tags (the values). Kept in 128 bits so it stays exact
    /// (no slot count can overflow it) as occurrences enter and leave; reported saturated to
    /// `u64`.
    Sum(u128),
    /// `temporal_ordered`: the steps of the measure's walk (see [`ordered_inserted`]).
    Ordered(Vec<u32>),
}

/// Whether `tag` holds rule `j`'s bit (no rule past the 64th has one).
fn holds_rule(tag: u64, j: usize) -> bool {
    j < 64 && tag & (1u64 << j) != 0
}

/// The `temporal_ordered` measure is a walk over the tags in slot order: each tag advances the
/// count `j` while it holds rule `j`'s bit, and the measure is the final `j`. `steps[k]` is the
/// slot of the tag that advanced `k` to `k + 1` (so the measure is `steps.len()`). Walking the
/// whole window for each occurrence cost the engine 8.6 % of its time on keys with thousands
/// of them; the steps are instead kept up to date as tags come and go, in constant time for
/// an occurrence added at the end or a front tag that made no step.
///
/// Continues the walk at slot `from`, `steps` being the walk of the slots before it.
fn ordered_walk(tags: &VecDeque<u64>, from: usize, steps: &mut Vec<u32>) {
    for (i, &tag) in tags.iter().enumerate().skip(from) {
        while holds_rule(tag, steps.len()) {
            steps.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
}

/// The steps after a tag was inserted at slot `at` (`tags` holds it).
fn ordered_inserted(tags: &VecDeque<u64>, at: usize, steps: &mut Vec<u32>) {
    // Steps before `at` stand; the walk reaches the new tag at count `before`.
    let before = steps.partition_point(|&p| (p as usize) < at);
    if !tags.get(at).is_some_and(|&tag| holds_rule(tag, before)) {
        // The walk passes the new tag without a step: the later steps move one slot on.
        for p in &mut steps[before..] {
            *p = p.saturating_add(1);
        }
    } else {
        steps.truncate(before);
        ordered_walk(tags, at, steps);
    }
}

/// The steps after the front tag was removed (`tags` no longer holds it).
fn ordered_popped(tags: &VecDeque<u64>, steps: &mut Vec<u32>) {
    if steps.first() != Some(&0) {
        // The front tag made no step: the same walk, one slot earlier.
        for p in steps.iter_mut() {
            *p = p.saturating_sub(1);
        }
        return;
    }
    // The old walk, in old slots, tells where to look: the tags between two of its steps,
    // `old[j - 1]` up to `old[j]`, lack bit `j` (the walk took the first that had it), and
    // those after its last step lack the next bit. The new walk is never ahead of the old one
    // (one slot earlier); once it is at or behind a step, that step (one slot earlier) is the
    // new one without looking at the tags between.
    // At most 64 steps: copied aside on the stack, not reallocated on every pop.
    let mut saved = [0u32; 64];
    let n = steps.len().min(64);
    saved[..n].copy_from_slice(&steps[..n]);
    let old = &saved[..n];
    steps.clear();
    let mut start = 0usize;
    while steps.len() < 64 {
        let j = steps.len();
        let caught_up = j == 0 || start + 1 >= old[j - 1] as usize;
        let next = match old.get(j) {
            Some(&p) if caught_up && p >= 1 && (p - 1) as usize >= start => Some((p - 1) as usize),
            None if caught_up && j > 0 => None,
            _ => (start..tags.len()).find(|&i| tags.get(i).is_some_and(|&t| holds_rule(t, j))),
        };
        let Some(p) = next else {
            break;
        };
        steps.push(u32::try_from(p).unwrap_or(u32::MAX));
        start = p;
    }
}

impl Tally {
    /// The empty tally a new key of `measure` starts with (`None` for the types without tags).
    fn for_measure(measure: &Measure) -> Option<Box<Tally>> {
        let kind = match measure {
            Measure::ValueCount(_) | Measure::Temporal => TallyKind::Tags(HashMap::new()),
            Measure::ValueSum(_) => TallyKind::Sum(0),
            Measure::TemporalOrdered => TallyKind::Ordered(Vec::new()),
            Measure::EventCount
            | Measure::Absence
            | Measure::Silence
            | Measure::Periodic { .. } => return None,
        };
        Some(Box::new(Tally {
            tags: VecDeque::new(),
            kind,
        }))
    }
}

/// Makes room for one more element of a key's ring buffer (occurrences, tags): room for one to
/// start with, then growing by half (at least two) rather than `VecDeque`'s doubling from four,
/// so small windows stay within a few elements of their length (three 24-byte slots fill an
/// allocator chunk exactly).
fn reserve_one<T>(d: &mut VecDeque<T>) {
    if d.len() == d.capacity() {
        let more = if d.is_empty() {
            1
        } else {
            (d.len() / 2).max(2)
        };
        d.reserve_exact(more);
    }
}

impl KeyState {
    fn new(key: &str, tally: Option<Box<Tally>>) -> Self {
        KeyState {
            key: KeyText::new(key),
            slots: Slots::default(),
            seq: 0,
            lru: Links::NONE,
            firing: None,
            tally,
        }
    }

    fn newest(&self) -> i64 {
        self.slots.back().map_or(i64::MIN, |s| s.ts)
    }

    /// The tag table (`value_count`, `temporal`).
    fn tags(&self) -> Option<&HashMap<u64, u32>> {
        match self.tally.as_deref().map(|t| &t.kind) {
            Some(TallyKind::Tags(t)) => Some(t),
            _ => None,
        }
    }

    /// The window's sum (`value_sum`; 0 for the other types).
    fn sum(&self) -> u128 {
        match self.tally.as_deref().map(|t| &t.kind) {
            Some(TallyKind::Sum(s)) => *s,
            _ => 0,
        }
    }

    /// Inserts an occurrence with its tag at `at` (a slot position) and counts the tag.
    fn insert(&mut self, at: usize, slot: Slot, tag: u64) {
        let at = at.min(self.slots.len());
        self.slots.insert(at, slot);
        if let Some(t) = self.tally.as_deref_mut() {
            reserve_one(&mut t.tags);
            let at = at.min(t.tags.len());
            t.tags.insert(at, tag);
            match &mut t.kind {
                TallyKind::Tags(m) => *m.entry(tag).or_insert(0) += 1,
                TallyKind::Sum(s) => *s = s.saturating_add(u128::from(tag)),
                TallyKind::Ordered(steps) => ordered_inserted(&t.tags, at, steps),
            }
        }
    }

    /// Drops the oldest occurrence (subtracting its payload from `payload`); true when that made
    /// a tag vanish from the window.
    fn pop_front(&mut self, payload: &mut usize) -> bool {
        let Some(slot) = self.slots.pop_front() else {
            return false;
        };
        *payload = payload.saturating_sub(slot.weight());
        let Some(t) = self.tally.as_deref_mut() else {
            return false;
        };
        let tag = t.tags.pop_front().unwrap_or(0);
        match &mut t.kind {
            TallyKind::Tags(tags) => {
                if let Some(n) = tags.get_mut(&tag) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        tags.remove(&tag);
                        return true;
                    }
                }
            }
            TallyKind::Sum(s) => *s = s.saturating_sub(u128::from(tag)),
            TallyKind::Ordered(steps) => ordered_popped(&t.tags, steps),
        }
        false
    }

    /// Gives back the slack of the occurrence buffers.
    fn shrink(&mut self) {
        self.slots.shrink_to_fit();
        if let Some(t) = self.tally.as_deref_mut() {
            t.tags.shrink_to_fit();
        }
    }

    /// Payload bytes the key's slots hold.
    fn payload_bytes(&self) -> usize {
        self.slots.iter().map(Slot::weight).sum()
    }

    /// Heap bytes this key owns outside its slab entry, as allocated (see [`alloc_bytes`]): a
    /// long key's text, the occurrences, the firing and the tally (not payloads).
    fn heap_bytes(&self) -> usize {
        let slots = self.slots.heap_bytes();
        let firing = self.firing.as_ref().map_or(0, |f| {
            alloc_bytes(std::mem::size_of::<Firing>()) + alloc_bytes(f.index_value.len())
        });
        let tally = self.tally.as_deref().map_or(0, |t| {
            let table = match &t.kind {
                TallyKind::Tags(m) => table_bytes(m),
                TallyKind::Sum(_) => 0,
                TallyKind::Ordered(steps) => alloc_bytes(steps.capacity() * 4),
            };
            alloc_bytes(std::mem::size_of::<Tally>())
                + alloc_bytes(t.tags.capacity() * std::mem::size_of::<u64>())
                + table
        });
        self.key.heap_bytes() + slots + firing + tally
    }
}

/// Keys per slab chunk: the slab grows a chunk at a time (no copy of the whole key table, at
/// most one partly used chunk).
const CHUNK: usize = 1024;

/// A window's keys by id (`u32`), in fixed-size chunks; ids of removed keys are reused.
#[derive(Default)]
struct Slab {
    chunks: Vec<Vec<Option<KeyState>>>,
    free: Vec<u32>,
    live: usize,
}

impl Slab {
    fn get(&self, id: u32) -> Option<&KeyState> {
        let i = id as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_ref()
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut KeyState> {
        let i = id as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)?.as_mut()
    }

    /// Stores a key; `None` only when ids ran out (4 billion keys).
    fn insert(&mut self, st: KeyState) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            let i = id as usize;
            if let Some(e) = self
                .chunks
                .get_mut(i / CHUNK)
                .and_then(|c| c.get_mut(i % CHUNK))
            {
                *e = Some(st);
                self.live += 1;
                return Some(id);
            }
        }
        let full = self.chunks.last().is_none_or(|c| c.len() >= CHUNK);
        if full {
            // The first chunk grows by doubling (a window with few keys stays small), the next
            // ones are allocated whole.
            let cap = if self.chunks.is_empty() { 4 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(cap));
        }
        let base = (self.chunks.len() - 1) * CHUNK;
        let chunk = self.chunks.last_mut()?;
        let id = u32::try_from(base + chunk.len())
            .ok()
            .filter(|&id| id != NIL)?;
        if chunk.len() == chunk.capacity() {
            let grow = chunk.len().clamp(1, CHUNK - chunk.len());
            chunk.reserve_exact(grow);
        }
        chunk.push(Some(st));
        self.live += 1;
        Some(id)
    }

    fn remove(&mut self, id: u32) -> Option<KeyState> {
        let i = id as usize;
        let st = self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)?.take()?;
        self.free.push(id);
        self.live -= 1;
        Some(st)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &KeyState)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| Some((u32::try_from(i).ok()?, e.as_ref()?)))
    }

    fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<Option<KeyState>>();
        self.chunks
            .iter()
            .map(|c| alloc_bytes(c.capacity() * entry))
            .sum::<usize>()
            + alloc_bytes(self.chunks.capacity() * std::mem::size_of::<Vec<Option<KeyState>>>())
            + alloc_bytes(self.free.capacity() * std::mem::size_of::<u32>())
    }
}

/// A `Hasher` for keys that already are hashes (the key index's `u64`s, SipHash outputs under
/// the window's random keys).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Key ids by key text, without a second copy of the text: ids by the text's 64-bit hash (the
/// text is in the slab entry, compared on lookup), and the rare key whose hash another key
/// already has by its text.
#[derive(Default)]
struct KeyIndex {
    by_hash: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Keys whose hash was taken when they came (practically always empty).
    overflow: HashMap<Box<str>, u32>,
}

impl KeyIndex {
    /// The id of `key` (hash `h`); `is_key(id)` tells whether slab entry `id` is `key`.
    fn find(&self, h: u64, key: &str, is_key: impl FnOnce(u32) -> bool) -> Option<u32> {
        if let Some(&id) = self.by_hash.get(&h) {
            if is_key(id) {
                return Some(id);
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(key).copied()
    }

    /// Adds `key` (hash `h`, not present yet) as `id`.
    fn insert(&mut self, h: u64, key: &str, id: u32) {
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.overflow.insert(key.into(), id);
            }
        }
    }

    /// Removes `key` (hash `h`), which is `id`.
    fn remove(&mut self, h: u64, key: &str, id: u32) {
        if self.by_hash.get(&h) == Some(&id) {
            self.by_hash.remove(&h);
        } else {
            self.overflow.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.len() + self.overflow.len()
    }

    /// Heap bytes: both tables and the overflow keys' text.
    fn bytes(&self) -> usize {
        let texts: usize = self.overflow.keys().map(|k| alloc_bytes(k.len())).sum();
        table_bytes(&self.by_hash) + table_bytes(&self.overflow) + texts
    }
}

struct Windows {
    /// The keys' state, by id.
    slab: Slab,
    /// Key ids by key text, hashed with `hasher`: foldhash, seeded at random per window (an
    /// attacker who picks key texts cannot aim them at one hash; a collision only sends a key
    /// to `KeyIndex::overflow`). SipHash here was 3 % of the engine thread in a flow run, where
    /// nearly every flow makes new keys.
    index: KeyIndex,
    hasher: foldhash::quality::RandomState,
    /// Keys in update order (least recently updated first): first and last.
    head: u32,
    tail: u32,
    /// Where the payload budget sheds next: no key before it in update order holds payloads
    /// it may shed (each is firing, or was shed empty since its last update); keys updated
    /// move behind it. [`NIL`] when that is every key.
    shed_from: u32,
    watermark: Option<i64>,
    /// `absence` and `silence`: pending deadlines `(slot time + span, key id)`, earliest first.
    /// Every key of such a rule holds exactly one slot (the starting event, or the last event
    /// seen) and one entry here.
    deadlines: BTreeSet<(i64, u32)>,
    /// `absence` and `silence`: the timespan in nanoseconds.
    span: i64,
    /// Sum of the keys' [`KeyState::heap_bytes`].
    heap: usize,
    /// Sum of the payloads held, in [`approx_event_bytes`].
    payload: usize,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            slab: Slab::default(),
            index: KeyIndex::default(),
            hasher: foldhash::quality::RandomState::default(),
            head: NIL,
            tail: NIL,
            shed_from: NIL,
            watermark: None,
            deadlines: BTreeSet::new(),
            span: 0,
            heap: 0,
            payload: 0,
        }
    }
}

impl Windows {
    fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Live keys.
    fn len(&self) -> usize {
        self.slab.live
    }

    /// The id of key `key`.
    fn find(&self, key: &str) -> Option<u32> {
        let h = self.key_hash(key.as_bytes());
        self.index.find(h, key, |id| {
            self.slab
                .get(id)
                .is_some_and(|st| st.key.bytes() == key.as_bytes())
        })
    }

    /// Adds key `st` (not present yet); its id, `None` only when ids ran out.
    fn insert(&mut self, st: KeyState) -> Option<u32> {
        let heap = st.heap_bytes();
        let h = self.key_hash(st.key.bytes());
        let id = self.slab.insert(st)?;
        let key = self.slab.get(id).map_or("", |st| st.key.as_str());
        self.index.insert(h, key, id);
        self.heap = self.heap.saturating_add(heap);
        Some(id)
    }

    fn remove(&mut self, id: u32) -> bool {
        self.unlink(id);
        let Some(st) = self.slab.remove(id) else {
            return false;
        };
        let h = self.key_hash(st.key.bytes());
        self.index.remove(h, st.key.as_str(), id);
        if let Some(front) = st.slots.front() {
            if !self.deadlines.is_empty() {
                self.deadlines
                    .remove(&(front.ts.saturating_add(self.span), id));
            }
        }
        self.heap = self.heap.saturating_sub(st.heap_bytes());
        self.payload = self.payload.saturating_sub(st.payload_bytes());
        true
    }

    /// Takes key `id` out of the update order (nothing if it is not in it).
    fn unlink(&mut self, id: u32) {
        let Some(st) = self.slab.get_mut(id) else {
            return;
        };
        let Links { prev, next } = st.lru;
        st.lru = Links::NONE;
        if prev == NIL && self.head != id {
            return;
        }
        if self.shed_from == id {
            self.shed_from = next;
        }
        match self.slab.get_mut(prev) {
            Some(p) => p.lru.next = next,
            None => self.head = next,
        }
        match self.slab.get_mut(next) {
            Some(n) => n.lru.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Records an update of key `id` (whose `seq` was just set): it goes last in the update
    /// order, where shedding will reach it.
    fn touch(&mut self, id: u32) {
        if self.tail == id {
            if self.shed_from == NIL {
                self.shed_from = id;
            }
            return;
        }
        self.unlink(id);
        let tail = self.tail;
        let Some(st) = self.slab.get_mut(id) else {
            return;
        };
        st.lru = Links {
            prev: tail,
            next: NIL,
        };
        match self.slab.get_mut(tail) {
            Some(t) => t.lru.next = id,
            None => self.head = id,
        }
        self.tail = id;
        if self.shed_from == NIL {
            self.shed_from = id;
        }
    }

    /// The `seq` of the least recently updated key that may still hold payloads to shed (not
    /// firing: a firing key's payloads went to detections), moving past firing ones.
    fn held_front(&mut self) -> Option<u64> {
        loop {
            let st = self.slab.get(self.shed_from)?;
            if st.firing.is_none() {
                return Some(st.seq);
            }
            self.shed_from = st.lru.next;
        }
    }

    /// Drops payloads of the key [`Windows::held_front`] found, oldest occurrence first, until
    /// `need` bytes are freed or the key holds none (then shedding moves past it). Returns the
    /// payloads dropped.
    fn shed_front(&mut self, need: usize) -> u64 {
        let Some(st) = self.slab.get_mut(self.shed_from) else {
            return 0;
        };
        let mut freed = 0usize;
        let mut dropped = 0u64;
        let mut i = 0;
        // One pass (indexing a big key's chunks from the front each time would not be).
        for slot in st.slots.iter_mut() {
            if freed >= need {
                break;
            }
            if let Some((_, weight)) = slot.take() {
                freed = freed.saturating_add(weight);
                dropped += 1;
            }
            i += 1;
        }
        if !st.slots.iter().skip(i).any(|s| s.event.is_some()) {
            self.shed_from = st.lru.next;
        }
        self.payload = self.payload.saturating_sub(freed);
        dropped
    }

    /// Removes least recently updated keys while `done` says the front key should go; returns
    /// how many were removed.
    fn drop_oldest(&mut self, mut done: impl FnMut(&KeyState, usize) -> bool) -> u64 {
        let mut n = 0;
        loop {
            let id = self.head;
            let Some(st) = self.slab.get(id) else {
                break;
            };
            if !done(st, self.len()) || !self.remove(id) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Approximate heap bytes of the window as allocated: the keys' own allocations, the slab,
    /// the key index (buckets, not just entries), the deadlines and the payloads.
    fn approx_bytes(&self) -> usize {
        // B-tree leaves of 11 entries, about two thirds full on average.
        let deadline = 2 * std::mem::size_of::<(i64, u32)>();
        self.heap
            + self.payload
            + self.slab.bytes()
            + self.index.bytes()
            + self.deadlines.len() * deadline
    }
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
    /// The window keys of the event being fed (kept to reuse its buffers).
    group_keys: GroupKeys,
    /// The [`weigh`]t of the event being processed, once a window needed it.
    event_weight: Option<u32>,
    matched: Vec<usize>,
    /// Per correlation: the referenced rules (mask of positions) the current event matched.
    masks: Vec<u64>,
    /// Correlations with a non-zero mask, inner ones (lower index) first.
    pending: BinaryHeap<Reverse<usize>>,
    /// Engine-wide key update sequence (so least recently updated compares across correlations).
    clock: u64,
    /// Sum of the windows' payloads.
    payload: usize,
    /// Engine time: the newest event time processed or time passed to [`Engine::advance`]
    /// (nanoseconds); `absence` and `silence` deadlines fire against it.
    now: Option<i64>,
    /// Correlations (indices) of the timed types (`absence`, `silence`).
    timed: Vec<usize>,
    /// Routed matches naming a correlation this engine does not have.
    unroutable: u64,
    /// Correlation index by rule name (for routed matches).
    by_name: HashMap<String, usize>,
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

fn text_of(event: &Event, field: &FieldRef) -> Option<String> {
    field.get(event).map(|v| v.as_text().into_owned())
}

/// Event time as nanoseconds since the epoch (clamped outside 1677-2262).
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn time(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

fn value_hash(v: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// One text for the key parts: the value itself for one part, else length-prefixed parts.
fn encode_key<S: AsRef<str>>(parts: &[S]) -> String {
    encoded_key(parts).into_owned()
}

/// [`encode_key`], borrowing the one value of a one-field key (most keys) instead of copying it.
fn encoded_key<S: AsRef<str>>(parts: &[S]) -> std::borrow::Cow<'_, str> {
    match parts {
        [one] => std::borrow::Cow::Borrowed(one.as_ref()),
        _ => {
            let mut s = String::with_capacity(parts.iter().map(|p| p.as_ref().len() + 4).sum());
            for p in parts {
                let p = p.as_ref();
                // The length in decimal, without the formatting machinery.
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut n = p.len();
                loop {
                    at -= 1;
                    if let Some(d) = digits.get_mut(at) {
                        *d = b'0' + (n % 10) as u8;
                    }
                    n /= 10;
                    if n == 0 || at == 0 {
                        break;
                    }
                }
                s.push_str(
                    std::str::from_utf8(digits.get(at..).unwrap_or_default()).unwrap_or("0"),
                );
                s.push(':');
                s.push_str(p);
            }
            std::borrow::Cow::Owned(s)
        }
    }
}

fn base_detection(info: &RuleInfo, offense: &Offense, kind: DetectionKind) -> Detection {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Detection {
        kind,
        rule: Arc::clone(&info.shared.name),
        title: Arc::clone(&info.shared.title),
        level: info.shared.level.clone(),
        tags: Arc::clone(&info.shared.tags),
        group: Vec::new(),
        index_field: Arc::clone(&offense.index_shared),
        index_value: String::new(),
        window_start: epoch,
        first_seen: epoch,
        last_seen: epoch,
        count: 0,
        fresh: 0,
        distinct: None,
        sum: None,
        events: Vec::new(),
        relevance: offense.relevance,
        credibility: offense.credibility,
        severity: offense.severity,
    }
}

/// The measure of a key's window and, for `value_count`, the distinct values.
fn measure(rule: &CorrelationRule, st: &KeyState) -> (u64, Option<u64>) {
    let len = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    match &rule.measure {
        Measure::EventCount => (len(st.slots.len()), None),
        Measure::ValueCount(_) => {
            let d = len(st.tags().map_or(0, HashMap::len));
            (d, Some(d))
        }
        Measure::ValueSum(_) => (u64::try_from(st.sum()).unwrap_or(u64::MAX), None),
        Measure::Absence | Measure::Silence => (len(st.slots.len()), None),
        Measure::Periodic {
            max_jitter_ppm,
            min_interval_ns,
        } => {
            let regular = periodic(
                st.slots.iter().map(|s| s.ts),
                *max_jitter_ppm,
                *min_interval_ns,
            );
            (if regular { len(st.slots.len()) } else { 0 }, None)
        }
        Measure::Temporal => {
            let mask = st.tags().map_or(0, |t| t.keys().fold(0u64, |m, k| m | k));
            (u64::from(mask.count_ones()), None)
        }
        Measure::TemporalOrdered => {
            let steps = match st.tally.as_deref().map(|t| &t.kind) {
                Some(TallyKind::Ordered(steps)) => steps.len(),
                _ => 0,
            };
            (len(steps.min(rule.n_rules.min(64))), None)
        }
    }
}

/// Whether sorted occurrence times come at a regular period: at least two gaps, the median gap
/// at least `min_interval_ns`, and the median absolute deviation of the gaps at most
/// `max_jitter_ppm` millionths of the median. Median-based, so a few stray occurrences (a user opening the
/// same site by hand) do not hide a beacon, and a few missed beats do not either.
fn periodic(times: impl Iterator<Item = i64>, max_jitter_ppm: u32, min_interval_ns: i64) -> bool {
    let mut prev: Option<i64> = None;
    let mut gaps: Vec<i64> = Vec::new();
    for t in times {
        if let Some(p) = prev {
            gaps.push(t.saturating_sub(p));
        }
        prev = Some(t);
    }
    if gaps.len() < 2 {
        return false;
    }
    let median = |v: &mut Vec<i64>| -> i64 {
        let mid = v.len() / 2;
        *v.select_nth_unstable(mid).1
    };
    let period = median(&mut gaps);
    if period < min_interval_ns.max(1) {
        return false;
    }
    let mut dev: Vec<i64> = gaps.iter().map(|g| (g - period).abs()).collect();
    let mad = median(&mut dev);
    i128::from(mad) * 1_000_000 <= i128::from(max_jitter_ppm) * i128::from(period)
}

/// Applies one occurrence to one key of one correlation. Returns whether it fired `New`.
#[allow(clippy::too_many_arguments)]
fn apply(
    w: &mut Windows,
    clock: &mut u64,
    stats: &mut RuleStats,
    info: &RuleInfo,
    rule: &CorrelationRule,
    limits: &EngineLimits,
    parts: &[Text],
    bits: u64,
    pos: usize,
    (event, weight): (&Arc<Event>, u32),
    out: &mut Vec<Detection>,
) -> bool {
    let ts = nanos(event.timestamp);
    let span = rule.timespan.num_nanoseconds().unwrap_or(i64::MAX).max(1);
    let tag = match &rule.measure {
        Measure::ValueCount(_) => {
            let Some(v) = rule.value_fields.get(pos).and_then(|f| f.get(event)) else {
                stats.valueless_events += 1;
                return false;
            };
            value_hash(&value_text(&v))
        }
        Measure::ValueSum(_) => {
            let Some(v) = rule
                .value_fields
                .get(pos)
                .and_then(|f| f.get(event))
                .and_then(|v| numeric(&v))
            else {
                stats.valueless_events += 1;
                return false;
            };
            v
        }
        Measure::Temporal | Measure::TemporalOrdered => bits,
        Measure::EventCount | Measure::Absence | Measure::Silence | Measure::Periodic { .. } => 0,
    };
    let watermark = w.watermark.map_or(ts, |m| m.max(ts));
    w.watermark = Some(watermark);
    let lateness = limits
        .allowed_lateness
        .num_nanoseconds()
        .unwrap_or(i64::MAX);
    if lateness > 0 && ts < watermark.saturating_sub(lateness) {
        stats.late_events += 1;
        return false;
    }
    // Expire keys whose window has long passed (least recently updated first).
    let horizon = if lateness > 0 {
        span.saturating_add(lateness)
    } else {
        span.saturating_mul(2)
    };
    let limit = watermark.saturating_sub(horizon);
    stats.keys_expired += w.drop_oldest(|st, _| st.newest() <= limit);

    let key_text = encoded_key(parts);
    let id = match w.find(&key_text) {
        Some(id) => id,
        None => {
            let max = limits.max_keys_per_rule.max(1);
            stats.keys_evicted += w.drop_oldest(|_, live| live >= max);
            let Some(id) = w.insert(KeyState::new(&key_text, Tally::for_measure(&rule.measure)))
            else {
                return false;
            };
            id
        }
    };
    let Some(st) = w.slab.get_mut(id) else {
        return false;
    };
    if !st.slots.is_empty() && ts <= st.newest().saturating_sub(span) {
        stats.late_events += 1;
        return false;
    }
    let before = st.heap_bytes();
    let at = st.slots.partition_point(|e| e.ts <= ts);
    // The payload is kept until a detection reports the occurrence (an `Update` just below, or
    // a later `New`), whether or not the key is firing now: this occurrence may be the one that
    // stops the condition holding, and the next `New` reports it.
    let slot = Slot::weighed(ts, Some(Arc::clone(event)), weight);
    w.payload = w.payload.saturating_add(slot.weight());
    st.insert(at, slot, tag);
    let start = st.newest().saturating_sub(span);
    let mut popped = 0usize;
    while st.slots.front().is_some_and(|e| e.ts <= start) {
        st.pop_front(&mut w.payload);
        popped += 1;
    }
    while st.slots.len() > limits.max_events_per_key.max(1) {
        st.pop_front(&mut w.payload);
        popped += 1;
        stats.events_evicted += 1;
    }
    if matches!(rule.measure, Measure::ValueCount(_)) {
        let cap = limits.max_values_per_key.max(1);
        while st.tags().is_some_and(|t| t.len() > cap) && !st.slots.is_empty() {
            if st.pop_front(&mut w.payload) {
                stats.values_evicted += 1;
            }
            popped += 1;
        }
    }
    // Pops only take from the front: the new occurrence is at `at - popped` unless popped.
    let new_at = at.checked_sub(popped);
    *clock = clock.wrapping_add(1);
    st.seq = *clock;

    // A window holding nothing but the new occurrence starts afresh.
    if st.slots.len() <= 1 {
        st.firing = None;
    }
    let (n, distinct) = measure(rule, st);
    let sum = matches!(rule.measure, Measure::ValueSum(_)).then_some(n);
    let mut fired = false;
    if !rule.condition.holds(n) {
        st.firing = None;
    } else {
        let group: Vec<(String, String)> = rule
            .group_names
            .iter()
            .cloned()
            .zip(parts.iter().map(|p| p.to_string()))
            .collect();
        let key_index = rule
            .index_in_key
            .and_then(|i| parts.get(i))
            .map(|p| p.to_string());
        match &st.firing {
            None => {
                let first = st.slots.front().map_or(ts, |e| e.ts);
                let last = st.slots.back().map_or(ts, |e| e.ts);
                // Report the window's occurrences no earlier detection of the key reported (the
                // reported ones kept only their time), taking their payloads where the budget
                // left them; the count stays exact either way.
                let mut fresh = 0u64;
                let mut events: Vec<Arc<Event>> = Vec::new();
                for slot in st.slots.iter_mut().filter(|s| !s.reported) {
                    slot.reported = true;
                    fresh += 1;
                    if let Some((e, weight)) = slot.take() {
                        w.payload = w.payload.saturating_sub(weight);
                        events.push(e);
                    }
                }
                st.shrink();
                let index_value = key_index.clone().unwrap_or_else(|| {
                    events
                        .first()
                        .and_then(|e| text_of(e, &rule.offense.index_at))
                        .unwrap_or_else(|| info.name.clone())
                });
                st.firing = Some(Box::new(Firing {
                    start: first,
                    index_value: if key_index.is_some() {
                        Box::default()
                    } else {
                        index_value.clone().into_boxed_str()
                    },
                }));
                fired = true;
                if info.generate {
                    let mut x = base_detection(info, &rule.offense, DetectionKind::New);
                    x.group = group;
                    x.index_value = index_value;
                    x.window_start = time(first);
                    x.first_seen = time(first);
                    x.last_seen = time(last);
                    x.count = u64::try_from(st.slots.len()).unwrap_or(u64::MAX);
                    x.fresh = fresh;
                    x.distinct = distinct;
                    x.sum = sum;
                    x.events = events;
                    stats.detections += 1;
                    out.push(x);
                }
            }
            Some(f) => {
                // The new occurrence, still in the window, is reported by this `Update`.
                let reported = new_at.and_then(|i| st.slots.get_mut(i)).map(|slot| {
                    slot.reported = true;
                    // The slot holds this very event (budget shedding only runs between events).
                    if let Some((_, weight)) = slot.take() {
                        w.payload = w.payload.saturating_sub(weight);
                    }
                });
                if reported.is_some() && info.generate {
                    let mut x = base_detection(info, &rule.offense, DetectionKind::Update);
                    x.group = group;
                    x.index_value = key_index.unwrap_or_else(|| f.index_value.to_string());
                    x.window_start = time(f.start);
                    x.first_seen = event.timestamp;
                    x.last_seen = event.timestamp;
                    x.count = 1;
                    x.fresh = 1;
                    x.sum = sum;
                    x.events = vec![Arc::clone(event)];
                    stats.updates += 1;
                    out.push(x);
                }
            }
        }
    }
    let after = st.heap_bytes();
    w.heap = w.heap.saturating_sub(before).saturating_add(after);
    w.touch(id);
    fired
}

/// The timespan of a correlation in nanoseconds (at least 1).
fn span_nanos(rule: &CorrelationRule) -> i64 {
    rule.timespan.num_nanoseconds().unwrap_or(i64::MAX).max(1)
}

/// The allowed lateness in nanoseconds (at least 0).
fn lateness_nanos(limits: &EngineLimits) -> i64 {
    limits
        .allowed_lateness
        .num_nanoseconds()
        .unwrap_or(i64::MAX)
        .max(0)
}

/// A `value_sum` value: a non-negative whole number, or a non-negative decimal (truncated
/// toward zero, saturating at `u64::MAX`). Anything else (negative, not a number, an address or
/// a time) is `None`.
fn numeric(v: &FieldValue<'_>) -> Option<u64> {
    match v {
        FieldValue::Int(i) => u64::try_from(*i).ok(),
        FieldValue::Str(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<u64>() {
                return Some(n);
            }
            let f = s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)?;
            // `as` saturates for floats out of range.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f as u64)
        }
        FieldValue::Ip(_) | FieldValue::Time(_) => None,
    }
}

/// The key parts [`encode_key`] joined, given how many there are (empty on malformed text).
fn decode_key(key: &str, n: usize) -> Vec<String> {
    if n == 1 {
        return vec![key.to_owned()];
    }
    let mut parts = Vec::with_capacity(n);
    let mut rest = key;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_once(':') else {
            break;
        };
        let Ok(len) = len.parse::<usize>() else {
            break;
        };
        let (Some(part), Some(next)) = (tail.get(..len), tail.get(len..)) else {
            break;
        };
        parts.push(part.to_owned());
        rest = next;
    }
    parts
}

/// Applies one occurrence to one key of an `absence` or `silence` correlation at engine time
/// `now` (already advanced to the event's time, so no deadline before it is pending).
///
/// `absence` (position 0 starts, position 1 cancels): a starting event for a key with no
/// pending deadline opens one at its time plus the timespan, holding the event; while one is
/// pending further starting events are ignored. A cancelling event for a key whose deadline is
/// pending, timed at or after the start and at or before the deadline, removes it. `silence`:
/// every event for a key moves its deadline to its time plus the timespan and is held as the
/// key's last event (an event older than the last one seen changes nothing; one at the same
/// time replaces it). A starting event whose deadline has already
/// passed (`time + timespan < now - allowed_lateness`), or with a lateness `L > 0` one older
/// than `now - L`, is late: counted, not applied.
#[allow(clippy::too_many_arguments)]
fn apply_timed(
    w: &mut Windows,
    clock: &mut u64,
    stats: &mut RuleStats,
    rule: &CorrelationRule,
    limits: &EngineLimits,
    now: i64,
    parts: &[Text],
    bits: u64,
    event: &Arc<Event>,
) {
    let ts = nanos(event.timestamp);
    let span = w.span.max(1);
    let lateness = lateness_nanos(limits);
    let silence = matches!(rule.measure, Measure::Silence);
    let starts = silence || bits & 1 != 0;
    let cancels = !silence && bits & 2 != 0;
    let key_text = encoded_key(parts);
    if starts {
        let bound = now.saturating_sub(lateness);
        let late = (lateness > 0 && ts < bound) || ts.saturating_add(span) < bound;
        match w.find(&key_text) {
            _ if late => stats.late_events += 1,
            Some(id) if silence => {
                let mut moved = None;
                if let Some(st) = w.slab.get_mut(id) {
                    if let Some(slot) = st.slots.front_mut().filter(|s| ts >= s.ts) {
                        let old = slot.ts;
                        w.payload = w.payload.saturating_sub(slot.weight());
                        *slot = Slot::new(ts, Some(Arc::clone(event)));
                        w.payload = w.payload.saturating_add(slot.weight());
                        *clock = clock.wrapping_add(1);
                        st.seq = *clock;
                        moved = Some(old);
                    }
                }
                if let Some(old) = moved {
                    w.deadlines.remove(&(old.saturating_add(span), id));
                    w.deadlines.insert((ts.saturating_add(span), id));
                    w.touch(id);
                }
            }
            // An absence deadline is pending for the key: this start changes nothing.
            Some(_) => {}
            None => {
                let max = limits.max_keys_per_rule.max(1);
                stats.keys_evicted += w.drop_oldest(|_, live| live >= max);
                *clock = clock.wrapping_add(1);
                let mut st = KeyState::new(&key_text, None);
                let slot = Slot::new(ts, Some(Arc::clone(event)));
                let weight = slot.weight();
                st.slots = Slots::One(slot);
                st.seq = *clock;
                let Some(id) = w.insert(st) else {
                    return;
                };
                w.payload = w.payload.saturating_add(weight);
                w.deadlines.insert((ts.saturating_add(span), id));
                w.touch(id);
            }
        }
    }
    if cancels {
        let followed = w.find(&key_text).filter(|&id| {
            w.slab
                .get(id)
                .and_then(|st| st.slots.front())
                .is_some_and(|f| ts >= f.ts && ts <= f.ts.saturating_add(span))
        });
        if let Some(id) = followed {
            w.remove(id);
        }
    }
}

/// The window keys an event gives a correlation for the referenced rules it matched: per key
/// its parts (the `group-by` values), the rule bits and the first position. The key can depend
/// on which referenced rule matched (aliases), so matched positions are grouped by key. Kept
/// between events so that computing them allocates nothing for short values (parts are inline
/// texts, all in one buffer).
#[derive(Debug, Default)]
struct GroupKeys {
    parts: Vec<Text>,
    keys: Vec<(std::ops::Range<usize>, u64, usize)>,
}

impl GroupKeys {
    /// The keys of `event` for the positions in `mask` of `rule`; none when a group-by field is
    /// missing.
    fn fill(&mut self, rule: &CorrelationRule, mask: u64, event: &Event) {
        self.parts.clear();
        self.keys.clear();
        let mut m = mask;
        while m != 0 {
            let pos = m.trailing_zeros() as usize;
            m &= m - 1;
            let Some(fields) = rule.group_fields.get(pos) else {
                continue;
            };
            let start = self.parts.len();
            let mut complete = true;
            for f in fields {
                match f.get(event) {
                    Some(v) => self.parts.push(value_text(&v)),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                self.parts.truncate(start);
                continue;
            }
            let bit = 1u64 << pos;
            let (done, new) = self.parts.split_at(start);
            match self
                .keys
                .iter_mut()
                .find(|(r, _, _)| done.get(r.clone()) == Some(new))
            {
                Some(k) => {
                    k.1 |= bit;
                    self.parts.truncate(start);
                }
                None => self.keys.push((start..self.parts.len(), bit, pos)),
            }
        }
    }

    /// One key, as routed to this engine.
    fn set_one(&mut self, parts: &[String], bits: u64, pos: usize) {
        self.parts.clear();
        self.keys.clear();
        self.parts
            .extend(parts.iter().map(|p| Text::from(p.as_str())));
        self.keys.push((0..self.parts.len(), bits, pos));
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// (parts, rule bits, first position) of each key.
    fn iter(&self) -> impl Iterator<Item = (&[Text], u64, usize)> {
        self.keys
            .iter()
            .map(|(r, bits, pos)| (self.parts.get(r.clone()).unwrap_or_default(), *bits, *pos))
    }

    /// The keys as routed matches of correlation `name`.
    fn routed<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Routed> + 'a {
        self.iter().map(move |(parts, bits, pos)| Routed {
            correlation: name.to_owned(),
            group: parts.iter().map(|p| p.to_string()).collect(),
            bits,
            pos,
        })
    }
}

/// What holding `e` in a window costs: [`approx_event_bytes`], saturating.
fn weigh(e: &Event) -> u32 {
    u32::try_from(approx_event_bytes(e)).unwrap_or(u32::MAX)
}

/// A field value as text ([`FieldValue::as_text`]), inline when short.
fn value_text(v: &FieldValue<'_>) -> Text {
    match v {
        FieldValue::Str(s) => Text::from(*s),
        FieldValue::Ip(ip) => vigil_parsers::ip_text(*ip),
        // Inline, without a `String` (a port in a flow rule's group-by, for every flow).
        FieldValue::Int(i) => {
            use std::fmt::Write;
            let mut t = Text::default();
            let _ = write!(t, "{i}");
            t
        }
        other => Text::from(other.as_text().as_ref()),
    }
}

/// A single-event match addressed to one correlation window: what stage 1 of the scaled-out
/// mode publishes (with the event) to the matches topic, keyed by [`Routed::key`], so every
/// window lives in exactly one partition whatever the `group-by`, and what stage 2 applies with
/// [`Engine::feed_routed`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Routed {
    /// The correlation rule's name.
    pub correlation: String,
    /// Its `group-by` values for this event, in order.
    pub group: Vec<String>,
    /// The referenced rules the event matched with this key (bit = position in `rules`).
    pub bits: u64,
    /// The first of them.
    pub pos: usize,
}

/// The partition key ([`Routed::key`]) of window key `key` of correlation `name`, which groups
/// by `parts` fields, and the group values it encodes.
fn window_partition_key(name: &str, key: &str, parts: usize) -> (String, Vec<String>) {
    let routed = Routed {
        correlation: name.to_owned(),
        group: decode_key(key, parts),
        bits: 0,
        pos: 0,
    };
    (routed.key(), routed.group)
}

impl Routed {
    /// The partition key: the correlation and the group values, unambiguously encoded (the same
    /// on every node).
    pub fn key(&self) -> String {
        let mut parts = Vec::with_capacity(self.group.len() + 1);
        parts.push(self.correlation.clone());
        parts.extend(self.group.iter().cloned());
        encode_key(&parts)
    }
}

impl Engine {
    /// The rule set this engine runs.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

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
            .map(|r| Windows {
                span: span_nanos(r),
                ..Windows::default()
            })
            .collect();
        let timed = rules
            .correlations
            .iter()
            .enumerate()
            .filter(|(_, r)| r.measure.is_timed())
            .map(|(c, _)| c)
            .collect();
        let masks = vec![0; rules.correlations.len()];
        let by_name = rules
            .correlations
            .iter()
            .enumerate()
            .filter_map(|(c, r)| Some((rules.infos.get(r.info)?.name.clone(), c)))
            .collect();
        Engine {
            rules,
            limits,
            windows,
            stats,
            events: 0,
            scratch: Scratch::default(),
            group_keys: GroupKeys::default(),
            event_weight: None,
            matched: Vec::new(),
            masks,
            pending: BinaryHeap::new(),
            clock: 0,
            payload: 0,
            now: None,
            timed,
            unroutable: 0,
            by_name,
        }
    }

    fn mark(&mut self, c: usize, pos: usize) {
        let bit = u32::try_from(pos)
            .ok()
            .and_then(|p| 1u64.checked_shl(p))
            .unwrap_or(0);
        if let Some(m) = self.masks.get_mut(c) {
            if *m == 0 && bit != 0 {
                self.pending.push(Reverse(c));
            }
            *m |= bit;
        }
    }

    /// Feed one event; detections are pushed to `out`.
    ///
    /// The event's time first advances engine time (as [`Engine::advance`] does, never
    /// backwards), so `absence` and `silence` deadlines it passes fire (before the event's own
    /// detections), then the event is matched and applied.
    pub fn process(&mut self, event: &Arc<Event>, out: &mut Vec<Detection>) {
        self.process_with(event, None, out);
    }

    /// [`Engine::process`] of the `i`-th event of a batch that `prescan` scanned ahead (on
    /// another thread): the literal prefilter's findings on the event's fields final at
    /// normalization are taken from it instead of scanning them again. Same results as
    /// [`Engine::process`]: a prescan made with another rule set than this engine's (a reload
    /// in between), or one that skipped the event, is ignored.
    pub fn process_prescanned(
        &mut self,
        event: &Arc<Event>,
        prescan: &crate::ruleset::Prescan,
        i: usize,
        out: &mut Vec<Detection>,
    ) {
        let rules = Arc::clone(&self.rules);
        self.process_with(event, prescan.hits(&rules, i), out);
    }

    fn process_with(
        &mut self,
        event: &Arc<Event>,
        prescanned: Option<&[u32]>,
        out: &mut Vec<Detection>,
    ) {
        self.events += 1;
        self.event_weight = None;
        self.advance_to(nanos(event.timestamp), out);
        let rules = Arc::clone(&self.rules);
        self.match_single(&rules, event, prescanned, out);
        // Correlations are stored inner first, so popping the lowest index first evaluates an
        // inner correlation before every correlation it feeds.
        while let Some(Reverse(c)) = self.pending.pop() {
            let Some(mask) = self.masks.get_mut(c).map(std::mem::take) else {
                continue;
            };
            if mask == 0 {
                continue;
            }
            let Some(rule) = rules.correlations.get(c) else {
                continue;
            };
            if self.feed(&rules, c, rule, mask, event, out) {
                for &(o, pos) in &rule.feeds {
                    self.mark(o, pos);
                }
            }
        }
    }

    fn feed(
        &mut self,
        rules: &RuleSet,
        c: usize,
        rule: &CorrelationRule,
        mask: u64,
        event: &Arc<Event>,
        out: &mut Vec<Detection>,
    ) -> bool {
        let mut groups = std::mem::take(&mut self.group_keys);
        groups.fill(rule, mask, event);
        if let Some(stats) = self.stats.get_mut(rule.info) {
            stats.matches += 1;
            if groups.is_empty() {
                stats.ungrouped_events += 1;
            }
        }
        let fired = !groups.is_empty() && self.apply_groups(rules, c, rule, &groups, event, out);
        self.group_keys = groups;
        fired
    }

    /// Applies an event to the windows of `groups` (key parts, rule bits, first position) of
    /// correlation `c`; whether one of them fired `New`.
    fn apply_groups(
        &mut self,
        rules: &RuleSet,
        c: usize,
        rule: &CorrelationRule,
        groups: &GroupKeys,
        event: &Arc<Event>,
        out: &mut Vec<Detection>,
    ) -> bool {
        let Some(info) = rules.infos.get(rule.info) else {
            return false;
        };
        let weight = *self.event_weight.get_or_insert_with(|| weigh(event));
        let Some(stats) = self.stats.get_mut(rule.info) else {
            return false;
        };
        let Some(w) = self.windows.get_mut(c) else {
            return false;
        };
        let held = w.payload;
        if rule.measure.is_timed() {
            let now = self.now.unwrap_or(i64::MIN);
            for (parts, bits, _) in groups.iter() {
                apply_timed(
                    w,
                    &mut self.clock,
                    stats,
                    rule,
                    &self.limits,
                    now,
                    parts,
                    bits,
                    event,
                );
            }
            self.payload = self.payload.saturating_sub(held).saturating_add(w.payload);
            if self.payload > self.limits.max_payload_bytes {
                self.shed(rules);
            }
            // Timed correlations fire as time passes, never on an occurrence, and feed nothing.
            return false;
        }
        let mut fired = false;
        for (parts, bits, pos) in groups.iter() {
            fired |= apply(
                w,
                &mut self.clock,
                stats,
                info,
                rule,
                &self.limits,
                parts,
                bits,
                pos,
                (event, weight),
                out,
            );
        }
        self.payload = self.payload.saturating_sub(held).saturating_add(w.payload);
        if self.payload > self.limits.max_payload_bytes {
            self.shed(rules);
        }
        fired
    }

    /// Stage 1 of the scaled-out split: single-event rules only. Detections of generating
    /// detection rules go to `out`; every match that feeds a correlation goes to `routed`,
    /// addressed to its window ([`Routed::key`]), for whichever engine owns that key. Holds no
    /// window state, so any number of stage-1 engines can run side by side.
    pub fn route(
        &mut self,
        event: &Arc<Event>,
        out: &mut Vec<Detection>,
        routed: &mut Vec<Routed>,
    ) {
        self.events += 1;
        let rules = Arc::clone(&self.rules);
        self.match_single(&rules, event, None, out);
        while let Some(Reverse(c)) = self.pending.pop() {
            let Some(mask) = self.masks.get_mut(c).map(std::mem::take) else {
                continue;
            };
            let Some(rule) = rules.correlations.get(c) else {
                continue;
            };
            let Some(info) = rules.infos.get(rule.info) else {
                continue;
            };
            self.group_keys.fill(rule, mask, event);
            routed.extend(self.group_keys.routed(&info.name));
        }
    }

    /// Stage 2 of the scaled-out split: applies one routed match (from any stage-1 engine) to
    /// this engine's window for it, advancing engine time to the event first as
    /// [`Engine::process`] does. When a correlation fires and feeds outer correlations
    /// (chaining), the outer correlations' matches go to `reroute`: they belong to other keys,
    /// maybe other engines. An unknown correlation name (rule files differ between nodes) is
    /// counted in [`EngineStats::unroutable`] and ignored.
    pub fn feed_routed(
        &mut self,
        r: &Routed,
        event: &Arc<Event>,
        out: &mut Vec<Detection>,
        reroute: &mut Vec<Routed>,
    ) {
        self.events += 1;
        self.event_weight = None;
        self.advance_to(nanos(event.timestamp), out);
        let rules = Arc::clone(&self.rules);
        let Some(&c) = self.by_name.get(&r.correlation) else {
            self.unroutable += 1;
            return;
        };
        let Some(rule) = rules.correlations.get(c) else {
            return;
        };
        if let Some(stats) = self.stats.get_mut(rule.info) {
            stats.matches += 1;
        }
        let mut groups = std::mem::take(&mut self.group_keys);
        groups.set_one(&r.group, r.bits, r.pos);
        let fired = self.apply_groups(&rules, c, rule, &groups, event, out);
        self.group_keys = groups;
        if fired {
            for &(o, pos) in &rule.feeds {
                let (Some(outer), Some(bit)) = (
                    rules.correlations.get(o),
                    u32::try_from(pos).ok().and_then(|p| 1u64.checked_shl(p)),
                ) else {
                    continue;
                };
                let Some(info) = rules.infos.get(outer.info) else {
                    continue;
                };
                self.group_keys.fill(outer, bit, event);
                reroute.extend(self.group_keys.routed(&info.name));
            }
        }
    }

    /// Matches single-event rules: generating ones detect into `out`, and every correlation
    /// they feed is marked pending with the matched positions.
    fn match_single(
        &mut self,
        rules: &RuleSet,
        event: &Arc<Event>,
        prescanned: Option<&[u32]>,
        out: &mut Vec<Detection>,
    ) {
        rules.match_indexed(event, &mut self.scratch, prescanned, &mut self.matched);
        let matched = std::mem::take(&mut self.matched);
        for &d in &matched {
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
                    text_of(event, &det.offense.index_at).unwrap_or_else(|| info.name.clone());
                x.window_start = event.timestamp;
                x.first_seen = event.timestamp;
                x.last_seen = event.timestamp;
                x.count = 1;
                x.fresh = 1;
                x.events = vec![Arc::clone(event)];
                if let Some(s) = self.stats.get_mut(det.info) {
                    s.detections += 1;
                }
                out.push(x);
            }
            for &(c, pos) in &det.feeds {
                self.mark(c, pos);
            }
        }
        self.matched = matched;
    }

    /// Tells the engine that event time has reached `now`: every `absence` or `silence`
    /// deadline it passes (strictly: `now - allowed_lateness > deadline`) fires a `New`
    /// detection, pushed to `out` in deadline order (ties by rule, then key). Time never goes
    /// backwards: a `now` older than engine time (the newest event time processed or time
    /// advanced to) changes nothing. [`Engine::process`] advances to each event's time itself;
    /// call this when time passes without events: after each batch with the batch's newest
    /// event time, from a periodic tick with the wall clock (live service), and at the end of a
    /// replay only if deadlines after the last event should fire.
    pub fn advance(&mut self, now: DateTime<Utc>, out: &mut Vec<Detection>) {
        self.advance_to(nanos(now), out);
    }

    /// Engine time: the newest event time processed or time passed to [`Engine::advance`];
    /// `None` before either.
    pub fn now(&self) -> Option<DateTime<Utc>> {
        self.now.map(time)
    }

    fn advance_to(&mut self, now: i64, out: &mut Vec<Detection>) {
        let now = self.now.map_or(now, |n| n.max(now));
        self.now = Some(now);
        if self.timed.is_empty() {
            return;
        }
        let lateness = lateness_nanos(&self.limits);
        let due = now.saturating_sub(lateness);
        let rules = Arc::clone(&self.rules);
        loop {
            // The earliest due deadline over all timed correlations.
            let mut next: Option<(i64, usize)> = None;
            for &c in &self.timed {
                let Some(d) = self
                    .windows
                    .get(c)
                    .and_then(|w| w.deadlines.first())
                    .map(|(d, _)| *d)
                else {
                    continue;
                };
                if d < due && next.is_none_or(|(n, _)| d < n) {
                    next = Some((d, c));
                }
            }
            let Some((_, c)) = next else {
                break;
            };
            if !self.fire_deadline(&rules, c, out) {
                break;
            }
        }
    }

    /// Fires the earliest deadline of timed correlation `c`; false when there was none.
    fn fire_deadline(&mut self, rules: &RuleSet, c: usize, out: &mut Vec<Detection>) -> bool {
        let Some(w) = self.windows.get_mut(c) else {
            return false;
        };
        let Some((_, id)) = w.deadlines.pop_first() else {
            return false;
        };
        let held = w.payload;
        let mut slot_ts = None;
        let mut payload = None;
        let mut key = String::new();
        if let Some(st) = w.slab.get_mut(id) {
            key.push_str(st.key.as_str());
            if let Some(slot) = st.slots.front_mut() {
                slot.reported = true;
                slot_ts = Some(slot.ts);
                if let Some((e, weight)) = slot.take() {
                    w.payload = w.payload.saturating_sub(weight);
                    payload = Some(e);
                }
            }
        }
        w.remove(id);
        self.payload = self.payload.saturating_sub(held).saturating_add(w.payload);
        let (Some(ts), Some(rule)) = (slot_ts, rules.correlations.get(c)) else {
            return true;
        };
        let (Some(info), Some(stats)) = (rules.infos.get(rule.info), self.stats.get_mut(rule.info))
        else {
            return true;
        };
        stats.detections += 1;
        if info.generate {
            let parts = decode_key(&key, rule.group_names.len());
            let mut x = base_detection(info, &rule.offense, DetectionKind::New);
            x.index_value = rule
                .index_in_key
                .and_then(|i| parts.get(i).cloned())
                .or_else(|| {
                    payload
                        .as_ref()
                        .and_then(|e| text_of(e, &rule.offense.index_at))
                })
                .unwrap_or_else(|| info.name.clone());
            x.group = rule.group_names.iter().cloned().zip(parts).collect();
            x.window_start = time(ts);
            x.first_seen = time(ts);
            x.last_seen = time(ts);
            x.count = 1;
            x.fresh = 1;
            x.events = payload.into_iter().collect();
            out.push(x);
        }
        true
    }

    /// Drops payloads down to 7/8 of [`EngineLimits::max_payload_bytes`]: keys in least
    /// recently updated order across all correlations, oldest occurrences of a key first.
    fn shed(&mut self, rules: &RuleSet) {
        let budget = self.limits.max_payload_bytes;
        let target = budget - budget / 8;
        while self.payload > target {
            let mut oldest: Option<(u64, usize)> = None;
            for (c, w) in self.windows.iter_mut().enumerate() {
                if let Some(seq) = w.held_front() {
                    if oldest.is_none_or(|(s, _)| seq < s) {
                        oldest = Some((seq, c));
                    }
                }
            }
            let Some((_, c)) = oldest else {
                break;
            };
            let Some(w) = self.windows.get_mut(c) else {
                break;
            };
            let held = w.payload;
            let dropped = w.shed_front(self.payload - target);
            self.payload = self.payload.saturating_sub(held.saturating_sub(w.payload));
            if let Some(s) = rules
                .correlations
                .get(c)
                .and_then(|rule| self.stats.get_mut(rule.info))
            {
                s.payloads_dropped += dropped;
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
                r.keys_live = u64::try_from(w.len()).unwrap_or(u64::MAX);
                r.payload_bytes = u64::try_from(w.payload).unwrap_or(u64::MAX);
                r.approx_bytes = u64::try_from(w.approx_bytes()).unwrap_or(u64::MAX);
            }
        }
        EngineStats {
            events: self.events,
            keys_live: rules.iter().map(|r| r.keys_live).sum(),
            keys_evicted: rules.iter().map(|r| r.keys_evicted).sum(),
            events_evicted: rules.iter().map(|r| r.events_evicted).sum(),
            payloads_dropped: rules.iter().map(|r| r.payloads_dropped).sum(),
            payload_bytes: rules.iter().map(|r| r.payload_bytes).sum(),
            approx_bytes: rules.iter().map(|r| r.approx_bytes).sum(),
            unroutable: self.unroutable,
            rules,
        }
    }
}

/// Correlation state of some keys, serializable: how windows move from one engine to another
/// (a partition changing owner between stage-2 nodes) or survive a restart. Take it with
/// [`Engine::snapshot`], apply it with [`Engine::restore`]. Counts, firing state and the held
/// evidence come across exactly; the tallies (`value_count` values, `value_sum` sums) and
/// `absence`/`silence` deadlines are rebuilt from the occurrences.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineSnapshot {
    /// Format version ([`EngineSnapshot::VERSION`]).
    pub version: u32,
    /// Engine time (nanoseconds since the epoch) when taken.
    pub now: Option<i64>,
    /// Per correlation with selected keys.
    pub windows: Vec<WindowSnapshot>,
}

impl EngineSnapshot {
    /// The format this build writes and reads.
    pub const VERSION: u32 = 1;
}

/// One correlation's selected keys.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowSnapshot {
    /// The correlation rule's name.
    pub correlation: String,
    /// Its `group-by` names when taken: a rule since changed to group differently does not
    /// get these keys (they would mean something else).
    pub group_by: Vec<String>,
    /// Its watermark (newest occurrence time seen, nanoseconds).
    pub watermark: Option<i64>,
    /// Keys, least recently updated first.
    pub keys: Vec<KeySnapshot>,
}

/// One key's window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeySnapshot {
    /// The group-by values.
    pub group: Vec<String>,
    /// Occurrences, oldest first: (time ns, tag, event if still held, reported). The tag is 0
    /// for the types without one (`event_count`, `periodic`, `absence`, `silence`): the engine
    /// keeps none for them, and ignores it on restore.
    /// Events are shared with the live windows (taking a snapshot copies none).
    pub slots: Vec<(i64, u64, Option<Arc<Event>>, bool)>,
    /// When firing: (window start ns, index value if not part of the key).
    pub firing: Option<(i64, String)>,
}

/// The windows as [`Engine::cut`] took them: shared with the engine where they are long, so
/// taking one is cheap; [`SnapshotCut::into_snapshot`] makes the serializable form (on any
/// thread: the service's saving thread does).
pub struct SnapshotCut {
    now: Option<i64>,
    windows: Vec<WindowCut>,
}

struct WindowCut {
    correlation: String,
    group_by: Vec<String>,
    watermark: Option<i64>,
    keys: Vec<KeyCut>,
}

struct KeyCut {
    seq: u64,
    key: KeyText,
    /// The group values, when selecting the key already decoded them.
    group: Option<Vec<String>>,
    slots: Slots,
    tags: VecDeque<u64>,
    firing: Option<(i64, Box<str>)>,
}

impl SnapshotCut {
    /// The snapshot: each correlation's keys least recently updated first, each key's
    /// occurrences with their tags.
    pub fn into_snapshot(self) -> EngineSnapshot {
        let windows = self
            .windows
            .into_iter()
            .map(|mut w| {
                w.keys.sort_by_key(|k| k.seq);
                let parts = w.group_by.len();
                WindowSnapshot {
                    correlation: w.correlation,
                    group_by: w.group_by,
                    watermark: w.watermark,
                    keys: w
                        .keys
                        .into_iter()
                        .map(|k| {
                            // Types without tags keep none (they are all 0).
                            let tags = k.tags.iter().copied().chain(std::iter::repeat(0));
                            KeySnapshot {
                                group: k.group.unwrap_or_else(|| decode_key(k.key.as_str(), parts)),
                                slots: k
                                    .slots
                                    .iter()
                                    .zip(tags)
                                    .map(|(s, tag)| (s.ts, tag, s.event.clone(), s.reported))
                                    .collect(),
                                firing: k.firing.map(|(start, index)| (start, index.into_string())),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        EngineSnapshot {
            version: EngineSnapshot::VERSION,
            now: self.now,
            windows,
        }
    }
}

/// What [`Engine::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Keys restored.
    pub keys: u64,
    /// Keys of correlations this engine does not have, or that now group by other fields
    /// (rule files differ), skipped.
    pub skipped: u64,
    /// Keys that replaced a key this engine already held.
    pub replaced: u64,
}

impl Engine {
    /// The state of every key `select` accepts, given the key's partition key
    /// ([`Routed::key`]: correlation name and group values), so a stage-2 node can hand over
    /// exactly the windows of a revoked partition. Keys come least recently updated first.
    pub fn snapshot(&self, mut select: impl FnMut(&str) -> bool) -> EngineSnapshot {
        self.cut_of(Some(&mut select)).into_snapshot()
    }

    /// The state of every key: [`Engine::snapshot`] accepting all, without making each key's
    /// partition key.
    pub fn snapshot_all(&self) -> EngineSnapshot {
        self.cut().into_snapshot()
    }

    /// The state of every key as it is now, for [`SnapshotCut::into_snapshot`] to make into
    /// an [`EngineSnapshot`] later, on another thread: what the embedded service takes on its
    /// engine thread. It shares the occurrences of keys past a few hundred (copying only a
    /// pointer per few hundred of them) and copies the rest. The tags of `value_count`,
    /// `value_sum` and temporal keys are still copied (8 bytes an occurrence, one `memcpy`
    /// per key): long windows of those types cost the cut in proportion to their length.
    pub fn cut(&self) -> SnapshotCut {
        self.cut_of(None)
    }

    fn cut_of(&self, mut select: Option<&mut dyn FnMut(&str) -> bool>) -> SnapshotCut {
        let mut windows = Vec::new();
        for (c, w) in self.windows.iter().enumerate() {
            let Some(rule) = self.rules.correlations.get(c) else {
                continue;
            };
            let Some(info) = self.rules.infos.get(rule.info) else {
                continue;
            };
            let parts = rule.group_names.len();
            let mut keys = Vec::new();
            for (_, st) in w.slab.iter() {
                let group = match select.as_mut() {
                    Some(select) => {
                        let (partition_key, group) =
                            window_partition_key(&info.name, st.key.as_str(), parts);
                        if !select(&partition_key) {
                            continue;
                        }
                        Some(group)
                    }
                    None => None,
                };
                keys.push(KeyCut {
                    seq: st.seq,
                    key: st.key.clone(),
                    group,
                    slots: st.slots.clone(),
                    tags: st
                        .tally
                        .as_ref()
                        .map(|t| t.tags.clone())
                        .unwrap_or_default(),
                    firing: st.firing.as_ref().map(|f| (f.start, f.index_value.clone())),
                });
            }
            if keys.is_empty() {
                continue;
            }
            windows.push(WindowCut {
                correlation: info.name.clone(),
                group_by: rule.group_names.clone(),
                watermark: w.watermark,
                keys,
            });
        }
        SnapshotCut {
            now: self.now,
            windows,
        }
    }

    /// Drops every key `select` accepts (by partition key, as [`Engine::snapshot`]): what a
    /// stage-2 node does after handing a revoked partition's windows over. Returns how many.
    pub fn remove_keys(&mut self, mut select: impl FnMut(&str) -> bool) -> u64 {
        let mut n = 0;
        let rules = Arc::clone(&self.rules);
        for (c, w) in self.windows.iter_mut().enumerate() {
            let Some(rule) = rules.correlations.get(c) else {
                continue;
            };
            let Some(info) = rules.infos.get(rule.info) else {
                continue;
            };
            let parts = rule.group_names.len();
            let doomed: Vec<u32> = w
                .slab
                .iter()
                .filter(|(_, st)| {
                    select(&window_partition_key(&info.name, st.key.as_str(), parts).0)
                })
                .map(|(id, _)| id)
                .collect();
            let held = w.payload;
            for id in doomed {
                if w.remove(id) {
                    n += 1;
                }
            }
            self.payload = self.payload.saturating_sub(held.saturating_sub(w.payload));
        }
        n
    }

    /// Adds the keys of a snapshot (from [`Engine::snapshot`], maybe of another engine) to this
    /// engine's windows, after its own keys in update order. Engine time and watermarks move
    /// forward to the snapshot's if they are behind. A snapshot of another format version is
    /// refused.
    pub fn restore(&mut self, snap: EngineSnapshot) -> Result<RestoreReport, String> {
        if snap.version != EngineSnapshot::VERSION {
            return Err(format!(
                "engine snapshot version {} (this build reads {})",
                snap.version,
                EngineSnapshot::VERSION
            ));
        }
        if let Some(t) = snap.now {
            self.now = Some(self.now.map_or(t, |n| n.max(t)));
        }
        let mut report = RestoreReport::default();
        let rules = Arc::clone(&self.rules);
        for ws in snap.windows {
            let Some(&c) = self.by_name.get(&ws.correlation) else {
                report.skipped += ws.keys.len() as u64;
                continue;
            };
            let (Some(rule), Some(w)) = (rules.correlations.get(c), self.windows.get_mut(c)) else {
                continue;
            };
            if rule.group_names != ws.group_by {
                report.skipped += ws.keys.len() as u64;
                continue;
            }
            if let Some(m) = ws.watermark {
                w.watermark = Some(w.watermark.map_or(m, |x| x.max(m)));
            }
            for ks in ws.keys {
                let key = encode_key(&ks.group);
                let held = w.payload;
                if let Some(id) = w.find(&key) {
                    if w.remove(id) {
                        report.replaced += 1;
                    }
                }
                let mut st = KeyState::new(&key, Tally::for_measure(&rule.measure));
                st.slots = Slots::with_capacity(ks.slots.len());
                if let Some(t) = st.tally.as_deref_mut() {
                    t.tags = VecDeque::with_capacity(ks.slots.len());
                }
                st.firing = ks.firing.map(|(start, index_value)| {
                    Box::new(Firing {
                        start,
                        index_value: index_value.into_boxed_str(),
                    })
                });
                let mut payload = 0usize;
                for (ts, tag, event, reported) in ks.slots {
                    let mut slot = Slot::new(ts, event);
                    slot.reported = reported;
                    payload = payload.saturating_add(slot.weight());
                    let at = st.slots.len();
                    st.insert(at, slot, tag);
                }
                let front = st.slots.front().map(|s| s.ts);
                self.clock = self.clock.wrapping_add(1);
                st.seq = self.clock;
                let Some(id) = w.insert(st) else {
                    continue;
                };
                w.payload = w.payload.saturating_add(payload);
                if rule.measure.is_timed() {
                    if let Some(ts) = front {
                        w.deadlines.insert((ts.saturating_add(w.span), id));
                    }
                }
                w.touch(id);
                self.payload = self.payload.saturating_sub(held).saturating_add(w.payload);
                report.keys += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {

    /// The walk of `tags` from scratch.
    fn walk(tags: &VecDeque<u64>) -> Vec<u32> {
        let mut steps = Vec::new();
        super::ordered_walk(tags, 0, &mut steps);
        steps
    }

    #[test]
    fn ordered_steps_follow_inserts_and_pops_like_a_walk_from_scratch() {
        // A small deterministic generator: tags over 3 rules (some with several bits, some
        // with none), inserts mostly at the end, some late, and pops from the front.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let rules = 1 + round % 4;
            let mut tags: VecDeque<u64> = VecDeque::new();
            let mut steps = Vec::new();
            for _ in 0..300 {
                let r = next();
                if r % 5 == 0 && !tags.is_empty() {
                    tags.pop_front();
                    super::ordered_popped(&tags, &mut steps);
                } else {
                    let tag = match r % 7 {
                        0 => 0,
                        1 => (1u64 << rules) - 1,
                        _ => 1u64 << ((r >> 8) % rules as u64),
                    };
                    let at = if r % 11 == 0 {
                        ((r >> 20) as usize) % (tags.len() + 1)
                    } else {
                        tags.len()
                    };
                    tags.insert(at, tag);
                    super::ordered_inserted(&tags, at, &mut steps);
                }
                assert_eq!(steps, walk(&tags), "round {round}, tags {tags:?}");
            }
        }
        // The 64th rule is the last one a tag can hold.
        let all: VecDeque<u64> = [u64::MAX, u64::MAX].into_iter().collect();
        assert_eq!(walk(&all).len(), 64);
    }

    #[test]
    fn multi_field_keys_read_back_as_their_parts() {
        let long = "9:x".repeat(40);
        for parts in [
            vec!["203.0.113.7".to_owned()],
            vec![String::new(), String::new()],
            vec!["10.0.0.1".into(), "443".into()],
            vec!["a:b".into(), "12:34".into(), long.clone()],
            vec!["x".repeat(9), "y".repeat(10), "z".repeat(123)],
        ] {
            let key = encode_key(&parts);
            assert_eq!(encoded_key(&parts), key.as_str());
            assert_eq!(decode_key(&key, parts.len()), parts);
        }
        assert_eq!(encode_key(&["ab", ""]), "2:ab0:");
    }

    use super::*;

    /// The per-key layout the memory figures rest on (`BENCHMARKS.md`, stateful correlation):
    /// a key of a type without tags is one slab entry, one index entry and, from its second
    /// occurrence on, a ring buffer of 24-byte slots.
    #[test]
    fn key_state_layout_stays_compact() {
        use std::mem::size_of;
        assert_eq!(size_of::<Slot>(), 24);
        assert_eq!(size_of::<Slots>(), 32);
        assert_eq!(size_of::<KeyText>(), 24);
        assert_eq!(size_of::<KeyState>(), 88);
        assert_eq!(size_of::<Option<KeyState>>(), 88);
        assert_eq!(size_of::<(u64, u32)>(), 16);
    }

    #[test]
    fn key_text_is_inline_up_to_its_limit() {
        let long = "x".repeat(KeyText::INLINE + 1);
        for text in [
            "",
            "203.0.113.7",
            "2001:db8::1",
            "é€漢字",
            &long[1..],
            &long,
        ] {
            let k = KeyText::new(text);
            assert_eq!(k.as_str(), text);
            assert_eq!(k.bytes(), text.as_bytes());
            let inline = text.len() <= KeyText::INLINE;
            assert_eq!(matches!(k, KeyText::Inline { .. }), inline, "{text}");
            assert_eq!(k.heap_bytes() == 0, inline);
        }
    }

    #[test]
    fn key_index_finds_keys_whose_hashes_collide() {
        let texts = ["a", "b", "c", "d"];
        let is = |key: &'static str| move |id: u32| texts.get(id as usize) == Some(&key);
        let mut index = KeyIndex::default();
        // Every key gets the same hash: the first goes by hash, the others by text.
        for (id, key) in (0u32..).zip(["a", "b", "c"]) {
            assert_eq!(index.find(7, key, is(key)), None);
            index.insert(7, key, id);
        }
        assert_eq!(index.overflow.len(), 2);
        for (id, key) in (0u32..).zip(["a", "b", "c"]) {
            assert_eq!(index.find(7, key, is(key)), Some(id));
        }
        assert_eq!(index.find(7, "d", is("d")), None);
        // Removing the key held by hash leaves the others findable; a new key takes the hash.
        index.remove(7, "a", 0);
        assert_eq!(index.find(7, "a", is("a")), None);
        assert_eq!(index.find(7, "b", is("b")), Some(1));
        index.insert(7, "d", 3);
        assert_eq!(index.overflow.len(), 2);
        assert_eq!(index.find(7, "d", is("d")), Some(3));
        assert_eq!(index.find(7, "c", is("c")), Some(2));
        index.remove(7, "b", 1);
        index.remove(7, "c", 2);
        index.remove(7, "d", 3);
        assert_eq!(index.len(), 0);
        assert!(index.bytes() > 0, "tables keep their capacity");
    }

    fn slot(ts: i64) -> Slot {
        Slot::new(ts, None)
    }

    fn times(s: &Slots) -> Vec<i64> {
        s.iter().map(|s| s.ts).collect()
    }

    #[test]
    fn slots_keep_one_inline_then_a_ring_in_order() {
        let mut s = Slots::default();
        assert!(s.is_empty());
        s.insert(0, slot(5));
        assert!(matches!(s, Slots::One(_)));
        assert_eq!(s.heap_bytes(), 0);
        s.insert(0, slot(3));
        assert!(matches!(s, Slots::Many(_)));
        for t in [9, 4, 7, 1, 8] {
            let at = s.partition_point(|x| x.ts <= t);
            s.insert(at, slot(t));
        }
        assert_eq!(times(&s), [1, 3, 4, 5, 7, 8, 9]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.front().map(|x| x.ts), Some(1));
        assert_eq!(s.back().map(|x| x.ts), Some(9));
        if let Some(x) = s.get_mut(2) {
            x.reported = true;
        }
        assert_eq!(s.iter().filter(|x| x.reported).count(), 1);
        assert_eq!(s.pop_front().map(|x| x.ts), Some(1));
        assert_eq!(s.partition_point(|x| x.ts <= 6), 3);
        for x in s.iter_mut() {
            x.ts += 1;
        }
        assert_eq!(times(&s), [4, 5, 6, 8, 9, 10]);
        while s.len() > 1 {
            s.pop_front();
        }
        s.shrink_to_fit();
        assert!(matches!(s, Slots::One(_)), "a single slot goes back inline");
        assert_eq!(s.pop_front().map(|x| x.ts), Some(10));
        assert!(s.is_empty());
        assert_eq!(s.pop_front().map(|x| x.ts), None);
        let mut r = Slots::with_capacity(3);
        for t in [1, 2, 3] {
            r.insert(r.len(), slot(t));
        }
        assert_eq!(r.heap_bytes(), alloc_bytes(3 * std::mem::size_of::<Slot>()));
    }

    #[test]
    fn a_long_window_becomes_shared_chunks_and_a_ring_again() {
        let mut s = Slots::default();
        for t in 0..BIG_KEY as i64 {
            s.insert(s.len(), slot(t * 2));
        }
        assert!(matches!(s, Slots::Many(_)), "a ring up to {BIG_KEY}");
        s.insert(s.len(), slot(BIG_KEY as i64 * 2));
        assert!(matches!(s, Slots::Big(_)), "chunks past it");
        // Out of order, then from the front, as a window does.
        let at = s.partition_point(|x| x.ts <= 301);
        s.insert(at, slot(301));
        assert_eq!(at, 151);
        let shared = s.clone();
        if let Some(x) = s.get_mut(151) {
            x.reported = true;
        }
        assert_eq!(s.iter().filter(|x| x.reported).count(), 1);
        assert_eq!(
            shared.iter().filter(|x| x.reported).count(),
            0,
            "a clone keeps its own"
        );
        let mut want: Vec<i64> = (0..=BIG_KEY as i64).map(|t| t * 2).collect();
        want.insert(151, 301);
        assert_eq!(times(&s), want);
        assert_eq!(times(&shared), want);
        while s.len() > BIG_KEY {
            s.pop_front();
        }
        assert!(matches!(s, Slots::Big(_)));
        s.shrink_to_fit();
        assert!(matches!(s, Slots::Many(_)), "a ring again once short");
        assert_eq!(times(&s), want[want.len() - BIG_KEY..]);
        assert_eq!(
            s.heap_bytes(),
            alloc_bytes(BIG_KEY * std::mem::size_of::<Slot>())
        );
    }

    /// Checks everything a window keeps about its keys against the keys themselves.
    fn check(w: &Windows, timed: bool) {
        let live: Vec<(u32, &KeyState)> = w.slab.iter().collect();
        assert_eq!(live.len(), w.len());
        assert_eq!(w.index.len(), w.len());
        let vacant = w
            .slab
            .chunks
            .iter()
            .flatten()
            .filter(|e| e.is_none())
            .count();
        assert_eq!(vacant, w.slab.free.len());
        let (mut heap, mut payload) = (0, 0);
        for &(id, st) in &live {
            assert_eq!(w.find(st.key.as_str()), Some(id));
            heap += st.heap_bytes();
            payload += st.payload_bytes();
            let ts: Vec<i64> = st.slots.iter().map(|s| s.ts).collect();
            assert!(ts.windows(2).all(|p| p[0] <= p[1]), "{ts:?}");
            assert!(st.slots.iter().all(|s| !(s.reported && s.event.is_some())));
            if let Some(t) = st.tally.as_deref() {
                assert_eq!(t.tags.len(), st.slots.len());
                match &t.kind {
                    TallyKind::Tags(m) => {
                        let mut want = HashMap::new();
                        for &tag in &t.tags {
                            *want.entry(tag).or_insert(0u32) += 1;
                        }
                        assert_eq!(m, &want);
                    }
                    TallyKind::Sum(sum) => {
                        assert_eq!(*sum, t.tags.iter().map(|&v| u128::from(v)).sum());
                    }
                    TallyKind::Ordered(steps) => {
                        let mut want = Vec::new();
                        ordered_walk(&t.tags, 0, &mut want);
                        assert_eq!(steps, &want, "temporal_ordered steps");
                    }
                }
            }
            if timed {
                let front = st.slots.front().map(|s| s.ts);
                assert_eq!(st.slots.len(), 1);
                let d = front.map(|t| (t.saturating_add(w.span), id));
                assert!(d.is_some_and(|d| w.deadlines.contains(&d)));
            }
        }
        assert_eq!(heap, w.heap);
        assert_eq!(payload, w.payload);
        assert_eq!(w.deadlines.len(), if timed { w.len() } else { 0 });
        // The update order: every key once, in `seq` order; before the shedding cursor, no
        // key holds payloads it could shed.
        let (mut prev, mut id, mut n) = (NIL, w.head, 0);
        let mut reached = w.shed_from == NIL;
        let mut last_seq = 0;
        while id != NIL {
            let Some(st) = w.slab.get(id) else {
                panic!("update order names missing key {id}");
            };
            assert_eq!(st.lru.prev, prev);
            assert!(n == 0 || st.seq > last_seq);
            reached |= id == w.shed_from;
            if !reached {
                assert!(st.firing.is_some() || st.slots.iter().all(|s| s.event.is_none()));
            }
            last_seq = st.seq;
            prev = id;
            id = st.lru.next;
            n += 1;
        }
        assert_eq!(w.tail, prev);
        assert_eq!(n, w.len());
        assert!(reached, "the shedding cursor is in the update order");
    }

    fn check_engine(engine: &Engine) {
        for (c, w) in engine.windows.iter().enumerate() {
            let timed = engine
                .rules
                .correlations
                .get(c)
                .is_some_and(|r| r.measure.is_timed());
            check(w, timed);
        }
        let payload: usize = engine.windows.iter().map(|w| w.payload).sum();
        assert_eq!(payload, engine.payload);
    }

    const RULES: &str = "title: a
name: a
detection: {sel: {event.action: a}, condition: sel}
---
title: b
name: b
detection: {sel: {event.action: b}, condition: sel}
---
name: count
correlation: {type: event_count, rules: [a], group-by: [source.ip], timespan: 1m, condition: {gte: 3}}
---
name: distinct
correlation: {type: value_count, rules: [a, b], group-by: [source.ip], timespan: 1m, condition: {field: user.name, gte: 2}}
---
name: both
correlation: {type: temporal, rules: [a, b], group-by: [source.ip], timespan: 1m}
---
name: ordered
correlation: {type: temporal_ordered, rules: [a, b], group-by: [source.ip, user.name], timespan: 1m}
---
name: total
correlation: {type: value_sum, rules: [b], group-by: [source.ip], timespan: 1m, condition: {field: network.bytes, gte: 10}}
---
name: beat
correlation: {type: periodic, rules: [a], group-by: [user.name], timespan: 5m, condition: {gte: 3}}
---
name: no_end
correlation: {type: absence, rules: [a, b], group-by: [source.ip], timespan: 30s}
---
name: quiet
correlation: {type: silence, rules: [a], group-by: [user.name], timespan: 30s}
---
name: chained
correlation: {type: event_count, rules: [count], group-by: [source.ip], timespan: 5m, condition: {gte: 2}}
";

    /// Random events over a few keys, times mostly advancing, some out of order.
    struct Feed {
        rng: u64,
        t: i64,
    }

    impl Feed {
        fn next(&mut self, n: u64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % n
        }

        fn event(&mut self) -> Arc<Event> {
            self.t += i64::try_from(self.next(4_000)).unwrap_or(0);
            let late = i64::try_from(self.next(10)).unwrap_or(0);
            let t = if late == 0 {
                self.t - 1_000 * i64::try_from(self.next(90)).unwrap_or(0)
            } else {
                self.t
            };
            let at = DateTime::<Utc>::UNIX_EPOCH + Duration::milliseconds(t);
            let mut e = Event::new(at, at);
            let action = if self.next(3) == 0 { "b" } else { "a" };
            let ip = format!("10.0.0.{}", self.next(9));
            let user = format!("u{}", self.next(4));
            let bytes = self.next(7).to_string();
            let mut fields = vec![("event.action", action), ("source.ip", ip.as_str())];
            if self.next(8) != 0 {
                fields.push(("user.name", user.as_str()));
            }
            if self.next(6) != 0 {
                fields.push(("network.bytes", bytes.as_str()));
            }
            for (k, v) in fields {
                assert!(e.set(k, v).is_ok());
            }
            Arc::new(e)
        }
    }

    /// Every type of correlation under tight limits (key eviction, window caps, value caps,
    /// payload shedding, expiry, deadlines), with snapshots restored into fresh engines and
    /// keys removed along the way: the windows' bookkeeping matches their keys after every
    /// step, and a restored engine snapshots exactly as the one it came from.
    #[test]
    fn window_bookkeeping_holds_under_every_bound() {
        let (set, errors) = RuleSet::from_sources_with(
            &[crate::RuleSource {
                path: "r.yml".to_owned(),
                text: RULES.to_owned(),
            }],
            &crate::LoadOptions {
                apply_unserved_logsources: true,
                ..Default::default()
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
        let set = Arc::new(set);
        for (round, lateness, keys) in [(1u64, 0i64, 6), (2, 0, 6), (3, 20, 6), (4, 0, 50)] {
            let mut feed = Feed {
                rng: 0x9e37_79b9_7f4a_7c15 ^ round,
                t: 1_000_000,
            };
            let size = approx_event_bytes(&feed.event());
            let limits = EngineLimits {
                max_keys_per_rule: keys,
                max_events_per_key: 5,
                max_values_per_key: 2,
                allowed_lateness: Duration::seconds(lateness),
                max_payload_bytes: 12 * size,
            };
            let mut engine = Engine::new(Arc::clone(&set), limits);
            let mut out = Vec::new();
            let (mut fired, mut evicted, mut expired, mut shed) = (0, 0, 0, 0);
            for step in 0..4_000u32 {
                engine.process(&feed.event(), &mut out);
                check_engine(&engine);
                if step % 97 == 0 {
                    let at = DateTime::<Utc>::UNIX_EPOCH + Duration::milliseconds(feed.t + 500);
                    engine.advance(at, &mut out);
                    check_engine(&engine);
                }
                if step % 331 == 0 {
                    let snap = engine.snapshot(|_| true);
                    assert_eq!(engine.snapshot_all(), snap);
                    let mut fresh = Engine::new(Arc::clone(&set), limits);
                    assert!(fresh.restore(snap.clone()).is_ok());
                    check_engine(&fresh);
                    assert_eq!(fresh.snapshot(|_| true), snap);
                    let stats = engine.stats();
                    evicted += stats.keys_evicted;
                    expired += stats.rules.iter().map(|r| r.keys_expired).sum::<u64>();
                    shed += stats.payloads_dropped;
                    engine = fresh;
                }
                if step % 513 == 0 {
                    let odd = |k: &str| k.len() % 2 == 1;
                    let removed = engine.remove_keys(odd);
                    check_engine(&engine);
                    assert!(engine.snapshot(odd).windows.is_empty(), "{removed} removed");
                }
                fired += out.len();
                out.clear();
            }
            assert!(fired > 100, "{fired} detections");
            assert!(shed > 0, "{shed} payloads shed");
            if keys < 10 {
                assert!(evicted > 0, "{evicted} keys evicted");
            } else {
                assert!(expired > 0, "{expired} keys expired");
            }
        }
    }
}
