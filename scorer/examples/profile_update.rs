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
        for e in events {
            s.apply(bundle, e, e.ts);
        }
        s.finish(bundle);
        let page = PageFacts::of(&events.iter().map(|e| (e, e.ts)).collect::<Vec<_>>());
        let d = decide(bundle, reader, s, *now, &page, &Request::default());
        walls += u64::from(d.decision.action == pulse_protocol::Action::Paywall);
    }
    walls
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
