//! Bytes of reader state and the process's memory with many readers: `cargo bench -p
//! pulse-scorer --bench state_size [-- READERS]` (default 1,000,000).
//!
//! Every reader gets one batch of 10 events (from `pulse-sim`'s readership, sent under a key of
//! its own) of the realistic bundle (37 features) through the engine. Printed: bytes per reader in memory (the cache's accounting) and encoded
//! (what the store keeps), and the resident set (VmRSS, VmHWM) with every reader in memory,
//! first with the cache at its default (64 MiB) and the store on disk (fjall, in a temporary
//! folder), then with every reader in memory (and the in-memory store holding their encoded
//! state too).

use std::sync::Arc;

use pulse_scorer::{Bundle, DAY_MS, Engine, EngineConfig, FjallStore, MemoryStore, StateStore};
use pulse_sim::{Traffic, TrafficConfig};

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run<S: StateStore + 'static>(store: S, readers: usize, cache_bytes: usize, label: &str) {
    let bundle = Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .expect("compiles");
    let fs = bundle.feature_set;
    let (engine, _) = Engine::open(
        store,
        bundle,
        EngineConfig {
            cache_bytes,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    // Realistic batches from a small simulated readership, each sent under a reader key of
    // its own: 1,000,000 readers' state without the simulator holding 1,000,000 readers.
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: 10_000,
        ..TrafficConfig::default()
    });
    let now = 20_000 * DAY_MS;
    let rss_before = status("VmRSS:");
    let mut batches = 0u64;
    for r in 0..readers {
        let b = traffic.next_batch(10, now);
        let timed: Vec<_> = b.events.iter().map(|e| (e, e.ts)).collect();
        engine
            .score(
                &format!("{r:032x}"),
                &timed,
                now,
                &pulse_scorer::Request::default(),
            )
            .expect("score");
        batches += 1;
    }
    engine.flush().expect("flush");
    let cache = engine.cache();
    let mut encoded = 0u64;
    let mut stored = 0u64;
    for p in 0..engine.config().partitions {
        engine
            .store()
            .scan(fs, p, &mut |_, v| {
                encoded += v.len() as u64;
                stored += 1;
                true
            })
            .expect("scan");
    }
    println!(
        "{label}: {readers} readers, {batches} batches of 10 events; in memory {} readers, {:.0} bytes/reader accounted; stored {stored} readers, {:.0} bytes/reader encoded; VmRSS {} MiB (+{} MiB), VmHWM {} MiB",
        cache.readers,
        cache.bytes as f64 / cache.readers.max(1) as f64,
        encoded as f64 / stored.max(1) as f64,
        status("VmRSS:") / 1024,
        status("VmRSS:").saturating_sub(rss_before) / 1024,
        status("VmHWM:") / 1024,
    );
}

fn main() {
    let readers: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    run(
        FjallStore::open(dir.path()).expect("store"),
        readers,
        EngineConfig::default().cache_bytes,
        "default cache (64 MiB), the rest on disk (fjall)",
    );
    run(
        Arc::new(MemoryStore::default()),
        readers,
        8 << 30,
        "every reader in memory (cache and store)",
    );
}
