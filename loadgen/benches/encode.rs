//! What encoding a batch costs the tracker's code (run natively; the browser runs the same Rust
//! as Wasm, somewhat slower): the record and its DEFLATE body against the site's dictionary, as
//! the tracker sends it, and without one (a reader's first page), for 1-, 10- and 50-event
//! batches of the simulated traffic `pulse-load bytes` measures. The baseline, in the same run:
//! gzip (flate2, level 6) of the same batch's JSON.
//!
//! `cargo bench -p pulse-load --bench encode`

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, criterion_group, criterion_main};
use pulse_protocol::WireBatch;
use pulse_protocol::compact::{dictionary_hash, encode_body, encode_record, train_dictionary};
use pulse_sim::{Traffic, TrafficConfig};
use pulse_tracker::batch_json;

fn encode(c: &mut Criterion) {
    let now = 1_800_000_000_000;
    let mut others = Traffic::new(&TrafficConfig {
        readers: 1_000,
        seed: 7,
        ..TrafficConfig::default()
    });
    let samples: Vec<WireBatch> = (0..1_000)
        .map(|i| {
            WireBatch::from(&others.next_batch([1, 10, 50][i % 3], now - 1_000_000 + i as u64))
        })
        .collect();
    let dict = train_dictionary(&samples, 16 * 1024, 5);
    let named = Some((dictionary_hash(&dict), dict.as_slice()));
    for n in [1, 10, 50] {
        let mut traffic = Traffic::new(&TrafficConfig {
            readers: 1_000,
            seed: 42,
            ..TrafficConfig::default()
        });
        let batches: Vec<_> = (0..64)
            .map(|b| traffic.next_batch(n, now + b * 1_000))
            .collect();
        let wire: Vec<WireBatch> = batches.iter().map(WireBatch::from).collect();
        let mut group = c.benchmark_group(format!("encode {n}-event batch"));
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % wire.len();
            i
        };
        group.bench_function("compact + dictionary", |b| {
            b.iter(|| encode_body(&encode_record(black_box(&wire[next()])), named))
        });
        group.bench_function("compact, no dictionary", |b| {
            b.iter(|| encode_body(&encode_record(black_box(&wire[next()])), None))
        });
        group.bench_function("gzip -6 of the JSON (baseline)", |b| {
            b.iter(|| {
                let text = batch_json(black_box(&batches[next()]));
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&text).unwrap();
                gz.finish().unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
