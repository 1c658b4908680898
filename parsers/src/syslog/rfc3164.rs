//! RFC 3164 (BSD syslog) as devices really send it, and PRI-less syslog file lines.
//!
//! Shape: `[<PRI>]TIMESTAMP SP [HOSTNAME SP] [TAG[\[PID\]]: SP] MSG`.
//!
//! Timestamps:
//! - `Mmm dd hh:mm:ss` (day space-padded or not, optional `.fraction`): no year, so the year is
//!   inferred from [`ParseOptions::reference_time`]: its year, or the previous one when the stamp
//!   would be more than a day after the reference time (for February 29th the latest leap year
//!   that fits);
//! - `Mmm dd yyyy hh:mm:ss` (Cisco ASA and others);
//! - RFC 3339 / ISO 8601 `yyyy-mm-ddThh:mm:ss[.frac][Z|±hh:mm]` (rsyslog's high-precision
//!   format);
//! - a stamp without an offset is read in [`ParseOptions::default_offset`].
//!
//! After the timestamp: the token is the HOSTNAME unless it looks like a tag (ends with `:` or
//! contains `[`), in which case the hostname is missing. `-` is a nil hostname. A lone `:` after
//! the hostname (ASA `fw01 : %ASA-6-302013: ...`) is skipped. The TAG is `name[pid]:` or
//! `name:` followed by a space (or the end), e.g. `sshd[42]:` or `%ASA-6-302013:`; without one
//! the rest is all MSG.
//!
//! With a `<PRI>`, only a bad PRI is an error: anything else that cannot be read (no timestamp,
//! an impossible date) degrades to a message-only record holding everything after the PRI.
//! Without a `<PRI>` (a file line) the line must start with a timestamp.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone};
use nom::bytes::complete::{tag, take_while_m_n};
use nom::combinator::opt;
use nom::sequence::delimited;
use nom::Parser;

use super::rfc5424::scan_rfc3339;
use super::{
    empty_message, error, parse_pri, token_text, Format, ParseOptions, SyslogError,
    SyslogErrorKind, SyslogMessage,
};

/// Maximum TAG (app name) length accepted.
const TAG_MAX: usize = 128;
/// Maximum PID length accepted inside `[...]`.
const PID_MAX: usize = 128;
/// Maximum HOSTNAME length.
const HOSTNAME_MAX: usize = 255;

/// Month abbreviations in order.
const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// Parses an RFC 3164 record (`<PRI>...`, [`Format::Rfc3164`]) or, when `input` does not start
/// with `<`, a syslog file line ([`Format::FileLine`], no priority).
///
/// Errors: [`SyslogErrorKind::Empty`] for empty input, [`SyslogErrorKind::Pri`] for a bad PRI,
/// and for file lines [`SyslogErrorKind::NotSyslog`] when the line does not start with a
/// timestamp or [`SyslogErrorKind::Timestamp`] when it starts like one but is not valid.
pub fn parse(input: &[u8], opts: &ParseOptions) -> Result<SyslogMessage, SyslogError> {
    if input.is_empty() {
        return Err(error(SyslogErrorKind::Empty, 0, "empty record"));
    }
    if input.first() == Some(&b'<') {
        let (pri, pos) = parse_pri(input)?;
        let rest = input.get(pos..).unwrap_or_default();
        let mut msg = empty_message(Format::Rfc3164, Some(pri));
        let stamped = parse_stamp(rest, opts).ok().or_else(|| {
            let skipped = skip_noise(rest);
            parse_stamp(skipped, opts)
                .ok()
                .map(|(ts, len)| (ts, len + (rest.len() - skipped.len())))
        });
        match stamped {
            Some((timestamp, len)) => {
                msg.timestamp = Some(timestamp);
                read_header(rest.get(len..).unwrap_or_default(), &mut msg);
            }
            None => msg.message = non_empty(rest),
        }
        return Ok(msg);
    }
    let mut msg = empty_message(Format::FileLine, None);
    match parse_stamp(input, opts) {
        Ok((timestamp, len)) => {
            msg.timestamp = Some(timestamp);
            read_header(input.get(len..).unwrap_or_default(), &mut msg);
            Ok(msg)
        }
        Err(StampFailure::NotAStamp) => Err(error(
            SyslogErrorKind::NotSyslog,
            0,
            "expected '<pri>' or a timestamp at the start of the line",
        )),
        Err(StampFailure::Invalid { column, detail }) => {
            Err(error(SyslogErrorKind::Timestamp, column, detail))
        }
    }
}

/// Why no timestamp could be read.
#[derive(Debug)]
enum StampFailure {
    /// The bytes do not start like any supported timestamp.
    NotAStamp,
    /// They start like one but are not a valid timestamp.
    Invalid { column: usize, detail: &'static str },
}

/// `Some(bytes)` unless empty.
fn non_empty(bytes: &[u8]) -> Option<Vec<u8>> {
    (!bytes.is_empty()).then(|| bytes.to_vec())
}

/// Skips what some devices put between PRI and timestamp: `:`, spaces, a Cisco sequence number
/// `123: `, and the `*` / `.` clock-sync markers.
fn skip_noise(s: &[u8]) -> &[u8] {
    let mut s = trim_spaces_and_colons(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && s.get(digits) == Some(&b':') {
        s = trim_spaces_and_colons(s.get(digits..).unwrap_or_default());
    }
    match s.first() {
        Some(b'*' | b'.') => s.get(1..).unwrap_or_default(),
        _ => s,
    }
}

/// Strips leading spaces and colons.
fn trim_spaces_and_colons(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b':').count();
    s.get(n..).unwrap_or_default()
}

/// Strips leading spaces.
fn trim_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    s.get(n..).unwrap_or_default()
}

/// Reads a timestamp at the start of `s`; returns it and the bytes consumed (including a `:`
/// that directly follows the stamp, as Cisco IOS writes).
fn parse_stamp(
    s: &[u8],
    opts: &ParseOptions,
) -> Result<(DateTime<FixedOffset>, usize), StampFailure> {
    let (timestamp, mut len) = match s.first() {
        Some(b) if b.is_ascii_digit() => iso_stamp(s, opts)?,
        Some(b) if b.is_ascii_alphabetic() => month_stamp(s, opts)?,
        _ => return Err(StampFailure::NotAStamp),
    };
    match s.get(len) {
        None | Some(b' ') => {}
        Some(b':') => len += 1,
        Some(_) => {
            return Err(StampFailure::Invalid {
                column: len,
                detail: "expected a space after the timestamp",
            })
        }
    }
    Ok((timestamp, len))
}

/// RFC 3339 / ISO 8601 stamp; a missing offset means [`ParseOptions::default_offset`].
fn iso_stamp(
    s: &[u8],
    opts: &ParseOptions,
) -> Result<(DateTime<FixedOffset>, usize), StampFailure> {
    let stamp = scan_rfc3339(s, false).map_err(|e| {
        if e.column < 5 {
            StampFailure::NotAStamp
        } else {
            StampFailure::Invalid {
                column: e.column,
                detail: e.detail,
            }
        }
    })?;
    let offset = stamp.offset.unwrap_or(opts.default_offset);
    let timestamp =
        offset
            .from_local_datetime(&stamp.datetime)
            .single()
            .ok_or(StampFailure::Invalid {
                column: stamp.len,
                detail: "timestamp out of range",
            })?;
    Ok((timestamp, stamp.len))
}

/// Reads exactly `n` ASCII digits at `pos`.
fn fixed_digits(s: &[u8], pos: usize, n: usize) -> Option<u32> {
    let digits = s.get(pos..pos + n)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

/// `Mmm dd [yyyy ]hh:mm:ss[.frac]`.
fn month_stamp(
    s: &[u8],
    opts: &ParseOptions,
) -> Result<(DateTime<FixedOffset>, usize), StampFailure> {
    let name = s.get(..3).ok_or(StampFailure::NotAStamp)?;
    let month = MONTHS
        .iter()
        .position(|m| name.eq_ignore_ascii_case(&m[..]))
        .ok_or(StampFailure::NotAStamp)?;
    if s.get(3) != Some(&b' ') {
        return Err(StampFailure::NotAStamp);
    }
    let invalid = |column: usize, detail: &'static str| StampFailure::Invalid { column, detail };
    let mut pos = 4;
    if s.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let day_digits = s
        .iter()
        .skip(pos)
        .take(3)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let day = match day_digits {
        1 | 2 => fixed_digits(s, pos, day_digits).ok_or(invalid(pos, "expected a day"))?,
        _ => return Err(invalid(pos, "expected a day of 1 or 2 digits")),
    };
    pos += day_digits;
    if s.get(pos) != Some(&b' ') {
        return Err(invalid(pos, "expected a space after the day"));
    }
    pos += 1;
    let mut year = None;
    if s.get(pos + 4) == Some(&b' ') {
        if let Some(y) = fixed_digits(s, pos, 4) {
            year = Some(y as i32);
            pos += 5;
        }
    }
    let hour = fixed_digits(s, pos, 2).ok_or(invalid(pos, "expected hh:mm:ss"))?;
    let minute = fixed_digits(s, pos + 3, 2).filter(|_| s.get(pos + 2) == Some(&b':'));
    let second = fixed_digits(s, pos + 6, 2).filter(|_| s.get(pos + 5) == Some(&b':'));
    let (Some(minute), Some(second)) = (minute, second) else {
        return Err(invalid(pos, "expected hh:mm:ss"));
    };
    pos += 8;
    let mut nanos = 0u32;
    if s.get(pos) == Some(&b'.') {
        let digits = s
            .iter()
            .skip(pos + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return Err(invalid(pos, "expected 1 to 9 fraction digits"));
        }
        nanos = fixed_digits(s, pos + 1, digits).ok_or(invalid(pos, "expected fraction digits"))?;
        for _ in digits..9 {
            nanos *= 10;
        }
        pos += 1 + digits;
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .ok_or(invalid(pos, "time out of range"))?;
    let month = month as u32 + 1;
    let timestamp = match year {
        Some(year) => NaiveDate::from_ymd_opt(year, month, day).and_then(|date| {
            opts.default_offset
                .from_local_datetime(&date.and_time(time))
                .single()
        }),
        None => infer_year(month, day, time, opts),
    };
    timestamp
        .map(|t| (t, pos))
        .ok_or(invalid(pos, "date out of range"))
}

/// Picks the year for a stamp without one: the reference year, or an earlier one when the
/// stamp would be more than a day after the reference time (or the date does not exist that
/// year, e.g. February 29th).
fn infer_year(
    month: u32,
    day: u32,
    time: NaiveTime,
    opts: &ParseOptions,
) -> Option<DateTime<FixedOffset>> {
    let offset = opts.default_offset;
    let reference = opts.reference_time.with_timezone(&offset);
    let limit = TimeDelta::try_days(1)
        .and_then(|d| reference.checked_add_signed(d))
        .unwrap_or(reference);
    let reference_year = reference.year();
    (0..=4).map(|back| reference_year - back).find_map(|year| {
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        let timestamp = offset.from_local_datetime(&date.and_time(time)).single()?;
        (timestamp <= limit).then_some(timestamp)
    })
}

/// Bytes allowed in a hostname token.
fn is_hostname_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')
}

/// True when `token` reads as a HOSTNAME (and not as a tag or message text).
fn is_hostname(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= HOSTNAME_MAX
        && token.iter().all(|&b| is_hostname_byte(b))
        && !token.ends_with(b":")
}

/// Bytes allowed in a TAG name.
fn is_tag_byte(b: u8) -> bool {
    (33..=126).contains(&b) && !matches!(b, b'[' | b']' | b':')
}

/// Bytes allowed in a `[PID]`.
fn is_pid_byte(b: u8) -> bool {
    (33..=126).contains(&b) && b != b']'
}

/// A TAG read by [`parse_tag`].
struct Tag<'a> {
    /// The name (app name).
    name: &'a [u8],
    /// The `[pid]` contents.
    pid: Option<&'a [u8]>,
    /// What follows the tag and its separator: the MSG.
    rest: &'a [u8],
}

/// `TAG[PID]: ` or `TAG: ` (or `TAG[PID] `) at the start of `s`.
fn parse_tag(s: &[u8]) -> Option<Tag<'_>> {
    let (rest, name) =
        take_while_m_n::<_, _, nom::error::Error<&[u8]>>(1, TAG_MAX, is_tag_byte)(s).ok()?;
    let (rest, pid) = opt(delimited(
        tag::<_, _, nom::error::Error<&[u8]>>(&b"["[..]),
        take_while_m_n(1, PID_MAX, is_pid_byte),
        tag(&b"]"[..]),
    ))
    .parse(rest)
    .ok()?;
    let after_colon = rest.strip_prefix(b":");
    let rest = match (after_colon, pid) {
        (Some(after), _) => match after.first() {
            None => after,
            Some(b' ') => after.get(1..).unwrap_or_default(),
            Some(_) => return None,
        },
        (None, Some(_)) => match rest.first() {
            None => rest,
            Some(b' ') => rest.get(1..).unwrap_or_default(),
            Some(_) => return None,
        },
        (None, None) => return None,
    };
    Some(Tag { name, pid, rest })
}

/// Reads `[HOSTNAME] [TAG] MSG` after the timestamp into `msg`.
fn read_header(rest: &[u8], msg: &mut SyslogMessage) {
    let mut rest = trim_spaces(rest);
    let token_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let token = rest.get(..token_len).unwrap_or_default();
    let looks_like_tag = token.ends_with(b":") || token.contains(&b'[');
    if token == b"-" || (!looks_like_tag && is_hostname(token)) {
        if token != b"-" {
            msg.hostname = Some(token_text(token));
        }
        rest = trim_spaces(rest.get(token_len..).unwrap_or_default());
        // Cisco ASA: `fw01 : %ASA-6-302013: ...`.
        if rest == b":" || rest.starts_with(b": ") {
            rest = trim_spaces(rest.get(1..).unwrap_or_default());
        }
    }
    if let Some(tag) = parse_tag(rest) {
        msg.appname = Some(token_text(tag.name));
        msg.procid = tag.pid.map(token_text);
        rest = tag.rest;
    }
    msg.message = non_empty(rest);
}
