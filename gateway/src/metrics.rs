//! Counters of everything the gateway answers, rendered in the Prometheus text format at
//! `GET /metrics`. Names follow `pulse_<component>_<what>_<unit>`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pulse_protocol::{ErrorCode, RejectReason};

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
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
    /// Counts an answered request by status.
    pub fn request(&self, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry(status).or_default() += 1;
        }
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
                .map(|(s, n)| (format!("{{protocol=\"http1\",status=\"{s}\"}}"), *n))
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        m.request(200);
        m.error(ErrorCode::OriginNotAllowed);
        m.rejected(RejectReason::PropsTooLarge);
        m.accepted(3);
        let text = m.render();
        assert!(text.contains("pulse_gateway_requests_total{protocol=\"http1\",status=\"200\"} 1"));
        assert!(text.contains("pulse_gateway_errors_total{code=\"origin_not_allowed\"} 1"));
        assert!(text.contains("pulse_gateway_events_rejected_total{reason=\"props_too_large\"} 1"));
        assert!(text.contains("pulse_gateway_events_accepted_total 3"));
        assert_eq!(m.error_count(ErrorCode::OriginNotAllowed), 1);
    }
}
