//! Parser definitions: per-vendor extraction as data, not code.
//!
//! A definition is one YAML file (`parsers/definitions/*.yml`, format documented in
//! `parsers/definitions/README.md`): when it applies (`match`), constants it sets (`set`), and
//! either an ordered list of regex `patterns` tried on the syslog MSG (first match wins) whose
//! named captures become schema fields, or an `extract:` step (key=value, JSON, CSV, CEF, LEEF;
//! [`crate::formats`]) whose named values are mapped onto the schema (`fields`), with `patterns`
//! that are conditions on those values (`when`). Each file carries embedded `tests`.
//!
//! Everything is checked when a file loads: regexes compile once, every target field is a core
//! field or an `extra.` field, every capture is mapped, constants convert to their field's type,
//! format options belong to their format, time formats are valid. A file that fails any check is
//! refused with an error naming the file and the line; the other files still load.
//!
//! Dispatch: definitions with a `program` condition are indexed by program name; definitions
//! without one are found through their required literals (`prefix`, `contains`, the `CEF:` /
//! `LEEF:` marker), all held in one Aho-Corasick automaton, so a message only meets the
//! definitions whose literals it contains. Only definitions with neither a program nor a literal
//! are tried for every message. Within a regex definition the patterns are matched in one pass
//! with a [`RegexSet`] and only the winning pattern runs again for its captures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use regex::{Regex, RegexSet};
use regex_automata::nfa::thompson::backtrack::{BoundedBacktracker, Cache as BtCache};
use regex_automata::util::captures::Captures as BtCaptures;
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::{Anchored, Input};
use serde::Deserialize;

use crate::event::{Event, FieldError};
use crate::formats::{cef, csv, json, kv, leef, FormatError, Pairs};
use crate::syslog::{Format, SyslogMessage};

/// The definitions shipped with Vigil: (path shown in errors, YAML text), in load order. Add a
/// file here to ship it. Generic fallbacks (`cef`, `leef`) are tried after every other
/// definition whatever their place (`fallback: true`).
const BUILTIN: &[(&str, &str)] = &[
    (
        "parsers/definitions/openssh.yml",
        include_str!("../definitions/openssh.yml"),
    ),
    (
        "parsers/definitions/sudo.yml",
        include_str!("../definitions/sudo.yml"),
    ),
    (
        "parsers/definitions/pam.yml",
        include_str!("../definitions/pam.yml"),
    ),
    (
        "parsers/definitions/netfilter.yml",
        include_str!("../definitions/netfilter.yml"),
    ),
    (
        "parsers/definitions/cisco_asa.yml",
        include_str!("../definitions/cisco_asa.yml"),
    ),
    (
        "parsers/definitions/fortigate.yml",
        include_str!("../definitions/fortigate.yml"),
    ),
    (
        "parsers/definitions/paloalto.yml",
        include_str!("../definitions/paloalto.yml"),
    ),
    (
        "parsers/definitions/nginx.yml",
        include_str!("../definitions/nginx.yml"),
    ),
    (
        "parsers/definitions/nginx_json.yml",
        include_str!("../definitions/nginx_json.yml"),
    ),
    (
        "parsers/definitions/kong.yml",
        include_str!("../definitions/kong.yml"),
    ),
    (
        "parsers/definitions/aws_apigateway.yml",
        include_str!("../definitions/aws_apigateway.yml"),
    ),
    (
        "parsers/definitions/apic.yml",
        include_str!("../definitions/apic.yml"),
    ),
    (
        "parsers/definitions/envoy.yml",
        include_str!("../definitions/envoy.yml"),
    ),
    (
        "parsers/definitions/envoy_json.yml",
        include_str!("../definitions/envoy_json.yml"),
    ),
    (
        "parsers/definitions/zeek_conn.yml",
        include_str!("../definitions/zeek_conn.yml"),
    ),
    (
        "parsers/definitions/zeek_dns.yml",
        include_str!("../definitions/zeek_dns.yml"),
    ),
    (
        "parsers/definitions/zeek_http.yml",
        include_str!("../definitions/zeek_http.yml"),
    ),
    (
        "parsers/definitions/zeek_ssh.yml",
        include_str!("../definitions/zeek_ssh.yml"),
    ),
    (
        "parsers/definitions/zeek_notice.yml",
        include_str!("../definitions/zeek_notice.yml"),
    ),
    (
        "parsers/definitions/zeek.yml",
        include_str!("../definitions/zeek.yml"),
    ),
    (
        "parsers/definitions/cef.yml",
        include_str!("../definitions/cef.yml"),
    ),
    (
        "parsers/definitions/leef.yml",
        include_str!("../definitions/leef.yml"),
    ),
];

/// The `extra` key that receives `N` from an rsyslog `message repeated N times: [ ... ]` wrapper.
pub const REPEAT_COUNT_FIELD: &str = "repeat_count";

/// Default `max_pairs` of `extract: {format: json}`.
pub const JSON_DEFAULT_MAX_PAIRS: usize = 256;
/// Default `max_depth` of `extract: {format: json}`.
pub const JSON_DEFAULT_MAX_DEPTH: usize = 8;
/// Largest `max_pairs` a JSON extraction may ask for.
pub const JSON_MAX_PAIRS_LIMIT: usize = 4096;
/// Largest `max_depth` a JSON extraction may ask for.
pub const JSON_MAX_DEPTH_LIMIT: usize = 64;

/// CEF header values offered to `fields` and `when` under these names.
const CEF_HEADER_KEYS: &[&str] = &[
    "cef.version",
    "cef.vendor",
    "cef.product",
    "cef.device_version",
    "cef.signature_id",
    "cef.name",
    "cef.severity",
];

/// LEEF header values offered to `fields` and `when` under these names.
const LEEF_HEADER_KEYS: &[&str] = &[
    "leef.version",
    "leef.vendor",
    "leef.product",
    "leef.product_version",
    "leef.event_id",
];

/// Prefix of the pseudo-keys holding CEF/LEEF custom fields resolved by their labels
/// (`cs1Label=Rule cs1=Block` gives `label:Rule` = `Block`).
const LABEL_PREFIX: &str = "label:";

/// A definition file that could not be loaded, or one of its problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct DefinitionError {
    /// The file, as given to [`DefinitionSet::from_sources`].
    pub path: String,
    /// 1-based line of the problem (best effort for semantic errors: the line of the offending
    /// key or value).
    pub line: usize,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

/// Why a definition that took a message could not turn it into an event. The record should be
/// dead-lettered with [`ApplyError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A regex capture does not convert to its field's type (`source.ip` = `foo`).
    #[error("definition {definition}: {source}")]
    Field {
        /// The definition that took the message.
        definition: String,
        /// The refused value.
        source: FieldError,
    },
    /// The message matched the definition's `match` but its structured record does not parse
    /// (a CEF header error, JSON that is not an object, an unterminated CSV quote).
    #[error("definition {definition}: {source}")]
    Format {
        /// The definition that took the message.
        definition: String,
        /// The format's error; its `kind` is the reason.
        source: FormatError,
    },
}

impl ApplyError {
    /// Stable dead-letter label: `field_type`, or the format error's kind (`cef_header`,
    /// `leef_header`, `json`, `csv`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Field { .. } => "field_type",
            ApplyError::Format { source, .. } => source.kind,
        }
    }

    /// The definition that took the message.
    pub fn definition(&self) -> &str {
        match self {
            ApplyError::Field { definition, .. } | ApplyError::Format { definition, .. } => {
                definition
            }
        }
    }
}

/// The outcome of [`DefinitionSet::run_tests`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    /// How many embedded test cases ran.
    pub cases: usize,
    /// One line per failed case (`path:line: ...`); empty when all pass.
    pub failures: Vec<String>,
}

impl TestReport {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A loaded, compiled set of parser definitions.
#[derive(Debug, Clone, Default)]
pub struct DefinitionSet {
    /// In load order; indices below refer to this.
    definitions: Vec<Definition>,
    /// Program name -> definitions with that program in their `match.program`, ascending.
    by_program: HashMap<String, Vec<usize>>,
    /// Definitions with neither a program condition nor a required literal: tried for every
    /// message, ascending.
    unconditional: Vec<usize>,
    /// The required literals of definitions without a program condition.
    literals: Option<AhoCorasick>,
    /// Literal (automaton pattern id) -> definition index.
    literal_owner: Vec<usize>,
    /// The same three for records that are not syslog: only `match: {raw: true}` definitions,
    /// by their literals whatever their program condition.
    raw: LiteralIndex,
}

/// Definitions found by required literals, and those tried for every record.
#[derive(Debug, Clone, Default)]
struct LiteralIndex {
    /// Definitions without a required literal: tried for every record, ascending.
    unconditional: Vec<usize>,
    /// The required literals.
    literals: Option<AhoCorasick>,
    /// Literal (automaton pattern id) -> definition index.
    literal_owner: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Definition {
    name: String,
    path: String,
    programs: Vec<String>,
    prefix: Option<String>,
    /// Alternatives: the MSG must contain one of them (when not empty).
    contains: Vec<String>,
    regex: Option<Regex>,
    /// Also tried on records that are not syslog (`match: {raw: true}`).
    raw: bool,
    /// Values that mean "not logged" (`-`): a capture or extracted value written exactly so
    /// sets nothing, is not kept in `extra` and is absent for `when` and `timestamp`.
    absent: Vec<String>,
    /// Extracted keys that are secrets (`request.headers.authorization`): a key equal to one of
    /// these or under it (`....authorization.0`) is never kept in `extra`, whether unmapped or
    /// not writable; explicit mappings (keep only the auth scheme) still apply.
    redact: Vec<String>,
    /// Tried after every definition without the flag.
    fallback: bool,
    set: Vec<(String, String)>,
    /// Target field -> (value as written -> value to store).
    translate: HashMap<String, HashMap<String, String>>,
    body: Body,
    tests: Vec<TestCase>,
}

#[derive(Debug, Clone)]
enum Body {
    /// Regex patterns on the MSG text.
    Regex {
        patterns: Vec<Pattern>,
        /// All pattern regexes, to find the first matching one in one pass. `None` if the set
        /// would not compile within the size limits (then the patterns are tried one by one).
        pattern_set: Option<RegexSet>,
        /// `@timestamp` from the winning pattern's captures (by group name).
        timestamp: Vec<TimestampRule>,
    },
    /// An extraction step and conditions on the extracted values.
    Structured(Structured),
}

#[derive(Debug, Clone)]
struct Pattern {
    name: String,
    regex: Regex,
    /// For a pattern anchored at the start: its backtracker, which finds the match and its
    /// groups in one anchored pass (the regex scans with a DFA first, then backtracks).
    anchored: Option<Arc<AnchoredPattern>>,
    /// Capture group index -> how its text is written (several mappings per group allowed).
    captures: Vec<(usize, Mapping)>,
    set: Vec<(String, String)>,
}

/// A search's state: the backtracker's, and the quick matcher's group slots.
type SearchState = (BtCache, BtCaptures, Vec<Option<usize>>);
type CacheMaker = Box<dyn Fn() -> SearchState + Send + Sync>;

/// A start-anchored pattern's bounded backtracker, with search state per thread, and its
/// quick matcher when the pattern has the usual shape (`crate::quick`), tried first.
struct AnchoredPattern {
    bt: BoundedBacktracker,
    quick: Option<crate::quick::Quick>,
    state: Pool<SearchState, CacheMaker>,
}

impl std::fmt::Debug for AnchoredPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchoredPattern")
    }
}

impl AnchoredPattern {
    /// The backtracker of `source` when every match of it starts at the start of the text
    /// (`^...`), so one anchored search gives what the regex gives; else `None`.
    fn new(source: &str) -> Option<Arc<AnchoredPattern>> {
        let bt = BoundedBacktracker::new(source).ok()?;
        if !bt.get_nfa().is_always_start_anchored() {
            return None;
        }
        let quick = crate::quick::Quick::new(source);
        let slots = quick.as_ref().map_or(0, crate::quick::Quick::slots_len);
        let maker = bt.clone();
        let state: CacheMaker = Box::new(move || {
            (
                maker.create_cache(),
                maker.create_captures(),
                vec![None; slots],
            )
        });
        Some(Arc::new(AnchoredPattern {
            bt,
            quick,
            state: Pool::new(state),
        }))
    }

    /// The match's groups, `Err(())` when the text is too long for the backtracker's memory
    /// bound (the caller uses the regex).
    #[allow(clippy::result_unit_err)]
    fn captures<'p, 't>(&'p self, text: &'t str) -> Result<Option<Groups<'p, 't>>, ()> {
        if text.len() > self.bt.max_haystack_len() {
            return Err(());
        }
        let mut guard = self.state.get();
        let (cache, caps, slots) = &mut *guard;
        if let Some(quick) = &self.quick {
            match quick.captures(text, slots) {
                crate::quick::Outcome::Match => return Ok(Some(Groups::Slots(text, guard))),
                crate::quick::Outcome::NoMatch => return Ok(None),
                crate::quick::Outcome::GaveUp => {}
            }
        }
        let input = Input::new(text).anchored(Anchored::Yes);
        self.bt.try_captures(cache, input, caps).map_err(|_| ())?;
        Ok(caps.is_match().then_some(Groups::Spans(text, guard)))
    }
}

/// The groups of a pattern's match, from the regex or from its backtracker.
enum Groups<'p, 't> {
    Regex(regex::Captures<'t>),
    Spans(&'t str, PoolGuard<'p, SearchState, CacheMaker>),
    /// From the quick matcher: its slots (two a group).
    Slots(&'t str, PoolGuard<'p, SearchState, CacheMaker>),
}

impl<'t> Groups<'_, 't> {
    /// The text of group `i`, if it took part in the match.
    fn get(&self, i: usize) -> Option<&'t str> {
        match self {
            Groups::Regex(c) => c.get(i).map(|m| m.as_str()),
            Groups::Spans(text, guard) => guard.1.get_group(i).and_then(|s| text.get(s.range())),
            Groups::Slots(text, guard) => crate::quick::group(text, &guard.2, i),
        }
    }
}

#[derive(Debug, Clone)]
struct Structured {
    extract: Extract,
    /// CEF/LEEF header conditions: vendor alternatives, product alternatives (empty: any).
    vendor: Vec<String>,
    product: Vec<String>,
    /// Extracted key -> how it is written, for every record.
    fields: Vec<(String, Mapping)>,
    /// Tried in order; the first that reads wins.
    timestamp: Vec<TimestampRule>,
    patterns: Vec<WhenPattern>,
}

#[derive(Debug, Clone)]
enum Extract {
    Kv(kv::KvOptions),
    Json { max_pairs: usize, max_depth: usize },
    Csv { delimiter: char, columns: Columns },
    Cef,
    Leef,
}

#[derive(Debug, Clone)]
enum Columns {
    /// Columns are named by their 0-based index.
    Index,
    /// One list of names for every line.
    List(Vec<String>),
    /// The value of column `column` picks the list (Palo Alto: one list per log type).
    ByType {
        column: usize,
        lists: HashMap<String, Vec<String>>,
    },
}

#[derive(Debug, Clone)]
struct TimestampRule {
    /// Values joined with one space.
    keys: Vec<String>,
    format: TimeFormat,
}

#[derive(Debug, Clone)]
enum TimeFormat {
    Rfc3339,
    EpochMs,
    EpochS,
    Leef,
    Strftime(String),
}

#[derive(Debug, Clone)]
struct WhenPattern {
    name: String,
    /// Key -> condition; all keys must hold.
    when: Vec<(String, Condition)>,
    fields: Vec<(String, Mapping)>,
    set: Vec<(String, String)>,
}

/// A `when` condition on one extracted value.
#[derive(Debug, Clone)]
enum Condition {
    /// The value is exactly one of these.
    OneOf(Vec<String>),
    /// The value matches this regex (anywhere unless anchored).
    Regex(Regex),
}

/// How one extracted value or capture is written to a field: optionally reduced to a regex's
/// first group, optionally multiplied by a decimal `scale`, then translated and converted to
/// the target field's type.
#[derive(Debug, Clone)]
struct Mapping {
    target: String,
    /// Keep only this regex's first capture group (the whole match when it has none).
    regex: Option<Regex>,
    /// Multiply the value (a decimal number, fraction and exponent allowed) by this factor and
    /// write the whole part.
    scale: Option<u64>,
}

/// Why a [`Mapping`] could not turn a value into field text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvertError {
    /// The mapping's regex does not match the value.
    NoMatch,
    /// The value is not a non-negative decimal number, or the scaled value overflows.
    NotANumber,
}

#[derive(Debug, Clone)]
struct TestCase {
    line: usize,
    /// Run as a raw record (not syslog) rather than as a syslog MSG.
    raw: bool,
    name: Option<String>,
    message: String,
    program: Option<String>,
    expect: Vec<(String, Option<String>)>,
    expect_pattern: Option<String>,
    expect_no_match: bool,
    expect_error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The file format (serde side).

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans; kept in the format, not used at runtime
    description: Option<String>,
    #[serde(rename = "match", default)]
    matcher: MatchSpec,
    #[serde(default)]
    fallback: bool,
    #[serde(default)]
    absent: Option<OneOrMany>,
    #[serde(default)]
    redact: Option<OneOrMany>,
    #[serde(default)]
    extract: Option<ExtractSpec>,
    #[serde(default)]
    fields: BTreeMap<Text, MappingSpec>,
    #[serde(default)]
    timestamp: Option<OneOrManyTimestamps>,
    #[serde(default)]
    translate: BTreeMap<String, BTreeMap<Text, Scalar>>,
    #[serde(default)]
    set: BTreeMap<String, Scalar>,
    #[serde(default)]
    patterns: Vec<PatternSpec>,
    #[serde(default)]
    tests: Vec<TestSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    #[serde(default)]
    program: Option<OneOrMany>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    contains: Option<OneOrMany>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    cef: Option<HeaderSpec>,
    #[serde(default)]
    leef: Option<HeaderSpec>,
    #[serde(default)]
    raw: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    #[serde(default)]
    vendor: Option<OneOrMany>,
    #[serde(default)]
    product: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractSpec {
    format: FormatName,
    #[serde(default)]
    pair_separator: Option<String>,
    #[serde(default)]
    kv_separator: Option<String>,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    columns: Option<ColumnsSpec>,
    #[serde(default)]
    type_column: Option<usize>,
    #[serde(default)]
    max_pairs: Option<usize>,
    #[serde(default)]
    max_depth: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FormatName {
    Kv,
    Json,
    Csv,
    Cef,
    Leef,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ColumnsSpec {
    List(Vec<String>),
    ByType(BTreeMap<Text, Vec<String>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampSpec {
    field: OneOrMany,
    format: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrManyTimestamps {
    One(TimestampSpec),
    Many(Vec<TimestampSpec>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }

    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a value, a list of values, or {regex: '...'}"
)]
enum WhenValue {
    One(Scalar),
    Many(Vec<Scalar>),
    Regex(WhenRegex),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenRegex {
    regex: String,
}

/// A `fields` value: a target field, `{to: field, regex: '...', scale: N}`, or a list of these.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a target field, {to: <field>, regex: '...', scale: <n>}, or a list of these"
)]
enum MappingSpec {
    // A list first: serde would also read a two-item list as `MappingOptions` (a struct).
    Many(Vec<OneMappingSpec>),
    One(OneMappingSpec),
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a target field or {to: <field>, regex: '...', scale: <n>}"
)]
enum OneMappingSpec {
    Target(String),
    Options(MappingOptions),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingOptions {
    to: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    scale: Option<u64>,
}

impl MappingSpec {
    fn into_vec(self) -> Vec<OneMappingSpec> {
        match self {
            MappingSpec::One(one) => vec![one],
            MappingSpec::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternSpec {
    name: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    when: Option<BTreeMap<Text, WhenValue>>,
    #[serde(default)]
    fields: BTreeMap<Text, MappingSpec>,
    #[serde(default)]
    set: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    #[serde(default)]
    name: Option<String>,
    message: String,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    expect: BTreeMap<String, Option<Scalar>>,
    #[serde(default)]
    expect_pattern: Option<String>,
    #[serde(default)]
    expect_no_match: bool,
    #[serde(default)]
    expect_error: Option<String>,
}

/// A YAML scalar taken as text, so `source.port: 22` and `source.port: "22"` mean the same.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s,
        }
    }
}

/// A map key or value given as any YAML scalar (`6: tcp` and `"6": tcp` are the same).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(from = "Scalar")]
struct Text(String);

impl From<Scalar> for Text {
    fn from(s: Scalar) -> Self {
        Text(s.into_text())
    }
}

// ---------------------------------------------------------------------------------------------

impl DefinitionSet {
    /// Loads definitions from `(path, yaml text)` pairs. Files with problems are left out and each
    /// problem is returned; the rest load. A definition whose `name` repeats an earlier one is
    /// refused.
    pub fn from_sources(sources: &[(String, String)]) -> (DefinitionSet, Vec<DefinitionError>) {
        let mut set = DefinitionSet::default();
        let mut errors = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        for (path, text) in sources {
            match compile(path, text) {
                Ok(def) => {
                    if !names.insert(def.name.clone()) {
                        errors.push(DefinitionError {
                            path: path.clone(),
                            line: locate(text, &["name"]),
                            message: format!("definition name {:?} is already loaded", def.name),
                        });
                        continue;
                    }
                    set.definitions.push(def);
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        set.index();
        (set, errors)
    }

    /// The definitions shipped in `parsers/definitions/`. They are tested to load without error;
    /// should one ever fail, it is left out (see [`DefinitionSet::builtin_checked`]).
    pub fn builtin() -> DefinitionSet {
        Self::builtin_checked().0
    }

    /// The shipped definitions and any load errors (there should be none).
    pub fn builtin_checked() -> (DefinitionSet, Vec<DefinitionError>) {
        Self::from_sources(&Self::builtin_sources())
    }

    /// The shipped definition files as `(path, yaml text)`, e.g. to combine with user files.
    pub fn builtin_sources() -> Vec<(String, String)> {
        BUILTIN
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect()
    }

    /// Definition names, in load order.
    pub fn names(&self) -> Vec<&str> {
        self.definitions.iter().map(|d| d.name.as_str()).collect()
    }

    /// How many definitions are loaded.
    pub fn len(&self) -> usize {
        self.definitions.len()
    }

    /// Whether no definition is loaded.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    /// How many definitions are tried for every message whatever its program and text (they
    /// have neither a `program` condition nor a required literal). Each one costs every message
    /// a check, so keep this small.
    pub fn unconditional_len(&self) -> usize {
        self.unconditional.len()
    }

    /// Builds the dispatch indexes: by program, by literal, and the unconditional rest; and
    /// the same by literal for raw records.
    fn index(&mut self) {
        self.by_program.clear();
        let mut syslog_defs: Vec<(usize, Vec<&str>)> = Vec::new();
        let mut raw_defs: Vec<(usize, Vec<&str>)> = Vec::new();
        for (index, def) in self.definitions.iter().enumerate() {
            if def.raw {
                raw_defs.push((index, def.required_literals()));
            }
            if def.programs.is_empty() {
                syslog_defs.push((index, def.required_literals()));
                continue;
            }
            for program in &def.programs {
                let list = self.by_program.entry(program.clone()).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
        }
        let syslog = LiteralIndex::build(&syslog_defs);
        self.raw = LiteralIndex::build(&raw_defs);
        self.unconditional = syslog.unconditional;
        self.literals = syslog.literals;
        self.literal_owner = syslog.literal_owner;
    }

    /// The definitions a message can meet, in the order they are tried: load order, fallbacks
    /// last.
    fn candidates(&self, program: Option<&str>, text: &str) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        if let Some(list) = program.and_then(|p| self.by_program.get(p)) {
            out.extend_from_slice(list);
        }
        out.extend_from_slice(&self.unconditional);
        literal_hits(self.literals.as_ref(), &self.literal_owner, text, &mut out);
        self.in_order(out)
    }

    /// The raw definitions a record that is not syslog can meet, in the order they are tried.
    fn raw_candidates(&self, text: &str) -> Vec<usize> {
        let mut out = self.raw.unconditional.clone();
        literal_hits(
            self.raw.literals.as_ref(),
            &self.raw.literal_owner,
            text,
            &mut out,
        );
        self.in_order(out)
    }

    /// Sorts definition indexes into load order with fallbacks last, without repeats.
    fn in_order(&self, mut out: Vec<usize>) -> Vec<usize> {
        let fallback = |i: usize| self.definitions.get(i).is_some_and(|d| d.fallback);
        out.sort_unstable_by_key(|&i| (fallback(i), i));
        out.dedup();
        out
    }

    /// How many definitions apply to records that are not syslog (`match: {raw: true}`).
    pub fn raw_len(&self) -> usize {
        self.definitions.iter().filter(|d| d.raw).count()
    }

    /// Whether any definition applies to records that are not syslog (cheap: from the index).
    pub(crate) fn has_raw(&self) -> bool {
        !self.raw.unconditional.is_empty() || self.raw.literals.is_some()
    }

    /// Applies the first definition (in load order, fallbacks last) whose `match` holds and one
    /// of whose patterns matches `message_text`; returns `(definition name, pattern name)` (the
    /// pattern name is empty for a structured definition without patterns), or `None` when
    /// nothing matched (the event is left as it was, except for the repeat count below).
    ///
    /// An rsyslog `message repeated N times: [ TEXT ]` wrapper is unwrapped first: TEXT is matched
    /// and `extra.repeat_count` is set to N.
    ///
    /// Fields are set in this order, later ones winning: `event.dataset` = the definition name,
    /// the definition's `set`, the pattern's `set`, then the captures (a group that did not take
    /// part in the match or captured empty text sets nothing) or, for structured definitions,
    /// the unmapped values (to `extra.<definition>.<key>`), the definition's `fields`, the
    /// pattern's `fields`, and `@timestamp` from `timestamp`.
    ///
    /// Errors: a capture that does not convert to its field's type (`source.ip` = `foo`), or a
    /// structured record that matched `match` but does not parse. The event is then partly
    /// written and should be discarded (dead-lettered with [`ApplyError::reason`]).
    pub fn apply(
        &self,
        msg: &SyslogMessage,
        message_text: &str,
        event: &mut Event,
    ) -> Result<Option<(&str, &str)>, ApplyError> {
        let (text, repeat) = unwrap_repeated(message_text);
        if let Some(count) = repeat {
            event.extra.insert(REPEAT_COUNT_FIELD.into(), count.into());
        }
        let mut ctx = Context {
            text,
            offset: msg.timestamp.map_or(Utc.fix(), |t| *t.offset()),
            reference: event.ingested,
            cef: None,
            leef: None,
        };
        let candidates = self.candidates(msg.appname.as_deref(), text);
        self.apply_candidates(&candidates, &mut ctx, event)
    }

    /// Applies the first `match: {raw: true}` definition that takes `record`, a whole record
    /// that is not syslog (a gateway access-log line, a JSON object): `record` is the message
    /// and there is no program (`match.program` is not checked; `prefix`, `contains`, `regex`
    /// and the patterns are). Times without an offset are read as UTC. Returns and errors as
    /// [`DefinitionSet::apply`]; `None` when no raw definition takes the record.
    pub fn apply_raw(
        &self,
        record: &str,
        event: &mut Event,
    ) -> Result<Option<(&str, &str)>, ApplyError> {
        let mut ctx = Context {
            text: record,
            offset: Utc.fix(),
            reference: event.ingested,
            cef: None,
            leef: None,
        };
        let candidates = self.raw_candidates(record);
        self.apply_candidates(&candidates, &mut ctx, event)
    }

    /// Tries `candidates` in order; the first that takes the message wins.
    fn apply_candidates(
        &self,
        candidates: &[usize],
        ctx: &mut Context<'_>,
        event: &mut Event,
    ) -> Result<Option<(&str, &str)>, ApplyError> {
        for &index in candidates {
            let Some(def) = self.definitions.get(index) else {
                continue;
            };
            if let Some(pattern) = def.apply(ctx, event)? {
                return Ok(Some((def.name.as_str(), pattern)));
            }
        }
        Ok(None)
    }

    /// Runs every definition's embedded test cases against the whole set (so a case also fails
    /// when an earlier definition takes its message). Returns the case count and one line per
    /// failure.
    pub fn run_tests(&self) -> TestReport {
        let mut report = TestReport::default();
        for def in &self.definitions {
            for (n, case) in def.tests.iter().enumerate() {
                report.cases += 1;
                if let Err(why) = self.run_case(def, case) {
                    let label = case
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("test {}", n + 1));
                    report.failures.push(format!(
                        "{}:{}: {}: {} ({:?}): {}",
                        def.path, case.line, def.name, label, case.message, why
                    ));
                }
            }
        }
        report
    }

    fn run_case(&self, def: &Definition, case: &TestCase) -> Result<(), String> {
        let program = case
            .program
            .clone()
            .or_else(|| def.programs.first().cloned());
        let msg = SyslogMessage {
            format: Format::FileLine,
            priority: None,
            facility: None,
            severity: None,
            version: None,
            timestamp: None,
            hostname: Some("test-host".into()),
            appname: program.map(Into::into),
            procid: None,
            msgid: None,
            structured_data: BTreeMap::new(),
            message: Some(case.message.clone().into_bytes()),
        };
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let mut event = Event::new(epoch, epoch);
        let applied = if case.raw {
            self.apply_raw(&case.message, &mut event)
        } else {
            self.apply(&msg, &case.message, &mut event)
        };
        let matched = match applied {
            Ok(matched) => matched,
            Err(e) => {
                return match &case.expect_error {
                    Some(want) if want == e.reason() && e.definition() == def.name => Ok(()),
                    _ => Err(format!("rejected: {} ({e})", e.reason())),
                }
            }
        };
        if let Some(want) = &case.expect_error {
            return Err(format!("expected rejection {want}, got none"));
        }
        let mine = matched.filter(|(d, _)| *d == def.name);
        if case.expect_no_match {
            return match mine {
                Some((_, p)) => Err(format!("expected no match, matched pattern {p:?}")),
                None => Ok(()),
            };
        }
        let pattern = match (matched, mine) {
            (_, Some((_, p))) => p,
            (Some((d, p)), None) => {
                return Err(format!(
                    "matched by definition {d} (pattern {p:?}) instead of {}",
                    def.name
                ))
            }
            (None, _) => return Err("no pattern matched".to_owned()),
        };
        let mut problems = Vec::new();
        if let Some(want) = &case.expect_pattern {
            if want != pattern {
                problems.push(format!("expected pattern {want}, matched {pattern:?}"));
            }
        }
        for (field, want) in &case.expect {
            let got = event.get(field).map(|v| v.as_text().into_owned());
            if &got != want {
                problems.push(format!(
                    "{field}: expected {}, got {}",
                    show(want.as_deref()),
                    show(got.as_deref())
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("pattern {pattern:?}: {}", problems.join("; ")))
        }
    }
}

impl LiteralIndex {
    /// Indexes `(definition, required literals)`: definitions without a literal are
    /// unconditional.
    fn build(defs: &[(usize, Vec<&str>)]) -> LiteralIndex {
        let mut out = LiteralIndex::default();
        let mut literals: Vec<&str> = Vec::new();
        for (index, required) in defs {
            if required.is_empty() {
                out.unconditional.push(*index);
            }
            for literal in required {
                literals.push(literal);
                out.literal_owner.push(*index);
            }
        }
        if literals.is_empty() {
            return out;
        }
        match AhoCorasick::new(&literals) {
            Ok(automaton) => out.literals = Some(automaton),
            Err(_) => {
                // Too large for the automaton (not expected): those definitions are tried for
                // every message instead, which is slower but correct.
                let mut all: Vec<usize> = out.literal_owner.drain(..).collect();
                all.extend(out.unconditional.iter().copied());
                all.sort_unstable();
                all.dedup();
                out.unconditional = all;
            }
        }
        out
    }
}

/// Adds to `out` the owners of the literals found in `text`.
fn literal_hits(
    automaton: Option<&AhoCorasick>,
    owners: &[usize],
    text: &str,
    out: &mut Vec<usize>,
) {
    let Some(automaton) = automaton else {
        return;
    };
    // Overlapping search cannot fail on a default (standard match kind) automaton; were it ever
    // to, every literal definition is tried rather than none.
    match automaton.try_find_overlapping_iter(text) {
        Ok(matches) => {
            for m in matches {
                if let Some(&owner) = owners.get(m.pattern().as_usize()) {
                    out.push(owner);
                }
            }
        }
        Err(_) => out.extend_from_slice(owners),
    }
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "nothing".to_owned(),
    }
}

/// Per-message state shared by the definitions the message meets: a CEF or LEEF record is
/// located and parsed at most once.
struct Context<'t> {
    text: &'t str,
    /// Offset for extracted times that carry none: the syslog header's, else UTC.
    offset: FixedOffset,
    /// Reference for year-less extracted times: the receive time.
    reference: DateTime<Utc>,
    /// `None`: not looked for yet; `Some(None)`: no CEF record in the text.
    cef: Option<Option<Result<cef::Cef, FormatError>>>,
    leef: Option<Option<Result<leef::Leef, FormatError>>>,
}

impl Context<'_> {
    fn cef(&mut self) -> Option<&Result<cef::Cef, FormatError>> {
        let text = self.text;
        self.cef
            .get_or_insert_with(|| {
                let at = cef::find(text)?;
                Some(cef::parse(text.get(at..).unwrap_or_default()))
            })
            .as_ref()
    }

    fn leef(&mut self) -> Option<&Result<leef::Leef, FormatError>> {
        let text = self.text;
        self.leef
            .get_or_insert_with(|| {
                let at = leef::find(text)?;
                Some(leef::parse(text.get(at..).unwrap_or_default()))
            })
            .as_ref()
    }
}

/// The named values of one structured record.
#[derive(Debug, Default)]
struct Record {
    /// Values that land in `extra` when no `fields` entry maps them (header pseudo-keys
    /// included).
    pairs: Pairs,
    /// Values offered to `fields` and `when` only (custom fields by label).
    labelled: Pairs,
}

impl Record {
    fn from_cef(c: &cef::Cef) -> Record {
        let mut pairs: Pairs = Vec::with_capacity(c.extensions.len() + CEF_HEADER_KEYS.len());
        for (key, value) in CEF_HEADER_KEYS.iter().zip([
            &c.version,
            &c.vendor,
            &c.product,
            &c.device_version,
            &c.signature_id,
            &c.name,
            &c.severity,
        ]) {
            pairs.push(((*key).to_owned(), value.clone()));
        }
        pairs.extend(c.extensions.iter().cloned());
        Record {
            pairs,
            labelled: labelled_keys(c.labelled()),
        }
    }

    fn from_leef(l: &leef::Leef) -> Record {
        let mut pairs: Pairs = Vec::with_capacity(l.attributes.len() + LEEF_HEADER_KEYS.len());
        for (key, value) in LEEF_HEADER_KEYS.iter().zip([
            &l.version,
            &l.vendor,
            &l.product,
            &l.product_version,
            &l.event_id,
        ]) {
            pairs.push(((*key).to_owned(), value.clone()));
        }
        pairs.extend(l.attributes.iter().cloned());
        Record {
            pairs,
            labelled: labelled_keys(l.labelled()),
        }
    }

    /// Key -> value; a repeated key's last value wins.
    fn lookup(&self) -> HashMap<&str, &str> {
        self.pairs
            .iter()
            .chain(&self.labelled)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn labelled_keys(pairs: Pairs) -> Pairs {
    pairs
        .into_iter()
        .map(|(label, value)| (format!("{LABEL_PREFIX}{label}"), value))
        .collect()
}

/// Names CSV columns: by the list the definition gives (a `_` or empty name drops the column),
/// by index past its end or without one.
fn name_columns(columns: &Columns, values: Vec<String>) -> Pairs {
    let names: &[String] = match columns {
        Columns::Index => &[],
        Columns::List(list) => list,
        Columns::ByType { column, lists } => values
            .get(*column)
            .and_then(|t| lists.get(t.as_str()))
            .map_or(&[], Vec::as_slice),
    };
    values
        .into_iter()
        .enumerate()
        .filter_map(|(i, value)| match names.get(i) {
            Some(name) if name.is_empty() || name == "_" => None,
            Some(name) => Some((name.clone(), value)),
            None => Some((i.to_string(), value)),
        })
        .collect()
}

impl Definition {
    /// Literals one of which every message this definition can match contains; empty when
    /// there are none (or the definition is dispatched by program).
    fn required_literals(&self) -> Vec<&str> {
        if let Some(prefix) = self.prefix.as_deref().filter(|p| !p.is_empty()) {
            return vec![prefix];
        }
        if !self.contains.is_empty() {
            return self.contains.iter().map(String::as_str).collect();
        }
        match &self.body {
            Body::Structured(s) => match s.extract {
                Extract::Cef => vec!["CEF:"],
                Extract::Leef => vec!["LEEF:"],
                _ => Vec::new(),
            },
            Body::Regex { .. } => Vec::new(),
        }
    }

    /// Whether an extracted key is a secret never kept in `extra` (see `redact`).
    fn is_redacted(&self, key: &str) -> bool {
        self.redact.iter().any(|r| {
            key == r
                || key
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Whether `value` means "not logged": empty, or one of the definition's `absent` values.
    fn is_absent(&self, value: &str) -> bool {
        value.is_empty() || self.absent.iter().any(|a| a == value)
    }

    /// The value to store for `value` written to `target` (the `translate` table).
    fn translated<'v>(&'v self, target: &str, value: &'v str) -> &'v str {
        self.translate
            .get(target)
            .and_then(|table| table.get(value))
            .map_or(value, String::as_str)
    }

    /// Tries this definition on the message (program already checked by dispatch). Returns the
    /// matched pattern's name.
    fn apply(&self, ctx: &mut Context<'_>, event: &mut Event) -> Result<Option<&str>, ApplyError> {
        let text = ctx.text;
        if let Some(prefix) = &self.prefix {
            if !text.starts_with(prefix.as_str()) {
                return Ok(None);
            }
        }
        if !self.contains.is_empty() && !self.contains.iter().any(|c| text.contains(c.as_str())) {
            return Ok(None);
        }
        if let Some(re) = &self.regex {
            if !re.is_match(text) {
                return Ok(None);
            }
        }
        match &self.body {
            Body::Regex {
                patterns,
                pattern_set,
                timestamp,
            } => self
                .apply_regex(patterns, pattern_set.as_ref(), timestamp, ctx, event)
                .map_err(|source| ApplyError::Field {
                    definition: self.name.clone(),
                    source,
                }),
            Body::Structured(s) => {
                let record = match self.extract(s, ctx) {
                    Ok(Some(record)) => record,
                    Ok(None) => return Ok(None),
                    Err(source) => {
                        return Err(ApplyError::Format {
                            definition: self.name.clone(),
                            source,
                        })
                    }
                };
                Ok(self.apply_record(s, &record, ctx.offset, ctx.reference, event))
            }
        }
    }

    fn apply_regex<'d>(
        &'d self,
        patterns: &'d [Pattern],
        pattern_set: Option<&RegexSet>,
        timestamp: &[TimestampRule],
        ctx: &Context<'_>,
        event: &mut Event,
    ) -> Result<Option<&'d str>, FieldError> {
        let text = ctx.text;
        let regex = |p: &'d Pattern| p.regex.captures(text).map(Groups::Regex);
        // Patterns all anchored at the start (the usual case) are tried in order, each one
        // anchored pass that fails at the first byte that differs; else the set finds the first
        // that matches, then its regex the groups.
        let anchored = || -> Result<Option<(&'d Pattern, Groups<'d, '_>)>, ()> {
            if patterns.iter().any(|p| p.anchored.is_none()) {
                return Err(());
            }
            for p in patterns {
                if let Some(g) = p.anchored.as_deref().ok_or(())?.captures(text)? {
                    return Ok(Some((p, g)));
                }
            }
            Ok(None)
        };
        let found = match anchored() {
            Ok(found) => found,
            Err(()) => match pattern_set {
                Some(set) => set
                    .matches(text)
                    .iter()
                    .next()
                    .and_then(|i| patterns.get(i))
                    .and_then(|p| regex(p).map(|c| (p, c))),
                None => patterns.iter().find_map(|p| regex(p).map(|c| (p, c))),
            },
        };
        let Some((pattern, caps)) = found else {
            return Ok(None);
        };
        event.dataset = Some(self.name.as_str().into());
        for (field, value) in self.set.iter().chain(&pattern.set) {
            event.set(field, value)?;
        }
        for (group, mapping) in &pattern.captures {
            let Some(m) = caps.get(*group).filter(|m| !self.is_absent(m)) else {
                continue;
            };
            let value = match mapping.convert(m) {
                Ok(value) => value,
                // A mapping regex that does not match writes nothing.
                Err(ConvertError::NoMatch) => continue,
                Err(why) => {
                    return Err(FieldError::InvalidValue {
                        field: mapping.target.clone(),
                        value: m.to_owned(),
                        expected: why.expected(),
                    })
                }
            };
            event.set(&mapping.target, self.translated(&mapping.target, &value))?;
        }
        if !timestamp.is_empty() {
            let values: HashMap<&str, &str> = pattern
                .regex
                .capture_names()
                .enumerate()
                .filter_map(|(i, name)| Some((name?, caps.get(i)?)))
                .filter(|(_, v)| !self.is_absent(v))
                .collect();
            if let Some(t) = timestamp
                .iter()
                .find_map(|rule| rule.read(&values, ctx.offset, ctx.reference))
            {
                event.timestamp = t;
            }
        }
        Ok(Some(pattern.name.as_str()))
    }

    /// Extracts the record, or `None` when the message holds no record of this definition
    /// (no CEF/LEEF record, or another vendor/product). A CEF/LEEF record that does not parse
    /// is an error only for definitions without a vendor/product condition (they cannot tell
    /// whose it is).
    fn extract(
        &self,
        s: &Structured,
        ctx: &mut Context<'_>,
    ) -> Result<Option<Record>, FormatError> {
        let headers_given = !s.vendor.is_empty() || !s.product.is_empty();
        match &s.extract {
            Extract::Cef => match ctx.cef() {
                None => Ok(None),
                Some(Err(_)) if headers_given => Ok(None),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(c)) => Ok(
                    (one_of(&s.vendor, &c.vendor) && one_of(&s.product, &c.product))
                        .then(|| Record::from_cef(c)),
                ),
            },
            Extract::Leef => match ctx.leef() {
                None => Ok(None),
                Some(Err(_)) if headers_given => Ok(None),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(l)) => Ok(
                    (one_of(&s.vendor, &l.vendor) && one_of(&s.product, &l.product))
                        .then(|| Record::from_leef(l)),
                ),
            },
            Extract::Kv(options) => Ok(Some(Record {
                pairs: kv::parse(ctx.text, options),
                labelled: Vec::new(),
            })),
            Extract::Json {
                max_pairs,
                max_depth,
            } => json::flatten(ctx.text, *max_pairs, *max_depth).map(|pairs| {
                Some(Record {
                    pairs,
                    labelled: Vec::new(),
                })
            }),
            Extract::Csv { delimiter, columns } => csv::split(ctx.text, *delimiter).map(|values| {
                Some(Record {
                    pairs: name_columns(columns, values),
                    labelled: Vec::new(),
                })
            }),
        }
    }

    /// Maps an extracted record onto the event; `None` when no pattern's `when` holds.
    ///
    /// Unlike regex captures, a value that does not convert to its target field's type (a
    /// device writing `srcip=N/A`) does not reject the record: it is kept in
    /// `extra.<definition>.<key>` instead.
    fn apply_record<'d>(
        &'d self,
        s: &'d Structured,
        record: &Record,
        offset: FixedOffset,
        reference: DateTime<Utc>,
        event: &mut Event,
    ) -> Option<&'d str> {
        let mut values = record.lookup();
        if !self.absent.is_empty() {
            values.retain(|_, v| !self.is_absent(v));
        }
        let pattern = if s.patterns.is_empty() {
            None
        } else {
            Some(s.patterns.iter().find(|p| p.holds(&values))?)
        };
        let no_pairs: &[(String, String)] = &[];
        let no_mappings: &[(String, Mapping)] = &[];
        let pattern_set = pattern.map_or(no_pairs, |p| p.set.as_slice());
        let pattern_fields = pattern.map_or(no_mappings, |p| p.fields.as_slice());
        event.dataset = Some(self.name.as_str().into());
        for (field, value) in self.set.iter().chain(pattern_set) {
            // Constants were converted when the file loaded; they cannot fail here.
            let _ = event.set(field, value);
        }
        let mapped: HashSet<&str> = s
            .fields
            .iter()
            .chain(pattern_fields)
            .map(|(key, _)| key.as_str())
            .collect();
        for (key, value) in &record.pairs {
            if !self.is_absent(value) && !mapped.contains(key.as_str()) && !self.is_redacted(key) {
                event.extra.insert(
                    compact_str::format_compact!("{}.{key}", self.name),
                    value.into(),
                );
            }
        }
        // Keys with a value and whether a mapping wrote it: a value that no mapping of its key
        // could write (wrong type, no regex match) is kept in extra.
        let mut written: Vec<(&str, &str, bool)> = Vec::new();
        for (key, mapping) in s.fields.iter().chain(pattern_fields) {
            let Some(value) = values.get(key.as_str()).filter(|v| !v.is_empty()) else {
                continue;
            };
            let target = mapping.target.as_str();
            let ok = mapping
                .convert(value)
                .ok()
                .and_then(|v| event.set(target, self.translated(target, &v)).ok())
                .is_some();
            match written.iter_mut().find(|(k, _, _)| *k == key.as_str()) {
                Some(entry) => entry.2 |= ok,
                None => written.push((key.as_str(), value, ok)),
            }
        }
        for (key, value, ok) in written {
            if !ok && !self.is_redacted(key) {
                event.extra.insert(
                    compact_str::format_compact!("{}.{key}", self.name),
                    value.into(),
                );
            }
        }
        if let Some(t) = s
            .timestamp
            .iter()
            .find_map(|rule| rule.read(&values, offset, reference))
        {
            event.timestamp = t;
        }
        Some(pattern.map_or("", |p| p.name.as_str()))
    }
}

/// Whether `value` is one of `alternatives` (any value when there are none).
fn one_of(alternatives: &[String], value: &str) -> bool {
    alternatives.is_empty() || alternatives.iter().any(|a| a == value)
}

impl WhenPattern {
    fn holds(&self, values: &HashMap<&str, &str>) -> bool {
        self.when.iter().all(|(key, condition)| {
            values.get(key.as_str()).is_some_and(|v| match condition {
                Condition::OneOf(alternatives) => alternatives.iter().any(|a| a == v),
                Condition::Regex(re) => re.is_match(v),
            })
        })
    }
}

impl Mapping {
    /// A plain mapping to `target`.
    fn to(target: &str) -> Mapping {
        Mapping {
            target: target.to_owned(),
            regex: None,
            scale: None,
        }
    }

    /// The text to write for `value`: the regex's first group (or whole match), then scaled.
    fn convert<'v>(&self, value: &'v str) -> Result<std::borrow::Cow<'v, str>, ConvertError> {
        let value = match &self.regex {
            None => value,
            Some(re) => {
                let caps = re.captures(value).ok_or(ConvertError::NoMatch)?;
                caps.get(1)
                    .or_else(|| caps.get(0))
                    .map_or("", |m| m.as_str())
            }
        };
        match self.scale {
            None => Ok(std::borrow::Cow::Borrowed(value)),
            Some(factor) => scale_decimal(value, factor)
                .map(|n| std::borrow::Cow::Owned(n.to_string()))
                .ok_or(ConvertError::NotANumber),
        }
    }
}

impl ConvertError {
    /// What the value should have been, for [`FieldError::InvalidValue`].
    fn expected(self) -> &'static str {
        match self {
            ConvertError::NoMatch => "value matching the mapping's regex",
            ConvertError::NotANumber => "non-negative decimal number to scale",
        }
    }
}

/// Most significant digits [`scale_decimal`] reads (a `u128` holds 38); later ones are dropped.
const SCALE_MAX_DIGITS: usize = 38;

/// `value * factor`, truncated to a whole number, computed in decimal: `value` is a
/// non-negative decimal number with an optional fraction and exponent (`0.123`, `15`,
/// `1.5e-5`, `+2E3`; how JSON writes numbers). Exact whenever the digits times `factor` fit a
/// `u128` (low digits are dropped otherwise, which can only change the last digits of very long
/// fractions). `None` when it is not such a number or the result does not fit a `u64`.
fn scale_decimal(value: &str, factor: u64) -> Option<u64> {
    let value = value.trim();
    let value = value.strip_prefix('+').unwrap_or(value);
    let (mantissa, exponent) = match value.find(['e', 'E']) {
        Some(at) => {
            let exp = value.get(at + 1..)?;
            let exp = exp.strip_prefix('+').unwrap_or(exp);
            (value.get(..at)?, exp.parse::<i32>().ok()?)
        }
        None => (value, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let fraction_len = i32::try_from(fraction.len()).ok()?;
    // value = digits * 10^shift
    let mut shift = exponent.checked_sub(fraction_len)?;
    // Drop digits that cannot matter once the product is truncated (beyond what u128 holds).
    let mut digits = digits;
    while digits.len() > SCALE_MAX_DIGITS {
        digits = digits.get(..digits.len() - 1)?;
        shift = shift.checked_add(1)?;
    }
    if digits.is_empty() {
        return Some(0);
    }
    let mut n: u128 = loop {
        let n: u128 = digits.parse().ok()?;
        match n.checked_mul(u128::from(factor)) {
            Some(product) => break product,
            None if shift < 0 && digits.len() > 1 => {
                digits = digits.get(..digits.len() - 1)?;
                shift = shift.checked_add(1)?;
            }
            None => return None,
        }
    };
    if shift >= 0 {
        for _ in 0..shift {
            n = n.checked_mul(10)?;
        }
    } else {
        for _ in 0..shift.unsigned_abs() {
            n /= 10;
            if n == 0 {
                break;
            }
        }
    }
    u64::try_from(n).ok()
}

impl TimestampRule {
    /// The time this rule reads from the record, or `None` when a key is missing or the value
    /// does not read in the format.
    fn read(
        &self,
        values: &HashMap<&str, &str>,
        offset: FixedOffset,
        reference: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut parts = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            parts.push(*values.get(key.as_str()).filter(|v| !v.trim().is_empty())?);
        }
        let value = parts.join(" ");
        let value = value.trim();
        let utc = |t: DateTime<FixedOffset>| t.with_timezone(&Utc);
        match &self.format {
            TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(value).ok().map(utc),
            TimeFormat::EpochMs => value
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis),
            TimeFormat::EpochS => {
                let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
                let secs: i64 = secs.parse().ok()?;
                let nanos = if frac.is_empty() {
                    0
                } else if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) {
                    format!("{frac:0<9}").parse::<u32>().ok()?
                } else {
                    return None;
                };
                DateTime::from_timestamp(secs, nanos)
            }
            TimeFormat::Leef => {
                let format = values
                    .get("devTimeFormat")
                    .copied()
                    .filter(|f| !f.is_empty());
                leef::leef_time_at(value, format, reference).map(utc)
            }
            TimeFormat::Strftime(format) => DateTime::parse_from_str(value, format)
                .ok()
                .map(utc)
                .or_else(|| {
                    let naive = NaiveDateTime::parse_from_str(value, format).ok()?;
                    offset.from_local_datetime(&naive).single().map(utc)
                }),
        }
    }
}

/// Splits an rsyslog `message repeated N times: [ TEXT]` into (TEXT, Some(N)); anything else
/// comes back unchanged.
fn unwrap_repeated(text: &str) -> (&str, Option<&str>) {
    let inner = (|| {
        let rest = text.strip_prefix("message repeated ")?;
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let (count, rest) = rest.split_at(digits);
        if count.is_empty() {
            return None;
        }
        let rest = rest.strip_prefix(" times: [")?;
        let rest = rest.strip_suffix(']')?;
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        Some((rest.strip_suffix(' ').unwrap_or(rest), count))
    })();
    match inner {
        Some((inner, count)) => (inner, Some(count)),
        None => (text, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and checking one file.

/// Collects the problems of one file, each with the best line we can find.
struct Problems<'a> {
    path: &'a str,
    source: &'a str,
    errors: Vec<DefinitionError>,
    /// Where the previous test case's message was found.
    test_cursor: usize,
}

impl Problems<'_> {
    fn add(&mut self, needles: &[&str], message: String) {
        self.errors.push(DefinitionError {
            path: self.path.to_owned(),
            line: locate(self.source, needles),
            message,
        });
    }
}

fn compile(path: &str, source: &str) -> Result<Definition, Vec<DefinitionError>> {
    let file: DefinitionFile = serde_norway::from_str(source).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        let text = e.to_string();
        // The location is ours to report; drop serde's " at line X column Y" suffix.
        let message = match text.rfind(" at line ") {
            Some(at) if e.location().is_some() => text[..at].to_owned(),
            _ => text,
        };
        vec![DefinitionError {
            path: path.to_owned(),
            line: line.max(1),
            message,
        }]
    })?;
    let mut problems = Problems {
        path,
        source,
        errors: Vec::new(),
        test_cursor: 0,
    };

    if file.name.trim().is_empty() || file.name.contains(char::is_whitespace) {
        problems.add(
            &["name"],
            format!("definition name {:?} must be one word", file.name),
        );
    }

    let matcher = file.matcher;
    let programs = matcher.program.map(OneOrMany::into_vec).unwrap_or_default();
    if programs.iter().any(|p| p.is_empty()) {
        problems.add(&["match", "program"], "empty program name".to_owned());
    }
    if matcher.prefix.as_deref() == Some("") {
        problems.add(&["match", "prefix"], "empty prefix".to_owned());
    }
    let contains = matcher
        .contains
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    if contains.iter().any(String::is_empty) {
        problems.add(&["match", "contains"], "empty contains text".to_owned());
    }
    let match_regex = matcher
        .regex
        .as_deref()
        .and_then(|re| match Regex::new(re) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.add(
                    &["match", "regex"],
                    format!("match regex does not compile: {}", one_line(&e.to_string())),
                );
                None
            }
        });

    let set = check_constants(&mut problems, &["set"], "set", file.set);
    let translate = check_translate(&mut problems, file.translate);
    let absent = file.absent.map(OneOrMany::into_vec).unwrap_or_default();
    let redact = file.redact.map(OneOrMany::into_vec).unwrap_or_default();
    if redact.iter().any(String::is_empty) {
        problems.add(
            &["redact"],
            "redact: an empty key redacts nothing".to_owned(),
        );
    }
    if absent.iter().any(String::is_empty) {
        problems.add(
            &["absent"],
            "absent: an empty value is already absent".to_owned(),
        );
    }

    let mut pattern_names = HashSet::new();
    let body = match file.extract {
        None => {
            if !file.fields.is_empty() {
                problems.add(
                    &["fields"],
                    "fields needs extract (a regex definition maps captures in its patterns)"
                        .to_owned(),
                );
            }
            if matcher.cef.is_some() {
                problems.add(
                    &["match", "cef"],
                    "match.cef needs extract: {format: cef}".to_owned(),
                );
            }
            if matcher.leef.is_some() {
                problems.add(
                    &["match", "leef"],
                    "match.leef needs extract: {format: leef}".to_owned(),
                );
            }
            if file.patterns.is_empty() {
                problems.add(
                    &["patterns"],
                    "a definition needs at least one pattern".to_owned(),
                );
            }
            let rules = timestamp_specs(file.timestamp);
            let time_keys: HashSet<String> = rules
                .iter()
                .flat_map(|r| r.field.as_slice().iter().cloned())
                .collect();
            let mut patterns = Vec::with_capacity(file.patterns.len());
            for spec in file.patterns {
                if let Some(p) =
                    compile_pattern(&mut problems, &mut pattern_names, &time_keys, spec)
                {
                    patterns.push(p);
                }
            }
            let groups: HashSet<String> = patterns
                .iter()
                .flat_map(|p| p.regex.capture_names().flatten().map(str::to_owned))
                .collect();
            let known = KnownKeys::Groups(groups);
            let timestamp = compile_timestamps(&mut problems, &known, rules);
            let pattern_set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).ok();
            Some(Body::Regex {
                patterns,
                pattern_set,
                timestamp,
            })
        }
        Some(extract) => compile_structured(
            &mut problems,
            &mut pattern_names,
            StructuredSpec {
                extract,
                cef: matcher.cef,
                leef: matcher.leef,
                fields: file.fields,
                timestamp: file.timestamp,
                patterns: file.patterns,
            },
        )
        .map(Body::Structured),
    };

    let mut tests = Vec::with_capacity(file.tests.len());
    for spec in file.tests {
        tests.push(check_test(&mut problems, &pattern_names, matcher.raw, spec));
    }

    let body = match body {
        Some(body) if problems.errors.is_empty() => body,
        _ => return Err(problems.errors),
    };
    Ok(Definition {
        name: file.name,
        path: path.to_owned(),
        programs,
        prefix: matcher.prefix,
        contains,
        regex: match_regex,
        raw: matcher.raw,
        absent,
        redact,
        fallback: file.fallback,
        set,
        translate,
        body,
        tests,
    })
}

fn compile_pattern(
    problems: &mut Problems<'_>,
    names: &mut HashSet<String>,
    time_keys: &HashSet<String>,
    spec: PatternSpec,
) -> Option<Pattern> {
    check_pattern_name(problems, names, &spec.name);
    let set = check_constants(
        problems,
        &["patterns", spec.name.as_str(), "set"],
        &format!("pattern {} set", spec.name),
        spec.set,
    );
    if spec.when.is_some() {
        problems.add(
            &["patterns", spec.name.as_str(), "when"],
            format!(
                "pattern {}: when needs extract (a regex definition's patterns use regex)",
                spec.name
            ),
        );
    }
    let Some(source) = spec.regex else {
        problems.add(
            &["patterns", spec.name.as_str()],
            format!("pattern {}: regex is required", spec.name),
        );
        return None;
    };
    let regex = match Regex::new(&source) {
        Ok(r) => r,
        Err(e) => {
            problems.add(
                &["patterns", spec.name.as_str(), "regex"],
                format!(
                    "pattern {}: regex does not compile: {}",
                    spec.name,
                    one_line(&e.to_string())
                ),
            );
            return None;
        }
    };
    let mut fields: BTreeMap<String, Vec<Mapping>> = BTreeMap::new();
    let mut ok = true;
    for (Text(name), mapping) in spec.fields {
        let label = format!("pattern {}: capture {name}", spec.name);
        let at = ["patterns", spec.name.as_str(), name.as_str()];
        let list = compile_mapping(problems, &at, &label, mapping);
        ok &= list.is_some();
        // A broken mapping still counts as mapped: one error, not two.
        fields.insert(name, list.unwrap_or_default());
    }
    let mut captures = Vec::new();
    let mut used: HashSet<&str> = HashSet::new();
    for (group, name) in regex.capture_names().enumerate() {
        let Some(name) = name else { continue };
        if let Some(list) = fields.get(name) {
            used.insert(name);
            captures.extend(list.iter().map(|m| (group, m.clone())));
            continue;
        }
        if time_keys.contains(name) {
            // Read by `timestamp` only.
            continue;
        }
        if let Err(why) = check_target(name) {
            ok = false;
            problems.add(
                &["patterns", spec.name.as_str(), name],
                format!(
                    "pattern {}: capture {name} is not mapped in fields and is not a field \
                     name itself: {why}",
                    spec.name
                ),
            );
            continue;
        }
        captures.push((group, Mapping::to(name)));
    }
    for name in fields.keys() {
        if !used.contains(name.as_str()) {
            ok = false;
            problems.add(
                &["patterns", spec.name.as_str(), name.as_str()],
                format!(
                    "pattern {}: fields maps {name}, but the regex has no capture group of that name",
                    spec.name
                ),
            );
        }
    }
    ok.then_some(Pattern {
        name: spec.name,
        anchored: AnchoredPattern::new(regex.as_str()),
        regex,
        captures,
        set,
    })
}

fn check_pattern_name(problems: &mut Problems<'_>, names: &mut HashSet<String>, name: &str) {
    if name.trim().is_empty() {
        problems.add(
            &["patterns", "name"],
            "pattern name must not be empty".to_owned(),
        );
    } else if !names.insert(name.to_owned()) {
        problems.add(
            &["patterns", name, name],
            format!("pattern name {name:?} is used twice"),
        );
    }
}

/// The parts of a file that make a structured definition.
struct StructuredSpec {
    extract: ExtractSpec,
    cef: Option<HeaderSpec>,
    leef: Option<HeaderSpec>,
    fields: BTreeMap<Text, MappingSpec>,
    timestamp: Option<OneOrManyTimestamps>,
    patterns: Vec<PatternSpec>,
}

/// Which extracted keys a definition may name, as far as load time can tell.
enum KnownKeys {
    /// Any key (key=value, JSON: the record decides).
    Any,
    /// CEF or LEEF: header pseudo-keys under `prefix` must be one of `header`; extension keys
    /// and `label:` keys are free.
    Header {
        prefix: &'static str,
        header: &'static [&'static str],
    },
    /// CSV with named columns: a column name or an index.
    Columns(HashSet<String>),
    /// A regex definition's `timestamp`: a named capture group of one of its patterns.
    Groups(HashSet<String>),
}

impl KnownKeys {
    fn check(&self, key: &str) -> Result<(), String> {
        if key.is_empty() {
            return Err("empty key".to_owned());
        }
        match self {
            KnownKeys::Any => Ok(()),
            KnownKeys::Header { prefix, header } => {
                if key.starts_with(prefix) && !header.contains(&key) {
                    Err(format!(
                        "unknown header key {key} (one of {})",
                        header.join(", ")
                    ))
                } else if key == LABEL_PREFIX {
                    Err(format!("{LABEL_PREFIX} needs a label name"))
                } else {
                    Ok(())
                }
            }
            KnownKeys::Columns(names) => {
                if names.contains(key) || key.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(())
                } else {
                    Err(format!("{key} is not a column name (or a column index)"))
                }
            }
            KnownKeys::Groups(names) => {
                if names.contains(key) {
                    Ok(())
                } else {
                    Err(format!("{key} is not a named capture group of any pattern"))
                }
            }
        }
    }
}

fn compile_structured(
    problems: &mut Problems<'_>,
    names: &mut HashSet<String>,
    spec: StructuredSpec,
) -> Option<Structured> {
    let format = spec.extract.format;
    let (extract, known) = check_extract(problems, spec.extract)?;

    let mut vendor = Vec::new();
    let mut product = Vec::new();
    for (which, header, wanted) in [
        ("cef", spec.cef, FormatName::Cef),
        ("leef", spec.leef, FormatName::Leef),
    ] {
        let Some(header) = header else { continue };
        if format != wanted {
            problems.add(
                &["match", which],
                format!("match.{which} needs extract: {{format: {which}}}"),
            );
            continue;
        }
        vendor = header.vendor.map(OneOrMany::into_vec).unwrap_or_default();
        product = header.product.map(OneOrMany::into_vec).unwrap_or_default();
    }

    let fields = check_mappings(problems, &known, &["fields"], "fields", spec.fields);

    let timestamp = compile_timestamps(problems, &known, timestamp_specs(spec.timestamp));

    let mut patterns = Vec::with_capacity(spec.patterns.len());
    for p in spec.patterns {
        check_pattern_name(problems, names, &p.name);
        let at = ["patterns", p.name.as_str()];
        if p.regex.is_some() {
            problems.add(
                &["patterns", p.name.as_str(), "regex"],
                format!(
                    "pattern {}: a structured definition's patterns use when, not regex",
                    p.name
                ),
            );
        }
        let mut when = Vec::new();
        for (key, value) in p.when.unwrap_or_default() {
            if let Err(why) = known.check(&key.0) {
                problems.add(
                    &["patterns", p.name.as_str(), "when", &key.0],
                    format!("pattern {}: when {why}", p.name),
                );
            }
            let condition = match value {
                WhenValue::One(v) => Condition::OneOf(vec![v.into_text()]),
                WhenValue::Many(vs) => {
                    if vs.is_empty() {
                        problems.add(
                            &["patterns", p.name.as_str(), "when", &key.0],
                            format!("pattern {}: when {}: no value given", p.name, key.0),
                        );
                    }
                    Condition::OneOf(vs.into_iter().map(Scalar::into_text).collect())
                }
                WhenValue::Regex(WhenRegex { regex }) => match Regex::new(&regex) {
                    Ok(re) => Condition::Regex(re),
                    Err(e) => {
                        problems.add(
                            &["patterns", p.name.as_str(), "when", &key.0, "regex"],
                            format!(
                                "pattern {}: when {}: regex does not compile: {}",
                                p.name,
                                key.0,
                                one_line(&e.to_string())
                            ),
                        );
                        continue;
                    }
                },
            };
            when.push((key.0, condition));
        }
        let fields = check_mappings(
            problems,
            &known,
            &[at[0], at[1], "fields"],
            &format!("pattern {} fields", p.name),
            p.fields,
        );
        let set = check_constants(
            problems,
            &["patterns", p.name.as_str(), "set"],
            &format!("pattern {} set", p.name),
            p.set,
        );
        patterns.push(WhenPattern {
            name: p.name,
            when,
            fields,
            set,
        });
    }
    Some(Structured {
        extract,
        vendor,
        product,
        fields,
        timestamp,
        patterns,
    })
}

/// The `timestamp` rules as a list.
fn timestamp_specs(spec: Option<OneOrManyTimestamps>) -> Vec<TimestampSpec> {
    match spec {
        None => Vec::new(),
        Some(OneOrManyTimestamps::One(rule)) => vec![rule],
        Some(OneOrManyTimestamps::Many(rules)) => rules,
    }
}

/// Checks `timestamp` rules: keys the definition can read, known formats.
fn compile_timestamps(
    problems: &mut Problems<'_>,
    known: &KnownKeys,
    rules: Vec<TimestampSpec>,
) -> Vec<TimestampRule> {
    let mut timestamp = Vec::new();
    for rule in rules {
        let keys = rule.field.into_vec();
        let mut ok = !keys.is_empty();
        if keys.is_empty() {
            problems.add(
                &["timestamp", "field"],
                "timestamp: field is empty".to_owned(),
            );
        }
        for key in &keys {
            if let Err(why) = known.check(key) {
                ok = false;
                problems.add(&["timestamp", key], format!("timestamp: field {why}"));
            }
        }
        let format = match rule.format.as_str() {
            "rfc3339" => Some(TimeFormat::Rfc3339),
            "epoch_ms" => Some(TimeFormat::EpochMs),
            "epoch_s" => Some(TimeFormat::EpochS),
            "leef" => Some(TimeFormat::Leef),
            other => {
                let valid = other.contains('%')
                    && !StrftimeItems::new(other).any(|item| matches!(item, Item::Error));
                if valid {
                    Some(TimeFormat::Strftime(other.to_owned()))
                } else {
                    problems.add(
                        &["timestamp", "format"],
                        format!(
                            "timestamp: format {other:?} is not rfc3339, epoch_ms, epoch_s, leef \
                             or a valid strftime format"
                        ),
                    );
                    None
                }
            }
        };
        if let (true, Some(format)) = (ok, format) {
            timestamp.push(TimestampRule { keys, format });
        }
    }
    timestamp
}

/// Checks `extract:` options against their format.
fn check_extract(problems: &mut Problems<'_>, spec: ExtractSpec) -> Option<(Extract, KnownKeys)> {
    let format = spec.format;
    let format_name = match format {
        FormatName::Kv => "kv",
        FormatName::Json => "json",
        FormatName::Csv => "csv",
        FormatName::Cef => "cef",
        FormatName::Leef => "leef",
    };
    let mut ok = true;
    for (present, key, owner) in [
        (
            spec.pair_separator.is_some(),
            "pair_separator",
            FormatName::Kv,
        ),
        (spec.kv_separator.is_some(), "kv_separator", FormatName::Kv),
        (spec.delimiter.is_some(), "delimiter", FormatName::Csv),
        (spec.columns.is_some(), "columns", FormatName::Csv),
        (spec.type_column.is_some(), "type_column", FormatName::Csv),
        (spec.max_pairs.is_some(), "max_pairs", FormatName::Json),
        (spec.max_depth.is_some(), "max_depth", FormatName::Json),
    ] {
        if present && owner != format {
            ok = false;
            problems.add(
                &["extract", key],
                format!("extract: {key} is not an option of format {format_name}"),
            );
        }
    }
    let mut one_char = |key: &str, value: Option<&str>| -> Option<Option<char>> {
        let Some(value) = value else {
            return Some(None);
        };
        let mut chars = value.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Some(Some(c)),
            _ => {
                problems.add(
                    &["extract", key],
                    format!("extract: {key} must be one character, got {value:?}"),
                );
                None
            }
        }
    };
    let pair_separator = one_char("pair_separator", spec.pair_separator.as_deref());
    let kv_separator = one_char("kv_separator", spec.kv_separator.as_deref());
    let delimiter = one_char("delimiter", spec.delimiter.as_deref());
    let (Some(pair_separator), Some(kv_separator), Some(delimiter)) =
        (pair_separator, kv_separator, delimiter)
    else {
        return None;
    };
    if !ok {
        return None;
    }
    Some(match format {
        FormatName::Kv => {
            let kv_separator = kv_separator.unwrap_or('=');
            if pair_separator == Some(kv_separator) {
                problems.add(
                    &["extract", "pair_separator"],
                    "extract: pair_separator and kv_separator must differ".to_owned(),
                );
                return None;
            }
            (
                Extract::Kv(kv::KvOptions {
                    pair_separator,
                    kv_separator,
                }),
                KnownKeys::Any,
            )
        }
        FormatName::Json => {
            let max_pairs = spec.max_pairs.unwrap_or(JSON_DEFAULT_MAX_PAIRS);
            let max_depth = spec.max_depth.unwrap_or(JSON_DEFAULT_MAX_DEPTH);
            if max_pairs == 0 || max_pairs > JSON_MAX_PAIRS_LIMIT {
                problems.add(
                    &["extract", "max_pairs"],
                    format!("extract: max_pairs must be 1 to {JSON_MAX_PAIRS_LIMIT}"),
                );
                return None;
            }
            if max_depth == 0 || max_depth > JSON_MAX_DEPTH_LIMIT {
                problems.add(
                    &["extract", "max_depth"],
                    format!("extract: max_depth must be 1 to {JSON_MAX_DEPTH_LIMIT}"),
                );
                return None;
            }
            (
                Extract::Json {
                    max_pairs,
                    max_depth,
                },
                KnownKeys::Any,
            )
        }
        FormatName::Csv => {
            let delimiter = delimiter.unwrap_or(',');
            let mut known = HashSet::new();
            let mut check_list = |problems: &mut Problems<'_>, list: &[String]| {
                let mut seen = HashSet::new();
                for name in list {
                    if name != "_" && !name.is_empty() && !seen.insert(name.as_str()) {
                        problems.add(
                            &["extract", "columns", name],
                            format!("extract: column {name} appears twice in one list"),
                        );
                    }
                    known.insert(name.clone());
                }
            };
            let columns = match (spec.columns, spec.type_column) {
                (None, None) => Columns::Index,
                (Some(ColumnsSpec::List(list)), None) => {
                    check_list(problems, &list);
                    Columns::List(list)
                }
                (Some(ColumnsSpec::ByType(lists)), Some(column)) => {
                    for list in lists.values() {
                        check_list(problems, list);
                    }
                    Columns::ByType {
                        column,
                        lists: lists.into_iter().map(|(k, v)| (k.0, v)).collect(),
                    }
                }
                (Some(ColumnsSpec::ByType(_)), None) => {
                    problems.add(
                        &["extract", "columns"],
                        "extract: columns by type needs type_column (the 0-based column \
                         holding the type)"
                            .to_owned(),
                    );
                    return None;
                }
                (_, Some(_)) => {
                    problems.add(
                        &["extract", "type_column"],
                        "extract: type_column needs columns given by type".to_owned(),
                    );
                    return None;
                }
            };
            let known = match columns {
                Columns::Index => KnownKeys::Any,
                _ => KnownKeys::Columns(known),
            };
            (Extract::Csv { delimiter, columns }, known)
        }
        FormatName::Cef => (
            Extract::Cef,
            KnownKeys::Header {
                prefix: "cef.",
                header: CEF_HEADER_KEYS,
            },
        ),
        FormatName::Leef => (
            Extract::Leef,
            KnownKeys::Header {
                prefix: "leef.",
                header: LEEF_HEADER_KEYS,
            },
        ),
    })
}

/// Checks `fields` of a structured definition: known keys, settable targets, mapping options.
fn check_mappings(
    problems: &mut Problems<'_>,
    known: &KnownKeys,
    needles: &[&str],
    what: &str,
    fields: BTreeMap<Text, MappingSpec>,
) -> Vec<(String, Mapping)> {
    let mut out = Vec::with_capacity(fields.len());
    for (Text(key), spec) in fields {
        let mut at: Vec<&str> = needles.to_vec();
        at.push(&key);
        if let Err(why) = known.check(&key) {
            problems.add(&at, format!("{what}: {why}"));
            continue;
        }
        let label = format!("{what}: {key}");
        if let Some(list) = compile_mapping(problems, &at, &label, spec) {
            out.extend(list.into_iter().map(|m| (key.clone(), m)));
        }
    }
    out
}

/// Checks one `fields` entry (a target, `{to, regex, scale}`, or a list): settable targets, a
/// regex that compiles, a positive scale. `label` starts each message (`fields: srcip`).
/// `None` when anything is wrong (each problem added).
fn compile_mapping(
    problems: &mut Problems<'_>,
    at: &[&str],
    label: &str,
    spec: MappingSpec,
) -> Option<Vec<Mapping>> {
    let specs = spec.into_vec();
    if specs.is_empty() {
        problems.add(at, format!("{label}: no target given"));
        return None;
    }
    let mut ok = true;
    let mut out = Vec::with_capacity(specs.len());
    for one in specs {
        let options = match one {
            OneMappingSpec::Target(target) => MappingOptions {
                to: target,
                regex: None,
                scale: None,
            },
            OneMappingSpec::Options(options) => options,
        };
        let mut here = at.to_vec();
        here.push(&options.to);
        if let Err(why) = check_target(&options.to) {
            problems.add(&here, format!("{label}: {why}"));
            ok = false;
            continue;
        }
        let regex = match options.regex.as_deref().map(Regex::new) {
            None => None,
            Some(Ok(re)) => Some(re),
            Some(Err(e)) => {
                here.push("regex");
                problems.add(
                    &here,
                    format!(
                        "{label}: regex does not compile: {}",
                        one_line(&e.to_string())
                    ),
                );
                ok = false;
                continue;
            }
        };
        if options.scale == Some(0) {
            here.push("scale");
            problems.add(&here, format!("{label}: scale must be at least 1"));
            ok = false;
            continue;
        }
        out.push(Mapping {
            target: options.to,
            regex,
            scale: options.scale,
        });
    }
    ok.then_some(out)
}

/// Checks `translate`: settable targets, translated values that convert to their field's type.
fn check_translate(
    problems: &mut Problems<'_>,
    translate: BTreeMap<String, BTreeMap<Text, Scalar>>,
) -> HashMap<String, HashMap<String, String>> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut scratch = Event::new(epoch, epoch);
    let mut out = HashMap::with_capacity(translate.len());
    for (field, table) in translate {
        if let Err(why) = check_target(&field) {
            problems.add(&["translate", &field], format!("translate: {why}"));
            continue;
        }
        let mut values = HashMap::with_capacity(table.len());
        for (Text(from), to) in table {
            let to = to.into_text();
            if let Err(e) = scratch.set(&field, &to) {
                problems.add(&["translate", &field, &from], format!("translate: {e}"));
                continue;
            }
            values.insert(from, to);
        }
        out.insert(field, values);
    }
    out
}

fn check_test(
    problems: &mut Problems<'_>,
    pattern_names: &HashSet<String>,
    raw_definition: bool,
    spec: TestSpec,
) -> TestCase {
    // The case's line: its message text, searched after the previous case's (messages written
    // with YAML escapes are not found; then the `tests:` line).
    let head: String = spec.message.chars().take(40).collect();
    let source = problems.source;
    let start = problems
        .test_cursor
        .max(find_token(source, 0, "tests").unwrap_or(0));
    let line = match source.get(start..).and_then(|s| s.find(head.as_str())) {
        Some(at) if !head.is_empty() => {
            problems.test_cursor = start + at + head.len();
            line_of(source, start + at)
        }
        _ => locate(source, &["tests"]),
    };
    let mut push = |message: String| {
        problems.errors.push(DefinitionError {
            path: problems.path.to_owned(),
            line,
            message,
        })
    };
    if spec.expect_no_match && (!spec.expect.is_empty() || spec.expect_pattern.is_some()) {
        push(format!(
            "test {:?}: expect_no_match cannot be combined with expect or expect_pattern",
            spec.message
        ));
    }
    if spec.expect_error.is_some()
        && (spec.expect_no_match || !spec.expect.is_empty() || spec.expect_pattern.is_some())
    {
        push(format!(
            "test {:?}: expect_error cannot be combined with expect, expect_pattern or \
             expect_no_match",
            spec.message
        ));
    }
    if let Some(p) = &spec.expect_pattern {
        if !pattern_names.contains(p) && !p.is_empty() {
            push(format!(
                "test {:?}: expect_pattern names no pattern: {p}",
                spec.message
            ));
        }
    }
    let mut expect = Vec::with_capacity(spec.expect.len());
    for (field, value) in spec.expect {
        let known = Event::is_core_field(&field)
            || field.strip_prefix("extra.").is_some_and(|k| !k.is_empty());
        if !known {
            push(format!(
                "test {:?}: unknown field {field} in expect (a core field or extra.<name>)",
                spec.message
            ));
        }
        expect.push((field, value.map(Scalar::into_text)));
    }
    TestCase {
        line,
        // A raw definition's case without a program is a raw record; with one, a syslog MSG.
        raw: raw_definition && spec.program.is_none(),
        name: spec.name,
        message: spec.message,
        program: spec.program,
        expect,
        expect_pattern: spec.expect_pattern,
        expect_no_match: spec.expect_no_match,
        expect_error: spec.expect_error,
    }
}

/// Checks constant assignments: the target is settable and the value converts to its type.
fn check_constants(
    problems: &mut Problems<'_>,
    needles: &[&str],
    what: &str,
    set: BTreeMap<String, Scalar>,
) -> Vec<(String, String)> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut scratch = Event::new(epoch, epoch);
    let mut out = Vec::with_capacity(set.len());
    for (field, value) in set {
        let value = value.into_text();
        let mut at: Vec<&str> = needles.to_vec();
        at.push(&field);
        if let Err(why) = check_target(&field) {
            problems.add(&at, format!("{what}: {why}"));
            continue;
        }
        if let Err(e) = scratch.set(&field, &value) {
            problems.add(&at, format!("{what}: {e}"));
            continue;
        }
        out.push((field, value));
    }
    out
}

/// A field a definition may write: a settable core field, or `extra.<name>` that does not shadow
/// a core field.
fn check_target(name: &str) -> Result<(), String> {
    if let Some(key) = name.strip_prefix("extra.") {
        if key.is_empty() {
            return Err("empty extra field name".to_owned());
        }
        if Event::is_core_field(key) {
            return Err(format!("{name} shadows the core field {key}: write {key}"));
        }
        return Ok(());
    }
    if !Event::is_core_field(name) {
        return Err(format!(
            "unknown field {name} (a core field such as source.ip, or extra.<name>)"
        ));
    }
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    match Event::new(epoch, epoch).set(name, "") {
        Err(FieldError::ReadOnly(_)) => Err(format!("field {name} cannot be set by a parser")),
        _ => Ok(()),
    }
}

/// Regex errors span several lines (with a caret diagram); keep the last, most specific one.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_owned()
}

/// The 1-based line of the last of `needles` found in order in `source`, each searched as a
/// whole token after the previous one (needles not found are skipped). Line 1 if none is found.
fn locate(source: &str, needles: &[&str]) -> usize {
    let mut pos = 0;
    let mut found = None;
    for needle in needles {
        if let Some(at) = find_token(source, pos, needle) {
            pos = at + needle.len();
            found = Some(at);
        }
    }
    found.map_or(1, |at| line_of(source, at))
}

fn line_of(source: &str, at: usize) -> usize {
    source.get(..at).map_or(1, |s| s.matches('\n').count() + 1)
}

/// Finds `needle` at or after `from` with no word character right before or after it.
fn find_token(source: &str, from: usize, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '-');
    let hay = source.get(from..)?;
    hay.match_indices(needle).find_map(|(i, _)| {
        let at = from + i;
        let before = source.get(..at).and_then(|s| s.chars().next_back());
        let after = source
            .get(at + needle.len()..)
            .and_then(|s| s.chars().next());
        let starts_word = needle.chars().next().is_some_and(word);
        let ends_word = needle.chars().next_back().is_some_and(word);
        let clean_before = !starts_word || !before.is_some_and(word);
        let clean_after = !ends_word || !after.is_some_and(word);
        (clean_before && clean_after).then_some(at)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Where a shipped pattern's quick matcher decides, on pseudo-random mutations of every
    /// definition's test messages, it decides as the regex does, every group included.
    #[test]
    fn quick_matchers_capture_what_the_regexes_capture_on_mutated_lines() {
        let set = DefinitionSet::builtin();
        // Each shipped test line, cut, patched, grown and repeated at pseudo-random places.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pick = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n.max(1)
        };
        const BYTES: &[u8] = b" :./-[]()\"=;,0aZ\t";
        let mut corpus: Vec<String> = Vec::new();
        for d in &set.definitions {
            for t in &d.tests {
                for _ in 0..12 {
                    let mut b = t.message.as_bytes().to_vec();
                    for _ in 0..1 + pick(3) {
                        let i = pick(b.len() + 1);
                        let j = i + pick(b.len() - i + 1);
                        match pick(4) {
                            0 => drop(b.drain(i..j)),
                            1 if i < b.len() => b[i] = BYTES[pick(BYTES.len())],
                            2 => b.insert(i, BYTES[pick(BYTES.len())]),
                            _ => {
                                let copy = b[i..j].to_vec();
                                b.splice(j..j, copy);
                            }
                        }
                    }
                    if let Ok(text) = String::from_utf8(b) {
                        corpus.push(text);
                    }
                }
            }
        }
        let (mut decided, mut matched) = (0, 0);
        for d in &set.definitions {
            let Body::Regex { patterns, .. } = &d.body else {
                continue;
            };
            for p in patterns {
                let Some(q) = p.anchored.as_deref().and_then(|a| a.quick.as_ref()) else {
                    continue;
                };
                let mut slots = vec![None; q.slots_len()];
                for text in &corpus {
                    let want = p.regex.captures(text);
                    match q.captures(text, &mut slots) {
                        crate::quick::Outcome::GaveUp => continue,
                        crate::quick::Outcome::NoMatch => {
                            assert!(want.is_none(), "{} on {text:?}", p.name);
                        }
                        crate::quick::Outcome::Match => {
                            let want = want.unwrap_or_else(|| panic!("{} on {text:?}", p.name));
                            matched += 1;
                            for i in 0..p.regex.captures_len() {
                                let got = crate::quick::group(text, &slots, i);
                                let want = want.get(i).map(|m| m.as_str());
                                assert_eq!(want, got, "{} group {i} on {text:?}", p.name);
                            }
                        }
                    }
                    decided += 1;
                }
            }
        }
        assert!(
            corpus.len() > 500 && matched > 200,
            "{matched} of {decided}"
        );
    }

    /// A start-anchored pattern's backtracker gives the regex's match and groups, on every
    /// shipped definition's test messages and cut, extended and doubled forms of them; a pattern
    /// not anchored at the start has none (`x|^y`, `(?m)^y`).
    #[test]
    fn anchored_backtrackers_capture_what_the_regexes_capture() {
        let set = DefinitionSet::builtin();
        let mut corpus: Vec<String> = Vec::new();
        for d in &set.definitions {
            for t in &d.tests {
                let m = t.message.clone();
                for cut in [1, 5, 12, 30] {
                    if let Some(head) = m.get(..m.len().saturating_sub(cut)) {
                        corpus.push(head.to_owned());
                    }
                }
                corpus.push(format!("{m} from 10.0.0.1 port 22"));
                corpus.push(format!("{m} {m}"));
                corpus.push(format!("x{m}"));
                corpus.push(m);
            }
        }
        let (mut anchored, mut quick, mut compared, mut matched) = (0, 0, 0, 0);
        let mut decided = 0;
        for d in &set.definitions {
            let Body::Regex { patterns, .. } = &d.body else {
                continue;
            };
            for p in patterns {
                let Some(a) = &p.anchored else { continue };
                anchored += 1;
                if let Some(q) = &a.quick {
                    quick += 1;
                    let mut slots = vec![None; q.slots_len()];
                    decided += corpus
                        .iter()
                        .filter(|t| q.captures(t, &mut slots) != crate::quick::Outcome::GaveUp)
                        .count();
                }
                for text in &corpus {
                    let want = p.regex.captures(text);
                    let got = a.captures(text).unwrap();
                    assert_eq!(want.is_some(), got.is_some(), "{} on {text:?}", p.name);
                    compared += 1;
                    if let (Some(want), Some(got)) = (want, got) {
                        matched += 1;
                        for i in 0..p.regex.captures_len() {
                            assert_eq!(
                                want.get(i).map(|m| m.as_str()),
                                got.get(i),
                                "{} group {i} on {text:?}",
                                p.name
                            );
                        }
                    }
                }
            }
        }
        assert!(anchored >= 40, "{anchored}");
        // Every shipped one has a quick matcher (the envoy ones with counted groups, the nginx
        // ones with repeated alternatives, too).
        assert_eq!(quick, anchored);
        assert!(decided * 10 >= quick * corpus.len() * 9, "{decided}");
        assert!(
            matched > 100 && compared > matched,
            "{matched} of {compared}"
        );
        for unanchored in ["x|^y", "(?m)^y", "y"] {
            assert!(AnchoredPattern::new(unanchored).is_none(), "{unanchored}");
        }
        assert!(AnchoredPattern::new("^y").is_some());
        // Too long for the backtracker's memory: the caller falls back to the regex.
        let a = AnchoredPattern::new("^(?P<x>.*) y$").unwrap();
        assert!(a.captures(&"x".repeat(50_000_000)).is_err());
    }

    fn msg(program: &str) -> SyslogMessage {
        SyslogMessage {
            format: Format::FileLine,
            priority: None,
            facility: None,
            severity: None,
            version: None,
            timestamp: None,
            hostname: None,
            appname: Some(program.into()),
            procid: None,
            msgid: None,
            structured_data: BTreeMap::new(),
            message: None,
        }
    }

    fn event() -> Event {
        Event::new(DateTime::<Utc>::UNIX_EPOCH, DateTime::<Utc>::UNIX_EPOCH)
    }

    fn load(yaml: &str) -> (DefinitionSet, Vec<DefinitionError>) {
        DefinitionSet::from_sources(&[("t.yml".to_owned(), yaml.to_owned())])
    }

    #[test]
    fn the_repeat_wrapper_is_unwrapped() {
        assert_eq!(
            unwrap_repeated("message repeated 3 times: [ Failed password for root]"),
            ("Failed password for root", Some("3"))
        );
        assert_eq!(
            unwrap_repeated("message repeated x times: [ a]"),
            ("message repeated x times: [ a]", None)
        );
        assert_eq!(unwrap_repeated("plain"), ("plain", None));
    }

    #[test]
    fn decimals_scale_exactly() {
        assert_eq!(scale_decimal("0.123", 1_000_000_000), Some(123_000_000));
        assert_eq!(scale_decimal("15", 1_000_000), Some(15_000_000));
        assert_eq!(scale_decimal("1.5e-5", 1_000_000_000), Some(15_000));
        assert_eq!(scale_decimal("+2E3", 1), Some(2000));
        assert_eq!(scale_decimal(".5", 10), Some(5));
        assert_eq!(scale_decimal("0.0000000001", 1_000_000_000), Some(0));
        assert_eq!(
            scale_decimal("1.2345678901234567890123", 1_000_000_000),
            Some(1_234_567_890)
        );
        assert_eq!(scale_decimal("1e400", 1), None);
        assert_eq!(scale_decimal("1e-400", 1), Some(0));
        assert_eq!(scale_decimal("18446744073709551615", 1), Some(u64::MAX));
        assert_eq!(scale_decimal("18446744073709551616", 1), None);
        for bad in ["", ".", "-1", "1.2.3", "abc", "1e", "0x10", "1,5", "NaN"] {
            assert_eq!(scale_decimal(bad, 1000), None, "{bad}");
        }
    }

    #[test]
    fn raw_records_are_dispatched_by_literal_to_raw_definitions_only() {
        let def = |name: &str, matcher: &str| {
            (
                format!("{name}.yml"),
                format!("name: {name}\nmatch: {matcher}\npatterns:\n  - name: p\n    regex: x\n"),
            )
        };
        let (set, errors) = DefinitionSet::from_sources(&[
            def("a", "{raw: true, contains: alpha}"),
            def("b", "{raw: true, program: app, prefix: beta}"),
            def("c", "{contains: alpha}"),
            def("d", "{raw: true}"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.raw_candidates("alpha"), vec![0, 3]);
        assert_eq!(set.raw_candidates("x beta alpha"), vec![0, 1, 3]);
        assert_eq!(set.raw_candidates("nothing"), vec![3]);
        // Syslog dispatch is as before: b by program, a and c by literal, d always.
        assert_eq!(set.candidates(Some("app"), "alpha"), vec![0, 1, 2, 3]);
        assert_eq!(set.candidates(None, "beta"), vec![3]);
        assert!(set.has_raw());
        assert!(!DefinitionSet::default().has_raw());
    }

    #[test]
    fn tokens_are_located_by_line() {
        let src = "name: a\npatterns:\n  - name: p1x\n    regex: x\n  - name: p1\n    regex: '('\n";
        assert_eq!(locate(src, &["patterns", "p1", "regex"]), 6);
        assert_eq!(locate(src, &["nothing"]), 1);
    }

    #[test]
    fn candidates_keep_load_order_and_put_fallbacks_last() {
        let (set, errors) = DefinitionSet::from_sources(&[
            (
                "f.yml".to_owned(),
                "name: f\nfallback: true\nmatch: {contains: zz}\npatterns:\n  - name: p\n    regex: x\n".to_owned(),
            ),
            (
                "a.yml".to_owned(),
                "name: a\nmatch: {program: app}\npatterns:\n  - name: p\n    regex: x\n".to_owned(),
            ),
            (
                "b.yml".to_owned(),
                "name: b\nmatch: {contains: [yy, zz]}\npatterns:\n  - name: p\n    regex: x\n".to_owned(),
            ),
            (
                "c.yml".to_owned(),
                "name: c\npatterns:\n  - name: p\n    regex: x\n".to_owned(),
            ),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.unconditional_len(), 1);
        assert_eq!(set.candidates(Some("app"), "zz yy zz"), vec![1, 2, 3, 0]);
        assert_eq!(set.candidates(Some("other"), "nothing"), vec![3]);
        assert_eq!(set.candidates(None, "yy"), vec![2, 3]);
    }

    fn structured(yaml: &str) -> (Definition, Structured) {
        let (set, errors) = load(yaml);
        assert!(errors.is_empty(), "{errors:?}");
        let def = set.definitions.into_iter().next().unwrap();
        let Body::Structured(s) = def.body.clone() else {
            panic!("not structured")
        };
        (def, s)
    }

    fn record(pairs: &[(&str, &str)]) -> Record {
        Record {
            pairs: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            labelled: Vec::new(),
        }
    }

    const FW: &str = "name: fw
extract: {format: kv}
fields: {srcip: source.ip, proto: network.transport}
translate:
  network.transport: {6: tcp, 17: udp}
timestamp:
  - {field: [date, time, tz], format: '%Y-%m-%d %H:%M:%S %z'}
  - {field: [date, time], format: '%Y-%m-%d %H:%M:%S'}
patterns:
  - name: deny
    when: {type: traffic, action: [deny, block]}
    fields: {dstip: destination.ip}
    set: {event.outcome: failure}
  - name: other_traffic
    when: {type: traffic}
";

    #[test]
    fn extracted_values_are_mapped_translated_and_the_rest_kept_in_extra() {
        let (def, s) = structured(FW);
        let r = record(&[
            ("date", "2026-11-28"),
            ("time", "10:00:01"),
            ("tz", "+0100"),
            ("type", "traffic"),
            ("action", "block"),
            ("srcip", "2001:db8::5"),
            ("dstip", "N/A"),
            ("proto", "6"),
            ("empty", ""),
        ]);
        let mut e = event();
        let utc = Utc.fix();
        let got = def.apply_record(&s, &r, utc, DateTime::<Utc>::UNIX_EPOCH, &mut e);
        assert_eq!(got, Some("deny"));
        assert_eq!(e.dataset.as_deref(), Some("fw"));
        assert_eq!(e.source_ip, "2001:db8::5".parse().ok());
        assert_eq!(e.network_transport.as_deref(), Some("tcp"));
        assert_eq!(e.outcome.as_deref(), Some("failure"));
        // A value that does not convert stays in extra; the record is not rejected.
        assert_eq!(e.destination_ip, None);
        assert_eq!(
            e.extra.get("fw.dstip").map(crate::Text::as_str),
            Some("N/A")
        );
        assert_eq!(
            e.extra.get("fw.action").map(crate::Text::as_str),
            Some("block")
        );
        assert!(!e.extra.contains_key("fw.srcip"));
        assert!(!e.extra.contains_key("fw.empty"));
        assert_eq!(
            e.timestamp,
            "2026-11-28T09:00:01Z".parse::<DateTime<Utc>>().unwrap()
        );

        // Without tz the second rule reads the time in the syslog header's offset.
        let r = record(&[
            ("date", "2026-11-28"),
            ("time", "10:00:01"),
            ("type", "traffic"),
        ]);
        let mut e = event();
        let plus2 = FixedOffset::east_opt(7200).unwrap();
        let got = def.apply_record(&s, &r, plus2, DateTime::<Utc>::UNIX_EPOCH, &mut e);
        assert_eq!(got, Some("other_traffic"));
        assert_eq!(
            e.timestamp,
            "2026-11-28T08:00:01Z".parse::<DateTime<Utc>>().unwrap()
        );

        // No pattern holds: nothing is written.
        let r = record(&[("type", "event")]);
        let mut e = event();
        assert_eq!(
            def.apply_record(&s, &r, utc, DateTime::<Utc>::UNIX_EPOCH, &mut e),
            None
        );
        assert_eq!(e, event());
    }

    #[test]
    fn a_structured_definition_without_patterns_applies_to_every_record() {
        let (def, s) = structured(
            "name: j\nextract: {format: json, max_pairs: 10}\nfields: {user.id: user.name}\nset: {event.kind: event}\n",
        );
        let mut e = event();
        let got = def.apply_record(
            &s,
            &record(&[("user.id", "bob")]),
            Utc.fix(),
            DateTime::<Utc>::UNIX_EPOCH,
            &mut e,
        );
        assert_eq!(got, Some(""));
        assert_eq!(e.user_name.as_deref(), Some("bob"));
        assert_eq!(e.kind.as_deref(), Some("event"));
    }

    #[test]
    fn cef_headers_and_labels_are_offered_as_pseudo_keys() {
        let c = cef::Cef {
            version: "0".to_owned(),
            vendor: "Acme".to_owned(),
            product: "Wall".to_owned(),
            device_version: "1.0".to_owned(),
            signature_id: "100".to_owned(),
            name: "blocked".to_owned(),
            severity: "7".to_owned(),
            extensions: vec![
                ("src".to_owned(), "192.0.2.1".to_owned()),
                ("cs1Label".to_owned(), "Rule".to_owned()),
                ("cs1".to_owned(), "Block-All".to_owned()),
            ],
        };
        let mut r = Record::from_cef(&c);
        // The format computes labels; here they are given so the test needs no parser.
        r.labelled = labelled_keys(vec![("Rule".to_owned(), "Block-All".to_owned())]);
        let (def, s) = structured(
            "name: acme\nmatch: {cef: {vendor: Acme}}\nextract: {format: cef}\nfields: {src: source.ip, 'label:Rule': extra.rule.name, cef.name: event.action}\npatterns:\n  - name: sig\n    when: {cef.signature_id: [99, 100]}\n",
        );
        assert_eq!(s.vendor, vec!["Acme".to_owned()]);
        let mut e = event();
        let got = def.apply_record(&s, &r, Utc.fix(), DateTime::<Utc>::UNIX_EPOCH, &mut e);
        assert_eq!(got, Some("sig"));
        assert_eq!(e.source_ip, "192.0.2.1".parse().ok());
        assert_eq!(e.action.as_deref(), Some("blocked"));
        assert_eq!(
            e.extra.get("rule.name").map(crate::Text::as_str),
            Some("Block-All")
        );
        assert_eq!(
            e.extra.get("acme.cef.vendor").map(crate::Text::as_str),
            Some("Acme")
        );
        assert_eq!(
            e.extra.get("acme.cs1").map(crate::Text::as_str),
            Some("Block-All")
        );
        assert!(!e.extra.contains_key("acme.label:Rule"));
    }

    #[test]
    fn csv_columns_are_named_by_the_list_of_their_type() {
        let mut lists = HashMap::new();
        lists.insert(
            "A".to_owned(),
            vec!["_".to_owned(), "type".to_owned(), "x".to_owned()],
        );
        let columns = Columns::ByType { column: 1, lists };
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            name_columns(&columns, values(&["1", "A", "x1", "extra"])),
            vec![
                ("type".to_owned(), "A".to_owned()),
                ("x".to_owned(), "x1".to_owned()),
                ("3".to_owned(), "extra".to_owned()),
            ]
        );
        assert_eq!(
            name_columns(&columns, values(&["1", "B"])),
            vec![
                ("0".to_owned(), "1".to_owned()),
                ("1".to_owned(), "B".to_owned())
            ]
        );
    }

    #[test]
    fn time_formats_read_what_they_promise() {
        let values: HashMap<&str, &str> = [
            ("ms", "1764324001123"),
            ("s", "1764324001.5"),
            ("iso", "2026-11-28T10:00:01+01:00"),
            ("bad", "yesterday"),
        ]
        .into_iter()
        .collect();
        let read = |key: &str, format: TimeFormat| {
            TimestampRule {
                keys: vec![key.to_owned()],
                format,
            }
            .read(&values, Utc.fix(), DateTime::<Utc>::UNIX_EPOCH)
            .map(|t| t.to_rfc3339())
        };
        assert_eq!(
            read("ms", TimeFormat::EpochMs).as_deref(),
            Some("2025-11-28T10:00:01.123+00:00")
        );
        assert_eq!(
            read("s", TimeFormat::EpochS).as_deref(),
            Some("2025-11-28T10:00:01.500+00:00")
        );
        assert_eq!(
            read("iso", TimeFormat::Rfc3339).as_deref(),
            Some("2026-11-28T09:00:01+00:00")
        );
        assert_eq!(read("bad", TimeFormat::Rfc3339), None);
        assert_eq!(read("missing", TimeFormat::EpochS), None);
    }

    #[test]
    fn structured_keys_and_options_are_checked_at_load() {
        for (yaml, line, needle) in [
            ("name: x\nextract: {format: kv, delimiter: ','}\n", 2, "delimiter"),
            ("name: x\nextract: {format: kv}\nfields:\n  a: sorce.ip\n", 4, "sorce.ip"),
            ("name: x\nextract: {format: cef}\nfields:\n  cef.vendr: extra.v\n", 4, "cef.vendr"),
            ("name: x\nextract: {format: csv, columns: [a, b]}\nfields:\n  c: user.name\n", 4, "column"),
            ("name: x\nextract: {format: kv}\ntimestamp: {field: t, format: '%Q'}\n", 3, "strftime"),
            ("name: x\nextract: {format: kv}\npatterns:\n  - name: p\n    regex: x\n", 5, "when, not regex"),
            ("name: x\nmatch: {cef: {vendor: A}}\nextract: {format: leef}\n", 2, "match.cef"),
            ("name: x\nextract: {format: kv, kv_separator: '=='}\n", 2, "one character"),
            ("name: x\nextract: {format: csv, columns: {A: [a]}}\n", 2, "type_column"),
            ("name: x\nfields: {a: user.name}\npatterns:\n  - name: p\n    regex: x\n", 2, "needs extract"),
            ("name: x\ntranslate:\n  source.port: {http: eighty}\npatterns:\n  - name: p\n    regex: x\n", 3, "port"),
            ("name: x\nextract: {format: yaml}\n", 2, "unknown variant"),
        ] {
            let (set, errors) = load(yaml);
            assert!(set.is_empty(), "{yaml}");
            assert_eq!(errors.len(), 1, "{yaml}: {errors:?}");
            assert_eq!(errors[0].line, line, "{yaml}: {errors:?}");
            assert!(errors[0].message.contains(needle), "{yaml}: {errors:?}");
        }
    }

    #[test]
    fn dotted_capture_names_target_fields_directly() {
        let (set, errors) = load(
            "name: d\nmatch: {program: app}\npatterns:\n  - name: p\n    regex: '^from (?P<source.ip>\\S+) as (?P<u>\\w+)'\n    fields: {u: user.name}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mut e = event();
        let got = set
            .apply(&msg("app"), "from 2001:db8::1 as bob", &mut e)
            .unwrap();
        assert_eq!(got, Some(("d", "p")));
        assert_eq!(e.source_ip, "2001:db8::1".parse().ok());
        assert_eq!(e.user_name.as_deref(), Some("bob"));
        assert_eq!(e.dataset.as_deref(), Some("d"));
        // Another program never meets this definition.
        let mut e = event();
        assert_eq!(
            set.apply(&msg("other"), "from 1.2.3.4 as bob", &mut e)
                .unwrap(),
            None
        );
        assert_eq!(e, event());
    }

    #[test]
    fn an_unmapped_capture_is_refused() {
        let (set, errors) = load("name: d\npatterns:\n  - name: p\n    regex: '(?P<usr>\\w+)'\n");
        assert!(set.is_empty());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4, "{errors:?}");
        assert!(errors[0].message.contains("usr"), "{errors:?}");
    }

    #[test]
    fn a_mapping_without_a_capture_is_refused() {
        let (_, errors) = load(
            "name: d\npatterns:\n  - name: p\n    regex: '(?P<u>\\w+)'\n    fields:\n      u: user.name\n      v: source.ip\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 7, "{errors:?}");
    }

    #[test]
    fn a_constant_of_the_wrong_type_is_refused_at_load() {
        let (_, errors) =
            load("name: d\nset:\n  source.port: http\npatterns:\n  - name: p\n    regex: x\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 3, "{errors:?}");
        let (_, errors) =
            load("name: d\npatterns:\n  - name: p\n    regex: x\n    set: {'@timestamp': x}\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("cannot be set"), "{errors:?}");
    }

    #[test]
    fn the_first_matching_pattern_wins_and_generic_definitions_apply_to_all_programs() {
        let (set, errors) = load(
            "name: g\npatterns:\n  - name: specific\n    regex: '^a b'\n  - name: broad\n    regex: '^a'\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mut e = event();
        assert_eq!(
            set.apply(&msg("x"), "a b", &mut e).unwrap(),
            Some(("g", "specific"))
        );
        assert_eq!(
            set.apply(&msg("y"), "a c", &mut e).unwrap(),
            Some(("g", "broad"))
        );
    }

    #[test]
    fn a_bad_capture_value_is_a_field_error_not_a_panic() {
        let (set, _) =
            load("name: d\npatterns:\n  - name: p\n    regex: '^(?P<source.port>\\w+)'\n");
        let mut e = event();
        let err = set.apply(&msg("x"), "99999", &mut e).unwrap_err();
        assert_eq!(err.reason(), "field_type");
        assert_eq!(err.definition(), "d");
    }
}
