//! Files, read line by line (`vigil replay`): each line is one record with the file as its
//! source and the file's modification time as the receive time, so year-less syslog stamps
//! are placed relative to when the file was written, not to today.

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::bus::RawRecord;

/// Longest line read from a file; longer lines are cut there and kept as dead letters.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Reads `path` in chunks of up to `batch` records, calling `sink` for each chunk. Returns the
/// number of lines read.
pub fn read_lines(
    path: &Path,
    batch: usize,
    mut sink: impl FnMut(Vec<RawRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let received_at: DateTime<Utc> = file
        .metadata()
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    let observer_id = format!("file:{}", path.display());
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut lines = 0u64;
    let mut chunk = Vec::with_capacity(batch);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = read_bounded_line(&mut reader, &mut line)?;
        if n == 0 {
            break;
        }
        lines += 1;
        let too_long = n > MAX_LINE_BYTES;
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() && !too_long {
            continue;
        }
        chunk.push(RawRecord {
            bytes: std::mem::take(&mut line),
            observer_type: "file",
            observer_id: observer_id.clone(),
            peer: None,
            received_at,
            refused: too_long.then(|| {
                (
                    "frame_too_long",
                    format!("line {lines} of {n} bytes is longer than {MAX_LINE_BYTES}; first {MAX_LINE_BYTES} kept"),
                )
            }),
        });
        if chunk.len() >= batch {
            sink(std::mem::replace(&mut chunk, Vec::with_capacity(batch)))?;
        }
    }
    if !chunk.is_empty() {
        sink(chunk)?;
    }
    Ok(lines)
}

/// Reads one line into `out`, keeping at most [`MAX_LINE_BYTES`] of it; returns the line's
/// full length (0 at end of file).
fn read_bounded_line(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(total);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(out.len());
        out.extend_from_slice(available.get(..take.min(room)).unwrap_or_default());
        total += take;
        reader.consume(take);
        if done {
            return Ok(total);
        }
    }
}
