//! The best-effort writers of embedded mode: the searchable copies (log events in `events.db`,
//! flow records in `flows.db`) are written by threads of their own, at a lower CPU priority,
//! so that detection never waits for them.
//!
//! Invariants:
//! - the engine never blocks on a writer: [`Sink::send`] either queues a batch or counts it
//!   as dropped (`reason="queue_full"`);
//! - bounded: at most `queue_limit` rows wait for a writer, and each store keeps at most
//!   `max_kept` records plus one block (the oldest blocks are deleted, counted);
//! - a batch that fails twice is counted (`reason="write_failed"`), never retried forever;
//! - the thread ends when every [`Sink`] is dropped, after storing what was queued.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use rusqlite::Connection;

use super::StoreError;
use crate::telemetry::{Counter, Metrics};

/// WAL pages between checkpoints of a copy file (SQLite's default is 1,000). Index pages are
/// rewritten by every transaction; a checkpoint copies each page once however often the WAL
/// holds it, so checkpointing less often copies less.
const WAL_CHECKPOINT_PAGES: i64 = 8192;

/// Opens (creating, with `schema`) a copy file for its writer: WAL, no fsync on commits (a
/// copy for search, best effort by design), and a page cache of `cache_mib`.
///
/// The cache is per table because it cuts both ways (BENCHMARKS.md, "End to end, night of
/// 2026-11-29/30"): a large one keeps the pages of indexes written at random places (flows, by
/// address) from being read back from the kernel, but every commit walks it
/// (`pcache1TruncateUnsafe`), which cost a fifth of the event writer's CPU at 64 MiB.
pub fn open_for_writing(
    path: &Path,
    schema: &str,
    cache_mib: u32,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -(i64::from(cache_mib) * 1024))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Opens a copy file for searching (the API); one not yet created is created empty.
pub fn open_for_reading(path: &Path, schema: &str) -> Result<Connection, StoreError> {
    if !path.exists() {
        return open_for_writing(path, schema, 2);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// A table a writer thread fills.
pub trait Table: Send + 'static {
    /// What one row is made from.
    type Row: Send + 'static;
    /// Stores `rows` in one transaction and deletes the oldest beyond `max_kept` (whole
    /// blocks); returns how many it deleted.
    fn insert(&mut self, rows: &[Self::Row], max_kept: u64) -> Result<u64, StoreError>;
}

/// The names a writer reports under.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The thread's name.
    pub thread: &'static str,
    /// What it stores, for the log (`events`, `flow records`).
    pub rows: &'static str,
    /// Counter of rows not kept (labelled by `reason`).
    pub dropped: (&'static str, &'static str),
    /// Counter of rows written.
    pub stored: (&'static str, &'static str),
    /// Counter of the oldest rows deleted beyond the bound.
    pub evicted: (&'static str, &'static str),
}

/// What a [`Sink`] does with a batch that would take its queue over the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Drop it, counted: the searchable copy gives way, offenses never wait (the writer runs
    /// at nice +10 and takes the CPU the engine leaves).
    #[default]
    Shed,
    /// Wait for room, so every row is kept: the engine slows to the writer's pace, and
    /// senders with it (TCP waits, the spool fills). The writer runs at normal priority.
    Wait,
}

/// How long a waiting [`Sink`] waits for room before it drops the batch after all, counted (a
/// writer that is stuck must not stop the engine for good; one that ended stops the wait at
/// once).
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands rows to a writer thread. Shedding ([`Overflow::Shed`]) it never blocks the engine: a
/// batch that would take the queue over its limit is counted as dropped instead.
pub struct Sink<R> {
    tx: SyncSender<Vec<R>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    dropped: Counter,
    overflow: Overflow,
    /// Cleared when the writer thread ends (a panic included): a waiting sink stops waiting.
    alive: Arc<AtomicBool>,
}

/// Clears the writer's `alive` flag when its thread ends, however it ends.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<R> Clone for Sink<R> {
    fn clone(&self) -> Self {
        Sink {
            tx: self.tx.clone(),
            queued: Arc::clone(&self.queued),
            limit: self.limit,
            overflow: self.overflow,
            alive: Arc::clone(&self.alive),
            dropped: self.dropped.clone(),
        }
    }
}

impl<R> Sink<R> {
    /// Queues `rows` for storing (an empty batch is ignored).
    pub fn send(&self, rows: Vec<R>) {
        let n = rows.len();
        if n == 0 {
            return;
        }
        if self.overflow == Overflow::Wait {
            // Room for the batch, or an empty queue (a batch larger than the limit goes alone);
            // a writer that ended, or no room within MAX_WAIT, drops it (counted).
            let started = std::time::Instant::now();
            loop {
                if !self.alive.load(Ordering::Acquire) || started.elapsed() > MAX_WAIT {
                    self.dropped.add(n as u64);
                    return;
                }
                let q = self.queued.load(Ordering::Acquire);
                if q == 0 || q + n <= self.limit {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            self.queued.fetch_add(n, Ordering::AcqRel);
        } else if self.queued.fetch_add(n, Ordering::AcqRel) + n > self.limit {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.dropped.add(n as u64);
            return;
        }
        match self.tx.try_send(rows) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                self.dropped.add(n as u64);
            }
        }
    }
}

/// Starts the writer thread of `table`; it ends when every [`Sink`] is dropped, after storing
/// what was queued.
pub fn spawn<T: Table>(
    mut table: T,
    names: Names,
    max_kept: u64,
    (queue_limit, overflow): (usize, Overflow),
    metrics: &Metrics,
) -> Result<(Sink<T::Row>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T::Row>>(4096);
    let queued = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    let dropped = metrics.counter(
        names.dropped.0,
        names.dropped.1,
        &[("reason", "queue_full")],
    );
    let sink = Sink {
        tx,
        queued: queued.clone(),
        limit: queue_limit.max(1),
        dropped,
        overflow,
        alive: Arc::clone(&alive),
    };
    let counters = [
        metrics.counter(names.stored.0, names.stored.1, &[]),
        metrics.counter(names.evicted.0, names.evicted.1, &[]),
        metrics.counter(
            names.dropped.0,
            names.dropped.1,
            &[("reason", "write_failed")],
        ),
    ];
    let handle = std::thread::Builder::new()
        .name(names.thread.into())
        .spawn(move || {
            let _alive = Alive(alive);
            if overflow == Overflow::Shed {
                lower_priority(names.thread);
            }
            writer_loop(&mut table, &rx, &queued, max_kept, names.rows, counters)
        })
        .map_err(|e| StoreError::Corrupt(format!("starting {}: {e}", names.thread)))?;
    Ok((sink, handle))
}

/// Runs this thread at a lower CPU priority (nice +10): storing a searchable copy takes only
/// the CPU the engine leaves. Under overload its queue fills and batches are dropped (counted)
/// instead of offenses slowing down. The correlation state saver runs so too.
pub(crate) fn lower_priority(thread: &str) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; on Linux, PRIO_PROCESS with a
        // thread id changes that thread only. A failure leaves the priority as it was.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if rc != 0 {
            tracing::debug!(thread, "could not lower the writer's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = thread;
}

fn writer_loop<T: Table>(
    table: &mut T,
    rx: &Receiver<Vec<T::Row>>,
    queued: &AtomicUsize,
    max_kept: u64,
    rows: &str,
    [stored, evicted, failed]: [Counter; 3],
) {
    // Queued batches are merged into one transaction up to this many rows (a single batch may
    // be larger: it is written as it is).
    const MAX_ROWS_PER_TRANSACTION: usize = 20_000;
    while let Ok(mut batch) = rx.recv() {
        while batch.len() < MAX_ROWS_PER_TRANSACTION {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let mut result = table.insert(&batch, max_kept);
        if result.is_err() {
            // One retry (a busy reader, a transient I/O error); then the batch is counted lost.
            std::thread::sleep(std::time::Duration::from_millis(200));
            result = table.insert(&batch, max_kept);
        }
        match result {
            Ok(gone) => {
                stored.add(n as u64);
                evicted.add(gone);
            }
            Err(e) => {
                failed.add(n as u64);
                tracing::warn!(error = %e, rows = n, what = rows, "storing a searchable copy failed");
            }
        }
        queued.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A table whose writer dies on its first batch.
    struct Broken;

    impl Table for Broken {
        type Row = u32;

        fn insert(&mut self, _rows: &[u32], _max_kept: u64) -> Result<u64, StoreError> {
            panic!("the writer dies");
        }
    }

    fn names() -> Names {
        Names {
            thread: "vigil-test-writer",
            rows: "rows",
            dropped: ("test_dropped_total", "Dropped."),
            stored: ("test_stored_total", "Stored."),
            evicted: ("test_evicted_total", "Evicted."),
        }
    }

    /// A waiting sink whose writer died does not wait for room that never comes: what it is
    /// given from then on is dropped and counted.
    #[test]
    fn a_waiting_sink_stops_waiting_when_its_writer_is_gone() {
        let metrics = Metrics::new();
        let (sink, handle) = spawn(Broken, names(), 10, (2, Overflow::Wait), &metrics).unwrap();
        sink.send(vec![1, 2]);
        assert!(handle.join().is_err(), "the writer panicked");
        // The queue still counts the lost batch as waiting: without the writer's flag this
        // would wait for room until MAX_WAIT.
        sink.send(vec![3, 4, 5]);
        sink.send(vec![6]);
        let text = metrics.render();
        assert!(
            text.contains("test_dropped_total{reason=\"queue_full\"} 4"),
            "{text}"
        );
    }
}
