//! The scorer: loads a reader's state, applies a batch's events, decides, and saves the state,
//! one reader at a time (striped locks), with rules that can be swapped while it runs.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use pulse_protocol::{Decision, Event};

use crate::{MeterRules, ReaderState, StateStore, StoreError};

/// Number of lock stripes; readers hash onto them.
const STRIPES: usize = 64;

/// An event with its time on the server's clock (ms since the epoch).
pub type TimedEvent<'a> = (&'a Event, u64);

/// Why the scorer could not decide.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A saved state could not be read back.
    #[error("corrupt state for a reader: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A lock was poisoned by a panic in another thread.
    #[error("scorer lock poisoned")]
    Poisoned,
}

/// The scorer over a state store.
#[derive(Debug)]
pub struct Scorer<S> {
    store: S,
    rules: RwLock<Arc<MeterRules>>,
    stripes: Box<[Mutex<()>]>,
}

impl<S: StateStore> Scorer<S> {
    /// A scorer keeping state in `store` and deciding with `rules`.
    pub fn new(store: S, rules: MeterRules) -> Self {
        Self {
            store,
            rules: RwLock::new(Arc::new(rules)),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Result<Arc<MeterRules>, ScoreError> {
        Ok(Arc::clone(
            &*self.rules.read().map_err(|_| ScoreError::Poisoned)?,
        ))
    }

    /// Replaces the rules; batches scored after this call use the new ones.
    pub fn set_rules(&self, rules: MeterRules) -> Result<(), ScoreError> {
        *self.rules.write().map_err(|_| ScoreError::Poisoned)? = Arc::new(rules);
        Ok(())
    }

    /// The store the scorer keeps state in.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Applies a batch's events to the reader's state and returns the decision, which counts
    /// them. Events already applied (same id) change nothing.
    pub fn score(
        &self,
        reader: &str,
        events: &[TimedEvent<'_>],
        now: u64,
    ) -> Result<Decision, ScoreError> {
        self.update(reader, events, now, |state, rules| state.decide(rules, now))
    }

    /// Applies events without deciding: used to rebuild state from the log.
    pub fn replay(
        &self,
        reader: &str,
        events: &[TimedEvent<'_>],
        now: u64,
    ) -> Result<(), ScoreError> {
        self.update(reader, events, now, |_, _| ())
    }

    /// The reader's current state (a fresh one when there is none).
    pub fn state(&self, reader: &str) -> Result<ReaderState, ScoreError> {
        Ok(match self.store.load(reader)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => ReaderState::default(),
        })
    }

    fn update<T>(
        &self,
        reader: &str,
        events: &[TimedEvent<'_>],
        now: u64,
        then: impl FnOnce(&ReaderState, &MeterRules) -> T,
    ) -> Result<T, ScoreError> {
        let rules = self.rules()?;
        let _guard = self.stripes[stripe(reader)]
            .lock()
            .map_err(|_| ScoreError::Poisoned)?;
        let mut state = self.state(reader)?;
        let mut changed = false;
        for (event, time) in events {
            changed |= state.apply(event, *time, &rules, now);
        }
        if changed {
            state.prune(&rules, now);
            self.store.save(reader, &serde_json::to_vec(&state)?)?;
        }
        Ok(then(&state, &rules))
    }
}

fn stripe(reader: &str) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    reader.hash(&mut hasher);
    (hasher.finish() % STRIPES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DAY_MS, MemoryStore};
    use pulse_protocol::{Action, EventId, EventType, PageContext};

    fn article(id: u128, n: u32) -> Event {
        Event {
            id: EventId(id),
            ts: 0,
            kind: EventType::PageView,
            name: None,
            page: PageContext {
                url: format!("https://n.example/a{n}"),
                ..Default::default()
            },
            props: serde_json::json!({"content_type": "article"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    #[test]
    fn state_persists_across_scorers_and_readers_are_separate() {
        let now = 20_000 * DAY_MS;
        let scorer = Scorer::new(MemoryStore::default(), MeterRules::default());
        for i in 0..3 {
            let e = article(i, i as u32);
            scorer.score("alice", &[(&e, now)], now).unwrap();
        }
        let e = article(9, 9);
        assert_eq!(
            scorer.score("bob", &[(&e, now)], now).unwrap().remaining,
            Some(2)
        );
        let store = scorer.store;
        let scorer = Scorer::new(store, MeterRules::default());
        let e = article(3, 3);
        assert_eq!(
            scorer.score("alice", &[(&e, now)], now).unwrap().action,
            Action::Paywall
        );
        // Rules swap at runtime: a higher limit lets alice read again.
        scorer
            .set_rules(MeterRules {
                limit: 5,
                ..MeterRules::default()
            })
            .unwrap();
        let e = article(4, 4);
        let d = scorer.score("alice", &[(&e, now)], now).unwrap();
        assert_eq!((d.action, d.remaining), (Action::Meter, Some(1)));
    }

    #[test]
    fn replay_is_idempotent() {
        let now = 20_000 * DAY_MS;
        let scorer = Scorer::new(MemoryStore::default(), MeterRules::default());
        let events: Vec<_> = (0..2).map(|i| article(i, i as u32)).collect();
        let timed: Vec<_> = events.iter().map(|e| (e, now)).collect();
        scorer.replay("r", &timed, now).unwrap();
        scorer.replay("r", &timed, now).unwrap();
        assert_eq!(
            scorer
                .state("r")
                .unwrap()
                .views_in_window(&MeterRules::default(), now),
            2
        );
    }
}
