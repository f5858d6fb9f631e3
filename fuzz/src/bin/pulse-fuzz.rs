//! `pulse-fuzz`: runs the fuzz targets on stable Rust, or regenerates their corpus.
//!
//! ```sh
//! cargo run --release -p pulse-fuzz -- run parse --seconds 600
//! cargo run --release -p pulse-fuzz -- corpus
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pulse_fuzz::{Corpus, Fuzzer, Target, generate};

#[derive(Parser, Debug)]
#[command(name = "pulse-fuzz", version)]
struct Args {
    /// The corpus folder (one subfolder per target).
    #[arg(long, default_value = "fuzz/corpus", global = true)]
    corpus: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mutates the target's corpus and runs the target until a property fails or time is up;
    /// a failing input is written to `fuzz/artifacts/<target>/` and the run exits 1.
    Run {
        /// `decode` or `parse`.
        target: String,
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed of the mutations (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Where failing inputs are kept.
        #[arg(long, default_value = "fuzz/artifacts")]
        artifacts: PathBuf,
    },
    /// Writes the corpus of every target from simulated traffic (replacing what is there).
    Corpus {
        /// Batches per size (1, 10 and 50 events).
        #[arg(long, default_value_t = 4)]
        batches: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Corpus { batches } => {
            for target in Target::ALL {
                let dir = args.corpus.join(target.name());
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                let corpus = generate(target, batches);
                corpus.save(&dir)?;
                println!(
                    "{}: {} inputs in {}",
                    target.name(),
                    corpus.inputs.len(),
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Run {
            target,
            seconds,
            seed,
            artifacts,
        } => {
            let target = Target::named(&target).context("the target is decode or parse")?;
            let corpus = Corpus::load(&args.corpus.join(target.name()))?;
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            // Panics are expected and caught; keep their messages off the terminal.
            std::panic::set_hook(Box::new(|_| {}));
            let mut fuzzer = Fuzzer::new(target, seed);
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut total = 0;
            while Instant::now() < until {
                match fuzzer.run(&corpus.inputs, 10_000) {
                    Ok(n) => total += n,
                    Err((input, message)) => {
                        let dir = artifacts.join(target.name());
                        std::fs::create_dir_all(&dir)?;
                        let path = dir.join(format!("crash-{seed}-{total}.bin"));
                        std::fs::write(&path, &input)?;
                        eprintln!(
                            "{}: {message}\n  input kept in {}",
                            target.name(),
                            path.display()
                        );
                        std::process::exit(1);
                    }
                }
                if corpus.inputs.is_empty() {
                    break;
                }
            }
            println!(
                "{}: {total} mutants (seed {seed}), no failure",
                target.name()
            );
            Ok(())
        }
    }
}
