//! The burst spool of embedded mode: a bounded queue on disk between the collectors and the
//! engine (QRadar's burst buffer). Collectors still put records on the small in-memory queue;
//! one writer thread appends them to segment files under `data_dir/spool/`, and the normalize
//! thread reads them back in order, ahead of the engine. A burst above what the engine can take is absorbed on disk and
//! drained afterwards instead of being dropped.
//!
//! Invariants:
//! - bounded: at most `bus.spool_max_bytes` of segments are kept. When the spool is full the
//!   writer stops taking records from the memory queue: TCP and HTTP senders wait
//!   (back-pressure), UDP records are dropped and counted (`queue_full`);
//! - a record is *accepted* once the writer has written it to the operating system (a `kill -9`
//!   of Vigil cannot lose it; `bus.spool_fsync_ms` bounds what a power loss can). HTTP ingest
//!   answers 202 only then ([`Ack`]);
//! - exactly once into offenses: the engine stores, in the transaction of each batch, the
//!   position after its last record (`spool_state.committed`), and with every saved window
//!   snapshot the position it was taken at (`spool_state.snapshot`). At start the windows are
//!   restored and the records between the two positions are run through the rules again
//!   without storing anything (their offenses are already stored), so the windows are as they
//!   were; processing resumes after `committed`. Segments are deleted only once both
//!   positions are past them;
//! - every record on disk carries its length and a CRC-32. A torn tail (the writer killed
//!   mid-append) is cut at start; a record that fails its check is handed to the engine as a
//!   dead letter (`spool_corrupt`) with its bytes, never skipped silently.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Decoded, RawRecord, Received, Subscriber};
use crate::bytes::{put_long, put_opt_ip, put_sized, Cursor};
use crate::telemetry::{Counter, Gauge, Metrics};

/// Largest record the spool takes (a flow event's JSON or a frame at the size limit fit).
pub const MAX_RECORD_BYTES: usize = 16 << 20;
const HEADER: u64 = 8;
const FORMAT: u8 = 1;

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Position {
    /// Segment number (its file name).
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// The spool's settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Its folder.
    pub dir: PathBuf,
    /// Most bytes of segments kept.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// How often written records are flushed to the disk (`fsync`).
    pub fsync_every: Duration,
}

/// Told when a record has been accepted (written to the operating system).
#[derive(Clone, Default)]
pub struct Ack(Arc<AckInner>);

#[derive(Default)]
struct AckInner {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("done", &self.0.done.load(Ordering::Acquire))
            .finish()
    }
}

impl PartialEq for Ack {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Ack {
    /// Marks the record accepted and wakes the waiter.
    pub fn done(&self) {
        self.0.done.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Waits until the record is accepted.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// `&'static str` for a name read back from disk: the names code uses are few; at most 256
/// distinct ones are kept, others read as `unknown`.
fn intern(s: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = names.get_or_insert_with(HashSet::new);
    if let Some(&n) = set.get(s) {
        return n;
    }
    if set.len() >= 256 {
        return "unknown";
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The body of a record on disk.
pub fn encode(r: &RawRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(r.bytes.len() + r.observer_id.len() + 48);
    encode_into(r, &mut b);
    b
}

/// [`encode`] into `b` (cleared first): the writer reuses one buffer for every record.
fn encode_into(r: &RawRecord, b: &mut Vec<u8>) {
    b.clear();
    b.push(FORMAT);
    b.extend_from_slice(&r.received_at.timestamp_micros().to_le_bytes());
    let short = |b: &mut Vec<u8>, s: &str| {
        let s = s.get(..s.len().min(255)).unwrap_or_default();
        b.push(s.len() as u8);
        b.extend_from_slice(s.as_bytes());
    };
    short(b, r.observer_type);
    put_long(b, r.observer_id.as_bytes());
    put_opt_ip(b, r.peer);
    match &r.refused {
        None => b.push(0),
        Some((reason, detail)) => {
            b.push(1);
            short(b, reason);
            put_long(b, detail.as_bytes());
        }
    }
    match &r.decoded {
        None => b.push(0),
        // Tag 2: the binary event codec; tag 1 (JSON) is still read from older spools.
        // Tag 3: a flow record in its compact form.
        Some(d) => {
            b.push(if matches!(d, Decoded::Flow(_)) { 3 } else { 2 });
            put_sized(b, |b| match d {
                Decoded::Event(e) => vigil_parsers::codec::encode(e, b),
                Decoded::Flow(f) => f.encode_compact(b),
            });
        }
    }
    put_long(b, &r.bytes);
}

/// A record body read back.
pub fn decode(body: &[u8]) -> Result<RawRecord, String> {
    let mut c = Cursor(body);
    let format = c.u8()?;
    if format != FORMAT {
        return Err(format!(
            "record format {format} (this build reads {FORMAT})"
        ));
    }
    let micros = i64::from_le_bytes(c.take(8)?.try_into().map_err(|_| "time")?);
    let received_at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or("bad time")?;
    let observer_type = intern(Cursor::text(c.short()?)?);
    let observer_id = vigil_parsers::Text::from(Cursor::text(c.long()?)?);
    let peer = c.opt_ip("peer")?;
    let refused = match c.u8()? {
        0 => None,
        1 => {
            let reason = intern(Cursor::text(c.short()?)?);
            Some((reason, Cursor::text(c.long()?)?.to_owned()))
        }
        t => return Err(format!("refusal tag {t}")),
    };
    let decoded = match c.u8()? {
        0 => None,
        1 => Some(Decoded::Event(Box::new(
            serde_json::from_slice(c.long()?).map_err(|e| format!("event: {e}"))?,
        ))),
        2 => Some(Decoded::Event(Box::new(
            vigil_parsers::codec::decode(c.long()?).map_err(|e| e.to_string())?,
        ))),
        3 => Some(Decoded::Flow(Box::new(
            vigil_flows::FlowRecord::decode_compact(c.long()?).map_err(|e| e.to_string())?,
        ))),
        t => return Err(format!("event tag {t}")),
    };
    let bytes = c.long()?.to_vec();
    if !c.0.is_empty() {
        return Err("bytes after the record".into());
    }
    Ok(RawRecord {
        bytes,
        observer_type,
        observer_id,
        peer,
        received_at,
        refused,
        decoded,
        ack: None,
    })
}

/// What the writer and the reader share.
struct State {
    /// End of what the writer has written (and the reader may read).
    written: Position,
    /// Segments before this one may be deleted.
    release: u64,
    /// Bytes of the segments kept.
    bytes: u64,
    /// Sizes of the segments kept, by number.
    sizes: std::collections::BTreeMap<u64, u64>,
    /// The writer has stopped (every publisher gone, everything written).
    closed: bool,
}

/// The spool shared by its writer thread and the engine's reader.
pub struct Spool {
    config: SpoolConfig,
    state: Mutex<State>,
    /// The reader waits on it for records, the writer for room.
    changed: Condvar,
    bytes_gauge: Gauge,
    segments_gauge: Gauge,
    full_gauge: Gauge,
    corrupt: Counter,
}

impl Spool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish_gauges(&self, st: &State) {
        self.bytes_gauge.set(st.bytes);
        self.segments_gauge.set(st.sizes.len() as u64);
    }

    /// Lets the segments before `pos`'s go: the engine calls it with the older of its
    /// committed and snapshot positions.
    pub fn release(&self, pos: Position) {
        let doomed: Vec<u64> = {
            let mut st = self.lock();
            if pos.segment <= st.release {
                return;
            }
            st.release = pos.segment;
            // The segment being written is never deleted.
            let current = st.written.segment;
            let doomed: Vec<u64> = st
                .sizes
                .range(..pos.segment.min(current))
                .map(|(s, _)| *s)
                .collect();
            for s in &doomed {
                if let Some(n) = st.sizes.remove(s) {
                    st.bytes = st.bytes.saturating_sub(n);
                }
            }
            self.publish_gauges(&st);
            doomed
        };
        for s in doomed {
            if let Err(e) = std::fs::remove_file(segment_path(&self.config.dir, s)) {
                tracing::warn!(segment = s, error = %e, "removing a spool segment failed");
            }
        }
        self.changed.notify_all();
    }

    /// Bytes of segments kept now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether the segments wholly read before `committed` (kept only for the saved windows'
    /// sake) take more than half the limit: the engine then saves its windows early so
    /// they can go. Records not yet read never count: a new snapshot cannot free them.
    pub fn filling(&self, committed: Position) -> bool {
        let st = self.lock();
        let behind: u64 = st.sizes.range(..committed.segment).map(|(_, n)| *n).sum();
        behind > self.config.max_bytes / 2
    }
}

/// Opens the spool in `config.dir`: cuts a torn tail off the newest segment and starts a new
/// segment after every existing one and after `after` (the committed position, so numbers keep
/// increasing even when every segment was deleted). Starts the writer thread, which takes
/// records from `input` until it closes.
pub fn open<S: Subscriber<RawRecord>>(
    config: SpoolConfig,
    after: Position,
    mut input: S,
    metrics: &Metrics,
) -> std::io::Result<(Arc<Spool>, std::thread::JoinHandle<()>)> {
    std::fs::create_dir_all(&config.dir)?;
    let existing = segments(&config.dir)?;
    let mut sizes = std::collections::BTreeMap::new();
    let cut = metrics.counter(
        "vigil_spool_torn_bytes_total",
        "Bytes of a partly written record cut from the spool at start (the writer was killed mid-append).",
        &[],
    );
    for (i, &s) in existing.iter().enumerate() {
        let path = segment_path(&config.dir, s);
        let len = if i + 1 == existing.len() {
            // The newest segment may end in a torn record: keep whole records only.
            let valid = valid_prefix(&path)?;
            let len = std::fs::metadata(&path)?.len();
            if valid < len {
                cut.add(len - valid);
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
                tracing::warn!(segment = s, bytes = len - valid, "torn spool tail cut");
            }
            valid
        } else {
            std::fs::metadata(&path)?.len()
        };
        sizes.insert(s, len);
    }
    let next = existing
        .last()
        .copied()
        .unwrap_or(0)
        .max(after.segment)
        .saturating_add(1);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(&config.dir, next))?;
    sizes.insert(next, 0);
    let bytes = sizes.values().sum();
    let spool = Arc::new(Spool {
        state: Mutex::new(State {
            written: Position {
                segment: next,
                offset: 0,
            },
            release: 0,
            bytes,
            sizes,
            closed: false,
        }),
        changed: Condvar::new(),
        bytes_gauge: metrics.gauge("vigil_spool_bytes", "Bytes of records in the spool.", &[]),
        segments_gauge: metrics.gauge("vigil_spool_segments", "Spool segment files.", &[]),
        full_gauge: metrics.gauge(
            "vigil_spool_full",
            "1 while the spool is full (TCP and HTTP senders wait, UDP records are dropped).",
            &[],
        ),
        corrupt: metrics.counter(
            "vigil_spool_corrupt_total",
            "Spool records that failed their check (kept as dead letters).",
            &[],
        ),
        config,
    });
    {
        let st = spool.lock();
        spool.publish_gauges(&st);
    }
    let appended = metrics.counter(
        "vigil_spool_appended_total",
        "Records written to the spool.",
        &[],
    );
    let full_waits = metrics.counter(
        "vigil_spool_full_total",
        "Times the spool was full and the writer waited for the engine.",
        &[],
    );
    let refused = metrics.counter(
        "vigil_spool_refused_total",
        "Records too large for the spool (kept as dead letters, first bytes).",
        &[],
    );
    let writer = spool.clone();
    let handle = std::thread::Builder::new()
        .name("vigil-spool".into())
        .spawn(move || {
            let mut w = Writer {
                spool: writer,
                file: BufWriter::with_capacity(1 << 20, file),
                position: Position {
                    segment: next,
                    offset: 0,
                },
                last_sync: Instant::now(),
                dirty: false,
                appended,
                full_waits,
                refused,
                body: Vec::new(),
                pending: 0,
            };
            if let Err(e) = w.run(&mut input) {
                tracing::error!(error = %e, "the spool writer stopped");
            }
            let mut st = w.spool.lock();
            st.closed = true;
            drop(st);
            w.spool.changed.notify_all();
        })?;
    Ok((spool, handle))
}

/// Length of the run of whole, checked records at the start of `path`.
fn valid_prefix(path: &Path) -> std::io::Result<u64> {
    let mut f = std::io::BufReader::new(File::open(path)?);
    let mut at = 0u64;
    let mut body = Vec::new();
    loop {
        match read_record(&mut f, &mut body) {
            Ok(Some((len, crc))) if crc32fast::hash(&body) == crc => at += HEADER + len,
            _ => return Ok(at),
        }
    }
}

/// One record into `body` (a buffer reused from record to record): (length, stored CRC);
/// `None` at a clean end.
fn read_record(f: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<Option<(u64, u32)>> {
    let mut header = [0u8; HEADER as usize];
    let mut got = 0;
    while got < header.len() {
        match f.read(header.get_mut(got..).unwrap_or_default())? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "torn header",
                ))
            }
            n => got += n,
        }
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("record length {len} over the limit"),
        ));
    }
    body.clear();
    body.resize(len, 0);
    f.read_exact(body)?;
    Ok(Some((len as u64, crc)))
}

struct Writer {
    spool: Arc<Spool>,
    file: BufWriter<File>,
    position: Position,
    last_sync: Instant,
    dirty: bool,
    appended: Counter,
    full_waits: Counter,
    refused: Counter,
    /// The record being appended, encoded (one buffer for all).
    body: Vec<u8>,
    /// Bytes appended to the current segment and not yet in the shared state's counts: added
    /// at once when the batch is published (or the segment rotates), not under the lock for
    /// every record.
    pending: u64,
}

impl Writer {
    fn run<S: Subscriber<RawRecord>>(&mut self, input: &mut S) -> std::io::Result<()> {
        let mut acks: Vec<Ack> = Vec::new();
        loop {
            self.wait_for_room();
            let first = match input.next_within(Duration::from_millis(50)) {
                Received::Item(r) => Some(r),
                Received::Idle => None,
                Received::Closed => {
                    self.publish(&mut acks)?;
                    self.sync()?;
                    return Ok(());
                }
            };
            if let Some(first) = first {
                // The spool's size when the batch began: the engine only lowers it meanwhile,
                // so this plus what the batch appended bounds it from above.
                let before = self.spool.lock().bytes;
                let mut added = self.append(first, &mut acks)?;
                // Take what is queued now, up to a bound, before telling the reader.
                for _ in 0..4096 {
                    match input.try_next() {
                        Some(r) => added += self.append(r, &mut acks)?,
                        None => break,
                    }
                    if before + added >= self.spool.config.max_bytes {
                        break;
                    }
                }
                self.publish(&mut acks)?;
            }
            if self.dirty && self.last_sync.elapsed() >= self.spool.config.fsync_every {
                self.sync()?;
            }
        }
    }

    /// Waits while the spool is full (the engine releases segments as it commits).
    fn wait_for_room(&mut self) {
        let mut st = self.spool.lock();
        if st.bytes < self.spool.config.max_bytes {
            return;
        }
        self.full_waits.inc();
        self.spool.full_gauge.set(1);
        while st.bytes >= self.spool.config.max_bytes {
            st = self
                .spool
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        self.spool.full_gauge.set(0);
    }

    /// Appends `r`; returns the bytes it took.
    fn append(&mut self, mut r: RawRecord, acks: &mut Vec<Ack>) -> std::io::Result<u64> {
        if let Some(a) = r.ack.take() {
            acks.push(a);
        }
        encode_into(&r, &mut self.body);
        if self.body.len() > MAX_RECORD_BYTES {
            self.refused.inc();
            r.bytes.truncate(MAX_RECORD_BYTES / 2);
            r.decoded = None;
            r.refused = Some((
                "spool_record_too_large",
                format!("record over the spool's {MAX_RECORD_BYTES} bytes; first bytes kept"),
            ));
            encode_into(&r, &mut self.body);
        }
        let len = self.body.len() as u64;
        if self.position.offset > 0
            && self.position.offset + HEADER + len > self.spool.config.segment_bytes
        {
            self.rotate()?;
        }
        self.file.write_all(&(len as u32).to_le_bytes())?;
        self.file
            .write_all(&crc32fast::hash(&self.body).to_le_bytes())?;
        self.file.write_all(&self.body)?;
        self.position.offset += HEADER + len;
        self.appended.inc();
        self.pending += HEADER + len;
        Ok(HEADER + len)
    }

    /// Adds what is pending to the shared counts (under the lock the caller holds).
    fn account(&mut self, st: &mut State) {
        st.bytes += self.pending;
        *st.sizes.entry(self.position.segment).or_insert(0) += self.pending;
        self.pending = 0;
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        // What this segment's records added, before the next segment starts.
        let spool = Arc::clone(&self.spool);
        self.account(&mut spool.lock());
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        let next = self.position.segment + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.spool.config.dir, next))?;
        self.file = BufWriter::with_capacity(1 << 20, file);
        self.position = Position {
            segment: next,
            offset: 0,
        };
        let mut st = self.spool.lock();
        st.sizes.insert(next, 0);
        // The reader moves on once `written` names the new segment.
        st.written = self.position;
        Ok(())
    }

    /// Hands what was appended to the operating system, then to the reader and the waiters.
    fn publish(&mut self, acks: &mut Vec<Ack>) -> std::io::Result<()> {
        self.file.flush()?;
        self.dirty = true;
        {
            let spool = Arc::clone(&self.spool);
            let mut st = spool.lock();
            self.account(&mut st);
            st.written = self.position;
            spool.publish_gauges(&st);
        }
        self.spool.changed.notify_all();
        for a in acks.drain(..) {
            a.done();
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }
}

/// The reading side (the normalize thread): records in spool order, each with the position
/// after it.
pub struct SpoolReader {
    spool: Arc<Spool>,
    at: Position,
    file: Option<std::io::BufReader<File>>,
    /// The record being read (its bytes are copied out by [`decode`]).
    body: Vec<u8>,
}

impl SpoolReader {
    /// Reads from `from` (a committed or snapshot position; a position in a segment that no
    /// longer exists starts at the next one that does).
    pub fn new(spool: Arc<Spool>, from: Position) -> SpoolReader {
        SpoolReader {
            spool,
            at: from,
            file: None,
            body: Vec::new(),
        }
    }

    /// The position after the last record returned.
    pub fn position_of(&self) -> Position {
        self.at
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// The next record if one is written; `Err(true)` when the spool is closed and read to
    /// the end, `Err(false)` when nothing is there yet.
    fn read_next(&mut self) -> Result<RawRecord, bool> {
        loop {
            let (written, closed, first_kept) = {
                let st = self.spool.lock();
                (
                    st.written,
                    st.closed,
                    st.sizes
                        .keys()
                        .next()
                        .copied()
                        .unwrap_or(st.written.segment),
                )
            };
            if self.at.segment < first_kept {
                self.at = Position {
                    segment: first_kept,
                    offset: 0,
                };
                self.file = None;
            }
            if self.at >= written {
                return Err(closed);
            }
            if self.file.is_none() {
                match File::open(segment_path(&self.spool.config.dir, self.at.segment)) {
                    Ok(mut f) => {
                        if f.seek(SeekFrom::Start(self.at.offset)).is_err() {
                            return Err(false);
                        }
                        self.file = Some(std::io::BufReader::with_capacity(1 << 20, f));
                    }
                    Err(_) => {
                        // A segment that is gone (or never written): the next one.
                        self.at = Position {
                            segment: self.at.segment + 1,
                            offset: 0,
                        };
                        continue;
                    }
                }
            }
            let Some(f) = self.file.as_mut() else {
                return Err(false);
            };
            let start = self.at;
            match read_record(f, &mut self.body) {
                Ok(Some((len, crc))) => {
                    self.at.offset += HEADER + len;
                    if crc32fast::hash(&self.body) != crc {
                        let body = std::mem::take(&mut self.body);
                        return Ok(self.corrupt(start, body, "crc mismatch".into()));
                    }
                    return match decode(&self.body) {
                        Ok(r) => Ok(r),
                        Err(e) => {
                            let body = std::mem::take(&mut self.body);
                            Ok(self.corrupt(start, body, e))
                        }
                    };
                }
                Ok(None) => {
                    // The end of this segment: move on if the writer has.
                    if written.segment > self.at.segment {
                        self.at = Position {
                            segment: self.at.segment + 1,
                            offset: 0,
                        };
                        self.file = None;
                        continue;
                    }
                    return Err(closed);
                }
                Err(e) => {
                    // A length that cannot be right: the rest of the segment cannot be
                    // framed. It is dead-lettered as one record and reading goes on after it.
                    let rest =
                        std::fs::metadata(segment_path(&self.spool.config.dir, self.at.segment))
                            .map(|m| m.len())
                            .unwrap_or(self.at.offset);
                    let body = Vec::new();
                    let next = if written.segment > self.at.segment {
                        Position {
                            segment: self.at.segment + 1,
                            offset: 0,
                        }
                    } else {
                        Position {
                            segment: self.at.segment,
                            offset: rest.max(written.offset),
                        }
                    };
                    self.at = next;
                    self.file = None;
                    return Ok(self.corrupt(start, body, format!("unreadable from here: {e}")));
                }
            }
        }
    }

    fn corrupt(&self, at: Position, body: Vec<u8>, why: String) -> RawRecord {
        self.spool.corrupt.inc();
        tracing::error!(segment = at.segment, offset = at.offset, %why, "corrupt spool record");
        RawRecord {
            bytes: body,
            observer_type: "spool",
            observer_id: format!("spool/{}", at.segment).into(),
            peer: None,
            received_at: Utc::now(),
            refused: Some((
                "spool_corrupt",
                format!("spool segment {} offset {}: {why}", at.segment, at.offset),
            )),
            decoded: None,
            ack: None,
        }
    }
}

impl Subscriber<RawRecord> for SpoolReader {
    fn next_within(&mut self, wait: Duration) -> Received<RawRecord> {
        let deadline = Instant::now() + wait;
        loop {
            match self.read_next() {
                Ok(r) => return Received::Item(r),
                Err(true) => return Received::Closed,
                Err(false) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Received::Idle;
            }
            let st = self.spool.lock();
            if st.written > self.at || st.closed {
                continue;
            }
            let _ = self.spool.changed.wait_timeout(st, deadline - now);
        }
    }

    fn next_blocking(&mut self) -> Option<RawRecord> {
        loop {
            match self.next_within(Duration::from_secs(1)) {
                Received::Item(r) => return Some(r),
                Received::Closed => return None,
                Received::Idle => {}
            }
        }
    }

    fn try_next(&mut self) -> Option<RawRecord> {
        self.read_next().ok()
    }

    fn position(&self) -> Option<(u64, u64)> {
        Some((self.at.segment, self.at.offset))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bus::memory;
    use crate::bus::Publisher;

    fn record(i: usize) -> RawRecord {
        RawRecord {
            bytes: format!("<13>record {i}").into_bytes(),
            observer_type: "syslog",
            observer_id: format!("syslog/tcp/10.0.0.{}", i % 7).into(),
            peer: Some(if i.is_multiple_of(2) {
                "10.0.0.1".parse().unwrap()
            } else {
                "2001:db8::1".parse().unwrap()
            }),
            received_at: DateTime::from_timestamp_micros(1_800_000_000_000_000 + i as i64).unwrap(),
            refused: i
                .is_multiple_of(5)
                .then(|| ("frame_too_long", format!("frame {i}"))),
            decoded: None,
            ack: None,
        }
    }

    fn config(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            fsync_every: Duration::from_millis(10),
        }
    }

    #[test]
    fn records_round_trip_exactly() {
        for i in 0..20 {
            let r = record(i);
            assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[]).is_err());
        let body = encode(&record(3));
        for cut in 0..body.len() {
            assert!(
                decode(&body[..cut]).is_err(),
                "a prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn records_with_events_round_trip_and_older_json_events_are_still_read() {
        let mut r = record(1);
        let mut e = vigil_parsers::Event::new(r.received_at, r.received_at);
        e.source_ip = Some("203.0.113.9".parse().unwrap());
        e.network_bytes = Some(1234);
        e.extra.insert("flow.exporter".into(), "192.0.2.1".into());
        e.raw = vec![0xff, 0, b'x'];
        r.decoded = Some(Decoded::Event(Box::new(e.clone())));
        let body = encode(&r);
        assert_eq!(decode(&body).unwrap(), r);
        // What a build before the binary codec wrote: tag 1 and the event as JSON (which
        // cannot carry non-UTF-8 raw bytes).
        e.raw = b"x".to_vec();
        r.decoded = Some(Decoded::Event(Box::new(e.clone())));
        let json = serde_json::to_vec(&e).unwrap();
        let mut old = encode(&RawRecord {
            decoded: None,
            ..r.clone()
        });
        let bytes_len = 4 + r.bytes.len();
        let tail = old.split_off(old.len() - bytes_len - 1);
        assert_eq!(tail.first(), Some(&0), "the no-event tag");
        old.push(1);
        old.extend_from_slice(&(json.len() as u32).to_le_bytes());
        old.extend_from_slice(&json);
        old.extend_from_slice(tail.get(1..).unwrap());
        assert_eq!(decode(&old).unwrap(), r);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_bigger_than_memory_waits_on_disk_and_drains_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (tx, rx) = memory::channel::<RawRecord>(16, 1 << 20, Gauge::default());
        let (spool, writer) = open(
            config(dir.path(), 1 << 20, 4096),
            Position::default(),
            rx,
            &metrics,
        )
        .unwrap();
        // 3,000 records while nobody reads: far more than the memory queue holds.
        for i in 0..3000 {
            tx.publish(record(i)).await.unwrap();
        }
        let ack = Ack::default();
        let mut last = record(3000);
        last.ack = Some(ack.clone());
        tx.publish(last).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ack.wait())
            .await
            .unwrap();
        assert!(spool.lock().sizes.len() > 10, "segments rotate");
        {
            // Batches rotate mid-way; the counts they add at once agree with the files.
            let st = spool.lock();
            for (s, n) in &st.sizes {
                let on_disk = std::fs::metadata(segment_path(dir.path(), *s))
                    .unwrap()
                    .len();
                assert_eq!(*n, on_disk, "segment {s}");
            }
            assert_eq!(st.bytes, st.sizes.values().sum::<u64>());
        }
        drop(tx);
        let mut reader = SpoolReader::new(spool.clone(), Position::default());
        let got = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            while let Some(r) = reader.next_blocking() {
                got.push(r);
            }
            (got, reader.position_of())
        })
        .await
        .unwrap();
        writer.join().unwrap();
        let (got, end) = got;
        assert_eq!(got.len(), 3001);
        for (i, r) in got.iter().enumerate().take(3000) {
            assert_eq!(*r, record(i), "record {i}");
        }
        spool.release(end);
        assert_eq!(
            segments(dir.path()).unwrap().len(),
            1,
            "only the last segment stays"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_holds_publishers_until_the_engine_releases() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (tx, rx) = memory::channel::<RawRecord>(4, 1 << 20, Gauge::default());
        let (spool, _writer) = open(
            config(dir.path(), 8192, 2048),
            Position::default(),
            rx,
            &metrics,
        )
        .unwrap();
        let sender = tokio::spawn(async move {
            for i in 0..400 {
                tx.publish(record(i)).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !sender.is_finished(),
            "the sender waits while the spool is full"
        );
        assert!(metrics.render().contains("vigil_spool_full 1"));
        let mut reader = SpoolReader::new(spool.clone(), Position::default());
        let (n, spool) = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while n < 400 {
                if let Received::Item(r) = reader.next_within(Duration::from_millis(100)) {
                    assert_eq!(r, record(n));
                    n += 1;
                    reader.spool().release(reader.position_of());
                }
            }
            (n, reader.spool().clone())
        })
        .await
        .unwrap();
        sender.await.unwrap();
        assert_eq!(n, 400);
        assert!(spool.bytes() <= 8192 + 2048);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_bad_record_becomes_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        // A segment with two good records, then a flipped byte in a third, then a torn one.
        let mut seg = Vec::new();
        for i in 0..3 {
            let body = encode(&record(i));
            seg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            seg.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            seg.extend_from_slice(&body);
        }
        let last = seg.len() - 3;
        seg[last] ^= 0xff;
        let good = seg.len();
        seg.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        std::fs::write(segment_path(dir.path(), 1), &seg).unwrap();
        // Another, older segment whose middle is broken (a bit flip, not a torn write).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (tx, rx) = memory::channel::<RawRecord>(4, 1 << 20, Gauge::default());
        let (spool, writer) = open(
            config(dir.path(), 1 << 20, 1 << 16),
            Position::default(),
            rx,
            &metrics,
        )
        .unwrap();
        // The newest segment was cut after its last whole, checked record.
        let kept = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        let second_end = {
            let b0 = encode(&record(0)).len() as u64 + HEADER;
            let b1 = encode(&record(1)).len() as u64 + HEADER;
            b0 + b1
        };
        assert_eq!(kept, second_end, "cut at the first record that fails");
        assert!(kept < good as u64);
        drop(tx);
        writer.join().unwrap();
        let mut reader = SpoolReader::new(spool, Position::default());
        let mut got = Vec::new();
        while let Some(r) = reader.next_blocking() {
            got.push(r);
        }
        assert_eq!(got, vec![record(0), record(1)]);
        assert!(metrics.render().contains("vigil_spool_torn_bytes_total"));

        // A record in the middle of a segment that fails its check is a dead letter.
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Vec::new();
        for i in 0..3 {
            let body = encode(&record(i));
            let crc = if i == 1 { 0 } else { crc32fast::hash(&body) };
            seg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            seg.extend_from_slice(&crc.to_le_bytes());
            seg.extend_from_slice(&body);
        }
        std::fs::write(segment_path(dir.path(), 1), &seg).unwrap();
        std::fs::write(segment_path(dir.path(), 2), b"").unwrap();
        let (tx, rx) = memory::channel::<RawRecord>(4, 1 << 20, Gauge::default());
        let (spool, writer) = open(
            config(dir.path(), 1 << 20, 1 << 16),
            Position::default(),
            rx,
            &metrics,
        )
        .unwrap();
        drop(tx);
        writer.join().unwrap();
        let mut reader = SpoolReader::new(spool, Position::default());
        let mut got = Vec::new();
        while let Some(r) = reader.next_blocking() {
            got.push(r);
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], record(0));
        assert_eq!(got[1].refused.as_ref().map(|r| r.0), Some("spool_corrupt"));
        assert_eq!(got[1].bytes, encode(&record(1)), "the bytes are kept");
        assert_eq!(got[2], record(2));
    }
}
