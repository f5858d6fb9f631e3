//! The one place the gateway calls the scorer: [`Decider::decide`] for a batch just made
//! durable, [`Decider::replay`] for the log at start, [`Decider::set_bundle`] when operators
//! change the bundle (at once when it keeps the features, else after a rebuild of reader state
//! from the log on a thread of its own).
//!
//! The engine takes events through `pulse_scorer::Observed`; today they are built here from the
//! batch's views (strings copied, `props` parsed into a map) and scored on the blocking pool
//! (the engine's cache may load a reader from the store).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_protocol::{Action, Decision, Event, EventRecord, EventView, MAX_EVENTS_PER_BATCH};
use pulse_scorer::{Batcher, Bundle, Engine, EngineError, FjallStore, Outcome, Request, Scored};

use crate::log::{EventLog, LogError};
use crate::metrics::Metrics;
use crate::tier::{Router, ScoreCall};

/// What putting a bundle in force did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleChange {
    /// It decides from the next batch on (same features); `replaced` was the active bundle.
    Active {
        /// The id of the bundle it replaced.
        replaced: String,
    },
    /// Its features differ: its state is being rebuilt from the log, then it becomes active.
    Rebuilding {
        /// Its id.
        id: String,
    },
}

/// What setting (or clearing) the shadow bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowChange {
    /// It decides beside the active bundle from the next batch on.
    Set {
        /// Its id.
        id: String,
    },
    /// It has the features of the bundle being rebuilt: it is set when the rebuild is done.
    Pending {
        /// Its id.
        id: String,
    },
    /// No shadow bundle now; `cleared` was the one set, if any.
    Cleared {
        /// The id of the shadow bundle it replaced.
        cleared: Option<String>,
    },
}

/// A batch's decision with what the scorer did with its events.
#[derive(Debug)]
pub struct Decided {
    /// The decision the page gets.
    pub decision: Decision,
    /// Events (by index in the batch) stored but not applied: too late, or past dedupe's bound.
    pub late: Vec<(usize, Outcome)>,
    /// The whole of what the engine said (none on a fallback).
    pub scored: Option<Scored>,
}

/// The scorer, as the gateway uses it.
pub struct Decider {
    engine: Arc<Engine<FjallStore>>,
    log: Option<Arc<EventLog>>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    /// Set while a bundle with new features is being rebuilt from the log.
    rebuilding: Arc<AtomicBool>,
    /// The feature set being rebuilt, and a shadow bundle waiting for it.
    rebuild: Arc<Mutex<RebuildTarget>>,
    /// A gateway of a split tier: decisions come from the scorer that owns the reader.
    router: Option<Arc<Router>>,
}

/// What a rebuild works towards.
#[derive(Debug, Default)]
struct RebuildTarget {
    feature_set: Option<u64>,
    shadow: Option<Bundle>,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider").finish_non_exhaustive()
    }
}

impl Decider {
    /// The scorer over `engine`, replaying and rebuilding from `log` (none with Kafka),
    /// answering within `deadline` (else the fallback).
    pub fn new(
        engine: Arc<Engine<FjallStore>>,
        log: Option<Arc<EventLog>>,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            log,
            deadline,
            metrics,
            rebuilding: Arc::new(AtomicBool::new(false)),
            rebuild: Arc::new(Mutex::new(RebuildTarget::default())),
            router: None,
        }
    }

    /// Asks the scorers of a split tier for every decision instead of the local engine.
    pub(crate) fn with_router(mut self, router: Router) -> Self {
        self.router = Some(Arc::new(router));
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine<FjallStore>> {
        &self.engine
    }

    /// Applies the log from `from` to reader state as live traffic did (one reader's batches
    /// together), then writes the state. Returns how many events were read.
    pub fn replay(&self, from: u64) -> Result<u64, String> {
        let Some(log) = &self.log else { return Ok(0) };
        self.replay_records(log.events_from(from).map(|stored| {
            stored
                .and_then(|s| s.record())
                .map_err(|e: LogError| e.to_string())
        }))
    }

    /// Applies `records` (a log's events in its order) to reader state, as live traffic
    /// applied them, and writes the state; returns how many there were.
    pub fn replay_records(
        &self,
        records: impl Iterator<Item = Result<EventRecord, String>>,
    ) -> Result<u64, String> {
        let engine = &self.engine;
        let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
        let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| {
            engine
                .replay(reader, events)
                .map(|_| ())
                .map_err(|e| format!("replay: {e}"))
        };
        let mut n = 0;
        for r in records {
            let r = r?;
            batcher.push(&r.reader, r.received_at, r.event, r.time, &mut apply)?;
            n += 1;
        }
        batcher.flush(&mut apply)?;
        if n > 0 {
            engine.flush().map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// Applies a batch's accepted (and durable) events to the reader's state and decides,
    /// within the decision deadline; past it, answers the safe fallback while the scorer
    /// finishes in the background. `applied` is released once the state holds the events
    /// (kept when the scorer fails, so that they are replayed at the next start).
    pub async fn decide(
        &self,
        site: &str,
        reader: &str,
        events: &[EventView<'_>],
        receipt: crate::sink::Receipt,
        now: u64,
        request: Request,
    ) -> Decided {
        let (applied, offsets) = (receipt.applied, receipt.offsets);
        if self.router.is_none() {
            // A reader in memory that no one holds is scored here and now, from the request's
            // own parsed events: no copies, no hop to another thread (a few µs of work, not
            // worth a deadline). Anything that would wait goes to a blocking thread below.
            let refs: Vec<_> = events.iter().map(|view| (view, view.time)).collect();
            let started = Instant::now();
            match self.engine.try_score(reader, &refs, now, &request) {
                Ok(Some(scored)) => {
                    self.metrics.decision_latency.observe(started.elapsed());
                    drop(applied);
                    return Decided {
                        decision: scored.decision.clone(),
                        late: scored.refused.clone(),
                        scored: Some(scored),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "scorer failed");
                    std::mem::forget(applied);
                    return self.fallback();
                }
            }
        }
        // The blocking thread takes owned events with their server times.
        let owned: Result<Vec<(Event, u64)>, _> = events
            .iter()
            .map(|view| view.to_event().map(|event| (event, view.time)))
            .collect();
        let Ok(owned) = owned else {
            // The parser only accepts events that read back; should one not, the state misses
            // them until a replay: keep them pending.
            tracing::error!(reader, "an accepted event did not convert for the scorer");
            std::mem::forget(applied);
            return self.fallback();
        };
        if let Some(router) = &self.router {
            drop(applied);
            return self
                .routed(router, (site, reader), owned, offsets, now, request)
                .await;
        }
        let engine = Arc::clone(&self.engine);
        let reader = reader.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let refs: Vec<_> = owned.iter().map(|(e, t)| (e, *t)).collect();
            let scored = engine.score(&reader, &refs, now, &request);
            if scored.is_err() {
                // Not applied: the replay point stays before these events until a restart.
                std::mem::forget(applied);
            } else {
                drop(applied);
            }
            scored
        });
        let started = Instant::now();
        let decided = tokio::time::timeout(self.deadline, task).await;
        self.metrics.decision_latency.observe(started.elapsed());
        match decided {
            Ok(Ok(Ok(scored))) => {
                return Decided {
                    decision: scored.decision.clone(),
                    late: scored.refused.clone(),
                    scored: Some(scored),
                };
            }
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "scorer failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "scorer task failed"),
            Err(_) => tracing::warn!("scorer missed its deadline"),
        }
        self.fallback()
    }

    /// The decision of the scorer that owns `reader` (a gateway of a split tier): the fallback
    /// when none answers within the deadline.
    async fn routed(
        &self,
        router: &Router,
        (site, reader): (&str, &str),
        events: Vec<(Event, u64)>,
        offsets: Vec<i64>,
        now: u64,
        request: Request,
    ) -> Decided {
        let call = ScoreCall {
            site: site.to_owned(),
            offsets,
            wait_ms: self.deadline.as_millis() as u64,
            reader: reader.to_owned(),
            now,
            device: request.device,
            country: request.country,
            entitled: request.entitled,
            events,
            peek: false,
        };
        let started = Instant::now();
        let reply = router.score(&call, started + self.deadline).await;
        self.metrics.decision_latency.observe(started.elapsed());
        let Some(reply) = reply else {
            tracing::debug!(reader, "no scorer answered within the deadline");
            return self.fallback();
        };
        Decided {
            decision: reply.decision,
            late: reply
                .late
                .iter()
                .filter_map(|(i, o)| Some((*i, crate::tier::outcome(o)?)))
                .collect(),
            scored: None,
        }
    }

    /// Which of `events` the reader's state already holds (by event id). A gateway of a
    /// split tier does not know (its scorers dedupe what they apply); nor does a scorer that
    /// fails to answer: then none, and the batch is stored whole.
    pub async fn holds(&self, reader: &str, events: &[EventView<'_>]) -> Vec<bool> {
        if self.router.is_some() || events.is_empty() {
            return Vec::new();
        }
        let ids: Vec<u128> = events.iter().map(|e| e.id.0).collect();
        let engine = Arc::clone(&self.engine);
        let reader = reader.to_owned();
        match tokio::task::spawn_blocking(move || engine.holds(&reader, &ids)).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not check a resent batch: stored whole");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// A gateway of a split tier: the owner's decision for `view` without applying it (the
    /// fallback when none answers in time). `None` when this process keeps reader state.
    pub(crate) async fn peek_remote(
        &self,
        reader: &str,
        view: &Event,
        now: u64,
        request: &Request,
    ) -> Option<Decision> {
        let router = self.router.as_ref()?;
        let call = ScoreCall {
            site: String::new(),
            reader: reader.to_owned(),
            now,
            device: request.device.clone(),
            country: request.country.clone(),
            entitled: request.entitled.clone(),
            events: vec![(view.clone(), now)],
            peek: true,
            offsets: Vec::new(),
            wait_ms: 0,
        };
        let started = Instant::now();
        let reply = router.score(&call, started + self.deadline).await;
        self.metrics.decision_latency.observe(started.elapsed());
        Some(match reply {
            Some(r) => r.decision,
            None => self.fallback().decision,
        })
    }

    /// A gateway of a split tier: what the owner keeps of `reader`, asked for up to 2 s.
    /// `None` when this process keeps reader state.
    pub(crate) async fn explain_remote(
        &self,
        reader: &str,
    ) -> Option<Result<Option<serde_json::Value>, ()>> {
        let router = self.router.as_ref()?;
        Some(
            router
                .explain(reader, Instant::now() + Duration::from_secs(2))
                .await,
        )
    }

    /// The safe default: show everything, and say it is a fallback (counted).
    pub(crate) fn fallback(&self) -> Decided {
        self.metrics.fallback();
        let version = self
            .engine
            .bundle()
            .map(|b| b.id.clone())
            .unwrap_or_default();
        Decided {
            decision: Decision {
                fallback: true,
                ..Decision::new(Action::Allow, "fallback", version)
            },
            late: Vec::new(),
            scored: None,
        }
    }

    /// Puts a bundle in force: at once when it keeps the feature set; else its state is rebuilt
    /// from the log in the background (the active bundle decides until it is ready). Refused
    /// while another rebuild runs.
    pub fn set_bundle(&self, bundle: Bundle) -> Result<BundleChange, String> {
        match self.engine.activate(bundle) {
            Ok(old) => Ok(BundleChange::Active {
                replaced: old.id.clone(),
            }),
            Err(EngineError::NeedsRebuild(bundle)) => {
                if self.rebuilding.load(Ordering::SeqCst) {
                    return Err(
                        "a rebuild for another bundle is running; retry when it is done".into(),
                    );
                }
                let id = bundle.id.clone();
                self.start_rebuild(*bundle);
                Ok(BundleChange::Rebuilding { id })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sets (or, with `None`, clears) the shadow bundle, which decides every batch beside the
    /// active one on the same state (the page sees only the active one's decision). It must
    /// have the active bundle's features, or those of the bundle being rebuilt (then it is set
    /// once the rebuild is done).
    pub fn set_shadow(&self, shadow: Option<Bundle>) -> Result<ShadowChange, String> {
        let mut target = self
            .rebuild
            .lock()
            .map_err(|_| "lock poisoned".to_owned())?;
        let Some(bundle) = shadow else {
            target.shadow = None;
            let old = self.engine.set_shadow(None).map_err(|e| e.to_string())?;
            let cleared = old.map(|b| b.id.clone());
            if let Some(id) = &cleared {
                tracing::info!(shadow = %id, "shadow bundle cleared");
            }
            return Ok(ShadowChange::Cleared { cleared });
        };
        let id = bundle.id.clone();
        let active = self.engine.bundle().map_err(|e| e.to_string())?;
        if bundle.feature_set == active.feature_set {
            target.shadow = None;
            let name = bundle.name.clone();
            let old = self
                .engine
                .set_shadow(Some(bundle))
                .map_err(|e| e.to_string())?;
            if old.as_ref().is_none_or(|o| o.id != id) {
                tracing::info!(shadow = %id, name = %name, active = %active.id, "shadow bundle set: it decides beside the active one");
            }
            return Ok(ShadowChange::Set { id });
        }
        if self.rebuilding() && target.feature_set == Some(bundle.feature_set) {
            tracing::info!(shadow = %id, "shadow bundle set once the rebuild of its features is done");
            target.shadow = Some(bundle);
            return Ok(ShadowChange::Pending { id });
        }
        Err(EngineError::ShadowFeatures.to_string())
    }

    /// The shadow bundle deciding now, and the one waiting for a rebuild, if any.
    pub fn shadow(&self) -> (Option<Arc<Bundle>>, Option<String>) {
        let pending = self
            .rebuild
            .lock()
            .ok()
            .and_then(|t| t.shadow.as_ref().map(|b| b.id.clone()));
        (self.engine.shadow(), pending)
    }

    /// Whether a rebuild runs.
    pub fn rebuilding(&self) -> bool {
        self.rebuilding.load(Ordering::SeqCst)
    }

    /// Rebuilds reader state for `bundle` from the whole log on a thread of its own, then makes
    /// it the active bundle. Without a local log (Kafka), the new features start empty.
    pub fn start_rebuild(&self, bundle: Bundle) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut target) = self.rebuild.lock() {
            *target = RebuildTarget {
                feature_set: Some(bundle.feature_set),
                shadow: None,
            };
        }
        let (engine, log, flag, target) = (
            Arc::clone(&self.engine),
            self.log.clone(),
            Arc::clone(&self.rebuilding),
            Arc::clone(&self.rebuild),
        );
        let spawned = std::thread::Builder::new()
            .name("pulse-rebuild".into())
            .spawn(move || {
                let id = bundle.id.clone();
                let feature_set = bundle.feature_set;
                let done = rebuild(&engine, log.as_deref(), bundle);
                let waiting = target.lock().ok().and_then(|mut t| {
                    t.feature_set = None;
                    t.shadow.take()
                });
                match done {
                    Ok(events) => {
                        tracing::info!(bundle = %id, events, "rebuild done: the bundle is active");
                        // A shadow of the old features decides nothing now: replace or clear it.
                        let stale = engine
                            .shadow()
                            .is_some_and(|s| s.feature_set != feature_set);
                        if waiting.is_some() || stale {
                            let shadow = waiting.as_ref().map(|b| b.id.clone());
                            if let Err(e) = engine.set_shadow(waiting) {
                                tracing::error!(error = %e, "the shadow bundle could not be set");
                            } else {
                                tracing::info!(shadow = ?shadow, "shadow bundle after the rebuild");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(bundle = %id, error = %e, "rebuild failed: the old bundle stays active");
                        if let Some(s) = waiting {
                            tracing::warn!(shadow = %s.id, "the shadow bundle waiting for the rebuild is not set");
                        }
                    }
                }
                flag.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the rebuild");
            self.rebuilding.store(false, Ordering::SeqCst);
        }
    }

    /// Writes what is held in memory and stops the engine's threads (after the log is closed,
    /// so that the position written covers everything appended).
    pub fn close(&self) -> Result<(), String> {
        match self.engine.close() {
            Ok(()) => Ok(()),
            // The state changelog cannot be reached (Kafka mode): the states go to the local
            // store alone. The changelog keeps the positions of its own last states, so a
            // restore from it replays the rest from the events topic.
            Err(e) if self.engine.store().clear_mirror() => {
                tracing::warn!(error = %e, "the last write-behind did not reach the state changelog: written to the local store only");
                self.engine.flush().map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Builds state for `bundle` from the whole log, then, with scoring paused, from the rest that
/// arrived meanwhile, and makes it active. Returns how many events it read.
fn rebuild(
    engine: &Engine<FjallStore>,
    log: Option<&EventLog>,
    bundle: Bundle,
) -> Result<u64, String> {
    let mut rb = engine.rebuild(bundle).map_err(|e| e.to_string())?;
    let Some(log) = log else {
        tracing::warn!("no local event log (Kafka sink): the new features start empty");
        rb.finish(|_| Ok(None)).map_err(|e| e.to_string())?;
        return Ok(0);
    };
    let total = log.replay_point();
    let mut next = 0u64;
    let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
    let mut last_report = 0;
    {
        let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| rb.apply(reader, events);
        for stored in log.events_from(0) {
            let stored = stored.map_err(|e| e.to_string())?;
            next = stored.seq + 1;
            let r = stored.record().map_err(|e| e.to_string())?;
            batcher
                .push(&r.reader, r.received_at, r.event, r.time, &mut apply)
                .map_err(|e| e.to_string())?;
            let percent = next * 100 / total.max(1);
            if percent >= last_report + 10 {
                last_report = percent;
                tracing::info!(
                    events = next,
                    of = total,
                    percent,
                    "rebuilding reader state"
                );
            }
        }
        batcher.flush(&mut apply).map_err(|e| e.to_string())?;
    }
    rb.finish(|rb| {
        let store_err = |e: LogError| EngineError::Store(pulse_scorer::StoreError(e.to_string()));
        let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
        let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| rb.apply(reader, events);
        let mut end = next;
        for stored in log.events_from(next) {
            let stored = stored.map_err(store_err)?;
            end = stored.seq + 1;
            let r = stored.record().map_err(store_err)?;
            batcher.push(&r.reader, r.received_at, r.event, r.time, &mut apply)?;
        }
        batcher.flush(&mut apply)?;
        Ok(Some(end))
    })
    .map_err(|e| e.to_string())?;
    Ok(next)
}
