//! Value matchers: one compiled test of one field value (Sigma's value plus its modifiers).
//!
//! String values follow Sigma: case-insensitive unless `cased`, `*` and `?` wildcards, `\` escaping
//! `*`, `?` and `\`. ASCII patterns compare ASCII case-insensitively (the same semantics the
//! literal prefilter uses); patterns with non-ASCII letters compare Unicode-lowercased text.
//! Patterns that keep a wildcard in the middle compile to one anchored regex.

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};
use vigil_parsers::event::{Event, FieldValue};

pub(crate) use crate::net::Cidr;

/// How a literal compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Byte-exact (`cased` modifier).
    Sensitive,
    /// ASCII case-insensitive (the pattern is ASCII).
    Ascii,
    /// Unicode lowercase on both sides (the pattern has non-ASCII characters; stored lowercased).
    Unicode,
}

/// A literal string with its comparison mode.
#[derive(Debug, Clone)]
pub(crate) struct Lit {
    pub(crate) text: String,
    pub(crate) case: Case,
    /// For ASCII `contains`: a compiled searcher (falls back to a scan when absent).
    finder: Option<AhoCorasick>,
}

impl Lit {
    fn new(text: String, cased: bool) -> Lit {
        if cased {
            Lit {
                text,
                case: Case::Sensitive,
                finder: None,
            }
        } else if text.is_ascii() {
            Lit {
                text,
                case: Case::Ascii,
                finder: None,
            }
        } else {
            Lit {
                text: text.to_lowercase(),
                case: Case::Unicode,
                finder: None,
            }
        }
    }
}

/// Where a literal must sit in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// A compiled string pattern.
#[derive(Debug, Clone)]
pub(crate) enum StrMatcher {
    /// `*`: any present value.
    Any,
    /// A literal at a place.
    Lit(Place, Lit),
    /// A pattern whose only inner wildcards are `*`, as literal parts found in order (no regex).
    Seq(Seq),
    /// Any other pattern with inner wildcards (`?`, or non-ASCII text compared without `cased`),
    /// as an anchored regex.
    Glob(Regex),
}

/// A `*`-only wildcard pattern: literal parts that must appear in order, the first at the start
/// unless the pattern starts with `*`, the last at the end unless it ends with `*`. Compared
/// ASCII case-insensitively (the parts are ASCII) or, with `cased`, byte-exactly.
#[derive(Debug, Clone)]
pub(crate) struct Seq {
    lead: bool,
    trail: bool,
    /// At least two non-empty parts.
    parts: Vec<String>,
    cased: bool,
}

/// Position of the first occurrence of `p` in `v` at or after `from`.
fn find_from(v: &[u8], p: &[u8], from: usize, cased: bool) -> Option<usize> {
    let hay = v.get(from..)?;
    let Some(&first) = p.first() else {
        return Some(from);
    };
    if hay.len() < p.len() {
        return None;
    }
    let last = hay.len() - p.len();
    let at = if cased {
        (0..=last).find(|&i| hay[i] == first && hay[i..i + p.len()] == *p)
    } else {
        let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
        (0..=last).find(|&i| {
            let b = hay[i];
            (b == lo || b == up) && hay[i..i + p.len()].eq_ignore_ascii_case(p)
        })
    };
    at.map(|i| i + from)
}

impl Seq {
    fn matches(&self, v: &str) -> bool {
        let v = v.as_bytes();
        let eq = |a: &[u8], b: &[u8]| {
            if self.cased {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let n = self.parts.len();
        let mut pos = 0usize;
        for (i, part) in self.parts.iter().enumerate() {
            let p = part.as_bytes();
            if i == 0 && !self.lead {
                if v.len() < p.len() || !eq(&v[..p.len()], p) {
                    return false;
                }
                pos = p.len();
            } else if i + 1 == n && !self.trail {
                return v.len() >= pos + p.len() && eq(&v[v.len() - p.len()..], p);
            } else {
                match find_from(v, p, pos, self.cased) {
                    Some(at) => pos = at + p.len(),
                    None => return false,
                }
            }
        }
        true
    }

    /// The longest ASCII part, lowercased: every matching value contains it.
    fn required_literal(&self) -> Option<String> {
        self.parts
            .iter()
            .filter(|p| p.is_ascii())
            .max_by_key(|p| p.len())
            .map(|p| p.to_ascii_lowercase())
    }
}

fn ascii_prefix(v: &[u8], p: &[u8]) -> bool {
    v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p)
}

fn ascii_suffix(v: &[u8], p: &[u8]) -> bool {
    v.len() >= p.len() && v[v.len() - p.len()..].eq_ignore_ascii_case(p)
}

fn ascii_contains(v: &[u8], p: &[u8]) -> bool {
    p.is_empty() || v.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
}

impl StrMatcher {
    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            StrMatcher::Any => true,
            StrMatcher::Seq(seq) => seq.matches(v),
            StrMatcher::Glob(re) => re.is_match(v),
            StrMatcher::Lit(place, lit) => match lit.case {
                Case::Sensitive => place_match(*place, v, &lit.text),
                Case::Unicode => place_match(*place, &v.to_lowercase(), &lit.text),
                Case::Ascii => {
                    let (v, p) = (v.as_bytes(), lit.text.as_bytes());
                    match place {
                        Place::Exact => v.eq_ignore_ascii_case(p),
                        Place::Prefix => ascii_prefix(v, p),
                        Place::Suffix => ascii_suffix(v, p),
                        Place::Contains => match &lit.finder {
                            Some(ac) => ac.is_match(v),
                            None => ascii_contains(v, p),
                        },
                    }
                }
            },
        }
    }
}

fn place_match(place: Place, v: &str, p: &str) -> bool {
    match place {
        Place::Exact => v == p,
        Place::Prefix => v.starts_with(p),
        Place::Suffix => v.ends_with(p),
        Place::Contains => v.contains(p),
    }
}

/// A small stack buffer for formatting numbers and addresses without allocating.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Calls `f` with the value's text as rules compare it ([`FieldValue::as_text`]), formatting
/// integers and IP addresses on the stack instead of allocating a `String`.
pub(crate) fn with_text<R>(v: &FieldValue<'_>, f: impl FnOnce(&str) -> R) -> R {
    use std::fmt::Write;
    let mut st = StackText {
        buf: [0; 64],
        len: 0,
    };
    let written = match v {
        FieldValue::Str(s) => return f(s),
        FieldValue::Int(i) => write!(st, "{i}"),
        // IPv4 (nearly every address) without the formatting machinery.
        FieldValue::Ip(ip @ std::net::IpAddr::V4(_)) => {
            return f(&vigil_parsers::event::ip_text(*ip));
        }
        FieldValue::Ip(ip) => write!(st, "{ip}"),
        FieldValue::Time(_) => Err(std::fmt::Error),
    };
    match (written, st.buf.get(..st.len).map(std::str::from_utf8)) {
        (Ok(()), Some(Ok(text))) => f(text),
        _ => f(&v.as_text()),
    }
}

/// A piece of a Sigma string pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(char),
    Star,
    One,
}

/// Splits a Sigma string into literal characters and wildcards (`\*`, `\?`, `\\` escape).
pub(crate) fn parse_glob(s: &str) -> Vec<Tok> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::One),
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Tok::Lit(n));
                }
                _ => out.push(Tok::Lit('\\')),
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    out
}

/// Compiles wildcard tokens into the cheapest matcher that has the same meaning.
pub(crate) fn compile_glob(toks: &[Tok], cased: bool) -> Result<StrMatcher, String> {
    let start = toks.iter().take_while(|t| **t == Tok::Star).count();
    let rest = &toks[start..];
    let trailing = rest.iter().rev().take_while(|t| **t == Tok::Star).count();
    let mid = &rest[..rest.len() - trailing];
    let (lead, trail) = (start > 0, trailing > 0);
    if mid.iter().all(|t| matches!(t, Tok::Lit(_))) {
        let text: String = mid
            .iter()
            .filter_map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        if text.is_empty() && (lead || trail) {
            return Ok(StrMatcher::Any);
        }
        let place = match (lead, trail) {
            (true, true) => Place::Contains,
            (true, false) => Place::Suffix,
            (false, true) => Place::Prefix,
            (false, false) => Place::Exact,
        };
        let mut lit = Lit::new(text, cased);
        if place == Place::Contains && lit.case == Case::Ascii && !lit.text.is_empty() {
            lit.finder = any_contains(std::slice::from_ref(&lit.text));
        }
        return Ok(StrMatcher::Lit(place, lit));
    }
    if !toks.contains(&Tok::One) {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = String::new();
        for t in rest {
            match t {
                Tok::Lit(c) => cur.push(*c),
                _ => {
                    if !cur.is_empty() {
                        parts.push(std::mem::take(&mut cur));
                    }
                }
            }
        }
        if !cur.is_empty() {
            parts.push(cur);
        }
        if parts.len() >= 2 && (cased || parts.iter().all(|p| p.is_ascii())) {
            return Ok(StrMatcher::Seq(Seq {
                lead,
                trail,
                parts,
                cased,
            }));
        }
    }
    Regex::new(&glob_regex(toks, cased))
        .map_err(|e| format!("wildcard pattern does not compile: {e}"))
        .map(StrMatcher::Glob)
}

/// A numeric comparison (`gt`, `gte`, `lt`, `lte`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One compiled test of a field value.
#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    /// YAML `null`: the field is absent.
    Null,
    /// `exists`: presence (true) or absence (false).
    Exists(bool),
    /// A Sigma string (with wildcards and string modifiers).
    Str(StrMatcher),
    /// `re`: an unanchored regex search.
    Re(Regex),
    /// `cidr`.
    Cidr(Cidr),
    /// `gt`/`gte`/`lt`/`lte`.
    Num(NumOp, f64),
    /// `fieldref`: equal (ASCII case-insensitively, or exactly with `cased`) to another field of
    /// the same event.
    FieldRef(String, bool),
    /// `refset`: the value is in a reference set.
    RefSet(RefSet),
}

/// A reference set, resolved when the rule compiled.
#[derive(Debug, Clone)]
pub(crate) struct RefSet {
    pub(crate) data: std::sync::Arc<dyn crate::reference::ReferenceLookup>,
    pub(crate) id: usize,
}

impl ValueMatcher {
    /// Whether [`ValueMatcher::matches`] reads the value's text (the others read the value).
    pub(crate) fn needs_text(&self) -> bool {
        match self {
            ValueMatcher::FieldRef(..) | ValueMatcher::Str(_) | ValueMatcher::Re(_) => true,
            ValueMatcher::Null
            | ValueMatcher::RefSet(_)
            | ValueMatcher::Exists(_)
            | ValueMatcher::Cidr(_)
            | ValueMatcher::Num(..) => false,
        }
    }

    pub(crate) fn matches(
        &self,
        event: &Event,
        val: Option<&FieldValue<'_>>,
        text: Option<&str>,
    ) -> bool {
        match self {
            ValueMatcher::FieldRef(other, cased) => {
                let Some(t) = text else { return false };
                event.get(other).is_some_and(|o| {
                    let o = o.as_text();
                    if *cased {
                        o == t
                    } else {
                        o.eq_ignore_ascii_case(t)
                    }
                })
            }
            ValueMatcher::Null => val.is_none(),
            ValueMatcher::RefSet(r) => val.is_some_and(|v| r.data.contains(r.id, v)),
            ValueMatcher::Exists(want) => val.is_some() == *want,
            ValueMatcher::Str(m) => text.is_some_and(|t| m.matches(t)),
            ValueMatcher::Re(re) => text.is_some_and(|t| re.is_match(t)),
            ValueMatcher::Cidr(net) => {
                let ip = match val {
                    Some(FieldValue::Ip(ip)) => Some(*ip),
                    Some(FieldValue::Str(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                ip.is_some_and(|ip| net.contains(ip))
            }
            ValueMatcher::Num(op, want) => {
                let have = match val {
                    #[allow(clippy::cast_precision_loss)]
                    Some(FieldValue::Int(i)) => Some(*i as f64),
                    Some(FieldValue::Str(s)) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                have.is_some_and(|h| match op {
                    NumOp::Gt => h > *want,
                    NumOp::Gte => h >= *want,
                    NumOp::Lt => h < *want,
                    NumOp::Lte => h <= *want,
                })
            }
        }
    }

    /// The ASCII literal (lowercased) every matching value must contain, if there is one.
    pub(crate) fn required_literal(&self) -> Option<String> {
        match self {
            ValueMatcher::Str(StrMatcher::Seq(seq)) => seq.required_literal(),
            ValueMatcher::Str(StrMatcher::Lit(_, lit))
                if lit.case != Case::Unicode && !lit.text.is_empty() && lit.text.is_ascii() =>
            {
                Some(lit.text.to_ascii_lowercase())
            }
            _ => None,
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The three base64 forms of `value` at byte offsets 0, 1 and 2 of an encoded stream, trimmed
/// to the characters that do not depend on the surrounding bytes (Sigma's `base64offset`).
pub(crate) fn base64_offsets(v: &[u8]) -> Vec<String> {
    (0..3usize)
        .map(|i| {
            let mut data = vec![b' '; i];
            data.extend_from_slice(v);
            let enc = base64(&data);
            let start = [0, 2, 3][i];
            let cut = [0, 3, 2][(v.len() + i) % 3];
            let end = enc.len().saturating_sub(cut);
            enc.get(start..end.max(start)).unwrap_or("").to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Compiles a regex for `re` with its `i`, `m`, `s` flags.
pub(crate) fn compile_regex(pattern: &str, i: bool, m: bool, s: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(i)
        .multi_line(m)
        .dot_matches_new_line(s)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!(
                "regex {pattern:?} does not compile: {}",
                last.trim().to_lowercase()
            )
        })
}

/// One automaton for the ASCII `contains` literals of a value list (any of them).
pub(crate) fn any_contains(lits: &[String]) -> Option<AhoCorasick> {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(lits)
        .ok()
}

/// The anchored regex a Sigma wildcard pattern means: `*` any run, `?` one character, the rest
/// literal; case-insensitive unless `cased`.
fn glob_regex(toks: &[Tok], cased: bool) -> String {
    let mut re = String::from(if cased { "(?s)^" } else { "(?si)^" });
    let mut buf = [0u8; 4];
    for t in toks {
        match t {
            Tok::Star => re.push_str(".*"),
            Tok::One => re.push('.'),
            Tok::Lit(c) => re.push_str(&regex::escape(c.encode_utf8(&mut buf))),
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn m(pat: &str) -> StrMatcher {
        compile_glob(&parse_glob(pat), false).unwrap_or(StrMatcher::Any)
    }

    #[test]
    fn plain_strings_are_case_insensitive_and_exact() {
        assert!(m("Admin").matches("ADMIN"));
        assert!(!m("Admin").matches("administrator"));
        assert!(m("Ärger").matches("ärger"));
        assert!(!m("").matches("x"));
        assert!(m("").matches(""));
    }

    #[test]
    fn wildcards_match_and_escapes_are_literal() {
        assert!(m("adm*").matches("Administrator"));
        assert!(m("*trator").matches("administrator"));
        assert!(m("*nist*").matches("administrator"));
        assert!(m("a?min").matches("ADMIN"));
        assert!(!m("a?min").matches("aamin1"));
        assert!(m("a*n*r").matches("administrator"));
        assert!(m("*").matches(""));
        assert!(m("a\\*b").matches("A*B"));
        assert!(!m("a\\*b").matches("axb"));
        assert!(m("a\\?").matches("a?"));
        assert!(!m("a\\?").matches("ab"));
        assert!(m("c:\\\\win*").matches("C:\\Windows"));
        assert!(m("c:\\win*").matches("C:\\Windows"));
        assert!(m("line1*line2").matches("LINE1\nline2"));
    }

    #[test]
    fn base64_forms_match_known_encodings() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"f"), "Zg==");
        // pySigma's documented example for base64offset of `/bin/bash`.
        assert_eq!(
            base64_offsets(b"/bin/bash"),
            vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
    }

    #[test]
    fn cased_literals_compare_exactly() {
        let c = compile_glob(&parse_glob("*Admin*"), true).unwrap_or(StrMatcher::Any);
        assert!(c.matches("xAdminx"));
        assert!(!c.matches("xadminx"));
    }

    #[test]
    fn cidr_prefixes_match_v4_v6_and_mapped_addresses() {
        let v4 = Cidr::parse("10.1.0.0/16").unwrap_or(Cidr::V4(1, 1));
        assert!(v4.contains("10.1.200.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!v4.contains("10.2.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(v4.contains(
            "::ffff:10.1.2.3"
                .parse()
                .unwrap_or(IpAddr::from([0, 0, 0, 0]))
        ));
        let v6 = Cidr::parse("2001:db8::/32").unwrap_or(Cidr::V4(1, 1));
        assert!(v6.contains(
            "2001:db8:ffff::1"
                .parse()
                .unwrap_or(IpAddr::from([0, 0, 0, 0]))
        ));
        assert!(!v6.contains("2001:db9::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!v6.contains("10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        let all = Cidr::parse("0.0.0.0/0").unwrap_or(Cidr::V4(1, 1));
        assert!(all.contains("8.8.8.8".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        let host = Cidr::parse("192.0.2.1").unwrap_or(Cidr::V4(1, 1));
        assert!(host.contains("192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!host.contains("192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        for bad in ["10.0.0.0/33", "x/8", "2001:db8::/129", "10.0.0.0/-1", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod seq_tests {
    use super::*;
    use std::net::IpAddr;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
    }

    /// The regex the pattern compiled to before `Seq` existed: the reference semantics.
    fn reference(toks: &[Tok], cased: bool) -> Regex {
        let re = glob_regex(toks, cased);
        Regex::new(&re).unwrap_or_else(|e| panic!("{re}: {e}"))
    }

    #[test]
    fn star_patterns_compile_to_seq_and_agree_with_the_regex() {
        const ALPHA: &[&str] = &["a", "B", "ab", "*", "*", "-", " ", "\n", "é"];
        let mut rng = Lcg(11);
        let mut seqs = 0;
        for _ in 0..20_000 {
            let pat: String = (0..1 + rng.next() % 7)
                .map(|_| ALPHA[rng.next() % ALPHA.len()])
                .collect();
            let value: String = (0..rng.next() % 9)
                .map(|_| ["a", "A", "b", "B", "-", " ", "\n", "É", "é", "x"][rng.next() % 10])
                .collect();
            for cased in [false, true] {
                let toks = parse_glob(&pat);
                let Ok(m) = compile_glob(&toks, cased) else {
                    panic!("{pat:?} does not compile");
                };
                if matches!(m, StrMatcher::Seq(_)) {
                    seqs += 1;
                    // Non-ASCII letters only differ by case under `cased`; ASCII-only patterns
                    // compare ASCII case-insensitively, as literals do.
                    let want = reference(&toks, cased).is_match(&value);
                    assert_eq!(
                        m.matches(&value),
                        want,
                        "{pat:?} cased={cased} on {value:?}"
                    );
                }
            }
        }
        assert!(seqs > 1000, "only {seqs} seq patterns");
    }

    #[test]
    fn seq_literal_is_required() {
        let toks = parse_glob("ping -c 2 *; grep * /proc/net/arp >/tmp/gx");
        let m = compile_glob(&toks, false).unwrap_or(StrMatcher::Any);
        assert!(matches!(m, StrMatcher::Seq(_)));
        let v = ValueMatcher::Str(m);
        assert_eq!(
            v.required_literal().as_deref(),
            Some(" /proc/net/arp >/tmp/gx")
        );
        let q = compile_glob(&parse_glob("a?b*c"), false).unwrap_or(StrMatcher::Any);
        assert!(matches!(q, StrMatcher::Glob(_)));
    }

    #[test]
    fn with_text_formats_like_as_text() {
        let values = [
            FieldValue::Str("x"),
            FieldValue::Int(-42),
            FieldValue::Int(i64::MIN),
            FieldValue::Ip("203.0.113.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))),
            FieldValue::Ip(
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                    .parse()
                    .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            ),
        ];
        for v in values {
            assert_eq!(with_text(&v, str::to_owned), v.as_text());
        }
    }
}
