//! Reader state on disk in the embedded store (fjall): a keyspace per feature set
//! (`state_<hash>`), keys `partition (u16, big-endian) ++ reader key`, and a `scorer_meta`
//! keyspace. Each write is one atomic batch, without fsync (a write-behind's batches are of at
//! most a MiB, the replay position in the last): state need not be durable on its own (the log
//! is), only never behind the replay position stored with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::known::Known;
use crate::state::{StateStore, StoreError, StoreMirror, Write};

const META: &str = "scorer_meta";
const PREFIX: &str = "state_";

/// Reader state in a fjall database (shared with the gateway's log).
pub struct FjallStore {
    db: Database,
    meta: Keyspace,
    /// Each feature set's keyspace, and the readers that may be in it (a read for any other
    /// is answered without fjall: see `known`).
    sets: Mutex<HashMap<u64, (Keyspace, Arc<Known>)>>,
    /// Where every write is copied, once set (Kafka mode's changelog).
    mirror: std::sync::RwLock<Option<Arc<dyn StoreMirror>>>,
    /// Tells the scans that fill the filters to stop (the store is going).
    closing: Arc<AtomicBool>,
    /// Held (shared) by every write from adding its keys to the filter to its commit, and
    /// (alone) by a refill while it puts a new filter in place, so that the new filter's scan
    /// sees every write the old filter took.
    writing: std::sync::RwLock<()>,
    /// Keys a filter takes beyond twice the store's before it is filled afresh.
    refill_slack: u64,
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
    }
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
            closing: Arc::new(AtomicBool::new(false)),
            writing: std::sync::RwLock::new(()),
            refill_slack: 1 << 20,
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
        self.commit(fs, writes, &[])
    }

    /// Writes to this store (not its mirror) as one atomic batch, each reader's key made once:
    /// into the filter before the batch commits, under the shared hold a refill waits for.
    fn commit(
        &self,
        fs: u64,
        writes: &[Write],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        // The filter taken under the shared hold: a refill cannot slip in between.
        let writing = self.writing.read().map_err(err_poison)?;
        let (ks, known) = self.set(fs)?;
        let keyed: Vec<(Vec<u8>, Option<&[u8]>)> = writes
            .iter()
            .map(|w| (key(w.partition, &w.reader), w.value.as_deref()))
            .collect();
        known.add(
            keyed
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.as_slice()),
        );
        let mut batch = self.db.batch();
        for (k, v) in keyed {
            match v {
                Some(v) => batch.insert(&ks, k, v),
                None => batch.remove(&ks, k),
            }
        }
        for (k, v) in meta {
            batch.insert(&self.meta, k.as_bytes(), v.as_slice());
        }
        batch.commit().map_err(err)?;
        drop(writing);
        self.refill_if_outgrown(fs, &known)
    }

    /// Forgets every reader of `partition` in every feature set, in this store alone (a
    /// partition a scorer no longer owns: its next owner keeps it). How many were forgotten.
    pub fn clear_partition(&self, partition: u16) -> Result<u64, StoreError> {
        let mut n = 0;
        for fs in self.feature_sets()? {
            let (ks, _) = self.set(fs)?;
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

    /// A feature set's keyspace (opened or created) and its filter of stored readers, filled
    /// with the keys already there by a scan on a thread of its own.
    fn set(&self, fs: u64) -> Result<(Keyspace, Arc<Known>), StoreError> {
        let mut sets = self.sets.lock().map_err(err_poison)?;
        if let Some((ks, known)) = sets.get(&fs) {
            return Ok((ks.clone(), Arc::clone(known)));
        }
        let ks = self
            .db
            .keyspace(&format!("{PREFIX}{fs:016x}"), || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(err)?;
        let known = self.filled(&ks);
        sets.insert(fs, (ks.clone(), Arc::clone(&known)));
        Ok((ks, known))
    }

    /// A new filter for `ks`, filled by a scan on a thread of its own.
    fn filled(&self, ks: &Keyspace) -> Arc<Known> {
        let known = Arc::new(Known::new(self.refill_slack));
        let (scanned, filled, closing) =
            (ks.clone(), Arc::clone(&known), Arc::clone(&self.closing));
        let spawned = std::thread::Builder::new()
            .name("pulse-state-keys".into())
            .spawn(move || fill(&scanned, &filled, &closing));
        if let Err(e) = spawned {
            // Never completed: every miss reads the store.
            tracing::warn!(error = %e, "cannot scan the stored readers; every miss reads the store");
        }
        known
    }

    /// Puts a new filter in place of `known` when it holds far more keys than the store (see
    /// `known`), once every write that added to it has committed.
    fn refill_if_outgrown(&self, fs: u64, known: &Arc<Known>) -> Result<(), StoreError> {
        if !known.outgrown() {
            return Ok(());
        }
        let _alone = self.writing.write().map_err(err_poison)?;
        let mut sets = self.sets.lock().map_err(err_poison)?;
        let fresh = match sets.get(&fs) {
            Some((ks, current)) if Arc::ptr_eq(current, known) => self.filled(ks),
            // Refilled already, or the feature set was dropped.
            _ => return Ok(()),
        };
        if let Some(entry) = sets.get_mut(&fs) {
            entry.1 = fresh;
        }
        Ok(())
    }
}

/// Adds every key of `ks` to `known`, then lets it answer "not stored". A scan cut short (the
/// store closing, or an error) leaves it answering "maybe" for every reader. It rests as long
/// as it worked after each 65,536 keys: at most half a core, as the TTL sweep's scan.
fn fill(ks: &Keyspace, known: &Known, closing: &AtomicBool) {
    let started = std::time::Instant::now();
    let mut stretch = started;
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(1024);
    let mut n = 0u64;
    for guard in ks.iter() {
        match guard.key() {
            Ok(k) => keys.push(k.to_vec()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list stored readers; every miss reads the store");
                return;
            }
        }
        if keys.len() == keys.capacity() {
            if closing.load(Ordering::Relaxed) {
                return;
            }
            n += keys.len() as u64;
            known.add(keys.iter().map(Vec::as_slice));
            keys.clear();
            if n.is_multiple_of(1 << 16) {
                std::thread::sleep(stretch.elapsed());
                stretch = std::time::Instant::now();
            }
        }
    }
    n += keys.len() as u64;
    known.add(keys.iter().map(Vec::as_slice));
    known.completed(n);
    tracing::debug!(
        readers = n,
        bytes = known.heap_bytes(),
        ms = started.elapsed().as_millis() as u64,
        "filter of stored readers filled"
    );
}

fn err_poison<T>(_: T) -> StoreError {
    StoreError("poisoned".into())
}

impl StateStore for FjallStore {
    fn get(&self, fs: u64, partition: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (ks, known) = self.set(fs)?;
        let k = key(partition, reader);
        if !known.maybe(&k) {
            return Ok(None);
        }
        Ok(ks.get(k).map_err(err)?.map(|v| v.to_vec()))
    }

    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.commit(fs, writes, meta)?;
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
        let (ks, _) = self.set(fs)?;
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
        let (ks, _) = self.set(fs)?;
        self.sets.lock().map_err(err_poison)?.remove(&fs);
        self.db.delete_keyspace(ks).map_err(err)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(reader: &str) -> Write {
        Write {
            partition: 3,
            reader: reader.into(),
            value: Some(reader.as_bytes().to_vec()),
        }
    }

    /// Waits for the scan of stored keys (a bound on a hang, not a timing).
    fn filled(store: &FjallStore, fs: u64) -> Arc<Known> {
        let known = store.set(fs).unwrap().1;
        let started = std::time::Instant::now();
        while !known.is_complete() {
            assert!(started.elapsed().as_secs() < 60, "the scan never ended");
            std::thread::yield_now();
        }
        known
    }

    #[test]
    fn readers_stored_before_a_restart_or_after_the_scan_are_read_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path()).unwrap();
            store.write(7, &[put("a"), put("b")], &[]).unwrap();
            store
                .write(
                    7,
                    &[Write {
                        value: None,
                        ..put("b")
                    }],
                    &[],
                )
                .unwrap();
        }
        let store = FjallStore::open(dir.path()).unwrap();
        // Before the scan ends every read goes to fjall; after it, the same answers.
        assert_eq!(store.get(7, 3, "a").unwrap(), Some(b"a".to_vec()));
        let known = filled(&store, 7);
        assert_eq!(store.get(7, 3, "a").unwrap(), Some(b"a".to_vec()));
        assert_eq!(store.get(7, 3, "b").unwrap(), None, "deleted");
        assert_eq!(store.get(7, 3, "c").unwrap(), None);
        assert!(!known.maybe(&key(3, "c")), "never stored: no read of fjall");
        assert!(known.maybe(&key(3, "a")));
        // Written after the scan: in the filter before it is in fjall.
        store.write(7, &[put("c")], &[]).unwrap();
        store.write_local(7, &[put("d")]).unwrap();
        assert_eq!(store.get(7, 3, "c").unwrap(), Some(b"c".to_vec()));
        assert_eq!(store.get(7, 3, "d").unwrap(), Some(b"d".to_vec()));
        // Another partition's key is another key.
        assert_eq!(store.get(7, 4, "c").unwrap(), None);
    }

    #[test]
    fn a_filter_that_outgrew_the_store_is_filled_afresh_and_loses_no_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FjallStore::open(dir.path()).unwrap();
        store.refill_slack = 10;
        let names =
            |what: &str, n: usize| (0..n).map(|i| format!("{what}-{i}")).collect::<Vec<_>>();
        let puts = |names: &[String]| names.iter().map(|n| put(n)).collect::<Vec<_>>();
        let (kept, gone, extra) = (names("kept", 5), names("gone", 30), names("extra", 46));
        let first = filled(&store, 7);
        store.write(7, &puts(&kept), &[]).unwrap();
        assert!(
            Arc::ptr_eq(&first, &filled(&store, 7)),
            "5 keys: within the slack"
        );
        // 35 keys with none scanned: past twice nothing and the slack, filled afresh (35 found).
        store.write(7, &puts(&gone), &[]).unwrap();
        let second = filled(&store, 7);
        assert!(!Arc::ptr_eq(&first, &second));
        // Forgotten by the store (as the TTL sweep does): still "maybe" in the filter.
        let forget: Vec<Write> = gone
            .iter()
            .map(|n| Write {
                value: None,
                ..put(n)
            })
            .collect();
        store.write(7, &forget, &[]).unwrap();
        assert!(second.maybe(&key(3, "gone-0")));
        // 81 keys against 35 found: filled afresh again, from what the store holds now.
        store.write(7, &puts(&extra), &[]).unwrap();
        let third = filled(&store, 7);
        assert!(!Arc::ptr_eq(&second, &third));
        for n in kept.iter().chain(&extra) {
            assert_eq!(
                store.get(7, 3, n).unwrap(),
                Some(n.as_bytes().to_vec()),
                "{n}"
            );
        }
        let maybe_gone = gone.iter().filter(|n| third.maybe(&key(3, n))).count();
        assert_eq!(maybe_gone, 0, "the forgotten readers left the filter");
        assert!(!third.outgrown());
    }
}
