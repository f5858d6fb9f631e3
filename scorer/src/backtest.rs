//! Backtests: a bundle run over a stored log, deciding each batch as live traffic would have been
//! decided, with the tally of its decisions by action, rule and experiment arm, beside another
//! bundle's (the active one) over the same log.

use std::collections::BTreeMap;

use pulse_protocol::{Event, MAX_EVENTS_PER_BATCH};

use crate::bundle::Bundle;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::replay::Batcher;
use crate::rules::Request;
use crate::state::StateStore;

/// How often each outcome occurred.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Decisions made (one per batch of the log).
    pub decisions: u64,
    /// By action.
    pub actions: BTreeMap<String, u64>,
    /// By rule (`no_rule` when none matched).
    pub rules: BTreeMap<String, u64>,
    /// By experiment and arm (`experiment/arm`).
    pub arms: BTreeMap<String, u64>,
    /// Rule conditions that failed at run time.
    pub rule_errors: u64,
}

impl Tally {
    fn add(&mut self, d: &pulse_protocol::Decision) {
        self.decisions += 1;
        *self
            .actions
            .entry(d.action.as_str().to_owned())
            .or_default() += 1;
        let rule = d.rule.clone().unwrap_or_else(|| d.reason.clone());
        *self.rules.entry(rule).or_default() += 1;
        if let Some(a) = &d.experiment {
            *self
                .arms
                .entry(format!("{}/{}", a.experiment, a.arm))
                .or_default() += 1;
        }
    }
}

/// One record of the log as a backtest reads it.
#[derive(Debug)]
pub struct LogEntry {
    /// The reader.
    pub reader: String,
    /// When its batch was received (the decision's time).
    pub received_at: u64,
    /// The event.
    pub event: Event,
    /// Its corrected time.
    pub time: u64,
}

/// Runs each bundle over `log` in its own engine (state in the store `store_for(i)` gives) and
/// returns their tallies, in the order of `bundles`.
pub fn backtest<S, I, F>(
    bundles: Vec<Bundle>,
    log: I,
    mut store_for: F,
) -> Result<Vec<Tally>, EngineError>
where
    S: StateStore + 'static,
    I: IntoIterator<Item = LogEntry>,
    F: FnMut(usize) -> S,
{
    let engines: Vec<Engine<S>> = bundles
        .into_iter()
        .enumerate()
        .map(|(i, b)| Engine::open(store_for(i), b, EngineConfig::default()).map(|(e, _)| e))
        .collect::<Result<_, _>>()?;
    let mut tallies = vec![Tally::default(); engines.len()];
    let mut batcher = Batcher::new(MAX_EVENTS_PER_BATCH);
    let request = Request::default();
    let mut decide = |reader: &str, events: &[(&Event, u64)], at: u64| -> Result<(), EngineError> {
        for (engine, tally) in engines.iter().zip(tallies.iter_mut()) {
            let before = engine
                .stats()
                .rule_errors
                .load(std::sync::atomic::Ordering::Relaxed);
            let scored = engine.score(reader, events, at, &request)?;
            tally.add(&scored.decision);
            tally.rule_errors += engine
                .stats()
                .rule_errors
                .load(std::sync::atomic::Ordering::Relaxed)
                - before;
        }
        Ok(())
    };
    for e in log {
        batcher.push(&e.reader, e.received_at, e.event, e.time, &mut decide)?;
    }
    batcher.flush(&mut decide)?;
    for e in &engines {
        e.close()?;
    }
    Ok(tallies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use crate::time::DAY_MS;
    use pulse_protocol::{EventId, EventType, PageContext};
    use serde_json::json;
    use std::sync::Arc;

    fn meter(limit: u32) -> Bundle {
        let text = include_str!("../../examples/bundles/meter.toml")
            .replace("limit = 3", &format!("limit = {limit}"));
        Bundle::compile(&text).unwrap()
    }

    #[test]
    fn two_meters_over_one_log() {
        let log = (0..12u128).map(|i| LogEntry {
            reader: format!("r{}", i % 2),
            received_at: 20_000 * DAY_MS + i as u64,
            time: 20_000 * DAY_MS + i as u64,
            event: Event {
                id: EventId(i),
                ts: 0,
                kind: EventType::PageView,
                name: None,
                page: PageContext {
                    url: format!("https://n.example/a{i}"),
                    ..Default::default()
                },
                props: json!({"content_type": "article"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
        });
        let t = backtest(vec![meter(3), meter(5)], log, |_| {
            Arc::new(MemoryStore::default())
        })
        .unwrap();
        // Each reader reads six articles: three (five) metered, the rest walled.
        assert_eq!(t[0].decisions, 12);
        assert_eq!(t[0].actions.get("paywall"), Some(&6));
        assert_eq!(t[1].actions.get("paywall"), Some(&2));
        assert_eq!(t[0].rules.get("meter"), Some(&12));
    }
}
