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
        let (n, ended_by_newline) = read_bounded_line(&mut reader, &mut line)?;
        if n == 0 {
            break;
        }
        lines += 1;
        let too_long = n - usize::from(ended_by_newline) > MAX_LINE_BYTES;
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
/// full length with its newline (0 at end of file) and whether a newline ended it.
fn read_bounded_line(
    reader: &mut impl BufRead,
    out: &mut Vec<u8>,
) -> std::io::Result<(usize, bool)> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((total, false));
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
            return Ok((total, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_at_the_limit_is_kept_and_one_byte_over_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("big.log");
        let at_limit = vec![b'a'; MAX_LINE_BYTES];
        let over = vec![b'b'; MAX_LINE_BYTES + 1];
        std::fs::write(
            &path,
            [&at_limit[..], b"\n", &over[..], b"\r\nlast"].concat(),
        )?;
        let mut got = Vec::new();
        let lines = read_lines(&path, 10, |batch| {
            got.extend(batch);
            Ok(())
        })?;
        assert_eq!(lines, 3);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].bytes, at_limit);
        assert!(got[0].refused.is_none());
        assert_eq!(got[1].bytes.len(), MAX_LINE_BYTES);
        assert_eq!(got[1].refused.as_ref().map(|r| r.0), Some("frame_too_long"));
        assert_eq!(got[2].bytes, b"last");
        Ok(())
    }
}
