//! Everything the gateway counts, kept in a registry of the Prometheus project's Rust client
//! (`prometheus-client`) and rendered at `GET /metrics` on the admin listener.
//!
//! Names follow the Prometheus conventions: `pulse_<component>_<what>_<unit>`, counters end in
//! `_total`, latencies are `..._duration_seconds` histograms, requests carry a `handler` label
//! (collect is not mixed with static files and probes), errors a `reason`. What is only known
//! when scraped (the scorer's engine, the process, queue depths, store sizes) is read then, as a
//! [`Snapshot`]. Hot-path updates are atomic adds; labelled families of open sets (requests by
//! status, decisions by rule) take their family's read lock once per update.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use pulse_http::Protocol;
use pulse_protocol::{Action, ErrorCode, RateLimit, RejectReason};

mod format;
mod labels;
mod process;
mod scorer;
mod scraped;
mod snapshot;

pub use format::Format;
pub use labels::{AUTH_RESULTS, Handler};
use labels::{
    BuildLabels, DecisionLabels, HandlerLabel, LimitLabel, ReasonLabel, RequestLabels, ResultLabel,
    ShadowLabels, SourceLabel, status_label,
};
pub(crate) use scorer::scorer_series;
pub(crate) use scraped::{Scraped, gateway_series};
pub use snapshot::Snapshot;

/// Upper bounds of the latency buckets, in seconds: fine below 10 ms, where the targets are.
const BUCKETS: [f64; 22] = [
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A latency histogram (seconds, the fixed buckets above).
#[derive(Debug, Clone)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(latency_histogram())
    }
}

impl Latency {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<HandlerLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    rate_limited: Family<LimitLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    auth: Family<ResultLabel, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    shadow: Family<ShadowLabels, Counter>,
    /// Time to make a batch durable in the sink, queueing for the log writer included.
    pub sink_latency: Latency,
    /// Time for the scorer's decision (including fallbacks at the deadline).
    pub decision_latency: Latency,
    /// Time of one group commit of the embedded log (write and sync).
    pub log_commit_latency: Latency,
    /// Time a batch waits in the log writer's queue before its group commit starts.
    pub log_queue_latency: Latency,
    log_commits: Counter,
    log_committed_requests: Counter,
    events_accepted: Counter,
    resent_duplicates: Counter,
    batches_accepted: Counter,
    dead_letters: Counter,
    dead_letter_bytes: Counter,
    dead_letters_stored: Gauge,
    dead_letter_store_bytes: Gauge,
    dead_letters_evicted: Counter,
    dead_letter_bytes_evicted: Counter,
    events_evicted: Counter,
    event_bytes_evicted: Counter,
    bytes_received: Counter,
    bytes_decoded: Counter,
    fallback_decisions: Counter,
    signed_decisions: Counter,
    signatures_reused: Counter,
    server_decisions: Counter,
    decisions_logged: Counter,
    decisions_dropped: Counter,
    decisions_evicted: Counter,
    decision_log_store_bytes: Gauge,
    decision_log_store_records: Gauge,
    reload_ok: Gauge,
    restored: Family<SourceLabel, Gauge>,
    restore_time: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    reload_time: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request in flight until dropped (`pulse_gateway_in_flight_requests`).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Every series registered, the enumerable ones at zero (so rates exist before the first
    /// event of a kind).
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::default();
        r.register(
            "pulse_gateway_requests",
            "Requests answered, by handler, protocol and status",
            Family::clone(&requests),
        );
        let request_duration: Family<HandlerLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        r.register_with_unit(
            "pulse_gateway_request_duration",
            "Time to answer a request, from its head to its answer, by handler",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        r.register(
            "pulse_gateway_in_flight_requests",
            "Requests being answered now",
            in_flight.clone(),
        );
        let labelled = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<ReasonLabel, Counter>::default();
            r.register(name, help, f.clone());
            f
        };
        let errors = labelled(
            &mut r,
            "pulse_gateway_errors",
            "Requests refused, by machine-readable reason",
        );
        for c in ErrorCode::ALL {
            drop(errors.get_or_create(&ReasonLabel { reason: c.as_str() }));
        }
        let rejected = labelled(
            &mut r,
            "pulse_gateway_events_rejected",
            "Events rejected, by reason",
        );
        for c in RejectReason::ALL {
            drop(rejected.get_or_create(&ReasonLabel { reason: c.as_str() }));
        }
        let rate_limited = Family::<LimitLabel, Counter>::default();
        r.register(
            "pulse_gateway_rate_limited",
            "Requests refused by a rate limit, by limit",
            rate_limited.clone(),
        );
        for l in RateLimit::ALL {
            drop(rate_limited.get_or_create(&LimitLabel { limit: l.as_str() }));
        }
        let auth = Family::<ResultLabel, Counter>::default();
        r.register(
            "pulse_gateway_auth",
            "Batches of sites with token keys, by what their auth token became",
            auth.clone(),
        );
        for result in AUTH_RESULTS {
            drop(auth.get_or_create(&ResultLabel { result }));
        }
        let decisions = Family::<DecisionLabels, Counter>::default();
        r.register(
            "pulse_scorer_decisions",
            "Decisions answered to pages (fallbacks included), by action and the rule that decided",
            decisions.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        r.register(
            "pulse_scorer_shadow_decisions",
            "Decisions of the shadow bundle beside the active one's, by their actions (pairs seen)",
            shadow.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        r.register(
            "pulse_build_info",
            "The gateway's version (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let mut latency = |name: &str, help: &str| {
            let l = Latency::default();
            r.register_with_unit(name, help, Unit::Seconds, l.0.clone());
            l
        };
        let sink_latency = latency(
            "pulse_gateway_sink_duration",
            "Time to make a batch durable in the sink, queueing included",
        );
        let log_queue_latency = latency(
            "pulse_gateway_log_queue_duration",
            "Time a batch waits for the log writer before its group commit starts",
        );
        let log_commit_latency = latency(
            "pulse_gateway_log_commit_duration",
            "Time of one group commit of the embedded log (write and fdatasync)",
        );
        let decision_latency = latency(
            "pulse_gateway_decision_duration",
            "Time to decide, fallbacks included",
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let events_accepted = counter(
            "pulse_gateway_events_accepted",
            "Events accepted and durable",
        );
        let resent_duplicates = counter(
            "pulse_gateway_resent_duplicate_events",
            "Events of resent batches that reader state already held: acknowledged, not stored again",
        );
        let batches_accepted = counter("pulse_gateway_batches_accepted", "Batches answered 200");
        let dead_letters = counter("pulse_gateway_dead_letters", "Dead letters written");
        let dead_letter_bytes = counter(
            "pulse_gateway_dead_letter_bytes",
            "Bytes of dead letters written (what they take in the store, counted against site_bytes)",
        );
        let dead_letters_evicted = counter(
            "pulse_gateway_dead_letters_evicted",
            "Dead letters deleted by dead_letters.max_bytes or retention_hours",
        );
        let dead_letter_bytes_evicted = counter(
            "pulse_gateway_dead_letter_evicted_bytes",
            "Bytes of dead letters deleted by the cap or the retention",
        );
        let events_evicted = counter(
            "pulse_gateway_events_evicted",
            "Events deleted from the embedded event log by event_log.max_bytes or retention_hours (only events already in stored reader state)",
        );
        let event_bytes_evicted = counter(
            "pulse_gateway_event_evicted_bytes",
            "Bytes of events deleted by the event log's cap or retention",
        );
        let log_commits = counter(
            "pulse_gateway_log_commits",
            "Group commits of the embedded log",
        );
        let log_committed_requests = counter(
            "pulse_gateway_log_committed_requests",
            "Requests made durable by those commits",
        );
        let bytes_received = counter("pulse_gateway_received_bytes", "Body bytes as received");
        let bytes_decoded = counter("pulse_gateway_decoded_bytes", "Body bytes after decoding");
        let fallback_decisions = counter(
            "pulse_gateway_fallback_decisions",
            "Decisions that fell back (the scorer missed its deadline or failed)",
        );
        let signed_decisions = counter(
            "pulse_gateway_signed_decisions",
            "Decisions signed for the publisher's server",
        );
        let signatures_reused = counter(
            "pulse_gateway_signatures_reused",
            "Signed decisions that reused the signature of the same decision given to the same reader less than a minute before",
        );
        let server_decisions = counter(
            "pulse_gateway_server_decisions",
            "Decisions asked for by publishers' servers (POST /v1/decide)",
        );
        let decisions_logged = counter(
            "pulse_gateway_decisions_logged",
            "Decisions written to the decision log (embedded) or delivered to its topic (Kafka)",
        );
        let decisions_dropped = counter(
            "pulse_gateway_decisions_dropped",
            "Decisions not logged: the decision log's queue was full, or writing or delivering failed",
        );
        let decisions_evicted = counter(
            "pulse_gateway_decisions_evicted",
            "Decisions deleted by decision_log.max_bytes or retention_hours",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let dead_letter_store_bytes = gauge(
            "pulse_gateway_dead_letter_store_bytes",
            "Bytes the embedded dead-letter store holds on disk (compressed)",
        );
        let dead_letters_stored = gauge(
            "pulse_gateway_dead_letter_store_records",
            "Dead letters the embedded dead-letter store holds",
        );
        let decision_log_store_bytes = gauge(
            "pulse_gateway_decision_log_store_bytes",
            "Bytes the embedded decision log holds on disk (compressed)",
        );
        let decision_log_store_records = gauge(
            "pulse_gateway_decision_log_store_records",
            "Decisions the embedded decision log holds",
        );
        let reload_ok = gauge(
            "pulse_gateway_config_last_reload_successful",
            "Whether the last configuration load or reload (start, SIGHUP, POST /admin/reload) succeeded",
        );
        reload_ok.set(1);
        let reload_time = Gauge::<f64, AtomicU64>::default();
        r.register(
            "pulse_gateway_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded or reloaded successfully (Unix time)",
            reload_time.clone(),
        );
        reload_time.set(unix_now());
        let restored = Family::<SourceLabel, Gauge>::default();
        r.register(
            "pulse_gateway_restored_records",
            "Kafka mode, at the last start: reader states read from the state changelog (source=changelog), events applied from the events topic (source=events)",
            restored.clone(),
        );
        let restore_time = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "pulse_gateway_restore_duration_seconds",
            "Kafka mode, at the last start: time to restore from the state changelog or to bring state up to date from the events topic",
            restore_time.clone(),
        );
        Self {
            registry: r,
            requests,
            request_duration,
            in_flight,
            rate_limited,
            errors,
            rejected,
            auth,
            decisions,
            shadow,
            sink_latency,
            decision_latency,
            log_commit_latency,
            log_queue_latency,
            log_commits,
            log_committed_requests,
            events_accepted,
            resent_duplicates,
            batches_accepted,
            dead_letters,
            dead_letter_bytes,
            dead_letters_stored,
            dead_letter_store_bytes,
            dead_letters_evicted,
            dead_letter_bytes_evicted,
            events_evicted,
            event_bytes_evicted,
            bytes_received,
            bytes_decoded,
            fallback_decisions,
            signed_decisions,
            signatures_reused,
            server_decisions,
            decisions_logged,
            decisions_dropped,
            decisions_evicted,
            decision_log_store_bytes,
            decision_log_store_records,
            reload_ok,
            reload_time,
            restored,
            restore_time,
        }
    }

    /// A request is being answered until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Counts an answered request by handler, protocol and status, and how long it took.
    pub fn request(&self, handler: Handler, protocol: Protocol, status: u16, took: Duration) {
        self.count(handler, protocol, status);
        self.request_duration
            .get_or_create(&HandlerLabel {
                handler: handler.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts an answered request whose duration is not known (refused before it was routed).
    pub fn count(&self, handler: Handler, protocol: Protocol, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                handler: handler.as_str(),
                protocol: protocol.as_str(),
                status: status_label(status),
            })
            .inc();
    }

    /// Requests answered over `protocol`, any handler and status.
    pub fn requests_by(&self, protocol: Protocol) -> u64 {
        let text = self.render(Snapshot::default(), Format::OpenMetrics);
        let needle = format!("protocol=\"{}\"", protocol.as_str());
        text.lines()
            .filter(|l| l.starts_with("pulse_gateway_requests_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Counts a request refused by the rate limit `limit`.
    pub fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// Counts a refused request by its reason.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: code.as_str(),
            })
            .inc();
    }

    /// The value of the error counter for `code`.
    pub fn error_count(&self, code: ErrorCode) -> u64 {
        self.errors
            .get(&ReasonLabel {
                reason: code.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    /// Counts a rejected event by its reason.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts an accepted batch and its events.
    pub fn accepted(&self, events: usize) {
        self.batches_accepted.inc();
        self.events_accepted.inc_by(events as u64);
    }

    /// Counts the events of resent batches that were not stored again.
    pub fn resent_duplicates(&self, events: usize) {
        self.resent_duplicates.inc_by(events as u64);
    }

    /// Counts dead letters written and the bytes they take.
    pub fn dead_letters(&self, n: usize, bytes: usize) {
        self.dead_letters.inc_by(n as u64);
        self.dead_letter_bytes.inc_by(bytes as u64);
    }

    /// What the embedded dead-letter store holds now.
    pub fn dead_letter_store(&self, bytes: u64, records: u64) {
        self.dead_letter_store_bytes.set(gauge_value(bytes));
        self.dead_letters_stored.set(gauge_value(records));
    }

    /// Events deleted by the event log's cap or retention.
    pub fn events_evicted(&self, records: u64, bytes: u64) {
        self.events_evicted.inc_by(records);
        self.event_bytes_evicted.inc_by(bytes);
    }

    /// Dead letters deleted by the size cap or the retention.
    pub fn dead_letters_evicted(&self, records: u64, bytes: u64) {
        self.dead_letters_evicted.inc_by(records);
        self.dead_letter_bytes_evicted.inc_by(bytes);
    }

    /// One group commit of the embedded log: its duration and how many requests it covered.
    pub fn log_commit(&self, took: Duration, requests: usize) {
        self.log_commit_latency.observe(took);
        self.log_commits.inc();
        self.log_committed_requests.inc_by(requests as u64);
    }

    /// Counts body bytes as received and after decoding.
    pub fn bytes(&self, received: usize, decoded: usize) {
        self.bytes_received.inc_by(received as u64);
        self.bytes_decoded.inc_by(decoded as u64);
    }

    /// Counts a batch's token result (one of [`AUTH_RESULTS`]).
    pub fn auth(&self, result: &str) {
        if let Some(result) = AUTH_RESULTS.iter().find(|r| **r == result) {
            self.auth.get_or_create(&ResultLabel { result }).inc();
        }
    }

    /// Counts a signed decision, and whether its signature was reused.
    pub fn signed(&self, reused: bool) {
        self.signed_decisions.inc();
        if reused {
            self.signatures_reused.inc();
        }
    }

    /// Counts a decision asked for by a publisher's server.
    pub fn server_decision(&self) {
        self.server_decisions.inc();
    }

    /// Counts a fallback decision (the scorer missed its deadline or failed).
    pub fn fallback(&self) {
        self.fallback_decisions.inc();
    }

    /// Counts a decision answered to a page, by its action and the rule that decided.
    pub fn decision(&self, action: Action, rule: Option<&str>) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: action.as_str(),
                rule: rule.map_or_else(|| "none".to_owned(), snapshot::escaped),
            })
            .inc();
    }

    /// Counts a decision of the shadow bundle beside the active one's, by their actions.
    pub fn shadow_pair(&self, active: Action, shadow: Action) {
        self.shadow
            .get_or_create(&ShadowLabels {
                active: active.as_str(),
                shadow: shadow.as_str(),
            })
            .inc();
    }

    /// Shadow comparisons so far: `(active, shadow, count)` for every pair seen.
    pub fn shadow_pairs(&self) -> Vec<(Action, Action, u64)> {
        let mut out = Vec::new();
        for a in Action::ALL {
            for s in Action::ALL {
                let labels = ShadowLabels {
                    active: a.as_str(),
                    shadow: s.as_str(),
                };
                if let Some(n) = self.shadow.get(&labels).map(|c| c.get()) {
                    out.push((a, s, n));
                }
            }
        }
        out
    }

    /// Decisions written to the decision log (or delivered to its topic).
    pub fn decisions_logged(&self, n: u64) {
        self.decisions_logged.inc_by(n);
    }

    /// Decisions dropped: the decision log's queue was full, or writing or delivering failed.
    pub fn decisions_dropped(&self, n: u64) {
        self.decisions_dropped.inc_by(n);
    }

    /// Decisions deleted by the decision log's size cap or retention.
    pub fn decisions_evicted(&self, n: u64) {
        self.decisions_evicted.inc_by(n);
    }

    /// What the embedded decision log holds now.
    pub fn decision_log_store(&self, bytes: u64, records: u64) {
        self.decision_log_store_bytes.set(gauge_value(bytes));
        self.decision_log_store_records.set(gauge_value(records));
    }

    /// Reader states restored from the state changelog at start, and the time it took.
    pub fn restored_states(&self, states: u64, took: Duration) {
        self.restore("changelog", states, took);
    }

    /// Events applied from the events topic at start, and the time it took.
    pub fn restored_events(&self, events: u64, took: Duration) {
        self.restore("events", events, took);
    }

    fn restore(&self, source: &'static str, n: u64, took: Duration) {
        let label = SourceLabel { source };
        self.restored.get_or_create(&label).set(gauge_value(n));
        self.restore_time
            .get_or_create(&label)
            .set(took.as_secs_f64());
    }

    /// The outcome of a configuration reload (SIGHUP or `POST /admin/reload`).
    pub fn config_reload(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_time.set(unix_now());
        }
    }

    /// The registered series in the text format (what tests read; `/metrics` adds what is
    /// read at scrape time).
    pub fn text(&self) -> String {
        self.render(Snapshot::default(), Format::Text)
    }

    /// The exposition of every series, then `scraped` (what is read at scrape time), in
    /// `format`.
    pub fn render(&self, scraped: Snapshot, format: Format) -> String {
        let mut out = String::with_capacity(32 * 1024);
        let mut at_scrape = Registry::default();
        at_scrape.register_collector(Box::new(scraped));
        let written = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &at_scrape))
            .and_then(|()| encode_eof(&mut out));
        if let Err(e) = written {
            // Writing to a String cannot fail; say so if it ever does rather than panic.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        format.finish(out)
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
