//! The engine: the scoring tier's only IO. It keeps readers' state in a byte-bounded cache,
//! partitioned by [`partition_of`] the reader key; applies each batch and decides under the
//! active bundle; writes changed state behind to a [`StateStore`] in batches (with the log
//! position it covers, so a crash replays only the rest); forgets readers past their TTL by
//! event time; and rebuilds state from the log when a bundle changes the features.
//!
//! Concurrency: one lock per partition (a batch locks its reader's partition for the apply and
//! the decision, microseconds); a read lock on the core (bundle + caches) for the duration of a
//! batch, taken exclusively only to switch to a rebuilt feature set.

mod cache;
mod fjall_store;
mod flush;
mod known;
mod partition;
mod rebuild;
mod score;
mod scored;
mod update;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use pulse_protocol::{MAX_EVENT_AGE_MS, MAX_FUTURE_SKEW_MS};
use serde_json::{Value as Json, json};

use crate::bundle::{ActiveBundle, Bundle};
use crate::event::Observed;
use crate::rules::{PageFacts, Request, decide};
use crate::state::{ReaderState, StateStore, StoreError};
use crate::time::HOUR_MS;

use cache::Part;
pub use fjall_store::FjallStore;
pub use partition::{murmur2, partition_of};
pub use rebuild::Rebuild;
use scored::complete;
pub use scored::{Scored, Snapshot};

/// How long after a reader's TTL its memory and stored state are freed: until then an event
/// the gateway still accepts (up to 35 days old, 5 minutes ahead) could reach its old state,
/// which the TTL check on apply forgets anyway; past it, nothing can, and dropping it is
/// unobservable.
pub const SWEEP_SLACK_MS: u64 = MAX_EVENT_AGE_MS + MAX_FUTURE_SKEW_MS + HOUR_MS;

/// Metadata keys the engine keeps beside state.
pub(crate) mod meta;

/// The engine's settings (from the gateway's `[scorer]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Partitions of reader state (match `pulse.events`'s partitions in Kafka). Default 32.
    pub partitions: u16,
    /// Bytes of reader state kept in memory; past it cold readers are evicted (after they were
    /// written) and reloaded on demand. Default 64 MiB.
    pub cache_bytes: usize,
    /// How often changed state is written behind (sooner when unwritten changes hold the
    /// cache's memory). Default 10 s: a reader changed by many batches meanwhile is written
    /// once, and a crash replays at most that much of the log.
    pub flush_interval: Duration,
    /// How often state, in memory and stored, is swept for readers past their TTL. Default
    /// 10 min.
    pub sweep_interval: Duration,
    /// Whether a decision's snapshot holds every feature's value (for training a first model),
    /// not only those the decision read. Default false.
    pub full_snapshots: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            partitions: 32,
            cache_bytes: 64 << 20,
            flush_interval: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(600),
            full_snapshots: false,
        }
    }
}

/// Why the engine could not score.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bundle changes the features: its state must be rebuilt from the log first.
    #[error("the bundle changes the features; state must be rebuilt from the log")]
    NeedsRebuild(Box<Bundle>),
    /// A shadow bundle must keep the active bundle's feature set (it decides on the same state).
    #[error(
        "a shadow bundle must have the active bundle's features (backtest other features with `gateway replay`)"
    )]
    ShadowFeatures,
    /// A lock was poisoned by a panic elsewhere.
    #[error("engine lock poisoned")]
    Poisoned,
    /// The write-behind thread could not be started.
    #[error("cannot start the write-behind thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events applied.
    pub applied: AtomicU64,
    /// Duplicate events.
    pub duplicates: AtomicU64,
    /// Events too late.
    pub too_late: AtomicU64,
    /// Events refused by dedupe's bound.
    pub dedupe_full: AtomicU64,
    /// Readers loaded from the store (cache misses).
    pub loads: AtomicU64,
    /// Readers evicted from memory.
    pub evictions: AtomicU64,
    /// Readers forgotten past their TTL.
    pub expired: AtomicU64,
    /// Stored states that could not be read (and were started afresh).
    pub unreadable: AtomicU64,
    /// Write-behind flushes done.
    pub flushes: AtomicU64,
    /// Flushes that failed (retried at the next one).
    pub flush_errors: AtomicU64,
    /// States written by flushes.
    pub written: AtomicU64,
    /// Duration of the last flush, microseconds.
    pub last_flush_us: AtomicU64,
    /// Rebuild: events replayed so far.
    pub rebuild_events: AtomicU64,
    /// Rebuild: 1 while one runs.
    pub rebuilding: AtomicU64,
    /// Rule conditions that failed at run time (the next rule was tried).
    pub rule_errors: AtomicU64,
}

/// A point-in-time view of the cache, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheView {
    /// Readers in memory.
    pub readers: usize,
    /// Bytes accounted.
    pub bytes: usize,
    /// Readers changed and not yet written.
    pub dirty: usize,
}

/// The bundle and the partitions' caches that go with it.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) bundle: ActiveBundle,
    pub(crate) feature_set: u64,
    pub(crate) parts: Box<[Mutex<Part>]>,
}

impl Core {
    pub(crate) fn new(bundle: Bundle, partitions: u16) -> Self {
        Self {
            feature_set: bundle.feature_set,
            bundle: ActiveBundle::new(bundle),
            parts: (0..partitions.max(1))
                .map(|_| Mutex::new(Part::default()))
                .collect(),
        }
    }
}

/// Where the log stands, as the gateway tells it: the position below which every event has been
/// applied to the engine (in memory). `None` when there is no local log to replay (Kafka mode).
pub type Progress = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// Where an outside log stands (Kafka mode: the offsets per partition below which every event
/// has been applied), in the gateway's own encoding; written with each flush beside state, and
/// given back at start ([`Startup::positions`]). `None` leaves the stored value as it is.
pub type Positions = Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>;

pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) config: EngineConfig,
    pub(crate) core: RwLock<Arc<Core>>,
    pub(crate) progress: RwLock<Option<Progress>>,
    pub(crate) positions: RwLock<Option<Positions>>,
    /// The log position stored state is up to date with (the last [`Progress`] written).
    pub(crate) stored_position: AtomicU64,
    /// The latest event time applied to any reader: the watermark TTL sweeps go by.
    pub(crate) watermark: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) generation: AtomicU64,
    pub(crate) stop: Mutex<bool>,
    pub(crate) wake: Condvar,
    pub(crate) flush_now: AtomicBool,
    /// Held by a flush while it writes.
    pub(crate) flushing: Mutex<()>,
}

/// What the engine found at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    /// Replay the log from this position to bring stored state up to date.
    pub replay_from: u64,
    /// Where an outside log stood at the last flush ([`Positions`]); `None` when never
    /// written, or when state is rebuilt from the start.
    pub positions: Option<Vec<u8>>,
    /// The configured bundle changes the features of the stored state: the engine runs the
    /// stored bundle until this one is rebuilt ([`Engine::rebuild`]).
    pub rebuild: Option<Box<Bundle>>,
}

/// The engine over a state store.
pub struct Engine<S: StateStore + 'static> {
    shared: Arc<Shared<S>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The TTL sweep's thread.
    sweeper: Mutex<Option<JoinHandle<()>>>,
    /// A candidate bundle that decides beside the active one.
    shadow: RwLock<Option<Arc<Bundle>>>,
}

impl<S: StateStore + 'static> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn u64_meta(store: &impl StateStore, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(store
        .meta(key)?
        .and_then(|v| v.try_into().ok())
        .map(u64::from_le_bytes))
}

impl<S: StateStore + 'static> Engine<S> {
    /// Opens the engine over `store` with `bundle`, and starts its write-behind thread.
    ///
    /// When the stored state belongs to another feature set and the store holds the bundle it
    /// was built with, that bundle stays active and [`Startup::rebuild`] carries `bundle`;
    /// otherwise the old state is dropped and the log is replayed from the start.
    pub fn open(
        store: S,
        bundle: Bundle,
        config: EngineConfig,
    ) -> Result<(Self, Startup), EngineError> {
        let mut stored_fs = u64_meta(&store, meta::FEATURE_SET)?;
        let mut replay_from = u64_meta(&store, meta::REPLAY_FROM)?.unwrap_or(0);
        let mut positions = store.meta(meta::SOURCE)?;
        let watermark = u64_meta(&store, meta::WATERMARK)?.unwrap_or(0);
        let partitions = u64::from(config.partitions.max(1));
        if u64_meta(&store, meta::PARTITIONS)?.is_some_and(|p| p != partitions) {
            tracing::warn!(
                partitions,
                "the number of partitions changed: reader state is rebuilt from the whole log"
            );
            for fs in store.feature_sets()? {
                store.drop_feature_set(fs)?;
            }
            stored_fs = None;
            replay_from = 0;
            positions = None;
        }
        let mut rebuild = None;
        let active = match stored_fs {
            Some(fs) if fs != bundle.feature_set => {
                let stored = store
                    .meta(meta::BUNDLE)?
                    .and_then(|t| Bundle::from_stored(&t).ok())
                    .filter(|b| b.feature_set == fs);
                match stored {
                    Some(old) => {
                        rebuild = Some(Box::new(bundle));
                        old
                    }
                    None => {
                        tracing::warn!(
                            "stored reader state belongs to an unknown bundle: it is dropped and rebuilt from the whole log"
                        );
                        replay_from = 0;
                        positions = None;
                        bundle
                    }
                }
            }
            _ => bundle,
        };
        // Leftovers of bundles no longer active (a rebuild cut short, a switch that crashed
        // before dropping the old set).
        for fs in store.feature_sets()? {
            if fs != active.feature_set {
                store.drop_feature_set(fs)?;
            }
        }
        let mut meta_writes = vec![
            (meta::FEATURE_SET, active.feature_set.to_le_bytes().to_vec()),
            (meta::BUNDLE, active.stored()),
            (meta::REPLAY_FROM, replay_from.to_le_bytes().to_vec()),
            (meta::PARTITIONS, partitions.to_le_bytes().to_vec()),
        ];
        if positions.is_none() {
            // State starts over: so does every outside log.
            meta_writes.push((meta::SOURCE, Vec::new()));
        }
        store.write(active.feature_set, &[], &meta_writes)?;
        let positions = positions.filter(|p| !p.is_empty());
        let shared = Arc::new(Shared {
            core: RwLock::new(Arc::new(Core::new(active, config.partitions))),
            store,
            config,
            progress: RwLock::new(None),
            positions: RwLock::new(None),
            stored_position: AtomicU64::new(replay_from),
            watermark: AtomicU64::new(watermark),
            stats: Stats::default(),
            generation: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            flush_now: AtomicBool::new(false),
            flushing: Mutex::new(()),
        });
        let engine = Self {
            flusher: Mutex::new(Some(flush::spawn(Arc::clone(&shared))?)),
            sweeper: Mutex::new(Some(flush::spawn_sweeper(Arc::clone(&shared))?)),
            shared,
            shadow: RwLock::new(None),
        };
        Ok((
            engine,
            Startup {
                replay_from,
                positions,
                rebuild,
            },
        ))
    }

    /// The log position stored state is up to date with: every event before it is in the
    /// store (the [`Progress`] the last successful write-behind recorded). A log may delete
    /// events before it.
    pub fn stored_position(&self) -> u64 {
        self.shared.stored_position.load(Ordering::Relaxed)
    }

    /// Tells the engine where an outside log stands (see [`Positions`]); written with each
    /// flush.
    pub fn set_positions(&self, positions: Positions) {
        if let Ok(mut p) = self.shared.positions.write() {
            *p = Some(positions);
        }
    }

    /// Tells the engine where the log stands (see [`Progress`]); written with each flush.
    pub fn set_progress(&self, progress: Progress) {
        if let Ok(mut p) = self.shared.progress.write() {
            *p = Some(progress);
        }
    }

    fn core(&self) -> Result<std::sync::RwLockReadGuard<'_, Arc<Core>>, EngineError> {
        self.shared.core.read().map_err(|_| EngineError::Poisoned)
    }

    /// The active bundle.
    pub fn bundle(&self) -> Result<Arc<Bundle>, EngineError> {
        Ok(self.core()?.bundle.get())
    }

    /// The state store.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The latest event time applied by any reader.
    pub fn watermark(&self) -> u64 {
        self.shared.watermark.load(Ordering::Relaxed)
    }

    /// Decides for a reader on `page` at `now` without events (a publisher's server asking
    /// before it renders the page): the same rules, state and shadow as [`Engine::score`].
    pub fn decide(
        &self,
        reader: &str,
        page: &PageFacts,
        now: u64,
        request: &Request,
    ) -> Result<Scored, EngineError> {
        let none: &[(&pulse_protocol::Event, u64)] = &[];
        self.score_on(reader, none, page, now, request)
    }

    /// Which of `ids` the reader's state already holds (a batch sent again: those need not be
    /// stored twice). Loads the reader as scoring would.
    pub fn holds(&self, reader: &str, ids: &[u128]) -> Result<Vec<bool>, EngineError> {
        let core = self.core()?;
        let none: &[(&pulse_protocol::Event, u64)] = &[];
        let (held, _) = self.shared.update(&core, reader, none, |_, state| {
            ids.iter().map(|id| state.holds(*id)).collect()
        })?;
        Ok(held)
    }

    /// Decides for a reader as if `view` (the page about to be shown) had just happened at
    /// `now`, without keeping it: the page the publisher's server is about to render counts in
    /// the meter, but only the tracker's own event, when the page is shown, is recorded.
    pub fn peek<E: Observed + ?Sized>(
        &self,
        reader: &str,
        view: &E,
        now: u64,
        request: &Request,
    ) -> Result<Scored, EngineError> {
        let core = self.core()?;
        let page = PageFacts::of(&[(view, now)]);
        let shadow = self.shadow.read().ok().and_then(|s| s.clone());
        let none: &[(&E, u64)] = &[];
        let ((decided, shadow), _) = self.shared.update(&core, reader, none, |bundle, state| {
            let mut state = state.clone();
            state.apply(bundle, view, now);
            state.finish(bundle);
            let active = decide(bundle, reader, &state, now, &page, request);
            let shadow = shadow
                .as_ref()
                .map(|b| decide(b, reader, &state, now, &page, request).decision);
            (active, shadow)
        })?;
        Ok(Scored {
            decision: decided.decision,
            probability: decided.probability,
            score: decided.score,
            snapshot: Snapshot {
                bundle: core.bundle.get(),
                values: decided.read,
            },
            shadow,
            applied: 0,
            duplicates: 0,
            refused: Vec::new(),
        })
    }

    /// Applies events without deciding (replay of the log).
    pub fn replay<E: Observed + ?Sized>(
        &self,
        reader: &str,
        events: &[(&E, u64)],
    ) -> Result<u32, EngineError> {
        let core = self.core()?;
        self.shared
            .update(&core, reader, events, |_, _| ())
            .map(|(_, c)| c.applied)
    }

    /// A reader's features, their values and what they are made of, and the decision the
    /// active bundle would make now; `None` when the reader is unknown.
    pub fn explain(&self, reader: &str, now: u64) -> Result<Option<Json>, EngineError> {
        let core = self.core()?;
        let bundle = core.bundle.get();
        let p = partition_of(reader, self.shared.config.partitions);
        // The cached state (not a placeholder being read from the store), taken without
        // holding the partition's lock while the reader's is waited for or the store read.
        let cell = core.parts[p as usize]
            .lock()
            .map_err(|_| EngineError::Poisoned)?
            .readers
            .get(reader)
            .filter(|slot| !slot.loading)
            .map(|slot| Arc::clone(&slot.state));
        let (loaded, cached);
        let state = match &cell {
            Some(cell) => {
                cached = cell.lock().map_err(|_| EngineError::Poisoned)?;
                &*cached
            }
            None => match self.shared.store.get(core.feature_set, p, reader)? {
                None => return Ok(None),
                Some(bytes) => match ReaderState::decode(&bundle, &bytes) {
                    Ok(s) => {
                        loaded = s;
                        &loaded
                    }
                    Err(e) => return Ok(Some(json!({"reader": reader, "error": e.to_string()}))),
                },
            },
        };
        let mut out = state.explain(&bundle, now);
        out["reader"] = json!(reader);
        out["partition"] = json!(p);
        out["bundle"] = json!({"id": bundle.id, "name": bundle.name});
        let decided = decide(
            &bundle,
            reader,
            state,
            now,
            &PageFacts::default(),
            &Request::default(),
        );
        out["decision"] = serde_json::to_value(decided.decision).unwrap_or(Json::Null);
        if let Some(m) = &bundle.model {
            let row: Vec<f64> = m
                .inputs
                .iter()
                .map(|&i| match state.value(&bundle, i, now) {
                    crate::value::Value::Num(n) => n,
                    crate::value::Value::Bool(b) => f64::from(u8::from(b)),
                    _ => f64::NAN,
                })
                .collect();
            let score = m.model.predict(&row);
            out["model"] = json!({
                "file": m.file,
                "format": m.model.format().as_str(),
                "score": score.is_finite().then_some(score),
                "inputs": m.model.feature_names().iter().zip(&row)
                    .map(|(name, v)| (name.clone(), if v.is_finite() { json!(v) } else { Json::Null }))
                    .collect::<serde_json::Map<_, _>>(),
            });
        }
        Ok(Some(out))
    }

    /// Puts a bundle in force at once when it keeps the feature set (only the decision
    /// changed); else [`EngineError::NeedsRebuild`].
    pub fn activate(&self, bundle: Bundle) -> Result<Arc<Bundle>, EngineError> {
        let core = self.core()?;
        if bundle.feature_set != core.feature_set {
            return Err(EngineError::NeedsRebuild(Box::new(bundle)));
        }
        self.shared
            .store
            .write(core.feature_set, &[], &[(meta::BUNDLE, bundle.stored())])?;
        Ok(core.bundle.set(Arc::new(bundle)))
    }

    /// Sets (or clears) the shadow bundle: it decides every batch beside the active one, on the
    /// same state, and its decision comes back in [`Scored::shadow`]. It must keep the active
    /// bundle's feature set.
    pub fn set_shadow(&self, bundle: Option<Bundle>) -> Result<Option<Arc<Bundle>>, EngineError> {
        if let Some(b) = &bundle
            && b.feature_set != self.core()?.feature_set
        {
            return Err(EngineError::ShadowFeatures);
        }
        let mut shadow = self.shadow.write().map_err(|_| EngineError::Poisoned)?;
        Ok(std::mem::replace(&mut *shadow, bundle.map(Arc::new)))
    }

    /// The shadow bundle, if one is set.
    pub fn shadow(&self) -> Option<Arc<Bundle>> {
        self.shadow.read().ok().and_then(|s| s.clone())
    }

    /// Starts building state for a bundle with other features (see [`Rebuild`]).
    pub fn rebuild(&self, bundle: Bundle) -> Result<Rebuild<S>, EngineError> {
        Rebuild::new(self, bundle)
    }

    /// The cache's size now.
    pub fn cache(&self) -> CacheView {
        let Ok(core) = self.core() else {
            return CacheView::default();
        };
        let mut view = CacheView::default();
        for part in core.parts.iter() {
            if let Ok(p) = part.lock() {
                view.readers += p.readers.len();
                view.bytes += p.bytes;
                view.dirty += p.readers.values().filter(|s| s.dirty).count();
            }
        }
        view
    }

    /// Writes every changed state now (and the log position it covers).
    pub fn flush(&self) -> Result<(), EngineError> {
        let core = Arc::clone(&*self.core()?);
        flush::flush(&self.shared, &core)
    }

    /// Sweeps state, in memory and stored, for readers past their TTL now (a thread of its own
    /// does it every `sweep_interval`, paced). Returns how many were forgotten.
    pub fn sweep(&self) -> Result<u64, EngineError> {
        let core = Arc::clone(&*self.core()?);
        flush::sweep_store(&self.shared, &core, false)
    }

    /// Forgets a reader at once (a data subject's erasure): their state in memory and in the
    /// store, whatever bundle it was kept for. Whether there was any. Their events must also
    /// go from the log, or a replay brings them back (the gateway erases both).
    pub fn erase(&self, reader: &str) -> Result<bool, EngineError> {
        let core = Arc::clone(&*self.core()?);
        flush::erase(&self.shared, &core, reader)
    }

    /// Writes every changed state, then forgets the cached readers of `partition` (a partition
    /// whose readers another instance now keeps): the next use reads the store.
    pub fn release(&self, partition: u16) -> Result<(), EngineError> {
        let core = Arc::clone(&*self.core()?);
        flush::flush(&self.shared, &core)?;
        flush::release(&self.shared, &core, partition)
    }

    /// Stops the write-behind and sweep threads (without a last flush).
    fn stop_threads(&self) {
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.wake.notify_all();
        for thread in [&self.flusher, &self.sweeper] {
            if let Some(handle) = thread.lock().ok().and_then(|mut h| h.take()) {
                let _ = handle.join();
            }
        }
    }

    /// Stops the write-behind and sweep threads, then writes what is left.
    pub fn close(&self) -> Result<(), EngineError> {
        self.stop_threads();
        self.flush()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }
}

impl<S: StateStore + 'static> Drop for Engine<S> {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
