//! Correlation windows saved to a file beside the store, written on a thread of their own.
//!
//! The engine thread only takes the snapshot (it copies keys and counters; held events are
//! shared, not copied) and hands it to the [`Saver`]. The saver streams it into `<file>.tmp`,
//! syncs it, and renames it over the file: a crash leaves either the old state or the new
//! one, never half of one. The file carries the spool position the snapshot holds everything
//! before, so a restart restores the windows and reads the spool again from there.
//!
//! The file (format 2): [`BINARY_FILE`], the format (u32), when taken (ms, i64), the position
//! (a presence byte, then segment and offset as u64), then the windows in the scaled-out
//! checkpoint's binary form ([`crate::cluster::wire::put_snapshot`]: held events in the
//! event codec) as an LZ4 frame with an end mark (`bytes::write_framed`), streamed through a
//! 1 MiB buffer. Format 1 was JSON: a state
//! of 360 MB took about 2 s of the saving thread's CPU to write at 200 k events/s, and the
//! spool filling up asks for a save every 13 s or so at that rate. Format 1 files (and the
//! `engine-state.json` name they had) are still read.
//!
//! Before, the state was one blob in the store, written by the engine thread in its own
//! transaction: a 450 MiB state stalled the engine for seconds and held a second copy of
//! itself in memory while it was written (the soak in BENCHMARKS.md). Stores written by those
//! builds are still read ([`read_legacy`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vigil_correlate::EngineSnapshot;

use crate::store::json_file;
use crate::store::Store;

/// The file's format version (1: JSON, still read).
const FORMAT: u32 = 2;

/// First byte of a binary state file (a JSON one starts with `{`).
pub const BINARY_FILE: u8 = 0xC3;

/// Saved windows, as read back.
pub struct Saved {
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
    /// The spool position the windows hold every record before (none without a spool).
    pub position: Option<(u64, u64)>,
    /// The windows.
    pub snapshot: EngineSnapshot,
}

#[cfg(test)]
#[derive(serde::Serialize)]
struct Out<'a> {
    format: u32,
    taken_at_ms: i64,
    position: Option<(u64, u64)>,
    snapshot: &'a EngineSnapshot,
}

#[derive(serde::Deserialize)]
struct In {
    format: u32,
    taken_at_ms: i64,
    position: Option<(u64, u64)>,
    snapshot: EngineSnapshot,
}

/// Writes `snapshot` to `path` atomically ([`json_file::replace_atomically`]: a crash leaves
/// the last save whole); returns the bytes written. Memory: two 1 MiB buffers (and LZ4's),
/// whatever the size.
pub fn write(
    path: &Path,
    snapshot: &EngineSnapshot,
    position: Option<(u64, u64)>,
    taken_at: DateTime<Utc>,
) -> std::io::Result<u64> {
    use std::io::Write;
    json_file::replace_atomically(path, |out| {
        let mut head = vec![BINARY_FILE];
        head.extend_from_slice(&FORMAT.to_le_bytes());
        head.extend_from_slice(&taken_at.timestamp_millis().to_le_bytes());
        match position {
            None => head.push(0),
            Some((segment, offset)) => {
                head.push(1);
                head.extend_from_slice(&segment.to_le_bytes());
                head.extend_from_slice(&offset.to_le_bytes());
            }
        }
        out.write_all(&head)?;
        crate::bytes::write_framed(out, |buf, flush| {
            let encode = vigil_parsers::codec::encode;
            crate::cluster::wire::put_snapshot(buf, snapshot, encode, &mut |b: &mut Vec<u8>| {
                flush(b)
            })
        })?;
        Ok(())
    })
}

/// The windows saved at `path`, if the file exists (either format). An unreadable file is an
/// error (the caller starts with empty windows and says so); a `.tmp` left by a crash is
/// ignored.
pub fn read(path: &Path) -> Result<Option<Saved>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let unreadable = |e: String| format!("{} is unreadable: {e}", path.display());
    if let Some((&BINARY_FILE, rest)) = bytes.split_first() {
        return read_binary(rest).map(Some).map_err(unreadable);
    }
    let saved: In = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if saved.format != 1 {
        return Err(format!(
            "{}: format {} (this build reads 1 and {FORMAT})",
            path.display(),
            saved.format
        ));
    }
    Ok(Some(Saved {
        taken_at: DateTime::from_timestamp_millis(saved.taken_at_ms).unwrap_or_default(),
        position: saved.position,
        snapshot: saved.snapshot,
    }))
}

/// A format 2 file after its first byte.
fn read_binary(bytes: &[u8]) -> Result<Saved, String> {
    let mut r = crate::bytes::Cursor(bytes);
    let format = u32::from_le_bytes(r.array()?);
    if format != FORMAT {
        return Err(format!("format {format} (this build reads 1 and {FORMAT})"));
    }
    let taken_at_ms = i64::from_le_bytes(r.array()?);
    let position = match r.u8()? {
        0 => None,
        1 => Some((
            u64::from_le_bytes(r.array()?),
            u64::from_le_bytes(r.array()?),
        )),
        _ => return Err("position tag".into()),
    };
    // The file is this process's own: any size it decompresses to.
    let body = crate::bytes::read_framed(r.0, u64::MAX)?;
    let snapshot = crate::cluster::wire::snapshot_from_bytes(&body).map_err(|e| e.to_string())?;
    Ok(Saved {
        taken_at: DateTime::from_timestamp_millis(taken_at_ms).unwrap_or_default(),
        position,
        snapshot,
    })
}

/// Windows saved in the store by builds before the state file (with the spool position
/// stored beside them). The caller moves them to the file ([`write`]) and then deletes them
/// from the store.
pub fn read_legacy(store: &Store) -> Result<Option<Saved>, String> {
    let Some((taken_at, bytes)) = store.engine_state().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let position = store
        .spool_position("snapshot")
        .map_err(|e| e.to_string())?;
    let snapshot: EngineSnapshot = serde_json::from_slice(&bytes)
        .map_err(|e| format!("saved correlation state (taken {taken_at}) is unreadable: {e}"))?;
    Ok(Some(Saved {
        taken_at,
        position,
        snapshot,
    }))
}

/// Windows to write: a snapshot, or a cut the saving thread makes one of (the engine thread
/// only takes the cut, see [`vigil_correlate::Engine::cut`]).
pub enum Taken {
    Snapshot(EngineSnapshot),
    Cut(vigil_correlate::SnapshotCut),
}

impl From<EngineSnapshot> for Taken {
    fn from(s: EngineSnapshot) -> Self {
        Taken::Snapshot(s)
    }
}

impl Taken {
    fn into_snapshot(self) -> EngineSnapshot {
        match self {
            Taken::Snapshot(s) => s,
            Taken::Cut(c) => c.into_snapshot(),
        }
    }
}

/// A snapshot to write, and the spool position it holds everything before.
pub struct Job {
    pub snapshot: Taken,
    pub position: Option<(u64, u64)>,
    pub taken_at: DateTime<Utc>,
}

/// A finished save.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// The position now safe to restart from.
    pub position: Option<(u64, u64)>,
    /// Bytes written.
    pub bytes: u64,
    /// Keys saved.
    pub keys: u64,
    /// Wall time of the write (the engine thread spent none of it).
    pub took: Duration,
}

/// The saving thread: one save at a time; a save asked for while one is being written is
/// refused (the caller asks again later), so snapshots never queue up in memory.
pub struct Saver {
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<Result<Done, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    busy: bool,
}

fn keys_of(snapshot: &EngineSnapshot) -> u64 {
    snapshot.windows.iter().map(|w| w.keys.len() as u64).sum()
}

impl Saver {
    /// Starts the thread that writes to `path`.
    pub fn start(path: PathBuf) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(1);
        // One save in flight, so one result at most waiting.
        let (done_tx, done) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("vigil-state-saver".into())
            .spawn(move || {
                // Writing a state (hundreds of MB with held events) took CPU from the engine and
                // the normalize thread in bursts: receive -> offense p99 went from 48 ms to
                // 0.9 s at 150 k/s while one was written. At nice +10 it takes what they leave;
                // the spool's other half is the room it has to finish.
                crate::store::writer::lower_priority("vigil-state-saver");
                for job in rx {
                    let started = Instant::now();
                    let snapshot = job.snapshot.into_snapshot();
                    let keys = keys_of(&snapshot);
                    let result = write(&path, &snapshot, job.position, job.taken_at)
                        .map(|bytes| Done {
                            position: job.position,
                            bytes,
                            keys,
                            took: started.elapsed(),
                        })
                        .map_err(|e| format!("writing {}: {e}", path.display()));
                    drop(snapshot);
                    if done_tx.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            busy: false,
        })
    }

    /// Whether a save is being written.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Hands `job` to the thread; false (and the job dropped) while a save is being written.
    pub fn submit(&mut self, job: Job) -> bool {
        if self.busy {
            return false;
        }
        match self.jobs.as_ref().map(|j| j.try_send(job)) {
            Some(Ok(())) => {
                self.busy = true;
                true
            }
            _ => false,
        }
    }

    /// The save that finished since the last call, if one did (never waits).
    pub fn poll(&mut self) -> Option<Result<Done, String>> {
        let r = match self.done.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => return None,
            // Saves stop; the spool then keeps everything since the last one (nothing lost).
            Err(mpsc::TryRecvError::Disconnected) if self.busy => {
                Err("the saving thread is gone".into())
            }
            Err(mpsc::TryRecvError::Disconnected) => return None,
        };
        self.busy = false;
        Some(r)
    }

    /// Waits for the save being written, if any, and returns it.
    pub fn wait(&mut self) -> Option<Result<Done, String>> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        Some(
            self.done
                .recv()
                .unwrap_or_else(|_| Err("the saving thread is gone".into())),
        )
    }

    /// Waits for the save in progress, then writes `last` and waits for it too (shutdown).
    pub fn finish(mut self, last: Job) -> Result<Done, String> {
        if let Some(Err(e)) = self.wait() {
            tracing::error!(error = %e, "saving correlation windows failed");
        }
        if !self.submit(last) {
            return Err("the saving thread is gone".into());
        }
        // Dropping `self` then closes the channel and joins the thread.
        self.wait()
            .unwrap_or_else(|| Err("the saving thread is gone".into()))
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use vigil_correlate::{KeySnapshot, WindowSnapshot};
    use vigil_parsers::Event;

    use super::*;

    fn snapshot(keys: usize) -> EngineSnapshot {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut event = Event::new(t, t);
        event.message = Some("Failed password for root from 203.0.113.9".into());
        let event = Arc::new(event);
        EngineSnapshot {
            version: EngineSnapshot::VERSION,
            now: Some(1_700_000_000_000_000_000),
            windows: vec![WindowSnapshot {
                correlation: "ssh_brute_force".into(),
                group_by: vec!["source.ip".into()],
                watermark: Some(1_700_000_000_000_000_000),
                keys: (0..keys)
                    .map(|k| KeySnapshot {
                        group: vec![format!("203.0.113.{k}")],
                        slots: vec![(k as i64, 0, Some(Arc::clone(&event)), false)],
                        firing: None,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_saved_snapshot_reads_back_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        assert!(read(&path).unwrap().is_none(), "nothing saved yet");
        let taken = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let bytes = write(&path, &snapshot(3), Some((7, 4096)), taken).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.snapshot, snapshot(3));
        assert_eq!(back.position, Some((7, 4096)));
        assert_eq!(back.taken_at, taken);
        assert!(
            !json_file::tmp_path(&path).exists(),
            "the temporary file was renamed"
        );
    }

    /// Enough keys (each with its own event) that the writer flushes its buffer many times,
    /// with and without a position; the file is far smaller than format 1's JSON.
    #[test]
    fn a_large_state_streams_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        let mut snap = snapshot(20_000);
        for (k, key) in snap.windows[0].keys.iter_mut().enumerate() {
            let mut e = (*key.slots[0].2.clone().unwrap()).clone();
            e.raw = format!("<38>Nov 28 10:00:01 srv01 sshd[{k}]: Failed password for root")
                .into_bytes();
            e.sequence = Some(k as u64);
            key.slots.push((k as i64 + 1, 3, Some(Arc::new(e)), true));
            key.firing = Some((k as i64, format!("index {k}")));
        }
        let taken = DateTime::from_timestamp_millis(-5).unwrap();
        let bytes = write(&path, &snap, None, taken).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert!(back.snapshot == snap);
        assert_eq!((back.position, back.taken_at), (None, taken));
        let json = serde_json::to_vec(&snap).unwrap();
        assert!(
            bytes * 4 < json.len() as u64,
            "{bytes} against {}",
            json.len()
        );
    }

    /// A file as builds before format 2 wrote it (JSON) reads as it did.
    #[test]
    fn a_format_1_file_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.json");
        let taken = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        json_file::write_atomically(
            &path,
            &Out {
                format: 1,
                taken_at_ms: taken.timestamp_millis(),
                position: Some((3, 30)),
                snapshot: &snapshot(4),
            },
        )
        .unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.snapshot, snapshot(4));
        assert_eq!((back.position, back.taken_at), (Some((3, 30)), taken));
    }

    /// Every cut of a binary file, and a format this build does not know, is an error (never a
    /// panic or a wrong state).
    #[test]
    fn a_damaged_binary_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        write(&path, &snapshot(3), Some((1, 2)), Utc::now()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut");
        for n in 1..bytes.len() {
            std::fs::write(&cut, &bytes[..n]).unwrap();
            assert!(read(&cut).is_err(), "cut at {n}");
        }
        let mut other = bytes.clone();
        other[1] = 9;
        std::fs::write(&cut, &other).unwrap();
        assert!(read(&cut).err().unwrap().contains("format 9"));
    }

    #[test]
    fn a_half_written_save_leaves_the_last_one_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        write(&path, &snapshot(2), Some((1, 10)), Utc::now()).unwrap();
        // A crash during the next save: its temporary file is cut short, never renamed.
        let mut partial = Vec::new();
        serde_json::to_writer(
            &mut partial,
            &Out {
                format: FORMAT,
                taken_at_ms: 0,
                position: Some((2, 20)),
                snapshot: &snapshot(50),
            },
        )
        .unwrap();
        partial.truncate(partial.len() / 2);
        std::fs::write(json_file::tmp_path(&path), &partial).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.position, Some((1, 10)));
        assert_eq!(back.snapshot, snapshot(2));
        // The next save replaces the leftover.
        write(&path, &snapshot(4), Some((3, 30)), Utc::now()).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().position, Some((3, 30)));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        std::fs::write(&path, b"{\"format\":1,\"taken_at_ms\":0,\"posi").unwrap();
        let err = read(&path).err().unwrap();
        assert!(err.contains("unreadable"), "{err}");
        std::fs::write(
            &path,
            br#"{"format":99,"taken_at_ms":0,"position":null,"snapshot":{"version":1,"now":null,"windows":[]}}"#,
        )
        .unwrap();
        let err = read(&path).err().unwrap();
        assert!(err.contains("format 99"), "{err}");
    }

    #[test]
    fn the_saver_writes_one_save_at_a_time_and_the_last_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine-state.bin");
        let mut saver = Saver::start(path.clone()).unwrap();
        let job = |keys: usize, at: u64| Job {
            snapshot: snapshot(keys).into(),
            position: Some((at, 0)),
            taken_at: Utc::now(),
        };
        assert!(saver.submit(job(5_000, 1)));
        assert!(saver.busy());
        assert!(
            !saver.submit(job(1, 2)),
            "refused while the first is written"
        );
        let done = saver.wait().unwrap().unwrap();
        assert_eq!((done.position, done.keys), (Some((1, 0)), 5_000));
        assert!(!saver.busy());
        assert!(saver.poll().is_none(), "reported once");
        assert_eq!(read(&path).unwrap().unwrap().position, Some((1, 0)));
        assert!(saver.submit(job(2, 3)));
        let last = saver.finish(job(3, 4)).unwrap();
        assert_eq!((last.position, last.keys), (Some((4, 0)), 3));
        let back = read(&path).unwrap().unwrap();
        assert_eq!((back.position, keys_of(&back.snapshot)), (Some((4, 0)), 3));
    }
}
