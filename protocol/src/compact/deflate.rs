//! A small raw DEFLATE encoder (RFC 1951): LZ77 over a hash chain, reaching back into a preset
//! dictionary, parsed optimally for the fixed Huffman codes and written as one block with them.
//! Records are small (a few hundred bytes), where a dynamic Huffman table would cost about what
//! it saves; what the bytes gain comes from the matches, in the record and in the dictionary.
//! Any inflater reads the output; the dictionary must be given to it as the output before the
//! stream.

use alloc::vec;
use alloc::vec::Vec;

/// Longest distance DEFLATE can name.
const WINDOW: usize = 32 * 1024;
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
/// Candidates tried per position: enough for records, bounded for a hostile input.
const MAX_CHAIN: usize = 64;
const HASH_BITS: u32 = 12;

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Where `n` falls in a table of bases (DEFLATE's lengths or distances): the last base at
/// most `n`.
fn slot(bases: &[u16], n: usize) -> usize {
    bases
        .iter()
        .rposition(|&b| usize::from(b) <= n)
        .unwrap_or(0)
}

/// Bits the fixed code spends on a literal byte.
fn literal_bits(b: u8) -> u32 {
    8 + u32::from(b >= 144)
}

/// Extra bits of a length or distance `n` (less `free`) in DEFLATE's tables: none for the first
/// few, then one more for every doubling.
fn extra_bits(n: usize, free: u32) -> u32 {
    (usize::BITS - n.leading_zeros()).saturating_sub(free)
}

/// Bits the fixed code spends on a match length: its symbol (7 bits, 8 from length 115) and
/// extra bits (none up to 10, one more for every doubling; none for 258).
fn length_bits(len: usize) -> u32 {
    let extra = if len == MAX_MATCH {
        0
    } else {
        extra_bits(len - 3, 3)
    };
    7 + u32::from(len >= 115) + extra
}

/// Bits the fixed code spends on a match distance: its 5-bit code and extra bits (none up to
/// 4, one more for every doubling).
fn distance_bits(dist: usize) -> u32 {
    5 + extra_bits(dist - 1, 2)
}

/// Bits, least significant first, as DEFLATE packs them.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits<'_> {
    fn put(&mut self, value: u32, n: u32) {
        self.acc |= value << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: its bits go most significant first.
    fn code(&mut self, code: u32, n: u32) {
        self.put(code.reverse_bits() >> (32 - n), n);
    }

    /// A literal or length symbol in the fixed code.
    fn symbol(&mut self, s: u32) {
        match s {
            0..=143 => self.code(0x30 + s, 8),
            144..=255 => self.code(0x190 + s - 144, 9),
            256..=279 => self.code(s - 256, 7),
            _ => self.code(0xc0 + s - 280, 8),
        }
    }

    /// A match: its length (3 to 258) as a symbol and extra bits, then its distance (1 to
    /// 32768) as a fixed 5-bit code and extra bits.
    fn matched(&mut self, len: usize, dist: usize) {
        let i = slot(&LENGTH_BASE, len);
        self.symbol(257 + i as u32);
        self.put(
            (len - usize::from(LENGTH_BASE[i])) as u32,
            u32::from(LENGTH_EXTRA[i]),
        );
        let i = slot(&DIST_BASE, dist);
        self.code(i as u32, 5);
        self.put(
            (dist - usize::from(DIST_BASE[i])) as u32,
            u32::from(DIST_EXTRA[i]),
        );
    }

    fn finish(self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

fn hash(b: &[u8]) -> usize {
    let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

/// Earlier positions by the hash of their first three bytes.
struct Chain {
    /// 1 + the latest position of each hash (0: none).
    head: Vec<u32>,
    /// 1 + the position before each one with the same hash (0: none).
    prev: Vec<u32>,
}

impl Chain {
    fn insert(&mut self, all: &[u8], p: usize) {
        if p + MIN_MATCH <= all.len() {
            let h = hash(&all[p..]);
            self.prev[p] = self.head[h];
            self.head[h] = p as u32 + 1;
        }
    }

    /// The earlier texts matching the text at `p`, nearest first, each as the longest length
    /// it reaches beyond the ones before it and its distance: every length from 3 up to the
    /// longest, at the nearest distance that reaches it.
    fn matches(&self, all: &[u8], p: usize, mut found: impl FnMut(usize, usize, usize)) {
        if p + MIN_MATCH > all.len() {
            return;
        }
        let max = (all.len() - p).min(MAX_MATCH);
        let mut reached = MIN_MATCH - 1;
        let mut candidate = self.head[hash(&all[p..])];
        for _ in 0..MAX_CHAIN {
            let Some(q) = (candidate as usize).checked_sub(1) else {
                break;
            };
            // Only positions before `p` are in the chain.
            let dist = p - q;
            if dist > WINDOW {
                break;
            }
            candidate = self.prev[q];
            // Only a text that also matches the byte after the longest so far can be longer.
            if all[q + reached] != all[p + reached] {
                continue;
            }
            let len = all[q..]
                .iter()
                .zip(&all[p..p + max])
                .take_while(|(a, b)| a == b)
                .count();
            if len > reached {
                found(reached + 1, len, dist);
                reached = len;
                if len == max {
                    break;
                }
            }
        }
    }
}

/// Appends `data` compressed as one raw DEFLATE stream to `out`, with `dictionary` (its last
/// 32 KiB count) as the text before `data`.
///
/// The parse is optimal for the matches the chains find: with the fixed code every literal and
/// match has a known price in bits, so the cheapest way to write each prefix of `data` follows
/// from the cheapest ways to write the shorter ones (a shortest path, one step a symbol). A near
/// match a little shorter often beats a longer one far back in the dictionary, whose distance
/// costs up to 13 extra bits.
pub fn deflate(data: &[u8], dictionary: &[u8], out: &mut Vec<u8>) {
    let dictionary = &dictionary[dictionary.len().saturating_sub(WINDOW)..];
    let all = [dictionary, data].concat();
    let start = dictionary.len();
    let mut chain = Chain {
        head: vec![0; 1 << HASH_BITS],
        prev: vec![0; all.len()],
    };
    for p in 0..start {
        chain.insert(&all, p);
    }
    // cost[i]: fewest bits that write data[..i] (0: no way found yet; every i is reached, by
    // a literal at least, before it is read); step[i]: the symbol that ends that way, as its
    // length and distance << 16 (a literal: 1).
    let mut cost = vec![0u32; data.len() + 1];
    let mut step = vec![0u32; data.len() + 1];
    for (i, &byte) in data.iter().enumerate() {
        let here = cost[i];
        let mut reach = |len: usize, bits: u32, dist: usize| {
            if i + len < cost.len() && (cost[i + len] == 0 || bits < cost[i + len]) {
                cost[i + len] = bits;
                step[i + len] = (len | dist << 16) as u32;
            }
        };
        reach(1, here + literal_bits(byte), 0);
        chain.matches(&all, start + i, |from, to, dist| {
            let far = here + distance_bits(dist);
            for len in from..=to {
                reach(len, far + length_bits(len), dist);
            }
        });
        chain.insert(&all, start + i);
    }
    // Back from the end, each symbol is written where its text starts (over costs no longer
    // needed); then the symbols go out in order.
    let mut i = data.len();
    while i > 0 {
        let s = step[i];
        i -= (s & 0xffff) as usize;
        cost[i] = s;
    }
    let mut bits = Bits { out, acc: 0, n: 0 };
    // One block, the last, with the fixed codes (BFINAL 1, BTYPE 01).
    bits.put(1, 1);
    bits.put(1, 2);
    while i < data.len() {
        let (len, dist) = ((cost[i] & 0xffff) as usize, (cost[i] >> 16) as usize);
        if dist == 0 {
            bits.symbol(u32::from(data[i]));
        } else {
            bits.matched(len, dist);
        }
        i += len;
    }
    bits.symbol(256);
    bits.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matchs_price_is_what_writing_it_costs() {
        for len in MIN_MATCH..=MAX_MATCH {
            for dist in 1..=WINDOW {
                let mut out = Vec::new();
                let mut bits = Bits {
                    out: &mut out,
                    acc: 0,
                    n: 0,
                };
                bits.matched(len, dist);
                let written = bits.out.len() as u32 * 8 + bits.n;
                let priced = length_bits(len) + distance_bits(dist);
                assert_eq!(priced, written, "length {len}, distance {dist}");
            }
        }
        for b in 0..=255u8 {
            let mut out = Vec::new();
            let mut bits = Bits {
                out: &mut out,
                acc: 0,
                n: 0,
            };
            bits.symbol(u32::from(b));
            assert_eq!(literal_bits(b), bits.out.len() as u32 * 8 + bits.n);
        }
    }
}
