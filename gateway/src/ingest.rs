//! The ingest path, the same for every listener: decode, check, append durably, decide.
//! Admission (site key, origin) happens before the body is read; see [`Gateway::admit`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pulse_protocol::{
    Action, BatchError, CollectResponse, DeadLetter, Decision, ErrorCode, Event, EventRecord,
    parse_batch,
};
use pulse_scorer::Scorer;

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
    scorer: Arc<Scorer<Arc<EmbeddedStore>>>,
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
    /// Opens the store in `config.server.data`, and brings reader state up to date with the log
    /// (events appended before a crash but not yet applied are replayed).
    pub fn open(config: Config) -> Result<Self, SinkError> {
        let store = Arc::new(EmbeddedStore::open(&config.server.data)?);
        let scorer = Arc::new(Scorer::new(Arc::clone(&store), config.meter.clone()));
        let from = store.replay_from()?;
        let now = now_ms();
        let (mut replayed, mut next) = (0u64, from);
        for stored in store.events_from(from) {
            let stored = stored?;
            let r = &stored.record;
            scorer
                .replay(&r.reader, &[(&r.event, r.time)], now)
                .map_err(|e| SinkError::Io(format!("replay: {e}")))?;
            replayed += 1;
            next = stored.seq + 1;
        }
        if replayed > 0 {
            store.set_replay_from(next)?;
            tracing::info!(
                events = replayed,
                from,
                "replayed the log into reader state"
            );
        }
        let sink = sink::open(&config, &store)?;
        let config_limits = config.rate_limits.clone();
        Ok(Self {
            sites: std::sync::RwLock::new(Arc::new(Sites::new(&config.sites))),
            config,
            store,
            sink,
            scorer,
            metrics: Metrics::default(),
            limiter: RateLimiter::new(&config_limits),
        })
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

    /// Replaces the meter rules for every decision from now on.
    pub fn set_rules(
        &self,
        rules: pulse_scorer::MeterRules,
    ) -> Result<(), pulse_scorer::ScoreError> {
        self.scorer.set_rules(rules)
    }

    /// The log accepted events are appended to.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// Flushes the log and closes the store; call once the listeners have stopped.
    pub async fn close(&self) -> Result<(), SinkError> {
        self.sink.close().await?;
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
        let decision = self.decide(reader, timed, receipt.applied, now).await;
        Ok(CollectResponse {
            accepted: receipt.events as u32,
            rejected: parsed.rejected.into_iter().map(|(r, _)| r).collect(),
            decision,
        })
    }

    /// Applies the events to the reader's state and decides, within the decision deadline; past
    /// it, answers the safe fallback while the scorer finishes in the background.
    async fn decide<G: Send + 'static>(
        &self,
        reader: String,
        timed: Vec<(Event, u64)>,
        guard: G,
        now: u64,
    ) -> Decision {
        let scorer = Arc::clone(&self.scorer);
        let task = tokio::task::spawn_blocking(move || {
            let refs: Vec<_> = timed.iter().map(|(e, t)| (e, *t)).collect();
            let decision = scorer.score(&reader, &refs, now);
            drop(guard); // applied: the replay point may move past these events
            decision
        });
        let version = self.scorer.rules().map(|r| r.version()).unwrap_or_default();
        let started = std::time::Instant::now();
        let decided =
            tokio::time::timeout(self.config.limits.decision_deadline_ms.get(), task).await;
        self.metrics.decision_latency.observe(started.elapsed());
        match decided {
            Ok(Ok(Ok(decision))) => return decision,
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "scorer failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "scorer task failed"),
            Err(_) => tracing::warn!("scorer missed its deadline"),
        }
        self.metrics.fallback();
        Decision {
            action: Action::Allow,
            remaining: None,
            limit: None,
            reason: "fallback".into(),
            fallback: true,
            version,
        }
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
