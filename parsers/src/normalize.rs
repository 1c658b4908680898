//! The one entry point the service uses: a raw record in, an [`Event`] or a [`Rejection`] out.
//!
//! Steps: trim the record's trailing `\r`, `\n` and `\0`; check UTF-8 (reject, or replace, per
//! [`InvalidUtf8Policy`]); parse it as syslog; build the generic syslog event (header fields,
//! structured data, the raw bytes); then apply the first matching parser definition (which may
//! also set `@timestamp` from the record, under the same future-skew limit as the syslog header's
//! time). A record that is syslog but matches no definition is still an event (a generic syslog
//! event); one that matches a definition whose structured part (CEF, LEEF, JSON, CSV) does not
//! parse is rejected with the format's reason.
//!
//! Raw records: a record that is not syslog at all (the parser's `not_syslog`, and only that
//! reason: a gateway access-log line from a file or an HTTP push, a JSON object) is offered to
//! the definitions marked `match: {raw: true}`, the whole record as the message and no program
//! ([`DefinitionSet::apply_raw`]). If one takes it, it is an event with no host or process
//! fields, `@timestamp` from the definition's `timestamp` rule or else the receive time, and
//! `message` the record text unless the definition wrote one; if none does, it is rejected as
//! `not_syslog`, exactly as without raw definitions.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, Offset, Utc};

use crate::definitions::DefinitionSet;
use crate::event::{Event, Text};
use crate::syslog::{self, ParseOptions, SyslogErrorKind};

/// Where a record came from and when it arrived, as the collector saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    /// The collector kind (`syslog`, `file`, ...): `observer.type`.
    pub observer_type: &'a str,
    /// The log source identity (`syslog/udp/10.0.0.5`, `file:/var/log/auth.log`): `observer.id`.
    pub observer_id: &'a str,
    /// The network peer that sent the record, if any: `observer.ip`.
    pub peer: Option<IpAddr>,
    /// When Vigil received the record: `event.ingested`, and `@timestamp` when the record has no
    /// time of its own. Also the reference for year inference of RFC 3164 stamps.
    pub received_at: DateTime<Utc>,
}

/// What to do with a record that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum InvalidUtf8Policy {
    /// Reject it (reason `invalid_utf8`) so it lands in the dead letters with its raw bytes.
    #[default]
    DeadLetter,
    /// Replace invalid sequences with U+FFFD and carry on; `event.original` keeps the exact bytes.
    Replace,
}

/// How records are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Offset for timestamps that carry none (RFC 3164). UTC by default.
    pub default_offset: FixedOffset,
    /// What to do with invalid UTF-8. Dead letter by default.
    pub invalid_utf8: InvalidUtf8Policy,
    /// How far past its receive time a record's own timestamp may be. A later timestamp (a
    /// sender with a wrong clock, or a forged record that would push a correlation window into
    /// the future and hide real events behind it) is replaced by the receive time; the original
    /// is kept in `extra` under [`ORIGINAL_TIMESTAMP_FIELD`]. 5 minutes by default.
    pub max_future_skew: chrono::Duration,
}

/// `extra` field holding a record's own timestamp when it was too far in the future and the
/// receive time was used instead.
pub const ORIGINAL_TIMESTAMP_FIELD: &str = "log.original_timestamp";

/// Record times before 2000-01-01T00:00:00Z are not believed either: the receive time is used
/// and the original kept under [`ORIGINAL_TIMESTAMP_FIELD`], as for times too far ahead.
pub const EARLIEST_PLAUSIBLE_SECS: i64 = 946_684_800;

impl Default for NormalizeOptions {
    fn default() -> Self {
        NormalizeOptions {
            default_offset: Utc.fix(),
            invalid_utf8: InvalidUtf8Policy::default(),
            max_future_skew: chrono::Duration::minutes(5),
        }
    }
}

/// Why a record did not become an event. It goes to the dead letters with its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// Stable metric / dead-letter label: a syslog failure's
    /// [`SyslogErrorKind::as_str`](crate::syslog::SyslogErrorKind::as_str), or `invalid_utf8`,
    /// `field_type` (a definition captured a value its field cannot hold), `empty`, or a
    /// structured format's error kind (`cef_header`, `leef_header`, `json`, `csv`, ...) when a
    /// record matched a definition but its structured part does not parse
    /// ([`ApplyError::reason`](crate::definitions::ApplyError::reason)).
    pub reason: &'static str,
    /// Human-readable detail, lowercase, no trailing period.
    pub detail: String,
}

/// Turns raw records into events with a fixed set of definitions and options.
#[derive(Debug, Clone)]
pub struct Normalizer {
    definitions: DefinitionSet,
    options: NormalizeOptions,
}

impl Normalizer {
    /// A normalizer applying `definitions` with `options`.
    pub fn new(definitions: DefinitionSet, options: NormalizeOptions) -> Self {
        Normalizer {
            definitions,
            options,
        }
    }

    /// The definitions in use.
    pub fn definitions(&self) -> &DefinitionSet {
        &self.definitions
    }

    /// The options in use.
    pub fn options(&self) -> &NormalizeOptions {
        &self.options
    }

    /// Normalizes one record (one syslog message or one file line). Never panics.
    pub fn normalize(&self, raw: &[u8], meta: &RecordMeta<'_>) -> Result<Event, Rejection> {
        let mut event = self.normalize_without_raw(raw, meta)?;
        event.raw = raw.to_vec();
        Ok(event)
    }

    /// [`Normalizer::normalize`] of a record the caller owns: its bytes become the event's
    /// `raw` without a copy, or come back with the rejection.
    pub fn normalize_owned(
        &self,
        mut raw: Vec<u8>,
        meta: &RecordMeta<'_>,
    ) -> Result<Event, (Rejection, Vec<u8>)> {
        match self.normalize_without_raw(&raw, meta) {
            Ok(mut event) => {
                // Held in windows and weighed by its length: no spare capacity (a no-op for
                // the spool's records, which are read to size).
                raw.shrink_to_fit();
                event.raw = raw;
                Ok(event)
            }
            Err(r) => Err((r, raw)),
        }
    }

    /// The event of a record, `raw` (its bytes as received) left empty for the caller.
    fn normalize_without_raw(&self, raw: &[u8], meta: &RecordMeta<'_>) -> Result<Event, Rejection> {
        let record = trim_end(raw);
        if record.is_empty() {
            return Err(Rejection {
                reason: "empty",
                detail: "record is empty".to_owned(),
            });
        }
        let record: Cow<'_, [u8]> = match std::str::from_utf8(record) {
            Ok(_) => Cow::Borrowed(record),
            Err(e) => match self.options.invalid_utf8 {
                InvalidUtf8Policy::DeadLetter => {
                    return Err(Rejection {
                        reason: "invalid_utf8",
                        detail: format!("invalid utf-8 at byte {}", e.valid_up_to()),
                    })
                }
                InvalidUtf8Policy::Replace => {
                    Cow::Owned(String::from_utf8_lossy(record).into_owned().into_bytes())
                }
            },
        };
        let opts = ParseOptions {
            reference_time: meta.received_at,
            default_offset: self.options.default_offset,
        };
        let mut msg = match syslog::parse(&record, &opts) {
            Ok(msg) => msg,
            Err(e) => {
                let rejection = Rejection {
                    reason: e.kind.as_str(),
                    detail: format!("{} at byte {}", e.detail, e.column),
                };
                if e.kind == SyslogErrorKind::NotSyslog {
                    return self.normalize_raw(&record, meta, rejection);
                }
                return Err(rejection);
            }
        };

        let stated = msg.timestamp.map(|t| t.with_timezone(&Utc));
        let too_late = stated.filter(|t| self.too_late(*t, meta));
        let timestamp = match (stated, too_late) {
            (Some(t), None) => t,
            _ => meta.received_at,
        };
        let mut event = Event::new(timestamp, meta.received_at);
        if let Some(t) = too_late {
            event.extra.insert(
                ORIGINAL_TIMESTAMP_FIELD.into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .into(),
            );
        }
        event.kind = Some("event".into());
        event.observer_type = non_empty(meta.observer_type);
        event.observer_id = non_empty(meta.observer_id);
        event.observer_ip = meta.peer;
        event.host_name = msg.hostname.take();
        // Definitions read the program name from the record: copied (inline when short).
        event.process_name = msg.appname.clone();
        if let Some(procid) = msg.procid.take() {
            match procid.parse::<u32>() {
                Ok(pid) => event.process_pid = Some(pid),
                Err(_) => {
                    event.extra.insert("log.syslog.procid".into(), procid);
                }
            }
        }
        event.syslog_facility = msg.facility;
        event.syslog_severity = msg.severity;
        event.severity = msg.severity;
        if let Some(msgid) = msg.msgid.take() {
            event.extra.insert("log.syslog.msgid".into(), msgid);
        }
        for (id, params) in &msg.structured_data {
            for (param, value) in params {
                event.extra.insert(
                    compact_str::format_compact!("sd.{id}.{param}"),
                    value.into(),
                );
            }
        }
        let has_message = msg.message.is_some();
        let text = msg.take_message_text().unwrap_or_default();
        let stated_or_received = event.timestamp;
        self.definitions
            .apply(&msg, &text, &mut event)
            .map_err(|e| Rejection {
                reason: e.reason(),
                detail: e.to_string(),
            })?;
        self.limit_record_time(&mut event, stated_or_received, meta);
        // A definition may have rewritten `message`; otherwise it is the MSG text.
        if has_message && event.message.is_none() {
            event.message = Some(text.into());
        }
        Ok(event)
    }

    /// A record that is not syslog (`record`: trimmed, valid UTF-8 or already replaced): an
    /// event when a raw definition takes it, else `not_syslog`.
    fn normalize_raw(
        &self,
        record: &[u8],
        meta: &RecordMeta<'_>,
        not_syslog: Rejection,
    ) -> Result<Event, Rejection> {
        if !self.definitions.has_raw() {
            return Err(not_syslog);
        }
        let Ok(text) = std::str::from_utf8(record) else {
            // Not reachable: invalid UTF-8 was rejected or replaced before parsing.
            return Err(not_syslog);
        };
        let mut event = Event::new(meta.received_at, meta.received_at);
        event.kind = Some("event".into());
        event.observer_type = non_empty(meta.observer_type);
        event.observer_id = non_empty(meta.observer_id);
        event.observer_ip = meta.peer;
        let matched = self
            .definitions
            .apply_raw(text, &mut event)
            .map_err(|e| Rejection {
                reason: e.reason(),
                detail: e.to_string(),
            })?;
        if matched.is_none() {
            return Err(not_syslog);
        }
        self.limit_record_time(&mut event, meta.received_at, meta);
        if event.message.is_none() {
            event.message = Some(text.into());
        }
        Ok(event)
    }

    /// A definition may have read the time from the record (`timestamp:`, anything but
    /// `before`): the same future limit applies to it as to a syslog header's time.
    fn limit_record_time(&self, event: &mut Event, before: DateTime<Utc>, meta: &RecordMeta<'_>) {
        if event.timestamp != before && self.too_late(event.timestamp, meta) {
            event.extra.insert(
                ORIGINAL_TIMESTAMP_FIELD.into(),
                event
                    .timestamp
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .into(),
            );
            event.timestamp = meta.received_at;
        }
    }
}

impl Normalizer {
    /// Whether a record's own time cannot be right: further past the receive time than
    /// [`NormalizeOptions::max_future_skew`], or before [`EARLIEST_PLAUSIBLE_SECS`] (a device
    /// whose clock reset to 1970, epoch seconds read as milliseconds). Such a time would put the
    /// event outside every correlation window, or push windows into the future.
    fn too_late(&self, t: DateTime<Utc>, meta: &RecordMeta<'_>) -> bool {
        t.timestamp() < EARLIEST_PLAUSIBLE_SECS
            || meta
                .received_at
                .checked_add_signed(self.options.max_future_skew)
                .is_some_and(|limit| t > limit)
    }
}

fn non_empty(s: &str) -> Option<Text> {
    (!s.is_empty()).then(|| Text::from(s))
}

/// The record without trailing `\r`, `\n` and `\0`.
fn trim_end(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    raw.get(..end).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syslog record's facts, received at the epoch.
    fn meta() -> RecordMeta<'static> {
        RecordMeta {
            observer_type: "syslog",
            observer_id: "x",
            peer: None,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn trailing_line_ends_and_nuls_are_trimmed() {
        assert_eq!(trim_end(b"abc\r\n\0"), b"abc");
        assert_eq!(trim_end(b"\n\n"), b"");
        assert_eq!(trim_end(b""), b"");
        assert_eq!(trim_end(b"a\nb"), b"a\nb");
    }

    /// A record handed over owned gives the event the borrowed path gives, its bytes as
    /// `raw`, and a rejected one gives its bytes back, whichever path (syslog, raw definition,
    /// not syslog, invalid UTF-8) decided.
    #[test]
    fn an_owned_record_normalizes_as_a_borrowed_one() {
        let n = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
        let meta = meta();
        let records: [&[u8]; 5] = [
            b"<38>Oct 11 22:14:15 host sshd[42]: Failed password for root from 10.0.0.9 port 22 ssh2\r\n",
            b"<13>1 2026-11-30T10:00:00Z host app - - - plain text",
            b"no header at all",
            b"\r\n",
            b"<13>Oct 11 22:14:15 host app: \xff\xfe",
        ];
        for raw in records {
            let borrowed = n.normalize(raw, &meta);
            match (n.normalize_owned(raw.to_vec(), &meta), borrowed) {
                (Ok(owned), Ok(borrowed)) => {
                    assert_eq!(owned, borrowed);
                    assert_eq!(owned.raw, raw);
                }
                (Err((r, back)), Err(want)) => {
                    assert_eq!(r, want);
                    assert_eq!(back, raw);
                }
                (owned, borrowed) => panic!("{owned:?} against {borrowed:?}"),
            }
        }
    }

    /// A syslog record's MSG is the end of its raw bytes (without line ends), so the codec
    /// stores the message once, as a length into `raw` (`codec` version 2), for RFC 3164, RFC
    /// 5424 alike; a trailing line end keeps it written out.
    #[test]
    fn a_syslog_message_is_the_end_of_its_raw_record() {
        let n = Normalizer::new(DefinitionSet::builtin(), NormalizeOptions::default());
        let meta = meta();
        let records: [&[u8]; 3] = [
            b"<38>Nov 28 10:00:01 srv01 sshd[4242]: Failed password for invalid user admin from 203.0.113.9 port 4022 ssh2",
            b"<165>1 2026-11-28T10:00:01.123456Z srv02 api-gw 77 ACCESS [req@32473 id=\"5\" route=\"/accounts\"] GET /v1/accounts 200 12ms",
            b"<13>1 2026-11-30T10:00:00Z host app - - - plain text",
        ];
        for raw in records {
            let e = n
                .normalize_owned(raw.to_vec(), &meta)
                .unwrap_or_else(|r| panic!("{r:?}"));
            let message = e.message.clone().unwrap_or_default();
            assert!(!message.is_empty());
            assert!(e.raw.ends_with(message.as_bytes()), "{message:?}");
            let bytes = crate::codec::to_vec(&e);
            assert_eq!(
                crate::codec::decode(&bytes).unwrap_or_else(|x| panic!("{x}")),
                e
            );
            let mut apart = e.clone();
            apart.raw.push(b'\n');
            assert!(
                crate::codec::to_vec(&apart).len() >= bytes.len() + message.len(),
                "{message:?} written once"
            );
        }
    }

    #[test]
    fn an_empty_record_is_rejected_as_empty() {
        let n = Normalizer::new(DefinitionSet::default(), NormalizeOptions::default());
        let meta = meta();
        assert_eq!(
            n.normalize(b"\r\n", &meta).map_err(|r| r.reason),
            Err("empty")
        );
    }

    #[test]
    fn invalid_utf8_is_rejected_with_its_offset() {
        let n = Normalizer::new(DefinitionSet::default(), NormalizeOptions::default());
        let meta = meta();
        let r = n.normalize(b"<34>abc\xff", &meta).err();
        assert_eq!(
            r,
            Some(Rejection {
                reason: "invalid_utf8",
                detail: "invalid utf-8 at byte 7".to_owned()
            })
        );
    }
}
