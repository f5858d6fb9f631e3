//! Where reader state is kept between batches: the [`StateStore`] trait (the scorer's only IO
//! boundary) and an in-memory implementation for tests and offline tools.

use std::collections::HashMap;
use std::sync::Mutex;

/// A failure of the state store, with a message for logs (never shown to clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

/// Keeps each reader's serialized state. Implementations must be safe to call from many threads;
/// the scorer serializes calls for the same reader.
pub trait StateStore: Send + Sync {
    /// The reader's saved state, if any.
    fn load(&self, reader: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Saves the reader's state. Need not be durable: the log is, and state is rebuilt from it.
    fn save(&self, reader: &str, state: &[u8]) -> Result<(), StoreError>;
}

/// A [`StateStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: Mutex<HashMap<String, Vec<u8>>>,
}

impl StateStore for MemoryStore {
    fn load(&self, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let states = self
            .states
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        Ok(states.get(reader).cloned())
    }

    fn save(&self, reader: &str, state: &[u8]) -> Result<(), StoreError> {
        let mut states = self
            .states
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        states.insert(reader.to_owned(), state.to_vec());
        Ok(())
    }
}

impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn load(&self, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load(reader)
    }

    fn save(&self, reader: &str, state: &[u8]) -> Result<(), StoreError> {
        (**self).save(reader, state)
    }
}
