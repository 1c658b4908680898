//! RFC 6587 TCP framing, incremental and bounded.
//!
//! Two framings exist on syslog-over-TCP:
//! - **octet counting** (`MSG-LEN SP SYSLOG-MSG`, MSG-LEN a nonzero-led decimal);
//! - **non-transparent framing**: records end with LF (NUL is accepted as a delimiter too, and a
//!   trailing CR is stripped, so CRLF works). Empty records are skipped.
//!
//! The mode is detected **once per connection** from the first byte received: a digit `1`-`9`
//! means octet counting, anything else (normally `<`) means LF framing. The mode is then kept
//! for the life of the [`Framer`] (one framer per connection). In octet-counting mode, LF, CR
//! and NUL bytes between frames are tolerated and skipped (some senders add a newline after each
//! frame).
//!
//! Limits and recovery:
//! - an LF frame longer than `max_frame_len` yields [`FrameError::TooLong`] once; its bytes are
//!   discarded up to the next delimiter and the stream resyncs there;
//! - an octet count above `max_frame_len` yields [`FrameError::TooLong`]; exactly the declared
//!   number of bytes is skipped (as it arrives, never buffered) and the stream resyncs after it;
//! - a length field that is not digits followed by a space (or has more than 10 digits) yields
//!   [`FrameError::BadLength`] once. Octet counting cannot be resynced after that, so the framer
//!   is dead: every later call returns `None` and pushed bytes are dropped. The caller should
//!   close the connection.
//!
//! Memory: as long as the caller drains [`Framer::next_frame`] after each [`Framer::push`], the
//! buffer never holds more than `max_frame_len` plus a length header plus one pushed chunk.

/// Maximum number of digits in an octet count.
const MAX_LENGTH_DIGITS: usize = 10;

/// A framing failure. After [`FrameError::BadLength`] the framer yields nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame exceeds the maximum length. It was skipped and the stream resynced after it.
    #[error("frame too long: {declared_or_seen} bytes, max {max}")]
    TooLong {
        /// The declared octet count, or for LF frames the bytes seen before giving up
        /// (`max + 1`).
        declared_or_seen: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The octet count is malformed or the stream ended inside a frame; the stream cannot be
    /// resynced.
    #[error("bad octet count: {detail}")]
    BadLength {
        /// What was wrong, lowercase.
        detail: String,
    },
}

impl FrameError {
    /// Stable reason label for metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLong { .. } => "frame_too_long",
            FrameError::BadLength { .. } => "bad_octet_count",
        }
    }
}

/// The framing of a connection, detected from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6587 octet counting: `MSG-LEN SP MSG`.
    OctetCounting,
    /// RFC 6587 non-transparent framing: LF (or NUL) terminated.
    NonTransparent,
}

/// What the framer is doing with the head of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading frames normally.
    Normal,
    /// Discarding an oversized LF frame up to and including the next delimiter.
    SkipToDelimiter,
    /// Discarding this many more bytes of an oversized octet-counted frame.
    SkipOctets(usize),
    /// Unrecoverable: everything is dropped, nothing is returned.
    Dead,
    /// EOF was handled by [`Framer::finish`]; nothing more will come.
    Finished,
}

/// Incremental RFC 6587 framer for one TCP connection. See the module docs.
#[derive(Debug)]
pub struct Framer {
    max_frame_len: usize,
    buf: Vec<u8>,
    /// Index of the first unconsumed byte in `buf`.
    start: usize,
    /// LF mode: bytes after `start` already searched for a delimiter (avoids rescanning a
    /// partial frame on every push).
    scanned: usize,
    mode: Option<Mode>,
    state: State,
}

impl Framer {
    /// A framer that refuses frames longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Framer {
            max_frame_len,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            mode: None,
            state: State::Normal,
        }
    }

    /// The detected framing, once the first byte has arrived.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Bytes currently held (received but not yet returned or discarded).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes. Bytes that belong to a frame being skipped are dropped at once.
    pub fn push(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Dead | State::Finished) {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut bytes = bytes;
        if let State::SkipOctets(remaining) = self.state {
            if self.buf.is_empty() {
                let n = remaining.min(bytes.len());
                bytes = bytes.get(n..).unwrap_or_default();
                self.state = if n == remaining {
                    State::Normal
                } else {
                    State::SkipOctets(remaining - n)
                };
            }
        }
        if self.mode.is_none() {
            self.mode = bytes.first().map(|&b| match b {
                b'1'..=b'9' => Mode::OctetCounting,
                _ => Mode::NonTransparent,
            });
        }
        self.buf.extend_from_slice(bytes);
        self.discard_skipped();
    }

    /// The next complete frame, an error for a bad or oversized one, or `None` when more bytes
    /// are needed (or the framer is dead).
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            self.discard_skipped();
            if self.state != State::Normal {
                return None;
            }
            let item = match self.mode? {
                Mode::NonTransparent => self.next_lf_frame(),
                Mode::OctetCounting => self.next_counted_frame(),
            };
            match item {
                Step::Frame(frame) => return Some(Ok(frame)),
                Step::Error(e) => return Some(Err(e)),
                Step::Skipped => continue,
                Step::NeedMore => return None,
            }
        }
    }

    /// Call at EOF, repeatedly until it returns `None`: yields the frames still buffered, then
    /// a trailing unterminated LF frame, or `Err(BadLength)` ("truncated") when an octet-counted
    /// frame or its length was cut off. A connection that closes between frames is not an error.
    pub fn finish(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if let Some(item) = self.next_frame() {
            return Some(item);
        }
        let state = self.state;
        let mode = self.mode;
        self.state = State::Finished;
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let item = match (state, mode) {
            (State::Normal, Some(Mode::NonTransparent)) => {
                let frame = rest.strip_suffix(b"\r").unwrap_or(rest);
                (!frame.is_empty()).then(|| Ok(frame.to_vec()))
            }
            (State::Normal, Some(Mode::OctetCounting))
                if rest.iter().any(|b| !matches!(b, b'\n' | b'\r' | 0)) =>
            {
                Some(Err(FrameError::BadLength {
                    detail: "truncated".into(),
                }))
            }
            _ => None,
        };
        self.buf.clear();
        self.start = 0;
        item
    }

    /// Drops bytes at the head of the buffer that belong to a skipped frame.
    fn discard_skipped(&mut self) {
        match self.state {
            State::SkipOctets(remaining) => {
                let n = remaining.min(self.buffered_len());
                self.start += n;
                self.state = if n == remaining {
                    State::Normal
                } else {
                    State::SkipOctets(remaining - n)
                };
            }
            State::SkipToDelimiter => {
                let rest = self.buf.get(self.start..).unwrap_or_default();
                match rest.iter().position(|&b| b == b'\n' || b == 0) {
                    Some(i) => {
                        self.start += i + 1;
                        self.state = State::Normal;
                    }
                    None => self.start = self.buf.len(),
                }
            }
            State::Dead | State::Finished => self.start = self.buf.len(),
            State::Normal => {}
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// One step of LF framing.
    fn next_lf_frame(&mut self) -> Step {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        // Never look further than max + 1 bytes for the delimiter: the result is the same for
        // any chunking of the stream.
        let window = rest
            .get(..self.max_frame_len.saturating_add(2).min(rest.len()))
            .unwrap_or(rest);
        let unscanned = window.get(self.scanned..).unwrap_or_default();
        match unscanned
            .iter()
            .position(|&b| b == b'\n' || b == 0)
            .map(|i| i + self.scanned)
        {
            Some(i) => {
                self.scanned = 0;
                let line = rest.get(..i).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let step = if line.len() > self.max_frame_len {
                    Step::Error(FrameError::TooLong {
                        declared_or_seen: self.max_frame_len.saturating_add(1),
                        max: self.max_frame_len,
                    })
                } else if line.is_empty() {
                    Step::Skipped
                } else {
                    Step::Frame(line.to_vec())
                };
                self.start += i + 1;
                step
            }
            None if window.len() > self.max_frame_len.saturating_add(1) => {
                self.scanned = 0;
                self.state = State::SkipToDelimiter;
                Step::Error(FrameError::TooLong {
                    declared_or_seen: self.max_frame_len.saturating_add(1),
                    max: self.max_frame_len,
                })
            }
            None => {
                self.scanned = window.len();
                Step::NeedMore
            }
        }
    }

    /// One step of octet-counting framing.
    fn next_counted_frame(&mut self) -> Step {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        // Tolerate newlines / NULs between frames.
        let gap = rest
            .iter()
            .take_while(|&&b| matches!(b, b'\n' | b'\r' | 0))
            .count();
        if gap > 0 {
            self.start += gap;
            return Step::Skipped;
        }
        let mut declared: u64 = 0;
        let mut digits = 0;
        loop {
            match rest.get(digits) {
                None => return Step::NeedMore,
                Some(b' ') if digits > 0 => break,
                Some(&d @ b'0'..=b'9') if digits > 0 || d != b'0' => {
                    if digits == MAX_LENGTH_DIGITS {
                        return self.die("octet count has more than 10 digits");
                    }
                    declared = declared * 10 + u64::from(d - b'0');
                    digits += 1;
                }
                Some(_) if digits == 0 => return self.die("expected an octet count"),
                Some(_) => return self.die("expected a space after the octet count"),
            }
        }
        let header = digits + 1;
        let declared = usize::try_from(declared).unwrap_or(usize::MAX);
        if declared > self.max_frame_len {
            self.start += header;
            self.state = State::SkipOctets(declared);
            return Step::Error(FrameError::TooLong {
                declared_or_seen: declared,
                max: self.max_frame_len,
            });
        }
        let end = header.saturating_add(declared);
        let Some(frame) = rest.get(header..end) else {
            return Step::NeedMore;
        };
        let frame = frame.to_vec();
        self.start += end;
        Step::Frame(frame)
    }

    /// Marks the framer dead and returns the error to report once.
    fn die(&mut self, detail: &str) -> Step {
        self.state = State::Dead;
        self.buf.clear();
        self.start = 0;
        Step::Error(FrameError::BadLength {
            detail: detail.into(),
        })
    }
}

/// The outcome of one framing step.
enum Step {
    Frame(Vec<u8>),
    Error(FrameError),
    /// Something was consumed without producing an item; try again.
    Skipped,
    NeedMore,
}
