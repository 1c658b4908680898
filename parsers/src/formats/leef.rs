//! IBM Log Event Extended Format: `LEEF:1.0|Vendor|Product|Version|EventID|attrs` (tab
//! separated), and `LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attrs`.
//!
//! - Header fields are split on unescaped `|` (`\|` and `\\` unescaped, as in CEF).
//! - LEEF 2.0: the sixth header field is the attribute delimiter when it is one character
//!   (`^`, a literal TAB), or a hex code `xHH` / `0xHH` (up to four hex digits: `x09`,
//!   `0x5E`), or empty (TAB). Without it (`...|EventID| src=...`) the delimiter is TAB.
//! - LEEF 1.0: attributes are TAB separated.
//! - LEEF 0 (not in the IBM spec; Imperva Incapsula writes it) has CEF-style
//!   space-separated extensions and is parsed with the CEF extension rules; its delimiter is
//!   reported as a space.
//! - Attributes: `key=value`, split at the first `=` (a value may hold more `=`); the key is
//!   trimmed, the value kept as written (no escapes decoded); a piece without `=` or with an
//!   empty key is skipped. At most [`MAX_PAIRS`] attributes.
//! - `devTime` / `devTimeFormat` are ordinary attributes; [`leef_time`] and [`leef_time_at`]
//!   interpret them for the definition layer.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};

use super::{cef, FormatError, Pairs};

/// Most attributes read from one record.
pub const MAX_PAIRS: usize = 1024;

/// One parsed LEEF record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leef {
    /// `1.0` or `2.0`.
    pub version: String,
    /// Vendor.
    pub vendor: String,
    /// Product.
    pub product: String,
    /// Product version.
    pub product_version: String,
    /// Event ID.
    pub event_id: String,
    /// The attribute delimiter in use (tab for 1.0 unless given).
    pub delimiter: char,
    /// Attributes in order.
    pub attributes: Pairs,
}

impl Leef {
    /// Custom fields resolved by their labels, with the CEF rules ([`cef::Cef::labelled`]):
    /// LEEF 0 records (and some 2.0 senders) carry `cs1`/`cs1Label` pairs.
    pub fn labelled(&self) -> Pairs {
        cef::labelled(&self.attributes)
    }
}

/// Byte offset of `LEEF:` in `text` when it starts a LEEF record.
///
/// The first `LEEF:` followed by optional spaces, a version (digits and dots) and `|` counts,
/// whatever precedes it (a syslog header, `<13>`, ...).
pub fn find(text: &str) -> Option<usize> {
    text.match_indices("LEEF:")
        .map(|(i, _)| i)
        .find(|&i| cef::looks_like_header(&text.as_bytes()[i + 5..]))
}

/// Parses a LEEF record (`text` starts at `LEEF:`).
///
/// Errors (`leef_header`): no `LEEF:` at the start, a version that is not a number, or fewer
/// than the five header fields.
pub fn parse(text: &str) -> Result<Leef, FormatError> {
    let rest = text
        .strip_prefix("LEEF:")
        .ok_or_else(|| FormatError::new("leef_header", "missing leef: prefix"))?;
    let rest = rest.trim_start_matches(' ');
    let Some((fields, attrs)) = cef::split_header(rest, 5) else {
        return Err(FormatError::new(
            "leef_header",
            "fewer than 5 header fields",
        ));
    };
    let [version, vendor, product, product_version, event_id] = <[String; 5]>::try_from(fields)
        .map_err(|_| FormatError::new("leef_header", "fewer than 5 header fields"))?;
    let version = version.trim().to_string();
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(FormatError::new("leef_header", "version is not a number"));
    }
    let attrs = attrs.trim_end_matches(['\r', '\n']);
    let mut leef = Leef {
        version,
        vendor,
        product,
        product_version,
        event_id,
        delimiter: '\t',
        attributes: Vec::new(),
    };
    let major = leef.version.split('.').next().unwrap_or_default();
    if major.bytes().all(|b| b == b'0') {
        leef.delimiter = ' ';
        leef.attributes = cef::extensions(attrs);
        return Ok(leef);
    }
    let mut attrs = attrs;
    if major != "1" {
        if let Some((spec, after)) = attrs.split_once('|') {
            if let Some(delimiter) = delimiter_spec(spec) {
                leef.delimiter = delimiter;
                attrs = after;
            }
        }
    }
    leef.attributes = attributes(attrs, leef.delimiter);
    Ok(leef)
}

/// Reads a LEEF 2.0 delimiter field: one character, `xHH`/`0xHH`, or empty (TAB).
fn delimiter_spec(spec: &str) -> Option<char> {
    let mut chars = spec.chars();
    match (chars.next(), chars.next()) {
        (None, _) => return Some('\t'),
        (Some(c), None) => return Some(c),
        _ => {}
    }
    let hex = spec
        .strip_prefix("0x")
        .or_else(|| spec.strip_prefix("0X"))
        .or_else(|| spec.strip_prefix('x'))
        .or_else(|| spec.strip_prefix('X'))?;
    if hex.is_empty() || hex.len() > 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
}

/// Splits `key=value` attributes on `delimiter`.
fn attributes(text: &str, delimiter: char) -> Pairs {
    text.split(delimiter)
        .filter_map(|piece| {
            let (key, value) = piece.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .take(MAX_PAIRS)
        .collect()
}

/// Reads a LEEF `devTime` as [`leef_time_at`] does, with the current time as the reference
/// for year-less values. Prefer [`leef_time_at`] where the clock must be injected.
pub fn leef_time(value: &str, format: Option<&str>) -> Option<DateTime<FixedOffset>> {
    leef_time_at(value, format, Utc::now())
}

/// Default formats tried, in order, when no `devTimeFormat` is given (Metron's LEEF and CEF
/// lists).
pub const DEFAULT_FORMATS: &[&str] = &[
    "MMM dd yyyy HH:mm:ss.SSS zzz",
    "MMM dd yyyy HH:mm:ss.SSS",
    "MMM dd yyyy HH:mm:ss zzz",
    "MMM dd yyyy HH:mm:ss",
    "MMM dd HH:mm:ss.SSS zzz",
    "MMM dd HH:mm:ss.SSS",
    "MMM dd HH:mm:ss zzz",
    "MMM dd HH:mm:ss",
    "dd MMMM yyyy HH:mm:ss",
    "yyyy-MM-dd HH:mm:ss.SSS zzz",
    "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
    "yyyy-MM-dd'T'HH:mm:ssXXX",
];

/// Reads a LEEF `devTime` (or CEF `rt`) value.
///
/// - With `format` (a `devTimeFormat`): a Java `SimpleDateFormat` pattern. Supported letters:
///   `yyyy`/`yy` (year; `yy` is 2000-2099), `M`/`MM` (month number), `MMM` (`Jan`) and
///   `MMMM` (`January`; both accept either form, any case), `d`/`dd`, `H`/`HH` (0-23),
///   `h`/`hh` with `a` (AM/PM), `m`/`mm`, `s`/`ss`, `S...` (fraction of a second, 1-9 digits),
///   `E...` (day name, read and ignored), `z`/`zzz`/`Z`/`X`/`XX`/`XXX` (zone: `UTC`, `GMT`,
///   `UT`, `Z`, `+hh`, `+hhmm`, `+hh:mm`, `GMT+hh:mm`, or one of EST EDT CST CDT MST MDT PST
///   PDT CET CEST), `'literal'`; other characters are literal, and a space matches one or
///   more spaces. Numbers are read leniently (`d` reads `1` or `01`) unless the next pattern
///   letter is a number with no separator (`yyyyMMdd`), then exactly the letter count.
/// - Without a format: an all-digit value is epoch milliseconds; otherwise the
///   [`DEFAULT_FORMATS`] are tried in order, then RFC 3339.
///
/// A value without a zone is read as UTC. A format without a year takes `reference`'s year,
/// or the previous year when that would put the time more than a day after `reference` (the
/// rule the RFC 3164 parser uses; Metron's "4 days" and its shift of values with an explicit
/// year are not reproduced). The whole value must match.
pub fn leef_time_at(
    value: &str,
    format: Option<&str>,
    reference: DateTime<Utc>,
) -> Option<DateTime<FixedOffset>> {
    let value = value.trim();
    if value.is_empty() || value.len() > 128 {
        return None;
    }
    match format {
        Some(format) => parse_with(value, format.trim(), reference),
        None => {
            if value.bytes().all(|b| b.is_ascii_digit()) {
                let millis: i64 = value.parse().ok()?;
                return DateTime::from_timestamp_millis(millis).map(|t| t.fixed_offset());
            }
            DEFAULT_FORMATS
                .iter()
                .find_map(|f| parse_with(value, f, reference))
                .or_else(|| DateTime::parse_from_rfc3339(value).ok())
        }
    }
}

/// Fields collected while matching a pattern.
#[derive(Default)]
struct Parts {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
    hour: u32,
    pm: Option<bool>,
    minute: u32,
    second: u32,
    nanos: u32,
    offset: Option<i32>,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Named zones accepted by `z`, with their offsets in seconds.
const ZONES: &[(&str, i32)] = &[
    ("UTC", 0),
    ("GMT", 0),
    ("UT", 0),
    ("Z", 0),
    ("EST", -5 * 3600),
    ("EDT", -4 * 3600),
    ("CST", -6 * 3600),
    ("CDT", -5 * 3600),
    ("MST", -7 * 3600),
    ("MDT", -6 * 3600),
    ("PST", -8 * 3600),
    ("PDT", -7 * 3600),
    ("CEST", 2 * 3600),
    ("CET", 3600),
];

/// Matches `value` against a SimpleDateFormat `pattern`.
fn parse_with(
    value: &str,
    pattern: &str,
    reference: DateTime<Utc>,
) -> Option<DateTime<FixedOffset>> {
    if pattern.len() > 64 {
        return None;
    }
    let v = value.as_bytes();
    let p: Vec<char> = pattern.chars().collect();
    let mut parts = Parts::default();
    let mut vi = 0;
    let mut pi = 0;
    while pi < p.len() {
        let c = p[pi];
        if c.is_ascii_alphabetic() {
            let run = p[pi..].iter().take_while(|&&x| x == c).count();
            let next_is_number = p
                .get(pi + run)
                .is_some_and(|n| matches!(n, 'y' | 'M' | 'd' | 'H' | 'h' | 'm' | 's' | 'S'))
                && !(c == 'M' && run >= 3);
            pi += run;
            let rest = &v[vi..];
            let used = match c {
                'y' => {
                    let (n, used) =
                        number(rest, run, if run == 2 { 2 } else { 4 }, next_is_number)?;
                    parts.year = Some(if run == 2 && used == 2 {
                        2000 + n as i32
                    } else {
                        n as i32
                    });
                    used
                }
                'M' if run >= 3 => {
                    let (m, used) = name(rest, &MONTHS)?;
                    parts.month = Some(m as u32 + 1);
                    used
                }
                'M' => number(rest, run, 2, next_is_number).map(|(n, u)| {
                    parts.month = Some(n as u32);
                    u
                })?,
                'd' => number(rest, run, 2, next_is_number).map(|(n, u)| {
                    parts.day = Some(n as u32);
                    u
                })?,
                'H' | 'h' => number(rest, run, 2, next_is_number).map(|(n, u)| {
                    parts.hour = n as u32;
                    u
                })?,
                'm' => number(rest, run, 2, next_is_number).map(|(n, u)| {
                    parts.minute = n as u32;
                    u
                })?,
                's' => number(rest, run, 2, next_is_number).map(|(n, u)| {
                    parts.second = n as u32;
                    u
                })?,
                'S' => {
                    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                    let digits = if next_is_number {
                        run.min(digits)
                    } else {
                        digits
                    };
                    if digits == 0 || digits > 9 {
                        return None;
                    }
                    let n: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
                    parts.nanos = n * 10u32.pow(9 - digits as u32);
                    digits
                }
                'a' => {
                    let head = rest.get(..2)?;
                    parts.pm = Some(if head.eq_ignore_ascii_case(b"pm") {
                        true
                    } else if head.eq_ignore_ascii_case(b"am") {
                        false
                    } else {
                        return None;
                    });
                    2
                }
                'E' => name(rest, &DAYS)?.1,
                'z' | 'Z' | 'X' => {
                    let (offset, used) = zone(rest)?;
                    parts.offset = Some(offset);
                    used
                }
                _ => return None,
            };
            vi += used;
        } else if c == '\'' {
            // Quoted literal; '' is a quote.
            pi += 1;
            if p.get(pi) == Some(&'\'') {
                if v.get(vi) != Some(&b'\'') {
                    return None;
                }
                vi += 1;
                pi += 1;
                continue;
            }
            while pi < p.len() && p[pi] != '\'' {
                let mut buf = [0u8; 4];
                let lit = p[pi].encode_utf8(&mut buf).as_bytes();
                if !v[vi..].starts_with(lit) {
                    return None;
                }
                vi += lit.len();
                pi += 1;
            }
            pi += 1;
        } else if c == ' ' {
            let spaces = v[vi..].iter().take_while(|&&b| b == b' ').count();
            if spaces == 0 {
                return None;
            }
            vi += spaces;
            pi += p[pi..].iter().take_while(|&&x| x == ' ').count();
        } else {
            let mut buf = [0u8; 4];
            let lit = c.encode_utf8(&mut buf).as_bytes();
            if !v[vi..].starts_with(lit) {
                return None;
            }
            vi += lit.len();
            pi += 1;
        }
    }
    if vi != v.len() {
        return None;
    }
    build(parts, reference)
}

/// Reads a number of `min`..`max` digits (exactly `run` when `exact`).
fn number(b: &[u8], run: usize, max: usize, exact: bool) -> Option<(u64, usize)> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let take = if exact { run } else { digits.min(max.max(run)) };
    if take == 0 || digits < take {
        return None;
    }
    let n = std::str::from_utf8(&b[..take]).ok()?.parse().ok()?;
    Some((n, take))
}

/// Reads a month or day name (full, or its first three letters), any case.
fn name(b: &[u8], names: &[&str]) -> Option<(usize, usize)> {
    names.iter().enumerate().find_map(|(i, full)| {
        let full = full.as_bytes();
        if b.len() >= full.len() && b[..full.len()].eq_ignore_ascii_case(full) {
            Some((i, full.len()))
        } else if b.len() >= 3 && b[..3].eq_ignore_ascii_case(&full[..3]) {
            Some((i, 3))
        } else {
            None
        }
    })
}

/// Reads a zone: a name, `Z`, `+hh`, `+hhmm`, `+hh:mm`, `GMT+hh:mm`. Offset in seconds.
fn zone(b: &[u8]) -> Option<(i32, usize)> {
    if let Some((name, offset)) = ZONES.iter().find(|(name, _)| {
        b.len() >= name.len() && b[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    }) {
        let used = name.len();
        if matches!(*name, "GMT" | "UTC" | "UT") {
            if let Some((o, u)) = numeric_zone(&b[used..]) {
                return Some((o, used + u));
            }
        }
        return Some((*offset, used));
    }
    numeric_zone(b)
}

fn numeric_zone(b: &[u8]) -> Option<(i32, usize)> {
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| i32::from(c - b'0'))
    };
    let hours = digit(1)? * 10 + digit(2)?;
    let (minutes, used) = match (b.get(3), digit(3)) {
        (Some(b':'), _) => (digit(4)? * 10 + digit(5)?, 6),
        (_, Some(m)) => (m * 10 + digit(4)?, 5),
        _ => (0, 3),
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((sign * (hours * 3600 + minutes * 60), used))
}

/// Builds the time from matched parts.
fn build(parts: Parts, reference: DateTime<Utc>) -> Option<DateTime<FixedOffset>> {
    let month = parts.month?;
    let day = parts.day?;
    let mut hour = parts.hour;
    match parts.pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let time = NaiveTime::from_hms_nano_opt(hour, parts.minute, parts.second, parts.nanos)?;
    let offset = FixedOffset::east_opt(parts.offset.unwrap_or(0))?;
    let at = |year: i32| {
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        offset.from_local_datetime(&date.and_time(time)).single()
    };
    match parts.year {
        Some(year) => at(year),
        None => {
            let limit = reference + TimeDelta::try_days(1)?;
            let year = reference.year();
            (0..=4).find_map(|back| at(year - back).filter(|t| *t <= limit))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::formats::test_pairs as pairs;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 10, 8, 15, 30).unwrap()
    }

    #[test]
    fn leef_1_0_is_tab_separated() {
        let leef = parse(
            "LEEF:1.0|Microsoft|MSExchange|4.0 SP1|15345| src=192.0.2.0\tdst=172.50.123.1\tsev=5",
        )
        .unwrap();
        assert_eq!(leef.version, "1.0");
        assert_eq!(leef.vendor, "Microsoft");
        assert_eq!(leef.product, "MSExchange");
        assert_eq!(leef.product_version, "4.0 SP1");
        assert_eq!(leef.event_id, "15345");
        assert_eq!(leef.delimiter, '\t');
        assert_eq!(
            leef.attributes,
            pairs(&[("src", "192.0.2.0"), ("dst", "172.50.123.1"), ("sev", "5")])
        );
    }

    #[test]
    fn leef_2_0_delimiters() {
        for (spec, delim) in [
            ("^", '^'),
            ("x5E", '^'),
            ("0x5e", '^'),
            ("\t", '\t'),
            ("x09", '\t'),
            ("", '\t'),
        ] {
            let sep = delim.to_string();
            let line = format!("LEEF:2.0|V|P|1|41|{spec}|src=1.2.3.4{sep}dst=::1{sep}msg=a=b");
            let leef = parse(&line).unwrap();
            assert_eq!(leef.delimiter, delim, "{spec}");
            assert_eq!(
                leef.attributes,
                pairs(&[("src", "1.2.3.4"), ("dst", "::1"), ("msg", "a=b")]),
                "{spec}"
            );
        }
        let leef = parse("LEEF:2.0|V|P|1|41|src=1.2.3.4\tdst=5.6.7.8").unwrap();
        assert_eq!(leef.delimiter, '\t');
        assert_eq!(leef.attributes.len(), 2);
    }

    #[test]
    fn leef_0_uses_cef_extensions() {
        let leef = parse("LEEF:0|Incapsula|SIEM|0|SQL| a=b c d=e cs8=1 cs8Label=lon").unwrap();
        assert_eq!(leef.delimiter, ' ');
        assert_eq!(
            leef.attributes,
            pairs(&[("a", "b c"), ("d", "e"), ("cs8", "1"), ("cs8Label", "lon")])
        );
        assert_eq!(leef.labelled(), pairs(&[("lon", "1")]));
    }

    #[test]
    fn junk_and_empty_values() {
        let leef = parse("LEEF:1.0|V|P|1|E|junk\t=x\tk=\tunicode=日本語\t\t").unwrap();
        assert_eq!(leef.attributes, pairs(&[("k", ""), ("unicode", "日本語")]));
    }

    #[test]
    fn header_errors() {
        for text in [
            "LEEF:1.0|V|P|1",
            "LEEF:",
            "LEEF:abc|V|P|1|E|",
            "CEF:0|a|b|c|d|e|f|",
            "",
        ] {
            assert_eq!(parse(text).unwrap_err().kind, "leef_header", "{text}");
        }
    }

    #[test]
    fn find_after_prefix() {
        let line = "Jan  1 00:00:00 host LEEF:2.0|V|P|1|E|a=b";
        assert_eq!(find(line), Some(21));
        assert_eq!(find("LEEF:x LEEF:"), None);
    }

    #[test]
    fn very_long_input_is_bounded() {
        let line = format!("LEEF:1.0|V|P|1|E|{}", "k=v\t".repeat(10_000));
        assert_eq!(parse(&line).unwrap().attributes.len(), MAX_PAIRS);
    }

    #[test]
    fn times_with_and_without_formats() {
        let t = |v: &str, f: Option<&str>| leef_time_at(v, f, now()).map(|t| t.timestamp_millis());
        assert_eq!(
            t("May 1 2016 09:29:11.356 -0400", None),
            Some(1462109351356)
        );
        assert_eq!(t("1462109351356", None), Some(1462109351356));
        assert_eq!(t("Mar 10 2024 08:15:30.123 UTC", None), Some(1710058530123));
        assert_eq!(
            t("Mar 10 08:15:30.123", Some("MMM dd HH:mm:ss.SSS")),
            Some(1710058530123)
        );
        assert_eq!(
            t("Mar 15 08:15:30.123", Some("MMM dd HH:mm:ss.SSS")),
            Some(1678868130123)
        );
        assert_eq!(
            t(
                "2024-03-10 08:15:30.123 UTC",
                Some("yyyy-MM-dd HH:mm:ss.SSS zzz")
            ),
            Some(1710058530123)
        );
        assert_eq!(t("31 March 2016 13:04:55", None), Some(1459429495000));
        assert_eq!(t("Apr 07 2017 00:10:10 GMT", None), Some(1491523810000));
        assert_eq!(
            t("20240310081530", Some("yyyyMMddHHmmss")),
            Some(1710058530000)
        );
        assert_eq!(
            t(
                "Sun, 10 Mar 2024 08:15:30 PM +01:00",
                Some("EEE, dd MMM yyyy hh:mm:ss a XXX")
            ),
            Some(1710098130000)
        );
        assert_eq!(t("2024-03-10T08:15:30Z", None), Some(1710058530000));
        assert_eq!(t("nonsense", None), None);
        assert_eq!(t("Mar 10 2024", Some("MMM dd yyyy HH")), None);
        assert_eq!(t("Feb 30 2024 00:00:00", None), None);
        assert!(leef_time("May 1 2016 09:29:11", Some("MMM d yyyy HH:mm:ss")).is_some());
    }
}
