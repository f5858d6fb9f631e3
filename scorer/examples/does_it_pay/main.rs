//! Does it pay? The same simulated month (same seed, same readers) through the real scorer
//! under the demo's fixed meter (`examples/bundles/meter.toml`), under the trained bundle
//! (`examples/bundles/reader-profile.toml`) and, as the baseline, with no wall at all (the
//! trained bundle's features and model without its rules, so its scores can be compared); each
//! page's decision goes back to its reader, who responds by `pulse-sim`'s documented model
//! (`sim/src/response.rs`). Prints a markdown report: per 1,000 readers, subscriptions, page
//! views, articles read, walls, offers, prompts, registrations and newsletter sign-ups; and for
//! the trained bundle's experiment, each arm's inverse-propensity-weighted estimate (from the
//! logged assignment probabilities) next to the simulator's ground truth.
//!
//! ```text
//! cargo run --release -p pulse-scorer --example does_it_pay -- [--readers 20000] [--seed 1]
//! ```
//!
//! The ground truth of an arm is counterfactual: the month again, through the bundle with the
//! experiment's rule replaced by that arm's action (by nothing for the holdout, whose readers go
//! on to the next rule), so that every reader who reaches the rule gets that arm. The simulator
//! is seeded per reader, so each reader's month up to the first time they reach the rule is the
//! same in every run, and after it depends only on what they are shown: a reader's outcome in
//! their own arm is the same in the real month and in that arm's month (the report counts the
//! readers for whom this holds). The truth is the mean over the same eligible readers (those
//! shown a decision from the experiment's rule in the real month).
//!
//! Deterministic: the same arguments print the same report (runs go on threads, each with an
//! engine of its own).

mod experiment;
mod month;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::anyhow;
use pulse_scorer::Bundle;
use pulse_sim::{Outcome, Readership, ReadershipConfig, Via};

use experiment::{Estimate, Experiment, ipw};
use month::{Month, month};

fn main() -> anyhow::Result<()> {
    let mut readers = 20_000;
    let mut seed = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} takes a value"));
        match arg.as_str() {
            "--readers" => readers = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            _ => anyhow::bail!("unknown argument {arg:?} (--readers N, --seed S)"),
        }
    }
    let started = std::time::Instant::now();
    let report = report(readers, seed, &bundles())?;
    print!("{report}");
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The example bundles' folder.
fn bundles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bundles")
}

/// A bundle from its text, with the files it names read from `folder`.
fn compile(text: &str, folder: &Path) -> anyhow::Result<Bundle> {
    Bundle::compile_with(text, &mut |name| {
        std::fs::read(folder.join(name)).map_err(|e| format!("{name}: {e}"))
    })
    .map_err(|e| anyhow!("{e}"))
}

/// A month to run: its name, its bundle, the experiment whose assignments to record.
#[derive(Clone, Debug)]
struct Job {
    name: String,
    bundle: Bundle,
    experiment: Option<String>,
}

/// Totals over readers.
#[derive(Clone, Debug, Default, PartialEq)]
struct Totals {
    subscriptions: u64,
    at_paywall: u64,
    by_offer: u64,
    unasked: u64,
    page_views: u64,
    articles_read: u64,
    paywalls: u64,
    register_walls: u64,
    offers: u64,
    prompts: u64,
    registrations: u64,
    signups: u64,
}

impl Totals {
    fn of(outcomes: &[Outcome]) -> Self {
        let mut t = Self::default();
        for o in outcomes {
            if let Some(s) = o.subscribed {
                t.subscriptions += 1;
                match s.via {
                    Via::Paywall => t.at_paywall += 1,
                    Via::Offer => t.by_offer += 1,
                    Via::Unasked => t.unasked += 1,
                }
            }
            t.page_views += u64::from(o.page_views);
            t.articles_read += u64::from(o.articles_read);
            t.paywalls += u64::from(o.paywalls);
            t.register_walls += u64::from(o.register_walls);
            t.offers += u64::from(o.offers);
            t.prompts += u64::from(o.prompts);
            t.registrations += u64::from(o.registered_at.is_some());
            t.signups += u64::from(o.signed_up_at.is_some());
        }
        t
    }
}

/// One bundle's month.
#[derive(Clone, Debug, PartialEq)]
struct Policy {
    name: String,
    totals: Totals,
    /// Decisions shown, by rule.
    rules: BTreeMap<String, u64>,
    /// The model's scores of the readers who did not subscribe, at the end of the month, sorted
    /// (empty without a model).
    scores: Vec<f64>,
}

/// One arm of the experiment.
#[derive(Clone, Debug, PartialEq)]
struct ArmRow {
    arm: String,
    readers: usize,
    probability: f64,
    subscribed: Estimate,
    subscribed_truth: f64,
    articles: Estimate,
    articles_truth: f64,
}

/// The experiment's estimates and truths.
#[derive(Clone, Debug, PartialEq)]
struct ExperimentReport {
    name: String,
    holdout: f64,
    eligible: usize,
    arms: Vec<ArmRow>,
    /// Eligible readers whose month in their own arm equals that arm's counterfactual month.
    consistent: usize,
}

/// What `does_it_pay` prints.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    readers: usize,
    seed: u64,
    days: u32,
    policies: Vec<Policy>,
    experiment: Option<ExperimentReport>,
    /// Months run, and the batches scored over them.
    months: usize,
    batches: u64,
}

/// Runs the months and makes the report.
fn report(readers: usize, seed: u64, folder: &Path) -> anyhow::Result<Report> {
    let config = ReadershipConfig {
        readers,
        seed,
        ..ReadershipConfig::default()
    };
    let readership = Readership::new(&config);
    let meter = std::fs::read_to_string(folder.join("meter.toml"))?;
    let profile = std::fs::read_to_string(folder.join("reader-profile.toml"))?;
    let found: Option<Experiment> = experiment::find(&profile)?;
    let job = |name: &str, text: &str, experiment: Option<String>| -> anyhow::Result<Job> {
        Ok(Job {
            name: name.to_owned(),
            bundle: compile(text, folder)?,
            experiment,
        })
    };
    let mut jobs = vec![
        // The baseline: the trained bundle's features and model, no rules (every page free).
        job("no wall", &experiment::without_rules(&profile)?, None)?,
        job("meter.toml", &meter, None)?,
        job(
            "reader-profile.toml",
            &profile,
            found.as_ref().map(|e| e.name.clone()),
        )?,
    ];
    // The counterfactual months: every eligible reader in one arm, or all held out.
    let mut forced = Vec::new();
    if let Some(e) = &found {
        let arms = e.arms.iter().map(|a| Some(a.as_str()));
        let holdout = (e.holdout > 0.0).then_some(None);
        for arm in arms.chain(holdout) {
            let text = experiment::forced(&profile, &e.name, arm)?;
            let name = arm.unwrap_or("holdout").to_owned();
            jobs.push(job(&name, &text, None)?);
            forced.push(name);
        }
    }
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    let months = run_all(&readership, jobs)?;
    for (name, m) in names.iter().zip(&months) {
        if m.unapplied > 0 {
            anyhow::bail!("{name}: the engine did not apply {} events", m.unapplied);
        }
    }
    let policies = names
        .iter()
        .zip(&months)
        .take(3)
        .map(|(name, m)| Policy {
            name: name.clone(),
            totals: Totals::of(&m.outcomes),
            rules: m.rules.clone(),
            scores: {
                let mut s: Vec<f64> = m
                    .scores
                    .iter()
                    .zip(&m.outcomes)
                    .filter(|(_, o)| o.subscribed.is_none())
                    .filter_map(|(s, _)| *s)
                    .collect();
                s.sort_by(f64::total_cmp);
                s
            },
        })
        .collect();
    let experiment = found.map(|e| {
        let real = &months[2];
        let eligible: Vec<usize> = (0..readers.max(1))
            .filter(|&i| real.assigned[i].is_some())
            .collect();
        let mut consistent = 0;
        let arms = forced
            .iter()
            .zip(&months[3..])
            .map(|(arm, cf)| {
                let mut rows = Vec::new();
                for &i in &eligible {
                    let Some(a) = real.assigned[i].as_ref().filter(|a| &a.arm == arm) else {
                        continue;
                    };
                    let o = &real.outcomes[i];
                    rows.push((o, a.probability));
                    consistent += usize::from(*o == cf.outcomes[i]);
                }
                let truth = |f: &dyn Fn(&Outcome) -> f64| {
                    eligible.iter().map(|&i| f(&cf.outcomes[i])).sum::<f64>()
                        / eligible.len().max(1) as f64
                };
                let subscribed = |o: &Outcome| f64::from(u8::from(o.subscribed.is_some()));
                let articles = |o: &Outcome| f64::from(o.articles_read);
                ArmRow {
                    arm: arm.clone(),
                    readers: rows.len(),
                    probability: rows.first().map_or(f64::NAN, |r| r.1),
                    subscribed: ipw(rows.iter().map(|(o, p)| (subscribed(o), *p))),
                    subscribed_truth: truth(&subscribed),
                    articles: ipw(rows.iter().map(|(o, p)| (articles(o), *p))),
                    articles_truth: truth(&articles),
                }
            })
            .collect();
        ExperimentReport {
            name: e.name,
            holdout: e.holdout,
            eligible: eligible.len(),
            arms,
            consistent,
        }
    });
    Ok(Report {
        readers: readership.readers(),
        seed,
        days: config.days,
        policies,
        experiment,
        months: months.len(),
        batches: months.iter().map(|m| m.batches).sum(),
    })
}

/// Runs each job's month, on as many threads as there are cores; the months in job order.
fn run_all(readership: &Readership, jobs: Vec<Job>) -> anyhow::Result<Vec<Month>> {
    let n = jobs.len();
    let jobs: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<anyhow::Result<Month>>>> =
        (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i).and_then(|j| j.lock().ok()?.take()) else {
                        break;
                    };
                    let m = month(readership, job.bundle, job.experiment.as_deref());
                    if let Ok(mut r) = results[i].lock() {
                        *r = Some(m);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .map_err(|_| anyhow!("a run panicked"))?
                .unwrap_or_else(|| Err(anyhow!("a run did not finish")))
        })
        .collect()
}

/// `n` with thousands separated by commas.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How a row of the totals table counts.
type Count = fn(&Totals) -> u64;

/// The rows of the totals table: a name and how to count it.
const ROWS: [(&str, Count); 13] = [
    ("subscriptions", |t| t.subscriptions),
    ("· at a paywall", |t| t.at_paywall),
    ("· taking an offer", |t| t.by_offer),
    ("· unasked", |t| t.unasked),
    ("page views", |t| t.page_views),
    ("articles read", |t| t.articles_read),
    ("walls shown (paywall + register wall)", |t| {
        t.paywalls + t.register_walls
    }),
    ("· paywalls", |t| t.paywalls),
    ("· register walls", |t| t.register_walls),
    ("offers shown", |t| t.offers),
    ("prompts shown", |t| t.prompts),
    ("registrations", |t| t.registrations),
    ("newsletter sign-ups", |t| t.signups),
];

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = |n: u64| n as f64 * 1000.0 / self.readers as f64;
        writeln!(
            f,
            "{} simulated readers, seed {}, {} days; per 1,000 readers:\n",
            thousands(self.readers as u64),
            self.seed,
            self.days
        )?;
        write!(f, "| per 1,000 readers |")?;
        for p in &self.policies {
            write!(f, " {} |", p.name)?;
        }
        write!(f, "\n|---|")?;
        for _ in &self.policies {
            write!(f, "---:|")?;
        }
        writeln!(f)?;
        for (name, get) in ROWS {
            write!(f, "| {name} |")?;
            for p in &self.policies {
                let x = per(get(&p.totals));
                if x >= 1000.0 {
                    write!(f, " {} |", thousands(x.round() as u64))?;
                } else {
                    write!(f, " {x:.1} |")?;
                }
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "\n*no wall*: reader-profile.toml's features and model without its rules (every page \
             free). Page views: every page loaded, walled or not; articles read: article pages \
             whose content was shown."
        )?;
        for p in self.policies.iter().filter(|p| !p.scores.is_empty()) {
            let s = &p.scores;
            let q = |f: f64| s[((s.len() - 1) as f64 * f).round() as usize];
            let share =
                |t: f64| s.iter().filter(|&&x| x >= t).count() as f64 * 100.0 / s.len() as f64;
            writeln!(
                f,
                "\n`model.score` at the end of the month of the readers who did not subscribe ({}): \
                 median {:.3}, p90 {:.3}, p99 {:.3}; {:.1} % of them at 0.25 or more, {:.2} % at \
                 0.5 or more.",
                p.name,
                q(0.5),
                q(0.9),
                q(0.99),
                share(0.25),
                share(0.5),
            )?;
        }
        if let Some(e) = &self.experiment {
            writeln!(
                f,
                "\nExperiment `{}` (reader-profile.toml, holdout {}): {} eligible readers (shown a \
                 decision of its rule). Estimates weigh each reader by the inverse of the logged \
                 assignment probability; the truth is the mean over the same readers of the month \
                 in which every one of them is in that arm. Their own arm's outcome equals the \
                 counterfactual month's for {} of {}.\n",
                e.name,
                e.holdout,
                thousands(e.eligible as u64),
                thousands(e.consistent as u64),
                thousands(e.eligible as u64),
            )?;
            writeln!(
                f,
                "| arm | readers | probability | subscribed (IPW) | 95 % CI | truth | articles read per reader (IPW) | 95 % CI | truth |"
            )?;
            writeln!(f, "|---|---:|---:|---:|---|---:|---:|---|---:|")?;
            for a in &e.arms {
                let pct = |x: f64| x * 100.0;
                writeln!(
                    f,
                    "| {} | {} | {:.3} | {:.2} % | {:.2}–{:.2} % | {:.2} % | {:.2} | {:.2}–{:.2} | {:.2} |",
                    a.arm,
                    thousands(a.readers as u64),
                    a.probability,
                    pct(a.subscribed.mean),
                    pct(a.subscribed.mean - a.subscribed.half_width).max(0.0),
                    pct(a.subscribed.mean + a.subscribed.half_width),
                    pct(a.subscribed_truth),
                    a.articles.mean,
                    (a.articles.mean - a.articles.half_width).max(0.0),
                    a.articles.mean + a.articles.half_width,
                    a.articles_truth,
                )?;
            }
        }
        writeln!(f, "\nDecisions shown, by rule, per 1,000 readers:\n")?;
        for p in self.policies.iter().filter(|p| p.rules.len() > 1) {
            let mut rules: Vec<(&String, &u64)> = p.rules.iter().collect();
            rules.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let list: Vec<String> = rules
                .iter()
                .map(|(r, n)| format!("`{r}` {:.1}", per(**n)))
                .collect();
            writeln!(f, "- {}: {}", p.name, list.join(", "))?;
        }
        writeln!(
            f,
            "\n{} months (the three above and one per arm), {} batches scored.",
            self.months,
            thousands(self.batches)
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_month_gives_the_same_report_and_arms_add_up() {
        let a = report(300, 7, &bundles()).unwrap();
        let b = report(300, 7, &bundles()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), b.to_string());
        let e = a.experiment.as_ref().unwrap();
        assert_eq!(e.name, "meter-limit-2026-12");
        let arms: Vec<&str> = e.arms.iter().map(|r| r.arm.as_str()).collect();
        assert_eq!(arms, ["three", "five", "holdout"]);
        assert!(e.eligible > 50, "{}", e.eligible);
        assert_eq!(e.arms.iter().map(|r| r.readers).sum::<usize>(), e.eligible);
        // Each reader's month in their own arm is the counterfactual month's.
        assert_eq!(e.consistent, e.eligible);
        // The holdout goes on to the default meter of three: the same truth as arm three.
        assert_eq!(e.arms[0].subscribed_truth, e.arms[2].subscribed_truth);
        for r in &e.arms {
            assert!((r.probability - if r.arm == "holdout" { 0.1 } else { 0.45 }).abs() < 1e-12);
        }
        let [open, meter, profile] = &a.policies[..] else {
            panic!("three policies")
        };
        assert!(!open.scores.is_empty() && meter.scores.is_empty());
        assert_eq!(open.totals.paywalls + open.totals.register_walls, 0);
        assert!(meter.totals.paywalls > 0 && meter.totals.offers == 0);
        assert!(meter.totals.page_views < open.totals.page_views);
        assert!(profile.totals.offers + profile.totals.prompts > 0);
    }
}
