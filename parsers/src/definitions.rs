//! Parser definitions: per-vendor extraction as data, not code.
//!
//! A definition is one YAML file (`parsers/definitions/*.yml`, format documented in
//! `parsers/definitions/README.md`): when it applies (`match`), constants it sets (`set`), an
//! ordered list of regex `patterns` tried on the syslog MSG (first match wins) whose named
//! captures become schema fields, and embedded `tests`.
//!
//! Everything is checked when a file loads: regexes compile once, every target field is a core
//! field or an `extra.` field, every capture is mapped, constants convert to their field's type.
//! A file that fails any check is refused with an error naming the file and the line; the other
//! files still load.
//!
//! Dispatch: definitions with a `program` condition are indexed by program name, so a message only
//! meets the definitions that could apply to it; definitions without one are tried for every
//! message. Within a definition the patterns are matched in one pass with a [`RegexSet`] and only
//! the winning pattern runs again for its captures.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::event::{Event, FieldError};
use crate::syslog::{Format, SyslogMessage};

/// The definitions shipped with Vigil: (path shown in errors, YAML text). Add a file here to ship
/// it.
const BUILTIN: &[(&str, &str)] = &[(
    "parsers/definitions/openssh.yml",
    include_str!("../definitions/openssh.yml"),
)];

/// The `extra` key that receives `N` from an rsyslog `message repeated N times: [ ... ]` wrapper.
pub const REPEAT_COUNT_FIELD: &str = "repeat_count";

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
    /// Definitions without a program condition, ascending.
    any_program: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Definition {
    name: String,
    path: String,
    programs: Vec<String>,
    prefix: Option<String>,
    regex: Option<Regex>,
    set: Vec<(String, String)>,
    patterns: Vec<Pattern>,
    /// All pattern regexes, to find the first matching one in one pass. `None` if the set would
    /// not compile within the size limits (then the patterns are tried one by one).
    pattern_set: Option<RegexSet>,
    tests: Vec<TestCase>,
}

#[derive(Debug, Clone)]
struct Pattern {
    name: String,
    regex: Regex,
    /// Capture group index -> target field.
    captures: Vec<(usize, String)>,
    set: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct TestCase {
    line: usize,
    name: Option<String>,
    message: String,
    program: Option<String>,
    expect: Vec<(String, Option<String>)>,
    expect_pattern: Option<String>,
    expect_no_match: bool,
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
    set: BTreeMap<String, Scalar>,
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
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternSpec {
    name: String,
    regex: String,
    #[serde(default)]
    fields: BTreeMap<String, String>,
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
                    set.push(def);
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
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

    fn push(&mut self, def: Definition) {
        let index = self.definitions.len();
        if def.programs.is_empty() {
            self.any_program.push(index);
        } else {
            for program in &def.programs {
                let list = self.by_program.entry(program.clone()).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
        }
        self.definitions.push(def);
    }

    /// Applies the first definition (in load order) whose `match` holds and one of whose patterns
    /// matches `message_text`; returns `(definition name, pattern name)`, or `None` when nothing
    /// matched (the event is left as it was, except for the repeat count below).
    ///
    /// An rsyslog `message repeated N times: [ TEXT ]` wrapper is unwrapped first: TEXT is matched
    /// and `extra.repeat_count` is set to N.
    ///
    /// Fields are set in this order, later ones winning: `event.dataset` = the definition name,
    /// the definition's `set`, the pattern's `set`, then the captures (a group that did not take
    /// part in the match or captured empty text sets nothing). A capture that does not convert to
    /// its field's type (`source.ip` = `foo`) returns the [`FieldError`]; the event is then partly
    /// written and should be discarded.
    pub fn apply(
        &self,
        msg: &SyslogMessage,
        message_text: &str,
        event: &mut Event,
    ) -> Result<Option<(&str, &str)>, FieldError> {
        let (text, repeat) = unwrap_repeated(message_text);
        if let Some(count) = repeat {
            event
                .extra
                .insert(REPEAT_COUNT_FIELD.to_owned(), count.to_owned());
        }
        let specific: &[usize] = msg
            .appname
            .as_deref()
            .and_then(|p| self.by_program.get(p))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for index in merge_ascending(specific, &self.any_program) {
            let Some(def) = self.definitions.get(index) else {
                continue;
            };
            if let Some(pattern) = def.apply(text, event)? {
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
            hostname: Some("test-host".to_owned()),
            appname: program,
            procid: None,
            msgid: None,
            structured_data: BTreeMap::new(),
            message: Some(case.message.clone().into_bytes()),
        };
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let mut event = Event::new(epoch, epoch);
        let matched = self
            .apply(&msg, &case.message, &mut event)
            .map_err(|e| format!("field conversion failed: {e}"))?;
        let mine = matched.filter(|(d, _)| *d == def.name);
        if case.expect_no_match {
            return match mine {
                Some((_, p)) => Err(format!("expected no match, matched pattern {p}")),
                None => Ok(()),
            };
        }
        let pattern = match (matched, mine) {
            (_, Some((_, p))) => p,
            (Some((d, p)), None) => {
                return Err(format!(
                    "matched by definition {d} (pattern {p}) instead of {}",
                    def.name
                ))
            }
            (None, _) => return Err("no pattern matched".to_owned()),
        };
        let mut problems = Vec::new();
        if let Some(want) = &case.expect_pattern {
            if want != pattern {
                problems.push(format!("expected pattern {want}, matched {pattern}"));
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
            Err(format!("pattern {pattern}: {}", problems.join("; ")))
        }
    }
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "nothing".to_owned(),
    }
}

impl Definition {
    /// Tries this definition on `text` (program already checked by dispatch). Returns the
    /// matched pattern's name.
    fn apply(&self, text: &str, event: &mut Event) -> Result<Option<&str>, FieldError> {
        if let Some(prefix) = &self.prefix {
            if !text.starts_with(prefix.as_str()) {
                return Ok(None);
            }
        }
        if let Some(re) = &self.regex {
            if !re.is_match(text) {
                return Ok(None);
            }
        }
        let found = match &self.pattern_set {
            Some(set) => set
                .matches(text)
                .iter()
                .next()
                .and_then(|i| self.patterns.get(i))
                .and_then(|p| p.regex.captures(text).map(|c| (p, c))),
            None => self
                .patterns
                .iter()
                .find_map(|p| p.regex.captures(text).map(|c| (p, c))),
        };
        let Some((pattern, caps)) = found else {
            return Ok(None);
        };
        event.dataset = Some(self.name.clone());
        for (field, value) in self.set.iter().chain(&pattern.set) {
            event.set(field, value)?;
        }
        for (group, field) in &pattern.captures {
            if let Some(m) = caps.get(*group) {
                if !m.as_str().is_empty() {
                    event.set(field, m.as_str())?;
                }
            }
        }
        Ok(Some(pattern.name.as_str()))
    }
}

/// Yields the union of two ascending index lists, ascending, without duplicates.
fn merge_ascending<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (a.get(i), b.get(j)) {
        (Some(&x), Some(&y)) => {
            if x < y {
                i += 1;
                Some(x)
            } else if y < x {
                j += 1;
                Some(y)
            } else {
                i += 1;
                j += 1;
                Some(x)
            }
        }
        (Some(&x), None) => {
            i += 1;
            Some(x)
        }
        (None, Some(&y)) => {
            j += 1;
            Some(y)
        }
        (None, None) => None,
    })
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
    };

    if file.name.trim().is_empty() || file.name.contains(char::is_whitespace) {
        problems.add(
            &["name"],
            format!("definition name {:?} must be one word", file.name),
        );
    }

    let programs = file
        .matcher
        .program
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    if programs.iter().any(|p| p.is_empty()) {
        problems.add(&["match", "program"], "empty program name".to_owned());
    }
    let match_regex = file
        .matcher
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

    if file.patterns.is_empty() {
        problems.add(
            &["patterns"],
            "a definition needs at least one pattern".to_owned(),
        );
    }
    let mut patterns = Vec::with_capacity(file.patterns.len());
    let mut pattern_names = HashSet::new();
    for spec in file.patterns {
        if let Some(p) = compile_pattern(&mut problems, &mut pattern_names, spec) {
            patterns.push(p);
        }
    }

    let mut tests = Vec::with_capacity(file.tests.len());
    for spec in file.tests {
        tests.push(check_test(&mut problems, &pattern_names, spec));
    }

    if !problems.errors.is_empty() {
        return Err(problems.errors);
    }
    let pattern_set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).ok();
    Ok(Definition {
        name: file.name,
        path: path.to_owned(),
        programs,
        prefix: file.matcher.prefix,
        regex: match_regex,
        set,
        patterns,
        pattern_set,
        tests,
    })
}

fn compile_pattern(
    problems: &mut Problems<'_>,
    names: &mut HashSet<String>,
    spec: PatternSpec,
) -> Option<Pattern> {
    if spec.name.trim().is_empty() {
        problems.add(
            &["patterns", "name"],
            "pattern name must not be empty".to_owned(),
        );
    } else if !names.insert(spec.name.clone()) {
        problems.add(
            &["patterns", spec.name.as_str(), spec.name.as_str()],
            format!("pattern name {:?} is used twice", spec.name),
        );
    }
    let set = check_constants(
        problems,
        &["patterns", spec.name.as_str(), "set"],
        &format!("pattern {} set", spec.name),
        spec.set,
    );
    let regex = match Regex::new(&spec.regex) {
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
    let mut ok = true;
    let mut captures = Vec::new();
    let mut used: HashSet<&str> = HashSet::new();
    for (group, name) in regex.capture_names().enumerate() {
        let Some(name) = name else { continue };
        let target = match spec.fields.get(name) {
            Some(target) => {
                used.insert(name);
                target.as_str()
            }
            None => name,
        };
        if let Err(why) = check_target(target) {
            ok = false;
            let message = if spec.fields.contains_key(name) {
                format!("pattern {}: capture {name}: {why}", spec.name)
            } else {
                format!(
                    "pattern {}: capture {name} is not mapped in fields and is not a field \
                     name itself: {why}",
                    spec.name
                )
            };
            problems.add(&["patterns", spec.name.as_str(), target], message);
            continue;
        }
        captures.push((group, target.to_owned()));
    }
    for name in spec.fields.keys() {
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
        regex,
        captures,
        set,
    })
}

fn check_test(
    problems: &mut Problems<'_>,
    pattern_names: &HashSet<String>,
    spec: TestSpec,
) -> TestCase {
    let head: String = spec.message.chars().take(40).collect();
    let line = {
        let exact = locate(problems.source, &["tests", &head]);
        if exact > 1 {
            exact
        } else {
            locate(problems.source, &["tests"])
        }
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
    if let Some(p) = &spec.expect_pattern {
        if !pattern_names.contains(p) {
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
        name: spec.name,
        message: spec.message,
        program: spec.program,
        expect,
        expect_pattern: spec.expect_pattern,
        expect_no_match: spec.expect_no_match,
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

    fn msg(program: &str) -> SyslogMessage {
        SyslogMessage {
            format: Format::FileLine,
            priority: None,
            facility: None,
            severity: None,
            version: None,
            timestamp: None,
            hostname: None,
            appname: Some(program.to_owned()),
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
    fn tokens_are_located_by_line() {
        let src = "name: a\npatterns:\n  - name: p1x\n    regex: x\n  - name: p1\n    regex: '('\n";
        assert_eq!(locate(src, &["patterns", "p1", "regex"]), 6);
        assert_eq!(locate(src, &["nothing"]), 1);
    }

    #[test]
    fn merge_keeps_load_order() {
        assert_eq!(
            merge_ascending(&[0, 3, 5], &[1, 3, 6]).collect::<Vec<_>>(),
            vec![0, 1, 3, 5, 6]
        );
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
        assert!(set.apply(&msg("x"), "99999", &mut e).is_err());
    }
}
