//! The embedded event log, dead-letter log and decision log: three segmented logs (`segment`)
//! under `<data>/log/`, written by one thread of their own (`writer`) that group-commits: every
//! batch that arrived while the last sync ran is written as one block per log (`block`:
//! compressed from 64 KiB up) and made durable by one `fdatasync`, and each waiting request is answered only
//! after it. The queue to the writer is bounded by the bytes it holds; a request that cannot get
//! into it in time gets 503 from the caller's deadline. Dead letters and decisions are kept
//! under a size cap and for a retention period, the oldest segments deleted first.
//!
//! Decisions take another way in: nobody waits for them. They gather in a [`DecisionQueue`]
//! bounded by bytes (past it they are dropped and counted), which the writer empties into one
//! block after each group commit, once the group's requests are answered; that log is synced
//! at most once a second, so a crash loses at most the last second or two of decisions (never
//! an acknowledged event).
//!
//! The folder is locked while a gateway has it open; [`LogFiles::read_only`] reads beside a
//! running gateway, whole checksummed blocks only.
//!
//! IO boundary: the writer thread (writes, syncs, deletions) and the readers.

mod block;
mod erase;
mod segment;
mod writer;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pulse_protocol::{DeadLetter, EventRecord};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::pool::BufPool;

pub(crate) use block::{FRAME_HEADER, frame_header};
pub use writer::Erased;
use writer::{Job, Work, Writer};

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
    /// The decision log, when decisions are logged to the embedded store.
    pub decisions: Option<DecisionLogSettings>,
    /// The event log keeps at most about this many bytes (plus one segment); none: all.
    pub events_max_bytes: Option<u64>,
    /// Events older than this are deleted; none: kept.
    pub events_retention: Option<Duration>,
}

/// Sizes and retention of the decision log.
#[derive(Debug, Clone)]
pub struct DecisionLogSettings {
    /// Segments roll past this many bytes (or past a tenth of the retention).
    pub segment_bytes: u64,
    /// The log keeps at most about this many bytes (plus one segment).
    pub max_bytes: u64,
    /// Decisions older than this are deleted.
    pub retention: Duration,
    /// Bytes of decisions waiting for the writer, at most; past it they are dropped.
    pub queue_bytes: usize,
}

impl Default for DecisionLogSettings {
    fn default() -> Self {
        Self {
            segment_bytes: 32 << 20,
            max_bytes: 1 << 30,
            retention: Duration::from_secs(30 * 24 * 3600),
            queue_bytes: 8 << 20,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            event_segment_bytes: 64 << 20,
            dead_segment_bytes: 8 << 20,
            dead_max_bytes: 256 << 20,
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_queued_bytes: 64 << 20,
            decisions: Some(DecisionLogSettings::default()),
            events_max_bytes: None,
            events_retention: None,
        }
    }
}

/// The folders of a data folder's logs.
struct Folders {
    root: PathBuf,
    events: PathBuf,
    dead: PathBuf,
    decisions: PathBuf,
}

fn folders(data: &Path) -> Folders {
    let root = data.join("log");
    Folders {
        events: root.join("events"),
        dead: root.join("deadletters"),
        decisions: root.join("decisions"),
        root,
    }
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

/// The logs of a data folder, open for reading only (for `gateway dump`, `gateway replay` and
/// tests): nothing is written.
#[derive(Debug)]
pub struct LogFiles {
    events: PathBuf,
    dead: PathBuf,
    decisions: PathBuf,
    _lock: Option<File>,
}

impl LogFiles {
    /// Opens the logs in `data`, holding their lock (fails while a gateway has them open).
    pub fn open(data: &Path) -> Result<Self, LogError> {
        let f = folders(data);
        let lock = lock(&f.root)?;
        Ok(Self {
            events: f.events,
            dead: f.dead,
            decisions: f.decisions,
            _lock: Some(lock),
        })
    }

    /// Opens the logs in `data` without their lock, beside a gateway that may be writing them.
    /// That is safe: records are read from whole blocks whose checksum holds; the block being
    /// written at the end of the newest segment is not one yet and ends the reading; a
    /// segment deleted by retention while it is read is skipped. What is read may include
    /// records of a group commit that then failed (never acknowledged; their clients retry and
    /// readers dedupe events by id).
    pub fn read_only(data: &Path) -> Self {
        let f = folders(data);
        Self {
            events: f.events,
            dead: f.dead,
            decisions: f.decisions,
            _lock: None,
        }
    }

    /// Opens the logs in `data`: with their lock when no gateway has them, else read-only
    /// beside it ([`LogFiles::read_only`]). Says which.
    pub fn open_or_read_only(data: &Path) -> Result<(Self, bool), LogError> {
        match Self::open(data) {
            Ok(files) => Ok((files, false)),
            Err(LogError::Locked(_)) => Ok((Self::read_only(data), true)),
            Err(e) => Err(e),
        }
    }

    /// The records of one log (`events`, `dead_letters` or `decisions`) from position `from`,
    /// as stored, with their positions.
    pub fn records_from(
        &self,
        log: &str,
        from: u64,
    ) -> Option<impl Iterator<Item = Result<StoredEvent, LogError>>> {
        let dir = match log {
            "events" => &self.events,
            "dead_letters" => &self.dead,
            "decisions" => &self.decisions,
            _ => return None,
        };
        Some(read_events(dir, from))
    }

    /// The newest `n` records of one log (as [`LogFiles::records_from`] names them), newest
    /// first: reads only the segments that hold them.
    pub fn latest(&self, log: &str, n: usize) -> Option<Result<Vec<StoredEvent>, LogError>> {
        let dir = match log {
            "events" => &self.events,
            "dead_letters" => &self.dead,
            "decisions" => &self.decisions,
            _ => return None,
        };
        let starts: Vec<u64> = match segment::list(dir) {
            Ok(list) => list.into_iter().map(|(start, _)| start).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Some(Err(e.into())),
        };
        let mut found = Vec::new();
        for from in starts.iter().rev() {
            found = match read_events(dir, *from).collect::<Result<Vec<_>, _>>() {
                Ok(records) => records,
                Err(e) => return Some(Err(e)),
            };
            if found.len() >= n {
                break;
            }
        }
        let skip = found.len().saturating_sub(n);
        Some(Ok(found.into_iter().skip(skip).rev().collect()))
    }

    /// Every decision kept, oldest first, as stored (one JSON object each).
    pub fn decision_bytes(&self) -> impl Iterator<Item = Result<Vec<u8>, LogError>> {
        read_events(&self.decisions, 0).map(|r| r.map(|e| e.bytes))
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

impl LogFiles {
    /// Writes one log (`events`, `dead_letters` or `decisions`) to `out` as JSON lines, oldest
    /// first, each record with its schema version (`gateway dump`). Events and dead letters are
    /// re-serialized (the log keeps an event's bytes as received, the client's whitespace and
    /// escapes included); decisions are printed as stored. A record written before records
    /// carried a version gets `"v":1`.
    pub fn dump(&self, log: &str, out: &mut impl io::Write) -> Result<(), LogError> {
        let corrupt = |e: serde_json::Error| LogError::Corrupt(e.to_string());
        let records = self
            .records_from(log, 0)
            .ok_or_else(|| LogError::Corrupt(format!("no log {log:?}")))?;
        let mut line = Vec::new();
        for stored in records {
            let stored = stored?;
            line.clear();
            match log {
                "events" => serde_json::to_writer(&mut line, &stored.record()?).map_err(corrupt)?,
                "dead_letters" => {
                    let letter: DeadLetter =
                        serde_json::from_slice(&stored.bytes).map_err(corrupt)?;
                    serde_json::to_writer(&mut line, &letter).map_err(corrupt)?;
                }
                _ => pulse_protocol::push_versioned(&mut line, &stored.bytes),
            }
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Ok(())
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

impl Watermark {
    /// Nothing pending; replay would start at `next`.
    pub(crate) fn at(next: u64) -> Self {
        Self {
            pending: BTreeSet::new(),
            next,
        }
    }

    /// Where replay would start: the lowest position not applied yet.
    pub(crate) fn point(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.next)
    }

    /// Positions `first..end` are durable but not applied: the replay point stays at or below
    /// `first` until the guard is dropped.
    pub(crate) fn hold(wm: &Arc<Mutex<Self>>, first: u64, end: u64) -> Option<AppliedGuard> {
        let mut w = wm.lock().ok()?;
        w.pending.insert(first);
        w.next = w.next.max(end);
        drop(w);
        Some(AppliedGuard {
            first,
            watermark: Arc::clone(wm),
        })
    }
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

/// Decisions waiting for the log writer: whole frames in one buffer, bounded by bytes. Nobody
/// waits for them; past the bound they are dropped (and counted by the caller).
#[derive(Debug)]
pub(crate) struct DecisionQueue {
    frames: Mutex<(Vec<u8>, u64)>,
    max_bytes: usize,
    /// Set once a wake-up was sent to the writer and not yet acted on.
    wake_sent: AtomicBool,
}

impl DecisionQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            frames: Mutex::new((Vec::new(), 0)),
            max_bytes,
            wake_sent: AtomicBool::new(false),
        }
    }

    /// Adds one record: `None` when the queue is full (or poisoned), else whether the writer
    /// should be woken (the first record since it last emptied the queue).
    fn push(&self, record: &[u8]) -> Option<bool> {
        let Ok(mut q) = self.frames.lock() else {
            return None;
        };
        let (buf, count) = &mut *q;
        if buf.len() + FRAME_HEADER + record.len() > self.max_bytes {
            return None;
        }
        let at = buf.len();
        buf.extend_from_slice(&[0; FRAME_HEADER]);
        buf.extend_from_slice(record);
        let (head, payload) = buf[at..].split_at_mut(FRAME_HEADER);
        frame_header(head, payload);
        *count += 1;
        drop(q);
        Some(!self.wake_sent.swap(true, Ordering::AcqRel))
    }

    /// Takes what is queued, leaving `spare` (cleared) in its place: `(frames, records)`.
    pub(crate) fn take(&self, spare: Vec<u8>) -> (Vec<u8>, u64) {
        // Cleared before taking: a record pushed after the take wakes the writer again.
        self.wake_sent.store(false, Ordering::Release);
        let Ok(mut q) = self.frames.lock() else {
            return (spare, 0);
        };
        let mut spare = spare;
        spare.clear();
        let (buf, count) = std::mem::replace(&mut *q, (spare, 0));
        (buf, count)
    }
}

/// The logs, open for appending.
pub struct EventLog {
    events_dir: PathBuf,
    dead_dir: PathBuf,
    decisions: Option<Arc<DecisionQueue>>,
    tx: RwLock<Option<mpsc::Sender<Work>>>,
    budget: Arc<Semaphore>,
    max_queued: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Where the next event goes, as of opening (before the first append).
    start: u64,
    watermark: Arc<Mutex<Watermark>>,
    /// Events before this position are in stored reader state: retention may delete them.
    evictable_before: Arc<AtomicU64>,
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
        let f = folders(data);
        let (events_dir, dead_dir) = (f.events, f.dead);
        let lock = lock(&f.root)?;
        let events = segment::SegmentLog::open(&events_dir, settings.event_segment_bytes)?;
        let dead = segment::SegmentLog::open(&dead_dir, settings.dead_segment_bytes)?;
        let decisions = match &settings.decisions {
            Some(d) => {
                let log = segment::SegmentLog::open(&f.decisions, d.segment_bytes)?;
                metrics.decision_log_store(log.bytes(), log.records());
                Some((log, Arc::new(DecisionQueue::new(d.queue_bytes)), d.clone()))
            }
            None => None,
        };
        let queue = decisions.as_ref().map(|(_, q, _)| Arc::clone(q));
        let start = events.next();
        metrics.dead_letter_store(dead.bytes(), dead.records());
        let watermark = Arc::new(Mutex::new(Watermark {
            pending: BTreeSet::new(),
            next: start,
        }));
        let (tx, rx) = mpsc::channel(QUEUE_JOBS);
        let evictable_before = Arc::new(AtomicU64::new(0));
        let writer = Writer::new(
            events,
            dead,
            decisions,
            settings,
            metrics,
            pool,
            (Arc::clone(&watermark), Arc::clone(&evictable_before)),
        );
        let handle = std::thread::Builder::new()
            .name("pulse-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            events_dir,
            dead_dir,
            decisions: queue,
            tx: RwLock::new(Some(tx)),
            budget: Arc::new(Semaphore::new(settings.max_queued_bytes)),
            max_queued: settings.max_queued_bytes,
            writer: Mutex::new(Some(handle)),
            start,
            watermark,
            evictable_before,
            _lock: lock,
        })
    }

    /// Batches waiting for the log writer.
    pub fn queued(&self) -> usize {
        let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
        tx.as_ref().map_or(0, |tx| QUEUE_JOBS - tx.capacity())
    }

    /// Bytes the event log's segments take on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.events_dir).map_or(0, |dir| {
            dir.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
    }

    /// Every event before `position` is in stored reader state (the position the last
    /// write-behind recorded): the event log's retention may delete them, never later ones.
    pub fn set_evictable_before(&self, position: u64) {
        self.evictable_before.store(position, Ordering::Relaxed);
    }

    /// Where replay would start now: the first event not yet applied to reader state (or the
    /// log's end).
    pub fn replay_point(&self) -> u64 {
        self.watermark
            .lock()
            .map(|wm| wm.point())
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
        self.ask(|reply| {
            Work::Append(Job {
                frames,
                reply,
                _budget: budget,
                queued: std::time::Instant::now(),
            })
        })
        .await
    }

    /// Sends the writer `work` (built around its reply channel) and waits for the answer.
    async fn ask<T>(
        &self,
        work: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Work,
    ) -> Result<T, LogError> {
        let tx = self
            .tx
            .read()
            .ok()
            .and_then(|tx| tx.clone())
            .ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(work(reply)).await.map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// Hands one decision record to the writer without waiting; false when the decision log
    /// is off, full or closed (the caller counts the drop). It is written after the next group
    /// commit (or at once when the writer is idle).
    pub fn log_decision(&self, record: &[u8]) -> bool {
        let Some(queue) = &self.decisions else {
            return false;
        };
        if self.tx.read().map_or(true, |tx| tx.is_none()) {
            return false;
        }
        match queue.push(record) {
            None => false,
            Some(wake) => {
                if wake {
                    self.nudge();
                }
                true
            }
        }
    }

    /// Whether this log keeps decisions.
    pub fn logs_decisions(&self) -> bool {
        self.decisions.is_some()
    }

    /// Wakes the writer without a batch, so that it applies the retention of dead letters and
    /// decisions, writes queued decisions and syncs them, even when nothing else is being
    /// written (the housekeeping thread calls it every second). Never waits: skipped when the
    /// queue is busy (the writer is awake then anyway).
    pub fn nudge(&self) {
        let Ok(budget) = Arc::clone(&self.budget).try_acquire_many_owned(1) else {
            return;
        };
        let tx = self.tx.read().ok().and_then(|tx| tx.clone());
        if let Some(tx) = tx {
            let (reply, _) = oneshot::channel();
            let _ = tx.try_send(Work::Append(Job {
                frames: Frames::default(),
                reply,
                _budget: budget,
                queued: std::time::Instant::now(),
            }));
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
