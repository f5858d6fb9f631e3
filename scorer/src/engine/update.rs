//! Applying a batch to one reader: load (or create) their state in its partition, apply the
//! events, account the cache, count the outcomes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Core, EngineError, Shared, partition_of};
use crate::bundle::Bundle;
use crate::event::Observed;
use crate::state::{Outcome, ReaderState, StateError, StateStore};

/// Whether an update may wait: for a lock, or to load the reader from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Yes,
    No,
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) applied: u32,
    pub(crate) duplicates: u32,
    pub(crate) refused: Vec<(usize, Outcome)>,
    /// Memory is held by changes not yet written.
    pub(crate) pressure: bool,
}

impl<S: StateStore> Shared<S> {
    /// Loads (or creates) the reader in its partition, applies the events, then runs `then`.
    pub(crate) fn update<E: Observed + ?Sized, T>(
        &self,
        core: &Core,
        reader: &str,
        events: &[(&E, u64)],
        then: impl FnOnce(&Bundle, &ReaderState) -> T,
    ) -> Result<(T, Counts), EngineError> {
        // Waiting, it always gets there.
        self.update_if(core, reader, events, then, Wait::Yes)?
            .ok_or(EngineError::Poisoned)
    }

    /// [`Shared::update`]; with [`Wait::No`], only if nothing has to be waited for (the reader
    /// is in memory and neither its partition nor its state is held), else `None` with nothing
    /// changed.
    pub(crate) fn update_if<E: Observed + ?Sized, T>(
        &self,
        core: &Core,
        reader: &str,
        events: &[(&E, u64)],
        then: impl FnOnce(&Bundle, &ReaderState) -> T,
        wait: Wait,
    ) -> Result<Option<(T, Counts)>, EngineError> {
        let bundle = core.bundle.get();
        let p = partition_of(reader, self.config.partitions);
        let mut part = match wait {
            Wait::Yes => lock_spinning(&core.parts[p as usize])?,
            Wait::No => match taken(core.parts[p as usize].try_lock())? {
                Some(part) => part,
                None => return Ok(None),
            },
        };
        if !part.readers.contains_key(reader) {
            if wait == Wait::No {
                return Ok(None);
            }
            let state = self.load(core, &bundle, p, reader)?;
            part.insert(reader, state, false);
        }
        part.tick += 1;
        let tick = part.tick;
        let slot = part.readers.get_mut(reader).ok_or(EngineError::Poisoned)?;
        slot.touch(tick);
        // The reader's own lock, uncontended unless the write-behind is encoding this reader.
        let cell = Arc::clone(&slot.state);
        let mut state = match wait {
            Wait::Yes => cell.lock().map_err(|_| EngineError::Poisoned)?,
            Wait::No => match taken(cell.try_lock())? {
                Some(state) => state,
                None => return Ok(None),
            },
        };
        let mut counts = Counts::default();
        let mut latest = 0;
        if !events.is_empty() {
            state.prefetch(events.iter().map(|(e, _)| e.id()));
        }
        for (i, (event, time)) in events.iter().enumerate() {
            match state.apply(&bundle, *event, *time) {
                Outcome::Applied => {
                    counts.applied += 1;
                    latest = latest.max(*time);
                }
                Outcome::Duplicate => counts.duplicates += 1,
                refused => counts.refused.push((i, refused)),
            }
        }
        if counts.applied > 0 {
            state.finish(&bundle);
        }
        let out = then(&bundle, &state);
        if counts.applied > 0 {
            let heap = state.heap_bytes();
            drop(state);
            part.changed(reader, heap);
            self.watermark.fetch_max(latest, Ordering::Relaxed);
        } else {
            drop(state);
        }
        let budget = self.config.cache_bytes / core.parts.len();
        let (evicted, dirty_held) = part.evict(budget);
        drop(part);
        self.count(&counts, evicted);
        counts.pressure = dirty_held;
        if dirty_held {
            // Memory is held by changes not yet written: write now rather than at the interval.
            self.flush_now.store(true, Ordering::Relaxed);
            self.wake.notify_all();
        }
        Ok(Some((out, counts)))
    }

    fn load(
        &self,
        core: &Core,
        bundle: &Bundle,
        p: u16,
        reader: &str,
    ) -> Result<ReaderState, EngineError> {
        let Some(bytes) = self.store.get(core.feature_set, p, reader)? else {
            return Ok(ReaderState::new(bundle));
        };
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        match ReaderState::decode(bundle, &bytes) {
            Ok(state) => Ok(state),
            Err(e) => {
                // Unreadable state is started afresh (the log still holds the events): counted
                // and logged, never a failed request.
                self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                let e: StateError = e;
                tracing::warn!(reader, error = %e, "unreadable reader state started afresh");
                Ok(ReaderState::new(bundle))
            }
        }
    }

    fn count(&self, c: &Counts, evicted: usize) {
        let s = &self.stats;
        s.applied.fetch_add(u64::from(c.applied), Ordering::Relaxed);
        s.duplicates
            .fetch_add(u64::from(c.duplicates), Ordering::Relaxed);
        for (_, why) in &c.refused {
            match why {
                Outcome::TooLate => s.too_late.fetch_add(1, Ordering::Relaxed),
                _ => s.dedupe_full.fetch_add(1, Ordering::Relaxed),
            };
        }
        s.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
    }
}

/// How long a decision spins for its partition's lock before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// Locks a partition, spinning for up to [`SPIN`] first. Its lock is held for short spells (a
/// batch of another reader, the write-behind marking its readers clean); a waiter that went
/// to sleep at once would often take tens of µs to be woken (measured, when the write-behind
/// still encoded under this lock: a decision's p99 at half as much again).
/// A lock tried without waiting: `None` while someone else holds it.
pub(crate) fn taken<G>(tried: std::sync::TryLockResult<G>) -> Result<Option<G>, EngineError> {
    match tried {
        Ok(guard) => Ok(Some(guard)),
        Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        Err(std::sync::TryLockError::Poisoned(_)) => Err(EngineError::Poisoned),
    }
}

fn lock_spinning(
    part: &std::sync::Mutex<super::cache::Part>,
) -> Result<std::sync::MutexGuard<'_, super::cache::Part>, EngineError> {
    let started = std::time::Instant::now();
    let mut spins = 0u32;
    loop {
        match part.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(_)) => return Err(EngineError::Poisoned),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        spins += 1;
        if spins.is_multiple_of(64) && started.elapsed() > SPIN {
            return part.lock().map_err(|_| EngineError::Poisoned);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::templates::testing::view;
    use crate::{Bundle, DAY_MS, Engine, EngineConfig, MemoryStore};

    #[test]
    fn a_reader_being_written_behind_holds_up_no_other_reader_of_its_partition() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/bundles/meter.toml"
        ))
        .unwrap();
        let config = EngineConfig {
            partitions: 1,
            ..EngineConfig::default()
        };
        let store = std::sync::Arc::new(MemoryStore::default());
        let engine = Engine::open(store, Bundle::compile(&text).unwrap(), config)
            .unwrap()
            .0;
        let t = 20_000 * DAY_MS;
        let (a, b) = (view(1, "/a"), view(2, "/a"));
        assert_eq!(engine.replay("a", &[(&a, t)]).unwrap(), 1);
        // Reader a's state locked, as the write-behind holds it while encoding it.
        let core = engine.core().unwrap();
        let cell = std::sync::Arc::clone(&core.parts[0].lock().unwrap().readers["a"].state);
        drop(core);
        let held = cell.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(engine.replay("b", &[(&b, t)])).unwrap());
            // Not a timing: a bound on a hang (the old partition-wide hold would block here
            // until a's lock is let go, which this test only does afterwards).
            let applied = rx.recv_timeout(Duration::from_secs(60));
            drop(held);
            assert_eq!(applied.expect("b waited for a's lock").unwrap(), 1);
        });
        // Both are written behind.
        engine.flush().unwrap();
        let core = engine.core().unwrap();
        let part = core.parts[0].lock().unwrap();
        assert!(part.readers.values().all(|s| !s.dirty), "both written");
    }
}
