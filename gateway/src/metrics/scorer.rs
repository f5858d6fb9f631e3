//! The scorer's part of `/metrics`: the engine's counters and gauges, read when scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::metrics::MetricType;

use super::Snapshot;
use super::snapshot::escaped;

/// Adds the scorer's series: events by outcome, the state cache, write-behind, TTL, the
/// rebuild's progress and the active bundle.
pub(crate) fn scorer_series<S: pulse_scorer::StateStore>(
    out: &mut Snapshot,
    engine: &pulse_scorer::Engine<S>,
) {
    let s = engine.stats();
    let get = |a: &AtomicU64| a.load(Relaxed) as f64;
    out.labelled(
        "pulse_scorer_events",
        "Events given to the scorer, by outcome (too_late and dedupe_full are stored but not applied, and dead-lettered).",
        MetricType::Counter,
        [
            ("applied", &s.applied),
            ("duplicate", &s.duplicates),
            ("too_late", &s.too_late),
            ("dedupe_full", &s.dedupe_full),
        ]
        .into_iter()
        .map(|(outcome, n)| (vec![("outcome", outcome.to_owned())], get(n)))
        .collect(),
    );
    let cache = engine.cache();
    out.gauge(
        "pulse_scorer_cached_readers",
        "Readers whose state is in memory.",
        cache.readers as f64,
    );
    out.gauge(
        "pulse_scorer_cache_bytes",
        "Bytes of reader state in memory (accounted).",
        cache.bytes as f64,
    );
    out.gauge(
        "pulse_scorer_cache_limit_bytes",
        "The configured memory for reader state.",
        engine.config().cache_bytes as f64,
    );
    out.gauge(
        "pulse_scorer_store_bytes",
        "Bytes the reader-state store takes on disk.",
        engine.store().disk_bytes() as f64,
    );
    out.gauge(
        "pulse_scorer_dirty_readers",
        "Readers changed and not yet written behind.",
        cache.dirty as f64,
    );
    for (name, help, value) in [
        (
            "pulse_scorer_loads",
            "Readers loaded from the store (cache misses).",
            &s.loads,
        ),
        (
            "pulse_scorer_evictions",
            "Readers evicted from memory.",
            &s.evictions,
        ),
        (
            "pulse_scorer_expired_readers",
            "Readers forgotten past the bundle's TTL (by event time).",
            &s.expired,
        ),
        (
            "pulse_scorer_unreadable_states",
            "Stored states that could not be read and were started afresh.",
            &s.unreadable,
        ),
        ("pulse_scorer_flushes", "Write-behind flushes.", &s.flushes),
        (
            "pulse_scorer_flush_errors",
            "Write-behind flushes that failed.",
            &s.flush_errors,
        ),
        (
            "pulse_scorer_states_written",
            "Reader states written behind.",
            &s.written,
        ),
        (
            "pulse_scorer_rule_errors",
            "Rule conditions that failed at run time (the next rule was tried).",
            &s.rule_errors,
        ),
        (
            "pulse_scorer_rebuild_events",
            "Events of the log replayed by the current (or last) rebuild.",
            &s.rebuild_events,
        ),
    ] {
        out.counter(name, help, get(value));
    }
    out.gauge(
        "pulse_scorer_last_flush_duration_seconds",
        "Duration of the last write-behind flush.",
        get(&s.last_flush_us) / 1e6,
    );
    out.gauge(
        "pulse_scorer_watermark_seconds",
        "The latest event time applied by any reader (the watermark TTL goes by), Unix time.",
        engine.watermark() as f64 / 1e3,
    );
    out.gauge(
        "pulse_scorer_rebuilding",
        "1 while state for a new bundle is rebuilt from the log.",
        get(&s.rebuilding),
    );
    if let Ok(b) = engine.bundle() {
        out.labelled(
            "pulse_scorer_bundle_info",
            "The active bundle (always 1).",
            MetricType::Gauge,
            vec![(
                vec![("id", escaped(&b.id)), ("name", escaped(&b.name))],
                1.0,
            )],
        );
    }
}
