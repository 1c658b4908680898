//! Loading: rule files (several YAML documents each) to a [`RuleSet`], with every failure named
//! by file and line. A rule that fails does not load; the others do.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_norway::Value;

use crate::detection::compile_detection;
use crate::duration::parse_duration;
use crate::fields::{logsource_filter, resolve_field};
use crate::index::Index;
use crate::rules::{level_severity, RuleInfo, RuleKind, RuleSource, VigilBlock};
use crate::ruleset::{CorrelationRule, CountCondition, DetectionRule, Offense, RuleSet};
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
    field: Option<IgnoredAny>,
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
    aliases: Option<IgnoredAny>,
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
    }
}

fn validate_vigil(p: &Parsed) -> Result<(), RuleError> {
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
    Ok(())
}

fn offense(p: &Parsed, default_index: &str) -> Offense {
    let spec = p
        .raw
        .vigil
        .as_ref()
        .map(|v| v.offense.clone())
        .unwrap_or_default();
    Offense {
        index_field: spec
            .index
            .as_deref()
            .map_or_else(|| default_index.to_owned(), resolve_field),
        relevance: spec.relevance,
        credibility: spec.credibility,
        severity: spec
            .severity
            .unwrap_or_else(|| level_severity(p.raw.level.as_deref())),
    }
}

fn info(p: &Parsed, kind: RuleKind) -> RuleInfo {
    RuleInfo {
        name: p.name.clone(),
        id: p.id.clone(),
        title: p.raw.title.clone().unwrap_or_else(|| p.name.clone()),
        kind,
        level: p.raw.level.clone(),
        tags: p.raw.tags.iter().flatten().filter_map(scalar).collect(),
        author: p.raw.author.as_ref().and_then(scalar),
        path: p.path.clone(),
        line: p.doc.line_of(None, &[]),
        generate: kind != RuleKind::Detection,
        references: Vec::new(),
        vigil: p.raw.vigil.clone().unwrap_or_default(),
    }
}

fn compile_correlation(
    p: &Parsed,
    c: &RawCorrelation,
) -> Result<(Vec<String>, chrono::Duration, CountCondition), RuleError> {
    let at = |key: &str, msg: String| error(p, Some("correlation:"), &[key.to_owned()], msg);
    match c.kind.as_str() {
        "event_count" => {}
        "value_count" | "temporal" | "temporal_ordered" => {
            return Err(at(
                "type",
                format!("correlation type `{}` is not supported yet", c.kind),
            ))
        }
        other => return Err(at("type", format!("unknown correlation type `{other}`"))),
    }
    if c.aliases.is_some() {
        return Err(at(
            "aliases",
            "correlation aliases are not supported yet".into(),
        ));
    }
    if c.rules.is_empty() {
        return Err(at("rules", "correlation lists no rules".into()));
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
    let cond = c
        .condition
        .as_ref()
        .ok_or_else(|| at("correlation:", "correlation has no condition".into()))?;
    if cond.field.is_some() {
        return Err(at(
            "field",
            "condition field applies to value_count only".into(),
        ));
    }
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
    if cond.lt == Some(0) || lo > hi || !cond.holds(lo.max(1)) {
        return Err(at("condition", "condition can never hold".into()));
    }
    Ok((
        c.group_by.iter().map(|g| resolve_field(g)).collect(),
        timespan,
        cond,
    ))
}

impl RuleSet {
    /// Loads and compiles rule files. Returns the rules that loaded and one error per rule (or
    /// document) that did not.
    pub fn from_sources(sources: &[RuleSource]) -> (RuleSet, Vec<RuleError>) {
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
            if let Err(e) = validate_vigil(&p) {
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
            ok.push(p);
        }

        // Compile detections.
        let mut set = RuleSet::default();
        let mut det_by_key: HashMap<String, usize> = HashMap::new();
        let mut corr_names: HashMap<String, ()> = HashMap::new();
        let mut correlations = Vec::new();
        for p in &ok {
            let Some(det) = &p.raw.detection else {
                corr_names.insert(p.name.clone(), ());
                if let Some(id) = &p.id {
                    corr_names.insert(id.clone(), ());
                }
                correlations.push(p);
                continue;
            };
            let detection = match compile_detection(det) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(error(p, Some("detection:"), &e.near, e.message));
                    continue;
                }
            };
            let ls = p.raw.logsource.as_ref();
            let logsource = logsource_filter(
                ls.and_then(|l| l.product.as_deref()),
                ls.and_then(|l| l.service.as_deref()),
                ls.and_then(|l| l.category.as_deref()),
            );
            let d = set.detections.len();
            det_by_key.insert(p.name.clone(), d);
            if let Some(id) = &p.id {
                det_by_key.insert(id.clone(), d);
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

        // Compile correlations against the detections that loaded.
        let mut referenced = vec![false; set.detections.len()];
        let mut generated = vec![false; set.detections.len()];
        for p in correlations {
            let Some(c) = &p.raw.correlation else {
                continue;
            };
            let (group_by, timespan, condition) = match compile_correlation(p, c) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut sources = Vec::new();
            let mut bad = None;
            for r in &c.rules {
                match det_by_key.get(r) {
                    Some(d) => {
                        if !sources.contains(d) {
                            sources.push(*d);
                        }
                    }
                    None => {
                        let why = if corr_names.contains_key(r) {
                            format!("correlation references correlation `{r}`; chaining correlations is not supported yet")
                        } else if seen.contains_key(r) {
                            format!("correlation references rule `{r}`, which failed to load")
                        } else {
                            format!("correlation references unknown rule `{r}`")
                        };
                        bad = Some(error(p, Some("rules:"), std::slice::from_ref(r), why));
                        break;
                    }
                }
            }
            if let Some(e) = bad {
                errors.push(e);
                continue;
            }
            let ci = set.correlations.len();
            for d in &sources {
                referenced[*d] = true;
                generated[*d] |= c.generate;
                if let Some(det) = set.detections.get_mut(*d) {
                    det.feeds.push(ci);
                }
            }
            let default_index = group_by
                .first()
                .cloned()
                .unwrap_or_else(|| "source.ip".into());
            set.correlations.push(CorrelationRule {
                info: set.infos.len(),
                group_by,
                timespan,
                condition,
                offense: offense(p, &default_index),
            });
            let mut i = info(p, RuleKind::EventCount);
            i.references = sources
                .iter()
                .filter_map(|d| set.detections.get(*d))
                .filter_map(|d| set.infos.get(d.info))
                .map(|r| r.name.clone())
                .collect();
            set.infos.push(i);
        }
        for (d, det) in set.detections.iter().enumerate() {
            if let Some(i) = set.infos.get_mut(det.info) {
                i.generate = !referenced[d] || generated[d];
            }
        }
        set.index = Index::build(&set.detections);
        errors.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        (set, errors)
    }
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
