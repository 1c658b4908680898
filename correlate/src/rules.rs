//! Public rule types: what a loaded rule looks like to the rest of Vigil, and the `vigil:` block.

use serde::{Deserialize, Deserializer};

/// One rule file's text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The path errors name (as the caller wants it shown; fixture paths in `vigil.tests` are
    /// relative to it).
    pub path: String,
    /// The file's text: one or more YAML documents separated by `---` lines.
    pub text: String,
}

/// What kind of rule a [`RuleInfo`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleKind {
    /// A Sigma detection rule (single-event).
    Detection,
    /// A Sigma `event_count` correlation rule.
    EventCount,
    /// A Sigma `value_count` correlation rule.
    ValueCount,
    /// A Sigma `temporal` correlation rule.
    Temporal,
    /// A Sigma `temporal_ordered` correlation rule.
    TemporalOrdered,
    /// A Vigil `value_sum` correlation rule (sum of a numeric field per group key in the
    /// window; a Vigil extension, not Sigma).
    ValueSum,
    /// A Vigil `absence` correlation rule (the first referenced rule not followed by the second
    /// for the same key within the timespan; a Vigil extension, not Sigma).
    Absence,
    /// A Vigil `silence` correlation rule (a group key not seen for the timespan; a Vigil
    /// extension, not Sigma).
    Silence,
    /// A Vigil `periodic` correlation rule (occurrences per group key at a regular period with
    /// low jitter: beaconing; a Vigil extension, not Sigma).
    Periodic,
}

/// A loaded rule, as other components see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// The rule's identity: `name`, else `id`, else `title`.
    pub name: String,
    /// The Sigma `id`, when given.
    pub id: Option<String>,
    /// `title` (the name when the file has none).
    pub title: String,
    /// Detection or correlation.
    pub kind: RuleKind,
    /// Sigma `level` (`informational`, `low`, `medium`, `high`, `critical`).
    pub level: Option<String>,
    /// Sigma `tags`.
    pub tags: Vec<String>,
    /// Sigma `author` (DRL 1.1 asks that it travel with anything a SigmaHQ rule produces).
    pub author: Option<String>,
    /// The file the rule came from.
    pub path: String,
    /// One-based line of the rule's document in that file.
    pub line: usize,
    /// Whether the rule's matches yield detections of their own: not referenced by any
    /// correlation, or referenced by at least one with `generate: true` (the same for
    /// detection rules and for correlations referenced by other correlations).
    pub generate: bool,
    /// For correlations: the names of the rules (detections or correlations) it references, in
    /// order, without duplicates.
    pub references: Vec<String>,
    /// The `vigil:` block (defaults when absent).
    pub vigil: VigilBlock,
    /// `name`, `title`, `level` and `tags` once more, shared with every detection.
    pub(crate) shared: SharedInfo,
}

/// A rule's texts that every detection carries, shared rather than copied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SharedInfo {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) title: std::sync::Arc<str>,
    pub(crate) level: Option<std::sync::Arc<str>>,
    pub(crate) tags: std::sync::Arc<[String]>,
}

impl SharedInfo {
    pub(crate) fn of(name: &str, title: &str, level: Option<&str>, tags: &[String]) -> Self {
        SharedInfo {
            name: name.into(),
            title: title.into(),
            level: level.map(Into::into),
            tags: tags.into(),
        }
    }
}

/// The `vigil:` block: everything Sigma has no word for. All keys are optional; unknown keys are
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VigilBlock {
    /// How detections of this rule become offenses.
    pub offense: OffenseSpec,
    /// Quiet period after an offense opens, as duration text (`1h`); validated at load, applied
    /// by the offense manager.
    pub suppress: Option<String>,
    /// The rule's own test cases.
    pub tests: Vec<RuleTest>,
}

/// How a rule's detections are indexed and weighed as offenses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffenseSpec {
    /// The field whose value indexes the offense. Default: the first `group-by` field, else
    /// `source.ip`. Sigma names are mapped like detection fields.
    pub index: Option<String>,
    /// Relevance, 0-10 (default 5).
    pub relevance: u8,
    /// Credibility, 0-10 (default 5).
    pub credibility: u8,
    /// Severity, 0-10. Default from `level`: informational 1, low 3, medium 5, high 7,
    /// critical 9 (5 without a level).
    pub severity: Option<u8>,
    /// QRadar's "add to reference set" response: each detection adds the offense's index value
    /// to this set (which must be declared), for `ttl` or for good.
    pub add_to_set: Option<AddToSet>,
}

/// `vigil.offense.add_to_set`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddToSet {
    /// The reference set.
    pub set: String,
    /// How long the entry stays (`7d`); for good when absent.
    #[serde(default)]
    pub ttl: Option<String>,
}

impl Default for OffenseSpec {
    fn default() -> Self {
        OffenseSpec {
            index: None,
            relevance: 5,
            credibility: 5,
            severity: None,
            add_to_set: None,
        }
    }
}

/// One test case carried by a rule: events in, offenses (or silence) out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    /// What the case shows, as a sentence.
    pub name: String,
    /// Fixture file of events, relative to the rule file.
    pub events: String,
    /// Offenses expected; empty means silence.
    #[serde(default)]
    pub expect: Vec<ExpectedOffense>,
    /// Context the case runs with (GeoIP databases, reference-set files).
    #[serde(default)]
    pub context: TestContext,
}

/// Context for a [`RuleTest`]; paths are relative to the rule file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestContext {
    /// A GeoIP City (or Country) database.
    pub geoip_city: Option<String>,
    /// A GeoIP ASN database.
    pub geoip_asn: Option<String>,
    /// Reference set name -> a list file loaded into it.
    pub reference: std::collections::BTreeMap<String, String>,
}

/// One offense a [`RuleTest`] expects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOffense {
    /// The offense's index value (`203.0.113.7`).
    #[serde(deserialize_with = "scalar_string")]
    pub index: String,
    /// How many events it holds.
    pub events: u64,
}

fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

/// The severity a Sigma `level` implies.
pub fn level_severity(level: Option<&str>) -> u8 {
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("informational") => 1,
        Some("low") => 3,
        Some("medium") => 5,
        Some("high") => 7,
        Some("critical") => 9,
        _ => 5,
    }
}
