//! What scoring a batch gives back: the decision with what it read (its feature snapshot, the
//! training row of the decision log) and what happened to the batch's events.

use std::sync::Arc;

use pulse_protocol::Decision;
use serde_json::Value as Json;

use crate::bundle::Bundle;
use crate::state::{Outcome, ReaderState};

/// What one batch did.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The decision (after the batch's events).
    pub decision: Decision,
    /// The probability of the reader's experiment arm, when a rule assigned one.
    pub probability: Option<f64>,
    /// The model's score, when a rule read it.
    pub score: Option<f64>,
    /// The feature values the decision read.
    pub snapshot: Snapshot,
    /// What the shadow bundle decided, when one is set (the page never sees it).
    pub shadow: Option<Decision>,
    /// Events applied.
    pub applied: u32,
    /// Events whose id was applied before.
    pub duplicates: u32,
    /// Indices (in the batch) of events not applied because they were too late, with why
    /// ([`Outcome::TooLate`] or [`Outcome::DedupeFull`]).
    pub refused: Vec<(usize, Outcome)>,
}

/// The feature values a decision read, named by the bundle that decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The bundle.
    pub bundle: Arc<Bundle>,
    /// Feature index and value.
    pub values: Vec<(u16, crate::value::Value)>,
}

impl Snapshot {
    /// As a JSON object: feature name → value (`null` when missing).
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.values
                .iter()
                .filter_map(|(i, v)| {
                    let f = self.bundle.features.get(usize::from(*i))?;
                    Some((f.name.clone(), v.to_json()))
                })
                .collect(),
        )
    }
}

/// Adds every feature's value the decision did not read.
pub(super) fn complete(
    values: &mut Vec<(u16, crate::value::Value)>,
    bundle: &Bundle,
    state: &ReaderState,
    now: u64,
) {
    let mut have = vec![false; bundle.features.len()];
    for (i, _) in values.iter() {
        if let Some(h) = have.get_mut(usize::from(*i)) {
            *h = true;
        }
    }
    for (i, had) in have.into_iter().enumerate() {
        if !had {
            values.push((i as u16, state.value(bundle, i, now)));
        }
    }
    values.sort_by_key(|(i, _)| *i);
}
