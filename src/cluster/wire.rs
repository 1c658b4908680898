//! What travels on the Kafka topics of the scaled-out mode: a routed match with its event
//! (stage 1 → stage 2), a [`vigil_correlate::Detection`] with its events (either stage → the
//! offense stage), events and dead letters (stage 1 → the store stage), and the topic names.
//!
//! Items are packed many to a Kafka record ([`pack`]), in one of two [`WireFormat`]s, chosen
//! by the writer (`bus.wire`): `binary` (the default) carries events in the event codec
//! ([`vigil_parsers::codec`]), exact (raw bytes that are not UTF-8 arrive as sent) and an order
//! of magnitude cheaper to write and read than JSON; `json` keeps the topics readable with
//! `kcat` and any consumer, but an event's raw bytes travel as text (invalid UTF-8 replaced).
//! Readers take both whatever they write themselves ([`unpack`] tells them apart by the first
//! byte), so a deployment can change the setting one process at a time.
//!
//! Binary record: [`BINARY_PACK`], then each item as a u32 (little-endian) length and its
//! bytes. Items: an event is its codec bytes; a match is its routing (text as u32 length and
//! UTF-8, numbers little-endian), its origin and the event; a detection is its origin, its
//! fields without the events (length first; binary since [`BINARY_DETECTION`], JSON before
//! and still read), then a u32 count of events and each event's codec bytes (length first); a
//! dead letter is its JSON (its bytes are base64 there).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vigil_correlate::{Detection, DetectionKind, Routed};
use vigil_parsers::Event;

use crate::bytes::{put_long, put_sized};

/// The topics of one deployment, from `bus.topic_prefix`, and how this process writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Routed single-event matches, keyed by correlation and group values.
    pub matches: String,
    /// Detections, keyed by offense index value (one offense stage owner per index).
    pub detections: String,
    /// Normalized events for storage, keyed by log source.
    pub events: String,
    /// Dead letters, keyed by log source.
    pub dead_letters: String,
    /// How this process writes items (`bus.wire`); it reads both.
    pub wire: WireFormat,
}

impl Topics {
    /// `<prefix>.matches`, `<prefix>.detections`, `<prefix>.events`, `<prefix>.dead_letters`.
    pub fn new(prefix: &str, wire: WireFormat) -> Topics {
        Topics {
            matches: format!("{prefix}.matches"),
            detections: format!("{prefix}.detections"),
            events: format!("{prefix}.events"),
            dead_letters: format!("{prefix}.dead_letters"),
            wire,
        }
    }

    /// Every topic.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.matches,
            &self.detections,
            &self.events,
            &self.dead_letters,
        ]
    }
}

/// How items are written on the topics (`bus.wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Length-prefixed binary items, events in the event codec: exact and cheap.
    #[default]
    Binary,
    /// A JSON array of items per record: readable by any consumer; raw bytes as text.
    Json,
}

impl WireFormat {
    /// One item in this format; `None` if it cannot be written (not for Vigil's own types,
    /// which always serialize).
    pub fn encode<T: WireItem>(self, item: &T) -> Option<Vec<u8>> {
        match self {
            WireFormat::Json => serde_json::to_vec(item).ok(),
            WireFormat::Binary => {
                // Most items are an event or carry one: a few hundred bytes.
                let mut out = Vec::with_capacity(512);
                item.put(&mut out).ok()?;
                Some(out)
            }
        }
    }
}

/// First byte of a binary packed record (a JSON one starts with `[`).
pub const BINARY_PACK: u8 = 0xB1;

/// Why a record on a Vigil topic cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable record: {0}")]
pub struct WireError(pub String);

fn wire_err(what: impl std::fmt::Display) -> WireError {
    WireError(what.to_string())
}

/// An item that travels on a topic: JSON through serde, and a binary form of its own.
pub trait WireItem: Sized + Serialize + DeserializeOwned {
    /// Appends the binary form.
    fn put(&self, out: &mut Vec<u8>) -> Result<(), WireError>;
    /// Reads the binary form from all of `bytes`. Never panics, whatever the bytes.
    fn get(bytes: &[u8]) -> Result<Self, WireError>;
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Items are far below 4 GiB (records are capped at the collectors).
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.as_bytes());
}

/// A presence byte, then the number's 8 bytes (an `i64` as the same bits).
fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    put_opt_u64(out, v.map(|v| v as u64));
}

fn put_texts(out: &mut Vec<u8>, texts: &[String]) {
    put_len(out, texts.len());
    for t in texts {
        put_text(out, t);
    }
}

/// Reads a binary item: every length is checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(wire_err("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| wire_err("truncated"))
    }

    fn sized(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self) -> Result<String, WireError> {
        std::str::from_utf8(self.sized()?)
            .map(str::to_owned)
            .map_err(|_| wire_err("text is not UTF-8"))
    }

    fn origin(&mut self) -> Result<Option<Origin>, WireError> {
        match self.array::<1>()? {
            [0] => Ok(None),
            [1] => Ok(Some(Origin {
                partition: i32::from_le_bytes(self.array()?),
                offset: i64::from_le_bytes(self.array()?),
                n: u32::from_le_bytes(self.array()?),
            })),
            _ => Err(wire_err("origin tag")),
        }
    }

    fn event(bytes: &[u8]) -> Result<Event, WireError> {
        vigil_parsers::codec::decode(bytes).map_err(wire_err)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count of items that take at least `min` bytes each: refused when the bytes left
    /// cannot hold them, so a corrupt count never makes a large allocation.
    fn count(&mut self, min: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / min.max(1) {
            return Err(wire_err("count beyond the end"));
        }
        Ok(n)
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.array::<1>()? {
            [0] => Ok(None),
            [1] => Ok(Some(u64::from_le_bytes(self.array()?))),
            _ => Err(wire_err("presence tag")),
        }
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, WireError> {
        Ok(self.opt_u64()?.map(|v| v as i64))
    }

    fn texts(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.text()?);
        }
        Ok(out)
    }
}

fn put_origin(out: &mut Vec<u8>, origin: Option<Origin>) {
    match origin {
        None => out.push(0),
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.partition.to_le_bytes());
            out.extend_from_slice(&o.offset.to_le_bytes());
            out.extend_from_slice(&o.n.to_le_bytes());
        }
    }
}

impl WireItem for Event {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        vigil_parsers::codec::encode(self, out);
        Ok(())
    }
    fn get(bytes: &[u8]) -> Result<Self, WireError> {
        Reader::event(bytes)
    }
}

impl WireItem for crate::store::DeadLetter {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        serde_json::to_writer(out, self).map_err(wire_err)
    }
    fn get(bytes: &[u8]) -> Result<Self, WireError> {
        serde_json::from_slice(bytes).map_err(wire_err)
    }
}

/// The binary item of a match of an event already encoded (`event`: its binary item, the
/// event codec): the same bytes as [`WireFormat::encode`] of the [`MatchRecord`], without
/// copying or encoding the event again for each of its matches.
pub fn binary_match(routed: &Routed, origin: Option<Origin>, event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + 64);
    put_match_head(routed, origin, &mut out);
    out.extend_from_slice(event);
    out
}

fn put_match_head(r: &Routed, origin: Option<Origin>, out: &mut Vec<u8>) {
    put_text(out, &r.correlation);
    put_texts(out, &r.group);
    out.extend_from_slice(&r.bits.to_le_bytes());
    out.extend_from_slice(&(r.pos as u64).to_le_bytes());
    put_origin(out, origin);
}

impl WireItem for MatchRecord {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_match_head(&self.routed, self.origin, out);
        vigil_parsers::codec::encode(&self.event, out);
        Ok(())
    }
    fn get(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let correlation = r.text()?;
        let group = r.texts()?;
        let bits = u64::from_le_bytes(r.array()?);
        let pos = usize::try_from(u64::from_le_bytes(r.array()?))
            .map_err(|_| wire_err("position out of range"))?;
        let origin = r.origin()?;
        Ok(MatchRecord {
            routed: Routed {
                correlation,
                group,
                bits,
                pos,
            },
            event: std::sync::Arc::new(Reader::event(r.0)?),
            origin,
        })
    }
}

/// First byte of a binary detection head (a JSON one, as builds before it wrote, starts with
/// `{`).
pub const BINARY_DETECTION: u8 = 0xD1;

fn put_time(out: &mut Vec<u8>, t: &chrono::DateTime<chrono::Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

/// A detection without its events: [`BINARY_DETECTION`]; its kind (0 new, 1 update); rule,
/// title; level (presence byte, text); tags (count, texts); group (count, then field and
/// value texts); index field and value; window start, first and last seen (each i64 seconds
/// and u32 nanoseconds); count, fresh (u64); distinct, sum (presence byte, u64); relevance,
/// credibility, severity (u8).
fn put_detection_head(d: &Detection, out: &mut Vec<u8>) {
    out.push(BINARY_DETECTION);
    out.push(match d.kind {
        DetectionKind::New => 0,
        DetectionKind::Update => 1,
    });
    put_text(out, &d.rule);
    put_text(out, &d.title);
    match &d.level {
        None => out.push(0),
        Some(level) => {
            out.push(1);
            put_text(out, level);
        }
    }
    put_texts(out, &d.tags);
    put_len(out, d.group.len());
    for (field, value) in &d.group {
        put_text(out, field);
        put_text(out, value);
    }
    put_text(out, &d.index_field);
    put_text(out, &d.index_value);
    for t in [&d.window_start, &d.first_seen, &d.last_seen] {
        put_time(out, t);
    }
    out.extend_from_slice(&d.count.to_le_bytes());
    out.extend_from_slice(&d.fresh.to_le_bytes());
    put_opt_u64(out, d.distinct);
    put_opt_u64(out, d.sum);
    out.extend_from_slice(&[d.relevance, d.credibility, d.severity]);
}

/// [`put_detection_head`] read back (all of `bytes`), its events empty.
fn detection_head(bytes: &[u8]) -> Result<Detection, WireError> {
    let mut r = Reader(bytes);
    if r.array::<1>()? != [BINARY_DETECTION] {
        return Err(wire_err("detection head tag"));
    }
    let kind = match r.array::<1>()? {
        [0] => DetectionKind::New,
        [1] => DetectionKind::Update,
        _ => return Err(wire_err("detection kind")),
    };
    let rule = r.text()?;
    let title = r.text()?;
    let level = match r.array::<1>()? {
        [0] => None,
        [1] => Some(r.text()?),
        _ => return Err(wire_err("presence tag")),
    };
    let tags = r.texts()?;
    let n = r.count(8)?;
    let mut group = Vec::with_capacity(n);
    for _ in 0..n {
        group.push((r.text()?, r.text()?));
    }
    let index_field = r.text()?;
    let index_value = r.text()?;
    let mut time = || -> Result<chrono::DateTime<chrono::Utc>, WireError> {
        let secs = r.i64()?;
        let nanos = r.u32()?;
        chrono::DateTime::from_timestamp(secs, nanos).ok_or_else(|| wire_err("time out of range"))
    };
    let (window_start, first_seen, last_seen) = (time()?, time()?, time()?);
    let count = u64::from_le_bytes(r.array()?);
    let fresh = u64::from_le_bytes(r.array()?);
    let (distinct, sum) = (r.opt_u64()?, r.opt_u64()?);
    let [relevance, credibility, severity] = r.array::<3>()?;
    if !r.0.is_empty() {
        return Err(wire_err("bytes after the detection head"));
    }
    Ok(Detection {
        kind,
        rule: rule.into(),
        title: title.into(),
        level: level.map(Into::into),
        tags: tags.into(),
        group,
        index_field: index_field.into(),
        index_value,
        window_start,
        first_seen,
        last_seen,
        count,
        fresh,
        distinct,
        sum,
        events: Vec::new(),
        relevance,
        credibility,
        severity,
    })
}

impl WireItem for DetectionRecord {
    fn put(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_origin(out, self.origin);
        put_sized(out, |out| put_detection_head(&self.detection, out));
        put_len(out, self.detection.events.len());
        for e in &self.detection.events {
            put_sized(out, |out| vigil_parsers::codec::encode(e, out));
        }
        Ok(())
    }
    fn get(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let origin = r.origin()?;
        let head = r.sized()?;
        // Builds before the binary head wrote it as JSON.
        let mut detection = match head.first() {
            Some(&BINARY_DETECTION) => detection_head(head)?,
            _ => serde_json::from_slice(head).map_err(wire_err)?,
        };
        let n = r.count(4)?;
        detection.events = Vec::with_capacity(n);
        for _ in 0..n {
            detection
                .events
                .push(std::sync::Arc::new(Reader::event(r.sized()?)?));
        }
        if !r.0.is_empty() {
            return Err(wire_err("bytes after the end"));
        }
        Ok(DetectionRecord { detection, origin })
    }
}

/// First byte of a binary checkpoint body (a JSON one, as builds before it wrote, starts
/// with `{`).
pub const BINARY_CHECKPOINT: u8 = 0xC1;

/// First byte of a compressed checkpoint body: then the binary body's length (u32) and the
/// body ([`BINARY_CHECKPOINT`] first) as one LZ4 block.
pub const COMPRESSED_CHECKPOINT: u8 = 0xC2;

/// First byte of a checkpoint body streamed as an LZ4 frame (`bytes::write_framed`: a
/// content checksum, then an end mark) whose content is the binary body ([`BINARY_CHECKPOINT`]
/// first). Written through a 1 MiB buffer: the whole body never sits in memory uncompressed.
pub const FRAMED_CHECKPOINT: u8 = 0xC3;

/// A matches partition's checkpoint (`checkpoints.state` in ClickHouse): its windows and its
/// marks.
///
/// Binary: [`BINARY_CHECKPOINT`]; the snapshot's version (u32), its
/// time (a presence byte, then i64); a u32 count of windows, each its correlation name, its
/// `group-by` names (a u32 count of texts), its watermark (presence byte, i64) and a u32 count
/// of keys, each its group values (count and texts), a u32 count of slots (time i64, tag u64,
/// a flags byte: 1 reported, 2 event held, then the event's codec bytes, length first) and
/// its firing state (presence byte, window start i64, index value text); then the marks, a
/// u32 count of (partition i32, offset i64, n u32). Numbers little-endian, texts a u32
/// length and UTF-8. The events are exact (JSON carried their bytes as text) and the whole
/// several times cheaper to write and read: the checkpoint is the largest cost of the
/// correlate stage after the rules themselves.
///
/// This build writes the binary body compressed ([`CorrelateState::to_compressed`],
/// [`FRAMED_CHECKPOINT`]): a partition's windows hold up to the engine's payload budget
/// of events, and the whole state is saved every `bus.checkpoint_secs`. Held events compress
/// about tenfold, and ClickHouse's work on a row (insert, then merges of the versions) follows
/// its bytes. Builds before it wrote one LZ4 block of the whole body
/// ([`COMPRESSED_CHECKPOINT`], still read): building that body, growing by doubling into fresh
/// pages, was a quarter of the correlate stage's time. Builds before the frame cannot read
/// it: `bus.wire = "json"` while upgrading writes the plain binary body, which they read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelateState {
    /// The partition's windows.
    pub windows: vigil_correlate::EngineSnapshot,
    /// Chained matches applied, per input partition.
    pub marks: Marks,
}

impl CorrelateState {
    /// The binary body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.push(BINARY_CHECKPOINT);
        let keep_all = &mut |_: &mut Vec<u8>| Ok::<(), std::convert::Infallible>(());
        // Held events in the codec's version 1: the plain body is what `bus.wire = "json"`
        // writes for builds before codec version 2 and the frame, during an upgrade.
        let v1 = vigil_parsers::codec::encode_version_1;
        put_snapshot(&mut out, &self.windows, v1, keep_all).unwrap_or_else(|never| match never {});
        put_marks(&mut out, &self.marks);
        out
    }

    /// The binary body, streamed as an LZ4 frame behind [`FRAMED_CHECKPOINT`].
    pub fn to_compressed(&self) -> Vec<u8> {
        let framed = crate::bytes::write_framed(vec![FRAMED_CHECKPOINT], |buf, flush| {
            buf.push(BINARY_CHECKPOINT);
            let encode = vigil_parsers::codec::encode;
            put_snapshot(buf, &self.windows, encode, &mut |b: &mut Vec<u8>| flush(b))?;
            put_marks(buf, &self.marks);
            Ok(())
        });
        // Writing to memory does not fail; the uncompressed body if it ever did.
        framed.unwrap_or_else(|_| self.to_bytes())
    }

    /// A body in any form: compressed, binary, or JSON as builds before them wrote. Never
    /// panics, and never allocates more than LZ4 can expand the bytes given to.
    pub fn from_bytes(bytes: &[u8]) -> Result<CorrelateState, WireError> {
        // One LZ4 sequence expands to at most 255 bytes per byte of input (and a little).
        let most = |n: usize| n.saturating_mul(255).saturating_add(64);
        let compressed = match bytes.split_first() {
            Some((&FRAMED_CHECKPOINT, frame)) => {
                Some(crate::bytes::read_framed(frame, most(frame.len()) as u64))
            }
            Some((&COMPRESSED_CHECKPOINT, block)) => {
                Some(crate::bytes::lz4_decompress(block, most(block.len())))
            }
            _ => None,
        };
        if let Some(body) = compressed {
            let body = body.map_err(|e| wire_err(format!("compressed checkpoint: {e}")))?;
            return match body.first() {
                Some(&BINARY_CHECKPOINT) => CorrelateState::from_bytes(&body),
                _ => Err(wire_err("compressed checkpoint is not a binary body")),
            };
        }
        let Some((&BINARY_CHECKPOINT, rest)) = bytes.split_first() else {
            return serde_json::from_slice(bytes).map_err(wire_err);
        };
        let mut r = Reader(rest);
        let windows = read_snapshot(&mut r)?;
        let n = r.count(16)?;
        let mut marks = Marks::default();
        for _ in 0..n {
            let p = i32::from_le_bytes(r.array()?);
            let offset = r.i64()?;
            let seq = r.u32()?;
            marks.0.insert(p, (offset, seq));
        }
        if !r.0.is_empty() {
            return Err(wire_err("bytes after the end"));
        }
        Ok(CorrelateState { windows, marks })
    }
}

/// Appends the marks: a u32 count of (partition i32, offset i64, n u32).
fn put_marks(out: &mut Vec<u8>, marks: &Marks) {
    put_len(out, marks.0.len());
    for (p, (offset, n)) in &marks.0 {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Appends the binary form of `snap` (a checkpoint's windows, [`CorrelateState`]) to `out`,
/// held events written by `encode` (the event codec, or its version 1), handing `out` to
/// `flush` after any key that leaves 1 MiB or more in it, so that a writer can stream a large
/// state through a small buffer ([`CorrelateState::to_bytes`] keeps all).
pub fn put_snapshot<E>(
    out: &mut Vec<u8>,
    snap: &vigil_correlate::EngineSnapshot,
    encode: fn(&Event, &mut Vec<u8>),
    flush: &mut impl FnMut(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    use vigil_correlate::engine::KeySnapshot;
    out.extend_from_slice(&snap.version.to_le_bytes());
    put_opt_i64(out, snap.now);
    put_len(out, snap.windows.len());
    for w in &snap.windows {
        put_text(out, &w.correlation);
        put_texts(out, &w.group_by);
        put_opt_i64(out, w.watermark);
        put_len(out, w.keys.len());
        for KeySnapshot {
            group,
            slots,
            firing,
        } in &w.keys
        {
            put_texts(out, group);
            put_len(out, slots.len());
            for (ts, tag, event, reported) in slots {
                out.extend_from_slice(&ts.to_le_bytes());
                out.extend_from_slice(&tag.to_le_bytes());
                out.push(u8::from(*reported) | if event.is_some() { 2 } else { 0 });
                if let Some(e) = event {
                    put_sized(out, |out| encode(e, out));
                }
            }
            match firing {
                None => out.push(0),
                Some((start, index)) => {
                    out.push(1);
                    out.extend_from_slice(&start.to_le_bytes());
                    put_text(out, index);
                }
            }
            if out.len() >= 1 << 20 {
                flush(out)?;
            }
        }
    }
    Ok(())
}

/// The windows [`put_snapshot`] wrote, from all of `bytes`. Never panics; allocates no more
/// than the bytes given can hold.
pub fn snapshot_from_bytes(bytes: &[u8]) -> Result<vigil_correlate::EngineSnapshot, WireError> {
    let mut r = Reader(bytes);
    let snapshot = read_snapshot(&mut r)?;
    if !r.0.is_empty() {
        return Err(wire_err("bytes after the end"));
    }
    Ok(snapshot)
}

fn read_snapshot(r: &mut Reader<'_>) -> Result<vigil_correlate::EngineSnapshot, WireError> {
    use vigil_correlate::engine::{KeySnapshot, WindowSnapshot};
    let version = r.u32()?;
    let now = r.opt_i64()?;
    let n = r.count(13)?;
    let mut windows = Vec::with_capacity(n);
    for _ in 0..n {
        let correlation = r.text()?;
        let group_by = r.texts()?;
        let watermark = r.opt_i64()?;
        let n = r.count(9)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let group = r.texts()?;
            let n = r.count(17)?;
            let mut slots = Vec::with_capacity(n);
            for _ in 0..n {
                let ts = r.i64()?;
                let tag = u64::from_le_bytes(r.array()?);
                let [flags] = r.array::<1>()?;
                if flags > 3 {
                    return Err(wire_err("slot flags"));
                }
                let event = if flags & 2 != 0 {
                    Some(std::sync::Arc::new(Reader::event(r.sized()?)?))
                } else {
                    None
                };
                slots.push((ts, tag, event, flags & 1 != 0));
            }
            let firing = match r.array::<1>()? {
                [0] => None,
                [1] => Some((r.i64()?, r.text()?)),
                _ => return Err(wire_err("firing tag")),
            };
            keys.push(KeySnapshot {
                group,
                slots,
                firing,
            });
        }
        windows.push(WindowSnapshot {
            correlation,
            group_by,
            watermark,
            keys,
        });
    }
    Ok(vigil_correlate::EngineSnapshot {
        version,
        now,
        windows,
    })
}

/// Most bytes of one packed record (well under Kafka's default 1 MB message limit).
pub const MAX_PACK_BYTES: usize = 512 * 1024;

/// Packs keyed items (each already encoded in `format`, [`WireFormat::encode`]) into records:
/// items grouped by the partition their key maps to (of `partitions`), in their order, each
/// record at most [`MAX_PACK_BYTES`] (an item larger than that gets a record of its own),
/// keyed by its first item's key so it lands in that same partition. Many items per Kafka
/// record is what lets a broker carry 100 k events/s: brokers pay per record, not per byte.
pub fn pack(
    items: Vec<(Vec<u8>, Vec<u8>)>,
    partitions: i32,
    format: WireFormat,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    // Bytes around the first item, and before each item after it.
    let (head, sep) = match format {
        WireFormat::Json => (1, 1),
        WireFormat::Binary => (5, 4),
    };
    let mut open: std::collections::BTreeMap<i32, (Vec<u8>, Vec<u8>)> =
        std::collections::BTreeMap::new();
    let mut out = Vec::new();
    let close = |buf: &mut Vec<u8>| {
        if format == WireFormat::Json {
            buf.push(b']');
        }
    };
    for (key, item) in items {
        let p = crate::bus::kafka::partition_for(&key, partitions.max(1));
        if let Some((_, buf)) = open.get(&p) {
            if buf.len() + item.len() + sep + 1 > MAX_PACK_BYTES {
                if let Some((k, mut done)) = open.remove(&p) {
                    close(&mut done);
                    out.push((k, done));
                }
            }
        }
        let buf = match open.entry(p) {
            std::collections::btree_map::Entry::Occupied(o) => {
                let buf = &mut o.into_mut().1;
                if format == WireFormat::Json {
                    buf.push(b',');
                }
                buf
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                let mut buf = Vec::with_capacity((item.len() + head + 1).max(4096));
                buf.push(match format {
                    WireFormat::Json => b'[',
                    WireFormat::Binary => BINARY_PACK,
                });
                &mut v.insert((key, buf)).1
            }
        };
        if format == WireFormat::Binary {
            put_len(buf, item.len());
        }
        buf.extend_from_slice(&item);
    }
    for (_, (k, mut buf)) in open {
        close(&mut buf);
        out.push((k, buf));
    }
    out
}

/// The items of a packed record, in either format (told apart by its first byte).
pub fn unpack<T: WireItem>(payload: &[u8]) -> Result<Vec<T>, WireError> {
    match payload.split_first() {
        Some((&BINARY_PACK, mut rest)) => {
            // Counted first (lengths only), so the items are never moved by a growing vector;
            // at most one per 32 bytes (every real item is longer), so a record of empty items
            // cannot reserve more than a few times its size.
            let mut count = 0usize;
            let mut scan = Reader(rest);
            while !scan.0.is_empty() && scan.sized().is_ok() {
                count += 1;
            }
            let mut items = Vec::with_capacity(count.min(rest.len() / 32));
            while !rest.is_empty() {
                let mut r = Reader(rest);
                items.push(T::get(r.sized()?)?);
                rest = r.0;
            }
            Ok(items)
        }
        _ => serde_json::from_slice(payload).map_err(wire_err),
    }
}

/// A routed match and the event that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Which window.
    pub routed: Routed,
    /// The event (shared: a reader hands it to the windows without moving it again).
    pub event: std::sync::Arc<Event>,
    /// Set when a correlate node produced it (a chained correlation): which input record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A detection on the detections topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRecord {
    /// The detection.
    pub detection: vigil_correlate::Detection,
    /// Set when a correlate node produced it from an input record (not for a stage-1
    /// single-event detection, nor an `absence` deadline fired by the clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Which input record of a stage-2 consumer an output record came from: the input's
/// partition and offset, and the output's position among that input's outputs to one topic.
///
/// A correlate node that takes a partition over restores the last checkpoint and processes
/// the records after it again; that replay produces the same outputs under the same origins
/// (the engine is deterministic over the same state and records), so a consumer drops every
/// record whose origin is not above the highest it applied from that input partition
/// ([`Marks`]). Outputs of one input partition reach one output partition in order (one
/// owner at a time, an idempotent producer), which is what makes a high-water mark enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Partition of the input record (of the matches topic).
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Position among its outputs to one topic.
    pub n: u32,
}

/// The highest [`Origin`] applied per input partition, for one consumed partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks(pub std::collections::BTreeMap<i32, (i64, u32)>);

impl Marks {
    /// True (and remembered) when `origin` is above every origin applied from its partition;
    /// false for a replayed record.
    pub fn fresh(&mut self, origin: Origin) -> bool {
        let next = (origin.offset, origin.n);
        match self.0.get(&origin.partition) {
            Some(high) if *high >= next => false,
            _ => {
                self.0.insert(origin.partition, next);
                true
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn event(i: u32, raw: Vec<u8>) -> Event {
        let t =
            DateTime::<Utc>::from_timestamp(1_700_000_000 + i64::from(i), 7).unwrap_or_default();
        let mut e = Event::new(t, t);
        e.message = Some(format!("{i}").into());
        e.raw = raw;
        e
    }

    #[test]
    fn packs_keep_order_per_partition_and_land_where_their_keys_do() {
        for format in [WireFormat::Binary, WireFormat::Json] {
            let items: Vec<(Vec<u8>, Event)> = (0..200u32)
                .map(|i| (format!("key{}", i % 7).into_bytes(), event(i, Vec::new())))
                .collect();
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = items
                .iter()
                .map(|(k, e)| (k.clone(), format.encode(e).unwrap_or_default()))
                .collect();
            let packed = pack(encoded, 4, format);
            assert!(
                packed.len() <= 4,
                "{format:?}: one record per partition here"
            );
            let mut seen = 0;
            for (key, payload) in &packed {
                let p = crate::bus::kafka::partition_for(key, 4);
                let got: Vec<Event> = unpack(payload).unwrap_or_default();
                let want: Vec<Event> = items
                    .iter()
                    .filter(|(k, _)| crate::bus::kafka::partition_for(k, 4) == p)
                    .map(|(_, e)| e.clone())
                    .collect();
                assert_eq!(got, want, "{format:?}, partition {p}: every item, in order");
                seen += got.len();
            }
            assert_eq!(seen, 200);
            // Big items split into several records, none over the limit unless alone.
            let items: Vec<(Vec<u8>, Vec<u8>)> = (0..5)
                .map(|i| {
                    let e = event(i, vec![b'x'; 200 * 1024]);
                    (b"k".to_vec(), format.encode(&e).unwrap_or_default())
                })
                .collect();
            let packed = pack(items, 4, format);
            assert_eq!(packed.len(), 3, "{format:?}");
            assert!(packed.iter().all(|(_, p)| p.len() <= MAX_PACK_BYTES));
            let total: usize = packed
                .iter()
                .map(|(_, p)| unpack::<Event>(p).map(|v| v.len()).unwrap_or(0))
                .sum();
            assert_eq!(total, 5, "{format:?}");
        }
    }

    #[test]
    fn binary_items_are_exact_and_json_loses_bytes_that_are_not_utf8() {
        let mut e = event(1, b"<13>1 - h a - - - caf\xe9 \xff\xfe".to_vec());
        e.source_ip = "2001:db8::7".parse().ok();
        e.extra.insert("k".into(), "v".into());
        let m = MatchRecord {
            routed: Routed {
                correlation: "ssh_brute_force".into(),
                group: vec!["203.0.113.7".into(), String::new()],
                bits: 0b101,
                pos: 3,
            },
            event: Arc::new(e.clone()),
            origin: Some(Origin {
                partition: 2,
                offset: 99,
                n: 4,
            }),
        };
        let one = |format: WireFormat| {
            pack(
                vec![(b"k".to_vec(), format.encode(&m).unwrap_or_default())],
                4,
                format,
            )
            .pop()
            .map(|(_, p)| p)
            .unwrap_or_default()
        };
        let binary = one(WireFormat::Binary);
        assert_eq!(binary.first(), Some(&BINARY_PACK));
        assert_eq!(unpack::<MatchRecord>(&binary), Ok(vec![m.clone()]));
        let json = one(WireFormat::Json);
        assert_eq!(json.first(), Some(&b'['));
        let back = unpack::<MatchRecord>(&json).unwrap_or_default();
        assert_eq!(back.len(), 1);
        assert_ne!(back[0].event.raw, e.raw, "JSON carries raw bytes as text");
        assert_eq!(back[0].routed, m.routed);
        let dead = crate::store::DeadLetter {
            id: 0,
            received_at: e.ingested,
            observer_type: "syslog".into(),
            observer_id: "syslog/udp/203.0.113.7".into(),
            peer: Some("203.0.113.7:514".into()),
            reason: "invalid_utf8".into(),
            detail: "byte 3".into(),
            raw: vec![0xff, 0, 0xfe],
        };
        for format in [WireFormat::Binary, WireFormat::Json] {
            let packed = pack(
                vec![(b"k".to_vec(), format.encode(&dead).unwrap_or_default())],
                1,
                format,
            );
            assert_eq!(
                unpack::<crate::store::DeadLetter>(&packed[0].1),
                Ok(vec![dead.clone()])
            );
        }
    }

    #[test]
    fn unreadable_records_are_errors_never_panics() {
        let e = event(3, b"line".to_vec());
        let good = pack(
            vec![(
                b"k".to_vec(),
                WireFormat::Binary.encode(&e).unwrap_or_default(),
            )],
            1,
            WireFormat::Binary,
        )
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_default();
        // Every truncation of a good record, and every single flipped byte.
        assert_eq!(
            unpack::<Event>(&good[..1]),
            Ok(Vec::new()),
            "the marker alone"
        );
        for n in 2..good.len() {
            let _ = unpack::<Event>(&good[..n]);
            let _ = unpack::<MatchRecord>(&good[..n]);
            let _ = unpack::<DetectionRecord>(&good[..n]);
            assert!(unpack::<Event>(&good[..n]).is_err(), "cut at {n}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = unpack::<Event>(&bad);
            let _ = unpack::<DetectionRecord>(&bad);
        }
        assert!(unpack::<Event>(b"").is_err());
        assert!(unpack::<Event>(b"\x00garbage").is_err());
        // A huge declared count is refused, not allocated.
        let mut lying = vec![BINARY_PACK];
        lying.extend_from_slice(&9u32.to_le_bytes());
        lying.extend_from_slice(&[0]);
        lying.extend_from_slice(&[0xff; 4]);
        lying.extend_from_slice(&[0; 4]);
        assert!(unpack::<DetectionRecord>(&lying).is_err());
    }

    /// The bytes of `fixtures/wire/<file>`; with `VIGIL_BLESS` set, `bytes` are written there
    /// first.
    fn pinned(file: &str, bytes: &[u8]) -> Vec<u8> {
        if std::env::var_os("VIGIL_BLESS").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/wire");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        fixture(file)
    }

    /// The bytes of `fixtures/wire/<file>` (never rewritten: records older builds wrote).
    fn fixture(file: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/wire")
            .join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (VIGIL_BLESS=1)", path.display()))
    }

    /// One record of each item type, as this build writes it in each format, is pinned in
    /// `fixtures/wire/` (`VIGIL_BLESS=1` rewrites them): a change to the layout shows here,
    /// and records an older build wrote stay readable (a deployment upgrades one process at a
    /// time, and topics keep records for days). The files also seed the `wire_record` fuzz
    /// target.
    #[test]
    fn records_match_the_golden_files_in_both_formats() {
        let t = DateTime::<Utc>::from_timestamp(1_781_524_800, 250_000_000).unwrap();
        let mut e = Event::new(t, t);
        e.source_ip = "203.0.113.7".parse().ok();
        e.destination_ip = "2001:db8::1".parse().ok();
        e.source_port = Some(52100);
        e.user_name = Some("root".into());
        e.action = Some("ssh_login".into());
        e.outcome = Some("failure".into());
        e.sequence = Some(42);
        e.extra.insert("sshd.pid".into(), "4242".into());
        e.raw = b"<38>Jun 15 12:00:00 bastion sshd[4242]: Failed password for r\xe9ot from 203.0.113.7 port 52100 ssh2".to_vec();
        let events = vec![e.clone(), event(7, Vec::new())];
        let matches = vec![MatchRecord {
            routed: Routed {
                correlation: "ssh_brute_force".into(),
                group: vec!["203.0.113.7".into()],
                bits: 1,
                pos: 0,
            },
            event: Arc::new(e.clone()),
            origin: Some(Origin {
                partition: 1,
                offset: 5,
                n: 0,
            }),
        }];
        let detections = vec![DetectionRecord {
            detection: Detection {
                distinct: None,
                ..brute_force(
                    DetectionKind::New,
                    t,
                    10,
                    vec![Arc::new(e.clone()), Arc::new(event(8, vec![0xff]))],
                )
            },
            origin: None,
        }];
        let dead = vec![crate::store::DeadLetter {
            id: 0,
            received_at: t,
            observer_type: "syslog".into(),
            observer_id: "syslog/udp/203.0.113.7".into(),
            peer: Some("203.0.113.7:514".into()),
            reason: "pri".into(),
            detail: "no <PRI>".into(),
            raw: b"not syslog \xff".to_vec(),
        }];
        fn golden<T: WireItem + PartialEq + std::fmt::Debug>(name: &str, items: &[T]) {
            for (format, ext) in [(WireFormat::Binary, "bin"), (WireFormat::Json, "json")] {
                let encoded = items
                    .iter()
                    .map(|i| (b"k".to_vec(), format.encode(i).unwrap()))
                    .collect();
                let mut packed = pack(encoded, 1, format);
                assert_eq!(packed.len(), 1);
                let bytes = packed.pop().unwrap().1;
                let file = format!("{name}.{ext}");
                let pinned = pinned(&file, &bytes);
                assert_eq!(
                    unpack::<T>(&pinned).unwrap(),
                    unpack::<T>(&bytes).unwrap(),
                    "{file}: reads as the same items"
                );
                assert!(bytes == pinned, "{file}: the layout changed");
                if format == WireFormat::Binary {
                    assert_eq!(unpack::<T>(&pinned).unwrap(), items, "{name}: exact");
                }
            }
        }
        golden("events", &events);
        golden("matches", &matches);
        golden("detections", &detections);
        // What builds before the binary detection head wrote (its head as JSON) still reads.
        assert_eq!(
            unpack::<DetectionRecord>(&fixture("detections-json-head.bin")).ok(),
            Some(detections.clone()),
            "detections-json-head.bin"
        );
        golden("dead_letters", &dead);
    }

    fn checkpoint(raw: Vec<u8>) -> CorrelateState {
        use vigil_correlate::{EngineSnapshot, KeySnapshot, WindowSnapshot};
        let held = Arc::new(event(11, raw));
        let mut marks = Marks::default();
        marks.0.insert(2, (77, 3));
        CorrelateState {
            windows: EngineSnapshot {
                version: EngineSnapshot::VERSION,
                now: Some(1_781_524_800_000_000_000),
                windows: vec![
                    WindowSnapshot {
                        correlation: "ssh_brute_force".into(),
                        group_by: vec!["source.ip".into()],
                        watermark: Some(1_781_524_799_000_000_000),
                        keys: vec![
                            KeySnapshot {
                                group: vec!["203.0.113.7".into()],
                                slots: vec![
                                    (1_781_524_790_000_000_000, 0, Some(held.clone()), true),
                                    (1_781_524_791_000_000_000, 0, None, false),
                                    (-5, u64::MAX, Some(held), false),
                                ],
                                firing: Some((1_781_524_790_000_000_000, "203.0.113.7".into())),
                            },
                            KeySnapshot {
                                group: vec![String::new()],
                                slots: Vec::new(),
                                firing: None,
                            },
                        ],
                    },
                    WindowSnapshot {
                        correlation: "quiet".into(),
                        group_by: Vec::new(),
                        watermark: None,
                        keys: Vec::new(),
                    },
                ],
            },
            marks,
        }
    }

    #[test]
    fn checkpoints_are_exact_in_binary_and_older_json_ones_still_read() {
        let odd = checkpoint(vec![0xff, b'x', 0xe9]);
        let bytes = odd.to_bytes();
        assert_eq!(bytes.first(), Some(&BINARY_CHECKPOINT));
        assert_eq!(CorrelateState::from_bytes(&bytes), Ok(odd.clone()));
        // What builds before the binary body wrote: JSON (here with text that JSON keeps).
        let plain = checkpoint(b"line".to_vec());
        let json = serde_json::to_vec(&plain).unwrap();
        assert_eq!(CorrelateState::from_bytes(&json), Ok(plain.clone()));
        // Pinned, both forms (VIGIL_BLESS=1 rewrites).
        for (name, body) in [("checkpoint.bin", bytes.clone()), ("checkpoint.json", json)] {
            assert!(pinned(name, &body) == body, "{name}: the layout changed");
        }
        // Corrupt bodies are errors, never panics.
        for n in 0..bytes.len() {
            assert!(
                CorrelateState::from_bytes(&bytes[..n]).is_err(),
                "cut at {n}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            let _ = CorrelateState::from_bytes(&bad);
        }
        let mut huge = vec![BINARY_CHECKPOINT, 1, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(CorrelateState::from_bytes(&huge).is_err());
    }

    #[test]
    fn a_match_of_an_encoded_event_is_the_match_record_encoded() {
        let e = event(3, vec![0xff, b'r']);
        let routed = Routed {
            correlation: "ssh_brute_force".into(),
            group: vec!["203.0.113.7".into(), String::new()],
            bits: 5,
            pos: 2,
        };
        let origin = Some(Origin {
            partition: 3,
            offset: 99,
            n: 1,
        });
        for origin in [None, origin] {
            let record = MatchRecord {
                routed: routed.clone(),
                event: Arc::new(e.clone()),
                origin,
            };
            let encoded = WireFormat::Binary.encode(&e).unwrap_or_default();
            assert_eq!(
                Some(binary_match(&routed, origin, &encoded)),
                WireFormat::Binary.encode(&record)
            );
        }
    }

    #[test]
    fn compressed_checkpoints_are_the_binary_body_and_corrupt_ones_are_errors() {
        let odd = checkpoint(vec![0xff, b'x', 0xe9]);
        let packed = odd.to_compressed();
        assert_eq!(packed.first(), Some(&FRAMED_CHECKPOINT));
        assert_eq!(CorrelateState::from_bytes(&packed), Ok(odd.clone()));
        let body = odd.to_bytes();
        assert_eq!(
            crate::bytes::read_framed(&packed[1..], u64::MAX).ok(),
            Some(body.clone()),
            "the binary body, compressed"
        );
        // What builds before the frame wrote (one LZ4 block) still reads.
        let mut block = vec![COMPRESSED_CHECKPOINT];
        block.extend_from_slice(&lz4_flex::compress_prepend_size(&body));
        assert_eq!(CorrelateState::from_bytes(&block), Ok(odd.clone()));
        // Repetitive windows (many held events alike) shrink; more than one flush of the
        // writer's buffer reads back whole.
        let mut many = odd.clone();
        let keys = many.windows.windows[0].keys.clone();
        for _ in 0..50 {
            many.windows.windows[0].keys.extend(keys.iter().cloned());
        }
        assert!(many.to_compressed().len() * 4 < many.to_bytes().len());
        assert_eq!(CorrelateState::from_bytes(&many.to_compressed()), Ok(many));
        let mut large = odd.clone();
        large.windows.windows[0].keys = (0..40_000)
            .map(|k| vigil_correlate::KeySnapshot {
                group: vec![format!("198.51.100.{k}")],
                slots: vec![(k, 1, Some(Arc::new(event(k as u32, vec![b'r'; 40]))), false)],
                firing: None,
            })
            .collect();
        assert!(large.to_bytes().len() > 2 << 20, "several flushes");
        assert_eq!(
            CorrelateState::from_bytes(&large.to_compressed()),
            Ok(large)
        );
        for form in [&packed, &block] {
            for n in 0..form.len() {
                assert!(
                    CorrelateState::from_bytes(&form[..n]).is_err(),
                    "cut at {n}"
                );
            }
            for i in 0..form.len() {
                let mut bad = form.clone();
                bad[i] ^= 0x5a;
                let _ = CorrelateState::from_bytes(&bad);
            }
        }
        // A length no LZ4 block of these bytes can reach is refused before any allocation.
        let mut bomb = vec![COMPRESSED_CHECKPOINT];
        bomb.extend_from_slice(&u32::MAX.to_le_bytes());
        bomb.extend_from_slice(&[0x1f, 0]);
        assert!(CorrelateState::from_bytes(&bomb)
            .unwrap_err()
            .0
            .contains("longer than"));
        // A frame is read up to a bound (255 times its size for a checkpoint, which LZ4
        // cannot exceed), and refused beyond it without reading on.
        let zeros = crate::bytes::write_framed(Vec::new(), |buf, _| {
            buf.resize(1 << 20, 0);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            crate::bytes::read_framed(&zeros, 1 << 20).map(|b| b.len()),
            Ok(1 << 20)
        );
        assert!(crate::bytes::read_framed(&zeros, 1000)
            .unwrap_err()
            .contains("longer than"));
        // Only frames as Vigil writes them: a header asking for 4 MiB blocks (the decoder
        // would size its buffers from it), no content checksum, or the legacy magic, is refused
        // before decoding.
        for (at, value) in [(5, 7 << 4), (4, zeros[4] & !0x04), (0, 0x02)] {
            let mut other = zeros.clone();
            other[at] = value;
            assert!(crate::bytes::read_framed(&other, u64::MAX)
                .unwrap_err()
                .contains("as Vigil writes"));
        }
        // A compressed body must be a binary one (no nesting, no JSON inside).
        let mut nested = vec![COMPRESSED_CHECKPOINT];
        nested.extend_from_slice(&lz4_flex::compress_prepend_size(&packed));
        assert!(CorrelateState::from_bytes(&nested).is_err());
        let nested = crate::bytes::write_framed(vec![FRAMED_CHECKPOINT], |buf, _| {
            buf.extend_from_slice(&packed);
            Ok(())
        })
        .unwrap();
        assert!(CorrelateState::from_bytes(&nested).is_err());
    }

    #[test]
    fn marks_drop_what_was_applied_per_input_partition() {
        let o = |partition, offset, n| Origin {
            partition,
            offset,
            n,
        };
        let mut m = Marks::default();
        assert!(m.fresh(o(0, 10, 0)));
        assert!(m.fresh(o(0, 10, 1)));
        assert!(!m.fresh(o(0, 10, 1)), "the same output again");
        assert!(!m.fresh(o(0, 9, 5)), "an earlier input");
        assert!(
            m.fresh(o(1, 2, 0)),
            "another input partition has its own mark"
        );
        assert!(m.fresh(o(0, 11, 0)));
        assert_eq!(m.0.get(&0), Some(&(11, 0)));
    }
    use std::sync::Arc;
    use vigil_correlate::{Detection, DetectionKind};

    /// An `ssh_brute_force` detection for 203.0.113.7 at `t`, with `count` (and as many
    /// fresh) occurrences, three distinct values and `events`.
    fn brute_force(
        kind: DetectionKind,
        t: DateTime<Utc>,
        count: u64,
        events: Vec<Arc<Event>>,
    ) -> Detection {
        Detection {
            kind,
            rule: "ssh_brute_force".into(),
            title: "SSH brute force".into(),
            level: Some("high".into()),
            tags: vec!["attack.t1110".to_owned()].into(),
            group: vec![("source.ip".into(), "203.0.113.7".into())],
            index_field: "source.ip".into(),
            index_value: "203.0.113.7".into(),
            window_start: t,
            first_seen: t,
            last_seen: t,
            count,
            fresh: count,
            distinct: Some(3),
            sum: None,
            events,
            relevance: 6,
            credibility: 8,
            severity: 7,
        }
    }

    #[test]
    fn detection_heads_are_exact_and_corrupt_ones_are_errors() {
        let t = DateTime::<Utc>::from_timestamp(1_781_524_800, 123_456_789).unwrap();
        let base = brute_force(DetectionKind::Update, t, 4, Vec::new());
        let variants = [
            base.clone(),
            Detection {
                kind: DetectionKind::New,
                level: None,
                tags: Vec::new().into(),
                group: vec![
                    ("user.name".into(), "r\u{e9}ot".into()),
                    ("destination.ip".into(), String::new()),
                ],
                first_seen: t - chrono::Duration::nanoseconds(1),
                last_seen: t + chrono::Duration::days(400),
                distinct: None,
                sum: Some(u64::MAX),
                relevance: 0,
                credibility: 10,
                severity: 255,
                ..base.clone()
            },
        ];
        for d in variants {
            let mut head = Vec::new();
            put_detection_head(&d, &mut head);
            assert_eq!(detection_head(&head), Ok(d.clone()));
            for n in 0..head.len() {
                assert!(detection_head(&head[..n]).is_err(), "cut at {n}");
            }
            let mut longer = head.clone();
            longer.push(0);
            assert!(detection_head(&longer).is_err());
            for i in 0..head.len() {
                let mut bad = head.clone();
                bad[i] ^= 0xa5;
                let _ = detection_head(&bad);
            }
        }
    }

    #[test]
    fn a_detection_round_trips_in_both_formats() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let mut e = Event::new(t, t);
        e.source_ip = "203.0.113.7".parse().ok();
        e.sequence = Some(42);
        let d = brute_force(DetectionKind::Update, t, 1, vec![Arc::new(e)]);
        let json = serde_json::to_vec(&d).unwrap_or_default();
        let back: Option<Detection> = serde_json::from_slice(&json).ok();
        assert_eq!(back, Some(d.clone()));
        let rec = DetectionRecord {
            detection: d,
            origin: Some(Origin {
                partition: 3,
                offset: 17,
                n: 1,
            }),
        };
        let json = serde_json::to_vec(&rec).unwrap_or_default();
        let back: Option<DetectionRecord> = serde_json::from_slice(&json).ok();
        assert_eq!(back, Some(rec.clone()));
        // Binary: exact events (two here, one with bytes that are not UTF-8), with and
        // without an origin.
        let mut two = rec.clone();
        two.detection
            .events
            .push(Arc::new(event(9, vec![0xff, b'x', 0xc3])));
        let none = DetectionRecord {
            origin: None,
            ..two.clone()
        };
        let items = [&rec, &two, &none]
            .iter()
            .map(|r| (b"k".to_vec(), WireFormat::Binary.encode(*r).unwrap()))
            .collect();
        let packed = pack(items, 1, WireFormat::Binary);
        assert_eq!(packed.len(), 1);
        assert_eq!(
            unpack::<DetectionRecord>(&packed[0].1),
            Ok(vec![rec, two, none])
        );
        assert_eq!(
            Topics::new("vigil", WireFormat::Binary).all(),
            [
                "vigil.matches",
                "vigil.detections",
                "vigil.events",
                "vigil.dead_letters"
            ]
        );
    }
}
