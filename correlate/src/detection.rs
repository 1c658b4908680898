//! Single-event detection: a Sigma `detection` block compiled once into selections of field
//! items and a condition tree.

use aho_corasick::AhoCorasick;
use serde_norway::Value;
use vigil_parsers::event::{Event, FieldRef, FieldValue};

use crate::condition::{parse_condition, Expr};
use crate::fields::resolve_field;
use crate::matcher::{
    any_contains, base64, base64_offsets, compile_glob, compile_regex, parse_glob, with_text, Case,
    Cidr, NumOp, Place, RefSet, StrMatcher, Tok, ValueMatcher,
};

/// A compile error with a hint where in the rule text it is (a key or value to look for).
#[derive(Debug, Clone)]
pub(crate) struct CompileError {
    pub(crate) message: String,
    /// Text to search for in the document to find the line (key as written, or value).
    pub(crate) near: Vec<String>,
}

impl CompileError {
    fn new(message: impl Into<String>, near: &[&str]) -> Self {
        CompileError {
            message: message.into(),
            near: near.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Placeholder values for `expand`, by name.
/// What compiling a detection needs besides the YAML: `expand` placeholders and reference data.
pub(crate) type Placeholders = crate::load::LoadOptions;

/// The field keyword searches look in.
pub(crate) const KEYWORD_FIELD: &str = "message";

/// A compiled `detection` block.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    pub(crate) selections: Vec<Selection>,
    pub(crate) condition: Expr,
}

/// One named selection: OR of conjunctions.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) alternatives: Vec<Vec<FieldItem>>,
}

/// One field test: the field, its values (OR, or AND with `all`).
#[derive(Debug, Clone)]
pub(crate) struct FieldItem {
    pub(crate) field: String,
    /// `field`, resolved.
    at: FieldRef,
    pub(crate) all: bool,
    /// For OR items: one automaton over all plain ASCII `contains` values, checked first.
    pub(crate) contains_any: Option<AhoCorasick>,
    pub(crate) values: Vec<ValueMatcher>,
    /// Required literals of values folded into `contains_any` (for the prefilter).
    pub(crate) folded_literals: Vec<String>,
    /// Whether any value compares text: else an address or a number is not formatted (a
    /// flow's `destination.ip|exists` or `|cidr` test formatted the address every time).
    needs_text: bool,
}

impl FieldItem {
    fn matches(&self, event: &Event) -> bool {
        match self.at.get(event) {
            Some(v) if self.needs_text => {
                with_text(&v, |t| self.matches_value(event, Some(&v), Some(t)))
            }
            Some(v) => self.matches_value(event, Some(&v), None),
            None => self.matches_value(event, None, None),
        }
    }

    fn matches_value(
        &self,
        event: &Event,
        val: Option<&FieldValue<'_>>,
        text: Option<&str>,
    ) -> bool {
        if self.all {
            return self.values.iter().all(|m| m.matches(event, val, text));
        }
        if let (Some(ac), Some(t)) = (&self.contains_any, text) {
            if ac.is_match(t) {
                return true;
            }
        }
        self.values.iter().any(|m| m.matches(event, val, text))
    }

    /// `(field, literal)` alternatives one of which every matching event contains.
    fn required_literals(&self) -> Option<Vec<(String, String)>> {
        let lit = |s: String| (self.field.clone(), s);
        if self.all {
            // Any single value's literal is required; take the longest.
            return self
                .values
                .iter()
                .filter_map(ValueMatcher::required_literal)
                .max_by_key(String::len)
                .map(|l| vec![lit(l)]);
        }
        let mut out: Vec<(String, String)> =
            self.folded_literals.iter().cloned().map(lit).collect();
        for v in &self.values {
            out.push(lit(v.required_literal()?));
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Selection {
    fn matches(&self, event: &Event) -> bool {
        self.alternatives
            .iter()
            .any(|items| items.iter().all(|i| i.matches(event)))
    }

    fn required_literals(&self) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        for items in &self.alternatives {
            let best = items
                .iter()
                .filter_map(FieldItem::required_literals)
                .max_by_key(|set| set.iter().map(|(_, l)| l.len()).min().unwrap_or(0))?;
            out.extend(best);
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Detection {
    /// Whether the event satisfies the condition.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        self.condition
            .eval(&mut |i| self.selections.get(i).is_some_and(|s| s.matches(event)))
    }

    /// `(field, lowercase ASCII literal)` pairs such that every event this detection matches
    /// contains at least one of them (ASCII case-insensitively) in that field's text; `None` when
    /// no such set is known.
    pub(crate) fn required_literals(&self) -> Option<Vec<(String, String)>> {
        fn walk(e: &Expr, sels: &[Selection]) -> Option<Vec<(String, String)>> {
            match e {
                Expr::Sel(i) => sels.get(*i)?.required_literals(),
                Expr::Not(_) => None,
                Expr::And(es) => es
                    .iter()
                    .filter_map(|e| walk(e, sels))
                    .max_by_key(|set| set.iter().map(|(_, l)| l.len()).min().unwrap_or(0)),
                Expr::Or(es) | Expr::AtLeast(_, es) => {
                    let mut out = Vec::new();
                    for e in es {
                        out.extend(walk(e, sels)?);
                    }
                    (!out.is_empty()).then_some(out)
                }
            }
        }
        walk(&self.condition, &self.selections)
    }
}

/// The string forms of a YAML scalar Sigma compares against.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key_text(k: &Value) -> Option<String> {
    scalar_text(k)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Re,
    Cidr,
    Exists,
    Num(NumOp),
    FieldRef,
    /// `refset`: membership in a named reference set (a Vigil extension).
    RefSet,
}

#[derive(Debug, Default)]
struct Mods {
    place: Option<Place>,
    all: bool,
    kind: Option<Kind>,
    re_i: bool,
    re_m: bool,
    re_s: bool,
    cased: bool,
    windash: bool,
    base64: bool,
    base64offset: bool,
    /// `wide`/`utf16le`, `utf16be`, `utf16`: the text is encoded so before base64.
    utf16: Option<Utf16>,
    /// `expand`: `%name%` placeholders are replaced by their configured values.
    expand: bool,
}

/// A UTF-16 encoding applied before `base64`/`base64offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf16 {
    Le,
    Be,
    /// Little endian after a byte-order mark (`FF FE`), as pySigma's `utf16`.
    LeBom,
}

impl Utf16 {
    fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 2 + 2);
        if self == Utf16::LeBom {
            out.extend_from_slice(&[0xFF, 0xFE]);
        }
        for unit in text.encode_utf16() {
            match self {
                Utf16::Be => out.extend_from_slice(&unit.to_be_bytes()),
                Utf16::Le | Utf16::LeBom => out.extend_from_slice(&unit.to_le_bytes()),
            }
        }
        out
    }
}

fn parse_mods(key: &str, mods: &[&str]) -> Result<Mods, CompileError> {
    let mut m = Mods::default();
    let err = |msg: String| CompileError::new(msg, &[key]);
    for raw in mods {
        let kind = |m: &mut Mods, k: Kind| -> Result<(), CompileError> {
            match m.kind {
                Some(prev) if prev != k => Err(err(format!(
                    "modifiers in `{key}` cannot be combined: {raw} with an earlier one"
                ))),
                _ => {
                    m.kind = Some(k);
                    Ok(())
                }
            }
        };
        let place = |m: &mut Mods, p: Place| -> Result<(), CompileError> {
            if m.place.is_some_and(|q| q != p) {
                return Err(err(format!(
                    "`{key}` combines more than one of contains, startswith, endswith"
                )));
            }
            m.place = Some(p);
            Ok(())
        };
        match *raw {
            "contains" => place(&mut m, Place::Contains)?,
            "startswith" => place(&mut m, Place::Prefix)?,
            "endswith" => place(&mut m, Place::Suffix)?,
            "all" => m.all = true,
            "re" => kind(&mut m, Kind::Re)?,
            "i" => m.re_i = true,
            "m" => m.re_m = true,
            "s" => m.re_s = true,
            "cidr" => kind(&mut m, Kind::Cidr)?,
            "exists" => kind(&mut m, Kind::Exists)?,
            "gt" => kind(&mut m, Kind::Num(NumOp::Gt))?,
            "gte" => kind(&mut m, Kind::Num(NumOp::Gte))?,
            "lt" => kind(&mut m, Kind::Num(NumOp::Lt))?,
            "lte" => kind(&mut m, Kind::Num(NumOp::Lte))?,
            "cased" => m.cased = true,
            "windash" => m.windash = true,
            "base64" => m.base64 = true,
            "base64offset" => m.base64offset = true,
            "wide" | "utf16le" | "utf16be" | "utf16" => {
                let enc = match *raw {
                    "utf16be" => Utf16::Be,
                    "utf16" => Utf16::LeBom,
                    _ => Utf16::Le,
                };
                if m.utf16.is_some_and(|e| e != enc) {
                    return Err(err(format!(
                        "`{key}` combines more than one utf16 encoding"
                    )));
                }
                m.utf16 = Some(enc);
            }
            "expand" => m.expand = true,
            "fieldref" => kind(&mut m, Kind::FieldRef)?,
            "refset" => kind(&mut m, Kind::RefSet)?,
            "" => return Err(err(format!("empty modifier in `{key}`"))),
            other => return Err(err(format!("unknown modifier `{other}` in `{key}`"))),
        }
    }
    let kind = m.kind.unwrap_or(Kind::Str);
    if (m.re_i || m.re_m || m.re_s) && kind != Kind::Re {
        return Err(err(format!(
            "`{key}`: the i, m and s modifiers only apply to re"
        )));
    }
    if m.base64 && m.base64offset {
        return Err(err(format!("`{key}` combines base64 and base64offset")));
    }
    if m.utf16.is_some() && !(m.base64 || m.base64offset) {
        return Err(err(format!(
            "`{key}`: wide, utf16, utf16le and utf16be need base64 or base64offset"
        )));
    }
    if m.base64offset && m.place != Some(Place::Contains) {
        return Err(err(format!("`{key}`: base64offset needs contains")));
    }
    if kind == Kind::FieldRef
        && (m.place.is_some() || m.windash || m.base64 || m.base64offset || m.expand)
    {
        return Err(err(format!(
            "`{key}`: fieldref takes no string modifiers but cased"
        )));
    }
    if kind != Kind::Str
        && kind != Kind::FieldRef
        && (m.place.is_some() || m.cased || m.windash || m.base64 || m.base64offset || m.expand)
    {
        return Err(err(format!(
            "`{key}`: contains, startswith, endswith, cased, windash, base64 and expand only apply to strings"
        )));
    }
    Ok(m)
}

/// Windows dash variants: every `-` or `/` starting an option is tried as each dash character.
fn windash_variants(s: &str) -> Vec<String> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let chars: Vec<char> = s.chars().collect();
    let is_opt = |i: usize| {
        matches!(chars[i], '-' | '/')
            && (i == 0 || !chars[i - 1].is_alphanumeric())
            && chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())
    };
    let mut out: Vec<String> = Vec::new();
    for d in DASHES {
        let v: String = chars
            .iter()
            .enumerate()
            .map(|(i, c)| if is_opt(i) { d } else { *c })
            .collect();
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if !out.iter().any(|v| v == s) {
        out.insert(0, s.to_owned());
    }
    out
}

/// Most string variants one value may expand to (placeholders times windash forms).
const MAX_VARIANTS: usize = 4096;

/// Replaces each `%name%` of `text` by each configured value (every combination). A `%` that
/// does not open a `%name%` (name: letters, digits, `_`, `-`, `.`) is literal.
fn expand_placeholders(
    key: &str,
    text: &str,
    placeholders: &Placeholders,
) -> Result<Vec<String>, CompileError> {
    let mut out = vec![String::new()];
    let mut rest = text;
    while let Some(open) = rest.find('%') {
        let (before, after) = rest.split_at(open);
        let after = &after[1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(after.len());
        let closed = name_len > 0 && after[name_len..].starts_with('%');
        for o in &mut out {
            o.push_str(before);
        }
        if !closed {
            for o in &mut out {
                o.push('%');
            }
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        let values = placeholders.placeholders.get(name).ok_or_else(|| {
            CompileError::new(
                format!("`{key}` uses placeholder `%{name}%`, which has no configured values"),
                &[key],
            )
        })?;
        if values.is_empty() {
            return Err(CompileError::new(
                format!("`{key}`: placeholder `%{name}%` has an empty value list"),
                &[key],
            ));
        }
        if out.len().saturating_mul(values.len()) > MAX_VARIANTS {
            return Err(CompileError::new(
                format!("`{key}` expands to more than {MAX_VARIANTS} values"),
                &[key],
            ));
        }
        out = out
            .iter()
            .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
            .collect();
        rest = &after[name_len + 1..];
    }
    for o in &mut out {
        o.push_str(rest);
    }
    Ok(out)
}

fn compile_value(
    key: &str,
    m: &Mods,
    keyword: bool,
    v: &Value,
    placeholders: &Placeholders,
) -> Result<Vec<ValueMatcher>, CompileError> {
    if v.is_null() {
        return Ok(vec![ValueMatcher::Null]);
    }
    let text = scalar_text(v).ok_or_else(|| {
        CompileError::new(
            format!("`{key}` has a value that is not a scalar or list of scalars"),
            &[key],
        )
    })?;
    let near = |msg: String| CompileError::new(msg, &[text.as_str(), key]);
    match m.kind.unwrap_or(Kind::Str) {
        Kind::Str => {
            let mut variants = if m.expand {
                expand_placeholders(key, &text, placeholders)?
            } else {
                vec![text.clone()]
            };
            if m.windash {
                variants = variants.iter().flat_map(|v| windash_variants(v)).collect();
            }
            let bytes = |v: &String| match m.utf16 {
                Some(enc) => enc.encode(v),
                None => v.as_bytes().to_vec(),
            };
            if m.base64 {
                variants = variants.iter().map(|v| base64(&bytes(v))).collect();
            } else if m.base64offset {
                variants = variants
                    .iter()
                    .flat_map(|v| base64_offsets(&bytes(v)))
                    .collect();
            }
            variants.dedup();
            if variants.is_empty() {
                return Err(near(format!("`{key}` has an empty value")));
            }
            let place = m.place.or(keyword.then_some(Place::Contains));
            variants
                .iter()
                .map(|t| {
                    let mut toks = parse_glob(t);
                    match place {
                        Some(Place::Contains) => {
                            toks.insert(0, Tok::Star);
                            toks.push(Tok::Star);
                        }
                        Some(Place::Prefix) => toks.push(Tok::Star),
                        Some(Place::Suffix) => toks.insert(0, Tok::Star),
                        _ => {}
                    }
                    compile_glob(&toks, m.cased)
                        .map(ValueMatcher::Str)
                        .map_err(&near)
                })
                .collect()
        }
        Kind::FieldRef => Ok(vec![ValueMatcher::FieldRef(
            resolve_field(text.trim()),
            m.cased,
        )]),
        Kind::Re => Ok(vec![ValueMatcher::Re(
            compile_regex(&text, m.re_i, m.re_m, m.re_s).map_err(&near)?,
        )]),
        Kind::Cidr => Ok(vec![ValueMatcher::Cidr(Cidr::parse(&text).map_err(&near)?)]),
        Kind::RefSet => {
            let name = text.trim();
            let Some(data) = &placeholders.reference else {
                return Err(near(format!(
                    "`{key}` tests reference set `{name}`, but no reference data is configured"
                )));
            };
            let id = data.set_id(name).ok_or_else(|| {
                near(format!(
                    "`{key}`: unknown reference set `{name}` (declare it in the configuration)"
                ))
            })?;
            Ok(vec![ValueMatcher::RefSet(RefSet {
                data: std::sync::Arc::clone(data),
                id,
            })])
        }
        Kind::Exists => match v {
            Value::Bool(b) => Ok(vec![ValueMatcher::Exists(*b)]),
            _ => Err(near(format!("`{key}` needs true or false"))),
        },
        Kind::Num(op) => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() => Ok(vec![ValueMatcher::Num(op, n)]),
                _ => Err(near(format!("`{key}` needs a number, not {text:?}"))),
            }
        }
    }
}

fn compile_item(
    key: &str,
    value: &Value,
    placeholders: &Placeholders,
) -> Result<FieldItem, CompileError> {
    let mut parts = key.split('|');
    let field_raw = parts.next().unwrap_or("").trim();
    let mods: Vec<&str> = parts.map(str::trim).collect();
    let m = parse_mods(key, &mods)?;
    let keyword = field_raw.is_empty();
    let field = if keyword {
        KEYWORD_FIELD.to_owned()
    } else {
        resolve_field(field_raw)
    };
    let raw_values: Vec<&Value> = match value {
        Value::Sequence(seq) => seq.iter().collect(),
        Value::Mapping(_) | Value::Tagged(_) => {
            return Err(CompileError::new(
                format!("`{key}` has a value that is not a scalar or list of scalars"),
                &[key],
            ))
        }
        v => vec![v],
    };
    if raw_values.is_empty() {
        return Err(CompileError::new(
            format!("`{key}` has an empty value list"),
            &[key],
        ));
    }
    let mut values = Vec::new();
    for v in raw_values {
        values.extend(compile_value(key, &m, keyword, v, placeholders)?);
    }
    Ok(finish_item(field, m.all, values))
}

fn finish_item(field: String, all: bool, values: Vec<ValueMatcher>) -> FieldItem {
    let mut item = FieldItem {
        at: FieldRef::new(&field),
        field,
        all,
        contains_any: None,
        needs_text: values.iter().any(ValueMatcher::needs_text),
        values,
        folded_literals: Vec::new(),
    };
    if all {
        return item;
    }
    // Fold plain ASCII `contains` literals into one automaton when there are several.
    let is_foldable = |v: &ValueMatcher| {
        matches!(v, ValueMatcher::Str(StrMatcher::Lit(Place::Contains, lit))
            if lit.case == Case::Ascii && !lit.text.is_empty())
    };
    if item.values.iter().filter(|v| is_foldable(v)).count() < 2 {
        return item;
    }
    let (folded, rest): (Vec<ValueMatcher>, Vec<ValueMatcher>) =
        item.values.iter().cloned().partition(is_foldable);
    let lits: Vec<String> = folded
        .iter()
        .filter_map(|v| match v {
            ValueMatcher::Str(StrMatcher::Lit(_, lit)) => Some(lit.text.clone()),
            _ => None,
        })
        .collect();
    if let Some(ac) = any_contains(&lits) {
        item.contains_any = Some(ac);
        item.folded_literals = lits.iter().map(|l| l.to_ascii_lowercase()).collect();
        item.values = rest;
    }
    item
}

fn compile_keywords(name: &str, list: &[&Value]) -> Result<FieldItem, CompileError> {
    let m = Mods::default();
    let mut values = Vec::new();
    for v in list {
        values.extend(compile_value(name, &m, true, v, &Placeholders::default())?);
    }
    Ok(finish_item(KEYWORD_FIELD.to_owned(), false, values))
}

fn compile_map(
    name: &str,
    map: &serde_norway::Mapping,
    placeholders: &Placeholders,
) -> Result<Vec<FieldItem>, CompileError> {
    if map.is_empty() {
        return Err(CompileError::new(
            format!("selection `{name}` is empty"),
            &[name],
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let key = key_text(k).ok_or_else(|| {
                CompileError::new(
                    format!("selection `{name}` has a key that is not text"),
                    &[name],
                )
            })?;
            compile_item(&key, v, placeholders)
        })
        .collect()
}

fn compile_selection(
    name: &str,
    value: &Value,
    placeholders: &Placeholders,
) -> Result<Selection, CompileError> {
    match value {
        Value::Mapping(map) => Ok(Selection {
            alternatives: vec![compile_map(name, map, placeholders)?],
        }),
        Value::Sequence(seq) => {
            if seq.is_empty() {
                return Err(CompileError::new(
                    format!("selection `{name}` is empty"),
                    &[name],
                ));
            }
            let mut alternatives = Vec::new();
            let mut keywords = Vec::new();
            for v in seq {
                match v {
                    Value::Mapping(map) => alternatives.push(compile_map(name, map, placeholders)?),
                    Value::Sequence(_) | Value::Tagged(_) => {
                        return Err(CompileError::new(
                            format!("selection `{name}` has a nested list"),
                            &[name],
                        ))
                    }
                    v => keywords.push(v),
                }
            }
            if !keywords.is_empty() {
                alternatives.push(vec![compile_keywords(name, &keywords)?]);
            }
            Ok(Selection { alternatives })
        }
        Value::Null => Err(CompileError::new(
            format!("selection `{name}` is empty"),
            &[name],
        )),
        Value::Tagged(_) => Err(CompileError::new(
            format!("selection `{name}` has an unsupported yaml tag"),
            &[name],
        )),
        v => Ok(Selection {
            alternatives: vec![vec![compile_keywords(name, &[v])?]],
        }),
    }
}

/// Compiles a `detection` mapping; `placeholders` resolve the `expand` modifier.
pub(crate) fn compile_detection(
    value: &Value,
    placeholders: &Placeholders,
) -> Result<Detection, CompileError> {
    let map = value
        .as_mapping()
        .ok_or_else(|| CompileError::new("detection must be a mapping", &["detection:"]))?;
    let mut names = Vec::new();
    let mut selections = Vec::new();
    let mut condition = None;
    for (k, v) in map {
        let name = key_text(k).ok_or_else(|| {
            CompileError::new("detection has a key that is not text", &["detection:"])
        })?;
        if name == "condition" {
            condition = Some(v);
            continue;
        }
        if name == "timeframe" {
            return Err(CompileError::new(
                "detection timeframe is not supported; use a correlation rule",
                &["timeframe:"],
            ));
        }
        selections.push(compile_selection(&name, v, placeholders)?);
        names.push(name);
    }
    let cond_at = ["condition:"];
    let condition = match condition {
        None => {
            return Err(CompileError::new(
                "detection has no condition",
                &["detection:"],
            ))
        }
        Some(Value::String(s)) => {
            parse_condition(s, &names).map_err(|e| CompileError::new(e, &cond_at))?
        }
        Some(Value::Sequence(list)) if !list.is_empty() => {
            let mut parts = Vec::new();
            for c in list {
                let s = c.as_str().ok_or_else(|| {
                    CompileError::new("condition list entries must be text", &cond_at)
                })?;
                parts.push(parse_condition(s, &names).map_err(|e| CompileError::new(e, &cond_at))?);
            }
            Expr::Or(parts)
        }
        Some(_) => return Err(CompileError::new("condition must be text", &cond_at)),
    };
    Ok(Detection {
        selections,
        condition,
    })
}
