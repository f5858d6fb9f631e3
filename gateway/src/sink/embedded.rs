//! The embedded store (fjall): the event log and the dead-letter log, in one folder whose
//! database also holds the scorer's reader state (`pulse_scorer::FjallStore`). Appends go through one writer thread that group-commits: every batch
//! that arrived while the last fsync ran is written and synced by the next single fsync, and each
//! waiting request is answered only after that fsync.
//!
//! IO boundary: the writer thread (fsync) and the reads; everything else is bookkeeping.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use pulse_protocol::{DeadLetter, EventRecord};
use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, Receipt, Sink, SinkBatch, SinkError};

/// Most requests waiting for the writer; past it, appends wait (and time out into 503s).
const QUEUE_CAPACITY: usize = 4096;
/// Most requests one group commit takes.
const MAX_GROUP: usize = 512;

/// One event as the log holds it, with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the log, from 0.
    pub seq: u64,
    /// The record.
    pub record: EventRecord,
}

struct Job {
    events: Vec<Vec<u8>>,
    dead_letters: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Receipt, SinkError>>,
}

/// Which appended events the scorer has not applied yet; the lowest of them (or the log's end)
/// is where replay starts after a crash.
#[derive(Debug)]
struct Watermark {
    pending: BTreeSet<u64>,
    next_seq: u64,
}

struct Shared {
    watermark: Mutex<Watermark>,
}

impl Shared {
    fn replay_point(&self) -> Option<u64> {
        let wm = self.watermark.lock().ok()?;
        Some(wm.pending.first().copied().unwrap_or(wm.next_seq))
    }
}

/// Held by a request until the scorer has applied its events.
#[derive(Debug)]
pub struct AppliedGuard {
    first_seq: u64,
    shared: Arc<Shared>,
}

impl Drop for AppliedGuard {
    fn drop(&mut self) {
        if let Ok(mut wm) = self.shared.watermark.lock() {
            wm.pending.remove(&self.first_seq);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("watermark", &self.watermark)
            .finish_non_exhaustive()
    }
}

/// The embedded store.
pub struct EmbeddedStore {
    db: Database,
    events: Keyspace,
    dead: Keyspace,
    shared: Arc<Shared>,
    tx: RwLock<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn io(e: fjall::Error) -> SinkError {
    SinkError::Io(e.to_string())
}

fn next_key(ks: &Keyspace) -> Result<u64, SinkError> {
    match ks.last_key_value() {
        None => Ok(0),
        Some(guard) => {
            let key = guard.key().map_err(io)?;
            let bytes: [u8; 8] = key
                .as_ref()
                .try_into()
                .map_err(|_| SinkError::Io("bad log key".into()))?;
            Ok(u64::from_be_bytes(bytes) + 1)
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SinkError::Io(format!("{}: {e}", dir.display())))?;
        let db = Database::builder(dir).open().map_err(io)?;
        let events = db
            .keyspace("events", KeyspaceCreateOptions::default)
            .map_err(io)?;
        let dead = db
            .keyspace("deadletter", KeyspaceCreateOptions::default)
            .map_err(io)?;
        // Reader state of earlier versions (a JSON blob per reader): state is rebuilt from the
        // log by the scorer, so the old keyspace goes.
        for old in ["state", "meta"] {
            if db.keyspace_exists(old) {
                let ks = db
                    .keyspace(old, KeyspaceCreateOptions::default)
                    .map_err(io)?;
                db.delete_keyspace(ks).map_err(io)?;
            }
        }
        let next_event = next_key(&events)?;
        let next_dead = next_key(&dead)?;
        let shared = Arc::new(Shared {
            watermark: Mutex::new(Watermark {
                pending: BTreeSet::new(),
                next_seq: next_event,
            }),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            db: db.clone(),
            events: events.clone(),
            dead: dead.clone(),
            next_event,
            next_dead,
            shared: Arc::clone(&shared),
        };
        let handle = std::thread::Builder::new()
            .name("pulse-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SinkError::Io(e.to_string()))?;
        Ok(Self {
            db,
            events,
            dead,
            shared,
            tx: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Stops taking appends, waits for the writer to finish what it has, and syncs everything.
    pub fn close(&self) -> Result<(), SinkError> {
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            handle
                .join()
                .map_err(|_| SinkError::Io("writer thread panicked".into()))?;
        }
        self.db.persist(PersistMode::SyncAll).map_err(io)
    }

    /// The position below which every appended event has been applied by the scorer (its
    /// receipt's guard dropped): the lowest event still pending, or the log's end.
    pub fn replay_point(&self) -> u64 {
        self.shared.replay_point().unwrap_or(0)
    }

    /// The position the next appended event will get (the log's length).
    pub fn next_seq(&self) -> u64 {
        self.shared
            .watermark
            .lock()
            .map(|wm| wm.next_seq)
            .unwrap_or(0)
    }

    /// The database (the scorer keeps reader state in it, beside the log).
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    /// The events from position `from` on, in log order.
    pub fn events_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<StoredEvent, SinkError>> + '_ {
        self.events.range(from.to_be_bytes()..).map(|guard| {
            let (key, value) = guard.into_inner().map_err(io)?;
            let seq = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| SinkError::Io("bad log key".into()))?,
            );
            Ok(StoredEvent {
                seq,
                record: serde_json::from_slice(&value)?,
            })
        })
    }

    /// Every dead letter, in order.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SinkError> {
        self.dead
            .iter()
            .map(|guard| {
                let value = guard.value().map_err(io)?;
                Ok(serde_json::from_slice(&value)?)
            })
            .collect()
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "store did not close cleanly");
        }
    }
}

impl Sink for EmbeddedStore {
    fn append(&self, batch: SinkBatch) -> BoxFuture<'_, Result<Receipt, SinkError>> {
        Box::pin(async move {
            let events = batch
                .events
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<Vec<_>, _>>()?;
            let dead_letters = batch
                .dead_letters
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<Vec<_>, _>>()?;
            if events.is_empty() && dead_letters.is_empty() {
                return Ok(Receipt {
                    events: 0,
                    applied: None,
                });
            }
            let tx = self
                .tx
                .read()
                .ok()
                .and_then(|tx| tx.clone())
                .ok_or(SinkError::Closed)?;
            let (reply, answer) = oneshot::channel();
            tx.send(Job {
                events,
                dead_letters,
                reply,
            })
            .await
            .map_err(|_| SinkError::Closed)?;
            answer.await.map_err(|_| SinkError::Closed)?
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        // Every acknowledged append is already synced (the writer answers after its fsync);
        // the store itself is closed by its owner once nothing uses it (see `Gateway::close`).
        Box::pin(std::future::ready(Ok(())))
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

fn fail(jobs: Vec<Job>, e: &fjall::Error) {
    tracing::error!(error = %e, requests = jobs.len(), "group commit failed");
    for job in jobs {
        let _ = job.reply.send(Err(SinkError::Io(e.to_string())));
    }
}

struct Writer {
    db: Database,
    events: Keyspace,
    dead: Keyspace,
    next_event: u64,
    next_dead: u64,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
    }

    /// Writes and syncs a group of jobs, then answers each.
    fn commit(&mut self, jobs: Vec<Job>) {
        let (start_event, start_dead) = (self.next_event, self.next_dead);
        let mut batch = self.db.batch();
        let mut firsts = Vec::with_capacity(jobs.len());
        for job in &jobs {
            firsts.push(self.next_event);
            for record in &job.events {
                batch.insert(
                    &self.events,
                    self.next_event.to_be_bytes(),
                    record.as_slice(),
                );
                self.next_event += 1;
            }
            for record in &job.dead_letters {
                batch.insert(&self.dead, self.next_dead.to_be_bytes(), record.as_slice());
                self.next_dead += 1;
            }
        }
        if let Err(e) = batch.commit() {
            // Nothing was written: the positions are reused.
            self.next_event = start_event;
            self.next_dead = start_dead;
            return fail(jobs, &e);
        }
        if let Err(e) = self.db.persist(PersistMode::SyncAll) {
            // Written but maybe not durable: the positions stay taken, the clients retry.
            return fail(jobs, &e);
        }
        if let Ok(mut wm) = self.shared.watermark.lock() {
            for (job, first) in jobs.iter().zip(&firsts) {
                if !job.events.is_empty() {
                    wm.pending.insert(*first);
                }
            }
            wm.next_seq = self.next_event;
        }
        for (job, first) in jobs.into_iter().zip(firsts) {
            let events = job.events.len();
            let applied = (events > 0).then(|| AppliedGuard {
                first_seq: first,
                shared: Arc::clone(&self.shared),
            });
            // A requester that went away simply drops its receipt (and guard).
            let _ = job.reply.send(Ok(Receipt { events, applied }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::{Event, EventId, EventType, PageContext};

    fn record(id: u128) -> EventRecord {
        EventRecord {
            site: "demo".into(),
            reader: "r".into(),
            anonymous_id: "r".into(),
            user_id: None,
            session_id: "s".into(),
            seq: 0,
            time: 1,
            received_at: 1,
            event: Event {
                id: EventId(id),
                ts: 1,
                kind: EventType::PageView,
                name: None,
                page: PageContext {
                    url: "https://n.example/".into(),
                    ..Default::default()
                },
                props: Default::default(),
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_survive_reopen_and_the_replay_point_follows_guards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..20u128 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .append(SinkBatch {
                        events: vec![record(2 * i), record(2 * i + 1)],
                        dead_letters: vec![],
                    })
                    .await
            }));
        }
        let mut receipts = Vec::new();
        for t in tasks {
            receipts.push(t.await.unwrap().unwrap());
        }
        assert!(receipts.iter().all(|r| r.events == 2));
        let held = receipts.pop().unwrap();
        drop(receipts);
        let point = store.replay_point();
        assert!(
            point < 40,
            "a held guard keeps the replay point back: {point}"
        );
        drop(held);
        assert_eq!(store.replay_point(), 40);
        let dl = DeadLetter::batch("demo", "malformed_json", 1, b"{");
        store
            .append(SinkBatch {
                events: vec![],
                dead_letters: vec![dl.clone()],
            })
            .await
            .unwrap();
        store.close().unwrap();
        drop(store);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let all: Vec<_> = store.events_from(0).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 40);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        let mut ids: Vec<_> = all.iter().map(|e| e.record.event.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..40).collect::<Vec<_>>());
        assert_eq!(store.dead_letters().unwrap(), vec![dl]);
        assert_eq!(store.events_from(38).count(), 2);
    }
}
