//! Strict RFC 5424 parsing, matching go-syslog's strict mode (see `fixtures/syslog/`).
//!
//! `<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]`
//!
//! - PRI 0-191 without leading zeros, VERSION 1-999 without a leading zero.
//! - TIMESTAMP is `-` or RFC 3339 with an uppercase `T` and `Z`, 1 to 6 fraction digits and an
//!   offset, validated as a real date (`2003-09-31` is an error).
//! - HOSTNAME (1-255), APP-NAME (1-48), PROCID (1-128), MSGID (1-32): printable US-ASCII
//!   (33-126); `-` alone is nil and becomes `None`.
//! - STRUCTURED-DATA is `-` or `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]` repeated; names are 1-32
//!   printable characters other than `= ] "` and space; an SD-ID may not repeat. In a value, `\"`,
//!   `\\` and `\]` are unescaped; an unescaped `]`, or a backslash before any other character, is
//!   an error (as in go-syslog).
//! - MSG follows a single SP and may hold any bytes (newlines, non-UTF-8). A leading UTF-8 BOM
//!   is removed; an empty MSG is `None`.
//!
//! Every error carries the [`SyslogErrorKind`] of the part that failed and the 0-based byte
//! column where the parser stopped.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use nom::bytes::complete::take_while_m_n;

use super::{
    empty_message, error, owned_text, parse_pri, token_text, Format, SyslogError, SyslogErrorKind,
    SyslogMessage,
};

/// Maximum HOSTNAME length.
const HOSTNAME_MAX: usize = 255;
/// Maximum APP-NAME length.
const APPNAME_MAX: usize = 48;
/// Maximum PROCID length.
const PROCID_MAX: usize = 128;
/// Maximum MSGID length.
const MSGID_MAX: usize = 32;
/// Maximum SD-ID and PARAM-NAME length.
const SD_NAME_MAX: usize = 32;
/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses one RFC 5424 record strictly. Trailing transport bytes are not trimmed here (a
/// trailing newline is part of MSG); [`super::parse`] trims them.
pub fn parse(input: &[u8]) -> Result<SyslogMessage, SyslogError> {
    if input.is_empty() {
        return Err(error(SyslogErrorKind::Empty, 0, "empty record"));
    }
    let (pri, pos) = parse_pri(input)?;
    let mut msg = empty_message(Format::Rfc5424, Some(pri));

    let (version, pos) = parse_version(input, pos)?;
    msg.version = Some(version);

    let (timestamp, pos) = parse_timestamp(input, pos)?;
    msg.timestamp = timestamp;

    let (hostname, pos) = header_field(input, pos, HOSTNAME_MAX, SyslogErrorKind::Hostname)?;
    let (appname, pos) = header_field(input, pos, APPNAME_MAX, SyslogErrorKind::Appname)?;
    let (procid, pos) = header_field(input, pos, PROCID_MAX, SyslogErrorKind::Procid)?;
    let (msgid, pos) = header_field(input, pos, MSGID_MAX, SyslogErrorKind::Msgid)?;
    msg.hostname = hostname.map(token_text);
    msg.appname = appname.map(token_text);
    msg.procid = procid.map(token_text);
    msg.msgid = msgid.map(token_text);

    let (structured_data, pos) = parse_structured_data(input, pos)?;
    msg.structured_data = structured_data;

    match input.get(pos) {
        None => {}
        Some(b' ') => {
            let body = input.get(pos + 1..).unwrap_or_default();
            let body = body.strip_prefix(BOM).unwrap_or(body);
            if !body.is_empty() {
                msg.message = Some(body.to_vec());
            }
        }
        Some(_) => {
            return Err(error(
                SyslogErrorKind::StructuredData,
                pos,
                "expected a space or the end after structured data",
            ))
        }
    }
    Ok(msg)
}

/// VERSION: a nonzero digit and at most two more, then SP. Returns the index after the SP.
fn parse_version(input: &[u8], start: usize) -> Result<(u16, usize), SyslogError> {
    let version_error =
        |column: usize, detail: &str| error(SyslogErrorKind::Version, column, detail);
    match input.get(start) {
        Some(b'1'..=b'9') => {}
        _ => return Err(version_error(start, "expected a version from 1 to 999")),
    }
    let mut version: u16 = 0;
    let mut pos = start;
    while let Some(&d) = input.get(pos).filter(|b| b.is_ascii_digit()) {
        if pos - start == 3 {
            return Err(version_error(pos, "version has more than 3 digits"));
        }
        version = version * 10 + u16::from(d - b'0');
        pos += 1;
    }
    if input.get(pos) != Some(&b' ') {
        return Err(version_error(pos, "expected a space after the version"));
    }
    Ok((version, pos + 1))
}

/// TIMESTAMP (`-` or RFC 3339) then SP. Returns the index after the SP.
fn parse_timestamp(
    input: &[u8],
    start: usize,
) -> Result<(Option<DateTime<FixedOffset>>, usize), SyslogError> {
    let rest = input.get(start..).unwrap_or_default();
    let (timestamp, len) = if rest.first() == Some(&b'-') {
        (None, 1)
    } else {
        let stamp = scan_rfc3339(rest, true)
            .map_err(|e| error(SyslogErrorKind::Timestamp, start + e.column, e.detail))?;
        let offset = stamp.offset.unwrap_or(super::UTC);
        let datetime = offset
            .from_local_datetime(&stamp.datetime)
            .single()
            .ok_or_else(|| {
                error(
                    SyslogErrorKind::Timestamp,
                    start + stamp.len,
                    "timestamp out of range",
                )
            })?;
        (Some(datetime), stamp.len)
    };
    let pos = start + len;
    if input.get(pos) != Some(&b' ') {
        return Err(error(
            SyslogErrorKind::Timestamp,
            pos,
            "expected a space after the timestamp",
        ));
    }
    Ok((timestamp, pos + 1))
}

/// Printable US-ASCII (33-126).
fn is_print(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// One of HOSTNAME, APP-NAME, PROCID, MSGID: 1..=max printable bytes then SP; `-` is nil.
/// Returns the index after the SP.
fn header_field(
    input: &[u8],
    start: usize,
    max: usize,
    kind: SyslogErrorKind,
) -> Result<(Option<&[u8]>, usize), SyslogError> {
    let rest = input.get(start..).unwrap_or_default();
    let (after, token) = take_while_m_n::<_, _, nom::error::Error<&[u8]>>(0, max, is_print)(rest)
        .unwrap_or((rest, &[]));
    let end = start + token.len();
    if token.is_empty() {
        return Err(error(
            kind,
            start,
            format!("expected {kind} (printable us-ascii) or '-'"),
        ));
    }
    match after.first() {
        Some(b' ') => {}
        Some(&b) if is_print(b) => {
            return Err(error(
                kind,
                end,
                format!("{kind} is longer than {max} characters"),
            ))
        }
        _ => return Err(error(kind, end, format!("expected a space after {kind}"))),
    }
    let value = if token == b"-" { None } else { Some(token) };
    Ok((value, end + 1))
}

/// Bytes allowed in an SD-ID or PARAM-NAME.
fn is_sd_name(b: u8) -> bool {
    is_print(b) && !matches!(b, b'=' | b']' | b'"')
}

/// An SD-ID or PARAM-NAME: 1-32 name bytes. Returns the name and the index after it.
fn sd_name<'a>(
    input: &'a [u8],
    start: usize,
    what: &str,
) -> Result<(&'a [u8], usize), SyslogError> {
    let rest = input.get(start..).unwrap_or_default();
    let (after, name) =
        take_while_m_n::<_, _, nom::error::Error<&[u8]>>(0, SD_NAME_MAX, is_sd_name)(rest)
            .unwrap_or((rest, &[]));
    let end = start + name.len();
    if name.is_empty() {
        return Err(error(
            SyslogErrorKind::StructuredData,
            start,
            format!("expected {what}"),
        ));
    }
    if after.first().is_some_and(|&b| is_sd_name(b)) {
        return Err(error(
            SyslogErrorKind::StructuredData,
            end,
            format!("{what} is longer than {SD_NAME_MAX} characters"),
        ));
    }
    Ok((name, end))
}

/// STRUCTURED-DATA: `-` or one or more SD-ELEMENTs. Returns the map and the index after it.
#[allow(clippy::type_complexity)]
fn parse_structured_data(
    input: &[u8],
    start: usize,
) -> Result<(BTreeMap<String, BTreeMap<String, String>>, usize), SyslogError> {
    let sd_error =
        |column: usize, detail: &str| error(SyslogErrorKind::StructuredData, column, detail);
    let mut elements = BTreeMap::new();
    match input.get(start) {
        Some(b'-') => return Ok((elements, start + 1)),
        Some(b'[') => {}
        _ => return Err(sd_error(start, "expected '-' or '[' for structured data")),
    }
    let mut pos = start;
    while input.get(pos) == Some(&b'[') {
        let (id, after_id) = sd_name(input, pos + 1, "an sd-id")?;
        let id = owned_text(id);
        if elements.contains_key(&id) {
            return Err(sd_error(after_id, "duplicate sd-id"));
        }
        pos = after_id;
        let mut params = BTreeMap::new();
        loop {
            match input.get(pos) {
                Some(b']') => {
                    pos += 1;
                    break;
                }
                Some(b' ') => {
                    let (name, after_name) = sd_name(input, pos + 1, "a param name")?;
                    if input.get(after_name) != Some(&b'=') {
                        return Err(sd_error(after_name, "expected '=' after the param name"));
                    }
                    if input.get(after_name + 1) != Some(&b'"') {
                        return Err(sd_error(
                            after_name + 1,
                            "expected '\"' to open the param value",
                        ));
                    }
                    let (value, after_value) = param_value(input, after_name + 2)?;
                    params.insert(owned_text(name), value);
                    pos = after_value;
                }
                _ => return Err(sd_error(pos, "expected ' ' or ']' in an sd-element")),
            }
        }
        elements.insert(id, params);
    }
    Ok((elements, pos))
}

/// PARAM-VALUE after its opening quote, unescaped. Returns it and the index after the closing
/// quote.
fn param_value(input: &[u8], start: usize) -> Result<(String, usize), SyslogError> {
    let sd_error =
        |column: usize, detail: &str| error(SyslogErrorKind::StructuredData, column, detail);
    let rest = input.get(start..).unwrap_or_default();
    // Fast path: no escapes before the closing quote.
    let mut escaped: Option<Vec<u8>> = None;
    let mut pos = 0;
    loop {
        match rest.get(pos) {
            None => return Err(sd_error(start + pos, "unterminated param value")),
            Some(b'"') => break,
            Some(b']') => return Err(sd_error(start + pos, "unescaped ']' in a param value")),
            Some(b'\\') => match rest.get(pos + 1) {
                Some(&c @ (b'"' | b'\\' | b']')) => {
                    let buf =
                        escaped.get_or_insert_with(|| rest.get(..pos).unwrap_or_default().to_vec());
                    buf.push(c);
                    pos += 2;
                }
                _ => return Err(sd_error(start + pos + 1, "invalid escape in a param value")),
            },
            Some(&c) => {
                if let Some(buf) = escaped.as_mut() {
                    buf.push(c);
                }
                pos += 1;
            }
        }
    }
    let value = match escaped {
        Some(buf) => String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        None => owned_text(rest.get(..pos).unwrap_or_default()),
    };
    Ok((value, start + pos + 1))
}

/// A scanned RFC 3339 timestamp (local date-time plus optional offset).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// The date and time as written.
    pub datetime: NaiveDateTime,
    /// The offset, if one was written.
    pub offset: Option<FixedOffset>,
    /// Bytes consumed.
    pub len: usize,
}

/// Why an RFC 3339 scan failed: column relative to the scanned slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StampError {
    /// 0-based column in the scanned slice.
    pub column: usize,
    /// Lowercase detail.
    pub detail: &'static str,
}

/// A byte cursor for timestamp scanning.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn fail<T>(&self, detail: &'static str) -> Result<T, StampError> {
        Err(StampError {
            column: self.i,
            detail,
        })
    }

    fn digit(&mut self, lo: u8, hi: u8, detail: &'static str) -> Result<u32, StampError> {
        match self.s.get(self.i) {
            Some(&c) if (lo..=hi).contains(&c) => {
                self.i += 1;
                Ok(u32::from(c - b'0'))
            }
            _ => self.fail(detail),
        }
    }

    fn byte(
        &mut self,
        accept: impl Fn(u8) -> bool,
        detail: &'static str,
    ) -> Result<u8, StampError> {
        match self.s.get(self.i) {
            Some(&c) if accept(c) => {
                self.i += 1;
                Ok(c)
            }
            _ => self.fail(detail),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// `[0-5][0-9]`.
    fn sexagesimal(&mut self, detail: &'static str) -> Result<u32, StampError> {
        let tens = self.digit(b'0', b'5', detail)?;
        Ok(tens * 10 + self.digit(b'0', b'9', detail)?)
    }

    /// `[01][0-9] | 2[0-3]`.
    fn hour(&mut self, detail: &'static str) -> Result<u32, StampError> {
        let tens = self.digit(b'0', b'2', detail)?;
        let units = if tens == 2 {
            self.digit(b'0', b'3', detail)?
        } else {
            self.digit(b'0', b'9', detail)?
        };
        Ok(tens * 10 + units)
    }
}

/// Scans an RFC 3339 timestamp at the start of `s`.
///
/// `strict` is RFC 5424 as go-syslog reads it: uppercase `T`/`Z`, 1-6 fraction digits, offset
/// `Z` or `±hh:mm` required. Otherwise (RFC 3164 and file lines) a space or lowercase `t` may
/// separate date and time, up to 9 fraction digits are read, `z` and `±hhmm` are accepted and
/// the offset may be missing.
pub(crate) fn scan_rfc3339(s: &[u8], strict: bool) -> Result<Stamp, StampError> {
    let mut c = Cursor { s, i: 0 };
    let mut year = 0i32;
    for _ in 0..4 {
        year = year * 10 + c.digit(b'0', b'9', "expected a 4-digit year")? as i32;
    }
    c.byte(|b| b == b'-', "expected '-' after the year")?;
    let month_tens = c.digit(b'0', b'1', "expected a month 01-12")?;
    let month_units = if month_tens == 0 {
        c.digit(b'1', b'9', "expected a month 01-12")?
    } else {
        c.digit(b'0', b'2', "expected a month 01-12")?
    };
    c.byte(|b| b == b'-', "expected '-' after the month")?;
    let day_tens = c.digit(b'0', b'3', "expected a day 01-31")?;
    let day_units = match day_tens {
        0 => c.digit(b'1', b'9', "expected a day 01-31")?,
        3 => c.digit(b'0', b'1', "expected a day 01-31")?,
        _ => c.digit(b'0', b'9', "expected a day 01-31")?,
    };
    if strict {
        c.byte(|b| b == b'T', "expected 'T' between date and time")?;
    } else {
        c.byte(
            |b| matches!(b, b'T' | b't' | b' '),
            "expected 'T' between date and time",
        )?;
    }
    let hour = c.hour("expected an hour 00-23")?;
    c.byte(|b| b == b':', "expected ':' after the hour")?;
    let minute = c.sexagesimal("expected minutes 00-59")?;
    c.byte(|b| b == b':', "expected ':' after the minutes")?;
    let second = c.sexagesimal("expected seconds 00-59")?;
    let mut nanos = 0u32;
    if c.peek() == Some(b'.') {
        c.i += 1;
        let max_digits = if strict { 6 } else { 9 };
        let mut digits = 0;
        while let Some(d) = c.peek().filter(u8::is_ascii_digit) {
            if digits == max_digits {
                return c.fail("too many fraction digits");
            }
            nanos = nanos * 10 + u32::from(d - b'0');
            digits += 1;
            c.i += 1;
        }
        if digits == 0 {
            return c.fail("expected fraction digits after '.'");
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset = match c.peek() {
        Some(b'Z') => {
            c.i += 1;
            Some(super::UTC)
        }
        Some(b'z') if !strict => {
            c.i += 1;
            Some(super::UTC)
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let hours = c.hour("expected offset hours 00-23")?;
            if strict || c.peek() == Some(b':') {
                c.byte(|b| b == b':', "expected ':' in the offset")?;
            }
            let minutes = c.sexagesimal("expected offset minutes 00-59")?;
            let secs = (hours * 3600 + minutes * 60) as i32;
            let secs = if sign == b'-' { -secs } else { secs };
            match FixedOffset::east_opt(secs) {
                Some(offset) => Some(offset),
                None => return c.fail("offset out of range"),
            }
        }
        _ if strict => return c.fail("expected 'Z' or an offset"),
        _ => None,
    };
    let date = NaiveDate::from_ymd_opt(
        year,
        month_tens * 10 + month_units,
        day_tens * 10 + day_units,
    );
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos);
    match (date, time) {
        (Some(date), Some(time)) => Ok(Stamp {
            datetime: date.and_time(time),
            offset,
            len: c.i,
        }),
        _ => c.fail("timestamp out of range"),
    }
}
