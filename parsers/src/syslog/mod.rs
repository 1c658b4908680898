//! Syslog: RFC 5424, RFC 3164 and its real-world variants, RFC 6587 TCP framing.
//!
//! [`parse`] detects the format of one record: `<PRI>1 ...` is RFC 5424, `<PRI>` followed by
//! anything else is RFC 3164 (BSD), and a line without `<PRI>` is the file form that syslog
//! daemons write (`Jan  5 10:00:01 host sshd[42]: ...`, or with an ISO timestamp).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

use crate::event::Text;

pub mod framing;
pub mod rfc3164;
pub mod rfc5424;

/// Which syslog form a record was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 (`<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164 / BSD syslog with `<PRI>`.
    Rfc3164,
    /// A syslog file line: RFC 3164 shape without `<PRI>` (`/var/log/auth.log`).
    FileLine,
}

/// One parsed syslog record. Absent (nil, `-`) fields are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogMessage {
    /// The form the record was in.
    pub format: Format,
    /// PRI value (0-191), `None` for file lines.
    pub priority: Option<u8>,
    /// Facility (PRI / 8).
    pub facility: Option<u8>,
    /// Severity (PRI % 8).
    pub severity: Option<u8>,
    /// RFC 5424 VERSION.
    pub version: Option<u16>,
    /// The timestamp with its original offset. RFC 3164 stamps without a year get one inferred
    /// from [`ParseOptions::reference_time`].
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// HOSTNAME.
    pub hostname: Option<Text>,
    /// APP-NAME (RFC 5424) or TAG without the `[pid]` (RFC 3164), e.g. `sshd`, `%ASA-6-302013`.
    pub appname: Option<Text>,
    /// PROCID, or the pid in a 3164 tag `sshd[42]`.
    pub procid: Option<Text>,
    /// MSGID (RFC 5424).
    pub msgid: Option<Text>,
    /// STRUCTURED-DATA: SD-ID -> (PARAM-NAME -> unescaped PARAM-VALUE), in order.
    pub structured_data: BTreeMap<String, BTreeMap<String, String>>,
    /// MSG as bytes (RFC 5424 allows any bytes; a leading BOM is removed).
    pub message: Option<Vec<u8>>,
}

impl SyslogMessage {
    /// MSG as text, invalid UTF-8 replaced.
    pub fn message_text(&self) -> Option<String> {
        self.message
            .as_deref()
            .map(|m| String::from_utf8_lossy(m).into_owned())
    }

    /// MSG as text (invalid UTF-8 replaced), taken out of the record: valid text is not
    /// copied.
    pub fn take_message_text(&mut self) -> Option<String> {
        self.message.take().map(|m| {
            String::from_utf8(m)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }
}

/// How to read records that leave things out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParseOptions {
    /// "Now" for year inference: a 3164 stamp without a year takes the reference year, or the
    /// previous year when that would put it more than a day in the future (December logs read
    /// in January).
    pub reference_time: DateTime<Utc>,
    /// Offset for stamps that carry none (3164). UTC unless configured.
    pub default_offset: FixedOffset,
}

/// Why a record is not syslog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {column}: {detail}")]
pub struct SyslogError {
    /// What part failed; also the metric / dead-letter reason.
    pub kind: SyslogErrorKind,
    /// 0-based byte offset where the problem was found.
    pub column: usize,
    /// Human-readable detail, lowercase, no trailing period.
    pub detail: String,
}

/// What part of a syslog record failed to parse. `as_str` is the stable reason label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyslogErrorKind {
    /// Empty input.
    Empty,
    /// Bad or missing `<PRI>` (out of range, leading zero, unterminated).
    Pri,
    /// Bad RFC 5424 VERSION.
    Version,
    /// Bad or impossible timestamp.
    Timestamp,
    /// Bad HOSTNAME.
    Hostname,
    /// Bad APP-NAME.
    Appname,
    /// Bad PROCID.
    Procid,
    /// Bad MSGID.
    Msgid,
    /// Bad STRUCTURED-DATA.
    StructuredData,
    /// Anything else that does not look like syslog at all.
    NotSyslog,
}

impl SyslogErrorKind {
    /// Stable lowercase label for metrics and dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            SyslogErrorKind::Empty => "empty",
            SyslogErrorKind::Pri => "pri",
            SyslogErrorKind::Version => "version",
            SyslogErrorKind::Timestamp => "timestamp",
            SyslogErrorKind::Hostname => "hostname",
            SyslogErrorKind::Appname => "appname",
            SyslogErrorKind::Procid => "procid",
            SyslogErrorKind::Msgid => "msgid",
            SyslogErrorKind::StructuredData => "structured_data",
            SyslogErrorKind::NotSyslog => "not_syslog",
        }
    }
}

impl std::fmt::Display for SyslogErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ParseOptions {
    /// Options with the given reference time ("now" for year inference) and UTC for stamps
    /// without an offset.
    pub fn at(reference_time: DateTime<Utc>) -> Self {
        ParseOptions {
            reference_time,
            default_offset: UTC,
        }
    }
}

/// UTC as a [`FixedOffset`] (a constant so no fallible constructor is needed).
pub(crate) const UTC: FixedOffset = match FixedOffset::east_opt(0) {
    Some(utc) => utc,
    None => panic!("zero is a valid offset"),
};

/// Parses one syslog record of any supported form (see the module doc for detection).
///
/// Transport padding is trimmed first: trailing `\n`, `\r\n` and NUL bytes, which UDP senders
/// often append. Then:
/// - `<PRI>` followed by `VERSION SP` (a nonzero digit, at most three digits, then a space) is
///   RFC 5424 and parsed strictly by [`rfc5424::parse`]; its errors are returned as they are;
/// - any other `<PRI>` record is RFC 3164 ([`rfc3164::parse`]), which only fails on a bad PRI;
/// - a record without `<` is a file line ([`rfc3164::parse`] again), which must start with a
///   timestamp or is rejected as [`SyslogErrorKind::NotSyslog`].
pub fn parse(input: &[u8], opts: &ParseOptions) -> Result<SyslogMessage, SyslogError> {
    let input = trim_transport(input);
    if input.is_empty() {
        return Err(error(SyslogErrorKind::Empty, 0, "empty record"));
    }
    if input.first() == Some(&b'<') {
        let (_, after_pri) = parse_pri(input)?;
        if looks_like_version(input.get(after_pri..).unwrap_or_default()) {
            return rfc5424::parse(input);
        }
    }
    rfc3164::parse(input, opts)
}

/// Removes trailing LF, CR and NUL bytes added by transports.
pub fn trim_transport(input: &[u8]) -> &[u8] {
    let end = input
        .iter()
        .rposition(|&b| !matches!(b, b'\n' | b'\r' | 0))
        .map_or(0, |i| i + 1);
    input.get(..end).unwrap_or_default()
}

/// True when `rest` (the bytes after `>`) starts with an RFC 5424 `VERSION SP`.
fn looks_like_version(rest: &[u8]) -> bool {
    match rest.first() {
        Some(b'1'..=b'9') => {}
        _ => return false,
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits <= 3 && rest.get(digits) == Some(&b' ')
}

/// Builds a [`SyslogError`].
pub(crate) fn error(
    kind: SyslogErrorKind,
    column: usize,
    detail: impl Into<String>,
) -> SyslogError {
    SyslogError {
        kind,
        column,
        detail: detail.into(),
    }
}

/// Parses `<PRI>` at the start of `input`: 1-3 digits, 0-191, no leading zero.
///
/// Returns the value and the index just after `>`. Errors are [`SyslogErrorKind::Pri`] at the
/// first byte that cannot continue a valid PRI.
pub(crate) fn parse_pri(input: &[u8]) -> Result<(u8, usize), SyslogError> {
    let pri_error = |column: usize, detail: &str| error(SyslogErrorKind::Pri, column, detail);
    if input.first() != Some(&b'<') {
        return Err(pri_error(0, "expected '<'"));
    }
    let mut value: u8 = 0;
    let mut i = 1;
    loop {
        match input.get(i) {
            Some(b'>') if i > 1 => return Ok((value, i + 1)),
            Some(&d) if d.is_ascii_digit() => {
                if i == 2 && value == 0 {
                    return Err(pri_error(i, "pri has a leading zero"));
                }
                if i > 3 {
                    return Err(pri_error(i, "pri has more than 3 digits"));
                }
                let next = u16::from(value) * 10 + u16::from(d - b'0');
                value = match u8::try_from(next) {
                    Ok(v) if v <= 191 => v,
                    _ => return Err(pri_error(i, "pri is greater than 191")),
                };
                i += 1;
            }
            Some(_) if i == 1 => return Err(pri_error(i, "expected a pri digit")),
            Some(_) => return Err(pri_error(i, "expected '>' after pri")),
            None => return Err(pri_error(i, "unterminated pri")),
        }
    }
}

/// A header token as event text (inline up to 24 bytes, so a host or program name costs no
/// allocation), lossy for anything but UTF-8.
pub(crate) fn token_text(bytes: &[u8]) -> Text {
    match std::str::from_utf8(bytes) {
        Ok(s) => Text::new(s),
        Err(_) => Text::from(String::from_utf8_lossy(bytes)),
    }
}

/// Owned text of a token that is expected to be ASCII (lossy for anything else).
pub(crate) fn owned_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A record with every field empty, in the given format.
pub(crate) fn empty_message(format: Format, priority: Option<u8>) -> SyslogMessage {
    SyslogMessage {
        format,
        priority,
        facility: priority.map(|p| p / 8),
        severity: priority.map(|p| p % 8),
        version: None,
        timestamp: None,
        hostname: None,
        appname: None,
        procid: None,
        msgid: None,
        structured_data: BTreeMap::new(),
        message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Taking MSG gives what reading it gives (invalid UTF-8 replaced alike) and leaves none.
    #[test]
    fn taking_the_message_reads_it_as_message_text_does() {
        for bytes in [&b"plain text"[..], b"bad \xff\xfe bytes", b""] {
            let mut m = empty_message(Format::Rfc3164, Some(13));
            m.message = Some(bytes.to_vec());
            let read = m.message_text();
            assert_eq!(m.take_message_text(), read);
            assert_eq!(m.message, None);
            assert_eq!(m.take_message_text(), None);
        }
    }
}
