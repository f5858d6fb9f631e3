//! The reader-state store: the scorer's per-reader state behind its [`StateStore`] trait, and
//! the replay point (how far through the event log that state has got), in one fjall database
//! under `<data>/state/`. Writes are not synced one by one: state is rebuilt from the log after
//! a crash. The replay point is written into the same journal after the state it covers, so a
//! replay point that survives a crash never runs ahead of the state before it.
//!
//! IO boundary: fjall (its own threads flush and compact).

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use pulse_scorer::{StateStore, StoreError};

const REPLAY_FROM_KEY: &[u8] = b"replay_from";

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// The reader-state store.
pub struct ReaderStates {
    db: Database,
    state: Keyspace,
    meta: Keyspace,
}

impl std::fmt::Debug for ReaderStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderStates").finish_non_exhaustive()
    }
}

impl ReaderStates {
    /// Opens (or creates) the store in `<data>/state/`.
    pub fn open(data: &Path) -> Result<Self, StoreError> {
        let dir = data.join("state");
        std::fs::create_dir_all(&dir)
            .map_err(|e| store_error(format!("{}: {e}", dir.display())))?;
        let db = Database::builder(&dir).open().map_err(store_error)?;
        let state = db
            .keyspace("state", KeyspaceCreateOptions::default)
            .map_err(store_error)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(store_error)?;
        Ok(Self { db, state, meta })
    }

    /// Where replay must start: the first event of the log the state may not hold.
    pub fn replay_from(&self) -> Result<u64, StoreError> {
        match self.meta.get(REPLAY_FROM_KEY).map_err(store_error)? {
            Some(v) => {
                let bytes: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| store_error("bad replay point"))?;
                Ok(u64::from_be_bytes(bytes))
            }
            None => Ok(0),
        }
    }

    /// Records that the state holds every event before position `seq`; with `durable`, syncs.
    pub fn set_replay_from(&self, seq: u64, durable: bool) -> Result<(), StoreError> {
        self.meta
            .insert(REPLAY_FROM_KEY, seq.to_be_bytes())
            .map_err(store_error)?;
        if durable {
            self.db.persist(PersistMode::SyncAll).map_err(store_error)?;
        }
        Ok(())
    }

    /// Syncs everything (on shutdown).
    pub fn close(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(store_error)
    }
}

impl StateStore for ReaderStates {
    fn load(&self, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.state
            .get(reader)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(store_error)
    }

    fn save(&self, reader: &str, state: &[u8]) -> Result<(), StoreError> {
        self.state.insert(reader, state).map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_replay_point_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReaderStates::open(dir.path()).unwrap();
        assert_eq!(store.replay_from().unwrap(), 0);
        store.save("r", b"{}").unwrap();
        store.set_replay_from(42, false).unwrap();
        store.close().unwrap();
        drop(store);
        let store = ReaderStates::open(dir.path()).unwrap();
        assert_eq!(store.load("r").unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(store.replay_from().unwrap(), 42);
    }
}
