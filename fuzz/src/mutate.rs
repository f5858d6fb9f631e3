//! The mutational driver: seeded, so a run can be repeated; every mutant is run under
//! `catch_unwind`, and the first that fails is handed back with the panic's message.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Target;

/// A small seeded generator (xorshift64*): fuzzing needs speed and repeatability, not quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Bytes and tokens that tend to reach the edges of a JSON parser and a decoder.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud83d",
    b"\\ude00",
    b"\\u0000",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1e400",
    b"1.5",
    b"-1",
    b"18446744073709551616",
    b"\"events\":",
    b"\"props\":{",
    b"\"page\":{\"url\":\"u\"}",
    b"\"type\":\"custom\"",
    b"\"name\":\"a.b\"",
    b"\"id\":\"00000000000000000000000000000001\"",
    b"\"ts\":1800000000000",
    b"\"user_id\":null",
    b"\"v\":1",
    b" ",
    b"\n",
    b"\t",
    b"\xff",
    b"\xc3\xa9",
    b"\x00",
    b"\x28\xb5\x2f\xfd",
    b"\x1f\x8b\x08\x00",
];

/// Runs a target on mutants of a corpus.
#[derive(Debug)]
pub struct Fuzzer {
    target: Target,
    rng: Rng,
    /// Largest mutant, in bytes.
    max_len: usize,
}

impl Fuzzer {
    /// A fuzzer of `target` seeded with `seed`.
    pub fn new(target: Target, seed: u64) -> Self {
        Self {
            target,
            rng: Rng::new(seed),
            max_len: 256 * 1024,
        }
    }

    /// Runs the target on `input`; `Err` holds the panic's message.
    pub fn check(&self, input: &[u8]) -> Result<(), String> {
        let target = self.target;
        catch_unwind(AssertUnwindSafe(|| target.run(input))).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
    }

    /// One mutant of `input`, with material from `other` for splices: one to four mutations.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=self.rng.below(4) {
            self.mutate_once(&mut out, other);
        }
        out.truncate(self.max_len);
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>, other: &[u8]) {
        let at = self.rng.below(out.len() + 1);
        match self.rng.below(8) {
            0 if !out.is_empty() => {
                let i = self.rng.below(out.len());
                out[i] ^= 1 << self.rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = self.rng.below(out.len());
                out[i] = self.rng.next_u64() as u8;
            }
            2 => {
                let token = TOKENS[self.rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if !out.is_empty() => {
                let len = 1 + self.rng.below(16.min(out.len() - at.min(out.len() - 1)));
                let from = at.min(out.len() - 1);
                out.drain(from..(from + len).min(out.len()));
            }
            4 if !other.is_empty() => {
                // Splice: this input's start, the other's end.
                let cut = self.rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
            5 if !out.is_empty() => {
                // Repeat a slice (deep nesting, many events, long strings).
                let from = self.rng.below(out.len());
                let len = 1 + self.rng.below(64.min(out.len() - from));
                let piece = out[from..from + len].to_vec();
                for _ in 0..=self.rng.below(8) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            6 => {
                // Replace a token with another.
                let token = TOKENS[self.rng.below(TOKENS.len())];
                let end = (at + token.len()).min(out.len());
                out.splice(at..end, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }

    /// Runs `iterations` mutants of the `corpus`; the first failing input with its message.
    pub fn run(&mut self, corpus: &[Vec<u8>], iterations: u64) -> Result<u64, (Vec<u8>, String)> {
        for input in corpus {
            self.check(input).map_err(|e| (input.clone(), e))?;
        }
        if corpus.is_empty() {
            return Ok(0);
        }
        for _ in 0..iterations {
            let a = &corpus[self.rng.below(corpus.len())];
            let b = &corpus[self.rng.below(corpus.len())];
            let mutant = self.mutate(a, b);
            self.check(&mutant).map_err(|e| (mutant, e))?;
        }
        Ok(iterations)
    }
}
