//! Rules: ordered, each a condition in CEL (the `cel` crate) and an action (or an experiment that
//! splits readers across actions); the first rule whose condition holds decides. Conditions read
//! the bundle's features by name (only those a rule names are computed), the page (`page.
//! content_type`, `page.section`, `page.path`, `page.referrer` — `search`, `social`, `internal`,
//! `direct` or `other` — and `page.metered`: whether the current page is one the first `meter`
//! action of the rules counts; false in a bundle without one), the request (`request.device`, `request.country`),
//! the model's score (`model.score`, when the bundle has a model) and verified entitlements
//! (`entitled.NAME`). A condition that fails at run time (a missing value compared, say) does not
//! match; it is counted, and the next rule is tried.
//!
//! ```toml
//! [[rules]]
//! id = "subscriber"
//! when = "subscriber == true"
//! action = "allow"
//!
//! [[rules]]
//! id = "wall-test"
//! when = "page.metered"
//! experiment = "wall-2026-12"
//! holdout = 0.1          # a tenth of readers skip this rule (the next one decides)
//! arms = [
//!   { name = "three", weight = 1, action = "meter", pages = "metered_pages", current_page = "current_page", limit = 3 },
//!   { name = "five", weight = 1, action = "meter", pages = "metered_pages", current_page = "current_page", limit = 5 },
//! ]
//! ```

mod action;
mod experiment;
mod fast;
mod resolve;

use std::sync::Arc;

use pulse_protocol::{Action, Assignment, Decision};
use serde::Deserialize;

pub(crate) use action::{Act, ActionTable, Metered, meter};
pub use resolve::{PageFacts, Request};

use crate::bundle::Bundle;
use crate::state::ReaderState;
use experiment::Arm;

/// Names a condition may read besides features.
pub const RESERVED: [&str; 5] = ["page", "request", "model", "entitled", "reader"];
/// Most rules in a bundle.
pub const MAX_RULES: usize = 256;

/// A rule as the bundle writes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RuleTable {
    id: String,
    when: Option<String>,
    experiment: Option<String>,
    holdout: Option<f64>,
    arms: Vec<ArmTable>,
    action: Option<ActionTable>,
    /// Whether action keys were written (even if they did not parse).
    action_written: bool,
}

/// An experiment's arm as the bundle writes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ArmTable {
    name: String,
    weight: f64,
    action: ActionTable,
}

fn take_str(t: &mut toml::Table, key: &str, problems: &mut Vec<String>) -> Option<String> {
    match t.remove(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(format!("{key}: a string"));
            None
        }
    }
}

fn take_f64(t: &mut toml::Table, key: &str, problems: &mut Vec<String>) -> Option<f64> {
    match t.remove(key) {
        None => None,
        Some(toml::Value::Float(f)) => Some(f),
        Some(toml::Value::Integer(i)) => Some(i as f64),
        Some(_) => {
            problems.push(format!("{key}: a number"));
            None
        }
    }
}

fn action_table(t: toml::Table, problems: &mut Vec<String>) -> Option<ActionTable> {
    if t.is_empty() {
        return None;
    }
    match ActionTable::deserialize(toml::Value::Table(t)) {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push(e.message().to_owned());
            None
        }
    }
}

impl RuleTable {
    /// Reads one `[[rules]]` table, listing what is wrong with its form.
    pub(crate) fn read(value: toml::Value, problems: &mut Vec<String>) -> Option<Self> {
        let toml::Value::Table(mut t) = value else {
            problems.push("a rule is a table".into());
            return None;
        };
        let id = take_str(&mut t, "id", problems);
        if id.is_none() {
            problems.push("id: missing".into());
        }
        let when = take_str(&mut t, "when", problems);
        let experiment = take_str(&mut t, "experiment", problems);
        let holdout = take_f64(&mut t, "holdout", problems);
        let mut arms = Vec::new();
        match t.remove("arms") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let toml::Value::Table(mut a) = item else {
                        problems.push(format!("arms[{i}]: a table"));
                        continue;
                    };
                    let mut msgs = Vec::new();
                    let name = take_str(&mut a, "name", &mut msgs).unwrap_or_default();
                    let weight = take_f64(&mut a, "weight", &mut msgs).unwrap_or(1.0);
                    let action = action_table(a, &mut msgs);
                    problems.extend(msgs.into_iter().map(|m| format!("arms[{i}]: {m}")));
                    match action {
                        Some(action) => arms.push(ArmTable {
                            name,
                            weight,
                            action,
                        }),
                        None => problems.push(format!("arms[{i}]: needs an `action`")),
                    }
                }
            }
            Some(_) => problems.push("arms: a list of tables".into()),
        }
        let action_written = !t.is_empty();
        let action = action_table(t, problems);
        Some(Self {
            id: id?,
            when,
            experiment,
            holdout,
            arms,
            action,
            action_written,
        })
    }
}

/// What a rule does when it matches.
#[derive(Clone, Debug)]
enum Then {
    Act(Act),
    Split {
        experiment: String,
        holdout: f64,
        arms: Vec<Arm>,
    },
}

/// A compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    id: String,
    when: Option<Arc<cel::Program>>,
    /// The condition compiled natively, when it has the common shape.
    native: Option<fast::Node>,
    source: String,
    /// Features the condition reads (indices), for the explanation.
    reads: Vec<usize>,
    reads_model: bool,
    then: Then,
}

/// The bundle's rules, compiled.
#[derive(Clone)]
pub struct Rules {
    env: Arc<cel::Env>,
    rules: Vec<Rule>,
    /// The first meter's features, which say whether the page is metered.
    meter: Option<(usize, usize, u32)>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.ids())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Rules {
    fn eq(&self, other: &Self) -> bool {
        self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.id == b.id && a.source == b.source)
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            env: Arc::new(cel::Env::stdlib()),
            rules: Vec::new(),
            meter: None,
        }
    }
}

/// The features a bundle has, for compiling rules: index and template of a name.
pub(crate) type Find<'a> = &'a dyn Fn(&str) -> Option<(usize, String)>;

impl Rules {
    /// Compiles the `[[rules]]` of a bundle; problems are `(path, message)`.
    pub(crate) fn compile(
        tables: &[RuleTable],
        find: Find<'_>,
        declared: &[&str],
        has_model: bool,
        problems: &mut Vec<(String, String)>,
    ) -> Self {
        let env = Arc::new(cel::Env::stdlib());
        let mut rules = Vec::new();
        let mut meter = None;
        if tables.len() > MAX_RULES {
            problems.push(("rules".into(), format!("at most {MAX_RULES} rules")));
        }
        for (i, t) in tables.iter().enumerate() {
            let path = format!("rules[{i}] ({})", t.id);
            let mut msgs = Vec::new();
            if !t
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
                || t.id.is_empty()
                || t.id.len() > 64
            {
                msgs.push("id: letters, digits, _ and -, at most 64".to_owned());
            }
            if tables[..i].iter().any(|o| o.id == t.id) {
                msgs.push(format!("id {:?} is used twice", t.id));
            }
            let (when, reads, reads_model) = match &t.when {
                None => (None, Vec::new(), false),
                Some(src) => match env.compile(src) {
                    Err(e) => {
                        msgs.push(format!("when: {}", first_line(&e.to_string())));
                        (None, Vec::new(), false)
                    }
                    Ok(program) => {
                        let refs = program.references();
                        let mut reads = Vec::new();
                        let mut vars = refs.variables();
                        vars.sort_unstable();
                        for v in vars {
                            match (find(v), RESERVED.contains(&v) || declared.contains(&v)) {
                                (Some((i, _)), _) => reads.push(i),
                                (None, true) => {} // reserved, or a feature with problems of its own
                                (None, false) => msgs.push(format!(
                                    "when: {v:?} is not a feature of this bundle (nor page, request, model, entitled)"
                                )),
                            }
                        }
                        let model = refs.has_variable("model");
                        if model && !has_model {
                            msgs.push("when: reads `model`, but the bundle has no [model]".into());
                        }
                        (Some(Arc::new(program)), reads, model)
                    }
                },
            };
            let then = match (&t.experiment, &t.action) {
                (Some(name), None) => experiment::compile(
                    name, t.holdout, &t.arms, find, &mut msgs,
                )
                .map(|(holdout, arms)| Then::Split {
                    experiment: name.clone(),
                    holdout,
                    arms,
                }),
                (None, Some(a)) => {
                    if t.holdout.is_some() || !t.arms.is_empty() {
                        msgs.push(
                            "`holdout` and `arms` belong to a rule with an `experiment`".into(),
                        );
                    }
                    let act = a.compile("action", find, &mut msgs);
                    if let Some(Act::Meter {
                        pages,
                        current_page,
                        limit,
                    }) = act
                    {
                        meter.get_or_insert((pages, current_page, limit));
                    }
                    act.map(Then::Act)
                }
                (Some(_), Some(_)) => {
                    msgs.push(
                        "a rule has an `action` or an `experiment` with `arms`, not both".into(),
                    );
                    None
                }
                (None, None) => {
                    if !t.action_written {
                        msgs.push(
                            "a rule needs an `action` (or an `experiment` with `arms`)".into(),
                        );
                    }
                    None
                }
            };
            for m in msgs.drain(..) {
                problems.push((path.clone(), m));
            }
            if let Some(then) = then {
                let native = when.as_ref().and_then(|p| {
                    fast::compile(p.expression(), &|name: &str| find(name).map(|(i, _)| i))
                });
                rules.push(Rule {
                    id: t.id.clone(),
                    when,
                    native,
                    source: t.when.clone().unwrap_or_default(),
                    reads,
                    reads_model,
                    then,
                });
            }
        }
        Self { env, rules, meter }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every meter action: (rule id, `pages` feature, limit).
    pub(crate) fn meters(&self) -> Vec<(&str, usize, u32)> {
        let mut out = Vec::new();
        for r in &self.rules {
            let acts: Vec<&Act> = match &r.then {
                Then::Act(a) => vec![a],
                Then::Split { arms, .. } => arms.iter().map(|a| &a.act).collect(),
            };
            for a in acts {
                if let Act::Meter { pages, limit, .. } = a {
                    out.push((r.id.as_str(), *pages, *limit));
                }
            }
        }
        out
    }

    /// The ids of the rules, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.id.as_str()).collect()
    }
}

/// The decision for a reader at `now`: the first rule that matches decides. Returns it with the
/// number of rules whose condition failed at run time, and the experiment assignment's
/// probability when a rule on the way assigned the reader.
pub fn decide(
    bundle: &Bundle,
    reader: &str,
    state: &ReaderState,
    now: u64,
    page: &PageFacts,
    request: &Request,
) -> Decided {
    let rules = &bundle.rules;
    // The bundle's meter, worked out once: `page.metered` reads it, and so does a meter rule
    // with the same parameters.
    let metered = rules
        .meter
        .map(|(p, c, l)| ((p, c, l), meter(bundle, state, now, p, c, l)));
    let resolver = resolve::Resolver::new(
        bundle,
        state,
        now,
        page,
        metered.is_some_and(|(_, m)| m.metered),
        request,
    );
    // The interpreter's context only for a condition the native evaluator does not take.
    let mut context: Option<cel::Context> = None;
    let mut errors = 0u32;
    let mut assignment: Option<(Assignment, f64)> = None;
    for rule in &rules.rules {
        let holds = match (&rule.native, &rule.when) {
            (Some(node), _) => match node.eval(&resolver) {
                Ok(fast::V::Bool(b)) => Some(b),
                _ => None,
            },
            (None, Some(program)) => match program.execute(context.get_or_insert_with(|| {
                let mut context = cel::Context::with_env(Arc::clone(&rules.env));
                context.set_variable_resolver(&resolver);
                context
            })) {
                Ok(cel::Value::Bool(b)) => Some(b),
                _ => None,
            },
            (None, None) => Some(true),
        };
        match holds {
            Some(true) => {}
            Some(false) => continue,
            None => {
                errors += 1;
                continue;
            }
        }
        let act = match &rule.then {
            Then::Act(act) => act,
            Then::Split {
                experiment,
                holdout,
                arms,
            } => match experiment::assign(reader, experiment, *holdout, arms) {
                (None, p) => {
                    assignment.get_or_insert((
                        Assignment {
                            experiment: experiment.clone(),
                            arm: "holdout".into(),
                        },
                        p,
                    ));
                    continue;
                }
                (Some(arm), p) => {
                    assignment.get_or_insert((
                        Assignment {
                            experiment: experiment.clone(),
                            arm: arm.name.clone(),
                        },
                        p,
                    ));
                    &arm.act
                }
            },
        };
        let mut decision = act_decision(bundle, state, now, act, &rule.id, metered);
        if let Act::Meter { pages, .. } = act {
            // The meter's count is part of what the decision read (and of its snapshot).
            resolver.value(*pages);
        }
        decision.rule = Some(rule.id.clone());
        decision.because = rule
            .reads
            .iter()
            .map(|&i| format!("{} = {}", bundle.features[i].name, resolver.describe(i)))
            .collect();
        if rule.reads_model
            && let Some(s) = resolver.score()
        {
            decision.score = Some(s);
            let top = resolver.top_inputs(3);
            decision.because.push(if top.is_empty() {
                format!("model.score = {s:.4}")
            } else {
                format!("model.score = {s:.4} ({})", top.join(", "))
            });
        }
        let probability = assignment.as_ref().map(|(_, p)| *p);
        decision.experiment = assignment.map(|(a, _)| a);
        drop(context);
        return Decided {
            decision,
            errors,
            probability,
            score: resolver.scored(),
            read: resolver.into_read_values(),
        };
    }
    let mut decision = Decision::new(Action::Allow, "no_rule", bundle.id.clone());
    let probability = assignment.as_ref().map(|(_, p)| *p);
    decision.experiment = assignment.map(|(a, _)| a);
    drop(context);
    Decided {
        decision,
        errors,
        probability,
        score: resolver.scored(),
        read: resolver.into_read_values(),
    }
}

/// A decision with what it took to make it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// The decision.
    pub decision: Decision,
    /// Rules whose condition failed at run time (and were skipped).
    pub errors: u32,
    /// The probability of the reader's experiment arm (for unbiased estimates), if assigned.
    pub probability: Option<f64>,
    /// The model's score, when a rule on the way read it.
    pub score: Option<f64>,
    /// The features the decision read (by index in the bundle), with their values: the
    /// decision's feature snapshot (all the model's inputs when it read the model).
    pub read: Vec<(u16, crate::value::Value)>,
}

fn act_decision(
    bundle: &Bundle,
    state: &ReaderState,
    now: u64,
    act: &Act,
    rule: &str,
    metered: Option<((usize, usize, u32), Metered)>,
) -> Decision {
    let mut d = Decision::new(Action::Allow, rule, bundle.id.clone());
    match act {
        Act::Allow => {}
        Act::Meter {
            pages,
            current_page,
            limit,
        } => {
            let m = match metered {
                Some((of, m)) if of == (*pages, *current_page, *limit) => m,
                _ => meter(bundle, state, now, *pages, *current_page, *limit),
            };
            d.action = m.action;
            d.reason = m.reason.to_owned();
            d.remaining = Some(m.remaining);
            d.limit = Some(*limit);
        }
        Act::Paywall { variant } => {
            d.action = Action::Paywall;
            d.variant = variant.clone();
        }
        Act::RegisterWall => d.action = Action::RegisterWall,
        Act::Offer { offer } => {
            d.action = Action::Offer;
            d.offer = Some(offer.clone());
        }
        Act::Prompt { prompt } => {
            d.action = Action::Prompt;
            d.prompt = Some(prompt.clone());
        }
    }
    d
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
