//! The scorer's own decide time: apply a batch to a reader's state and decide, over the
//! in-memory store (no disk). `cargo bench -p pulse-scorer --bench decide`.
//!
//! 10,000 simulated readers, warmed with 20,000 batches; every measured batch has fresh event
//! ids. Readers' histories grow while it runs (as they would over a day of reading).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pulse_protocol::{Event, EventId};
use pulse_scorer::{DAY_MS, MemoryStore, MeterRules, Scorer};
use pulse_sim::{Traffic, TrafficConfig};

const NOW: u64 = 20_000 * DAY_MS;

/// Batches from 10,000 simulated readers, with their event times.
fn batches(events: usize, count: usize) -> Vec<(String, Vec<Event>)> {
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: 10_000,
        ..TrafficConfig::default()
    });
    (0..count)
        .map(|_| {
            let b = traffic.next_batch(events, NOW);
            (b.header.reader_key().to_owned(), b.events)
        })
        .collect()
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for events in [1, 10, 50] {
        // Readers already have some history: warm the store with a first pass.
        let scorer = Scorer::new(MemoryStore::default(), MeterRules::default());
        let warm = batches(events, 20_000);
        for (reader, evs) in &warm {
            let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
            let _ = scorer.score(reader, &timed, NOW);
        }
        let run = batches(events, 20_000);
        let (mut i, mut next_id) = (0, 1u128 << 100);
        group.bench_function(format!("{events}_events"), |b| {
            b.iter_batched(
                || {
                    // Fresh ids each time, so that no event is a duplicate the scorer skips.
                    let (reader, mut evs) = run[i % run.len()].clone();
                    i += 1;
                    for e in &mut evs {
                        e.id = EventId(next_id);
                        next_id += 1;
                    }
                    (reader, evs)
                },
                |(reader, evs)| {
                    let timed: Vec<_> = evs.iter().map(|e| (e, e.ts)).collect();
                    black_box(scorer.score(&reader, &timed, NOW))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
