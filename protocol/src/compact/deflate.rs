//! A small raw DEFLATE encoder (RFC 1951): greedy LZ77 over a hash chain, reaching back into a
//! preset dictionary, written as one block with the fixed Huffman codes. Records are small (a few
//! hundred bytes), where a dynamic Huffman table would cost about what it saves; what the bytes
//! gain comes from the matches, in the record and in the dictionary. Any inflater reads the
//! output; the dictionary must be given to it as the output before the stream.

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

    /// A match length (3 to 258): its symbol, then its extra bits.
    fn length(&mut self, len: usize) {
        let i = LENGTH_BASE
            .iter()
            .rposition(|&b| usize::from(b) <= len)
            .unwrap_or(0);
        self.symbol(257 + i as u32);
        self.put(
            (len - usize::from(LENGTH_BASE[i])) as u32,
            u32::from(LENGTH_EXTRA[i]),
        );
    }

    /// A match distance (1 to 32768): its fixed 5-bit code, then its extra bits.
    fn distance(&mut self, dist: usize) {
        let i = DIST_BASE
            .iter()
            .rposition(|&b| usize::from(b) <= dist)
            .unwrap_or(0);
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

    /// The longest earlier text matching the text at `p`: (length, distance).
    fn longest(&self, all: &[u8], p: usize) -> (usize, usize) {
        if p + MIN_MATCH > all.len() {
            return (0, 0);
        }
        let max = (all.len() - p).min(MAX_MATCH);
        let mut best = (0, 0);
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
            let len = all[q..]
                .iter()
                .zip(&all[p..p + max])
                .take_while(|(a, b)| a == b)
                .count();
            if len > best.0 {
                best = (len, dist);
                if len == max {
                    break;
                }
            }
            candidate = self.prev[q];
        }
        best
    }
}

/// Appends `data` compressed as one raw DEFLATE stream to `out`, with `dictionary` (its last
/// 32 KiB count) as the text before `data`.
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
    let mut bits = Bits { out, acc: 0, n: 0 };
    // One block, the last, with the fixed codes (BFINAL 1, BTYPE 01).
    bits.put(1, 1);
    bits.put(1, 2);
    let mut p = start;
    while p < all.len() {
        let (len, dist) = chain.longest(&all, p);
        chain.insert(&all, p);
        // Lazy matching: when a longer match starts one byte on, this byte goes as a literal.
        if len < MIN_MATCH || (len < MAX_MATCH && chain.longest(&all, p + 1).0 > len + 1) {
            bits.symbol(u32::from(all[p]));
            p += 1;
            continue;
        }
        bits.length(len);
        bits.distance(dist);
        for q in p + 1..p + len {
            chain.insert(&all, q);
        }
        p += len;
    }
    bits.symbol(256);
    bits.finish();
}
