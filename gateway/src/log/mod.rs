//! The embedded event log and dead-letter log: two segmented logs (`segment`) under
//! `<data>/log/`, written by one thread of their own (`writer`) that group-commits: every batch
//! that arrived while the last sync ran is written as one block per log (`block`: compressed
//! from 64 KiB up) and made durable by one `fdatasync`, and each waiting request is answered
//! only after it. The queue to
//! the writer is bounded by the bytes it holds; a request that cannot get into it in time gets
//! 503 from the caller's deadline. Dead letters are kept under a size cap and for a retention
//! period, the oldest segments deleted first.
//!
//! The folder is locked while open: one gateway (or `gateway dump`) at a time.
//!
//! IO boundary: the writer thread (writes, syncs, deletions) and the readers.

mod block;
mod segment;
mod writer;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pulse_protocol::{DeadLetter, EventRecord};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::pool::BufPool;

pub(crate) use block::{FRAME_HEADER, frame_header};
use writer::{Job, Writer};

/// Most requests waiting for the writer (their bytes are bounded separately).
const QUEUE_JOBS: usize = 8192;

/// Why the log could not take or give records.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read, written or synced.
    #[error("log IO: {0}")]
    Io(#[from] io::Error),
    /// The log is closed (shutting down).
    #[error("the log is closed")]
    Closed,
    /// A sync failed earlier: nothing written since can be trusted to be durable, so the log
    /// takes nothing more until the gateway restarts.
    #[error("the log is failed since an earlier sync error; restart the gateway")]
    Failed,
    /// Another process holds the log.
    #[error("{0} is in use by another gateway (or `gateway dump`)")]
    Locked(PathBuf),
    /// A record is not what the log holds.
    #[error("a record of the log cannot be read: {0}")]
    Corrupt(String),
}

/// Sizes and retention of the logs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Event log segments roll past this many bytes.
    pub event_segment_bytes: u64,
    /// Dead-letter segments roll past this many bytes (or past a tenth of the retention).
    pub dead_segment_bytes: u64,
    /// The dead-letter log keeps at most about this many bytes (plus one segment).
    pub dead_max_bytes: u64,
    /// Dead letters older than this are deleted.
    pub dead_retention: Duration,
    /// Bytes of records waiting for the writer, at most.
    pub max_queued_bytes: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            event_segment_bytes: 64 << 20,
            dead_segment_bytes: 8 << 20,
            dead_max_bytes: 256 << 20,
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_queued_bytes: 64 << 20,
        }
    }
}

/// The folders of a data folder's logs.
fn folders(data: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root = data.join("log");
    (root.clone(), root.join("events"), root.join("deadletters"))
}

/// Takes the log folder's lock file.
fn lock(root: &Path) -> Result<File, LogError> {
    std::fs::create_dir_all(root)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("LOCK"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked(root.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// One event record as read back, with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the log, from 0.
    pub seq: u64,
    /// The record's bytes (JSON, see `protocol/PROTOCOL.md`, "The logs").
    pub bytes: Vec<u8>,
}

impl StoredEvent {
    /// The record, read.
    pub fn record(&self) -> Result<EventRecord, LogError> {
        serde_json::from_slice(&self.bytes).map_err(|e| LogError::Corrupt(e.to_string()))
    }
}

/// The logs of a data folder, open for reading only (for `gateway dump` and tests): the lock
/// is held, nothing is written.
#[derive(Debug)]
pub struct LogFiles {
    events: PathBuf,
    dead: PathBuf,
    _lock: File,
}

impl LogFiles {
    /// Opens the logs in `data` (fails while a gateway has them open).
    pub fn open(data: &Path) -> Result<Self, LogError> {
        let (root, events, dead) = folders(data);
        let lock = lock(&root)?;
        Ok(Self {
            events,
            dead,
            _lock: lock,
        })
    }

    /// The event records from position `from` on, in log order.
    pub fn events_from(&self, from: u64) -> impl Iterator<Item = Result<StoredEvent, LogError>> {
        read_events(&self.events, from)
    }

    /// Every dead letter kept, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, LogError> {
        read_dead_letters(&self.dead)
    }

    /// Every dead letter kept, as stored.
    pub fn dead_letter_bytes(&self) -> impl Iterator<Item = Result<Vec<u8>, LogError>> {
        read_events(&self.dead, 0).map(|r| r.map(|e| e.bytes))
    }
}

fn read_events(dir: &Path, from: u64) -> Box<dyn Iterator<Item = Result<StoredEvent, LogError>>> {
    if !dir.exists() {
        return Box::new(std::iter::empty());
    }
    match segment::read_from(dir, from) {
        Ok(reader) => Box::new(reader.map(|r| {
            r.map(|(seq, bytes)| StoredEvent { seq, bytes })
                .map_err(LogError::from)
        })),
        Err(e) => Box::new(std::iter::once(Err(e.into()))),
    }
}

fn read_dead_letters(dir: &Path) -> Result<Vec<DeadLetter>, LogError> {
    read_events(dir, 0)
        .map(|r| {
            let stored = r?;
            serde_json::from_slice(&stored.bytes).map_err(|e| LogError::Corrupt(e.to_string()))
        })
        .collect()
}

/// A batch for the log: each buffer holds whole frames (header, then record).
#[derive(Debug, Default)]
pub(crate) struct Frames {
    pub(crate) events: Vec<u8>,
    pub(crate) event_count: u64,
    pub(crate) dead: Vec<u8>,
    pub(crate) dead_count: u64,
}

/// Which appended events the scorer has not applied yet; the lowest of them (or the log's end)
/// is where replay starts after a crash.
#[derive(Debug)]
pub(crate) struct Watermark {
    pending: BTreeSet<u64>,
    next: u64,
}

/// Held by a request until the scorer has applied its events; dropping it lets the replay
/// point move past them.
#[derive(Debug)]
pub struct AppliedGuard {
    first: u64,
    watermark: Arc<Mutex<Watermark>>,
}

impl Drop for AppliedGuard {
    fn drop(&mut self) {
        if let Ok(mut wm) = self.watermark.lock() {
            wm.pending.remove(&self.first);
        }
    }
}

/// What an append gives back once durable.
#[derive(Debug)]
pub(crate) struct Appended {
    /// For a batch with events: held until they are applied to reader state.
    pub(crate) applied: Option<AppliedGuard>,
}

/// The logs, open for appending.
pub struct EventLog {
    events_dir: PathBuf,
    dead_dir: PathBuf,
    tx: RwLock<Option<mpsc::Sender<Job>>>,
    budget: Arc<Semaphore>,
    max_queued: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Where the next event goes, as of opening (before the first append).
    start: u64,
    watermark: Arc<Mutex<Watermark>>,
    _lock: File,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("events", &self.events_dir)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (or creates) the logs in `<data>/log/` and starts their writer thread.
    pub fn open(
        data: &Path,
        settings: &LogSettings,
        metrics: Arc<Metrics>,
        pool: Arc<BufPool>,
    ) -> Result<Self, LogError> {
        let (root, events_dir, dead_dir) = folders(data);
        let lock = lock(&root)?;
        let events = segment::SegmentLog::open(&events_dir, settings.event_segment_bytes)?;
        let dead = segment::SegmentLog::open(&dead_dir, settings.dead_segment_bytes)?;
        let start = events.next();
        metrics.dead_letter_store(dead.bytes(), dead.records());
        let watermark = Arc::new(Mutex::new(Watermark {
            pending: BTreeSet::new(),
            next: start,
        }));
        let (tx, rx) = mpsc::channel(QUEUE_JOBS);
        let writer = Writer::new(
            events,
            dead,
            settings,
            metrics,
            pool,
            Arc::clone(&watermark),
        );
        let handle = std::thread::Builder::new()
            .name("pulse-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            events_dir,
            dead_dir,
            tx: RwLock::new(Some(tx)),
            budget: Arc::new(Semaphore::new(settings.max_queued_bytes)),
            max_queued: settings.max_queued_bytes,
            writer: Mutex::new(Some(handle)),
            start,
            watermark,
            _lock: lock,
        })
    }

    /// Where replay would start now: the first event not yet applied to reader state (or the
    /// log's end).
    pub fn replay_point(&self) -> u64 {
        self.watermark
            .lock()
            .map(|wm| wm.pending.first().copied().unwrap_or(wm.next))
            .unwrap_or(self.start)
    }

    /// The position the first event appended since opening gets.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Appends the frames and resolves once they are durable. Waits for room in the queue first
    /// (the caller's deadline bounds the wait).
    pub(crate) async fn append(&self, frames: Frames) -> Result<Appended, LogError> {
        let size = frames.events.len() + frames.dead.len();
        let permits = u32::try_from(size.clamp(1, self.max_queued)).unwrap_or(u32::MAX);
        let budget = Arc::clone(&self.budget)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| LogError::Closed)?;
        let tx = self
            .tx
            .read()
            .ok()
            .and_then(|tx| tx.clone())
            .ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Job {
            frames,
            reply,
            _budget: budget,
            queued: std::time::Instant::now(),
        })
        .await
        .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Wakes the writer without a batch, so that it applies the dead letters' retention even
    /// when nothing is being written (the housekeeping thread calls it now and then). Never
    /// waits: skipped when the queue is busy (the writer is awake then anyway).
    pub fn nudge(&self) {
        let Ok(budget) = Arc::clone(&self.budget).try_acquire_many_owned(1) else {
            return;
        };
        let tx = self.tx.read().ok().and_then(|tx| tx.clone());
        if let Some(tx) = tx {
            let (reply, _) = oneshot::channel();
            let _ = tx.try_send(Job {
                frames: Frames::default(),
                reply,
                _budget: budget,
                queued: std::time::Instant::now(),
            });
        }
    }

    /// The event records from position `from` on, in log order (as of now).
    pub fn events_from(&self, from: u64) -> impl Iterator<Item = Result<StoredEvent, LogError>> {
        read_events(&self.events_dir, from)
    }

    /// Every dead letter kept, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, LogError> {
        read_dead_letters(&self.dead_dir)
    }

    /// Stops taking appends and waits until the writer has made everything it took durable.
    pub fn close(&self) -> Result<(), LogError> {
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        self.budget.close();
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            handle
                .join()
                .map_err(|_| LogError::Io(io::Error::other("the log writer panicked")))?;
        }
        Ok(())
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "the log did not close cleanly");
        }
    }
}

#[cfg(test)]
mod tests;
