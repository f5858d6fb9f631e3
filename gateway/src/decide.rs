//! The one place the gateway calls the scorer: [`Decider::decide`] for a batch just made
//! durable, [`Decider::replay`] for events read back from the log at start. Swapping the scorer
//! for another engine changes this file only.
//!
//! Today's scorer takes owned [`Event`]s: they are built here from the batch's views (strings
//! copied, `props` parsed into a map), on the async side, and the scorer itself runs on the
//! blocking pool (it reads and writes the reader-state store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_protocol::{Action, Decision, Event, EventView};
use pulse_scorer::{MeterRules, ScoreError, Scorer};

use crate::log::AppliedGuard;
use crate::metrics::Metrics;
use crate::state::ReaderStates;

/// The scorer, as the gateway uses it.
#[derive(Debug)]
pub struct Decider {
    scorer: Arc<Scorer<Arc<ReaderStates>>>,
    deadline: Duration,
    metrics: Arc<Metrics>,
}

impl Decider {
    /// A scorer keeping reader state in `states`, deciding with `rules`, answering within
    /// `deadline` (else the fallback).
    pub fn new(
        states: Arc<ReaderStates>,
        rules: MeterRules,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            scorer: Arc::new(Scorer::new(states, rules)),
            deadline,
            metrics,
        }
    }

    /// Replaces the rules for every decision from now on.
    pub fn set_rules(&self, rules: MeterRules) -> Result<(), ScoreError> {
        self.scorer.set_rules(rules)
    }

    /// Applies one event read back from the log (start-up replay) to its reader's state.
    pub fn replay(
        &self,
        reader: &str,
        event: &Event,
        time: u64,
        now: u64,
    ) -> Result<(), ScoreError> {
        self.scorer.replay(reader, &[(event, time)], now)
    }

    /// Applies a batch's accepted (and durable) events to the reader's state and decides,
    /// within the decision deadline; past it, answers the safe fallback while the scorer
    /// finishes in the background. `applied` is released once the state holds the events
    /// (kept when the scorer fails, so that they are replayed at the next start).
    pub async fn decide(
        &self,
        reader: &str,
        events: &[EventView<'_>],
        applied: Option<AppliedGuard>,
        now: u64,
    ) -> Decision {
        // The scorer's API takes owned events with their server times.
        let owned: Result<Vec<(Event, u64)>, _> = events
            .iter()
            .map(|view| view.to_event().map(|event| (event, view.time)))
            .collect();
        let Ok(owned) = owned else {
            // The parser only accepts events that read back; should one not, the state misses
            // them until a replay: keep them pending.
            tracing::error!(reader, "an accepted event did not convert for the scorer");
            std::mem::forget(applied);
            return self.fallback();
        };
        let scorer = Arc::clone(&self.scorer);
        let reader = reader.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let refs: Vec<_> = owned.iter().map(|(e, t)| (e, *t)).collect();
            let decision = scorer.score(&reader, &refs, now);
            if decision.is_err() {
                // Not applied: the replay point stays before these events until a restart.
                std::mem::forget(applied);
            } else {
                drop(applied);
            }
            decision
        });
        let started = Instant::now();
        let decided = tokio::time::timeout(self.deadline, task).await;
        self.metrics.decision_latency.observe(started.elapsed());
        match decided {
            Ok(Ok(Ok(decision))) => return decision,
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "scorer failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "scorer task failed"),
            Err(_) => tracing::warn!("scorer missed its deadline"),
        }
        self.fallback()
    }

    /// The safe default: show everything, and say it is a fallback.
    fn fallback(&self) -> Decision {
        self.metrics.fallback();
        Decision {
            action: Action::Allow,
            remaining: None,
            limit: None,
            reason: "fallback".into(),
            fallback: true,
            version: self.scorer.rules().map(|r| r.version()).unwrap_or_default(),
        }
    }
}
