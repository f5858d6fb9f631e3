//! Where reader state lives between batches and across restarts: the [`StateStore`] trait (the
//! engine's IO boundary for state) and [`MemoryStore`] for tests, benchmarks and offline tools.
//! The engine keeps the working set in memory and writes behind; the store holds every reader.
//!
//! State is kept per feature set (the bundle's hash of what state depends on), per partition
//! (a hash of the reader key, see `engine::partition_of`) and per reader, so that a new
//! feature set is built beside the old one and a partition's readers can move as a unit.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A failure of the state store, with a message for logs (never shown to clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

/// One write of a batch: a reader's new state, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The reader's partition.
    pub partition: u16,
    /// The reader key.
    pub reader: String,
    /// The encoded state, or `None` to forget the reader.
    pub value: Option<Vec<u8>>,
}

/// A copy of a store's writes kept elsewhere (Kafka mode's state changelog), made after the
/// store's own write: a write whose copy fails fails (the engine keeps its states dirty and
/// writes them again), while what the store wrote stays.
pub trait StoreMirror: Send + Sync {
    /// Copies one write of the store (`fs`, the states or forgettings, the metadata).
    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError>;
}

/// Keeps encoded reader state. Safe to call from many threads; the engine never writes one
/// reader from two threads at once.
pub trait StateStore: Send + Sync {
    /// A reader's state in feature set `fs`.
    fn get(&self, fs: u64, partition: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies the writes and the metadata atomically (all or none survive a crash).
    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError>;
    /// Calls `f(reader, state)` for every reader of a partition in feature set `fs`, until it
    /// returns false.
    fn scan(
        &self,
        fs: u64,
        partition: u16,
        f: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError>;
    /// A metadata value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The feature sets that have state.
    fn feature_sets(&self) -> Result<Vec<u64>, StoreError>;
    /// Forgets every reader of a feature set.
    fn drop_feature_set(&self, fs: u64) -> Result<(), StoreError>;
    /// Bytes the store holds on disk (0 when unknown).
    fn disk_bytes(&self) -> u64 {
        0
    }
}

type Key = (u64, u16, String);

/// A [`StateStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: Mutex<BTreeMap<Key, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError("poisoned".into())
}

impl MemoryStore {
    /// Number of readers stored in feature set `fs`.
    pub fn len(&self, fs: u64) -> usize {
        self.states
            .lock()
            .map(|s| s.keys().filter(|k| k.0 == fs).count())
            .unwrap_or(0)
    }
}

impl StateStore for MemoryStore {
    fn get(&self, fs: u64, partition: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let states = self.states.lock().map_err(poisoned)?;
        Ok(states.get(&(fs, partition, reader.to_owned())).cloned())
    }

    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut states = self.states.lock().map_err(poisoned)?;
        let mut m = self.meta.lock().map_err(poisoned)?;
        for w in writes {
            let key = (fs, w.partition, w.reader.clone());
            match &w.value {
                Some(v) => {
                    states.insert(key, v.clone());
                }
                None => {
                    states.remove(&key);
                }
            }
        }
        for (k, v) in meta {
            m.insert((*k).to_owned(), v.clone());
        }
        Ok(())
    }

    fn scan(
        &self,
        fs: u64,
        partition: u16,
        f: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let items: Vec<(String, Vec<u8>)> = {
            let states = self.states.lock().map_err(poisoned)?;
            states
                .range((fs, partition, String::new())..)
                .take_while(|(k, _)| k.0 == fs && k.1 == partition)
                .map(|(k, v)| (k.2.clone(), v.clone()))
                .collect()
        };
        for (reader, state) in &items {
            if !f(reader, state) {
                break;
            }
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.lock().map_err(poisoned)?.get(key).cloned())
    }

    fn feature_sets(&self) -> Result<Vec<u64>, StoreError> {
        let states = self.states.lock().map_err(poisoned)?;
        let mut sets: Vec<u64> = states.keys().map(|k| k.0).collect();
        sets.dedup();
        Ok(sets)
    }

    fn drop_feature_set(&self, fs: u64) -> Result<(), StoreError> {
        self.states
            .lock()
            .map_err(poisoned)?
            .retain(|k, _| k.0 != fs);
        Ok(())
    }
}

impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn get(&self, fs: u64, partition: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(fs, partition, reader)
    }
    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        (**self).write(fs, writes, meta)
    }
    fn scan(
        &self,
        fs: u64,
        partition: u16,
        f: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        (**self).scan(fs, partition, f)
    }
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).meta(key)
    }
    fn feature_sets(&self) -> Result<Vec<u64>, StoreError> {
        (**self).feature_sets()
    }
    fn drop_feature_set(&self, fs: u64) -> Result<(), StoreError> {
        (**self).drop_feature_set(fs)
    }
    fn disk_bytes(&self) -> u64 {
        (**self).disk_bytes()
    }
}
