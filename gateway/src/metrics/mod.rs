//! Counters and latency histograms of everything the gateway answers, rendered in the
//! Prometheus text format at `GET /metrics` on the admin listener. Names follow
//! `pulse_<component>_<what>_<unit>`. Every hot-path update is one atomic add: no locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pulse_http::Protocol;
use pulse_protocol::{Action, ErrorCode, RateLimit, RejectReason};

mod scorer;

pub(crate) use scorer::render_scorer;

/// Upper bounds of the latency buckets, in seconds: fine below 10 ms, where the targets are.
const BUCKETS: [f64; 22] = [
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The statuses counted per protocol; any other is counted as `other`.
/// 499 is a client that closed the connection or reset the stream before its body arrived.
const STATUSES: [u16; 18] = [
    200, 204, 304, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 431, 499, 500, 503, 0,
];

/// A latency histogram with fixed buckets (cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; Protocol::ALL.len()],
    rate_limited: [AtomicU64; RateLimit::ALL.len()],
    /// Time from a collect request's head to its answer (body, decode, log, decision).
    pub request_latency: Histogram,
    /// Time to make a batch durable in the sink, queueing for the log writer included.
    pub sink_latency: Histogram,
    /// Time for the scorer's decision (including fallbacks at the deadline).
    pub decision_latency: Histogram,
    /// Time of one group commit of the embedded log (write and sync).
    pub log_commit_latency: Histogram,
    /// Time a batch waits in the log writer's queue before its group commit starts.
    pub log_queue_latency: Histogram,
    log_commits: AtomicU64,
    log_committed_requests: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    events_accepted: AtomicU64,
    batches_accepted: AtomicU64,
    dead_letters: AtomicU64,
    dead_letter_bytes: AtomicU64,
    dead_letters_stored: AtomicU64,
    dead_letter_store_bytes: AtomicU64,
    dead_letters_evicted: AtomicU64,
    dead_letter_bytes_evicted: AtomicU64,
    events_evicted: AtomicU64,
    event_bytes_evicted: AtomicU64,
    bytes_received: AtomicU64,
    bytes_decoded: AtomicU64,
    fallback_decisions: AtomicU64,
    /// Batches by what their `auth` token became: `valid`, `missing`, each token error.
    auth: [AtomicU64; AUTH_RESULTS.len()],
    signed_decisions: AtomicU64,
    server_decisions: AtomicU64,
    decisions: [AtomicU64; Action::ALL.len()],
    decisions_logged: AtomicU64,
    decisions_dropped: AtomicU64,
    decisions_evicted: AtomicU64,
    decision_log_store_bytes: AtomicU64,
    decision_log_store_records: AtomicU64,
    /// Decisions of the active bundle (row) and the shadow (column), by action.
    shadow: [[AtomicU64; Action::ALL.len()]; Action::ALL.len()],
}

/// What a batch's token can become, in `pulse_gateway_auth_total{result}`.
pub const AUTH_RESULTS: [&str; 11] = [
    "valid",
    "token_missing",
    "token_too_large",
    "token_malformed",
    "token_algorithm",
    "token_unknown_key",
    "token_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_audience",
    "token_claims",
];

fn index<T: PartialEq>(all: &[T], item: &T) -> Option<usize> {
    all.iter().position(|x| x == item)
}

impl Metrics {
    /// Counts an answered request by protocol and status.
    pub fn request(&self, protocol: Protocol, status: u16) {
        let p = index(&Protocol::ALL, &protocol).unwrap_or(0);
        let s = index(&STATUSES, &status).unwrap_or(STATUSES.len() - 1);
        self.requests[p][s].fetch_add(1, Relaxed);
    }

    /// Counts a request refused by the rate limit `limit`.
    pub fn rate_limited(&self, limit: RateLimit) {
        if let Some(i) = index(&RateLimit::ALL, &limit) {
            self.rate_limited[i].fetch_add(1, Relaxed);
        }
    }

    /// Requests answered over `protocol`, any status.
    pub fn requests_by(&self, protocol: Protocol) -> u64 {
        let p = index(&Protocol::ALL, &protocol).unwrap_or(0);
        self.requests[p].iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Counts a refused request by its code.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = index(&ErrorCode::ALL, &code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a rejected event by its reason.
    pub fn rejected(&self, reason: RejectReason) {
        if let Some(i) = index(&RejectReason::ALL, &reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts an accepted batch and its events.
    pub fn accepted(&self, events: usize) {
        self.batches_accepted.fetch_add(1, Relaxed);
        self.events_accepted.fetch_add(events as u64, Relaxed);
    }

    /// Counts dead letters written and the bytes they take.
    pub fn dead_letters(&self, n: usize, bytes: usize) {
        self.dead_letters.fetch_add(n as u64, Relaxed);
        self.dead_letter_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// What the embedded dead-letter store holds now.
    pub fn dead_letter_store(&self, bytes: u64, records: u64) {
        self.dead_letter_store_bytes.store(bytes, Relaxed);
        self.dead_letters_stored.store(records, Relaxed);
    }

    /// Events deleted by the event log's cap or retention.
    pub fn events_evicted(&self, records: u64, bytes: u64) {
        self.events_evicted.fetch_add(records, Relaxed);
        self.event_bytes_evicted.fetch_add(bytes, Relaxed);
    }

    /// Dead letters deleted by the size cap or the retention.
    pub fn dead_letters_evicted(&self, records: u64, bytes: u64) {
        self.dead_letters_evicted.fetch_add(records, Relaxed);
        self.dead_letter_bytes_evicted.fetch_add(bytes, Relaxed);
    }

    /// One group commit of the embedded log: its duration and how many requests it covered.
    pub fn log_commit(&self, took: Duration, requests: usize) {
        self.log_commit_latency.observe(took);
        self.log_commits.fetch_add(1, Relaxed);
        self.log_committed_requests
            .fetch_add(requests as u64, Relaxed);
    }

    /// Counts body bytes as received and after decoding.
    pub fn bytes(&self, received: usize, decoded: usize) {
        self.bytes_received.fetch_add(received as u64, Relaxed);
        self.bytes_decoded.fetch_add(decoded as u64, Relaxed);
    }

    /// Counts a batch's token result (one of [`AUTH_RESULTS`]).
    pub fn auth(&self, result: &str) {
        if let Some(i) = AUTH_RESULTS.iter().position(|r| *r == result) {
            self.auth[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a signed decision.
    pub fn signed(&self) {
        self.signed_decisions.fetch_add(1, Relaxed);
    }

    /// Counts a decision asked for by a publisher's server.
    pub fn server_decision(&self) {
        self.server_decisions.fetch_add(1, Relaxed);
    }

    /// Counts a fallback decision (the scorer missed its deadline or failed).
    pub fn fallback(&self) {
        self.fallback_decisions.fetch_add(1, Relaxed);
    }

    /// Counts a decision answered to a page, by its action.
    pub fn decision(&self, action: Action) {
        if let Some(i) = index(&Action::ALL, &action) {
            self.decisions[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a decision of the shadow bundle beside the active one's, by their actions.
    pub fn shadow_pair(&self, active: Action, shadow: Action) {
        if let (Some(a), Some(s)) = (index(&Action::ALL, &active), index(&Action::ALL, &shadow)) {
            self.shadow[a][s].fetch_add(1, Relaxed);
        }
    }

    /// Shadow comparisons so far: `(active, shadow, count)` for every pair seen.
    pub fn shadow_pairs(&self) -> Vec<(Action, Action, u64)> {
        let mut out = Vec::new();
        for (a, row) in Action::ALL.iter().zip(&self.shadow) {
            for (s, n) in Action::ALL.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    out.push((*a, *s, n));
                }
            }
        }
        out
    }

    /// Decisions written to the decision log (or delivered to its topic).
    pub fn decisions_logged(&self, n: u64) {
        self.decisions_logged.fetch_add(n, Relaxed);
    }

    /// Decisions dropped: the decision log's queue was full, or writing or delivering failed.
    pub fn decisions_dropped(&self, n: u64) {
        self.decisions_dropped.fetch_add(n, Relaxed);
    }

    /// Decisions deleted by the decision log's size cap or retention.
    pub fn decisions_evicted(&self, n: u64) {
        self.decisions_evicted.fetch_add(n, Relaxed);
    }

    /// What the embedded decision log holds now.
    pub fn decision_log_store(&self, bytes: u64, records: u64) {
        self.decision_log_store_bytes.store(bytes, Relaxed);
        self.decision_log_store_records.store(records, Relaxed);
    }

    /// The value of the error counter for `code`.
    pub fn error_count(&self, code: ErrorCode) -> u64 {
        index(&ErrorCode::ALL, &code).map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut family = |kind: &str, name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let mut requests = Vec::new();
        for (p, row) in Protocol::ALL.iter().zip(&self.requests) {
            for (status, n) in STATUSES.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let status = match status {
                        0 => "other".to_owned(),
                        s => s.to_string(),
                    };
                    let labels = format!("{{protocol=\"{}\",status=\"{status}\"}}", p.as_str());
                    requests.push((labels, n));
                }
            }
        }
        family(
            "counter",
            "pulse_gateway_requests_total",
            "Requests answered, by protocol and status.",
            requests,
        );
        let labelled = |label: &str, names: Vec<&str>, values: &[AtomicU64]| {
            names
                .into_iter()
                .zip(values)
                .map(|(v, n)| (format!("{{{label}=\"{v}\"}}"), n.load(Relaxed)))
                .collect::<Vec<_>>()
        };
        family(
            "counter",
            "pulse_gateway_rate_limited_total",
            "Requests refused by a rate limit, by limit.",
            labelled(
                "limit",
                RateLimit::ALL.iter().map(|l| l.as_str()).collect(),
                &self.rate_limited,
            ),
        );
        family(
            "counter",
            "pulse_gateway_errors_total",
            "Requests refused, by machine-readable code.",
            labelled(
                "code",
                ErrorCode::ALL.iter().map(|c| c.as_str()).collect(),
                &self.errors,
            ),
        );
        family(
            "counter",
            "pulse_gateway_events_rejected_total",
            "Events rejected, by reason.",
            labelled(
                "reason",
                RejectReason::ALL.iter().map(|r| r.as_str()).collect(),
                &self.rejected,
            ),
        );
        family(
            "counter",
            "pulse_scorer_decisions_total",
            "Decisions answered to pages (fallbacks included), by action.",
            labelled(
                "action",
                Action::ALL.iter().map(|a| a.as_str()).collect(),
                &self.decisions,
            ),
        );
        family(
            "counter",
            "pulse_scorer_shadow_decisions_total",
            "Decisions of the shadow bundle beside the active one's, by their actions (pairs seen).",
            self.shadow_pairs()
                .into_iter()
                .map(|(a, s, n)| {
                    (
                        format!("{{active=\"{}\",shadow=\"{}\"}}", a.as_str(), s.as_str()),
                        n,
                    )
                })
                .collect(),
        );
        let plain = |n: &AtomicU64| vec![(String::new(), n.load(Relaxed))];
        for (kind, name, help, value) in [
            (
                "counter",
                "pulse_gateway_events_accepted_total",
                "Events accepted and durable.",
                &self.events_accepted,
            ),
            (
                "counter",
                "pulse_gateway_batches_accepted_total",
                "Batches answered 200.",
                &self.batches_accepted,
            ),
            (
                "counter",
                "pulse_gateway_dead_letters_total",
                "Dead letters written.",
                &self.dead_letters,
            ),
            (
                "counter",
                "pulse_gateway_dead_letter_bytes_total",
                "Bytes of dead letters written (what they take in the store, counted against site_bytes).",
                &self.dead_letter_bytes,
            ),
            (
                "gauge",
                "pulse_gateway_dead_letter_store_bytes",
                "Bytes the embedded dead-letter store holds on disk (compressed).",
                &self.dead_letter_store_bytes,
            ),
            (
                "gauge",
                "pulse_gateway_dead_letter_store_records",
                "Dead letters the embedded dead-letter store holds.",
                &self.dead_letters_stored,
            ),
            (
                "counter",
                "pulse_gateway_events_evicted_total",
                "Events deleted from the embedded event log by event_log.max_bytes or retention_hours (only events already in stored reader state).",
                &self.events_evicted,
            ),
            (
                "counter",
                "pulse_gateway_event_evicted_bytes_total",
                "Bytes of events deleted by the event log's cap or retention.",
                &self.event_bytes_evicted,
            ),
            (
                "counter",
                "pulse_gateway_dead_letters_evicted_total",
                "Dead letters deleted by dead_letters.max_bytes or retention_hours.",
                &self.dead_letters_evicted,
            ),
            (
                "counter",
                "pulse_gateway_dead_letter_evicted_bytes_total",
                "Bytes of dead letters deleted by the cap or the retention.",
                &self.dead_letter_bytes_evicted,
            ),
            (
                "counter",
                "pulse_gateway_log_commits_total",
                "Group commits of the embedded log.",
                &self.log_commits,
            ),
            (
                "counter",
                "pulse_gateway_log_committed_requests_total",
                "Requests made durable by those commits.",
                &self.log_committed_requests,
            ),
            (
                "counter",
                "pulse_gateway_received_bytes_total",
                "Body bytes as received.",
                &self.bytes_received,
            ),
            (
                "counter",
                "pulse_gateway_decoded_bytes_total",
                "Body bytes after decoding.",
                &self.bytes_decoded,
            ),
            (
                "counter",
                "pulse_gateway_fallback_decisions_total",
                "Decisions that fell back.",
                &self.fallback_decisions,
            ),
            (
                "counter",
                "pulse_gateway_signed_decisions_total",
                "Decisions signed for the publisher's server.",
                &self.signed_decisions,
            ),
            (
                "counter",
                "pulse_gateway_server_decisions_total",
                "Decisions asked for by publishers' servers (POST /v1/decide).",
                &self.server_decisions,
            ),
            (
                "counter",
                "pulse_gateway_decisions_logged_total",
                "Decisions written to the decision log (embedded) or delivered to its topic (Kafka).",
                &self.decisions_logged,
            ),
            (
                "counter",
                "pulse_gateway_decisions_dropped_total",
                "Decisions not logged: the decision log's queue was full, or writing or delivering failed.",
                &self.decisions_dropped,
            ),
            (
                "counter",
                "pulse_gateway_decisions_evicted_total",
                "Decisions deleted by decision_log.max_bytes or retention_hours.",
                &self.decisions_evicted,
            ),
            (
                "gauge",
                "pulse_gateway_decision_log_store_bytes",
                "Bytes the embedded decision log holds on disk (compressed).",
                &self.decision_log_store_bytes,
            ),
            (
                "gauge",
                "pulse_gateway_decision_log_store_records",
                "Decisions the embedded decision log holds.",
                &self.decision_log_store_records,
            ),
        ] {
            family(kind, name, help, plain(value));
        }
        family(
            "counter",
            "pulse_gateway_auth_total",
            "Batches of sites with token keys, by what their auth token became.",
            AUTH_RESULTS
                .iter()
                .zip(&self.auth)
                .map(|(r, n)| (format!("{{result=\"{r}\"}}"), n.load(Relaxed)))
                .collect(),
        );
        for (histogram, name, help) in [
            (
                &self.request_latency,
                "pulse_gateway_request_seconds",
                "Time to answer a collect request, from its head to its answer.",
            ),
            (
                &self.sink_latency,
                "pulse_gateway_sink_seconds",
                "Time to make a batch durable in the sink, queueing included.",
            ),
            (
                &self.log_queue_latency,
                "pulse_gateway_log_queue_seconds",
                "Time a batch waits for the log writer before its group commit starts.",
            ),
            (
                &self.log_commit_latency,
                "pulse_gateway_log_commit_seconds",
                "Time of one group commit of the embedded log (write and sync).",
            ),
            (
                &self.decision_latency,
                "pulse_gateway_decision_seconds",
                "Time to decide, fallbacks included.",
            ),
        ] {
            histogram.render(&mut out, name, help);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        m.request(Protocol::Http1, 200);
        m.request(Protocol::Http3, 429);
        m.request(Protocol::Http2, 418);
        m.rate_limited(RateLimit::SiteBytes);
        m.sink_latency.observe(Duration::from_micros(700));
        m.error(ErrorCode::OriginNotAllowed);
        m.rejected(RejectReason::PropsTooLarge);
        m.accepted(3);
        m.dead_letter_store(4096, 2);
        m.decision(Action::Paywall);
        m.shadow_pair(Action::Paywall, Action::Offer);
        m.decisions_dropped(2);
        let text = m.render();
        for line in [
            "pulse_gateway_requests_total{protocol=\"http1\",status=\"200\"} 1",
            "pulse_gateway_requests_total{protocol=\"http3\",status=\"429\"} 1",
            "pulse_gateway_requests_total{protocol=\"http2\",status=\"other\"} 1",
            "pulse_gateway_errors_total{code=\"origin_not_allowed\"} 1",
            "pulse_gateway_events_rejected_total{reason=\"props_too_large\"} 1",
            "pulse_gateway_events_accepted_total 3",
            "pulse_gateway_rate_limited_total{limit=\"site_bytes\"} 1",
            "pulse_gateway_sink_seconds_bucket{le=\"0.0005\"} 0",
            "pulse_gateway_sink_seconds_bucket{le=\"0.00075\"} 1",
            "pulse_gateway_sink_seconds_bucket{le=\"+Inf\"} 1",
            "pulse_gateway_sink_seconds_count 1",
            "# TYPE pulse_gateway_dead_letter_store_bytes gauge",
            "pulse_gateway_dead_letter_store_bytes 4096",
            "pulse_scorer_decisions_total{action=\"paywall\"} 1",
            "pulse_scorer_decisions_total{action=\"register_wall\"} 0",
            "pulse_scorer_shadow_decisions_total{active=\"paywall\",shadow=\"offer\"} 1",
            "pulse_gateway_decisions_dropped_total 2",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert_eq!(m.error_count(ErrorCode::OriginNotAllowed), 1);
        assert_eq!(m.requests_by(Protocol::Http3), 1);
        assert_eq!(
            text.matches("pulse_scorer_shadow_decisions_total{").count(),
            1,
            "only pairs seen"
        );
    }
}
