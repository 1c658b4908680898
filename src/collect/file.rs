//! Files, read line by line (`vigil replay`): each line is one record with the file as its
//! source and the file's modification time as the receive time, so year-less syslog stamps
//! are placed relative to when the file was written, not to today.
//!
//! Zeek TSV logs (a file whose first line is `#separator ...`) are read with their header:
//! header lines set the reader's state, and each record becomes one JSON object with Zeek's
//! field names plus `"_path"` (`conn`, `dns`, ...), the same shape as Zeek's own JSON logs, for
//! the Zeek parser definitions. A record that does not fit the header is a dead letter
//! (reason `zeek`).
//!
//! A file named `*.events.jsonl` holds events already normalized, one JSON object per line in
//! Vigil's event schema (what `vigil parse` prints): they skip the parsers. Rule tests use it
//! for sources that have no text form, such as flow exports. A line that is not such an event
//! is a dead letter (reason `event_json`).

use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};
use vigil_parsers::formats::zeek::{ZeekLine, ZeekReader};

use crate::bus::RawRecord;

/// Longest line read from a file; longer lines are cut there and kept as dead letters.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Reads `path` in chunks of up to `batch` records (and about [`crate::app::BATCH_BYTES`] of
/// lines), calling `sink` for each chunk. Returns the number of lines read.
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
    let observer_id = vigil_parsers::Text::from(format!("file:{}", path.display()));
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut lines = 0u64;
    let mut chunk = Vec::with_capacity(batch);
    let mut chunk_bytes = 0usize;
    let mut line = Vec::new();
    let mut zeek: Option<ZeekReader> = None;
    let events = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".events.jsonl"));
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
        if lines == 1 && line.starts_with(b"#separator") {
            zeek = Some(ZeekReader::new());
        }
        let mut refused = too_long.then(|| {
            (
                "frame_too_long",
                format!("line {lines} of {n} bytes is longer than {MAX_LINE_BYTES}; first {MAX_LINE_BYTES} kept"),
            )
        });
        if let (Some(z), None) = (zeek.as_mut(), &refused) {
            if let Ok(text) = std::str::from_utf8(&line) {
                match z.line(text) {
                    Ok(ZeekLine::Header) => continue,
                    Ok(ZeekLine::Record(pairs)) => {
                        line = zeek_record_json(&z.header().path, pairs);
                    }
                    Err(e) => refused = Some((e.kind, format!("line {lines}: {}", e.detail))),
                }
            }
        }
        let mut event = None;
        if events && refused.is_none() {
            match serde_json::from_slice::<vigil_parsers::Event>(&line) {
                Ok(mut e) => {
                    if e.raw.is_empty() {
                        e.raw = line.clone();
                    }
                    event = Some(crate::bus::Decoded::Event(Box::new(e)));
                }
                Err(e) => refused = Some(("event_json", format!("line {lines}: {e}"))),
            }
        }
        chunk.push(RawRecord {
            bytes: std::mem::take(&mut line),
            observer_type: "file",
            observer_id: observer_id.clone(),
            peer: None,
            received_at,
            refused,
            decoded: event,
            ack: None,
        });
        chunk_bytes += chunk.last().map_or(0, |r| r.bytes.len());
        if chunk.len() >= batch || chunk_bytes >= crate::app::BATCH_BYTES {
            chunk_bytes = 0;
            sink(std::mem::replace(&mut chunk, Vec::with_capacity(batch)))?;
        }
    }
    if !chunk.is_empty() {
        sink(chunk)?;
    }
    Ok(lines)
}

/// One Zeek record as a JSON object: its fields by name, and `_path`.
fn zeek_record_json(path: &str, pairs: vigil_parsers::formats::Pairs) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("_path".into(), serde_json::Value::String(path.to_owned()));
    for (k, v) in pairs {
        object.insert(k, serde_json::Value::String(v));
    }
    serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default()
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

    #[test]
    fn a_zeek_tsv_log_becomes_one_json_object_per_record() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("conn.log");
        let text = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n\
                    #unset_field\t-\n#path\tconn\n\
                    #fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\n\
                    #types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\n\
                    1764324001.123456\tCx1\t10.0.0.5\t50000\t203.0.113.7\t443\ttcp\t-\n\
                    1764324002.5\tCx2\t10.0.0.6\t50001\n";
        std::fs::write(&path, text)?;
        let mut got = Vec::new();
        read_lines(&path, 10, |batch| {
            got.extend(batch);
            Ok(())
        })?;
        assert_eq!(got.len(), 2, "headers are not records");
        let first: serde_json::Value = serde_json::from_slice(&got[0].bytes)?;
        assert_eq!(first["_path"], "conn");
        assert_eq!(first["id.orig_h"], "10.0.0.5");
        assert_eq!(first["id.resp_p"], "443");
        assert!(first.get("service").is_none(), "unset fields are left out");
        // A record with the wrong number of fields is kept as a dead letter, not dropped.
        assert_eq!(got[1].refused.as_ref().map(|r| r.0), Some("zeek"));
        Ok(())
    }
}
