//! The ingest path, the same for every listener: decode, check, append durably, decide.
//! Admission (site key, origin) happens before the body is read; see [`Gateway::admit`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pulse_protocol::{
    Action, BatchError, CollectResponse, DeadLetter, Decision, ErrorCode, Event, EventRecord,
    MAX_EVENTS_PER_BATCH, parse_batch,
};
use pulse_scorer::{Batcher, Bundle, Engine, EngineError, FjallStore, Outcome};

use crate::admit::{Admitted, Sites};
use crate::config::Config;
use crate::decode::decode;
use crate::metrics::Metrics;
use crate::ratelimit::{Limited, RateLimiter};
use crate::sink::{self, EmbeddedStore, Sink, SinkBatch, SinkError};

/// A refused request: its code (which fixes the status), a safe message, and for retryable
/// errors the seconds to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A message safe to show the client.
    pub message: String,
    /// `Retry-After` in seconds, for retryable errors.
    pub retry_after: Option<u32>,
    /// For `rate_limited`: the limit that refused the request.
    pub limit: Option<&'static str>,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retry_after = code.is_retryable().then_some(1);
        Self {
            code,
            message: message.into(),
            retry_after,
            limit: None,
        }
    }

    /// A request refused by a rate limit.
    pub fn limited(limited: Limited) -> Self {
        let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u32;
        Self {
            code: ErrorCode::RateLimited,
            message: format!("rate limit {} exceeded; retry in {secs} s", limited.limit),
            retry_after: Some(secs),
            limit: Some(limited.limit),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let code = match &e {
            BatchError::Malformed(_) => ErrorCode::MalformedJson,
            BatchError::Invalid(_) => ErrorCode::InvalidBatch,
            BatchError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            BatchError::EventCount(0) => ErrorCode::EmptyBatch,
            BatchError::EventCount(_) => ErrorCode::TooManyEvents,
        };
        Self::new(code, e.to_string())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (for echoing client input in messages).
fn shorten(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The gateway: configuration, the store, the scorer and the counters. Shared by every listener.
pub struct Gateway {
    /// The configuration it was started with.
    pub config: Config,
    sites: std::sync::RwLock<Arc<Sites>>,
    store: Arc<EmbeddedStore>,
    sink: Arc<dyn Sink>,
    engine: Arc<Engine<FjallStore>>,
    /// Set while a bundle with new features is being rebuilt from the log.
    rebuilding: Arc<std::sync::atomic::AtomicBool>,
    /// The counters served at `/metrics`.
    pub metrics: Metrics,
    /// The rate limits, swapped at runtime by the admin API and SIGHUP.
    pub limiter: RateLimiter,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("sink", &self.sink.kind())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Opens the store in `config.server.data` and the scorer's engine with the configured
    /// bundle, and brings reader state up to date with the log: events appended before a crash
    /// but not yet in stored state are replayed. When the bundle changes the features of the
    /// stored state, the state's own bundle keeps deciding while the new one is rebuilt from the
    /// log in the background.
    pub fn open(config: Config) -> Result<Self, SinkError> {
        let bundle = config
            .scorer
            .load_bundle()
            .map_err(|e| SinkError::Io(e.to_string()))?;
        let store = Arc::new(EmbeddedStore::open(&config.server.data)?);
        let state = FjallStore::new(store.database()).map_err(|e| SinkError::Io(e.to_string()))?;
        let (engine, startup) = Engine::open(state, bundle, config.scorer.engine())
            .map_err(|e| SinkError::Io(format!("scorer: {e}")))?;
        let engine = Arc::new(engine);
        if matches!(config.sink.kind, crate::config::SinkKind::Embedded) {
            let log = Arc::clone(&store);
            engine.set_progress(Box::new(move || Some(log.replay_point())));
        }
        let replayed = replay(&store, &engine, startup.replay_from)?;
        if replayed > 0 {
            engine
                .flush()
                .map_err(|e| SinkError::Io(format!("scorer: {e}")))?;
            tracing::info!(
                events = replayed,
                from = startup.replay_from,
                "replayed the log into reader state"
            );
        }
        let active = engine.bundle().map_err(|e| SinkError::Io(e.to_string()))?;
        tracing::info!(bundle = %active.id, name = %active.name, features = active.features.len(), "scorer bundle");
        let sink = sink::open(&config, &store)?;
        let config_limits = config.rate_limits.clone();
        let gateway = Self {
            sites: std::sync::RwLock::new(Arc::new(Sites::new(&config.sites))),
            config,
            store,
            sink,
            engine,
            rebuilding: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            metrics: Metrics::default(),
            limiter: RateLimiter::new(&config_limits),
        };
        if let Some(next) = startup.rebuild {
            tracing::warn!(
                active = %active.id,
                configured = %next.id,
                "the configured bundle changes the features: rebuilding its state from the log; the stored bundle decides until then"
            );
            gateway.start_rebuild(*next);
        }
        Ok(gateway)
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
                if self.rebuilding.load(std::sync::atomic::Ordering::SeqCst) {
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

    /// Rebuilds reader state for `bundle` from the whole log on a thread of its own, then makes
    /// it the active bundle. Without a local log (Kafka), the new features start empty.
    fn start_rebuild(&self, bundle: Bundle) {
        if self
            .rebuilding
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let (engine, store, flag) = (
            Arc::clone(&self.engine),
            Arc::clone(&self.store),
            Arc::clone(&self.rebuilding),
        );
        let local_log = matches!(self.config.sink.kind, crate::config::SinkKind::Embedded);
        let spawned = std::thread::Builder::new()
            .name("pulse-rebuild".into())
            .spawn(move || {
                let id = bundle.id.clone();
                match rebuild(&engine, &store, bundle, local_log) {
                    Ok(events) => tracing::info!(bundle = %id, events, "rebuild done: the bundle is active"),
                    Err(e) => tracing::error!(bundle = %id, error = %e, "rebuild failed: the old bundle stays active"),
                }
                flag.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the rebuild");
            self.rebuilding
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The scoring engine.
    pub fn engine(&self) -> &Arc<Engine<FjallStore>> {
        &self.engine
    }

    /// The embedded store, which keeps reader state (and the log, unless Kafka is the sink).
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    fn sites(&self) -> Arc<Sites> {
        match self.sites.read() {
            Ok(sites) => Arc::clone(&sites),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the sites (keys and origins) for every request from now on.
    pub fn set_sites(&self, sites: &[crate::config::SiteConfig]) {
        let fresh = Arc::new(Sites::new(sites));
        match self.sites.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// The log accepted events are appended to.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// Flushes the log, writes reader state and closes the store; call once the listeners have
    /// stopped.
    pub async fn close(&self) -> Result<(), SinkError> {
        self.sink.close().await?;
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || engine.close())
            .await
            .map_err(|e| SinkError::Io(format!("close: {e}")))?
            .map_err(|e| SinkError::Io(format!("scorer: {e}")))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| SinkError::Io(format!("close: {e}")))?
    }

    /// Admits a request by its `?k=`, `Origin` and `Host`, before its body is read.
    pub fn admit(
        &self,
        key: Option<&str>,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<Admitted, ApiError> {
        self.sites().admit(key, origin, host).map_err(|code| {
            let message = match (code, origin) {
                (ErrorCode::MissingSiteKey, _) => {
                    "the site key is missing: send it as ?k=<key>".to_owned()
                }
                (ErrorCode::UnknownSiteKey, _) => {
                    "the site key is not known to this gateway".to_owned()
                }
                (_, Some(origin)) => format!(
                    "the origin {} is not among this site's origins",
                    shorten(origin, 200)
                ),
                (_, None) => "this site requires an Origin header".to_owned(),
            };
            ApiError::new(code, message)
        })
    }

    /// Whether a preflight from `origin` should be allowed.
    pub fn preflight_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        self.sites().any_allows(origin, host)
    }

    /// Ingests one admitted batch body: decode, check, append durably, decide.
    pub async fn ingest(
        &self,
        site: &str,
        body: &[u8],
        content_encoding: Option<&str>,
    ) -> Result<CollectResponse, ApiError> {
        let now = now_ms();
        let limits = &self.config.limits;
        let decoded = match decode(body, content_encoding, limits.max_decoded_bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                let err = ApiError::new(e.code(), e.to_string());
                self.dead_letter(site, &err, now, body).await;
                return Err(err);
            }
        };
        self.metrics.bytes(body.len(), decoded.len());
        let parsed = match parse_batch(&decoded, now) {
            Ok(parsed) => parsed,
            Err(e) => {
                let err = ApiError::from(e);
                self.dead_letter(site, &err, now, &decoded).await;
                return Err(err);
            }
        };
        let header = &parsed.header;
        if header.site_key != site {
            return Err(ApiError::new(
                ErrorCode::SiteKeyMismatch,
                "the batch's site_key differs from ?k=",
            ));
        }
        if let Err(limited) = self.limiter.check_events(site, parsed.accepted.len()) {
            self.metrics.rate_limited(limited.limit);
            return Err(ApiError::limited(limited));
        }
        let reader = header.reader_key().to_owned();
        let timed: Vec<(Event, u64)> = parsed
            .accepted
            .iter()
            .map(|e| (e.clone(), parsed.event_time(e)))
            .collect();
        let events = parsed
            .accepted
            .iter()
            .zip(&timed)
            .map(|(event, (_, time))| EventRecord {
                site: site.to_owned(),
                reader: reader.clone(),
                anonymous_id: header.anonymous_id.clone(),
                user_id: header.user_id.clone(),
                session_id: header.session_id.clone(),
                seq: header.seq,
                time: *time,
                received_at: now,
                event: event.clone(),
            })
            .collect();
        let dead_letters: Vec<_> = parsed
            .rejected
            .iter()
            .map(|(r, raw)| DeadLetter::event(site, r.reason, r.index, now, raw))
            .collect();
        let n_dead = dead_letters.len();
        let append = self.sink.append(SinkBatch {
            events,
            dead_letters,
        });
        let started = std::time::Instant::now();
        let appended = tokio::time::timeout(limits.store_deadline_ms.get(), append).await;
        self.metrics.sink_latency.observe(started.elapsed());
        let receipt = match appended {
            Ok(Ok(receipt)) => receipt,
            Ok(Err(e)) => {
                tracing::error!(site, error = %e, "append failed");
                return Err(ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the events could not be stored; retry",
                ));
            }
            Err(_) => {
                tracing::warn!(site, "append missed its deadline");
                return Err(ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the store is busy; retry",
                ));
            }
        };
        self.metrics.accepted(receipt.events);
        self.metrics.dead_letters(n_dead);
        for (r, _) in &parsed.rejected {
            self.metrics.rejected(r.reason);
        }
        let decision = self.decide(site, reader, timed, receipt.applied, now).await;
        Ok(CollectResponse {
            accepted: receipt.events as u32,
            rejected: parsed.rejected.into_iter().map(|(r, _)| r).collect(),
            decision,
        })
    }

    /// Applies the events to the reader's state and decides, within the decision deadline; past
    /// it, answers the safe fallback while the scorer finishes in the background. Events the
    /// scorer does not apply because they are too late are counted and dead-lettered (they are
    /// in the log all the same).
    async fn decide<G: Send + 'static>(
        &self,
        site: &str,
        reader: String,
        timed: Vec<(Event, u64)>,
        guard: G,
        now: u64,
    ) -> Decision {
        let engine = Arc::clone(&self.engine);
        let task = tokio::task::spawn_blocking(move || {
            let refs: Vec<_> = timed.iter().map(|(e, t)| (e, *t)).collect();
            let scored = engine.score(&reader, &refs, now, &pulse_scorer::Request::default());
            drop(guard); // applied: the replay point may move past these events
            scored.map(|s| {
                let late: Vec<(Event, Outcome)> = s
                    .refused
                    .iter()
                    .filter_map(|(i, why)| timed.get(*i).map(|(e, _)| (e.clone(), *why)))
                    .collect();
                (s.decision, late)
            })
        });
        let started = std::time::Instant::now();
        let decided =
            tokio::time::timeout(self.config.limits.decision_deadline_ms.get(), task).await;
        self.metrics.decision_latency.observe(started.elapsed());
        match decided {
            Ok(Ok(Ok((decision, late)))) => {
                if !late.is_empty() {
                    self.dead_letter_late(site, late, now);
                }
                return decision;
            }
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "scorer failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "scorer task failed"),
            Err(_) => tracing::warn!("scorer missed its deadline"),
        }
        self.metrics.fallback();
        let version = self
            .engine
            .bundle()
            .map(|b| b.id.clone())
            .unwrap_or_default();
        Decision {
            fallback: true,
            ..Decision::new(Action::Allow, "fallback", version)
        }
    }

    /// Writes dead letters for events stored but not applied (too late, or past dedupe's bound),
    /// in the background: the page's answer does not wait for them.
    fn dead_letter_late(&self, site: &str, late: Vec<(Event, Outcome)>, now: u64) {
        let dead_letters: Vec<DeadLetter> = late
            .iter()
            .map(|(e, why)| {
                let raw = serde_json::to_string(e).unwrap_or_default();
                let mut dl = DeadLetter::batch(site, why.as_str(), now, raw.as_bytes());
                dl.index = None;
                dl
            })
            .collect();
        let n = dead_letters.len();
        let sink = Arc::clone(&self.sink);
        let deadline = self.config.limits.store_deadline_ms.get();
        let site = site.to_owned();
        tokio::spawn(async move {
            let batch = SinkBatch {
                events: vec![],
                dead_letters,
            };
            match tokio::time::timeout(deadline, sink.append(batch)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(site, error = %e, "late events' dead letters not stored")
                }
                Err(_) => tracing::error!(site, "late events' dead letters missed their deadline"),
            }
        });
        self.metrics.dead_letters(n);
    }

    /// Keeps a refused batch of a known site, with its reason, in the dead-letter log.
    async fn dead_letter(&self, site: &str, err: &ApiError, now: u64, raw: &[u8]) {
        let batch = SinkBatch {
            events: vec![],
            dead_letters: vec![DeadLetter::batch(site, err.code.as_str(), now, raw)],
        };
        match tokio::time::timeout(
            self.config.limits.store_deadline_ms.get(),
            self.sink.append(batch),
        )
        .await
        {
            Ok(Ok(_)) => self.metrics.dead_letters(1),
            Ok(Err(e)) => tracing::error!(site, error = %e, "dead letter not stored"),
            Err(_) => tracing::error!(site, "dead letter missed its deadline"),
        }
    }
}

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

/// Applies the log from `from` to the engine as live traffic did (batches of one reader and
/// one request together). Returns how many events were read.
fn replay(store: &EmbeddedStore, engine: &Engine<FjallStore>, from: u64) -> Result<u64, SinkError> {
    let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
    let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| {
        engine
            .replay(reader, events)
            .map(|_| ())
            .map_err(|e| SinkError::Io(format!("replay: {e}")))
    };
    let mut n = 0;
    for stored in store.events_from(from) {
        let r = stored?.record;
        batcher.push(&r.reader, r.received_at, r.event, r.time, &mut apply)?;
        n += 1;
    }
    batcher.flush(&mut apply)?;
    Ok(n)
}

/// Builds state for `bundle` from the whole log, then, with scoring paused, from the rest that
/// arrived meanwhile, and makes it active. Returns how many events it read.
fn rebuild(
    engine: &Engine<FjallStore>,
    store: &EmbeddedStore,
    bundle: Bundle,
    local_log: bool,
) -> Result<u64, String> {
    let mut rb = engine.rebuild(bundle).map_err(|e| e.to_string())?;
    if !local_log {
        tracing::warn!("no local event log (Kafka sink): the new features start empty");
        rb.finish(|_| Ok(None)).map_err(|e| e.to_string())?;
        return Ok(0);
    }
    let total = store.next_seq();
    let mut next = 0u64;
    let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
    let mut last_report = 0;
    {
        let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| rb.apply(reader, events);
        for stored in store.events_from(0) {
            let stored = stored.map_err(|e| e.to_string())?;
            next = stored.seq + 1;
            let r = stored.record;
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
        let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
        let mut apply = |reader: &str, events: &[(&Event, u64)], _: u64| rb.apply(reader, events);
        let mut end = next;
        for stored in store.events_from(next) {
            let stored =
                stored.map_err(|e| EngineError::Store(pulse_scorer::StoreError(e.to_string())))?;
            end = stored.seq + 1;
            let r = stored.record;
            batcher.push(&r.reader, r.received_at, r.event, r.time, &mut apply)?;
        }
        batcher.flush(&mut apply)?;
        Ok(Some(end))
    })
    .map_err(|e| e.to_string())?;
    Ok(next)
}
