//! A compact binary form of [`Event`], for the places where an event is written and read back
//! by Vigil itself (the burst spool, stored flow rows): an order of magnitude cheaper than JSON
//! both ways, and exact (`raw` keeps its bytes, times keep their nanoseconds).
//!
//! Layout (version 2, integers little-endian): the version byte; `@timestamp` and
//! `event.ingested` as seconds (i64) and nanoseconds (u32); a 64-bit mask of which optional
//! fields are present, in declaration order; a flags byte; if its bit 0 is set (`message` is
//! the end of `raw`, as a syslog line's MSG is), the message's length as a u32, and the message
//! is not written again among the fields; each other present field (text as a u32 length and
//! UTF-8 bytes, an address as 4 or 6 then its octets, numbers at their width, a bool as one
//! byte); `extra` as a u32 count of key and value texts; `raw` as a u32 length and bytes.
//! Version 1 is the same without the flags byte. [`encode`] writes version 2 only when the
//! message is the end of `raw`, and version 1 otherwise (every event whose `raw` is omitted),
//! so that builds before version 2, which read version 1 only, read all of those.
//!
//! Invariants: [`decode`] of [`encode`] gives the same event; [`decode`] never panics on any
//! input and never allocates more than its input's length for one field (lengths are checked
//! against what is left); a field added to [`Event`] does not compile until it is listed here
//! (the encoder destructures the event without `..`). The layout is stored (offense events,
//! flows): a new field is appended at the end of the list, never inserted or reordered, and
//! any other change bumps [`VERSION`] (a test pins the bytes), keeping the older versions
//! readable.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::event::Event;

/// The layout version [`encode`] writes (its first byte).
pub const VERSION: u8 = 2;

/// The flags byte's bit for "`message` is the last bytes of `raw`" (version 2).
const MESSAGE_IN_RAW: u8 = 1;

/// The mask bit of `name` among `names`, 0 if it is not one of them ([`field_bit`] at run
/// time, and the tail field's bit at compile time).
const fn bit_of(names: &[&str], name: &str) -> u64 {
    let mut i = 0;
    while i < names.len() {
        let (a, b) = (names[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return 1 << i;
            }
        }
        i += 1;
    }
    0
}

/// Why bytes are not an encoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "encoded event: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

fn err(what: &str) -> CodecError {
    CodecError(what.to_owned())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(err("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        self.take(N)?.try_into().map_err(|_| err("truncated"))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        if n > self.0.len() {
            return Err(err("length beyond the end"));
        }
        Ok(n)
    }

    fn time(&mut self) -> Result<DateTime<Utc>, CodecError> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| err("time out of range"))
    }
}

/// A field's value in the layout.
trait Field: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // An event is far below 4 GiB (records are capped at the collectors).
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// A length-prefixed text (`put_bytes`), borrowed from the input.
fn get_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, CodecError> {
    let n = r.len()?;
    std::str::from_utf8(r.take(n)?).map_err(|_| err("text is not UTF-8"))
}

impl Field for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        get_str(r).map(str::to_owned)
    }
}

impl Field for crate::Text {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        get_str(r).map(crate::Text::new)
    }
}

impl Field for IpAddr {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.array::<1>()? {
            [4] => Ok(IpAddr::from(r.array::<4>()?)),
            [6] => Ok(IpAddr::from(r.array::<16>()?)),
            _ => Err(err("address tag")),
        }
    }
}

impl Field for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.array::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(err("bool")),
        }
    }
}

macro_rules! number_fields {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
number_fields!(u8, u16, u32, u64);

/// Takes the next presence bit.
fn present(mask: &mut u64) -> bool {
    let bit = *mask & 1 == 1;
    *mask >>= 1;
    bit
}

/// Sets a decoded field (a rare one only when present, so that none boxes nothing).
macro_rules! codec_set {
    (core, $event:ident, $field:ident) => {
        $event.$field = $field;
    };
    (rare, $event:ident, $field:ident) => {
        if $field.is_some() {
            $event.rare_mut().$field = $field;
        }
    };
}

macro_rules! event_codec {
    (tail $tail:ident; $($place:ident $field:ident),* $(,)?) => {
        const _: () = assert!(FIELD_NAMES.len() <= 64, "one mask bit per field");

        /// The optional fields' names, in mask bit order.
        const FIELD_NAMES: &[&str] = &[$(stringify!($field)),*];

        /// The mask bit of the field that may be written as the end of `raw`.
        const TAIL_BIT: u64 = bit_of(FIELD_NAMES, stringify!($tail));
        const _: () = assert!(TAIL_BIT != 0, "the tail field is one of the fields");

        /// Appends `event`'s encoding to `out`.
        pub fn encode(event: &Event, out: &mut Vec<u8>) {
            encode_omitting(event, Omit::NOTHING, out);
        }

        /// Appends `event`'s encoding to `out`, as if the fields in `omit` were absent (and
        /// `raw` empty, if `omit.raw`): for a store that keeps them in columns of their own
        /// and sets them again on reading.
        pub fn encode_omitting(event: &Event, omit: Omit, out: &mut Vec<u8>) {
            encode_with(event, omit, true, out);
        }

        /// Appends `event`'s encoding in version 1's layout (the message written out even
        /// when it ends `raw`): what builds before version 2 read, for the records an upgrade
        /// writes for them (`bus.wire = "json"`).
        pub fn encode_version_1(event: &Event, out: &mut Vec<u8>) {
            encode_with(event, Omit::NOTHING, false, out);
        }

        fn encode_with(event: &Event, omit: Omit, tail_allowed: bool, out: &mut Vec<u8>) {
            let (timestamp, ingested, extra, raw) =
                (&event.timestamp, &event.ingested, &event.extra, &event.raw);
            $(let $field = &crate::event_field!($place, event, $field);)*
            // Version 2 only when it saves the message: without the flag the layout is version
            // 1's, which builds before version 2 read (ClickHouse rows leave `raw` out, so
            // theirs never need it).
            let version_at = out.len();
            out.push(1);
            for t in [timestamp, ingested] {
                out.extend_from_slice(&t.timestamp().to_le_bytes());
                out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
            }
            let mut mask = 0u64;
            for (i, set) in [$($field.is_some()),*].into_iter().enumerate() {
                if set {
                    mask |= 1 << i;
                }
            }
            mask &= !omit.fields;
            out.extend_from_slice(&mask.to_le_bytes());
            // A message that ends the raw record (a syslog line's MSG) is not written twice:
            // its length says which end of `raw` it is.
            let tail = if tail_allowed && !omit.raw && mask & TAIL_BIT != 0 {
                $tail
                    .as_ref()
                    .filter(|m| raw.ends_with(m.as_bytes()))
                    .map(|m| m.len())
            } else {
                None
            };
            if let Some(n) = tail {
                if let Some(v) = out.get_mut(version_at) {
                    *v = VERSION;
                }
                out.push(MESSAGE_IN_RAW);
                out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
            }
            let $tail: &Option<crate::Text> = if tail.is_some() { &None } else { $tail };
            // The fields the mask keeps, taken bit by bit as `decode` reads them.
            let mut keep = mask;
            $(if present(&mut keep) {
                if let Some(v) = $field {
                    v.put(out);
                }
            })*
            out.extend_from_slice(&u32::try_from(extra.len()).unwrap_or(u32::MAX).to_le_bytes());
            for (k, v) in extra {
                put_bytes(out, k.as_bytes());
                put_bytes(out, v.as_bytes());
            }
            put_bytes(out, if omit.raw { &[] } else { raw });
        }

        /// The mask bit of an optional field, by its name in [`Event`] (`"message"`,
        /// `"host_name"`); `None` for a name that is not one.
        pub fn field_bit(name: &str) -> Option<u64> {
            Some(bit_of(FIELD_NAMES, name)).filter(|bit| *bit != 0)
        }

        /// The event `bytes` encode (all of them).
        pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
            let mut r = Reader(bytes);
            let [version] = r.array::<1>()?;
            if !(1..=VERSION).contains(&version) {
                return Err(CodecError(format!(
                    "version {version} (this build reads 1 to {VERSION})"
                )));
            }
            let timestamp = r.time()?;
            let ingested = r.time()?;
            let mut mask = u64::from_le_bytes(r.array()?);
            let flags = if version >= 2 { r.array::<1>()?[0] } else { 0 };
            if flags & !MESSAGE_IN_RAW != 0 {
                return Err(err("unknown flags"));
            }
            let mut tail = None;
            if flags & MESSAGE_IN_RAW != 0 {
                if mask & TAIL_BIT == 0 {
                    return Err(err("message in raw without a message"));
                }
                tail = Some(u32::from_le_bytes(r.array()?) as usize);
                // Not among the fields that follow.
                mask &= !TAIL_BIT;
            }
            $(let $field = if present(&mut mask) { Some(Field::get(&mut r)?) } else { None };)*
            if mask != 0 {
                return Err(err("unknown fields"));
            }
            let entries = u32::from_le_bytes(r.array()?);
            let mut extra = crate::event::Extra::new();
            for _ in 0..entries {
                let k = crate::Text::get(&mut r)?;
                let v = crate::Text::get(&mut r)?;
                extra.push_sorted(k, v);
            }
            let n = r.len()?;
            let raw = r.take(n)?.to_vec();
            if !r.0.is_empty() {
                return Err(err("bytes after the end"));
            }
            let $tail = match tail {
                Some(n) => {
                    let end = raw
                        .len()
                        .checked_sub(n)
                        .and_then(|at| raw.get(at..))
                        .ok_or_else(|| err("message longer than raw"))?;
                    let text = std::str::from_utf8(end).map_err(|_| err("text is not UTF-8"))?;
                    Some(crate::Text::new(text))
                }
                None => $tail,
            };
            let mut event = Event::new(timestamp, ingested);
            $(codec_set!($place, event, $field);)*
            event.extra = extra;
            event.raw = raw;
            Ok(event)
        }
    };
}

event_codec!(
    tail message;
    core kind,
    core category,
    core event_type,
    core outcome,
    core action,
    core severity,
    core sequence,
    core dataset,
    core observer_id,
    core observer_type,
    core observer_ip,
    core host_name,
    core source_ip,
    core source_port,
    core destination_ip,
    core destination_port,
    core network_transport,
    core network_protocol,
    core network_bytes,
    core network_packets,
    core network_community_id,
    rare source_geo_country_iso_code,
    rare source_geo_country_name,
    rare source_geo_city_name,
    rare source_geo_continent_code,
    core source_as_number,
    rare source_as_organization_name,
    core source_zone,
    core source_internal,
    rare destination_geo_country_iso_code,
    rare destination_geo_country_name,
    rare destination_geo_city_name,
    rare destination_geo_continent_code,
    core destination_as_number,
    rare destination_as_organization_name,
    core destination_zone,
    core destination_internal,
    core network_direction,
    core user_name,
    core process_name,
    core process_pid,
    rare http_request_method,
    rare url_path,
    rare url_original,
    rare url_query,
    rare url_domain,
    rare http_version,
    core http_response_bytes,
    rare user_agent_original,
    core duration_ns,
    core http_response_status_code,
    rare api_key,
    rare api_consumer,
    rare api_route,
    core syslog_facility,
    core syslog_severity,
    core message,
);

/// What [`encode_omitting`] leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Omit {
    /// Optional fields, by their mask bits ([`field_bit`]).
    pub fields: u64,
    /// The raw record (encoded as empty).
    pub raw: bool,
}

impl Omit {
    /// Nothing: [`encode`].
    pub const NOTHING: Omit = Omit {
        fields: 0,
        raw: false,
    };
}

/// [`encode`] into a new buffer.
pub fn to_vec(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + event.raw.len());
    encode(event, &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The core fields besides the times and the raw record.
    fn settable() -> impl Iterator<Item = &'static str> {
        crate::event::CORE_FIELDS.iter().copied().filter(|n| {
            !matches!(
                *n,
                "@timestamp" | "event.ingested" | "event.original" | "event.sequence"
            )
        })
    }

    /// Every field set, non-UTF-8 raw bytes, nanosecond times.
    fn full() -> Event {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        let mut e = Event::new(t, t + chrono::Duration::nanoseconds(7));
        // Every core field through its wire name, so one added later is covered too.
        for (i, name) in settable().enumerate() {
            let value = match name {
                n if n.ends_with(".ip") => format!("2001:db8::{i}"),
                n if n.ends_with("internal") => "true".into(),
                n if n.ends_with(".port")
                    || n.ends_with(".bytes")
                    || n.ends_with(".packets")
                    || n.ends_with(".number")
                    || n.ends_with(".pid")
                    || n.ends_with(".code")
                    || n == "http.response.status_code"
                    || n.ends_with(".severity")
                    || n.ends_with(".duration") =>
                {
                    (i % 7 + 1).to_string()
                }
                _ => format!("value {i} é"),
            };
            e.set(name, &value).unwrap();
        }
        // The pipeline's own number (not settable by a parser).
        e.sequence = Some(7);
        e.extra.insert("sshd.auth_method".into(), "password".into());
        e.extra.insert("".into(), "".into());
        e.raw = vec![0xff, 0xfe, b'a', 0];
        e
    }

    #[test]
    fn every_field_round_trips_exactly() {
        let e = full();
        let bytes = to_vec(&e);
        assert_eq!(decode(&bytes).unwrap(), e);
        let empty = Event::new(e.timestamp, e.ingested);
        assert_eq!(decode(&to_vec(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_core_field_is_in_the_mask() {
        let e = full();
        let mut bytes = to_vec(&e);
        let mask = u64::from_le_bytes(bytes[25..33].try_into().unwrap());
        assert_eq!(
            mask.count_ones() as usize,
            settable().count() + 1,
            "every optional field (and event.sequence) is set and encoded"
        );
        // A bit past the last field is refused, not ignored.
        bytes[32] |= 0x80;
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn the_layout_is_pinned() {
        let t = Utc.timestamp_opt(0, 0).unwrap();
        let mut e = Event::new(t, t);
        e.kind = Some("a".into());
        e.source_port = Some(1);
        e.extra.insert("k".into(), "v".into());
        e.raw = b"r".to_vec();
        // Nothing to save: version 1's layout (no flags byte), which earlier builds read.
        let mut want = vec![1];
        want.extend_from_slice(&[0; 24]);
        // kind is bit 0, source.port bit 13.
        want.extend_from_slice(&[0x01, 0x20, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, b'a']);
        want.extend_from_slice(&[1, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
        want.extend_from_slice(&[1, 0, 0, 0, b'r']);
        assert_eq!(to_vec(&e), want);
        // A message ending the raw record: flag bit 0 and its length, not its bytes.
        e.message = Some("lo".into());
        e.raw = b"hello".to_vec();
        let mut want = vec![2];
        want.extend_from_slice(&[0; 24]);
        // message is bit 56.
        want.extend_from_slice(&[0x01, 0x20, 0, 0, 0, 0, 0, 0x01]);
        want.extend_from_slice(&[1, 2, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, b'a']);
        want.extend_from_slice(&[1, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
        want.extend_from_slice(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(to_vec(&e), want);
        assert_eq!(decode(&want).unwrap(), e);
    }

    /// Version 1 (no flags byte, the message always among the fields), as earlier builds
    /// stored it, still reads.
    #[test]
    fn version_1_still_reads() {
        let t = Utc.timestamp_opt(0, 0).unwrap();
        let mut e = Event::new(t, t);
        e.kind = Some("a".into());
        e.message = Some("lo".into());
        e.raw = b"hello".to_vec();
        let mut v1 = vec![1];
        v1.extend_from_slice(&[0; 24]);
        v1.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, 0x01]);
        v1.extend_from_slice(&[1, 0, 0, 0, b'a']);
        v1.extend_from_slice(&[2, 0, 0, 0, b'l', b'o']);
        v1.extend_from_slice(&[0, 0, 0, 0]);
        v1.extend_from_slice(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(decode(&v1).unwrap(), e);
        assert!(
            to_vec(&e).len() < v1.len(),
            "version 2 writes the message once"
        );
    }

    /// A message is written as the end of `raw` only when it is exactly that (and raw is
    /// kept); any other message, and every message when raw is omitted, round-trips as text.
    #[test]
    fn message_as_the_end_of_raw_round_trips_and_only_when_it_is() {
        let t = Utc.timestamp_opt(1_700_000_000, 5).unwrap();
        let line = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick é";
        let cases: [(&str, &[u8]); 6] = [
            ("'su root' failed for lonvick é", line.as_bytes()),
            (line, line.as_bytes()),
            ("", line.as_bytes()),
            ("'su root' failed", line.as_bytes()),
            ("é", &[0xff, 0xc3, 0xa9]),
            ("longer than the raw record", b"record"),
        ];
        for (message, raw) in cases {
            let mut e = Event::new(t, t);
            e.message = Some(message.into());
            e.raw = raw.to_vec();
            let bytes = to_vec(&e);
            assert_eq!(decode(&bytes).unwrap(), e, "{message:?}");
            let flagged = bytes[0] == 2;
            assert_eq!(flagged, raw.ends_with(message.as_bytes()), "{message:?}");
            if flagged {
                assert_eq!(bytes[33], MESSAGE_IN_RAW);
            }
            // Version 1 on request, the same event.
            let mut v1 = Vec::new();
            encode_version_1(&e, &mut v1);
            assert_eq!(v1[0], 1);
            assert_eq!(decode(&v1).unwrap(), e, "{message:?}");
            let mut without_raw = Vec::new();
            encode_omitting(
                &e,
                Omit {
                    fields: 0,
                    raw: true,
                },
                &mut without_raw,
            );
            assert_eq!(
                without_raw[0], 1,
                "raw omitted: version 1, the message written out"
            );
            let mut want = e.clone();
            want.raw.clear();
            assert_eq!(decode(&without_raw).unwrap(), want);
        }
    }

    /// Flags that do not fit the rest are errors, not panics or wrong events.
    #[test]
    fn bad_flags_are_errors() {
        let t = Utc.timestamp_opt(0, 0).unwrap();
        let mut e = Event::new(t, t);
        e.message = Some("lo".into());
        e.raw = b"hello".to_vec();
        let good = to_vec(&e);
        assert_eq!(good[33], MESSAGE_IN_RAW);
        let mut unknown = good.clone();
        unknown[33] |= 0x02;
        assert!(decode(&unknown).unwrap_err().0.contains("flags"));
        let mut too_long = good.clone();
        too_long[34] = 6;
        assert!(decode(&too_long).unwrap_err().0.contains("longer than raw"));
        let mut mid_char = Event::new(t, t);
        mid_char.raw = "é".as_bytes().to_vec();
        mid_char.message = Some("é".into());
        let mut bytes = to_vec(&mid_char);
        assert_eq!(bytes[34], 2);
        bytes[34] = 1;
        assert!(decode(&bytes).unwrap_err().0.contains("UTF-8"));
        // The flag without the message's mask bit.
        let mut no_bit = good;
        no_bit[32] = 0;
        assert!(decode(&no_bit).is_err());
    }

    #[test]
    fn omitted_fields_decode_as_absent_and_the_rest_as_encoded() {
        let e = full();
        let bits = ["message", "host_name", "observer_type"]
            .map(|n| field_bit(n).unwrap_or_else(|| panic!("{n} is a field")));
        assert_eq!(field_bit("not_a_field"), None);
        assert_eq!(field_bit("kind"), Some(1), "kind is the first bit");
        let omit = Omit {
            fields: bits.iter().fold(0, |m, b| m | b),
            raw: true,
        };
        let mut bytes = Vec::new();
        encode_omitting(&e, omit, &mut bytes);
        let mut want = e.clone();
        want.message = None;
        want.host_name = None;
        want.observer_type = None;
        want.raw.clear();
        assert_eq!(decode(&bytes).unwrap(), want);
        assert!(bytes.len() < to_vec(&e).len());
        // Omitting a field the event lacks changes nothing.
        let mut bare = e.clone();
        bare.message = None;
        let mut a = Vec::new();
        encode_omitting(
            &bare,
            Omit {
                fields: bits[0],
                raw: false,
            },
            &mut a,
        );
        assert_eq!(a, to_vec(&bare));
        // Nothing omitted is `encode`.
        let mut b = Vec::new();
        encode_omitting(&e, Omit::NOTHING, &mut b);
        assert_eq!(b, to_vec(&e));
    }

    #[test]
    fn every_truncation_and_bad_header_is_an_error() {
        let bytes = to_vec(&full());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut other = bytes.clone();
        other[0] = VERSION + 1;
        assert!(decode(&other).unwrap_err().0.contains("version"));
        let mut zero = bytes;
        zero[0] = 0;
        assert!(decode(&zero).unwrap_err().0.contains("version"));
    }
}
