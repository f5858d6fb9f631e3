//! The scorer's own costs with a realistic bundle (`examples/bundles/reader-profile.toml`, 37
//! features) over `pulse-sim` traffic, in memory (no disk): `cargo bench -p pulse-scorer --bench
//! decide`.
//!
//! - `update/state`: applying events to one reader's state (the pure core), per event;
//! - `update/engine`: the same through the engine (partition lock, cache lookup, dedupe, prune);
//! - `decide/N_events`: a batch of N events applied and decided, per batch;
//! - then, outside criterion, the latency distribution of `decide` (p50, p99, p99.9) for 1, 10
//!   and 50 events, from 200,000 timed batches each.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pulse_protocol::{Event, EventId};
use pulse_scorer::{Bundle, DAY_MS, Engine, EngineConfig, MemoryStore, ReaderState};
use pulse_sim::{Traffic, TrafficConfig};

const NOW: u64 = 20_000 * DAY_MS;

fn bundle() -> Bundle {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    ))
    .expect("the example bundle");
    Bundle::compile(&text).expect("it compiles")
}

/// Batches from `readers` simulated readers, spread over the last day.
fn batches(readers: usize, events: usize, count: usize) -> Vec<(String, Vec<Event>, u64)> {
    let mut traffic = Traffic::new(&TrafficConfig {
        readers,
        ..TrafficConfig::default()
    });
    (0..count)
        .map(|i| {
            let now = NOW - DAY_MS + (i as u64 * DAY_MS / count as u64);
            let b = traffic.next_batch(events, now);
            (b.header.reader_key().to_owned(), b.events, now)
        })
        .collect()
}

fn engine() -> Engine<Arc<MemoryStore>> {
    Engine::open(
        Arc::new(MemoryStore::default()),
        bundle(),
        EngineConfig {
            cache_bytes: 4 << 30,
            ..EngineConfig::default()
        },
    )
    .expect("engine")
    .0
}

fn update(c: &mut Criterion) {
    let bundle = bundle();
    let mut group = c.benchmark_group("update");
    let events: Vec<(String, Vec<Event>, u64)> = batches(1_000, 10, 10_000);
    let flat: Vec<&Event> = events.iter().flat_map(|(_, e, _)| e.iter()).collect();
    group.throughput(Throughput::Elements(1));
    // One reader's state taking every event (fresh ids: nothing is a duplicate).
    let mut state = ReaderState::new(&bundle);
    let (mut i, mut id) = (0usize, 1u128 << 100);
    group.bench_function("state", |b| {
        b.iter_batched(
            || {
                let mut e = flat[i % flat.len()].clone();
                i += 1;
                id += 1;
                e.id = EventId(id);
                let t = e.ts;
                (e, t)
            },
            |(e, t)| black_box(state.apply(&bundle, &e, t)),
            BatchSize::SmallInput,
        )
    });
    // Through the engine, 10,000 readers, one event per call.
    let engine = engine();
    let many = batches(10_000, 1, 50_000);
    let mut j = 0usize;
    group.bench_function("engine", |b| {
        b.iter_batched(
            || {
                let (reader, evs, _) = &many[j % many.len()];
                j += 1;
                id += 1;
                let mut e = evs[0].clone();
                e.id = EventId(id);
                (reader.clone(), e)
            },
            |(reader, e)| {
                let t = e.ts;
                black_box(engine.replay(&reader, &[(&e, t)]))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for events in [1, 10, 50] {
        // Readers already have history: warm them with a first pass.
        let engine = engine();
        for (reader, evs, now) in batches(10_000, events, 20_000) {
            let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
            let _ = engine.score(&reader, &timed, now);
        }
        let run = batches(10_000, events, 20_000);
        let (mut i, mut next_id) = (0, 1u128 << 100);
        group.bench_function(format!("{events}_events"), |b| {
            b.iter_batched(
                || {
                    // Fresh ids each time, so that no event is a duplicate the scorer skips.
                    let (reader, mut evs, now) = run[i % run.len()].clone();
                    i += 1;
                    for e in &mut evs {
                        e.id = EventId(next_id);
                        next_id += 1;
                    }
                    (reader, evs, now)
                },
                |(reader, evs, now)| {
                    let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
                    black_box(engine.score(&reader, &timed, now))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    latency();
}

/// p50/p99/p99.9 of one `score` call, measured one call at a time.
fn latency() {
    for events in [1usize, 10, 50] {
        let engine = engine();
        for (reader, evs, now) in batches(10_000, events, 20_000) {
            let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
            let _ = engine.score(&reader, &timed, now);
        }
        let mut run = batches(10_000, events, 200_000);
        let mut next_id = 1u128 << 100;
        for (_, evs, _) in &mut run {
            for e in evs {
                e.id = EventId(next_id);
                next_id += 1;
            }
        }
        let mut ns: Vec<u64> = Vec::with_capacity(run.len());
        for (reader, evs, now) in &run {
            let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
            let started = Instant::now();
            let _ = black_box(engine.score(reader, &timed, *now));
            ns.push(started.elapsed().as_nanos() as u64);
        }
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64 / 1000.0;
        println!(
            "decide latency, {events} event(s) per batch, {} batches: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
            ns.len(),
            q(0.50),
            q(0.99),
            q(0.999)
        );
    }
}

criterion_group!(benches, update, decide);
criterion_main!(benches);
