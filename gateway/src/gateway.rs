//! The gateway, split by role: the ingest path ([`Ingest`]: sink, scorer, buffers), the control
//! side ([`Control`]: sites, rate limits, the bundle, reload), and the stores they share (the
//! event log, the scorer's reader-state store). It answers every listener's requests (public
//! routes and the admin API) and does the housekeeping on a thread of its own.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::ControlBus;
use crate::config::{Config, Role, SinkKind};
use crate::control::Control;
use crate::decide::Decider;
use crate::decisions::DecisionLog;
use crate::ingest::Ingest;
use crate::log::{DecisionLogSettings, EventLog, LogError, LogSettings};
use crate::metrics::Metrics;
use crate::pool::BufPool;
use crate::ratelimit::RateLimiter;
use crate::signing::DecisionSigner;
use crate::sink::{self, SinkError};
use crate::tier::{Owners, Router, Tier};
use crate::token::{self, TokenSource};
use pulse_scorer::{Engine, FjallStore};

/// How often the housekeeping thread wakes.
const TICK: Duration = Duration::from_secs(1);
/// How often idle rate-limit keys are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why the gateway could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The event log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The bundle, the reader-state store, or replaying the log into it.
    #[error("scorer: {0}")]
    State(String),
    /// The sink.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The admin token.
    #[error("admin token: {0}")]
    Token(#[from] io::Error),
    /// The key decisions are signed with.
    #[error("decision key: {0}")]
    Signing(#[from] crate::signing::SigningError),
}

/// The gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration it was started with (the reloadable parts live in [`Control`]).
    pub config: Config,
    /// The counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    ingest: Ingest,
    control: Arc<Control>,
    log: Option<Arc<EventLog>>,
    decider: Arc<Decider>,
    admin_token: String,
    admin_token_source: TokenSource,
    housekeeping: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Kafka mode's control topic (none when embedded or when `control_topic` is empty).
    bus: Option<Arc<ControlBus>>,
    /// Set at SIGTERM: `/readyz` says so while the gateway still serves.
    draining: std::sync::atomic::AtomicBool,
    /// The listeners' open connections, once they serve.
    connections: std::sync::OnceLock<pulse_http::OpenConnections>,
    /// The tracker's files: embedded, or from `server.tracker_dir`.
    tracker: crate::statics::Tracker,
    /// A scorer's partitions (`cluster.role = "scorer"`).
    tier: Option<Arc<Tier>>,
    /// The scorers' claims heard on the control topic.
    owners: Arc<Owners>,
    /// Gaps in sessions' batch numbers (a single process, or a scorer).
    gaps: Option<Arc<crate::gaps::SeqGaps>>,
}

impl Gateway {
    /// Opens the stores in `config.server.data` (the event log unless Kafka is the sink, the
    /// reader-state store always) and the scorer's engine with the configured bundle, brings
    /// reader state up to date with the log (events appended but not in stored state are
    /// replayed), opens the sink and prepares the admin token. When the bundle changes the
    /// features of the stored state, the state's own bundle keeps deciding while the new one
    /// is rebuilt from the log in the background.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        let state_error = |e: &dyn std::fmt::Display| OpenError::State(e.to_string());
        let metrics = Arc::new(Metrics::default());
        let pool = Arc::new(BufPool::default());
        let data = &config.server.data;
        let (bundle, shadow) = config.scorer.load_bundles().map_err(|e| state_error(&e))?;
        let store = crate::state::open(data).map_err(|e| state_error(&e))?;
        let role = config.cluster.role;
        let changelog = match &config.sink {
            // A stateless gateway keeps no state; a scorer restores each partition it is given.
            _ if role == Role::Gateway => None,
            s if s.kind == SinkKind::Kafka && !s.kafka.state_topic.is_empty() => {
                if role == Role::All {
                    restore_changelog(&config, &store, &metrics)?;
                }
                Some(Arc::new(
                    sink::Changelog::new(&config.sink.kafka).map_err(OpenError::Sink)?,
                ))
            }
            _ => None,
        };
        let (engine, startup) =
            Engine::open(store, bundle, config.scorer.engine()).map_err(|e| state_error(&e))?;
        let engine = Arc::new(engine);
        if let Some(changelog) = changelog {
            engine.store().set_mirror(changelog);
        }
        let log = match config.sink.kind {
            SinkKind::Embedded => {
                let log = Arc::new(EventLog::open(
                    data,
                    &log_settings(&config),
                    Arc::clone(&metrics),
                    Arc::clone(&pool),
                )?);
                let progress = Arc::clone(&log);
                engine.set_progress(Box::new(move || Some(progress.replay_point())));
                Some(log)
            }
            SinkKind::Kafka => None,
        };
        let deadline = config.limits.decision_deadline_ms.get();
        let owners = Arc::new(Owners::default());
        if role != Role::All {
            crate::tier::check_partitions(&config.sink.kafka, engine.config().partitions)
                .map_err(|e| state_error(&e))?;
        }
        let mut decider = Decider::new(
            Arc::clone(&engine),
            log.clone(),
            deadline,
            Arc::clone(&metrics),
        );
        let token = || config.cluster.secret().map_err(|e| state_error(&e));
        if role == Role::Gateway {
            let router = Router::new(Arc::clone(&owners), engine.config().partitions, &token()?)
                .map_err(|e| state_error(&e))?;
            decider = decider.with_router(router);
        }
        let decider = Arc::new(decider);
        // Counted where every batch of a reader arrives: here in one process, else its scorer.
        let gaps = (role != Role::Gateway).then(|| Arc::new(crate::gaps::SeqGaps::default()));
        let tier = match (role, &gaps) {
            (Role::Scorer, Some(gaps)) => Some(Arc::new(
                Tier::new(
                    Arc::clone(&engine),
                    &config.sink.kafka,
                    &config.cluster,
                    Arc::clone(gaps),
                )
                .map_err(|e| state_error(&e))?,
            )),
            _ => None,
        };
        let replayed = decider
            .replay(startup.replay_from)
            .map_err(|e| state_error(&e))?;
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                from = startup.replay_from,
                "replayed the log into reader state"
            );
        }
        let active = engine.bundle().map_err(|e| state_error(&e))?;
        tracing::info!(bundle = %active.id, name = %active.name, features = active.features.len(), "scorer bundle");
        if let Some(next) = startup.rebuild {
            tracing::warn!(
                active = %active.id,
                configured = %next.id,
                "the configured bundle changes the features: rebuilding its state from the log; the stored bundle decides until then"
            );
            decider.start_rebuild(*next);
        }
        decider.set_shadow(shadow).map_err(|e| state_error(&e))?;
        let offsets = match config.sink.kind {
            // The split tier's scorers read the events topic themselves, by partition.
            SinkKind::Kafka if role != Role::All => None,
            SinkKind::Kafka => {
                restore_from_kafka(&config, &decider, startup.positions.as_deref(), &metrics)
            }
            SinkKind::Embedded => None,
        };
        let sink = sink::open(&config, log.clone(), offsets, Arc::clone(&pool))?;
        let decisions = Arc::new(DecisionLog::open(
            &config,
            log.clone(),
            Arc::clone(&metrics),
            Arc::clone(&pool),
        )?);
        if let Some(tier) = &tier {
            tier.set_decision_log(Arc::clone(&decisions));
        }
        let (admin_token, admin_token_source) = token::admin_token(&config)?;
        let control = Arc::new(Control::new(&config, Arc::clone(&decider)));
        let signer = if config.sites.iter().any(|s| s.sign_decisions) {
            let path = config
                .server
                .decision_key
                .clone()
                .unwrap_or_else(|| data.join("decision-key.pk8"));
            let signer = DecisionSigner::load_or_create(&path)?;
            tracing::info!(kid = signer.kid(), key = %path.display(), "decisions are signed");
            Some(Arc::new(signer))
        } else {
            None
        };
        let ingest = Ingest::new(
            config.limits.clone(),
            sink,
            decisions,
            Arc::clone(&decider),
            Arc::clone(&metrics),
            pool,
            signer,
        )
        .with_gaps(gaps.clone().filter(|_| role == Role::All))
        .with_dictionaries(Arc::clone(&control.dictionaries));
        let housekeeping = housekeeping(
            log.clone(),
            Arc::clone(&control.limiter),
            Arc::clone(&engine),
        );
        let bus = match config.sink.kind {
            SinkKind::Kafka if !config.sink.kafka.control_topic.is_empty() => Some(Arc::new(
                ControlBus::start(
                    &config.sink.kafka,
                    Arc::clone(&control),
                    Arc::clone(&owners),
                    role,
                )
                .map_err(OpenError::Sink)?,
            )),
            _ => None,
        };
        if let Some(bus) = &bus {
            // Every gateway holds every dictionary any of them trained.
            let bus = Arc::clone(bus);
            control
                .dictionaries
                .set_publish(Box::new(move |site, v| bus.publish_dictionary(site, v)));
        }
        let tracker = crate::statics::Tracker::new(config.server.tracker_dir.as_deref());
        Ok(Self {
            tracker,
            config,
            metrics,
            ingest,
            control,
            log,
            decider,
            admin_token,
            admin_token_source,
            housekeeping: Mutex::new(housekeeping),
            bus,
            draining: std::sync::atomic::AtomicBool::new(false),
            connections: std::sync::OnceLock::new(),
            tier,
            owners,
            gaps,
        })
    }

    /// A scorer of a split tier: joins the scorers' group once its admin listener is bound
    /// (gateways reach it there, at `cluster.advertise` or the bound address).
    pub(crate) fn start_tier(&self, admin: Option<std::net::SocketAddr>) {
        let (Some(tier), Some(bus)) = (&self.tier, &self.bus) else {
            return;
        };
        let addr = match (&self.config.cluster.advertise, admin) {
            (Some(a), _) => a.clone(),
            (None, Some(a)) => a.to_string(),
            (None, None) => {
                tracing::error!(
                    "a scorer needs an admin listener (server.admin_listen) or cluster.advertise"
                );
                return;
            }
        };
        if let Err(e) = tier.start(Arc::clone(bus), addr.clone()) {
            tracing::error!(error = %e, "cannot join the scorers' group");
        } else {
            tracing::info!(%addr, "scorer: gateways reach this instance here");
        }
    }

    /// The split tier as this instance sees it (`GET /admin/cluster`): its role, the live
    /// scorers with the partitions each answers for, and, on a scorer, its own partitions.
    pub fn cluster(&self) -> serde_json::Value {
        let live = crate::cluster::LIVE_FOR.as_millis() as u64;
        let scorers: Vec<_> = self
            .owners
            .live(crate::ingest::now_ms(), live)
            .into_iter()
            .map(|(instance, c)| {
                serde_json::json!({"instance": instance, "addr": c.addr, "partitions": c.partitions})
            })
            .collect();
        serde_json::json!({
            "role": self.config.cluster.role.as_str(),
            "instance": self.bus.as_ref().map(|b| b.instance()),
            "partitions": self.engine().config().partitions,
            "scorers": scorers,
            "owned": self.tier.as_ref().map(|t| t.owned()),
        })
    }

    /// This process's scorer side (`cluster.role = "scorer"`).
    pub(crate) fn tier(&self) -> Option<&Arc<Tier>> {
        self.tier.as_ref()
    }

    /// The tracker's files.
    pub(crate) fn tracker(&self) -> &crate::statics::Tracker {
        &self.tracker
    }

    /// The ingest path.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The control side: sites, rate limits, the bundle, reload.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The embedded event log (none when Kafka is the sink).
    pub fn log(&self) -> Option<&Arc<EventLog>> {
        self.log.as_ref()
    }

    /// Sends the erasure record of `reader` (Kafka mode) to the events topic for consumers
    /// downstream and to the other gateways through the control topic; resolves with where the
    /// record went.
    pub async fn erasure_record(&self, reader: &str) -> Result<String, String> {
        let at = crate::ingest::now_ms();
        let sent = self
            .ingest
            .sink()
            .erasure(reader, at)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(bus) = &self.bus {
            bus.publish_erasure(reader).await?;
        }
        Ok(sent)
    }

    /// The listeners' open connections, for metrics.
    pub fn set_connections(&self, open: pulse_http::OpenConnections) {
        let _ = self.connections.set(open);
    }

    /// What `/metrics` reads when scraped: the scorer's engine, the process, open connections,
    /// queue depths, tracked limiter keys and store sizes.
    pub fn scraped(&self) -> crate::Snapshot {
        let mut out = crate::Snapshot::default();
        crate::metrics::scorer_series(&mut out, self.engine());
        crate::metrics::gateway_series(
            &mut out,
            &crate::metrics::Scraped {
                connections: self.connections.get().map(|c| c.open()).unwrap_or_default(),
                sink_queue: self.ingest.sink().queue_depth(),
                tracked_addresses: self.control.limiter.tracked_addresses(),
                event_log_bytes: self.log.as_ref().map(|l| l.disk_bytes()),
                live_gateways: self.bus.as_ref().map(|_| self.control.limiter.share()),
                tier: (self.config.cluster.role != Role::All).then(|| {
                    let live = self.owners.live(
                        crate::ingest::now_ms(),
                        crate::cluster::LIVE_FOR.as_millis() as u64,
                    );
                    let claimed: std::collections::BTreeSet<u16> = live
                        .iter()
                        .flat_map(|(_, c)| c.partitions.iter().copied())
                        .collect();
                    (live.len(), claimed.len())
                }),
                owned: self.tier.as_ref().map(|t| t.by_state()).unwrap_or_default(),
                seq: self.gaps.as_ref().map(|g| g.counts()),
                dictionaries: self.control.dictionaries.counts(),
            },
        );
        out
    }

    /// The gateway is about to stop: `/readyz` answers 503 from now on, while requests are
    /// still served (the load balancer's time to stop sending any).
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether pages should be sent here (`/readyz`): every reason not to.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            reasons.push("draining".to_owned());
        }
        if let Err(e) = self.ingest.sink().ready() {
            reasons.push(format!("sink: {e}"));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// The control topic's client (Kafka mode).
    pub fn bus(&self) -> Option<&Arc<ControlBus>> {
        self.bus.as_ref()
    }

    /// The scorer.
    pub fn decider(&self) -> &Arc<Decider> {
        &self.decider
    }

    /// The scoring engine.
    pub fn engine(&self) -> &Arc<Engine<FjallStore>> {
        self.decider.engine()
    }

    /// `embedded` or `kafka`.
    pub fn sink_kind(&self) -> &'static str {
        self.ingest.sink().kind()
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Where the admin token came from.
    pub fn admin_token_source(&self) -> &TokenSource {
        &self.admin_token_source
    }

    /// Flushes the sink, stops the log writer and closes the stores; call once the listeners
    /// have stopped.
    pub async fn close(&self) -> Result<(), SinkError> {
        if let Some(tier) = self.tier.clone() {
            // Its partitions written and handed over before the bus stops.
            let _ = tokio::task::spawn_blocking(move || tier.close()).await;
        }
        if let Some(bus) = self.bus.clone() {
            let _ = tokio::task::spawn_blocking(move || bus.close()).await;
        }
        self.ingest.sink().close().await?;
        let housekeeping = self.stop_housekeeping();
        let log = self.log.clone();
        let decider = Arc::clone(&self.decider);
        let decisions = Arc::clone(self.ingest.decisions());
        let closed = tokio::task::spawn_blocking(move || {
            decisions.close();
            if let Some(handle) = housekeeping {
                let _ = handle.join();
            }
            if let Some(log) = &log {
                log.close().map_err(|e| SinkError::Io(e.to_string()))?;
            }
            // The last write-behind covers everything the closed log holds.
            decider.close().map_err(SinkError::Io)
        });
        closed
            .await
            .map_err(|e| SinkError::Io(format!("close: {e}")))?
    }
}

impl Gateway {
    /// Tells the housekeeping thread to stop; returns it, to be joined.
    fn stop_housekeeping(&self) -> Option<JoinHandle<()>> {
        let (stop, handle) = self.housekeeping.lock().ok()?.take()?;
        drop(stop);
        Some(handle)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(handle) = self.stop_housekeeping() {
            let _ = handle.join();
        }
    }
}

/// Starts the housekeeping thread: every second the log writer nudged (to write and sync
/// queued decisions and apply the retention of dead letters and decisions), every ten seconds
/// idle rate-limit keys forgotten. It runs until its sender is dropped.
/// (Reader state and its log position are written by the engine's own write-behind thread.)
fn housekeeping(
    log: Option<Arc<EventLog>>,
    limiter: Arc<RateLimiter>,
    engine: Arc<Engine<FjallStore>>,
) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let work = move || {
        let mut last_sweep = Instant::now();
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
            if let Some(log) = &log {
                // The event log's retention may delete what stored state already holds.
                log.set_evictable_before(engine.stored_position());
                log.nudge();
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                limiter.sweep();
                last_sweep = Instant::now();
            }
        }
    };
    match std::thread::Builder::new()
        .name("pulse-housekeeping".into())
        .spawn(work)
    {
        Ok(handle) => Some((stop, handle)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the housekeeping thread; doing without");
            None
        }
    }
}

/// Kafka mode: applies the events of `pulse.events` that stored reader state lacks (from the
/// offsets its last write-behind recorded), then has each write-behind record the offsets
/// again. When Kafka cannot be read now, the gateway starts without them and keeps the stored
/// offsets for the next start (logged as an error).
/// A state store that is empty (a new machine, a lost disk) is filled from the state
/// changelog first; a store that holds state keeps it (the events topic brings it up to date).
fn restore_changelog(
    config: &Config,
    store: &FjallStore,
    metrics: &Metrics,
) -> Result<(), OpenError> {
    use pulse_scorer::StateStore as _;
    let empty = store
        .feature_sets()
        .map_err(|e| OpenError::State(e.to_string()))?
        .is_empty();
    if !empty {
        return Ok(());
    }
    let kafka = &config.sink.kafka;
    let started = Instant::now();
    match sink::restore_changelog(kafka, store, config.scorer.engine().partitions) {
        Ok(restored) => {
            let took = started.elapsed();
            metrics.restored_states(restored.states, took);
            tracing::info!(
                states = restored.states,
                records = restored.records,
                topic = %kafka.state_topic,
                ms = took.as_millis() as u64,
                "reader state restored from the state changelog"
            );
            Ok(())
        }
        Err(e) => {
            // Without it the events topic rebuilds state from its start (what it still holds);
            // a restore cut short leaves nothing behind.
            for fs in store.feature_sets().unwrap_or_default() {
                let _ = store.drop_feature_set(fs);
            }
            tracing::error!(error = %e, topic = %kafka.state_topic, "the state changelog could not be read: reader state is rebuilt from the events topic");
            Ok(())
        }
    }
}

fn restore_from_kafka(
    config: &Config,
    decider: &Arc<Decider>,
    stored: Option<&[u8]>,
    metrics: &Metrics,
) -> Option<Arc<sink::KafkaOffsets>> {
    let kafka = &config.sink.kafka;
    let started = Instant::now();
    match sink::restore(kafka, stored, decider) {
        Ok(restored) => {
            metrics.restored_events(restored.events, started.elapsed());
            tracing::info!(
                events = restored.events,
                topic = %kafka.events_topic,
                ms = started.elapsed().as_millis() as u64,
                "reader state brought up to date from kafka"
            );
            let offsets = sink::KafkaOffsets::new(&kafka.events_topic, &restored.ends);
            let written = Arc::clone(&offsets);
            decider
                .engine()
                .set_positions(Box::new(move || written.encode()));
            Some(offsets)
        }
        Err(e) => {
            tracing::error!(error = %e, "reader state could not be brought up to date from kafka: starting without the events since the last write-behind (they are applied at the next start that can read them)");
            None
        }
    }
}

/// The embedded log's sizes and retention, from `[dead_letters]` and `[decision_log]`.
fn log_settings(config: &Config) -> LogSettings {
    let defaults = LogSettings::default();
    let dead = &config.dead_letters;
    let d = &config.decision_log;
    let decisions = d.enabled.then(|| DecisionLogSettings {
        segment_bytes: DecisionLogSettings::default()
            .segment_bytes
            .min(d.max_bytes / 8)
            .max(64 * 1024),
        max_bytes: d.max_bytes,
        retention: Duration::from_secs(u64::from(d.retention_hours) * 3600),
        queue_bytes: d.queue_bytes,
    });
    LogSettings {
        dead_max_bytes: dead.max_bytes,
        dead_segment_bytes: defaults
            .dead_segment_bytes
            .min(dead.max_bytes / 8)
            .max(64 * 1024),
        dead_retention: Duration::from_secs(u64::from(dead.retention_hours) * 3600),
        decisions,
        events_max_bytes: (config.event_log.max_bytes > 0).then_some(config.event_log.max_bytes),
        events_retention: (config.event_log.retention_hours > 0)
            .then(|| Duration::from_secs(u64::from(config.event_log.retention_hours) * 3600)),
        ..defaults
    }
}
