//! One simulated month through the real scorer: every reader's batches go to a fresh
//! [`Engine`] over a [`MemoryStore`] in the order live traffic would bring them (by the time
//! each batch is sent, across readers), and each page's decision goes back to its reader, whose
//! next batch depends on it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use pulse_protocol::{Batch, Event};
use pulse_scorer::{Bundle, Engine, EngineConfig, MemoryStore, Request};
use pulse_sim::{Outcome, ReaderSim, Readership, Response};

/// A reader's first assignment in the experiment: the arm and its logged probability.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Assigned {
    pub(crate) arm: String,
    pub(crate) probability: f64,
}

/// What a month through one bundle gave.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Month {
    /// Each reader's outcome (the simulator's truth).
    pub(crate) outcomes: Vec<Outcome>,
    /// Each reader's first assignment in the experiment, from the decisions the pages showed.
    pub(crate) assigned: Vec<Option<Assigned>>,
    /// Decisions shown, by the rule that made them (`no_rule` when none matched).
    pub(crate) rules: BTreeMap<String, u64>,
    /// Batches scored.
    pub(crate) batches: u64,
    /// Events the engine did not apply (too late, or seen before): none when readers' batches
    /// arrive in order.
    pub(crate) unapplied: u64,
    /// The model's score of each reader at the end of the month (empty without a model).
    pub(crate) scores: Vec<Option<f64>>,
}

/// Runs `readership`'s month through `bundle`; `experiment` names the experiment whose
/// assignments to record.
pub(crate) fn month(
    readership: &Readership,
    bundle: Bundle,
    experiment: Option<&str>,
) -> anyhow::Result<Month> {
    let config = EngineConfig {
        // Every reader stays in memory (no eviction, so nothing to write behind): the figures
        // are about decisions, and a write-behind would only cost time.
        cache_bytes: 1 << 40,
        flush_interval: Duration::from_secs(24 * 3600),
        sweep_interval: Duration::from_secs(24 * 3600),
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open(MemoryStore::default(), bundle, config)?;
    let n = readership.readers();
    let mut readers: Vec<ReaderSim<'_>> = (0..n)
        .map(|i| readership.reader(i, Response::default()))
        .collect();
    let mut next: Vec<Option<Batch>> = vec![None; n];
    // The readers' next batches by the time they are sent (then by reader, for ties).
    let mut queue = BinaryHeap::new();
    for (i, reader) in readers.iter_mut().enumerate() {
        enqueue(&mut queue, &mut next, i, reader);
    }
    let mut out = Month {
        outcomes: Vec::new(),
        assigned: vec![None; n],
        rules: BTreeMap::new(),
        batches: 0,
        unapplied: 0,
        scores: Vec::new(),
    };
    let anonymous = Request::default();
    // A subscriber's pages carry the publisher's token from checkout on: the gateway turns it
    // into `entitled.subscriber` (the bundles trust nothing else).
    let subscriber = Request {
        entitled: vec![("subscriber".to_owned(), serde_json::Value::Bool(true))],
        ..Request::default()
    };
    while let Some(Reverse((now, i))) = queue.pop() {
        let Some(batch) = next[i].take() else {
            continue;
        };
        let request = match &readers[i].outcome().subscribed {
            Some(s) if s.at <= now => &subscriber,
            _ => &anonymous,
        };
        let events: Vec<(&Event, u64)> = batch.events.iter().map(|e| (e, e.ts)).collect();
        let scored = engine.score(batch.header.reader_key(), &events, now, request)?;
        out.batches += 1;
        out.unapplied += u64::from(scored.duplicates) + scored.refused.len() as u64;
        let reader = &mut readers[i];
        if reader.waiting() {
            let d = &scored.decision;
            let rule = d.rule.clone().unwrap_or_else(|| d.reason.clone());
            *out.rules.entry(rule).or_default() += 1;
            if let (Some(a), Some(p), None) = (&d.experiment, scored.probability, &out.assigned[i])
                && experiment == Some(a.experiment.as_str())
            {
                out.assigned[i] = Some(Assigned {
                    arm: a.arm.clone(),
                    probability: p,
                });
            }
            reader.shown(d);
        }
        enqueue(&mut queue, &mut next, i, reader);
    }
    out.outcomes = readers.iter().map(|r| r.outcome().clone()).collect();
    // The model's view of each reader at the end of the month, when the bundle has one.
    if engine.bundle()?.model.is_some() {
        for i in 0..n {
            let explained = engine.explain(readership.reader_key(i), readership.end_ms())?;
            out.scores
                .push(explained.and_then(|x| x["model"]["score"].as_f64()));
        }
    }
    Ok(out)
}

/// Queues reader `i`'s next batch, if any.
fn enqueue(
    queue: &mut BinaryHeap<Reverse<(u64, usize)>>,
    next: &mut [Option<Batch>],
    i: usize,
    reader: &mut ReaderSim<'_>,
) {
    if let Some(batch) = reader.next_batch() {
        queue.push(Reverse((batch.header.sent_at, i)));
        next[i] = Some(batch);
    }
}
