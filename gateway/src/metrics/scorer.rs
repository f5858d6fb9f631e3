//! The scorer's part of `/metrics`: the engine's counters and gauges, read when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
