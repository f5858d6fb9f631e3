//! A fixed workload for profilers (`valgrind --tool=callgrind`): 2,000 simulated readers warmed
//! with 40,000 batches, then 20,000 batches of 10 events applied to their states with the
//! 37-feature bundle, each batch decided (the part `run` measures). `cargo run --release -p
//! pulse-scorer --example profile_update`; under callgrind, `--toggle-collect='*profile_update::run*'`.

use std::collections::HashMap;

use std::sync::Arc;

use pulse_scorer::{
    Bundle, DAY_MS, Engine, EngineConfig, MemoryStore, PageFacts, ReaderState, Request, decide,
};
use pulse_sim::{Traffic, TrafficConfig};

fn main() {
    if std::env::args().any(|a| a == "--like-bench") {
        return like_bench();
    }
    if std::env::args().any(|a| a == "--latency") {
        return latency();
    }
    let bundle = Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .expect("compiles");
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: 2_000,
        ..TrafficConfig::default()
    });
    let mut now = 20_000 * DAY_MS;
    let mut batches = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                now += 1_000;
                let b = traffic.next_batch(10, now);
                (b.header.reader_key().to_owned(), b.events, now)
            })
            .collect()
    };
    let warm = batches(40_000);
    let measured = batches(20_000);
    if std::env::args().any(|a| a == "--engine") {
        let (engine, _) = Engine::open(
            Arc::new(MemoryStore::default()),
            bundle,
            EngineConfig {
                cache_bytes: 1 << 30,
                ..EngineConfig::default()
            },
        )
        .expect("engine");
        engine_batches(&engine, &warm);
        let walls = run_engine(&engine, &measured);
        println!("engine: {walls} walls");
        return;
    }
    let mut states: HashMap<&str, ReaderState> = HashMap::new();
    warm_up(&bundle, &warm, &mut states);
    let walls = run(&bundle, &measured, &mut states);
    let heap: usize = states.values().map(ReaderState::heap_bytes).sum();
    let encoded: usize = states.values().map(|s| s.encode(&bundle).len()).sum();
    println!(
        "{} readers, {walls} walls; per reader {} heap bytes, {} encoded bytes",
        states.len(),
        heap / states.len(),
        encoded / states.len()
    );
    let mut sizes: std::collections::BTreeMap<String, usize> = Default::default();
    for s in states.values() {
        for (name, n) in s.sizes(&bundle) {
            *sizes.entry(name).or_default() += n;
        }
    }
    let mut sizes: Vec<_> = sizes.into_iter().collect();
    sizes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (name, n) in sizes {
        println!("  {name}: {} bytes encoded per reader", n / states.len());
    }
}

#[inline(never)]
fn warm_up<'a>(
    bundle: &Bundle,
    batches: &'a [(String, Vec<pulse_protocol::Event>, u64)],
    states: &mut HashMap<&'a str, ReaderState>,
) {
    for (reader, events, _) in batches {
        let s = states
            .entry(reader.as_str())
            .or_insert_with(|| ReaderState::new(bundle));
        for e in events {
            s.apply(bundle, e, e.ts);
        }
        s.finish(bundle);
    }
}

/// The measured part (`--toggle-collect=*profile_update::run*`).
#[inline(never)]
fn run<'a>(
    bundle: &Bundle,
    batches: &'a [(String, Vec<pulse_protocol::Event>, u64)],
    states: &mut HashMap<&'a str, ReaderState>,
) -> u64 {
    let mut walls = 0u64;
    for (reader, events, now) in batches {
        let s = states
            .entry(reader.as_str())
            .or_insert_with(|| ReaderState::new(bundle));
        apply_batch(bundle, s, events);
        let page = PageFacts::of(&events.iter().map(|e| (e, e.ts)).collect::<Vec<_>>());
        let d = decide(bundle, reader, s, *now, &page, &Request::default());
        walls += u64::from(d.decision.action == pulse_protocol::Action::Paywall);
    }
    walls
}

/// The state path of one batch (its own frame in the profile).
#[inline(never)]
fn apply_batch(bundle: &Bundle, s: &mut ReaderState, events: &[pulse_protocol::Event]) {
    s.prefetch(events.iter().map(|e| e.id.0));
    for e in events {
        s.apply(bundle, e, e.ts);
    }
    s.finish(bundle);
}

fn engine_batches(
    engine: &Engine<Arc<MemoryStore>>,
    batches: &[(String, Vec<pulse_protocol::Event>, u64)],
) -> u64 {
    let mut walls = 0;
    for (reader, events, now) in batches {
        let timed: Vec<_> = events.iter().map(|e| (e, e.ts)).collect();
        let d = engine
            .score(reader, &timed, *now, &Request::default())
            .expect("score")
            .decision;
        walls += u64::from(d.action == pulse_protocol::Action::Paywall);
    }
    walls
}

/// The measured part through the engine (`--engine`; `--toggle-collect=*run_engine*`).
#[inline(never)]
fn run_engine(
    engine: &Engine<Arc<MemoryStore>>,
    batches: &[(String, Vec<pulse_protocol::Event>, u64)],
) -> u64 {
    engine_batches(engine, batches)
}

/// `--like-bench`: the criterion bench's `update/state` case (100,000 readers warmed with a day
/// of batches 100 ms apart, batch by batch), then 300 chunks of 1,000 batches applied, timed
/// alone, and the µs per batch printed. With `PULSE_PERF_CTL=FIFO` (perf record's
/// `--control fifo:FIFO -D -1`), perf samples only the applying.
fn like_bench() {
    let bundle = Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .expect("compiles");
    // `PULSE_BENCH_READERS` (as the bench): fewer readers, each as often, to see what the
    // caches do.
    let readers: u64 = std::env::var("PULSE_BENCH_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let step = 100 * 100_000 / readers;
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: readers as usize,
        ..TrafficConfig::default()
    });
    let mut ctl = perf_ctl();
    let mut now = 20_000 * DAY_MS;
    let mut states: HashMap<String, ReaderState> = HashMap::new();
    for _ in 0..DAY_MS / step {
        now += step;
        let b = traffic.next_batch(10, now);
        let s = states
            .entry(b.header.reader_key().to_owned())
            .or_insert_with(|| ReaderState::new(&bundle));
        apply_batch(&bundle, s, &b.events);
    }
    let mut spent = std::time::Duration::ZERO;
    if std::env::var_os("PULSE_ENCODE").is_some() {
        // The write-behind's work: every state encoded, 20 times over.
        let started = std::time::Instant::now();
        let mut bytes = 0usize;
        for _ in 0..20 {
            bytes += encode_all(&bundle, &states);
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / (20.0 * states.len() as f64);
        println!(
            "encode: {per:.2} µs per reader, {} bytes each",
            bytes / (20 * states.len())
        );
        return;
    }
    let rounds: u32 = std::env::var("PULSE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let per_chunk: u32 = std::env::var("PULSE_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rounds = rounds * 1_000 / per_chunk;
    for _ in 0..rounds {
        let chunk: Vec<_> = (0..per_chunk)
            .map(|_| {
                now += step;
                let b = traffic.next_batch(10, now);
                (b.header.reader_key().to_owned(), b.events)
            })
            .collect();
        perf(&mut ctl, "enable");
        let started = std::time::Instant::now();
        apply_measured(&bundle, &chunk, &mut states);
        spent += started.elapsed();
        perf(&mut ctl, "disable");
    }
    println!(
        "{:.2} µs per 10-event batch ({:.0} events/s)",
        spent.as_secs_f64() * 1e6 / (f64::from(rounds * per_chunk)),
        f64::from(rounds * per_chunk) * 10.0 / spent.as_secs_f64()
    );
}

/// The measured part of `--like-bench` (`--toggle-collect='*apply_measured*'`).
#[inline(never)]
fn apply_measured(
    bundle: &Bundle,
    chunk: &[(String, Vec<pulse_protocol::Event>)],
    states: &mut HashMap<String, ReaderState>,
) {
    for (reader, events) in chunk {
        if !states.contains_key(reader) {
            states.insert(reader.clone(), ReaderState::new(bundle));
        }
        let s = states.get_mut(reader).expect("inserted");
        apply_batch(bundle, s, events);
    }
}

/// `--latency`: the bench's decide latency for 10-event batches (100,000 readers warmed with a
/// day of batches through the engine, then 200,000 `score` calls timed one by one);
/// `PULSE_FLUSH_S` sets the write-behind interval (default 1 s).
fn latency() {
    let bundle = Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .expect("compiles");
    let flush = std::env::var("PULSE_FLUSH_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (engine, _) = Engine::open(
        Arc::new(MemoryStore::default()),
        bundle,
        EngineConfig {
            cache_bytes: 4 << 30,
            flush_interval: std::time::Duration::from_secs(flush),
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: 100_000,
        ..TrafficConfig::default()
    });
    let mut now = 20_000 * DAY_MS;
    let mut next = || {
        now += 100;
        let b = traffic.next_batch(10, now);
        (b.header.reader_key().to_owned(), b.events, now)
    };
    for _ in 0..DAY_MS / 100 {
        let (reader, evs, now) = next();
        let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
        let _ = engine.score(&reader, &timed, now, &Request::default());
    }
    let mut ns: Vec<u64> = Vec::with_capacity(200_000);
    // `PULSE_PERF_CTL=FIFO` (perf record's `--control fifo:FIFO -D -1`): samples only the
    // decisions, not the warm-up.
    let mut ctl = perf_ctl();
    perf(&mut ctl, "enable");
    for _ in 0..200_000 {
        let (reader, evs, now) = next();
        let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
        let started = std::time::Instant::now();
        let _ = std::hint::black_box(engine.score(&reader, &timed, now, &Request::default()));
        ns.push(started.elapsed().as_nanos() as u64);
    }
    perf(&mut ctl, "disable");
    let mut sorted = ns.clone();
    sorted.sort_unstable();
    let q =
        |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1e3;
    println!(
        "p50 {:.1} µs, p90 {:.1}, p99 {:.1}, p99.9 {:.1}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999)
    );
    if let Ok(path) = std::env::var("PULSE_LATENCIES") {
        let text: String = ns.iter().map(|n| format!("{n}\n")).collect();
        std::fs::write(path, text).expect("write");
    }
}

/// Encodes every state (`PULSE_ENCODE`); the bytes written.
#[inline(never)]
fn encode_all(bundle: &Bundle, states: &HashMap<String, ReaderState>) -> usize {
    states.values().map(|s| s.encode(bundle).len()).sum()
}

/// perf's control fifo, when `PULSE_PERF_CTL` names one (`perf record --control fifo:FIFO -D -1`).
fn perf_ctl() -> Option<std::fs::File> {
    let path = std::env::var("PULSE_PERF_CTL").ok()?;
    Some(
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("fifo"),
    )
}

/// Tells perf to start or stop sampling (`enable`, `disable`), when it listens.
fn perf(ctl: &mut Option<std::fs::File>, command: &str) {
    if let Some(c) = ctl {
        std::io::Write::write_all(c, format!("{command}\n").as_bytes()).expect("perf");
    }
}
