//! `gateway replay`: a candidate bundle decides every batch of the stored event log, as live
//! traffic would have been decided, beside the configured (active) bundle over the same log
//! ([`pulse_scorer::backtest`], each bundle in an engine of its own with reader state in
//! memory); the report is the distribution of their decisions by action, rule and experiment
//! arm, as a table or JSON.
//!
//! What a replay cannot know: the request (`request.device` and `request.country` read as
//! unknown) and entitlements. Memory: every reader's state is held, for each bundle.
//!
//! IO boundary: the log files, read.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use pulse_protocol::Action;
use pulse_scorer::{Bundle, EngineError, LogEntry, MemoryStore, Tally};
use serde_json::{Value, json};

use crate::log::{LogError, LogFiles};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The event log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An engine failed.
    #[error("scorer: {0}")]
    Engine(#[from] EngineError),
}

/// One bundle's part of a replay.
#[derive(Debug, Clone)]
pub struct BacktestRun {
    /// `active` (the configured bundle) or `candidate`.
    pub role: &'static str,
    /// The bundle's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its decisions.
    pub tally: Tally,
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Backtest {
    /// Events of the log read.
    pub events: u64,
    /// The active bundle's run, then the candidate's.
    pub runs: Vec<BacktestRun>,
}

/// Runs `active` and `candidate` over the event log of `files`.
pub fn backtest(
    files: &LogFiles,
    active: Bundle,
    candidate: Bundle,
) -> Result<Backtest, BacktestError> {
    let names: Vec<_> = [&active, &candidate]
        .iter()
        .map(|b| (b.id.clone(), b.name.clone()))
        .collect();
    let mut events = 0u64;
    let mut failed = None;
    let log = files
        .events_from(0)
        .map_while(|stored| match stored.and_then(|s| s.record()) {
            Ok(r) => {
                events += 1;
                Some(LogEntry {
                    reader: r.reader,
                    received_at: r.received_at,
                    event: r.event,
                    time: r.time,
                })
            }
            Err(e) => {
                failed = Some(e);
                None
            }
        });
    let tallies = pulse_scorer::backtest(vec![active, candidate], log, |_| {
        Arc::new(MemoryStore::default())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let runs = ["active", "candidate"]
        .into_iter()
        .zip(names)
        .zip(tallies)
        .map(|((role, (id, name)), tally)| BacktestRun {
            role,
            id,
            name,
            tally,
        })
        .collect();
    Ok(Backtest { events, runs })
}

impl Backtest {
    /// The report as JSON: the events read, then each run with its tallies.
    pub fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "bundles": self.runs.iter().map(|r| json!({
                "role": r.role,
                "id": r.id,
                "name": r.name,
                "decisions": r.tally.decisions,
                "rule_errors": r.tally.rule_errors,
                "actions": r.tally.actions,
                "rules": r.tally.rules,
                "arms": r.tally.arms,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as a table: one column per bundle, rows by action, rule and arm, each a
    /// count and its share of the bundle's decisions.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let cell = |n: u64, of: u64| {
            if of == 0 {
                n.to_string()
            } else {
                format!("{n} ({:.1}%)", n as f64 * 100.0 / of as f64)
            }
        };
        let plain = |f: &dyn Fn(&BacktestRun) -> String| self.runs.iter().map(f).collect();
        rows.push(("bundle".into(), plain(&|r| r.id.clone())));
        rows.push(("name".into(), plain(&|r| r.name.clone())));
        rows.push((
            "decisions".into(),
            plain(&|r| r.tally.decisions.to_string()),
        ));
        rows.push((
            "rule errors".into(),
            plain(&|r| r.tally.rule_errors.to_string()),
        ));
        let section = |rows: &mut Vec<(String, Vec<String>)>,
                       title: &str,
                       keys: Vec<String>,
                       get: &dyn Fn(&Tally, &str) -> u64| {
            if keys.is_empty() {
                return;
            }
            rows.push((String::new(), Vec::new()));
            rows.push((format!("by {title}"), Vec::new()));
            for key in keys {
                let cells = self
                    .runs
                    .iter()
                    .map(|r| cell(get(&r.tally, &key), r.tally.decisions))
                    .collect();
                rows.push((format!("  {key}"), cells));
            }
        };
        let seen = |pick: &dyn Fn(&Tally) -> Vec<String>| {
            self.runs
                .iter()
                .flat_map(|r| pick(&r.tally))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        };
        // Actions in their own order, rules and arms by name.
        let actions: Vec<String> = Action::ALL
            .iter()
            .map(|a| a.as_str().to_owned())
            .filter(|a| self.runs.iter().any(|r| r.tally.actions.contains_key(a)))
            .collect();
        section(&mut rows, "action", actions, &|t, k| {
            t.actions.get(k).copied().unwrap_or(0)
        });
        section(
            &mut rows,
            "rule",
            seen(&|t| t.rules.keys().cloned().collect()),
            &|t, k| t.rules.get(k).copied().unwrap_or(0),
        );
        section(
            &mut rows,
            "experiment arm",
            seen(&|t| t.arms.keys().cloned().collect()),
            &|t, k| t.arms.get(k).copied().unwrap_or(0),
        );
        let label = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
        let width = rows
            .iter()
            .flat_map(|(_, c)| c.iter().map(String::len))
            .max()
            .unwrap_or(0)
            .max(9)
            + 2;
        let mut out = format!("replayed {} events of the log\n\n", self.events);
        let head = (
            String::new(),
            self.runs.iter().map(|r| r.role.to_owned()).collect(),
        );
        for (l, cells) in std::iter::once(head).chain(rows) {
            let _ = write!(out, "{l:label$}");
            for c in cells {
                let _ = write!(out, "{c:width$}");
            }
            out.truncate(out.trim_end_matches(' ').len());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        role: &'static str,
        id: &str,
        actions: &[(&str, u64)],
        arms: &[(&str, u64)],
    ) -> BacktestRun {
        let mut tally = Tally::default();
        for (a, n) in actions {
            tally.decisions += n;
            tally.actions.insert((*a).to_owned(), *n);
            tally.rules.insert(format!("rule-{a}"), *n);
        }
        for (a, n) in arms {
            tally.arms.insert((*a).to_owned(), *n);
        }
        BacktestRun {
            role,
            id: id.into(),
            name: format!("name-{id}"),
            tally,
        }
    }

    #[test]
    fn table_and_json_side_by_side() {
        let b = Backtest {
            events: 10,
            runs: vec![
                run(
                    "active",
                    "aaa",
                    &[("meter", 3), ("paywall", 1)],
                    &[("exp/five", 2)],
                ),
                run("candidate", "bbb", &[("allow", 2), ("meter", 2)], &[]),
            ],
        };
        let table = b.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "replayed 10 events of the log");
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
        };
        assert_eq!(row("bundle"), "aaa bbb");
        assert_eq!(row("meter"), "3 (75.0%) 2 (50.0%)");
        assert_eq!(row("allow"), "0 (0.0%) 2 (50.0%)");
        assert_eq!(row("exp/five"), "2 (50.0%) 0 (0.0%)");
        assert!(
            table.find("  allow").unwrap() < table.find("  meter").unwrap(),
            "{table}"
        );
        let j = b.to_json();
        assert_eq!(j["bundles"][1]["actions"]["allow"], 2);
        assert_eq!(j["bundles"][0]["role"], "active");
        assert_eq!(j["events"], 10);
    }
}
