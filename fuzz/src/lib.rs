//! Fuzz targets for what reads bytes from the network: the body decoder
//! ([`pulse_http::decode`]) and the batch parser ([`pulse_protocol::parse_batch`]); a mutational
//! driver that runs them on stable Rust; and the corpus they start from.
//!
//! Each target has libFuzzer's shape, `fn(&[u8])`, and panics when a property fails, so the
//! same functions can be wrapped by `cargo fuzz` or `afl` where a nightly toolchain or AFL++ is
//! at hand. Here only stable Rust exists: [`Fuzzer`] (seeded, no coverage feedback) mutates the
//! corpus (byte flips, insertions, deletions, splices, JSON tokens) and runs a target on every
//! mutant, catching panics. The test suite replays the corpus and runs a short, fixed-seed pass
//! of each target (`fuzz/tests/fuzz.rs`); `pulse-fuzz run` runs longer and keeps what fails.
//!
//! No IO here but [`Corpus`] reading and writing its folder.

mod corpus;
mod mutate;
mod targets;

pub use corpus::{Corpus, generate};
pub use mutate::{Fuzzer, Rng};
pub use targets::{DECODE_CAP, NOW, Target, decode, parse};
