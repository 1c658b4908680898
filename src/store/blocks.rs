//! Blocks of records: how the searchable copies of embedded mode (log events in `events.db`,
//! flows in `flows.db`) are stored. A block is up to [`BLOCK_RECORDS`] records of one write, in
//! arrival order and numbered (`first` on), as LZ4-compressed frames of
//! `[time ms: i64][length: u32][bytes]`, with its time range and the sorted 64-bit hashes of its
//! searchable values ([`value_key`]). Two tables per store: `{name}_blocks` (the block's facts,
//! small, read by every search) and `{name}_block_data` (the frames, read only for blocks a
//! search cannot skip).
//!
//! Why: a row per record with indexes made SQLite write every page twice (log, then
//! checkpoint) and the indexes touch pages at random; the event writer spent about 7.5 µs a
//! record and the flow writer about 11. A block costs about 2 µs a record (BENCHMARKS.md, "End
//! to end, 2026-11-30 afternoon").
//!
//! Invariants: numbers increase with arrival and never repeat (a store reopened continues
//! after its last block, or its older rows; the newest block is never evicted, so there is
//! always one to continue after); eviction drops whole blocks, oldest first, so at most a
//! block more than the bound is kept; a block holds at most [`MAX_BLOCK_BYTES`] of frames
//! unless one record alone is larger (`syslog.max_message_bytes` is capped at 16 MiB so none
//! is); a block's hashes only ever let a search skip it,
//! the records themselves are compared; nothing read from a file is trusted (a size above
//! [`MAX_BLOCK_BYTES`] or frames that do not add up are an error, never a panic or a large
//! allocation).

use std::net::IpAddr;

use rusqlite::Connection;

use super::StoreError;

/// Most records in one block (a writer's transaction holds several).
pub const BLOCK_RECORDS: usize = 4096;
/// A block is closed early once its frames take this many bytes before compression.
const BLOCK_BYTES: usize = 4 << 20;
/// The largest block a search decompresses: a bigger size in a file is corrupt, not trusted.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// The two tables of the store `name` (`event`, `flow`).
pub fn schema(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name}_blocks (
            id INTEGER PRIMARY KEY,
            first_event INTEGER NOT NULL,
            events INTEGER NOT NULL,
            ts_min INTEGER NOT NULL,
            ts_max INTEGER NOT NULL,
            keys BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {name}_blocks_by_ts ON {name}_blocks (ts_max);
        CREATE TABLE IF NOT EXISTS {name}_block_data (
            id INTEGER PRIMARY KEY,
            data BLOB NOT NULL
        );"
    )
}

/// A record as a block stores it.
pub trait Framed {
    /// Its time, in milliseconds (the block's time range is made of these).
    fn time_ms(&self) -> i64;
    /// The keys of its searchable values ([`value_key`]).
    fn keys(&self, out: &mut Vec<u64>);
    /// Its bytes (what a search decodes).
    fn encode(&self, out: &mut Vec<u8>);
}

/// A stable 64-bit hash (FNV-1a) of a searchable field's tag and value, as stored in a block's
/// keys. Stable across builds and platforms: it is written to disk. A collision only makes a
/// search read a block it could have skipped.
pub fn value_key(tag: u8, value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(tag).chain(value.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`value_key`] of an address (its octets: IPv4 and IPv6 differ, as `IpAddr` equality does).
pub fn ip_key(tag: u8, ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => value_key(tag, &v4.octets()),
        IpAddr::V6(v6) => value_key(tag, &v6.octets()),
    }
}

/// Whether a block's keys (sorted little-endian u64s) hold `k`.
pub fn holds_key(keys: &[u8], k: u64) -> bool {
    let at = |i: usize| {
        keys.get(i * 8..i * 8 + 8).map_or(u64::MAX, |c| {
            u64::from_le_bytes(c.try_into().unwrap_or_default())
        })
    };
    let (mut lo, mut hi) = (0, keys.len() / 8);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at(mid).cmp(&k) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// The writing side of a store's blocks (one per writer).
pub struct BlockWriter {
    name: &'static str,
    /// Number of the next record.
    next: i64,
    /// Number of the first record of the newest block written (never evicted).
    newest_first: i64,
    frames: Vec<u8>,
    keys: Vec<u64>,
}

impl BlockWriter {
    /// The writer of `name`'s blocks in `conn`; numbering continues after the last block or
    /// `after` (the last number of an older row table), whichever is greater.
    pub fn open(conn: &Connection, name: &'static str, after: i64) -> Result<Self, StoreError> {
        let newest: Option<(i64, i64)> = match conn.query_row(
            &format!("SELECT first_event, events FROM {name}_blocks ORDER BY id DESC LIMIT 1"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ) {
            Ok(n) => Some(n),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(e) => return Err(e.into()),
        };
        let next = newest
            .map_or(1, |(first, n)| first.saturating_add(n))
            .max(after.saturating_add(1));
        Ok(BlockWriter {
            name,
            next,
            newest_first: newest.map_or(next, |(first, _)| first),
            frames: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// Number of the next record.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Writes `records` as blocks in `tx` and returns the number after the last; the caller
    /// makes it [`BlockWriter::committed`] once the transaction commits (a failed one is
    /// written again with the same numbers).
    pub fn write<R: Framed>(&mut self, tx: &Connection, records: &[R]) -> Result<i64, StoreError> {
        let name = self.name;
        let mut block_stmt = tx.prepare_cached(&format!(
            "INSERT INTO {name}_blocks (first_event, events, ts_min, ts_max, keys)
             VALUES (?1, ?2, ?3, ?4, ?5)"
        ))?;
        let mut data_stmt = tx.prepare_cached(&format!(
            "INSERT INTO {name}_block_data (id, data) VALUES (?1, ?2)"
        ))?;
        let mut next = self.next;
        let mut rest = records;
        while !rest.is_empty() {
            self.frames.clear();
            self.keys.clear();
            let (mut ts_min, mut ts_max) = (i64::MAX, i64::MIN);
            let mut taken = 0;
            for r in rest.iter().take(BLOCK_RECORDS) {
                if taken > 0 && self.frames.len() >= BLOCK_BYTES {
                    break;
                }
                let before = self.frames.len();
                let ts = r.time_ms();
                self.frames.extend_from_slice(&ts.to_le_bytes());
                crate::bytes::put_sized(&mut self.frames, |out| r.encode(out));
                if taken > 0 && self.frames.len() > MAX_BLOCK_BYTES {
                    // Too large to join this block: it starts the next.
                    self.frames.truncate(before);
                    break;
                }
                taken += 1;
                ts_min = ts_min.min(ts);
                ts_max = ts_max.max(ts);
                r.keys(&mut self.keys);
            }
            rest = rest.get(taken..).unwrap_or_default();
            self.keys.sort_unstable();
            self.keys.dedup();
            let keys: Vec<u8> = self.keys.iter().flat_map(|k| k.to_le_bytes()).collect();
            block_stmt.execute(rusqlite::params![next, taken as i64, ts_min, ts_max, keys])?;
            let id = tx.last_insert_rowid();
            data_stmt.execute(rusqlite::params![
                id,
                lz4_flex::compress_prepend_size(&self.frames)
            ])?;
            self.newest_first = next;
            next += taken as i64;
        }
        Ok(next)
    }

    /// The transaction of [`BlockWriter::write`] committed: `next` is the next number.
    pub fn committed(&mut self, next: i64) {
        self.next = next;
    }

    /// Deletes the blocks whose records are all numbered `cut` or lower (in id order, which
    /// is their records' order), never the newest; returns how many records went.
    pub fn evict(&self, tx: &Connection, cut: i64) -> Result<u64, StoreError> {
        let name = self.name;
        let cut = cut.min(self.newest_first.saturating_sub(1));
        let mut evicted: u64 = 0;
        let mut last_gone = None;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT id, first_event, events FROM {name}_blocks ORDER BY id"
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (id, first, n): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                if first.saturating_add(n).saturating_sub(1) > cut {
                    break;
                }
                last_gone = Some(id);
                evicted = evicted.saturating_add(u64::try_from(n).unwrap_or(0));
            }
        }
        if let Some(id) = last_gone {
            tx.execute(&format!("DELETE FROM {name}_blocks WHERE id <= ?1"), [id])?;
            tx.execute(
                &format!("DELETE FROM {name}_block_data WHERE id <= ?1"),
                [id],
            )?;
        }
        Ok(evicted)
    }
}

/// The statement [`BlockMeta::frames`] reads a block's frames with.
pub fn data_query(name: &str) -> String {
    format!(
        "SELECT CASE WHEN length(data) <= ?2 THEN data END FROM {name}_block_data WHERE id = ?1"
    )
}

/// A record of a block: its number, its time (ms) and its bytes.
pub type Record<'a> = (i64, i64, &'a [u8]);

/// A block's facts, as a search reads them.
pub struct BlockMeta {
    /// Its row id (the key of its frames).
    pub id: i64,
    /// Number of its first record.
    pub first: i64,
    /// How many records it holds.
    pub count: i64,
    /// Its newest record's time.
    pub ts_max: i64,
    /// Its keys ([`holds_key`]).
    pub keys: Vec<u8>,
}

impl BlockMeta {
    /// The facts of a row selected as `id, first_event, events, ts_max, keys`.
    pub fn from_row(row: &rusqlite::Row<'_>) -> Result<BlockMeta, StoreError> {
        Ok(BlockMeta {
            id: row.get(0)?,
            first: row.get(1)?,
            count: row.get(2)?,
            ts_max: row.get(3)?,
            keys: row.get(4)?,
        })
    }

    /// Its frames, decompressed (read with `data`, [`data_query`] of the store).
    pub fn frames(&self, data: &mut rusqlite::CachedStatement<'_>) -> Result<Vec<u8>, StoreError> {
        // LZ4 never grows data by more than about 1/255: a larger blob is not read at all.
        let most = MAX_BLOCK_BYTES + MAX_BLOCK_BYTES / 255 + 64;
        let compressed: Option<Vec<u8>> =
            data.query_row(rusqlite::params![self.id, most as i64], |r| r.get(0))?;
        let compressed = compressed.ok_or_else(|| self.corrupt("larger than any block"))?;
        crate::bytes::lz4_decompress(&compressed, MAX_BLOCK_BYTES).map_err(|e| self.corrupt(&e))
    }

    /// The (number, time, bytes) of each record of `frames`, oldest first; an error unless
    /// they are exactly the block's count.
    pub fn records<'a>(&self, frames: &'a [u8]) -> Result<Vec<Record<'a>>, StoreError> {
        let mut out =
            Vec::with_capacity(usize::try_from(self.count).unwrap_or(0).min(BLOCK_RECORDS));
        let mut c = crate::bytes::Cursor(frames);
        while !c.0.is_empty() {
            let ts = c.array().map(i64::from_le_bytes);
            let (Ok(ts), Ok(bytes)) = (ts, c.long()) else {
                return Err(self.corrupt("truncated frame"));
            };
            out.push((self.first.saturating_add(out.len() as i64), ts, bytes));
        }
        if out.len() as i64 != self.count {
            return Err(self.corrupt(&format!("{} records, {} expected", out.len(), self.count)));
        }
        Ok(out)
    }

    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!("block {}: {what}", self.id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn value_keys_are_stable_and_found() {
        // Written to disk: a change here makes older blocks unsearchable by value.
        assert_eq!(value_key(3, b"root"), 0x4730_5c8e_cdae_d346);
        let keys = [1u64, 5, 9].map(u64::to_le_bytes).concat();
        assert!(holds_key(&keys, 5));
        assert!(holds_key(&keys, 9));
        assert!(!holds_key(&keys, 6));
        assert!(!holds_key(&[], 6));
    }
}
