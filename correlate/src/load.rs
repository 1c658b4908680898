//! Loading: rule files (several YAML documents each) to a [`RuleSet`], with every failure named
//! by file and line. A rule that fails does not load; the others do.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_norway::Value;
use vigil_parsers::event::FieldRef;

use crate::detection::compile_detection;
use crate::duration::parse_duration;
use crate::fields::{logsource_filter, resolve_field};
use crate::index::Index;
use crate::rules::{level_severity, RuleInfo, RuleKind, RuleSource, SharedInfo, VigilBlock};
use crate::ruleset::{CorrelationRule, CountCondition, DetectionRule, Measure, Offense, RuleSet};
use crate::RuleError;

/// One YAML document of a file.
struct Doc {
    /// One-based line number of the document's first line in the file.
    first_line: usize,
    text: String,
}

impl Doc {
    /// The first line at or after `anchor` (a line starting with it, trimmed) that contains one
    /// of `needles` (tried in order); else the anchor line; else the first content line.
    fn line_of(&self, anchor: Option<&str>, needles: &[String]) -> usize {
        let lines: Vec<&str> = self.text.lines().collect();
        let content = lines
            .iter()
            .position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
            .unwrap_or(0);
        let start = anchor
            .and_then(|a| lines.iter().position(|l| l.trim_start().starts_with(a)))
            .unwrap_or(content);
        for needle in needles.iter().filter(|n| !n.is_empty()) {
            if let Some(i) = lines
                .iter()
                .skip(start)
                .position(|l| l.contains(needle.as_str()))
            {
                return self.first_line + start + i;
            }
        }
        self.first_line + start
    }
}

/// Splits a file at `---` lines (and `...` end markers).
fn split_documents(text: &str) -> Vec<Doc> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        let marker = t == "---" || t == "..." || t.starts_with("--- #");
        if marker {
            docs.push(Doc {
                first_line,
                text: std::mem::take(&mut cur),
            });
            first_line = i + 2;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push(Doc {
        first_line,
        text: cur,
    });
    docs.retain(|d| {
        d.text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    });
    docs
}

#[derive(Deserialize)]
struct RawLogsource {
    product: Option<String>,
    service: Option<String>,
    category: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCountCondition {
    gt: Option<u64>,
    gte: Option<u64>,
    lt: Option<u64>,
    lte: Option<u64>,
    eq: Option<u64>,
    field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrelation {
    #[serde(rename = "type")]
    kind: String,
    rules: Vec<String>,
    #[serde(rename = "group-by", default)]
    group_by: Vec<String>,
    timespan: Option<Value>,
    condition: Option<RawCountCondition>,
    #[serde(default)]
    generate: bool,
    aliases: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// `value_count` field outside the condition (draft spelling; `condition.field` is the
    /// spec's).
    field: Option<String>,
    /// Vigil's alias of `field`.
    #[serde(rename = "value-field")]
    value_field: Option<String>,
    /// `periodic`: allowed jitter as a fraction of the period (default 0.1).
    #[serde(rename = "max-jitter")]
    max_jitter: Option<f64>,
    /// `periodic`: shortest period that counts (default 10s).
    #[serde(rename = "min-interval")]
    min_interval: Option<Value>,
}

/// The parts of a rule document Vigil reads. Other top-level keys (Sigma's `author`, `status`,
/// `references`, ... and custom attributes such as SigmaHQ's `regression_tests_path`) are
/// accepted and ignored.
#[derive(Deserialize)]
struct RawRule {
    title: Option<String>,
    id: Option<Value>,
    name: Option<String>,
    level: Option<String>,
    tags: Option<Vec<Value>>,
    author: Option<Value>,
    logsource: Option<RawLogsource>,
    detection: Option<Value>,
    correlation: Option<RawCorrelation>,
    vigil: Option<VigilBlock>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Parsed {
    path: String,
    doc: Doc,
    raw: RawRule,
    name: String,
    id: Option<String>,
}

fn strip_location(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    msg.trim_end_matches('.').to_owned()
}

fn parse_doc(path: &str, doc: Doc) -> Result<Parsed, RuleError> {
    match serde_norway::from_str::<RawRule>(&doc.text) {
        Ok(raw) => {
            let id = raw.id.as_ref().and_then(scalar);
            let name = raw
                .name
                .clone()
                .or_else(|| id.clone())
                .or_else(|| raw.title.clone())
                .filter(|n| !n.trim().is_empty());
            match name {
                Some(name) => Ok(Parsed {
                    path: path.to_owned(),
                    doc,
                    raw,
                    name,
                    id,
                }),
                None => Err(RuleError {
                    path: path.to_owned(),
                    line: doc.line_of(None, &[]),
                    rule: None,
                    message: "rule has no name, id or title".into(),
                    unsupported: false,
                }),
            }
        }
        Err(e) => {
            let line = e.location().map_or_else(
                || doc.line_of(None, &[]),
                |l| doc.first_line + l.line().saturating_sub(1),
            );
            // Best effort at naming the rule even though it did not parse.
            let rule = serde_norway::from_str::<Value>(&doc.text)
                .ok()
                .and_then(|v| {
                    ["name", "id", "title"]
                        .iter()
                        .find_map(|k| v.get(k).and_then(scalar))
                });
            let msg = strip_location(&e.to_string());
            let message = if msg.is_empty() {
                "invalid yaml".to_owned()
            } else {
                msg
            };
            Err(RuleError {
                path: path.to_owned(),
                line,
                rule,
                message,
                unsupported: false,
            })
        }
    }
}

fn error(p: &Parsed, anchor: Option<&str>, needles: &[String], message: String) -> RuleError {
    RuleError {
        path: p.path.clone(),
        line: p.doc.line_of(anchor, needles),
        rule: Some(p.name.clone()),
        message,
        unsupported: false,
    }
}

fn validate_vigil(p: &Parsed, options: &LoadOptions) -> Result<(), RuleError> {
    let Some(v) = &p.raw.vigil else { return Ok(()) };
    let at = |key: &str, msg: String| error(p, Some("vigil:"), &[key.to_owned()], msg);
    if v.offense.relevance > 10 {
        return Err(at(
            "relevance",
            "vigil.offense.relevance must be 0-10".into(),
        ));
    }
    if v.offense.credibility > 10 {
        return Err(at(
            "credibility",
            "vigil.offense.credibility must be 0-10".into(),
        ));
    }
    if v.offense.severity.is_some_and(|s| s > 10) {
        return Err(at("severity", "vigil.offense.severity must be 0-10".into()));
    }
    if let Some(s) = &v.suppress {
        parse_duration(s).map_err(|e| at("suppress", format!("vigil.suppress: {e}")))?;
    }
    if let Some(a) = &v.offense.add_to_set {
        if let Some(ttl) = &a.ttl {
            parse_duration(ttl)
                .map_err(|e| at("add_to_set", format!("vigil.offense.add_to_set.ttl: {e}")))?;
        }
        let known = options
            .reference
            .as_ref()
            .is_some_and(|r| r.set_id(&a.set).is_some());
        if !known {
            return Err(at(
                "add_to_set",
                format!(
                    "vigil.offense.add_to_set: unknown reference set `{}` (declare it in the \
                     configuration)",
                    a.set
                ),
            ));
        }
    }
    Ok(())
}

fn offense(p: &Parsed, default_index: &str) -> Offense {
    let spec = p
        .raw
        .vigil
        .as_ref()
        .map(|v| v.offense.clone())
        .unwrap_or_default();
    let index_field = spec
        .index
        .as_deref()
        .map_or_else(|| default_index.to_owned(), resolve_field);
    Offense {
        index_at: FieldRef::new(&index_field),
        index_shared: index_field.as_str().into(),
        index_field,
        relevance: spec.relevance,
        credibility: spec.credibility,
        severity: spec
            .severity
            .unwrap_or_else(|| level_severity(p.raw.level.as_deref())),
    }
}

fn info(p: &Parsed, kind: RuleKind) -> RuleInfo {
    let title = p.raw.title.clone().unwrap_or_else(|| p.name.clone());
    let tags: Vec<String> = p.raw.tags.iter().flatten().filter_map(scalar).collect();
    RuleInfo {
        shared: SharedInfo::of(&p.name, &title, p.raw.level.as_deref(), &tags),
        name: p.name.clone(),
        id: p.id.clone(),
        title,
        kind,
        level: p.raw.level.clone(),
        tags,
        author: p.raw.author.as_ref().and_then(scalar),
        path: p.path.clone(),
        line: p.doc.line_of(None, &[]),
        generate: kind != RuleKind::Detection,
        references: Vec::new(),
        vigil: p.raw.vigil.clone().unwrap_or_default(),
    }
}

/// A correlation's own shape, checked before its references are resolved.
struct CorrShape {
    kind: RuleKind,
    /// `value_count` and `value_sum`: the value field as written.
    value_field: Option<String>,
    timespan: chrono::Duration,
    /// `None` for temporal types without a condition (all rules must match).
    condition: Option<CountCondition>,
    /// `periodic`: (max jitter, min interval).
    periodic: Option<(f64, chrono::Duration)>,
}

fn compile_correlation(p: &Parsed, c: &RawCorrelation) -> Result<CorrShape, RuleError> {
    let at = |key: &str, msg: String| error(p, Some("correlation:"), &[key.to_owned()], msg);
    let kind = match c.kind.as_str() {
        "event_count" => RuleKind::EventCount,
        "value_count" => RuleKind::ValueCount,
        "temporal" => RuleKind::Temporal,
        "temporal_ordered" => RuleKind::TemporalOrdered,
        "value_sum" => RuleKind::ValueSum,
        "absence" => RuleKind::Absence,
        "silence" => RuleKind::Silence,
        "periodic" => RuleKind::Periodic,
        other => return Err(at("type", format!("unknown correlation type `{other}`"))),
    };
    let periodic = if kind == RuleKind::Periodic {
        let jitter = c.max_jitter.unwrap_or(0.1);
        if !(jitter.is_finite() && (0.0..=1.0).contains(&jitter)) {
            return Err(at(
                "max-jitter",
                "max-jitter must be a fraction of the period between 0 and 1".into(),
            ));
        }
        let min = match &c.min_interval {
            None => chrono::Duration::seconds(10),
            Some(v) => {
                let text = scalar(v).ok_or_else(|| {
                    at(
                        "min-interval",
                        "min-interval must be a duration such as 30s".into(),
                    )
                })?;
                parse_duration(&text)
                    .map_err(|e| at("min-interval", format!("min-interval: {e}")))?
            }
        };
        Some((jitter, min))
    } else {
        if c.max_jitter.is_some() || c.min_interval.is_some() {
            return Err(at(
                "max-jitter",
                "max-jitter and min-interval apply to periodic only".into(),
            ));
        }
        None
    };
    if c.rules.is_empty() {
        return Err(at("rules", "correlation lists no rules".into()));
    }
    let timed = matches!(kind, RuleKind::Absence | RuleKind::Silence);
    match kind {
        RuleKind::Absence if c.rules.len() != 2 => {
            return Err(at(
                "rules",
                "absence lists exactly two rules: the one that starts the deadline, then the one that must follow"
                    .into(),
            ))
        }
        RuleKind::Silence if c.rules.len() != 1 => {
            return Err(at(
                "rules",
                "silence lists exactly one rule: the one whose events keep the key alive".into(),
            ))
        }
        _ => {}
    }
    if timed && c.condition.is_some() {
        return Err(at(
            "condition",
            format!(
                "{} takes no condition: it fires when the timespan passes",
                c.kind.as_str()
            ),
        ));
    }
    if c.rules.len() > MAX_CORRELATED_RULES {
        return Err(at(
            "rules",
            format!("correlation lists more than {MAX_CORRELATED_RULES} rules"),
        ));
    }
    let timespan_text = match &c.timespan {
        Some(v) => scalar(v)
            .ok_or_else(|| at("timespan", "timespan must be a duration such as 5m".into()))?,
        None => return Err(at("correlation:", "correlation has no timespan".into())),
    };
    let timespan =
        parse_duration(&timespan_text).map_err(|e| at("timespan", format!("timespan: {e}")))?;
    if timespan <= chrono::Duration::zero() {
        return Err(at("timespan", "timespan must be longer than zero".into()));
    }
    let fields: Vec<&String> = [
        c.condition.as_ref().and_then(|x| x.field.as_ref()),
        c.field.as_ref(),
        c.value_field.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if fields.len() > 1 {
        return Err(at(
            "field",
            "give the value field once (condition.field, field or value-field)".into(),
        ));
    }
    let value_field = fields.first().map(|f| f.trim().to_owned());
    match (kind, &value_field) {
        (RuleKind::ValueCount, None) => {
            return Err(at(
                "value_count",
                "value_count needs condition.field naming the field whose values it counts".into(),
            ))
        }
        (RuleKind::ValueCount, Some(f)) if f.is_empty() => {
            return Err(at("field", "value_count field is empty".into()))
        }
        (RuleKind::ValueCount, Some(_)) => {}
        (RuleKind::ValueSum, None) => {
            return Err(at(
                "value_sum",
                "value_sum needs condition.field naming the numeric field it sums".into(),
            ))
        }
        (RuleKind::ValueSum, Some(f)) if f.is_empty() => {
            return Err(at("field", "value_sum field is empty".into()))
        }
        (RuleKind::ValueSum, Some(_)) => {}
        (_, Some(_)) => {
            return Err(at(
                "field",
                "condition field applies to value_count only (and vigil's value_sum)".into(),
            ))
        }
        (_, None) => {}
    }
    let temporal = matches!(kind, RuleKind::Temporal | RuleKind::TemporalOrdered);
    let condition = match &c.condition {
        None if temporal || timed => None,
        None => return Err(at("correlation:", "correlation has no condition".into())),
        Some(cond) => {
            let cond = CountCondition {
                gt: cond.gt,
                gte: cond.gte,
                lt: cond.lt,
                lte: cond.lte,
                eq: cond.eq,
            };
            if cond == CountCondition::default() {
                return Err(at(
                    "condition",
                    "condition needs one of gt, gte, lt, lte, eq".into(),
                ));
            }
            let lo = [cond.gt.map(|g| g.saturating_add(1)), cond.gte, cond.eq]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
            let hi = [cond.lt.map(|l| l.saturating_sub(1)), cond.lte, cond.eq]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(u64::MAX);
            // Counts are at least 1 when a condition is evaluated; a sum can be 0.
            let least = if kind == RuleKind::ValueSum {
                lo
            } else {
                lo.max(1)
            };
            if cond.lt == Some(0) || lo > hi || !cond.holds(least) {
                return Err(at("condition", "condition can never hold".into()));
            }
            if temporal {
                let n = u64::try_from(c.rules.len()).unwrap_or(u64::MAX);
                if lo.max(1) > n {
                    return Err(at(
                        "condition",
                        format!("condition can never hold: the correlation lists {n} rules"),
                    ));
                }
            }
            Some(cond)
        }
    };
    Ok(CorrShape {
        kind,
        value_field,
        timespan,
        condition,
        periodic,
    })
}

/// Text to look for to find the line of a reference to `r` in a `rules:` list (block or flow
/// style) before falling back to any occurrence.
/// Fails every live correlation that references a failed one, naming the reference as the
/// rule wrote it, until nothing changes (failures cascade through chains).
fn fail_dependents(
    correlations: &[&Parsed],
    refs: &[Vec<Target>],
    alive: &mut [bool],
    errors: &mut Vec<RuleError>,
) {
    loop {
        let mut changed = false;
        for (k, p) in correlations.iter().enumerate() {
            if !alive[k] {
                continue;
            }
            let dead = refs[k].iter().find_map(|t| match t {
                Target::Correlation(j) if !alive[*j] => correlations.get(*j),
                _ => None,
            });
            if let Some(d) = dead {
                let shown = p
                    .raw
                    .correlation
                    .as_ref()
                    .and_then(|c| {
                        c.rules
                            .iter()
                            .find(|r| **r == d.name || Some(*r) == d.id.as_ref())
                    })
                    .cloned()
                    .unwrap_or_else(|| d.name.clone());
                errors.push(error(
                    p,
                    Some("rules:"),
                    &ref_needles(&shown),
                    format!("correlation references rule `{shown}`, which failed to load"),
                ));
                alive[k] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn ref_needles(r: &str) -> Vec<String> {
    vec![
        format!("- {r}"),
        format!("[{r}"),
        format!(", {r}"),
        r.to_owned(),
    ]
}

/// The most rules one correlation may reference (a rule mask is one `u64`).
const MAX_CORRELATED_RULES: usize = 64;

/// What a rule reference resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Index into `set.detections`.
    Detection(usize),
    /// Index into the list of correlations being compiled.
    Correlation(usize),
}

/// Options for [`RuleSet::from_sources_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Values of `%name%` placeholders for the `expand` modifier, by name (without the `%`). A
    /// rule using `expand` with a placeholder not listed here fails to load, naming it.
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Run rules whose `logsource` Vigil does not serve against every event, instead of
    /// refusing them as unsupported (the default). For reproducing Sigma examples written for
    /// other platforms; the service leaves it off.
    pub apply_unserved_logsources: bool,
    /// Reference sets rules may test with the `refset` modifier. A rule naming a set this does
    /// not know (or using `refset` when this is `None`) fails to load.
    pub reference: Option<std::sync::Arc<dyn crate::reference::ReferenceLookup>>,
    /// Names of rules switched off by an operator: they are left out (not an error). A rule
    /// that references one fails to load, naming it as unknown.
    pub disabled: std::collections::BTreeSet<String>,
}

impl RuleSet {
    /// Loads and compiles rule files. Returns the rules that loaded and one error per rule (or
    /// document) that did not. No `expand` placeholders are defined (see
    /// [`RuleSet::from_sources_with`]).
    pub fn from_sources(sources: &[RuleSource]) -> (RuleSet, Vec<RuleError>) {
        Self::from_sources_with(sources, &LoadOptions::default())
    }

    /// [`RuleSet::from_sources`] with options (placeholder values for `expand`).
    ///
    /// Correlations may reference detection rules and other correlations, by `name` or `id`,
    /// across files. A correlation that is part of a reference cycle fails to load (the error
    /// names the cycle), as does every correlation referencing a rule that failed.
    pub fn from_sources_with(
        sources: &[RuleSource],
        options: &LoadOptions,
    ) -> (RuleSet, Vec<RuleError>) {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for src in sources {
            for doc in split_documents(&src.text) {
                match parse_doc(&src.path, doc) {
                    Ok(p) => parsed.push(p),
                    Err(e) => errors.push(e),
                }
            }
        }

        // Validate shape, names and the vigil block; keep what passes.
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
        // Names and ids of rules refused as unsupported: what references them is unsupported too.
        let mut unsupported_names: std::collections::HashSet<String> =
            std::collections::HashSet::new();
        let mut ok = Vec::new();
        for p in parsed {
            let shape = match (&p.raw.detection, &p.raw.correlation) {
                (Some(_), Some(_)) => Err("rule has both detection and correlation"),
                (None, None) => Err("rule has neither detection nor correlation"),
                _ => Ok(()),
            };
            if let Err(msg) = shape {
                errors.push(error(&p, None, &[], msg.into()));
                continue;
            }
            if let Err(e) = validate_vigil(&p, options) {
                errors.push(e);
                continue;
            }
            let line = p.doc.line_of(None, &[]);
            let mut dup = None;
            for key in std::iter::once(&p.name).chain(p.id.iter()) {
                if let Some((path, l)) = seen.get(key) {
                    dup = Some(format!(
                        "duplicate rule name or id `{key}` (first at {path}:{l})"
                    ));
                }
            }
            if let Some(msg) = dup {
                errors.push(error(&p, None, std::slice::from_ref(&p.name), msg));
                continue;
            }
            for key in std::iter::once(&p.name).chain(p.id.iter()) {
                seen.insert(key.clone(), (p.path.clone(), line));
            }
            if options.disabled.contains(&p.name) {
                continue;
            }
            ok.push(p);
        }

        // Compile detections.
        let mut set = RuleSet::default();
        let mut targets: HashMap<String, Target> = HashMap::new();
        let mut correlations = Vec::new();
        for p in &ok {
            let Some(det) = &p.raw.detection else {
                correlations.push(p);
                continue;
            };
            let detection = match compile_detection(det, options) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(error(p, Some("detection:"), &e.near, e.message));
                    continue;
                }
            };
            let ls = p.raw.logsource.as_ref();
            let (product, service, category) = (
                ls.and_then(|l| l.product.as_deref()),
                ls.and_then(|l| l.service.as_deref()),
                ls.and_then(|l| l.category.as_deref()),
            );
            let logsource = logsource_filter(product, service, category);
            if logsource.is_none()
                && !options.apply_unserved_logsources
                && [product, service, category].iter().any(Option::is_some)
            {
                // A log source no Vigil collector and parser produces: refused as unsupported
                // rather than run against every event.
                let described: Vec<String> = [
                    ("product", product),
                    ("service", service),
                    ("category", category),
                ]
                .iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
                .collect();
                let mut e = error(
                    p,
                    Some("logsource:"),
                    &[],
                    format!(
                        "logsource {{{}}} is not one vigil serves (no parser produces such events)",
                        described.join(", ")
                    ),
                );
                e.unsupported = true;
                errors.push(e);
                unsupported_names.insert(p.name.clone());
                if let Some(id) = &p.id {
                    unsupported_names.insert(id.clone());
                }
                continue;
            }
            let d = set.detections.len();
            targets.insert(p.name.clone(), Target::Detection(d));
            if let Some(id) = &p.id {
                targets.insert(id.clone(), Target::Detection(d));
            }
            set.detections.push(DetectionRule {
                info: set.infos.len(),
                logsource,
                detection,
                feeds: Vec::new(),
                offense: offense(p, "source.ip"),
            });
            let mut i = info(p, RuleKind::Detection);
            i.generate = true;
            set.infos.push(i);
        }

        // Correlations: their own shape first, then references (which may name correlations).
        let mut shapes: Vec<Option<CorrShape>> = Vec::with_capacity(correlations.len());
        for (k, p) in correlations.iter().enumerate() {
            let Some(c) = &p.raw.correlation else {
                shapes.push(None);
                continue;
            };
            match compile_correlation(p, c) {
                Ok(shape) => {
                    targets.insert(p.name.clone(), Target::Correlation(k));
                    if let Some(id) = &p.id {
                        targets.insert(id.clone(), Target::Correlation(k));
                    }
                    shapes.push(Some(shape));
                }
                Err(e) => {
                    errors.push(e);
                    shapes.push(None);
                }
            }
        }
        // Resolve references (deduplicated, in order).
        let mut refs: Vec<Vec<Target>> = vec![Vec::new(); correlations.len()];
        let mut alive: Vec<bool> = shapes.iter().map(Option::is_some).collect();
        for (k, p) in correlations.iter().enumerate() {
            let (Some(c), true) = (&p.raw.correlation, alive[k]) else {
                continue;
            };
            let mut bad = None;
            for r in &c.rules {
                match targets.get(r) {
                    Some(t) => {
                        let timed_target = match t {
                            Target::Correlation(j) => {
                                shapes.get(*j).and_then(Option::as_ref).is_some_and(|s| {
                                    matches!(s.kind, RuleKind::Absence | RuleKind::Silence)
                                })
                            }
                            Target::Detection(_) => false,
                        };
                        if timed_target && *t != Target::Correlation(k) {
                            bad = Some(error(
                                p,
                                Some("rules:"),
                                &ref_needles(r),
                                format!(
                                    "correlation references `{r}`, an absence or silence correlation: those fire as time passes and cannot feed another correlation"
                                ),
                            ));
                            break;
                        }
                        if *t == Target::Correlation(k) {
                            bad = Some(error(
                                p,
                                Some("rules:"),
                                &ref_needles(r),
                                format!("correlation references itself (`{r}`)"),
                            ));
                            break;
                        }
                        if !refs[k].contains(t) {
                            refs[k].push(*t);
                        }
                    }
                    None => {
                        let unsupported = unsupported_names.contains(r);
                        let why = if unsupported {
                            format!("correlation references rule `{r}`, whose logsource vigil does not serve")
                        } else if seen.contains_key(r) {
                            format!("correlation references rule `{r}`, which failed to load")
                        } else {
                            format!("correlation references unknown rule `{r}`")
                        };
                        let mut e = error(p, Some("rules:"), &ref_needles(r), why);
                        if unsupported {
                            // Unsupported for the same reason as the rule it counts.
                            e.unsupported = true;
                            unsupported_names.insert(p.name.clone());
                            if let Some(id) = &p.id {
                                unsupported_names.insert(id.clone());
                            }
                        }
                        bad = Some(e);
                        break;
                    }
                }
            }
            let absence = shapes
                .get(k)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.kind == RuleKind::Absence);
            if bad.is_none() && absence && refs[k].len() != 2 {
                bad = Some(error(
                    p,
                    Some("rules:"),
                    &[],
                    "absence needs two different rules".into(),
                ));
            }
            if let Some(e) = bad {
                errors.push(e);
                alive[k] = false;
            }
        }
        // Cycles: every correlation on one fails, naming it.
        for cycle in find_cycles(&refs, &alive) {
            let names: Vec<&str> = cycle
                .iter()
                .filter_map(|k| correlations.get(*k).map(|p| p.name.as_str()))
                .collect();
            let mut path = names.join(" -> ");
            if let Some(first) = names.first() {
                path.push_str(" -> ");
                path.push_str(first);
            }
            for (i, k) in cycle.iter().enumerate() {
                let Some(p) = correlations.get(*k) else {
                    continue;
                };
                let next = names
                    .get((i + 1) % names.len().max(1))
                    .map(|n| (*n).to_owned())
                    .unwrap_or_default();
                errors.push(error(
                    p,
                    Some("rules:"),
                    &ref_needles(&next),
                    format!("correlation reference cycle: {path}"),
                ));
                alive[*k] = false;
            }
        }
        // A correlation referencing one that failed fails too (until nothing changes).
        fail_dependents(&correlations, &refs, &mut alive, &mut errors);

        // Group-by names and aliases, per referenced rule.
        let mut compiled: Vec<Option<Fields>> = Vec::with_capacity(correlations.len());
        for (k, p) in correlations.iter().enumerate() {
            let (Some(c), Some(Some(shape)), true) = (&p.raw.correlation, shapes.get(k), alive[k])
            else {
                compiled.push(None);
                continue;
            };
            match resolve_fields(p, c, shape, &refs[k], &targets) {
                Ok(x) => compiled.push(Some(x)),
                Err(e) => {
                    errors.push(e);
                    compiled.push(None);
                    alive[k] = false;
                }
            }
        }
        // Aliases can fail a correlation after the cascade above: run it once more.
        fail_dependents(&correlations, &refs, &mut alive, &mut errors);

        // Infos in load order; compiled correlations in dependency order (inner first).
        let mut info_of = vec![usize::MAX; correlations.len()];
        for (k, p) in correlations.iter().enumerate() {
            if !alive[k] {
                continue;
            }
            let kind = shapes
                .get(k)
                .and_then(Option::as_ref)
                .map_or(RuleKind::EventCount, |s| s.kind);
            info_of[k] = set.infos.len();
            let mut i = info(p, kind);
            i.references = refs[k]
                .iter()
                .filter_map(|t| match t {
                    Target::Detection(d) => set
                        .detections
                        .get(*d)
                        .and_then(|d| set.infos.get(d.info))
                        .map(|r| r.name.clone()),
                    Target::Correlation(j) => correlations.get(*j).map(|p| p.name.clone()),
                })
                .collect();
            set.infos.push(i);
        }
        let order = topo_order(&refs, &alive);
        let mut corr_index = vec![usize::MAX; correlations.len()];
        for (ci, k) in order.iter().enumerate() {
            corr_index[*k] = ci;
        }
        let mut det_generated = vec![None::<bool>; set.detections.len()];
        let mut corr_generated = vec![None::<bool>; correlations.len()];
        for k in order {
            let (Some(p), Some(Some(shape)), Some(Some((names, fields, values)))) =
                (correlations.get(k), shapes.get(k), compiled.get(k))
            else {
                continue;
            };
            let generate = p.raw.correlation.as_ref().is_some_and(|c| c.generate);
            let ci = set.correlations.len();
            for (pos, t) in refs[k].iter().enumerate() {
                match t {
                    Target::Detection(d) => {
                        if let Some(det) = set.detections.get_mut(*d) {
                            det.feeds.push((ci, pos));
                        }
                        if let Some(g) = det_generated.get_mut(*d) {
                            *g = Some(g.unwrap_or(false) || generate);
                        }
                    }
                    Target::Correlation(j) => {
                        let inner = corr_index.get(*j).copied().unwrap_or(usize::MAX);
                        if let Some(rule) = set.correlations.get_mut(inner) {
                            rule.feeds.push((ci, pos));
                        }
                        if let Some(g) = corr_generated.get_mut(*j) {
                            *g = Some(g.unwrap_or(false) || generate);
                        }
                    }
                }
            }
            let default_index = names.first().cloned().unwrap_or_else(|| "source.ip".into());
            let off = offense(p, &default_index);
            let index_in_key = names.iter().position(|n| *n == off.index_field);
            let measure = match shape.kind {
                RuleKind::ValueCount => Measure::ValueCount(values.clone().unwrap_or_default()),
                RuleKind::Temporal => Measure::Temporal,
                RuleKind::TemporalOrdered => Measure::TemporalOrdered,
                RuleKind::ValueSum => Measure::ValueSum(values.clone().unwrap_or_default()),
                RuleKind::Absence => Measure::Absence,
                RuleKind::Silence => Measure::Silence,
                RuleKind::Periodic => {
                    let (jitter, min) = shape.periodic.unwrap_or((0.1, chrono::Duration::zero()));
                    Measure::Periodic {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        max_jitter_ppm: (jitter * 1e6).round() as u32,
                        min_interval_ns: min.num_nanoseconds().unwrap_or(i64::MAX),
                    }
                }
                _ => Measure::EventCount,
            };
            let n_rules = refs[k].len();
            let condition = shape.condition.unwrap_or(CountCondition {
                gte: Some(u64::try_from(n_rules).unwrap_or(u64::MAX)),
                ..CountCondition::default()
            });
            let value_fields = match &measure {
                Measure::ValueCount(f) | Measure::ValueSum(f) => {
                    f.iter().map(|f| FieldRef::new(f)).collect()
                }
                _ => Vec::new(),
            };
            set.correlations.push(CorrelationRule {
                info: info_of[k],
                measure,
                group_names: names.clone(),
                group_fields: fields
                    .iter()
                    .map(|per_rule| per_rule.iter().map(|f| FieldRef::new(f)).collect())
                    .collect(),
                value_fields,
                n_rules,
                timespan: shape.timespan,
                condition,
                offense: off,
                index_in_key,
                feeds: Vec::new(),
            });
        }
        for (d, det) in set.detections.iter().enumerate() {
            if let Some(i) = set.infos.get_mut(det.info) {
                i.generate = det_generated.get(d).copied().flatten().unwrap_or(true);
            }
        }
        for (k, g) in corr_generated.iter().enumerate() {
            if let Some(i) = info_of.get(k).and_then(|i| set.infos.get_mut(*i)) {
                i.generate = g.unwrap_or(true);
            }
        }
        set.index = Index::build(&set.detections);
        errors.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        (set, errors)
    }
}

/// Group-by names, per-rule group-by fields (aliases resolved) and per-rule value fields
/// (`value_count`, `value_sum`).
type Fields = (Vec<String>, Vec<Vec<String>>, Option<Vec<String>>);

fn resolve_fields(
    p: &Parsed,
    c: &RawCorrelation,
    shape: &CorrShape,
    refs: &[Target],
    targets: &HashMap<String, Target>,
) -> Result<Fields, RuleError> {
    let aliases = c.aliases.clone().unwrap_or_default();
    let at = |needle: &str, msg: String| error(p, Some("correlation:"), &[needle.to_owned()], msg);
    // Each alias: position of the referenced rule -> field.
    let mut resolved: BTreeMap<&str, Vec<Option<String>>> = BTreeMap::new();
    for (alias, map) in &aliases {
        let mut per = vec![None; refs.len()];
        for (rule, field) in map {
            let pos = targets
                .get(rule)
                .and_then(|t| refs.iter().position(|r| r == t))
                .ok_or_else(|| {
                    at(
                        rule,
                        format!(
                            "alias `{alias}` names rule `{rule}`, which the correlation does not reference"
                        ),
                    )
                })?;
            if let Some(slot) = per.get_mut(pos) {
                *slot = Some(resolve_field(field.trim()));
            }
        }
        resolved.insert(alias.as_str(), per);
    }
    let field_for = |name: &str| -> Result<(String, Vec<String>), RuleError> {
        match resolved.get(name.trim()) {
            Some(per) => {
                let mut out = Vec::with_capacity(per.len());
                for (pos, f) in per.iter().enumerate() {
                    match f {
                        Some(f) => out.push(f.clone()),
                        None => {
                            let rule = c.rules.get(pos).cloned().unwrap_or_default();
                            return Err(at(
                                name,
                                format!("alias `{name}` gives no field for rule `{rule}`"),
                            ));
                        }
                    }
                }
                Ok((name.trim().to_owned(), out))
            }
            None => {
                let f = resolve_field(name.trim());
                Ok((f.clone(), vec![f; refs.len()]))
            }
        }
    };
    let mut names = Vec::with_capacity(c.group_by.len());
    let mut fields = vec![Vec::with_capacity(c.group_by.len()); refs.len()];
    for g in &c.group_by {
        let (name, per) = field_for(g)?;
        names.push(name);
        for (pos, f) in per.into_iter().enumerate() {
            if let Some(v) = fields.get_mut(pos) {
                v.push(f);
            }
        }
    }
    let values = match &shape.value_field {
        Some(v) => Some(field_for(v)?.1),
        None => None,
    };
    Ok((names, fields, values))
}

/// Correlations on reference cycles (each cycle once, members in reference order).
fn find_cycles(refs: &[Vec<Target>], alive: &[bool]) -> Vec<Vec<usize>> {
    // 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; refs.len()];
    let mut cycles = Vec::new();
    let mut on_cycle = vec![false; refs.len()];
    for start in 0..refs.len() {
        if state[start] != 0 || !alive.get(start).copied().unwrap_or(false) {
            continue;
        }
        // Iterative DFS: (node, next edge).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            let next = refs.get(node).and_then(|r| r.get(*edge)).copied();
            *edge += 1;
            match next {
                None => {
                    state[node] = 2;
                    stack.pop();
                }
                Some(Target::Detection(_)) => {}
                Some(Target::Correlation(j)) => {
                    if !alive.get(j).copied().unwrap_or(false) {
                        continue;
                    }
                    match state.get(j).copied() {
                        Some(0) => {
                            state[j] = 1;
                            stack.push((j, 0));
                        }
                        Some(1) => {
                            if let Some(from) = stack.iter().position(|(n, _)| *n == j) {
                                let cycle: Vec<usize> =
                                    stack[from..].iter().map(|(n, _)| *n).collect();
                                if cycle.iter().all(|n| !on_cycle[*n]) {
                                    for n in &cycle {
                                        on_cycle[*n] = true;
                                    }
                                    cycles.push(cycle);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    cycles
}

/// Live correlations ordered so every referenced correlation comes before its referrers.
fn topo_order(refs: &[Vec<Target>], alive: &[bool]) -> Vec<usize> {
    let mut done = vec![false; refs.len()];
    let mut order = Vec::new();
    // Cycles were removed, so repeated passes terminate; each pass places at least one.
    loop {
        let mut placed = false;
        for k in 0..refs.len() {
            if done[k] || !alive.get(k).copied().unwrap_or(false) {
                continue;
            }
            let ready = refs[k].iter().all(|t| match t {
                Target::Correlation(j) => done.get(*j).copied().unwrap_or(false),
                Target::Detection(_) => true,
            });
            if ready {
                done[k] = true;
                order.push(k);
                placed = true;
            }
        }
        if !placed {
            break;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_marker_lines_with_their_first_line() {
        let docs = split_documents("a: 1\n---\n# c\nb: 2\n---\n\n...\nc: 3\n");
        let firsts: Vec<usize> = docs.iter().map(|d| d.first_line).collect();
        assert_eq!(firsts, vec![1, 3, 8]);
        assert_eq!(docs[1].line_of(None, &[]), 4);
    }
}
