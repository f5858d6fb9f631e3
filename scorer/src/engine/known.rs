//! Which readers may be in the state store: a Bloom filter of every key written, so that a
//! reader never stored (a first visit, the commonest miss of the cache) is answered "not
//! stored" without a read of the store. A read of fjall waits behind its version lock while
//! the tree persists a new version (an fsync; BENCH.md section 2): a reader the filter has
//! never seen no longer waits with it.
//!
//! A key written once answers "maybe" (a read of the store) until the filter is filled again,
//! deleted or not. It grows in layers, each four times the last (the first for 65,536 keys),
//! about 10 bits a key at a 1 % false-positive rate per layer: 1,000,000 readers take about
//! 1.7 MB. Until the keys already on disk have been added (a scan of the store in the
//! background), it answers "maybe" for every reader. Readers the store forgets (TTL, erasure)
//! stay in it, so it is filled afresh from the store once it has taken twice as many keys as
//! the store held when it was filled, plus a slack (a million): its size follows the store's,
//! not every reader ever seen.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Keys the first layer is sized for.
const FIRST: u64 = 1 << 16;
/// Bits per key.
const BITS_PER_KEY: u64 = 10;
/// Probes per key (the best for 10 bits a key: about 0.8 % false positives).
const PROBES: u64 = 7;

#[derive(Debug)]
struct Layer {
    bits: Vec<u64>,
    /// Keys it is sized for, and keys added.
    capacity: u64,
    added: u64,
}

impl Layer {
    fn new(capacity: u64) -> Self {
        let words = (capacity * BITS_PER_KEY).div_ceil(64);
        Self {
            bits: vec![0; words as usize],
            capacity,
            added: 0,
        }
    }

    /// Probe `i` of `hash` (double hashing): the word and the bit in it.
    fn probe(&self, hash: u64, i: u64) -> (usize, u64) {
        let m = self.bits.len() as u64 * 64;
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn insert(&mut self, hash: u64) {
        for i in 0..PROBES {
            let (word, bit) = self.probe(hash, i);
            self.bits[word] |= bit;
        }
        self.added += 1;
    }

    fn contains(&self, hash: u64) -> bool {
        (0..PROBES).all(|i| {
            let (word, bit) = self.probe(hash, i);
            self.bits[word] & bit != 0
        })
    }
}

/// The readers that may be stored in one feature set (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Known {
    layers: RwLock<Vec<Layer>>,
    /// Every key on disk at start has been added.
    complete: AtomicBool,
    /// Keys added in all, and keys the scan found.
    added: AtomicU64,
    scanned: AtomicU64,
    /// Keys beyond twice the scanned ones before it is outgrown.
    slack: u64,
}

impl Known {
    /// An empty filter that answers "maybe" until [`Known::completed`], outgrown `slack` keys
    /// past twice what the scan finds.
    pub(crate) fn new(slack: u64) -> Self {
        Self {
            layers: RwLock::new(vec![Layer::new(FIRST)]),
            complete: AtomicBool::new(false),
            added: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
            slack,
        }
    }

    fn hash(key: &[u8]) -> u64 {
        // A fixed key: the filter lives in one process, and its hash need not be secret (a
        // forged id that collides costs one read of the store, as any stored reader does).
        BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
    }

    /// Adds keys (before they are written).
    pub(crate) fn add<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let Ok(mut layers) = self.layers.write() else {
            return;
        };
        for key in keys {
            let hash = Self::hash(key);
            if layers.iter().any(|l| l.contains(hash)) {
                continue;
            }
            let full = layers.last().is_none_or(|l| l.added >= l.capacity);
            if full {
                let capacity = layers.last().map_or(FIRST, |l| l.capacity * 4);
                layers.push(Layer::new(capacity));
            }
            if let Some(last) = layers.last_mut() {
                last.insert(hash);
                self.added.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The keys on disk at start, `scanned` of them, are all added: "not stored" answers may
    /// be given.
    pub(crate) fn completed(&self, scanned: u64) {
        self.scanned.store(scanned, Ordering::Relaxed);
        self.complete.store(true, Ordering::Release);
    }

    /// Whether it holds so many more keys than the store did that it should be filled afresh.
    pub(crate) fn outgrown(&self) -> bool {
        let scanned = self.scanned.load(Ordering::Relaxed);
        self.is_complete()
            && self.added.load(Ordering::Relaxed)
                > scanned.saturating_mul(2).saturating_add(self.slack)
    }

    /// Whether every key on disk at start has been added.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Whether `key` may be stored: false only when it was surely never written.
    pub(crate) fn maybe(&self, key: &[u8]) -> bool {
        if !self.is_complete() {
            return true;
        }
        let hash = Self::hash(key);
        self.layers
            .read()
            .map_or(true, |layers| layers.iter().any(|l| l.contains(hash)))
    }

    /// Bytes it takes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.layers
            .read()
            .map_or(0, |l| l.iter().map(|l| l.bits.len() * 8).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_added_is_maybe_and_few_others_are() {
        let known = Known::new(1 << 20);
        let keys: Vec<Vec<u8>> = (0..300_000u32)
            .map(|i| format!("reader-{i}").into_bytes())
            .collect();
        known.add(keys.iter().map(Vec::as_slice));
        // Before completion every reader is "maybe".
        assert!(known.maybe(b"never"));
        known.completed(0);
        assert!(!known.outgrown());
        assert!(keys.iter().all(|k| known.maybe(k)), "no false negative");
        let others = (0..100_000u32)
            .filter(|i| known.maybe(format!("other-{i}").as_bytes()))
            .count();
        // Two layers (65,536 and 262,144 keys), each under 1 %.
        assert!(others < 2_500, "{others} false positives in 100,000");
        assert_eq!(known.layers.read().unwrap().len(), 2);
        assert_eq!(known.heap_bytes(), (65_536 + 262_144) * 10 / 8);
    }

    #[test]
    fn a_key_added_twice_counts_once_and_twice_the_store_and_the_slack_is_outgrown() {
        let known = Known::new(10);
        let keys: Vec<[u8; 4]> = (0..100u32).map(u32::to_le_bytes).collect();
        for _ in 0..3 {
            known.add(keys.iter().map(|k| &k[..]));
        }
        assert_eq!(known.added.load(Ordering::Relaxed), 100);
        known.completed(100);
        assert!(!known.outgrown(), "no more keys than the store");
        let more: Vec<[u8; 8]> = (0..110u64).map(u64::to_le_bytes).collect();
        known.add(more.iter().map(|k| &k[..]));
        assert!(!known.outgrown(), "210: twice the store and the slack");
        known.add([&b"one more"[..]]);
        assert!(known.outgrown());
    }
}
