//! The scorer's own costs with a realistic bundle (`examples/bundles/reader-profile.toml`, 37
//! features) over `pulse-sim` traffic, in memory (no disk): `cargo bench -p pulse-scorer --bench
//! decide`.
//!
//! Traffic: 100,000 simulated readers; batches follow one another 100 ms apart in event time
//! (so a reader sends a batch of 10 events every 10,000 s on average, 86 events a day, and ids
//! leave the dedupe horizon as they would). Every reader is warmed with a day of traffic first.
//!
//! - `update/state`: applying a batch's events to its reader's state (the pure core: a map of
//!   states, no engine; [`ReaderState::prefetch`] then `apply` and `finish`, as the engine
//!   does), per event;
//! - `update/engine`: the same through the engine (partition lock, cache, dedupe, prune,
//!   accounting), per event;
//! - `decide/N_events`: a batch of N events applied and decided through the engine, per batch;
//! - then, outside criterion, the latency distribution of one `decide` call (p50, p99, p99.9)
//!   for 1, 10 and 50 events, over 200,000 batches each.
//!
//! The heap is as the gateway has it: in transparent huge pages where the kernel gives them on
//! request (the bench starts itself again with glibc's tunable, [`pulse_scorer::huge_pages`],
//! and prints `heap: ...` first); `PULSE_BENCH_HUGE_PAGES=0` keeps small pages.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use pulse_protocol::Event;
use pulse_scorer::{Bundle, DAY_MS, Engine, EngineConfig, MemoryStore, ReaderState};
use pulse_sim::{Traffic, TrafficConfig};

const START: u64 = 20_000 * DAY_MS;
/// Readers simulated (`PULSE_BENCH_READERS` overrides, to see what the cache does).
fn readers() -> usize {
    std::env::var("PULSE_BENCH_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
/// Event time between consecutive batches.
const STEP_MS: u64 = 100;
/// Batches generated at a time, outside the timed part: few, so that a batch's events are in
/// the CPU's caches when it is applied, as a request's just-parsed events are in the gateway.
/// (With 1,000 at a time, as this bench did until 2026-12-01, their property maps had left
/// the caches by the time they were applied: 15 instead of 10 µs per 10-event batch.)
const CHUNK: u64 = 16;

fn bundle() -> Bundle {
    Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .expect("it compiles")
}

/// An endless stream of batches with time moving forward.
struct Stream {
    traffic: Traffic,
    events: usize,
    now: u64,
}

impl Stream {
    fn new(events: usize) -> Self {
        Self {
            traffic: Traffic::new(&TrafficConfig {
                readers: readers(),
                ..TrafficConfig::default()
            }),
            events,
            now: START,
        }
    }

    fn next(&mut self) -> (String, Vec<Event>, u64) {
        self.now += STEP_MS;
        let b = self.traffic.next_batch(self.events, self.now);
        (b.header.reader_key().to_owned(), b.events, self.now)
    }

    fn chunk(&mut self, n: usize) -> Vec<(String, Vec<Event>, u64)> {
        (0..n).map(|_| self.next()).collect()
    }
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

/// A day of traffic for every reader (864,000 batches at 100 ms).
fn warm_engine(events: usize) -> (Engine<Arc<MemoryStore>>, Stream) {
    let engine = engine();
    let mut stream = Stream::new(events);
    for _ in 0..DAY_MS / STEP_MS {
        let (reader, evs, now) = stream.next();
        let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
        let _ = engine.score(&reader, &timed, now, &pulse_scorer::Request::default());
    }
    (engine, stream)
}

fn update(c: &mut Criterion) {
    let bundle = bundle();
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(10));
    let mut states: HashMap<String, ReaderState> = HashMap::new();
    let mut stream = Stream::new(10);
    // Warmed batch by batch, as a live process builds its state (a day of batches held at
    // once would scatter the states over gigabytes of freed batches).
    for _ in 0..DAY_MS / STEP_MS {
        let (reader, evs, _) = stream.next();
        let s = states
            .entry(reader)
            .or_insert_with(|| ReaderState::new(&bundle));
        for e in &evs {
            s.apply(&bundle, e, e.ts);
        }
        s.finish(&bundle);
    }
    group.bench_function("state", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let chunk = stream.chunk(n as usize);
                let started = Instant::now();
                for (reader, evs, _) in &chunk {
                    if !states.contains_key(reader) {
                        states.insert(reader.clone(), ReaderState::new(&bundle));
                    }
                    let s = states.get_mut(reader).expect("inserted");
                    s.prefetch(evs.iter().map(|e| e.id.0));
                    for e in evs {
                        black_box(s.apply(&bundle, e, e.ts));
                    }
                    s.finish(&bundle);
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    let (engine, mut stream) = warm_engine(10);
    group.bench_function("engine", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let chunk = stream.chunk(n as usize);
                let started = Instant::now();
                for (reader, evs, _) in &chunk {
                    let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
                    black_box(engine.replay(reader, &timed).ok());
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for events in [1, 10, 50] {
        let (engine, mut stream) = warm_engine(events);
        group.bench_function(format!("{events}_events"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    left -= n;
                    let chunk = stream.chunk(n as usize);
                    let started = Instant::now();
                    for (reader, evs, now) in &chunk {
                        let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
                        black_box(
                            engine
                                .score(reader, &timed, *now, &pulse_scorer::Request::default())
                                .ok(),
                        );
                    }
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
    latency();
}

/// p50/p99/p99.9 of one `score` call, timed one call at a time.
fn latency() {
    for events in [1usize, 10, 50] {
        let (engine, mut stream) = warm_engine(events);
        let mut ns: Vec<u64> = Vec::with_capacity(200_000);
        for _ in 0..200_000 / CHUNK {
            for (reader, evs, now) in stream.chunk(CHUNK as usize) {
                let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
                let started = Instant::now();
                let _ = black_box(engine.score(
                    &reader,
                    &timed,
                    now,
                    &pulse_scorer::Request::default(),
                ));
                ns.push(started.elapsed().as_nanos() as u64);
            }
        }
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64 / 1000.0;
        println!(
            "decide latency, {events} event(s) per batch, {} batches: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            ns.len(),
            q(0.50),
            q(0.99),
            q(0.999),
            q(1.0),
        );
    }
}

criterion_group!(benches, update, decide);

/// Criterion's `main`, with the heap as the gateway has it first: in transparent huge pages
/// where the kernel gives them on request (`PULSE_BENCH_HUGE_PAGES=0` keeps small pages, for
/// the comparison). This may start the bench again with glibc's tunable set.
fn main() {
    let wanted = std::env::var("PULSE_BENCH_HUGE_PAGES").map_or(true, |v| v != "0");
    println!("heap: {}", pulse_scorer::huge_pages(wanted));
    benches();
    Criterion::default().configure_from_args().final_summary();
}
