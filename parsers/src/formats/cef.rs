//! ArcSight Common Event Format: `CEF:Version|Device Vendor|Device Product|Device Version|
//! Device Event Class ID|Name|Severity|Extension`.
//!
//! - The header is split on unescaped `|`; `\|` and `\\` are unescaped in header fields, any
//!   other backslash is kept as written. `CEF: 0|` (a space after the colon) is accepted.
//! - The extension is `key=value` pairs. A key is `[A-Za-z0-9_.\[\]-]+` directly followed by
//!   `=`; a value runs until the spaces before the next such key, so values may hold spaces
//!   (`msg=a b c act=blocked`). In values `\=`, `\\`, `\n` and `\r` are unescaped; any other
//!   backslash is kept as written. Values are trimmed of surrounding spaces. Text before the
//!   first key is skipped. At most [`MAX_PAIRS`] pairs are read (the rest of the line is
//!   ignored).
//! - Severity is kept as text; keys stay as the format writes them (`src`, `spt`, `cs1`, ...):
//!   parser definitions map them onto the event schema.

use super::{FormatError, Pairs};

/// Most extension pairs read from one record.
pub const MAX_PAIRS: usize = 1024;

/// One parsed CEF record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cef {
    /// CEF version (the number after `CEF:`).
    pub version: String,
    /// Device Vendor.
    pub vendor: String,
    /// Device Product.
    pub product: String,
    /// Device Version.
    pub device_version: String,
    /// Device Event Class ID (signature id).
    pub signature_id: String,
    /// Name.
    pub name: String,
    /// Severity as written (0-10, or Low/Medium/High/Very-High).
    pub severity: String,
    /// Extension key/value pairs, unescaped, in order; custom pairs (`cs1`, `cs1Label`) kept
    /// as written (use [`Cef::labelled`] to resolve them).
    pub extensions: Pairs,
}

impl Cef {
    /// Custom fields resolved by their labels: `cs1Label=Rule cs1=Block` gives `("Rule",
    /// "Block")`, for every `csN`/`cnN`/`cfpN`/`flexString`... pair that has a label.
    ///
    /// The custom families are `cs`, `cn`, `cfp`, `c6a`, `flexString`, `flexNumber`,
    /// `flexDate`, `deviceCustomString`, `deviceCustomNumber`, `deviceCustomFloatingPoint`,
    /// `deviceCustomIPv6Address` and `deviceCustomDate`, each followed by a number (any number:
    /// vendors go past the standard `cs6`). Pairs come in the order of the values; the first
    /// label of a key wins; a label wrapped in double quotes (CyberArk writes
    /// `cs1Label="Safe Name"`) loses the quotes; a value without a non-empty label is left
    /// out. Arbitrary `XLabel` keys outside these families are not resolved.
    pub fn labelled(&self) -> Pairs {
        labelled(&self.extensions)
    }
}

/// Families of ArcSight custom fields that carry a `...Label` companion.
const CUSTOM_FAMILIES: &[&str] = &[
    "cs",
    "cn",
    "cfp",
    "c6a",
    "flexString",
    "flexNumber",
    "flexDate",
    "deviceCustomString",
    "deviceCustomNumber",
    "deviceCustomFloatingPoint",
    "deviceCustomIPv6Address",
    "deviceCustomDate",
];

/// True when `key` is a custom field (`cs1`, `flexString2`, `deviceCustomDate1`, ...).
fn is_custom_key(key: &str) -> bool {
    CUSTOM_FAMILIES.iter().any(|family| {
        key.strip_prefix(family)
            .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Resolves custom fields by their labels (shared with LEEF 0, which uses CEF extensions).
pub(crate) fn labelled(pairs: &Pairs) -> Pairs {
    let labels: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| {
            let base = k.strip_suffix("Label")?;
            is_custom_key(base).then_some((base, v.as_str()))
        })
        .collect();
    if labels.is_empty() {
        return Vec::new();
    }
    pairs
        .iter()
        .filter(|(k, _)| is_custom_key(k))
        .filter_map(|(k, v)| {
            let (_, label) = labels.iter().find(|(base, _)| *base == k.as_str())?;
            let label = label.trim();
            let label = label
                .strip_prefix('"')
                .and_then(|l| l.strip_suffix('"'))
                .unwrap_or(label)
                .trim();
            (!label.is_empty()).then(|| (label.to_string(), v.clone()))
        })
        .collect()
}

/// Byte offset of `CEF:` in `text` when it starts a CEF record (at the start, or after a
/// syslog header inside a MSG).
///
/// The first `CEF:` followed by optional spaces, a version (digits and dots) and `|` counts,
/// whatever precedes it (`<14>CEF:0|...`, `Sep 19 08:26:10 host CEF:0|...`).
pub fn find(text: &str) -> Option<usize> {
    text.match_indices("CEF:")
        .map(|(i, _)| i)
        .find(|&i| looks_like_header(&text.as_bytes()[i + 4..]))
}

/// True when `rest` (after `CEF:` or `LEEF:`) is `[ ]*VERSION|`.
pub(crate) fn looks_like_header(rest: &[u8]) -> bool {
    let rest = trim_spaces_start(rest);
    let digits = rest
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .count();
    digits > 0 && digits <= 8 && rest.get(digits) == Some(&b'|')
}

fn trim_spaces_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ').count();
    &b[n..]
}

/// Splits off `count` header fields on unescaped `|` (unescaping `\|` and `\\`); returns them
/// and the rest after the last `|`, or `None` when there are fewer.
pub(crate) fn split_header(text: &str, count: usize) -> Option<(Vec<String>, &str)> {
    let bytes = text.as_bytes();
    let mut fields = Vec::with_capacity(count);
    let mut current = String::new();
    let mut start = 0;
    let mut i = 0;
    while fields.len() < count {
        i += bytes[i..].iter().position(|&b| b == b'|' || b == b'\\')?;
        if bytes[i] == b'|' {
            if current.is_empty() {
                fields.push(text[start..i].to_string());
            } else {
                current.push_str(&text[start..i]);
                fields.push(std::mem::take(&mut current));
            }
            i += 1;
            start = i;
        } else if matches!(bytes.get(i + 1), Some(b'|' | b'\\')) {
            // `\|` or `\\`: keep the second character.
            current.push_str(&text[start..i]);
            start = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    Some((fields, &text[start..]))
}

/// Parses a CEF record (`text` starts at `CEF:`).
///
/// Errors (`cef_header`): no `CEF:` at the start, a version that is not a number, or fewer
/// than the seven header fields.
pub fn parse(text: &str) -> Result<Cef, FormatError> {
    let rest = text
        .strip_prefix("CEF:")
        .ok_or_else(|| FormatError::new("cef_header", "missing cef: prefix"))?;
    let rest = rest.trim_start_matches(' ');
    let Some((mut fields, extension)) = split_header(rest, 7) else {
        return Err(FormatError::new("cef_header", "fewer than 7 header fields"));
    };
    let version = fields[0].trim();
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(FormatError::new("cef_header", "version is not a number"));
    }
    let version = version.to_string();
    let mut it = fields.drain(1..);
    let mut next = || it.next().unwrap_or_default();
    Ok(Cef {
        version,
        vendor: next(),
        product: next(),
        device_version: next(),
        signature_id: next(),
        name: next(),
        severity: next().trim().to_string(),
        extensions: extensions(extension),
    })
}

/// Bytes of an extension key.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']' | b'-')
}

/// Length of the key at the start of `b` when it is a key directly followed by `=`.
fn key_at(b: &[u8]) -> Option<usize> {
    let n = b.iter().take_while(|&&c| is_key_byte(c)).count();
    (n > 0 && b.get(n) == Some(&b'=')).then_some(n)
}

/// Parses CEF extension pairs (also LEEF version 0 attributes).
pub(crate) fn extensions(text: &str) -> Pairs {
    let text = text.trim_end_matches(['\r', '\n']);
    let bytes = text.as_bytes();
    let estimate = bytes.iter().filter(|&&b| b == b'=').count();
    let mut pairs = Vec::with_capacity(estimate.min(MAX_PAIRS));
    // Find the first key: at the start or after a space.
    let mut i = 0;
    let mut key_start = None;
    while i < bytes.len() {
        if (i == 0 || bytes[i - 1] == b' ') && key_at(&bytes[i..]).is_some() {
            key_start = Some(i);
            break;
        }
        i += 1;
    }
    let Some(mut k) = key_start else {
        return pairs;
    };
    while pairs.len() < MAX_PAIRS {
        let key_len = key_at(&bytes[k..]).unwrap_or(0);
        let value_start = k + key_len + 1;
        // Scan the value up to the spaces before the next key. Keys hold no backslash, so an
        // escaped `\=` can never end a key, and escapes need no special care here.
        let mut j = value_start;
        let mut next_key = None;
        let mut value_end = bytes.len();
        while let Some(space) = bytes[j..].iter().position(|&c| c == b' ') {
            j += space;
            let spaces = bytes[j..].iter().take_while(|&&c| c == b' ').count();
            if key_at(&bytes[j + spaces..]).is_some() {
                value_end = j;
                next_key = Some(j + spaces);
                break;
            }
            j += spaces;
        }
        let key = &text[k..k + key_len];
        let value = unescape_value(text[value_start.min(value_end)..value_end].trim_matches(' '));
        pairs.push((key.to_string(), value));
        match next_key {
            Some(n) => k = n,
            None => break,
        }
    }
    pairs
}

/// Unescapes `\=`, `\\`, `\n`, `\r` in an extension value; other backslashes stay.
fn unescape_value(v: &str) -> String {
    if !v.contains('\\') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('=') => out.push('='),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::formats::test_pairs as pairs;

    #[test]
    fn header_and_extensions() {
        let cef = parse("CEF:0|Security|threatmanager|1.0|100|worm stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232").unwrap();
        assert_eq!(cef.version, "0");
        assert_eq!(cef.vendor, "Security");
        assert_eq!(cef.product, "threatmanager");
        assert_eq!(cef.device_version, "1.0");
        assert_eq!(cef.signature_id, "100");
        assert_eq!(cef.name, "worm stopped");
        assert_eq!(cef.severity, "10");
        assert_eq!(
            cef.extensions,
            pairs(&[("src", "10.0.0.1"), ("dst", "2.1.2.2"), ("spt", "1232")])
        );
    }

    #[test]
    fn escaped_pipes_and_backslashes_in_header() {
        let cef = parse(r"CEF:0|Ven\|dor|Pro\\duct|1|sig|a \ b|High|").unwrap();
        assert_eq!(cef.vendor, "Ven|dor");
        assert_eq!(cef.product, r"Pro\duct");
        assert_eq!(cef.name, r"a \ b");
        assert_eq!(cef.severity, "High");
        assert!(cef.extensions.is_empty());
    }

    #[test]
    fn values_hold_spaces_equals_and_escapes() {
        let cef = parse(
            r"CEF:0|V|P|1|s|n|5|msg=a b c act=blocked q=x\=y path=C:\\tmp m=l1\nl2 url=/a?b=c",
        )
        .unwrap();
        assert_eq!(
            cef.extensions,
            pairs(&[
                ("msg", "a b c"),
                ("act", "blocked"),
                ("q", "x=y"),
                ("path", r"C:\tmp"),
                ("m", "l1\nl2"),
                ("url", "/a?b=c"),
            ])
        );
    }

    #[test]
    fn empty_values_and_ipv6() {
        let cef = parse("CEF:0|V|P|1|s|n|5|dhost= duser= c6a3=2001:cdba::3257:9652 x=").unwrap();
        assert_eq!(
            cef.extensions,
            pairs(&[
                ("dhost", ""),
                ("duser", ""),
                ("c6a3", "2001:cdba::3257:9652"),
                ("x", "")
            ])
        );
    }

    #[test]
    fn backslash_space_does_not_hide_next_key() {
        let cef = parse(r"CEF:0|V|P|1|s|n|5|act=blocked a \ dst=1.1.1.1").unwrap();
        assert_eq!(
            cef.extensions,
            pairs(&[("act", r"blocked a \"), ("dst", "1.1.1.1")])
        );
    }

    #[test]
    fn labels_resolve_custom_fields() {
        let cef = parse(
            "CEF:0|V|P|1|s|n|5|cs1Label=Rule cs1=Block cn1=7 cn1Label=\"Session Id\" cs2=x flexString1Label=Flags flexString1=0x8000 deviceCustomDate1Label=Seen deviceCustomDate1=Feb 06 2015 custom=a customLabel=b",
        )
        .unwrap();
        assert_eq!(
            cef.labelled(),
            pairs(&[
                ("Rule", "Block"),
                ("Session Id", "7"),
                ("Flags", "0x8000"),
                ("Seen", "Feb 06 2015"),
            ])
        );
    }

    #[test]
    fn missing_header_fields_are_an_error() {
        for text in [
            "CEF:0|V|P|1|s|n",
            "CEF:",
            "CEF:x|V|P|1|s|n|5|",
            "not cef",
            "",
        ] {
            assert_eq!(parse(text).unwrap_err().kind, "cef_header", "{text}");
        }
    }

    #[test]
    fn find_after_syslog_header() {
        let line = "<14>Apr  7 10:10:10 host CEF: 0|PAN|PAN-OS|6.1|url|THREAT|1|src=1.2.3.4";
        let at = find(line).unwrap();
        let cef = parse(&line[at..]).unwrap();
        assert_eq!(cef.version, "0");
        assert_eq!(cef.vendor, "PAN");
        assert_eq!(find("xCEF:abc CEF:1|a"), Some(9));
        assert_eq!(find("no record here"), None);
        assert_eq!(find("CEF:"), None);
    }

    #[test]
    fn unicode_and_junk_before_first_key() {
        let cef = parse("CEF:0|Vendør|製品|1|s|n|5| junk words msg=héllo wörld 日本=x").unwrap();
        assert_eq!(cef.vendor, "Vendør");
        assert_eq!(cef.product, "製品");
        assert_eq!(cef.extensions, pairs(&[("msg", "héllo wörld 日本=x")]));
    }

    #[test]
    fn very_long_input_is_bounded() {
        let mut line = String::from("CEF:0|V|P|1|s|n|5|");
        for i in 0..5000 {
            line.push_str(&format!("k{i}=v{i} "));
        }
        let cef = parse(&line).unwrap();
        assert_eq!(cef.extensions.len(), MAX_PAIRS);
        let long = format!("CEF:0|V|P|1|s|n|5|msg={}", "a ".repeat(100_000));
        assert_eq!(parse(&long).unwrap().extensions.len(), 1);
    }
}
