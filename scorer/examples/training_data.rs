//! Training data for a propensity model, with a known ground truth: a simulated month of
//! `pulse-sim`'s [`Readership`] (readers with a hidden propensity to subscribe) runs through
//! Pulse's own [`ReaderState`] with `examples/bundles/reader-profile.toml`, and each reader's
//! numeric features at the end of the month become a CSV row, with the hidden propensity and a
//! label drawn from it.
//!
//! ```text
//! cargo run -p pulse-scorer --example training_data -- \
//!     [--readers 20000] [--seed 1] [--out examples/train/data/readers.csv]
//! ```
//!
//! Columns: the bundle's numeric features in bundle order (every template but `last`, `top_k`
//! and the absolute times `first_seen` and `last_seen`; missing values empty), then
//! `propensity` (the truth, for judging a model, never for training it) and `label` (0 or 1).
//! Deterministic: the same arguments write the same file.

use std::error::Error;
use std::io::Write;

use pulse_scorer::{Bundle, ReaderState, Value};
use pulse_sim::{Readership, ReadershipConfig};

/// Templates whose values are numbers a model can read.
const NUMERIC: [&str; 14] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "distinct",
    "recency",
    "active_days",
    "sessions",
    "pages_per_session",
    "session_length",
    "rfv",
    "first_seen",
    "last_seen",
];
/// Numeric but absolute times: they tell when, not how a reader behaves.
const EXCLUDED: [&str; 2] = ["first_seen", "last_seen"];

fn main() -> Result<(), Box<dyn Error>> {
    let mut readers = 20_000;
    let mut seed = 1;
    let mut out = String::from("examples/train/data/readers.csv");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} takes a value"));
        match arg.as_str() {
            "--readers" => readers = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--out" => out = value()?,
            _ => return Err(format!("unknown argument {arg:?}").into()),
        }
    }
    let bundle = Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))?;
    let columns: Vec<usize> = (0..bundle.features.len())
        .filter(|&i| {
            let t = bundle.features[i].template.as_str();
            NUMERIC.contains(&t) && !EXCLUDED.contains(&t)
        })
        .collect();

    let readership = Readership::new(&ReadershipConfig {
        readers,
        seed,
        ..ReadershipConfig::default()
    });
    let labels = readership.labels(seed);
    let now = readership.end_ms();

    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let header: Vec<&str> = columns
        .iter()
        .map(|&i| bundle.features[i].name.as_str())
        .chain(["propensity", "label"])
        .collect();
    writeln!(w, "{}", header.join(","))?;
    let mut positives = 0;
    for (r, &label) in labels.iter().enumerate() {
        let mut state = ReaderState::new(&bundle);
        for batch in readership.visits(r) {
            for e in &batch.events {
                state.apply(&bundle, e, e.ts);
            }
            state.finish(&bundle);
        }
        let mut row: Vec<String> = columns
            .iter()
            .map(|&i| match state.value(&bundle, i, now) {
                Value::Num(n) => format!("{n}"),
                Value::Bool(b) => u8::from(b).to_string(),
                _ => String::new(),
            })
            .collect();
        row.push(format!("{}", readership.profile(r).propensity()));
        row.push(u8::from(label).to_string());
        positives += usize::from(label);
        writeln!(w, "{}", row.join(","))?;
    }
    w.flush()?;
    println!(
        "{out}: {} readers, {} features, {positives} labelled 1",
        readership.readers(),
        columns.len()
    );
    Ok(())
}
