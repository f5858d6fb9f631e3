//! Scoring a batch: apply the reader's events and decide, waiting for what it needs
//! ([`Engine::score`]) or only if nothing has to be waited for ([`Engine::try_score`]).

use std::sync::atomic::Ordering;

use super::update::{Wait, taken};
use super::{Core, Engine, EngineError, Scored, Snapshot, complete};
use crate::event::Observed;
use crate::rules::{PageFacts, Request, decide};
use crate::state::StateStore;

impl<S: StateStore + 'static> Engine<S> {
    /// Applies a batch of one reader's events (each with its event time) and decides at `now`,
    /// for the request `request` (its device and country, when known).
    pub fn score<E: Observed + ?Sized>(
        &self,
        reader: &str,
        events: &[(&E, u64)],
        now: u64,
        request: &Request,
    ) -> Result<Scored, EngineError> {
        self.score_on(reader, events, &PageFacts::of(events), now, request)
    }

    /// [`Engine::score`] only if nothing has to be waited for: the reader's state is in memory
    /// and no one holds it, its partition or the bundle. Otherwise `Ok(None)`, with nothing
    /// applied; the caller then scores on a thread that may block. The gateway scores this way
    /// on its request's own thread, from the request's parsed events, without copying them.
    pub fn try_score<E: Observed + ?Sized>(
        &self,
        reader: &str,
        events: &[(&E, u64)],
        now: u64,
        request: &Request,
    ) -> Result<Option<Scored>, EngineError> {
        let page = PageFacts::of(events);
        self.scored(reader, events, &page, now, request, Wait::No)
    }

    pub(super) fn score_on<E: Observed + ?Sized>(
        &self,
        reader: &str,
        events: &[(&E, u64)],
        page: &PageFacts,
        now: u64,
        request: &Request,
    ) -> Result<Scored, EngineError> {
        self.scored(reader, events, page, now, request, Wait::Yes)?
            .ok_or(EngineError::Poisoned) // never: it waits
    }

    fn scored<E: Observed + ?Sized>(
        &self,
        reader: &str,
        events: &[(&E, u64)],
        page: &PageFacts,
        now: u64,
        request: &Request,
        wait: Wait,
    ) -> Result<Option<Scored>, EngineError> {
        let core = match (taken(self.shared.core.try_read())?, wait) {
            (Some(core), _) => core,
            (None, Wait::No) => return Ok(None),
            (None, Wait::Yes) => self.core()?,
        };
        let core: &Core = &core;
        let shadow = match (self.shadow.try_read(), wait) {
            (Ok(shadow), _) => shadow.clone(),
            (Err(std::sync::TryLockError::WouldBlock), Wait::No) => return Ok(None),
            (Err(std::sync::TryLockError::WouldBlock), Wait::Yes) => {
                self.shadow.read().ok().and_then(|s| s.clone())
            }
            (Err(std::sync::TryLockError::Poisoned(_)), _) => None,
        };
        // A shadow of other features (set before a rebuild switched them) cannot read this state.
        let shadow = shadow.filter(|b| b.feature_set == core.feature_set);
        let full = self.shared.config.full_snapshots;
        let Some(((mut decided, shadow), counts)) = self.shared.update_if(
            core,
            reader,
            events,
            |bundle, state| {
                let mut active = decide(bundle, reader, state, now, page, request);
                if full {
                    complete(&mut active.read, bundle, state, now);
                }
                let shadow = shadow
                    .as_ref()
                    .map(|b| decide(b, reader, state, now, page, request).decision);
                (active, shadow)
            },
            wait,
        )?
        else {
            return Ok(None);
        };
        self.shared
            .stats
            .rule_errors
            .fetch_add(u64::from(decided.errors), Ordering::Relaxed);
        Ok(Some(Scored {
            decision: decided.decision,
            probability: decided.probability,
            score: decided.score,
            snapshot: Snapshot {
                bundle: core.bundle.get(),
                values: std::mem::take(&mut decided.read),
            },
            shadow,
            applied: counts.applied,
            duplicates: counts.duplicates,
            refused: counts.refused,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pulse_protocol::{EventView, parse_batch};
    use pulse_sim::{Traffic, TrafficConfig};

    use crate::{Bundle, DAY_MS, Engine, EngineConfig, MemoryStore, Request, partition_of};

    fn engine() -> Engine<Arc<MemoryStore>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/bundles/reader-profile.toml"
        );
        let bundle = Bundle::read(std::path::Path::new(path)).unwrap();
        // No write-behind during the test: it would hold readers now and then.
        let config = EngineConfig {
            partitions: 4,
            flush_interval: std::time::Duration::from_secs(3600),
            ..EngineConfig::default()
        };
        Engine::open(Arc::new(MemoryStore::default()), bundle, config)
            .unwrap()
            .0
    }

    #[test]
    fn scoring_the_parsed_views_without_waiting_equals_scoring_owned_events() {
        let (owned, views) = (engine(), engine());
        let mut traffic = Traffic::new(&TrafficConfig {
            readers: 50,
            ..TrafficConfig::default()
        });
        let (mut now, mut inline) = (20_000 * DAY_MS, 0);
        let mut readers = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            now += 60_000;
            let batch = traffic.next_batch(1 + (now / 60_000 % 12) as usize, now);
            let body = serde_json::to_vec(&batch).unwrap();
            let parsed = parse_batch(&body, now).unwrap();
            let reader = parsed.header.reader_key();
            let refs: Vec<(&EventView<'_>, u64)> =
                parsed.accepted.iter().map(|v| (v, v.time)).collect();
            let copies: Vec<_> = parsed
                .accepted
                .iter()
                .map(|v| v.to_event().unwrap())
                .collect();
            let copied: Vec<_> = copies
                .iter()
                .zip(&refs)
                .map(|(e, (_, t))| (e, *t))
                .collect();
            let expected = owned
                .score(reader, &copied, now, &Request::default())
                .unwrap();
            // A reader not in memory is not loaded without waiting: nothing is applied.
            let got = match views
                .try_score(reader, &refs, now, &Request::default())
                .unwrap()
            {
                Some(got) => {
                    inline += 1;
                    got
                }
                None => {
                    assert!(readers.insert(reader.to_owned()), "{reader} was in memory");
                    views
                        .score(reader, &refs, now, &Request::default())
                        .unwrap()
                }
            };
            assert_eq!(got.decision, expected.decision);
            assert_eq!(got.snapshot.values, expected.snapshot.values);
            assert_eq!(
                (got.applied, got.duplicates),
                (expected.applied, expected.duplicates)
            );
        }
        assert_eq!(inline, 2_000 - readers.len());
        for reader in &readers {
            assert_eq!(
                views.explain(reader, now).unwrap(),
                owned.explain(reader, now).unwrap(),
                "{reader}"
            );
        }
    }

    #[test]
    fn without_waiting_a_held_reader_or_partition_is_left_alone() {
        let engine = engine();
        let event = crate::templates::testing::view(1, "/a");
        let t = 20_000 * DAY_MS;
        let req = Request::default();
        engine.score("a", &[(&event, t)], t, &req).unwrap();
        let next = crate::templates::testing::view(2, "/b");
        let core = engine.core().unwrap();
        let p = partition_of("a", 4) as usize;
        let cell = Arc::clone(&core.parts[p].lock().unwrap().readers["a"].state);

        let left_alone = || {
            engine
                .try_score("a", &[(&next, t)], t, &req)
                .unwrap()
                .is_none()
        };
        // The write-behind encoding the reader holds its state: not applied, not waited for.
        let held = cell.lock().unwrap();
        assert!(left_alone());
        drop(held);
        // Its partition held (another reader of it being loaded): the same.
        let part = core.parts[p].lock().unwrap();
        assert!(left_alone());
        drop(part);
        drop(core);
        // Free: applied once, as if it had been scored.
        let scored = engine
            .try_score("a", &[(&next, t)], t, &req)
            .unwrap()
            .unwrap();
        assert_eq!(scored.applied, 1);
        let again = engine.score("a", &[(&next, t)], t, &req).unwrap();
        assert_eq!((again.applied, again.duplicates), (0, 1));
    }
}
