//! The log writer: one thread that owns the segmented logs. It takes every batch queued while
//! it was busy (up to a group cap), writes them with one vectored write per log, syncs each log
//! it touched once, answers every request of the group, and then deletes dead-letter segments
//! past the size cap or the retention. The group is as large as the load makes it: one batch
//! when idle, everything that arrived during the last sync when busy. Then, with nobody waiting,
//! it writes the decisions queued meanwhile as one block, syncing that log at most once a
//! second ([`DECISION_SYNC_EVERY`]).
//!
//! A failed write is cut back and only its group refused; a failed sync leaves the log
//! refusing everything (the page cache can no longer be trusted) until restart. The decision
//! log fails alone: its decisions are dropped and counted, the events go on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use std::sync::Mutex;

use super::segment::SegmentLog;
use super::{
    Appended, AppliedGuard, DecisionLogSettings, DecisionQueue, Frames, LogError, LogSettings,
    Watermark,
};
use crate::metrics::Metrics;
use crate::pool::BufPool;

/// Most requests one group commit takes.
const MAX_GROUP: usize = 1024;
/// Most bytes one group commit takes (a group always takes at least one request).
const MAX_GROUP_BYTES: usize = 16 << 20;
/// How often retention by age is looked at, at most.
const RETENTION_EVERY: Duration = Duration::from_secs(10);
/// How often the decision log is synced, at most (a crash loses what came since).
pub(crate) const DECISION_SYNC_EVERY: Duration = Duration::from_secs(1);

/// One request's batch on its way to the log.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) frames: Frames,
    /// Where its events went, once durable.
    pub(crate) reply: oneshot::Sender<Result<Appended, LogError>>,
    /// Its share of the queue's byte budget, given back once it is written.
    pub(crate) _budget: OwnedSemaphorePermit,
    /// When it was queued.
    pub(crate) queued: Instant,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Work {
    /// Append a request's batch.
    Append(Job),
    /// Close the segments appended to (after the batches queued before) and name every whole
    /// segment with records, for an erasure to rewrite.
    Seal {
        /// The segments, by log.
        reply: oneshot::Sender<Result<Vec<Sealed>, LogError>>,
    },
    /// Put an erasure's rewritten copies in place.
    Install {
        /// `(log, first position, copy, its size)`.
        copies: Vec<SegmentCopy>,
        /// Done (and synced).
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// A whole segment to rewrite: its log, first position and path.
pub(crate) type Sealed = (LogKind, u64, PathBuf);
/// A segment's rewritten copy: its log, first position, the copy's path and size.
pub(crate) type SegmentCopy = (LogKind, u64, PathBuf, u64);

/// Which of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogKind {
    /// The event log.
    Events,
    /// The dead letters.
    DeadLetters,
    /// The decision log.
    Decisions,
}

/// Records erased for a reader, by log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Event records.
    pub events: u64,
    /// Dead letters that mention them.
    pub dead_letters: u64,
    /// Decision records.
    pub decisions: u64,
}

/// The decision log as the writer holds it.
struct Decisions {
    log: SegmentLog,
    queue: Arc<DecisionQueue>,
    settings: DecisionLogSettings,
    /// The buffer the queue gets back when emptied.
    spare: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    last_retention: Instant,
}

pub(crate) struct Writer {
    events: SegmentLog,
    dead: SegmentLog,
    decisions: Option<Decisions>,
    dead_max_bytes: u64,
    dead_retention: Duration,
    metrics: Arc<Metrics>,
    pool: Arc<BufPool>,
    failed: bool,
    last_retention: Instant,
    watermark: Arc<Mutex<Watermark>>,
    events_max_bytes: Option<u64>,
    events_retention: Option<Duration>,
    /// Events before this position are in stored reader state (see
    /// `EventLog::set_evictable_before`): only they may be deleted.
    evictable_before: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn new(
        events: SegmentLog,
        dead: SegmentLog,
        decisions: Option<(SegmentLog, Arc<DecisionQueue>, DecisionLogSettings)>,
        settings: &LogSettings,
        metrics: Arc<Metrics>,
        pool: Arc<BufPool>,
        // The replay point's watermark, and the position before which retention may delete.
        (watermark, evictable_before): (Arc<Mutex<Watermark>>, Arc<AtomicU64>),
    ) -> Self {
        Self {
            watermark,
            events_max_bytes: settings.events_max_bytes,
            events_retention: settings.events_retention,
            evictable_before,
            events,
            dead,
            decisions: decisions.map(|(log, queue, settings)| Decisions {
                log,
                queue,
                settings,
                spare: Vec::new(),
                unsynced: false,
                last_sync: Instant::now(),
                last_retention: Instant::now(),
            }),
            dead_max_bytes: settings.dead_max_bytes,
            dead_retention: settings.dead_retention,
            metrics,
            pool,
            failed: false,
            last_retention: Instant::now(),
        }
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        let mut group = Vec::with_capacity(64);
        let mut asked = Vec::new();
        let size = |job: &Job| job.frames.events.len() + job.frames.dead.len();
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = 0;
            match first {
                Work::Append(job) => {
                    bytes += size(&job);
                    group.push(job);
                }
                other => asked.push(other),
            }
            while asked.is_empty() && group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(Work::Append(job)) => {
                        bytes += size(&job);
                        group.push(job);
                    }
                    Ok(other) => asked.push(other),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
            self.write_decisions(false);
            for work in asked.drain(..) {
                match work {
                    Work::Seal { reply } => {
                        let _ = reply.send(self.seal());
                    }
                    Work::Install { copies, reply } => {
                        let _ = reply.send(self.install(copies));
                    }
                    Work::Append(_) => {}
                }
            }
        }
        if let Err(e) = self.events.sync().and_then(|()| self.dead.sync()) {
            tracing::error!(error = %e, "final log sync failed");
        }
        self.write_decisions(true);
    }

    /// Closes the segments appended to, the decisions queued written first; every whole
    /// segment with records, by log.
    fn seal(&mut self) -> Result<Vec<Sealed>, LogError> {
        if self.failed {
            return Err(LogError::Closed);
        }
        let mut out = Vec::new();
        let mut add = |kind, sealed: Vec<(u64, PathBuf)>| {
            out.extend(sealed.into_iter().map(|(first, path)| (kind, first, path)));
        };
        add(LogKind::Events, self.events.seal()?);
        add(LogKind::DeadLetters, self.dead.seal()?);
        if let Some(d) = self.decisions.as_mut() {
            add(LogKind::Decisions, d.log.seal()?);
        }
        Ok(out)
    }

    /// Puts an erasure's copies in place and syncs the logs' folders.
    fn install(&mut self, copies: Vec<SegmentCopy>) -> Result<(), LogError> {
        for (kind, first, fresh, bytes) in copies {
            let log = match kind {
                LogKind::Events => &mut self.events,
                LogKind::DeadLetters => &mut self.dead,
                LogKind::Decisions => match self.decisions.as_mut() {
                    Some(d) => &mut d.log,
                    None => continue,
                },
            };
            log.install(first, &fresh, bytes)?;
        }
        self.events.sync()?;
        self.dead.sync()?;
        if let Some(d) = self.decisions.as_mut() {
            d.log.sync()?;
        }
        Ok(())
    }

    /// Writes the decisions queued since the last time as one block (nobody waits for them),
    /// syncs the decision log when a second has passed since its last sync (or `last`), and
    /// applies its size cap and retention.
    fn write_decisions(&mut self, last: bool) {
        let Some(d) = self.decisions.as_mut() else {
            return;
        };
        let (frames, count) = d.queue.take(std::mem::take(&mut d.spare));
        if count > 0 {
            let age = d.settings.retention / 10;
            match d.log.append(&[(frames.as_slice(), count)], Some(age)) {
                Ok(()) => {
                    d.unsynced = true;
                    self.metrics.decisions_logged(count);
                }
                Err(e) => {
                    tracing::warn!(error = %e, decisions = count, "decisions not written; dropped");
                    self.metrics.decisions_dropped(count);
                }
            }
        }
        d.spare = frames;
        if d.unsynced && (last || d.last_sync.elapsed() >= DECISION_SYNC_EVERY) {
            if let Err(e) = d.log.sync() {
                tracing::warn!(error = %e, "the decision log could not be synced");
            }
            d.unsynced = false;
            d.last_sync = Instant::now();
        }
        let over = d.log.bytes() > d.settings.max_bytes;
        if over || d.last_retention.elapsed() >= RETENTION_EVERY {
            d.last_retention = Instant::now();
            let now = SystemTime::now();
            if let Err(e) = d.log.roll_if_older(d.settings.retention, now) {
                tracing::warn!(error = %e, "cannot start a new decision-log segment");
            }
            match d.log.evict(
                Some(d.settings.max_bytes),
                Some(d.settings.retention),
                now,
                u64::MAX,
            ) {
                Ok(evicted) if evicted.segments > 0 => {
                    tracing::info!(
                        segments = evicted.segments,
                        decisions = evicted.records,
                        bytes = evicted.bytes,
                        "deleted old decisions (size cap or retention)"
                    );
                    self.metrics.decisions_evicted(evicted.records);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete old decisions"),
            }
        }
        self.metrics
            .decision_log_store(d.log.bytes(), d.log.records());
    }

    /// Writes and syncs a group, then answers each of its requests.
    fn commit(&mut self, group: &mut Vec<Job>) {
        let empty = |j: &Job| j.frames.event_count == 0 && j.frames.dead_count == 0;
        if group.iter().all(empty) {
            // Nudges (see `EventLog::nudge`): nothing to write, only retention to apply.
            group.clear();
            self.retain();
            return;
        }
        let started = Instant::now();
        for job in group.iter() {
            self.metrics
                .log_queue_latency
                .observe(started.saturating_duration_since(job.queued));
        }
        let outcome = if self.failed {
            Err(LogError::Failed)
        } else {
            self.write(group)
        };
        self.metrics.log_commit(started.elapsed(), group.len());
        match outcome {
            Ok(firsts) => {
                if let Ok(mut wm) = self.watermark.lock() {
                    for (job, first) in group.iter().zip(&firsts) {
                        if job.frames.event_count > 0 {
                            wm.pending.insert(*first);
                        }
                    }
                    wm.next = self.events.next();
                }
                // Counted, and past the cap deleted, before anyone hears back: an answer
                // always finds the store's figures up to date.
                self.metrics
                    .dead_letter_store(self.dead.bytes(), self.dead.records());
                self.retain();
                for (job, first) in group.drain(..).zip(firsts) {
                    let applied = (job.frames.event_count > 0).then(|| AppliedGuard {
                        first,
                        watermark: Arc::clone(&self.watermark),
                    });
                    // A requester that went away drops the answer, and with it the guard.
                    let _ = job.reply.send(Ok(Appended { applied }));
                    self.give_back(job.frames);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = group.len(), "log commit failed");
                for job in group.drain(..) {
                    let e = match &e {
                        LogError::Failed => LogError::Failed,
                        other => LogError::Io(std::io::Error::other(other.to_string())),
                    };
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }

    /// The first event position of each job, once the group is durable.
    fn write(&mut self, group: &[Job]) -> Result<Vec<u64>, LogError> {
        let mut firsts = Vec::with_capacity(group.len());
        let mut next = self.events.next();
        for job in group {
            firsts.push(next);
            next += job.frames.event_count;
        }
        let events: Vec<(&[u8], u64)> = group
            .iter()
            .map(|j| (j.frames.events.as_slice(), j.frames.event_count))
            .collect();
        let dead: Vec<(&[u8], u64)> = group
            .iter()
            .filter(|j| j.frames.dead_count > 0)
            .map(|j| (j.frames.dead.as_slice(), j.frames.dead_count))
            .collect();
        self.events.append(&events, None)?;
        if !dead.is_empty() {
            let age = self.dead_retention / 10;
            if let Err(e) = self.dead.append(&dead, Some(age)) {
                // The events of this group are written but will not be acknowledged: they are
                // stored twice if retried, which consumers dedupe by id.
                return Err(e.into());
            }
        }
        let synced = self.events.sync().and_then(|()| self.dead.sync());
        if let Err(e) = synced {
            self.failed = true;
            return Err(e.into());
        }
        Ok(firsts)
    }

    fn give_back(&self, frames: Frames) {
        self.pool.put(frames.events);
        self.pool.put(frames.dead);
    }

    /// Deletes event segments past the event log's cap or retention, but only those whose events
    /// are all in stored reader state (a crash replays from there).
    fn retain_events(&mut self, now: SystemTime) {
        if self.events_max_bytes.is_none() && self.events_retention.is_none() {
            return;
        }
        if let Some(age) = self.events_retention
            && let Err(e) = self.events.roll_if_older(age, now)
        {
            tracing::warn!(error = %e, "cannot start a new event-log segment");
        }
        let keep_from = self.evictable_before.load(Ordering::Relaxed);
        match self
            .events
            .evict(self.events_max_bytes, self.events_retention, now, keep_from)
        {
            Ok(evicted) if evicted.segments > 0 => {
                tracing::info!(
                    segments = evicted.segments,
                    events = evicted.records,
                    bytes = evicted.bytes,
                    "deleted old events (event log size cap or retention)"
                );
                self.metrics.events_evicted(evicted.records, evicted.bytes);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete old events"),
        }
    }

    /// Deletes dead-letter segments past the cap at once, and past the retention now and then
    /// (and events past theirs).
    fn retain(&mut self) {
        let over = self.dead.bytes() > self.dead_max_bytes
            || self
                .events_max_bytes
                .is_some_and(|max| self.events.bytes() > max);
        if !over && self.last_retention.elapsed() < RETENTION_EVERY {
            return;
        }
        self.last_retention = Instant::now();
        let now = SystemTime::now();
        self.retain_events(now);
        if let Err(e) = self.dead.roll_if_older(self.dead_retention, now) {
            tracing::warn!(error = %e, "cannot start a new dead-letter segment");
        }
        match self.dead.evict(
            Some(self.dead_max_bytes),
            Some(self.dead_retention),
            now,
            u64::MAX,
        ) {
            Ok(evicted) if evicted.segments > 0 => {
                tracing::info!(
                    segments = evicted.segments,
                    dead_letters = evicted.records,
                    bytes = evicted.bytes,
                    "deleted old dead letters (size cap or retention)"
                );
                self.metrics
                    .dead_letters_evicted(evicted.records, evicted.bytes);
                self.metrics
                    .dead_letter_store(self.dead.bytes(), self.dead.records());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete old dead letters"),
        }
    }
}
