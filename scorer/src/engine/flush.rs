//! Write-behind: a thread that, every `flush_interval` (or at once when memory is held by
//! unwritten changes), writes every changed reader state to the store, in batches of at most a
//! MiB, and then the log position they cover and the watermark. It finds them in each
//! partition's list of readers made dirty, so that it never walks every cached reader under a
//! partition's lock (a decision for a reader of that partition would wait for the walk).
//! Another thread, every `sweep_interval`, forgets the readers past their TTL, in memory and
//! in the store: a scan of the whole store, paced (it rests as long as it worked after each
//! partition) so that it takes at most half a core from the decisions and never holds up the
//! write-behind.
//!
//! Why the position is right: it is read *before* the dirty states are collected, and every
//! event below it was applied in memory before it was read, so its reader is either in this
//! batch or was written before. Events applied after it may be in the batch too; replaying them
//! after a crash changes nothing (dedupe by event id).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use super::cache::Cell;
use super::{Core, EngineError, SWEEP_SLACK_MS, Shared, meta};
use crate::state::{ReaderState, StateStore, Write};

pub(crate) fn spawn<S: StateStore + 'static>(
    shared: Arc<Shared<S>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pulse-state-flush".into())
        .spawn(move || run(&shared))
}

fn run<S: StateStore>(shared: &Shared<S>) {
    loop {
        if !wait(shared, shared.config.flush_interval, true) {
            // `Engine::close` writes last; a drop without it leaves what a crash would.
            return;
        }
        shared.flush_now.store(false, Ordering::Relaxed);
        let Some(core) = shared.core.read().ok().map(|c| Arc::clone(&c)) else {
            return;
        };
        if let Err(e) = flush(shared, &core) {
            tracing::warn!(error = %e, "write-behind of reader state failed; retrying");
        }
    }
}

/// Waits `period` (or, with `early`, until a flush is asked for); false once the engine stops.
fn wait<S: StateStore>(shared: &Shared<S>, period: std::time::Duration, early: bool) -> bool {
    let Ok(stop) = shared.stop.lock() else {
        return false;
    };
    let waited = shared.wake.wait_timeout_while(stop, period, |s| {
        let flush_asked = early && shared.flush_now.load(Ordering::Relaxed);
        !(*s || flush_asked)
    });
    matches!(waited, Ok((s, _)) if !*s)
}

pub(crate) fn spawn_sweeper<S: StateStore + 'static>(
    shared: Arc<Shared<S>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pulse-state-sweep".into())
        .spawn(move || {
            loop {
                // A wake-up for a flush ends the wait early: wait out the rest of the period.
                let started = Instant::now();
                while let Some(left) = shared.config.sweep_interval.checked_sub(started.elapsed())
                    && !left.is_zero()
                {
                    if !wait(&shared, left, false) {
                        return;
                    }
                }
                let Some(core) = shared.core.read().ok().map(|c| Arc::clone(&c)) else {
                    return;
                };
                match sweep_store(&shared, &core, true) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(readers = n, "forgot readers past their TTL"),
                    Err(e) => tracing::warn!(error = %e, "TTL sweep failed"),
                }
            }
        })
}

/// Writes the active core's changed states with the log position and the watermark.
pub(crate) fn flush<S: StateStore>(shared: &Shared<S>, core: &Core) -> Result<(), EngineError> {
    let position = shared
        .progress
        .read()
        .ok()
        .and_then(|p| p.as_ref().and_then(|f| f()));
    let watermark = shared.watermark.load(Ordering::Relaxed);
    let mut meta_writes = vec![
        (meta::WATERMARK, watermark.to_le_bytes().to_vec()),
        (meta::FEATURE_SET, core.feature_set.to_le_bytes().to_vec()),
    ];
    if let Some(p) = position {
        meta_writes.push((meta::REPLAY_FROM, p.to_le_bytes().to_vec()));
    }
    let outside = shared
        .positions
        .read()
        .ok()
        .and_then(|p| p.as_ref().and_then(|f| f()));
    if let Some(p) = outside {
        meta_writes.push((meta::SOURCE, p));
    }
    write_core(shared, core, &meta_writes)?;
    if let Some(p) = position {
        shared.stored_position.store(p, Ordering::Relaxed);
    }
    Ok(())
}

/// Forgets `reader` (a data subject's erasure): their state in memory and in every stored
/// feature set. Under the flush lock, so that no write-behind in progress writes it back.
/// Whether there was any.
pub(crate) fn erase<S: StateStore>(
    shared: &Shared<S>,
    core: &Core,
    reader: &str,
) -> Result<bool, EngineError> {
    let _one = shared.flushing.lock().map_err(|_| EngineError::Poisoned)?;
    let p = crate::partition_of(reader, shared.config.partitions);
    let in_memory = core.parts[p as usize]
        .lock()
        .map_err(|_| EngineError::Poisoned)?
        .remove(reader)
        .is_some();
    let mut stored = false;
    for fs in shared.store.feature_sets()? {
        stored |= shared.store.get(fs, p, reader)?.is_some();
        let forget = Write {
            partition: p,
            reader: reader.to_owned(),
            value: None,
        };
        shared.store.write(fs, &[forget], &[])?;
    }
    Ok(in_memory || stored)
}

/// Forgets the cached readers of `partition`, dirty or not (the caller flushed first), under
/// the flush lock so that no write-behind in progress writes one back.
pub(crate) fn release<S: StateStore>(
    shared: &Shared<S>,
    core: &Core,
    partition: u16,
) -> Result<(), EngineError> {
    let _one = shared.flushing.lock().map_err(|_| EngineError::Poisoned)?;
    if let Some(part) = core.parts.get(usize::from(partition)) {
        let mut part = part.lock().map_err(|_| EngineError::Poisoned)?;
        let durable = part.durable;
        *part = crate::engine::cache::Part::default();
        part.durable = durable;
    }
    Ok(())
}

/// Most encoded bytes of reader state in one batch to the store. A write-behind writes every
/// changed reader, which can be tens of thousands after a busy interval: in batches of this
/// size the encoded states (and the store's copy of each batch) held at once stay small, and
/// the heap they come from stays small after them.
const BATCH_BYTES: usize = 1 << 20;

/// Writes a core's changed states, in batches of at most [`BATCH_BYTES`], then `meta` with the
/// last batch: the log position the states cover is stored only once every state is. (A crash
/// between two batches leaves some states newer than the stored position: replaying from it
/// applies events those states hold already, which dedupe by event id skips.) On failure the
/// states stay dirty for the next attempt.
pub(crate) fn write_core<S: StateStore>(
    shared: &Shared<S>,
    core: &Core,
    meta_writes: &[(&str, Vec<u8>)],
) -> Result<(), EngineError> {
    // One flush at a time: a later flush's success must not mark as durable a reader that an
    // earlier one is still writing.
    let _one = shared.flushing.lock().map_err(|_| EngineError::Poisoned)?;
    let started = Instant::now();
    let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
    match write_changed(shared, core, generation, meta_writes) {
        Ok(written) => {
            // What was written can go: evict down to the budget now rather than at the next
            // batch of each partition.
            let budget = shared.config.cache_bytes / core.parts.len();
            let mut evicted = 0;
            for part in core.parts.iter() {
                if let Ok(mut part) = part.lock() {
                    part.durable = part.durable.max(generation);
                    evicted += part.evict(budget).0;
                }
            }
            shared
                .stats
                .evictions
                .fetch_add(evicted as u64, Ordering::Relaxed);
            let s = &shared.stats;
            s.flushes.fetch_add(1, Ordering::Relaxed);
            s.written.fetch_add(written, Ordering::Relaxed);
            s.last_flush_us
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // Every reader this flush marked clean is dirty again, those of batches written
            // too (writing them again is harmless).
            for part in core.parts.iter() {
                if let Ok(mut part) = part.lock() {
                    let part = &mut *part;
                    for (key, slot) in part.readers.iter_mut() {
                        if slot.generation == generation && !slot.dirty {
                            slot.dirty = true;
                            part.dirty.push(key.clone());
                        }
                    }
                }
            }
            shared.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Marks each changed reader clean with `generation`, encodes and writes it (see
/// [`write_core`]); how many were written.
fn write_changed<S: StateStore>(
    shared: &Shared<S>,
    core: &Core,
    generation: u64,
    meta_writes: &[(&str, Vec<u8>)],
) -> Result<u64, EngineError> {
    let bundle = core.bundle.get();
    let mut writes = Vec::new();
    let mut pending = 0;
    let mut written = 0;
    // Each state is encoded here and copied out at its size.
    let mut scratch = Vec::with_capacity(4096);
    for (p, part) in core.parts.iter().enumerate() {
        // The readers to write, marked clean under the partition's lock (a change after it
        // marks one dirty again, for the next flush), each then encoded under its own lock
        // alone: a batch of another reader never waits for an encoding.
        let cells: Vec<(Arc<str>, Cell)> = {
            let mut part = part.lock().map_err(|_| EngineError::Poisoned)?;
            let part = &mut *part;
            std::mem::take(&mut part.dirty)
                .into_iter()
                .filter_map(|key| {
                    let slot = part.readers.get_mut(&*key).filter(|s| s.dirty)?;
                    slot.dirty = false;
                    slot.generation = generation;
                    Some((key, Arc::clone(&slot.state)))
                })
                .collect()
        };
        for (key, cell) in cells {
            // Marked clean, so written whatever happens: a batch that panicked while holding
            // this reader (its decisions answer `Poisoned` from then on) left the state as it
            // was, which is written as it is rather than lost.
            cell.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .encode_into(&bundle, &mut scratch);
            pending += scratch.len();
            writes.push(Write {
                partition: p as u16,
                value: Some(scratch.as_slice().to_vec()),
                reader: key.to_string(),
            });
            if pending >= BATCH_BYTES {
                shared.store.write(core.feature_set, &writes, &[])?;
                written += writes.len() as u64;
                writes.clear();
                pending = 0;
            }
        }
    }
    shared.store.write(core.feature_set, &writes, meta_writes)?;
    Ok(written + writes.len() as u64)
}

/// Whether a reader last seen at `reader_watermark` can be dropped: past its TTL, and past the
/// slack in which an accepted event could still reach its old state.
pub(crate) fn sweepable(reader_watermark: u64, ttl_ms: u64, watermark: u64) -> bool {
    reader_watermark > 0
        && reader_watermark
            .saturating_add(ttl_ms)
            .saturating_add(SWEEP_SLACK_MS)
            < watermark
}

/// Deletes stored readers past their TTL that are not in memory. Returns how many.
pub(crate) fn sweep_store<S: StateStore>(
    shared: &Shared<S>,
    core: &Core,
    paced: bool,
) -> Result<u64, EngineError> {
    let bundle = core.bundle.get();
    let watermark = shared.watermark.load(Ordering::Relaxed);
    let mut total = 0u64;
    for (p, part) in core.parts.iter().enumerate() {
        if paced && shared.stop.lock().map_or(true, |s| *s) {
            break;
        }
        let started = Instant::now();
        let mut candidates = Vec::new();
        shared
            .store
            .scan(core.feature_set, p as u16, &mut |reader, bytes| {
                let wm = ReaderState::peek_watermark(bytes).unwrap_or(0);
                if sweepable(wm, bundle.settings.ttl_ms, watermark) {
                    candidates.push(reader.to_owned());
                }
                true
            })?;
        if paced {
            // As long as the scan took: at most half a core for the sweep.
            wait(shared, started.elapsed(), false);
        }
        let writes: Vec<Write> = {
            let mut part = part.lock().map_err(|_| EngineError::Poisoned)?;
            // The cached readers past their TTL go from memory too (stored or not).
            let gone: Vec<Arc<str>> = part
                .readers
                .iter()
                .filter(|(_, s)| !s.loading)
                .filter(|(_, s)| {
                    let seen = s.state.lock().map_or(u64::MAX, |s| s.watermark());
                    sweepable(seen, bundle.settings.ttl_ms, watermark)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in &gone {
                part.remove(key);
            }
            // Stored readers no longer in memory, and the cached ones just forgotten (a set:
            // one may be both).
            let forget: std::collections::BTreeSet<String> = candidates
                .into_iter()
                .filter(|r| !part.readers.contains_key(r.as_str()))
                .chain(gone.iter().map(|k| k.to_string()))
                .collect();
            forget
                .into_iter()
                .map(|reader| Write {
                    partition: p as u16,
                    reader,
                    value: None,
                })
                .collect()
        };
        if writes.is_empty() {
            continue;
        }
        // Written without the partition's lock (the store's copy, e.g. Kafka's changelog, may
        // take a round trip): a reader that comes back meanwhile is loaded, changed and written
        // again by the next flush; one only read is past its TTL anyway.
        for chunk in writes.chunks(4096) {
            shared.store.write(core.feature_set, chunk, &[])?;
            total += chunk.len() as u64;
        }
    }
    shared.stats.expired.fetch_add(total, Ordering::Relaxed);
    Ok(total)
}
