//! Reader state on disk in the embedded store (fjall): a keyspace per feature set
//! (`state_<hash>`), keys `partition (u16, big-endian) ++ reader key`, and a `scorer_meta`
//! keyspace. Each write is one atomic batch, without fsync (a write-behind's batches are of at
//! most a MiB, the replay position in the last): state need not be durable on its own (the log
//! is), only never behind the replay position stored with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::state::{StateStore, StoreError, StoreMirror, Write};

const META: &str = "scorer_meta";
const PREFIX: &str = "state_";

/// Reader state in a fjall database (shared with the gateway's log).
pub struct FjallStore {
    db: Database,
    meta: Keyspace,
    sets: Mutex<HashMap<u64, Keyspace>>,
    /// Where every write is copied, once set (Kafka mode's changelog).
    mirror: std::sync::RwLock<Option<Arc<dyn StoreMirror>>>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn key(partition: u16, reader: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + reader.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(reader.as_bytes());
    k
}

/// Most bytes of a feature set's memtable before fjall seals and flushes it (fjall's default,
/// 64 MiB, would hold more than the reader-state cache itself).
const MEMTABLE_BYTES: u64 = 8 << 20;

impl FjallStore {
    /// Opens (or creates) a database in `dir` for reader state, its memory bounded: a block
    /// cache of 8 MiB (the engine keeps its own cache of decoded state), memtables of 8 MiB, and
    /// journals of at most 64 MiB (fjall's least) before memtables are flushed.
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir)
            .cache_size(8 << 20)
            .max_journaling_size(64 << 20)
            .open()
            .map_err(err)?;
        Self::new(db)
    }

    /// Reader state in `db`.
    pub fn new(db: Database) -> Result<Self, StoreError> {
        let meta = db
            .keyspace(META, KeyspaceCreateOptions::default)
            .map_err(err)?;
        Ok(Self {
            db,
            meta,
            sets: Mutex::new(HashMap::new()),
            mirror: std::sync::RwLock::new(None),
        })
    }

    /// Stops copying writes (see [`FjallStore::set_mirror`]); whether there was a mirror.
    pub fn clear_mirror(&self) -> bool {
        self.mirror
            .write()
            .map(|mut m| m.take().is_some())
            .unwrap_or(false)
    }

    /// Copies every write from now on to `mirror` as well (see [`StoreMirror`]).
    pub fn set_mirror(&self, mirror: Arc<dyn StoreMirror>) {
        if let Ok(mut m) = self.mirror.write() {
            *m = Some(mirror);
        }
    }

    /// Applies writes to this store alone, never to its mirror: states restored from the
    /// mirror itself (a partition a scorer takes over).
    pub fn write_local(&self, fs: u64, writes: &[Write]) -> Result<(), StoreError> {
        let ks = self.set(fs)?;
        let mut batch = self.db.batch();
        for w in writes {
            match &w.value {
                Some(v) => batch.insert(&ks, key(w.partition, &w.reader), v.as_slice()),
                None => batch.remove(&ks, key(w.partition, &w.reader)),
            }
        }
        batch.commit().map_err(err)
    }

    /// Forgets every reader of `partition` in every feature set, in this store alone (a
    /// partition a scorer no longer owns: its next owner keeps it). How many were forgotten.
    pub fn clear_partition(&self, partition: u16) -> Result<u64, StoreError> {
        let mut n = 0;
        for fs in self.feature_sets()? {
            let ks = self.set(fs)?;
            let mut batch = self.db.batch();
            for guard in ks.prefix(partition.to_be_bytes()) {
                let k = guard.key().map_err(err)?;
                batch.remove(&ks, k.to_vec());
                n += 1;
            }
            batch.commit().map_err(err)?;
        }
        Ok(n)
    }

    fn set(&self, fs: u64) -> Result<Keyspace, StoreError> {
        let mut sets = self.sets.lock().map_err(err_poison)?;
        if let Some(ks) = sets.get(&fs) {
            return Ok(ks.clone());
        }
        let ks = self
            .db
            .keyspace(&format!("{PREFIX}{fs:016x}"), || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(err)?;
        sets.insert(fs, ks.clone());
        Ok(ks)
    }
}

fn err_poison<T>(_: T) -> StoreError {
    StoreError("poisoned".into())
}

impl StateStore for FjallStore {
    fn get(&self, fs: u64, partition: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .set(fs)?
            .get(key(partition, reader))
            .map_err(err)?
            .map(|v| v.to_vec()))
    }

    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let ks = self.set(fs)?;
        let mut batch = self.db.batch();
        for w in writes {
            match &w.value {
                Some(v) => batch.insert(&ks, key(w.partition, &w.reader), v.as_slice()),
                None => batch.remove(&ks, key(w.partition, &w.reader)),
            }
        }
        for (k, v) in meta {
            batch.insert(&self.meta, k.as_bytes(), v.as_slice());
        }
        batch.commit().map_err(err)?;
        let mirror = self.mirror.read().ok().and_then(|m| m.clone());
        match mirror {
            Some(m) => m.write(fs, writes, meta),
            None => Ok(()),
        }
    }

    fn scan(
        &self,
        fs: u64,
        partition: u16,
        f: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let ks = self.set(fs)?;
        for guard in ks.prefix(partition.to_be_bytes()) {
            let (k, v) = guard.into_inner().map_err(err)?;
            let reader = std::str::from_utf8(&k[2..]).unwrap_or_default();
            if !f(reader, &v) {
                break;
            }
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn feature_sets(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .db
            .list_keyspace_names()
            .iter()
            .filter_map(|n| {
                let name: &str = n;
                u64::from_str_radix(name.strip_prefix(PREFIX)?, 16).ok()
            })
            .collect())
    }

    fn drop_feature_set(&self, fs: u64) -> Result<(), StoreError> {
        let name = format!("{PREFIX}{fs:016x}");
        if !self.db.keyspace_exists(&name) {
            return Ok(());
        }
        let ks = self.set(fs)?;
        self.sets.lock().map_err(err_poison)?.remove(&fs);
        self.db.delete_keyspace(ks).map_err(err)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}
