//! Building state for a bundle that changes the features: a second core (the new bundle with
//! its own caches) takes the whole log while the active one keeps deciding; its state is written
//! beside the active one's (under the new feature-set hash); then, with scoring paused for the
//! moment it takes, the rest of the log is applied and the new core becomes the active one. The
//! old state is dropped after. Progress is counted in [`super::Stats::rebuild_events`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Core, Engine, EngineError, Shared, flush, meta};
use crate::bundle::Bundle;
use crate::event::Observed;
use crate::state::StateStore;

/// A rebuild in progress.
pub struct Rebuild<S: StateStore + 'static> {
    shared: Arc<Shared<S>>,
    core: Arc<Core>,
}

impl<S: StateStore + 'static> std::fmt::Debug for Rebuild<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("feature_set", &self.core.feature_set)
            .finish_non_exhaustive()
    }
}

impl<S: StateStore + 'static> Rebuild<S> {
    pub(crate) fn new(engine: &Engine<S>, bundle: Bundle) -> Result<Self, EngineError> {
        let shared = Arc::clone(engine.shared());
        // State a cut-short rebuild left behind.
        shared.store.drop_feature_set(bundle.feature_set)?;
        shared.stats.rebuilding.store(1, Ordering::Relaxed);
        shared.stats.rebuild_events.store(0, Ordering::Relaxed);
        let core = Arc::new(Core::new(bundle, shared.config.partitions));
        Ok(Self { shared, core })
    }

    /// The bundle being built.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.core.bundle.get()
    }

    /// Applies events of the log to the new state.
    pub fn apply<E: Observed + ?Sized>(
        &mut self,
        reader: &str,
        events: &[(&E, u64)],
    ) -> Result<(), EngineError> {
        let (_, counts) = self.shared.update(&self.core, reader, events, |_, _| ())?;
        self.shared
            .stats
            .rebuild_events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if counts.pressure {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the new state built so far (to free memory; no metadata changes).
    pub fn flush(&mut self) -> Result<(), EngineError> {
        flush::write_core(&self.shared, &self.core, &[])
    }

    /// Pauses scoring, lets `tail` apply the rest of the log (returning the log position after
    /// it, or `None` without a local log), writes the new state and makes it the active one.
    /// Returns the bundle now in force.
    pub fn finish(
        mut self,
        tail: impl FnOnce(&mut Self) -> Result<Option<u64>, EngineError>,
    ) -> Result<Arc<Bundle>, EngineError> {
        let shared = Arc::clone(&self.shared);
        let mut active = shared.core.write().map_err(|_| EngineError::Poisoned)?;
        let position = tail(&mut self)?;
        let bundle = self.core.bundle.get();
        let mut meta_writes = vec![
            (
                meta::FEATURE_SET,
                self.core.feature_set.to_le_bytes().to_vec(),
            ),
            (meta::BUNDLE, bundle.stored()),
        ];
        if let Some(p) = position {
            meta_writes.push((meta::REPLAY_FROM, p.to_le_bytes().to_vec()));
        }
        flush::write_core(&self.shared, &self.core, &meta_writes)?;
        if let Some(p) = position {
            self.shared.stored_position.store(p, Ordering::Relaxed);
        }
        let old = std::mem::replace(&mut *active, Arc::clone(&self.core));
        drop(active);
        self.shared.stats.rebuilding.store(0, Ordering::Relaxed);
        if let Err(e) = self.shared.store.drop_feature_set(old.feature_set) {
            // Dropped at the next start otherwise.
            tracing::warn!(error = %e, "could not drop the old reader state");
        }
        Ok(bundle)
    }
}

impl<S: StateStore + 'static> Drop for Rebuild<S> {
    fn drop(&mut self) {
        self.shared.stats.rebuilding.store(0, Ordering::Relaxed);
    }
}
