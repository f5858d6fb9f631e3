//! The ingest path, the same for every listener: decode into a reused buffer, parse once into
//! views of it, build each record once (the batch's envelope and the event as received),
//! append durably, decide. Admission (site key, origin, per-address and body-size limits)
//! happens before the body is read, in `routes`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pulse_http::{ApiError, decode};
use pulse_protocol::{CollectResponse, ErrorCode, RecordPrefix, parse_batch};

use crate::admit::Trust;
use crate::config::Limits;
use crate::decide::Decider;
use crate::decisions::DecisionLog;
use crate::metrics::Metrics;
use crate::pool::BufPool;
use crate::ratelimit::RateLimiter;
use crate::signing::DecisionSigner;
use crate::sink::{Records, Sink, SinkBatch};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The ingest path: the sink, the scorer and what they share.
#[derive(Debug)]
pub struct Ingest {
    limits: Limits,
    sink: Arc<dyn Sink>,
    decisions: Arc<DecisionLog>,
    decider: Arc<Decider>,
    metrics: Arc<Metrics>,
    pool: Arc<BufPool>,
    signer: Option<Arc<DecisionSigner>>,
    /// Event ids on their way to reader state (for resent batches).
    inflight: crate::inflight::InFlight,
    /// Gaps in sessions' batch numbers (a single process: every batch of a reader comes here).
    gaps: Option<Arc<crate::gaps::SeqGaps>>,
    /// The sites' dictionaries for compact bodies.
    dictionaries: Option<Arc<crate::dictionary::Dictionaries>>,
}

/// A pooled buffer, given back when dropped.
struct Pooled<'a> {
    buf: Vec<u8>,
    pool: &'a BufPool,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl Ingest {
    pub(crate) fn new(
        limits: Limits,
        sink: Arc<dyn Sink>,
        decisions: Arc<DecisionLog>,
        decider: Arc<Decider>,
        metrics: Arc<Metrics>,
        pool: Arc<BufPool>,
        signer: Option<Arc<DecisionSigner>>,
    ) -> Self {
        Self {
            limits,
            sink,
            decisions,
            decider,
            metrics,
            pool,
            signer,
            inflight: crate::inflight::InFlight::default(),
            gaps: None,
            dictionaries: None,
        }
    }

    /// Inflates compact bodies against the sites' dictionaries, and trains them.
    pub(crate) fn with_dictionaries(
        mut self,
        dictionaries: Arc<crate::dictionary::Dictionaries>,
    ) -> Self {
        self.dictionaries = Some(dictionaries);
        self
    }

    /// Counts gaps in sessions' batch numbers here (a single process).
    pub(crate) fn with_gaps(mut self, gaps: Option<Arc<crate::gaps::SeqGaps>>) -> Self {
        self.gaps = gaps;
        self
    }

    /// The key decisions are signed with (none when signing is off).
    pub fn signer(&self) -> Option<&Arc<DecisionSigner>> {
        self.signer.as_ref()
    }

    /// The scorer.
    pub fn decider(&self) -> &Arc<Decider> {
        &self.decider
    }

    /// The log accepted events are appended to.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// The decision log.
    pub(crate) fn decisions(&self) -> &Arc<DecisionLog> {
        &self.decisions
    }

    /// Ingests one admitted batch body for `site`: decode, check, append durably, decide.
    pub async fn ingest(
        &self,
        site: &Arc<str>,
        body: &[u8],
        content_encoding: Option<&str>,
        limiter: &RateLimiter,
        trust: &Trust,
        mut request: pulse_scorer::Request,
    ) -> Result<CollectResponse, ApiError> {
        let now = now_ms();
        let mut decoded = Pooled {
            buf: self.pool.take(),
            pool: &self.pool,
        };
        let dictionaries = self.dictionaries.as_ref();
        let json = match decode(
            body,
            content_encoding,
            self.limits.max_decoded_bytes,
            &mut decoded.buf,
            |hash| dictionaries.and_then(|d| d.get(site, hash)),
        ) {
            Ok(json) => json,
            Err(e) => {
                let err = ApiError::new(e.code(), e.to_string());
                return Err(self.refuse_batch(site, err, now, body, limiter).await);
            }
        };
        self.metrics.bytes(body.len(), json.len());
        let mut parsed = match parse_batch(json, now) {
            Ok(parsed) => parsed,
            Err(e) => {
                let err = ApiError::from(e);
                return Err(self.refuse_batch(site, err, now, json, limiter).await);
            }
        };
        let auth = self.vouch(&mut parsed.header, trust, now, &mut request);
        let header = &parsed.header;
        if header.site_key != **site {
            return Err(ApiError::new(
                ErrorCode::SiteKeyMismatch,
                "the batch's site_key differs from ?k=",
            ));
        }
        if let Err(limited) = limiter.check_events(site, parsed.accepted.len()) {
            self.metrics.rate_limited(limited.limit);
            return Err(ApiError::rate_limited(limited.limit, limited.retry_after));
        }
        // A batch sent again (a retry, or one an earlier page parked and that may have been
        // delivered as the page went): the events reader state already holds are acknowledged
        // without being stored twice.
        let mut duplicates = 0;
        if header.resent {
            // Its first send may still be on its way to reader state: that one first.
            let ids: Vec<u128> = parsed.accepted.iter().map(|e| e.id.0).collect();
            let wait = self.limits.store_deadline_ms.get();
            if !self.inflight.wait_clear(&ids, wait).await {
                tracing::debug!("a resent batch's first send is still in flight");
            }
            let held = self
                .decider
                .holds(header.reader_key(), &parsed.accepted)
                .await;
            let mut i = 0;
            parsed.accepted.retain(|_| {
                let keep = !held.get(i).copied().unwrap_or(false);
                i += 1;
                keep
            });
            duplicates = held.iter().filter(|h| **h).count();
            self.metrics.resent_duplicates(duplicates);
        }
        let header = &parsed.header;
        // In flight until reader state holds them (or this request fails).
        let _in_flight = self
            .inflight
            .enter(parsed.accepted.iter().map(|e| e.id.0).collect());
        let prefix = RecordPrefix::new(site, header, now);
        let mut events = Records::with_buffer(self.pool.take());
        for view in &parsed.accepted {
            events.push_event(&prefix, view);
        }
        let mut dead_letters = Records::with_buffer(self.pool.take());
        let mut dead_bytes = 0;
        for (rejection, raw) in &parsed.rejected {
            dead_bytes += dead_letters.push_dead_letter(
                site,
                rejection.reason.as_str(),
                Some(rejection.index),
                now,
                raw.as_bytes(),
            );
        }
        // What dead letters take in the store counts against the site's byte limit.
        if dead_bytes > 0
            && let Err(limited) = limiter.check_bytes(site, dead_bytes)
        {
            self.metrics.rate_limited(limited.limit);
            return Err(ApiError::rate_limited(limited.limit, limited.retry_after));
        }
        let n_dead = dead_letters.len();
        let batch = SinkBatch {
            site: site.to_string(),
            reader: header.reader_key().to_owned(),
            received_at: now,
            events,
            dead_letters,
        };
        let receipt = self.append(site, batch).await?;
        let stored = receipt.events;
        if let Some(gaps) = self.gaps.as_ref().filter(|_| stored + duplicates > 0) {
            gaps.observe(
                site,
                &header.anonymous_id,
                &header.session_id,
                header.seq,
                now,
            );
        }
        // A tracker's body: sampled for the site's dictionary, and told of a newer one.
        let compact = pulse_protocol::compact::body_dictionary(body);
        let dictionary = match (dictionaries, compact) {
            (Some(d), Some(used)) => {
                d.sample(site, header, &parsed.accepted, now);
                d.newer_than(site, used)
            }
            _ => None,
        };
        self.metrics.accepted(stored);
        self.metrics.dead_letters(n_dead, dead_bytes);
        for (r, _) in &parsed.rejected {
            self.metrics.rejected(r.reason);
        }
        let decided = self
            .decider
            .decide(
                site,
                header.reader_key(),
                &parsed.accepted,
                receipt,
                now,
                request,
            )
            .await;
        if !decided.late.is_empty() {
            self.dead_letter_late(site, &parsed.accepted, &decided.late, now);
        }
        // Never waits: queued for the log writer (or the producer), or dropped and counted.
        self.decisions
            .record(site, header.reader_key(), now, &decided);
        let signed = match &self.signer {
            Some(signer) if trust.sign => {
                let signed = signer.sign(site, header.reader_key(), &decided.decision, now / 1000);
                self.metrics.signed(signed.reused);
                Some(signed.token)
            }
            _ => None,
        };
        Ok(CollectResponse {
            accepted: (stored + duplicates) as u32,
            rejected: parsed.rejected.into_iter().map(|(r, _)| r).collect(),
            decision: decided.decision,
            signed,
            auth,
            dictionary,
        })
    }

    /// On a site with token keys, lets only a valid token vouch for the batch's user id and
    /// entitlements: the header's user id becomes the token's `sub` (none without a valid
    /// token: the batch counts under its anonymous id) and `request.entitled` the token's
    /// entitlements. Returns what became of the token (`valid` or why not), for the answer;
    /// `None` on sites without keys, and for anonymous batches without a token.
    fn vouch(
        &self,
        header: &mut pulse_protocol::HeaderView<'_>,
        trust: &Trust,
        now: u64,
        request: &mut pulse_scorer::Request,
    ) -> Option<String> {
        let keys = trust.tokens.as_ref()?;
        let result = match header.auth.as_deref() {
            None if header.user_id.is_none() => return None,
            None => "token_missing",
            Some(token) => match keys.verify(token, now / 1000) {
                Ok(vouched) => {
                    header.user_id = vouched.user.map(std::borrow::Cow::Owned);
                    request.entitled = vouched.entitled;
                    self.metrics.auth("valid");
                    return Some("valid".to_owned());
                }
                Err(e) => e.reason(),
            },
        };
        header.user_id = None;
        self.metrics.auth(result);
        Some(result.to_owned())
    }

    /// Writes dead letters for events stored but not applied (too late, or past dedupe's bound),
    /// in the background: the page's answer does not wait for them. They are in the log all the
    /// same.
    fn dead_letter_late(
        &self,
        site: &Arc<str>,
        events: &[pulse_protocol::EventView<'_>],
        late: &[(usize, pulse_scorer::Outcome)],
        now: u64,
    ) {
        let mut dead_letters = Records::with_buffer(self.pool.take());
        let mut bytes = 0;
        for (i, why) in late {
            if let Some(view) = events.get(*i) {
                bytes += dead_letters.push_dead_letter(
                    site,
                    why.as_str(),
                    None,
                    now,
                    view.raw.as_bytes(),
                );
            }
        }
        let n = dead_letters.len();
        let batch = SinkBatch {
            site: site.to_string(),
            reader: String::new(),
            received_at: now,
            events: Records::default(),
            dead_letters,
        };
        let sink = Arc::clone(&self.sink);
        let deadline = self.limits.store_deadline_ms.get();
        let site = site.to_string();
        tokio::spawn(async move {
            match tokio::time::timeout(deadline, sink.append(batch)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(site, error = %e, "late events' dead letters not stored");
                }
                Err(_) => tracing::error!(site, "late events' dead letters missed their deadline"),
            }
        });
        self.metrics.dead_letters(n, bytes);
    }

    /// Appends within the store deadline; a miss or a failure is a 503.
    async fn append(&self, site: &str, batch: SinkBatch) -> Result<crate::sink::Receipt, ApiError> {
        let started = Instant::now();
        let appended =
            tokio::time::timeout(self.limits.store_deadline_ms.get(), self.sink.append(batch))
                .await;
        self.metrics.sink_latency.observe(started.elapsed());
        match appended {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => {
                tracing::error!(site, error = %e, "append failed");
                Err(ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the events could not be stored; retry",
                ))
            }
            Err(_) => {
                tracing::warn!(site, "append missed its deadline");
                Err(ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the store is busy; retry",
                ))
            }
        }
    }

    /// Keeps the start of a refused batch of a known site, with its reason, as a dead letter,
    /// and returns the answer: `err`, or 429 when what the dead letter takes puts the site over
    /// its byte limit (then nothing is stored).
    async fn refuse_batch(
        &self,
        site: &Arc<str>,
        err: ApiError,
        now: u64,
        raw: &[u8],
        limiter: &RateLimiter,
    ) -> ApiError {
        let mut dead_letters = Records::with_buffer(self.pool.take());
        let bytes = dead_letters.push_dead_letter(site, err.code.as_str(), None, now, raw);
        if let Err(limited) = limiter.check_bytes(site, bytes) {
            self.metrics.rate_limited(limited.limit);
            self.pool.put(dead_letters.into_buffer());
            return ApiError::rate_limited(limited.limit, limited.retry_after);
        }
        let batch = SinkBatch {
            site: site.to_string(),
            reader: String::new(),
            received_at: now,
            events: Records::default(),
            dead_letters,
        };
        match tokio::time::timeout(self.limits.store_deadline_ms.get(), self.sink.append(batch))
            .await
        {
            Ok(Ok(_)) => self.metrics.dead_letters(1, bytes),
            Ok(Err(e)) => tracing::error!(%site, error = %e, "dead letter not stored"),
            Err(_) => tracing::error!(%site, "dead letter missed its deadline"),
        }
        err
    }
}
