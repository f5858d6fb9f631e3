//! Applying a batch to one reader: load (or create) their state in its partition, apply the
//! events, account the cache, count the outcomes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::cache::{Cell, Part};
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
        let part_lock = &core.parts[p as usize];
        // The partition's lock, then the reader's. A read from the store is never waited for
        // under the partition's lock: the store's own locks can hold a read for as long as an
        // fsync, and every reader of the partition, cached or not, would wait with it.
        let (mut part, cell) = loop {
            let mut part = match wait {
                Wait::Yes => lock_spinning(part_lock)?,
                Wait::No => match taken(part_lock.try_lock())? {
                    Some(part) => part,
                    None => return Ok(None),
                },
            };
            part.tick += 1;
            let tick = part.tick;
            let Some(slot) = part.readers.get_mut(reader) else {
                if wait == Wait::No {
                    return Ok(None);
                }
                self.load_unlocked(core, &bundle, p, reader, part)?;
                continue;
            };
            slot.touch(tick);
            let cell = Arc::clone(&slot.state);
            if !slot.loading {
                break (part, cell);
            }
            if wait == Wait::No {
                return Ok(None);
            }
            // Another batch is reading this reader from the store, holding its lock: wait for
            // it without the partition's, then look again.
            drop(part);
            drop(cell.lock().map_err(|_| EngineError::Poisoned)?);
            std::thread::yield_now();
        };
        // The reader's own lock, uncontended unless the write-behind is encoding this reader.
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

    /// Reads a reader missing from the cache from the store, without holding its partition's
    /// lock (`part`, let go here): a placeholder, its lock held, stands in the cache meanwhile
    /// so that other batches of the reader wait for it and nothing evicts it. Once read, the
    /// placeholder becomes the reader's state; an erasure or release that removed it meanwhile
    /// leaves the caller to look again.
    fn load_unlocked(
        &self,
        core: &Core,
        bundle: &Bundle,
        p: u16,
        reader: &str,
        mut part: MutexGuard<'_, Part>,
    ) -> Result<(), EngineError> {
        let cell: Cell = Arc::new(Mutex::new(ReaderState::new(bundle)));
        let mut placeholder = cell.lock().map_err(|_| EngineError::Poisoned)?;
        part.insert(
            reader,
            Arc::clone(&cell),
            placeholder.heap_bytes(),
            false,
            true,
        );
        drop(part);
        let loaded = self.load(core, bundle, p, reader).map(|state| {
            let heap = state.heap_bytes();
            *placeholder = state;
            heap
        });
        drop(placeholder);
        let mut part = core.parts[p as usize]
            .lock()
            .map_err(|_| EngineError::Poisoned)?;
        match loaded {
            Ok(heap) => {
                part.loaded(reader, &cell, heap);
                Ok(())
            }
            Err(e) => {
                part.unload(reader, &cell);
                Err(e)
            }
        }
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

fn lock_spinning(part: &Mutex<Part>) -> Result<MutexGuard<'_, Part>, EngineError> {
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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Mutex, mpsc};
    use std::time::Duration;

    use crate::state::{StateStore, StoreError, Write};
    use crate::templates::testing::view;
    use crate::{Bundle, DAY_MS, Engine, EngineConfig, MemoryStore};

    /// The demo's meter, and an engine's config with one partition.
    fn meter_in_one_partition() -> (Bundle, EngineConfig) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/bundles/meter.toml"
        ))
        .unwrap();
        let config = EngineConfig {
            partitions: 1,
            ..EngineConfig::default()
        };
        (Bundle::compile(&text).unwrap(), config)
    }

    /// A store whose next `gated` reads of one reader each wait to be let go (or refused),
    /// saying when one starts: a read held up by the store's own locks, for as long as the
    /// test likes. Everything else goes straight to memory.
    struct Gated {
        inner: MemoryStore,
        reader: &'static str,
        gated: AtomicU32,
        started: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<bool>>,
    }

    impl StateStore for Gated {
        fn get(&self, fs: u64, p: u16, reader: &str) -> Result<Option<Vec<u8>>, StoreError> {
            let gate = reader == self.reader
                && self
                    .gated
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if gate {
                self.started.lock().unwrap().send(()).unwrap();
                let ok = self.release.lock().unwrap().recv().unwrap();
                if !ok {
                    return Err(StoreError("refused by the test".into()));
                }
            }
            self.inner.get(fs, p, reader)
        }
        fn write(&self, fs: u64, w: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
            self.inner.write(fs, w, meta)
        }
        fn scan(
            &self,
            fs: u64,
            p: u16,
            f: &mut dyn FnMut(&str, &[u8]) -> bool,
        ) -> Result<(), StoreError> {
            self.inner.scan(fs, p, f)
        }
        fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.meta(key)
        }
        fn feature_sets(&self) -> Result<Vec<u64>, StoreError> {
            self.inner.feature_sets()
        }
        fn drop_feature_set(&self, fs: u64) -> Result<(), StoreError> {
            self.inner.drop_feature_set(fs)
        }
    }

    /// One partition; reader "x" stored with one page view (id 1) by an engine before, and
    /// not in this engine's memory; the gate's controls.
    fn gated_engine() -> (
        Engine<std::sync::Arc<Gated>>,
        std::sync::Arc<Gated>,
        mpsc::Receiver<()>,
        mpsc::Sender<bool>,
    ) {
        let (bundle, config) = meter_in_one_partition();
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let store = std::sync::Arc::new(Gated {
            inner: MemoryStore::default(),
            reader: "x",
            gated: AtomicU32::new(0),
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let before = Engine::open(
            std::sync::Arc::clone(&store),
            bundle.clone(),
            config.clone(),
        )
        .unwrap()
        .0;
        assert_eq!(
            before
                .replay("x", &[(&view(1, "/a"), 20_000 * DAY_MS)])
                .unwrap(),
            1
        );
        before.close().unwrap();
        drop(before);
        let engine = Engine::open(std::sync::Arc::clone(&store), bundle, config)
            .unwrap()
            .0;
        (engine, store, started, release)
    }

    #[test]
    fn a_reader_read_from_the_store_holds_up_no_other_reader_of_its_partition() {
        let (engine, store, started, release) = gated_engine();
        let t = 20_000 * DAY_MS;
        let (b, x2, x3) = (view(10, "/a"), view(2, "/b"), view(3, "/c"));
        assert_eq!(engine.replay("b", &[(&b, t)]).unwrap(), 1);
        store.gated.store(1, Ordering::SeqCst);
        let (done, finished) = mpsc::channel();
        std::thread::scope(|s| {
            let first = done.clone();
            let engine = &engine;
            let (x2, x3) = (&x2, &x3);
            s.spawn(move || first.send(("x2", engine.replay("x", &[(x2, t)]))).unwrap());
            // Not timings: bounds on a hang.
            started
                .recv_timeout(Duration::from_secs(60))
                .expect("x is read");
            let second = done.clone();
            s.spawn(move || second.send(("x3", engine.replay("x", &[(x3, t)]))).unwrap());
            // While x is being read, b (cached, same partition) goes ahead.
            let (b_done, b_finished) = mpsc::channel();
            s.spawn(move || {
                b_done
                    .send(engine.replay("b", &[(&view(11, "/b"), t)]))
                    .unwrap()
            });
            let b = b_finished.recv_timeout(Duration::from_secs(60));
            let waiting = finished.try_recv().is_err();
            release.send(true).unwrap();
            assert_eq!(b.expect("b waited for x's read").unwrap(), 1);
            assert!(waiting, "x's batches wait for x's read");
            for _ in 0..2 {
                let (which, applied) = finished.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(applied.unwrap(), 1, "{which}");
            }
        });
        // Both batches went into the state read from the store: all three ids are known.
        for id in 1..=3 {
            assert_eq!(
                engine.replay("x", &[(&view(id, "/d"), t)]).unwrap(),
                0,
                "id {id}"
            );
        }
    }

    #[test]
    fn a_failed_read_leaves_no_empty_state_behind_for_the_readers_next_batch() {
        let (engine, store, started, release) = gated_engine();
        let t = 20_000 * DAY_MS;
        store.gated.store(1, Ordering::SeqCst);
        let (x2, x3) = (view(2, "/b"), view(3, "/c"));
        let (done, finished) = mpsc::channel();
        std::thread::scope(|s| {
            let (engine, x2, x3) = (&engine, &x2, &x3);
            let first = done.clone();
            s.spawn(move || first.send(engine.replay("x", &[(x2, t)])).unwrap());
            started
                .recv_timeout(Duration::from_secs(60))
                .expect("x is read");
            let second = done.clone();
            s.spawn(move || second.send(engine.replay("x", &[(x3, t)])).unwrap());
            release.send(false).unwrap();
            let mut outcomes: Vec<_> = (0..2)
                .map(|_| {
                    finished
                        .recv_timeout(Duration::from_secs(60))
                        .unwrap()
                        .is_ok()
                })
                .collect();
            outcomes.sort_unstable();
            assert_eq!(
                outcomes,
                [false, true],
                "the refused read fails its batch alone"
            );
        });
        // The batch that went through read x from the store: id 1 is known, and x3's.
        assert_eq!(engine.replay("x", &[(&view(1, "/d"), t)]).unwrap(), 0);
        assert_eq!(engine.replay("x", &[(&view(3, "/d"), t)]).unwrap(), 0);
        assert_eq!(
            engine.replay("x", &[(&view(2, "/d"), t)]).unwrap(),
            1,
            "x2 failed"
        );
    }

    #[test]
    fn a_reader_being_written_behind_holds_up_no_other_reader_of_its_partition() {
        let (bundle, config) = meter_in_one_partition();
        let store = std::sync::Arc::new(MemoryStore::default());
        let engine = Engine::open(store, bundle, config).unwrap().0;
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
