//! `key=value` text: FortiGate, Linux netfilter, many appliances.
//!
//! - Pairs are separated by `pair_separator`, or by any run of spaces and tabs when it is
//!   `None`. With an explicit separator, spaces around keys and unquoted values are trimmed
//!   (`a=1, b=2`).
//! - A value may be double-quoted: the quotes are removed and `\"` and `\\` unescaped (any
//!   other backslash is kept); the value may then hold separators. An unterminated quote runs
//!   to the end of the text. Text between a closing quote and the next separator is dropped.
//! - An unquoted value ends at the next pair separator, so it may hold the key/value separator
//!   (`url=/a?b=c`).
//! - Text that is not a pair (no key/value separator, or an empty key) is skipped; repeated
//!   keys are all kept in order. At most [`MAX_PAIRS`] pairs.

use super::Pairs;

/// Most pairs read from one text.
pub const MAX_PAIRS: usize = 1024;

/// How the text is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvOptions {
    /// Between pairs (whitespace by default: any run of spaces or tabs).
    pub pair_separator: Option<char>,
    /// Between key and value (`=` by default).
    pub kv_separator: char,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            pair_separator: None,
            kv_separator: '=',
        }
    }
}

/// Splits `text` into pairs. Values may be double-quoted (quotes removed, `\"` unescaped);
/// repeated keys are all kept in order; text that is not a pair is skipped. Never fails.
pub fn parse(text: &str, options: &KvOptions) -> Pairs {
    let is_sep = |c: char| match options.pair_separator {
        Some(s) => c == s,
        None => c == ' ' || c == '\t',
    };
    let trim = options.pair_separator.is_some();
    let kv = options.kv_separator;
    let mut pairs = Vec::new();
    let mut rest = text.trim_end_matches(['\r', '\n']);
    while !rest.is_empty() && pairs.len() < MAX_PAIRS {
        rest = rest.trim_start_matches(is_sep);
        if trim {
            rest = rest.trim_start_matches([' ', '\t']);
        }
        // The key: up to the kv separator, unless a pair separator comes first.
        let Some(key_end) = rest.find(|c: char| c == kv || is_sep(c)) else {
            break;
        };
        let key = &rest[..key_end];
        let after = &rest[key_end..];
        if !after.starts_with(kv) {
            // A word without the key/value separator: junk.
            rest = after;
            continue;
        }
        let key = if trim {
            key.trim_matches([' ', '\t'])
        } else {
            key
        };
        let mut value_text = &after[kv.len_utf8()..];
        if trim {
            value_text = value_text.trim_start_matches([' ', '\t']);
        }
        let (value, next) = if let Some(quoted) = value_text.strip_prefix('"') {
            let (value, after_quote) = quoted_value(quoted);
            let skip = after_quote.find(is_sep).unwrap_or(after_quote.len());
            (value, &after_quote[skip..])
        } else {
            let end = value_text.find(is_sep).unwrap_or(value_text.len());
            let v = &value_text[..end];
            let v = if trim {
                v.trim_end_matches([' ', '\t'])
            } else {
                v
            };
            (v.to_string(), &value_text[end..])
        };
        if !key.is_empty() {
            pairs.push((key.to_string(), value));
        }
        rest = next;
    }
    pairs
}

/// Reads a quoted value (after its opening quote): the unescaped value and the text after the
/// closing quote (empty when unterminated).
fn quoted_value(text: &str) -> (String, &str) {
    let mut out = String::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if matches!(bytes.get(i + 1), Some(b'"' | b'\\')) => {
                out.push_str(&text[start..i]);
                start = i + 1;
                i += 2;
            }
            b'"' => {
                out.push_str(&text[start..i]);
                return (out, &text[i + 1..]);
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[start..]);
    (out, "")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::formats::test_pairs as pairs;

    fn kv(text: &str) -> Pairs {
        parse(text, &KvOptions::default())
    }

    #[test]
    fn fortigate_line() {
        assert_eq!(
            kv(
                r#"date=2024-03-10 time=08:15:30 devname="FG 100" srcip=10.0.0.1 dstip=2001:db8::1 action="deny" msg="say \"hi\" \\ ok""#
            ),
            pairs(&[
                ("date", "2024-03-10"),
                ("time", "08:15:30"),
                ("devname", "FG 100"),
                ("srcip", "10.0.0.1"),
                ("dstip", "2001:db8::1"),
                ("action", "deny"),
                ("msg", r#"say "hi" \ ok"#),
            ])
        );
    }

    #[test]
    fn junk_repeats_empty_and_equals() {
        assert_eq!(
            kv("IN=eth0 OUT= junk SRC=1.2.3.4 =x SRC=5.6.7.8 url=/a?b=c\tDF  ID=1\r\n"),
            pairs(&[
                ("IN", "eth0"),
                ("OUT", ""),
                ("SRC", "1.2.3.4"),
                ("SRC", "5.6.7.8"),
                ("url", "/a?b=c"),
                ("ID", "1"),
            ])
        );
    }

    #[test]
    fn custom_separators() {
        let options = KvOptions {
            pair_separator: Some(','),
            kv_separator: ':',
        };
        assert_eq!(
            parse(r#"a: 1, b:two words ,c:"x,y", d"#, &options),
            pairs(&[("a", "1"), ("b", "two words"), ("c", "x,y")])
        );
    }

    #[test]
    fn unterminated_quote_and_unicode() {
        assert_eq!(
            kv(r#"name=日本 msg="open ended"#),
            pairs(&[("name", "日本"), ("msg", "open ended")])
        );
        assert_eq!(kv(r#"a="x"junk b=1"#), pairs(&[("a", "x"), ("b", "1")]));
        assert!(kv("").is_empty());
        assert!(kv("   ").is_empty());
    }

    #[test]
    fn very_long_input_is_bounded() {
        let line = "k=v ".repeat(10_000);
        assert_eq!(kv(&line).len(), MAX_PAIRS);
        let junk = "x".repeat(1_000_000);
        assert!(kv(&junk).is_empty());
    }
}
