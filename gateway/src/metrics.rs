//! Counters and latency histograms of everything the gateway answers, rendered in the
//! Prometheus text format at `GET /metrics` on the admin listener. Names follow
//! `pulse_<component>_<what>_<unit>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pulse_protocol::{ErrorCode, RejectReason};

use crate::server::Protocol;

/// The rate limits, as named in answers and metrics.
pub const LIMIT_NAMES: [&str; 4] = [
    "ip_requests",
    "site_events",
    "site_bytes",
    "global_requests",
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    rate_limited: [AtomicU64; LIMIT_NAMES.len()],
    /// Time to make a batch durable in the sink.
    pub sink_latency: Histogram,
    /// Time for the scorer's decision (including fallbacks at the deadline).
    pub decision_latency: Histogram,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    events_accepted: AtomicU64,
    batches_accepted: AtomicU64,
    dead_letters: AtomicU64,
    bytes_received: AtomicU64,
    bytes_decoded: AtomicU64,
    fallback_decisions: AtomicU64,
}

impl Metrics {
    /// Counts an answered request by protocol and status.
    pub fn request(&self, protocol: Protocol, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((protocol.as_str(), status)).or_default() += 1;
        }
    }

    /// Counts a request refused by the rate limit `limit` (one of [`LIMIT_NAMES`]).
    pub fn rate_limited(&self, limit: &str) {
        if let Some(i) = LIMIT_NAMES.iter().position(|l| *l == limit) {
            self.rate_limited[i].fetch_add(1, Relaxed);
        }
    }

    /// Requests answered over `protocol`, any status.
    pub fn requests_by(&self, protocol: Protocol) -> u64 {
        self.requests.lock().map_or(0, |m| {
            m.iter()
                .filter(|((p, _), _)| *p == protocol.as_str())
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Counts a refused request by its code.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a rejected event by its reason.
    pub fn rejected(&self, reason: RejectReason) {
        if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts an accepted batch and its events.
    pub fn accepted(&self, events: usize) {
        self.batches_accepted.fetch_add(1, Relaxed);
        self.events_accepted.fetch_add(events as u64, Relaxed);
    }

    /// Counts dead letters written.
    pub fn dead_letters(&self, n: usize) {
        self.dead_letters.fetch_add(n as u64, Relaxed);
    }

    /// Counts body bytes as received and after decoding.
    pub fn bytes(&self, received: usize, decoded: usize) {
        self.bytes_received.fetch_add(received as u64, Relaxed);
        self.bytes_decoded.fetch_add(decoded as u64, Relaxed);
    }

    /// Counts a fallback decision (the scorer missed its deadline or failed).
    pub fn fallback(&self) {
        self.fallback_decisions.fetch_add(1, Relaxed);
    }

    /// The value of the error counter for `code`.
    pub fn error_count(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let requests = self.requests.lock().map(|m| m.clone()).unwrap_or_default();
        counter(
            "pulse_gateway_requests_total",
            "Requests answered, by protocol and status.",
            requests
                .iter()
                .map(|((p, s), n)| (format!("{{protocol=\"{p}\",status=\"{s}\"}}"), *n))
                .collect(),
        );
        counter(
            "pulse_gateway_rate_limited_total",
            "Requests refused by a rate limit, by limit.",
            LIMIT_NAMES
                .iter()
                .zip(&self.rate_limited)
                .map(|(l, n)| (format!("{{limit=\"{l}\"}}"), n.load(Relaxed)))
                .collect(),
        );
        counter(
            "pulse_gateway_errors_total",
            "Requests refused, by machine-readable code.",
            ErrorCode::ALL
                .iter()
                .zip(&self.errors)
                .map(|(c, n)| (format!("{{code=\"{}\"}}", c.as_str()), n.load(Relaxed)))
                .collect(),
        );
        counter(
            "pulse_gateway_events_rejected_total",
            "Events rejected, by reason.",
            RejectReason::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.as_str()), n.load(Relaxed)))
                .collect(),
        );
        let plain = |n: &AtomicU64| vec![(String::new(), n.load(Relaxed))];
        counter(
            "pulse_gateway_events_accepted_total",
            "Events accepted and durable.",
            plain(&self.events_accepted),
        );
        counter(
            "pulse_gateway_batches_accepted_total",
            "Batches answered 200.",
            plain(&self.batches_accepted),
        );
        counter(
            "pulse_gateway_dead_letters_total",
            "Dead letters written.",
            plain(&self.dead_letters),
        );
        counter(
            "pulse_gateway_received_bytes_total",
            "Body bytes as received.",
            plain(&self.bytes_received),
        );
        counter(
            "pulse_gateway_decoded_bytes_total",
            "Body bytes after decoding.",
            plain(&self.bytes_decoded),
        );
        counter(
            "pulse_gateway_fallback_decisions_total",
            "Decisions that fell back.",
            plain(&self.fallback_decisions),
        );
        self.sink_latency.render(
            &mut out,
            "pulse_gateway_sink_seconds",
            "Time to make a batch durable in the sink.",
        );
        self.decision_latency.render(
            &mut out,
            "pulse_gateway_decision_seconds",
            "Time to decide, fallbacks included.",
        );
        out
    }
}

/// Appends the scorer's series: events by outcome, the state cache, write-behind, TTL, the
/// rebuild's progress and the active bundle.
pub(crate) fn render_scorer<S: pulse_scorer::StateStore>(
    out: &mut String,
    engine: &pulse_scorer::Engine<S>,
) {
    let s = engine.stats();
    let get = |a: &AtomicU64| a.load(Relaxed);
    let _ = writeln!(
        out,
        "# HELP pulse_scorer_events_total Events given to the scorer, by outcome (too_late and dedupe_full are stored but not applied, and dead-lettered).\n# TYPE pulse_scorer_events_total counter"
    );
    for (outcome, n) in [
        ("applied", &s.applied),
        ("duplicate", &s.duplicates),
        ("too_late", &s.too_late),
        ("dedupe_full", &s.dedupe_full),
    ] {
        let _ = writeln!(
            out,
            "pulse_scorer_events_total{{outcome=\"{outcome}\"}} {}",
            get(n)
        );
    }
    let cache = engine.cache();
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    one(
        "pulse_scorer_cached_readers",
        "gauge",
        "Readers whose state is in memory.",
        cache.readers.to_string(),
    );
    one(
        "pulse_scorer_cache_bytes",
        "gauge",
        "Bytes of reader state in memory (accounted).",
        cache.bytes.to_string(),
    );
    one(
        "pulse_scorer_cache_limit_bytes",
        "gauge",
        "The configured memory for reader state.",
        engine.config().cache_bytes.to_string(),
    );
    one(
        "pulse_scorer_dirty_readers",
        "gauge",
        "Readers changed and not yet written behind.",
        cache.dirty.to_string(),
    );
    one(
        "pulse_scorer_loads_total",
        "counter",
        "Readers loaded from the store (cache misses).",
        get(&s.loads).to_string(),
    );
    one(
        "pulse_scorer_evictions_total",
        "counter",
        "Readers evicted from memory.",
        get(&s.evictions).to_string(),
    );
    one(
        "pulse_scorer_expired_readers_total",
        "counter",
        "Readers forgotten past the bundle's TTL (by event time).",
        get(&s.expired).to_string(),
    );
    one(
        "pulse_scorer_unreadable_states_total",
        "counter",
        "Stored states that could not be read and were started afresh.",
        get(&s.unreadable).to_string(),
    );
    one(
        "pulse_scorer_flushes_total",
        "counter",
        "Write-behind flushes.",
        get(&s.flushes).to_string(),
    );
    one(
        "pulse_scorer_flush_errors_total",
        "counter",
        "Write-behind flushes that failed.",
        get(&s.flush_errors).to_string(),
    );
    one(
        "pulse_scorer_states_written_total",
        "counter",
        "Reader states written behind.",
        get(&s.written).to_string(),
    );
    one(
        "pulse_scorer_last_flush_seconds",
        "gauge",
        "Duration of the last write-behind flush.",
        (get(&s.last_flush_us) as f64 / 1e6).to_string(),
    );
    one(
        "pulse_scorer_watermark_seconds",
        "gauge",
        "The latest event time applied by any reader (the watermark TTL goes by).",
        (engine.watermark() as f64 / 1e3).to_string(),
    );
    one(
        "pulse_scorer_rule_errors_total",
        "counter",
        "Rule conditions that failed at run time (the next rule was tried).",
        get(&s.rule_errors).to_string(),
    );
    one(
        "pulse_scorer_rebuilding",
        "gauge",
        "1 while state for a new bundle is rebuilt from the log.",
        get(&s.rebuilding).to_string(),
    );
    one(
        "pulse_scorer_rebuild_events_total",
        "counter",
        "Events of the log replayed by the current (or last) rebuild.",
        get(&s.rebuild_events).to_string(),
    );
    if let Ok(b) = engine.bundle() {
        let _ = writeln!(
            out,
            "# HELP pulse_scorer_bundle_info The active bundle.\n# TYPE pulse_scorer_bundle_info gauge\npulse_scorer_bundle_info{{id=\"{}\",name=\"{}\"}} 1",
            b.id,
            b.name.replace(['"', '\\', '\n'], "_")
        );
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
        m.rate_limited("site_bytes");
        m.sink_latency.observe(Duration::from_micros(700));
        m.error(ErrorCode::OriginNotAllowed);
        m.rejected(RejectReason::PropsTooLarge);
        m.accepted(3);
        let text = m.render();
        assert!(text.contains("pulse_gateway_requests_total{protocol=\"http1\",status=\"200\"} 1"));
        assert!(text.contains("pulse_gateway_errors_total{code=\"origin_not_allowed\"} 1"));
        assert!(text.contains("pulse_gateway_events_rejected_total{reason=\"props_too_large\"} 1"));
        assert!(text.contains("pulse_gateway_events_accepted_total 3"));
        assert!(text.contains("pulse_gateway_requests_total{protocol=\"http3\",status=\"429\"} 1"));
        assert!(text.contains("pulse_gateway_rate_limited_total{limit=\"site_bytes\"} 1"));
        assert!(text.contains("pulse_gateway_sink_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("pulse_gateway_sink_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("pulse_gateway_sink_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("pulse_gateway_sink_seconds_count 1"));
        assert_eq!(m.error_count(ErrorCode::OriginNotAllowed), 1);
        assert_eq!(m.requests_by(Protocol::Http3), 1);
    }
}
