//! The reader-state store: the scorer's per-reader state (one keyspace per feature set) and its
//! position in the event log, in one fjall database under `<data>/state/`. Writes are batched by
//! the engine's write-behind, each batch with the log position it covers, so that state and
//! position never disagree after a crash (the log is replayed from that position).
//!
//! IO boundary: fjall (its own threads flush and compact).

use std::path::Path;

use pulse_scorer::{FjallStore, StoreError};

/// Opens (or creates) the store in `<data>/state/`.
pub(crate) fn open(data: &Path) -> Result<FjallStore, StoreError> {
    let dir = data.join("state");
    std::fs::create_dir_all(&dir).map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
    FjallStore::open(&dir)
}
