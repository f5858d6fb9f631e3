//! The corpus: inputs the fuzzer starts from, one file each under `fuzz/corpus/<target>/`.
//! [`generate`] makes it from `pulse-sim` traffic (what `pulse-load` sends): batches of 1, 10
//! and 50 events as JSON, as the tracker compresses them (zstd), as gzip and as two zstd frames;
//! plus a few hand-made edge cases.

use std::io::Write;
use std::path::Path;

use pulse_sim::{Traffic, TrafficConfig};
use pulse_tracker::{batch_json, encode_batch};

use crate::{NOW, Target};

/// A target's inputs.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The inputs.
    pub inputs: Vec<Vec<u8>>,
}

impl Corpus {
    /// Every file of `dir` (none when it does not exist).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut inputs = Vec::new();
        if dir.exists() {
            let mut paths: Vec<_> = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            paths.sort();
            for path in paths.into_iter().filter(|p| p.is_file()) {
                inputs.push(std::fs::read(path)?);
            }
        }
        Ok(Self { inputs })
    }

    /// Writes each input to `dir` as `<n>.bin`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (i, input) in self.inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:03}.bin")), input)?;
        }
        Ok(())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Hand-made inputs: the edges of the grammar and of the batch's shape.
const EDGES: &[&str] = &[
    "",
    "{}",
    "[]",
    "{\"v\":1}",
    "{\"v\":1,\"site_key\":\"demo\",\"anonymous_id\":\"a\",\"session_id\":\"s\",\"seq\":0,\"sent_at\":1800000000000,\"events\":[]}",
    "{\"v\":1,\"site_key\":\"d\\u0065mo\",\"anonymous_id\":\"a\",\"user_id\":\"\\ud83d\\ude00\",\"session_id\":\"s\",\"seq\":18446744073709551615,\"sent_at\":1800000000000,\"events\":[{\"id\":\"0000000000000000000000000000002a\",\"ts\":1800000000000,\"type\":\"custom\",\"name\":\"a.b\",\"page\":{\"url\":\"https:\\/\\/x\",\"referrer\":\"\",\"title\":\"t\\n\"},\"props\":{\"a\":[1,2.5e3,-0,null,true,{\"b\":\"\\u00e9\"}]}},{\"id\":\"zz\"},7]}",
    "[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]",
];

/// The corpus of `target`, from `batches` batches of simulated traffic per size.
pub fn generate(target: Target, batches: usize) -> Corpus {
    let mut traffic = Traffic::new(&TrafficConfig {
        readers: 50,
        seed: 9,
        ..TrafficConfig::default()
    });
    let mut inputs: Vec<Vec<u8>> = EDGES.iter().map(|e| e.as_bytes().to_vec()).collect();
    for size in [1, 10, 50] {
        for _ in 0..batches {
            let batch = traffic.next_batch(size, NOW);
            let json = batch_json(&batch);
            match target {
                Target::Parse => inputs.push(json),
                Target::Decode => {
                    let (a, b) = json.split_at(json.len() / 2);
                    let two = [
                        zstd::encode_all(a, 3).unwrap_or_default(),
                        zstd::encode_all(b, 3).unwrap_or_default(),
                    ]
                    .concat();
                    inputs.extend([encode_batch(&batch), gzip(&json), two, json]);
                }
            }
        }
    }
    Corpus { inputs }
}
