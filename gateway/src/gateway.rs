//! The gateway, split by role: the ingest path ([`Ingest`]: sink, scorer, buffers), the control
//! side ([`Control`]: sites, rate limits, meter rules, reload), and the stores they share (the
//! event log, the reader-state store). It answers every listener's requests (public routes and
//! the admin API) and keeps the replay point moving on a housekeeping thread.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, SinkKind};
use crate::control::Control;
use crate::decide::Decider;
use crate::ingest::{Ingest, now_ms};
use crate::log::{EventLog, LogError, LogSettings};
use crate::metrics::Metrics;
use crate::pool::BufPool;
use crate::ratelimit::RateLimiter;
use crate::sink::{self, SinkError};
use crate::state::ReaderStates;
use crate::token::{self, TokenSource};

/// How often the replay point is written to the reader-state store.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often idle rate-limit keys are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why the gateway could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The event log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The reader-state store, or replaying the log into it.
    #[error("reader state: {0}")]
    State(String),
    /// The sink.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The admin token.
    #[error("admin token: {0}")]
    Token(#[from] io::Error),
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
    states: Arc<ReaderStates>,
    admin_token: String,
    admin_token_source: TokenSource,
    housekeeping: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl Gateway {
    /// Opens the stores in `config.server.data` (the event log unless Kafka is the sink, the
    /// reader-state store always), brings reader state up to date with the log (events
    /// appended before a crash but not yet applied are replayed), opens the sink and prepares
    /// the admin token.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        let metrics = Arc::new(Metrics::default());
        let pool = Arc::new(BufPool::default());
        let data = &config.server.data;
        let states =
            Arc::new(ReaderStates::open(data).map_err(|e| OpenError::State(e.to_string()))?);
        let deadline = config.limits.decision_deadline_ms.get();
        let decider = Arc::new(Decider::new(
            Arc::clone(&states),
            config.meter.clone(),
            deadline,
            Arc::clone(&metrics),
        ));
        let log = match config.sink.kind {
            SinkKind::Embedded => {
                let log = EventLog::open(
                    data,
                    &log_settings(&config),
                    Arc::clone(&metrics),
                    Arc::clone(&pool),
                )?;
                replay(&log, &states, &decider)?;
                Some(Arc::new(log))
            }
            SinkKind::Kafka => None,
        };
        let sink = sink::open(&config, log.clone(), Arc::clone(&pool))?;
        let (admin_token, admin_token_source) = token::admin_token(&config)?;
        let control = Arc::new(Control::new(&config, Arc::clone(&decider)));
        let ingest = Ingest::new(
            config.limits.clone(),
            sink,
            decider,
            Arc::clone(&metrics),
            pool,
        );
        let housekeeping = housekeeping(
            log.clone(),
            Arc::clone(&states),
            Arc::clone(&control.limiter),
        );
        Ok(Self {
            config,
            metrics,
            ingest,
            control,
            log,
            states,
            admin_token,
            admin_token_source,
            housekeeping: Mutex::new(housekeeping),
        })
    }

    /// The ingest path.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The control side: sites, rate limits, meter rules, reload.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The embedded event log (none when Kafka is the sink).
    pub fn log(&self) -> Option<&Arc<EventLog>> {
        self.log.as_ref()
    }

    /// The reader-state store.
    pub fn states(&self) -> &Arc<ReaderStates> {
        &self.states
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
        self.ingest.sink().close().await?;
        let housekeeping = self.stop_housekeeping();
        let log = self.log.clone();
        let states = Arc::clone(&self.states);
        let closed = tokio::task::spawn_blocking(move || {
            if let Some(handle) = housekeeping {
                let _ = handle.join();
            }
            if let Some(log) = &log {
                log.close().map_err(|e| SinkError::Io(e.to_string()))?;
                states
                    .set_replay_from(log.replay_point(), false)
                    .map_err(|e| SinkError::Io(e.to_string()))?;
            }
            states.close().map_err(|e| SinkError::Io(e.to_string()))
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

/// Starts the housekeeping thread: the replay point written to the reader-state store every
/// second; every ten, idle rate-limit keys forgotten and the log writer nudged to apply the
/// dead letters' retention. It runs until its sender is dropped.
fn housekeeping(
    log: Option<Arc<EventLog>>,
    states: Arc<ReaderStates>,
    limiter: Arc<RateLimiter>,
) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let work = move || {
        let mut last_sweep = Instant::now();
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
            if let Some(log) = &log
                && let Err(e) = states.set_replay_from(log.replay_point(), false)
            {
                tracing::warn!(error = %e, "cannot record the replay point");
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                limiter.sweep();
                if let Some(log) = &log {
                    log.nudge();
                }
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

/// Replays the events appended since the replay point into reader state.
fn replay(log: &EventLog, states: &ReaderStates, decider: &Decider) -> Result<(), OpenError> {
    let state_error = |e: &dyn std::fmt::Display| OpenError::State(e.to_string());
    let from = states.replay_from().map_err(|e| state_error(&e))?;
    let now = now_ms();
    let (mut replayed, mut next) = (0u64, from);
    for stored in log.events_from(from) {
        let stored = stored?;
        let record = stored.record()?;
        decider
            .replay(&record.reader, &record.event, record.time, now)
            .map_err(|e| state_error(&format!("replay: {e}")))?;
        replayed += 1;
        next = stored.seq + 1;
    }
    if replayed > 0 {
        states
            .set_replay_from(next, true)
            .map_err(|e| state_error(&e))?;
        tracing::info!(
            events = replayed,
            from,
            "replayed the log into reader state"
        );
    }
    Ok(())
}

/// The embedded log's sizes and retention, from `[dead_letters]`.
fn log_settings(config: &Config) -> LogSettings {
    let defaults = LogSettings::default();
    let dead = &config.dead_letters;
    LogSettings {
        dead_max_bytes: dead.max_bytes,
        dead_segment_bytes: defaults
            .dead_segment_bytes
            .min(dead.max_bytes / 8)
            .max(64 * 1024),
        dead_retention: Duration::from_secs(u64::from(dead.retention_hours) * 3600),
        ..defaults
    }
}
