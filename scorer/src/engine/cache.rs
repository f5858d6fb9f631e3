//! The working set of one partition: readers' decoded state in memory, with what the cache needs
//! to stay within its byte budget: a recency tick per reader, whether its state is dirty (not
//! yet written behind) and the flush generation that wrote it. Only clean readers whose last
//! write is durable are evicted; a dirty one waits for the next flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::state::ReaderState;

/// A cached reader's state, behind its own lock: a batch takes it inside its partition's lock,
/// the write-behind alone (after taking the handle under the partition's lock and letting go of
/// it), so the partition's other readers never wait for one reader's encoding.
pub(crate) type Cell = Arc<Mutex<ReaderState>>;

/// Bytes a cached reader costs besides its state: the map entry, the key and its second
/// pointer in the slot, the state's shared, locked cell.
pub(crate) const SLOT_OVERHEAD: usize = 144;

/// One cached reader.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The reader (the map's key, shared: the dirty list holds it without allocating).
    pub(crate) key: Arc<str>,
    pub(crate) state: Cell,
    /// When it was last used (a per-partition counter).
    pub(crate) tick: u64,
    /// Changed since it was last written.
    pub(crate) dirty: bool,
    /// The flush generation that last wrote it (0: never written by this process).
    pub(crate) generation: u64,
    /// Bytes accounted for it.
    pub(crate) bytes: usize,
    /// A placeholder while its state is read from the store, its cell locked by the reader of
    /// the store (see `Shared::update_if`): not evicted, not swept, and waited for.
    pub(crate) loading: bool,
}

/// One partition's cache.
#[derive(Debug, Default)]
pub(crate) struct Part {
    pub(crate) readers: HashMap<Arc<str>, Slot>,
    /// The readers made dirty since the last write-behind took the list (some may have gone
    /// since): the write-behind finds them without walking every reader under the
    /// partition's lock. Keys are shared with the map, so marking a reader allocates nothing
    /// (an allocation here, freed by the write-behind's thread, slowed the decisions' tail).
    pub(crate) dirty: Vec<Arc<str>>,
    pub(crate) bytes: usize,
    pub(crate) tick: u64,
    /// Flush generations up to this one are durable.
    pub(crate) durable: u64,
}

impl Part {
    /// A placeholder's state has been read from the store (into `cell`, now `heap` bytes): it
    /// becomes an ordinary clean reader, unless the slot is no longer that placeholder (an
    /// erasure or a release removed it meanwhile).
    pub(crate) fn loaded(&mut self, reader: &str, cell: &Cell, heap: usize) {
        let Some(slot) = self.readers.get_mut(reader) else {
            return;
        };
        if !slot.loading || !Arc::ptr_eq(&slot.state, cell) {
            return;
        }
        slot.loading = false;
        let now = SLOT_OVERHEAD + reader.len() + heap;
        self.bytes = self.bytes.saturating_sub(slot.bytes) + now;
        slot.bytes = now;
    }

    /// Removes a placeholder whose load failed, if it is still there.
    pub(crate) fn unload(&mut self, reader: &str, cell: &Cell) {
        if self
            .readers
            .get(reader)
            .is_some_and(|s| s.loading && Arc::ptr_eq(&s.state, cell))
        {
            self.remove(reader);
        }
    }

    /// After a reader's state changed to `heap` bytes: marks it dirty (to be written behind)
    /// and re-accounts its bytes, in one lookup.
    pub(crate) fn changed(&mut self, reader: &str, heap: usize) {
        let Some(slot) = self.readers.get_mut(reader) else {
            return;
        };
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(Arc::clone(&slot.key));
        }
        let now = SLOT_OVERHEAD + reader.len() + heap;
        self.bytes = self.bytes.saturating_sub(slot.bytes) + now;
        slot.bytes = now;
    }

    /// Inserts a reader's state cell, of `heap` bytes; `loading` for a placeholder.
    pub(crate) fn insert(
        &mut self,
        reader: &str,
        state: Cell,
        heap: usize,
        dirty: bool,
        loading: bool,
    ) -> &mut Slot {
        self.tick += 1;
        let bytes = SLOT_OVERHEAD + reader.len() + heap;
        self.bytes += bytes;
        let key: Arc<str> = reader.into();
        if dirty {
            self.dirty.push(Arc::clone(&key));
        }
        let slot = Slot {
            key: Arc::clone(&key),
            state,
            tick: self.tick,
            dirty,
            generation: 0,
            bytes,
            loading,
        };
        match self.readers.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let old = o.insert(slot);
                self.bytes -= old.bytes.min(self.bytes);
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(slot),
        }
    }

    /// Removes a reader.
    pub(crate) fn remove(&mut self, reader: &str) -> Option<Slot> {
        let slot = self.readers.remove(reader)?;
        self.bytes -= slot.bytes.min(self.bytes);
        Some(slot)
    }

    /// Evicts the least recently used evictable readers until the partition is under `budget`
    /// (to 90 % of it, so eviction runs in batches). Returns how many went, and whether dirty
    /// readers are holding memory (a flush would free it).
    pub(crate) fn evict(&mut self, budget: usize) -> (usize, bool) {
        if self.bytes <= budget {
            return (0, false);
        }
        let target = budget / 10 * 9;
        let durable = self.durable;
        let mut candidates: Vec<(u64, Arc<str>)> = self
            .readers
            .iter()
            .filter(|(_, s)| !s.dirty && !s.loading && s.generation <= durable)
            .map(|(k, s)| (s.tick, k.clone()))
            .collect();
        candidates.sort_unstable_by_key(|(t, _)| *t);
        let mut evicted = 0;
        for (_, key) in candidates {
            if self.bytes <= target {
                break;
            }
            self.remove(&key);
            evicted += 1;
        }
        (evicted, self.bytes > budget)
    }
}

impl Slot {
    pub(crate) fn touch(&mut self, tick: u64) {
        self.tick = tick;
    }
}
