//! What a run measured: per-worker tallies (latency histogram and counters) merged into one
//! [`Report`], printed as a table or JSON. Pure: no clocks, durations are passed in.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::Failure;

/// Latencies are recorded in microseconds, from 1 µs to 100 s, with 3 significant digits.
const MAX_LATENCY_US: u64 = 100_000_000;

/// The counts and latencies of one worker (or of several, merged).
#[derive(Debug, Clone)]
pub struct Tally {
    latency_us: Histogram<u64>,
    /// Requests answered (or failed), warmup excluded.
    pub requests: u64,
    /// Requests that passed the answer check.
    pub ok: u64,
    /// Events sent in measured requests.
    pub events: u64,
    /// Events the server acknowledged in successful answers.
    pub events_accepted: u64,
    /// Request body bytes sent in measured requests.
    pub body_bytes: u64,
    /// Failures by reason code.
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Failures by HTTP status (`0` when there was no answer: connection error or timeout).
    pub errors_by_status: BTreeMap<u16, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            // Bounds are constants that `Histogram` accepts (low >= 1, high >= 2 * low, sigfig 3).
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
            requests: 0,
            ok: 0,
            events: 0,
            events_accepted: 0,
            body_bytes: 0,
            errors_by_reason: BTreeMap::new(),
            errors_by_status: BTreeMap::new(),
        }
    }
}

impl Tally {
    /// Records one request of `events` events and `bytes` body bytes, its latency (from its
    /// intended send time to its answer) and its outcome.
    pub fn record(
        &mut self,
        latency: Duration,
        events: usize,
        bytes: usize,
        outcome: &Result<u32, Failure>,
    ) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        // `us` is within the histogram's bounds, so recording cannot fail.
        let _ = self.latency_us.record(us);
        self.requests += 1;
        self.events += events as u64;
        self.body_bytes += bytes as u64;
        match outcome {
            Ok(accepted) => {
                self.ok += 1;
                self.events_accepted += u64::from(*accepted);
            }
            Err(f) => {
                *self.errors_by_reason.entry(f.reason.clone()).or_default() += 1;
                *self.errors_by_status.entry(f.status).or_default() += 1;
            }
        }
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        self.ok += other.ok;
        self.events += other.events;
        self.events_accepted += other.events_accepted;
        self.body_bytes += other.body_bytes;
        for (k, v) in &other.errors_by_reason {
            *self.errors_by_reason.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors_by_status {
            *self.errors_by_status.entry(*k).or_default() += v;
        }
    }

    /// Failed requests.
    pub fn errors(&self) -> u64 {
        self.requests - self.ok
    }

    /// The report of this tally over a measured window of `elapsed`.
    pub fn report(&self, setup: Setup, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let latency_ms = if self.requests == 0 {
            Latency::default()
        } else {
            Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: self.latency_us.max() as f64 / 1000.0,
                mean: self.latency_us.mean() / 1000.0,
            }
        };
        Report {
            setup,
            elapsed_s: secs,
            requests: self.requests,
            ok: self.ok,
            errors: self.errors(),
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors() as f64 / self.requests as f64
            },
            requests_per_s: self.requests as f64 / secs,
            events: self.events,
            events_accepted: self.events_accepted,
            events_per_s: self.events as f64 / secs,
            body_bytes: self.body_bytes,
            bytes_per_event: if self.events == 0 {
                0.0
            } else {
                self.body_bytes as f64 / self.events as f64
            },
            latency_ms,
            errors_by_status: self
                .errors_by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            errors_by_reason: self.errors_by_reason.clone(),
        }
    }
}

/// How the run was set up, repeated in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Setup {
    /// The collect URL.
    pub url: String,
    /// `h1`, `h2` or `h3`.
    pub proto: String,
    /// `closed` (as fast as possible) or `open` (a target rate).
    pub mode: String,
    /// The open-loop target rate, requests per second.
    pub target_rate: Option<f64>,
    /// Connections.
    pub connections: usize,
    /// Concurrent streams per connection (h2, h3).
    pub streams: usize,
    /// Events per batch.
    pub events_per_batch: usize,
    /// Distinct readers.
    pub readers: usize,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The result of a run (warmup excluded), as printed with `--json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// How the run was set up.
    pub setup: Setup,
    /// Length of the measured window, seconds.
    pub elapsed_s: f64,
    /// Requests answered or failed in the window.
    pub requests: u64,
    /// Requests whose answer passed the check.
    pub ok: u64,
    /// Requests that failed (status, reason code, bad answer, transport error).
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Events sent.
    pub events: u64,
    /// Events acknowledged by successful answers.
    pub events_accepted: u64,
    /// Events sent per second.
    pub events_per_s: f64,
    /// Compressed body bytes sent.
    pub body_bytes: u64,
    /// Body bytes per event, as sent on the wire (compressed).
    pub bytes_per_event: f64,
    /// Latency from the intended send time to the full answer.
    pub latency_ms: Latency,
    /// Failures by HTTP status (`0`: no answer).
    pub errors_by_status: BTreeMap<String, u64>,
    /// Failures by reason code.
    pub errors_by_reason: BTreeMap<String, u64>,
}

impl Report {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let l = &self.latency_ms;
        let mut out = String::new();
        let rate = s.target_rate.map_or_else(
            || "as fast as possible".to_owned(),
            |r| format!("{r} req/s"),
        );
        let _ = writeln!(out, "target        {} ({})", s.url, s.proto);
        let _ = writeln!(
            out,
            "load          {} loop, {rate}, {} connection(s) x {} stream(s), {} events/batch, {} readers",
            s.mode, s.connections, s.streams, s.events_per_batch, s.readers
        );
        let _ = writeln!(
            out,
            "requests      {} in {:.2} s = {:.1} req/s ({} ok, {} errors, {:.4}% errors)",
            self.requests,
            self.elapsed_s,
            self.requests_per_s,
            self.ok,
            self.errors,
            self.error_rate * 100.0
        );
        let _ = writeln!(
            out,
            "events        {} = {:.1} events/s ({} accepted), {:.1} body bytes/event",
            self.events, self.events_per_s, self.events_accepted, self.bytes_per_event
        );
        let _ = writeln!(
            out,
            "latency ms    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if self.errors > 0 {
            let join = |m: &BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "errors        by status {{{}}}",
                join(&self.errors_by_status)
            );
            let _ = writeln!(
                out,
                "              by reason {{{}}}",
                join(&self.errors_by_reason)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            url: "http://x/v1/collect?k=demo".into(),
            proto: "h1".into(),
            mode: "open".into(),
            target_rate: Some(100.0),
            connections: 2,
            streams: 1,
            events_per_batch: 10,
            readers: 5,
        }
    }

    fn fail(status: u16, reason: &str) -> Result<u32, Failure> {
        Err(Failure {
            status,
            reason: reason.into(),
        })
    }

    #[test]
    fn percentiles_rates_and_merging() {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        // 1..=1000 ms, split over two tallies.
        for ms in 1..=1000u64 {
            let t = if ms % 2 == 0 { &mut a } else { &mut b };
            t.record(Duration::from_millis(ms), 10, 200, &Ok(10));
        }
        b.record(
            Duration::from_millis(5),
            10,
            200,
            &fail(503, "store_unavailable"),
        );
        b.record(Duration::from_millis(5), 10, 200, &fail(0, "timeout"));
        a.merge(&b);
        let r = a.report(setup(), Duration::from_secs(2));
        assert_eq!((r.requests, r.ok, r.errors), (1002, 1000, 2));
        assert_eq!(r.events, 10_020);
        assert_eq!(r.events_accepted, 10_000);
        assert!((r.requests_per_s - 501.0).abs() < 1e-9);
        assert!((r.bytes_per_event - 20.0).abs() < 1e-9);
        // 3 significant digits: within 0.1%.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(near(r.latency_ms.p50, 499.0), "{}", r.latency_ms.p50);
        assert!(near(r.latency_ms.p99, 990.0), "{}", r.latency_ms.p99);
        assert!(near(r.latency_ms.max, 1000.0), "{}", r.latency_ms.max);
        assert_eq!(r.errors_by_reason["store_unavailable"], 1);
        assert_eq!(r.errors_by_status["0"], 1);
        assert!(r.table().contains("store_unavailable: 1"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["latency_ms"]["p999"],
            serde_json::json!(r.latency_ms.p999)
        );
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let r = Tally::default().report(setup(), Duration::from_secs(1));
        assert_eq!(r.requests, 0);
        assert_eq!(r.error_rate, 0.0);
        assert_eq!(r.latency_ms, Latency::default());
    }

    #[test]
    fn latencies_beyond_the_bounds_are_clamped() {
        let mut t = Tally::default();
        t.record(Duration::ZERO, 1, 1, &Ok(1));
        t.record(Duration::from_secs(1000), 1, 1, &Ok(1));
        let r = t.report(setup(), Duration::from_secs(1));
        assert!(r.latency_ms.max <= 100_100.0);
    }
}
