//! A bundle's experiment: which it is, bundles that put every reader who reaches it in one arm
//! (the simulator's counterfactual months) or that have no rules at all (the baseline), and the
//! inverse-propensity-weighted estimate of an arm's mean from the logged assignment
//! probabilities.

use anyhow::{Context, anyhow, bail};

/// An experiment of a bundle's rules.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Experiment {
    /// Its name.
    pub(crate) name: String,
    /// The share of readers held out.
    pub(crate) holdout: f64,
    /// Its arms' names, in order.
    pub(crate) arms: Vec<String>,
}

/// The first experiment among the bundle's rules, if any.
pub(crate) fn find(text: &str) -> anyhow::Result<Option<Experiment>> {
    let table: toml::Table = toml::from_str(text).context("the bundle is not TOML")?;
    let Some(toml::Value::Array(rules)) = table.get("rules") else {
        return Ok(None);
    };
    for rule in rules {
        let Some(toml::Value::String(name)) = rule.get("experiment") else {
            continue;
        };
        let holdout = match rule.get("holdout") {
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(i)) => *i as f64,
            _ => 0.0,
        };
        let arms = match rule.get("arms") {
            Some(toml::Value::Array(arms)) => arms
                .iter()
                .filter_map(|a| a.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        return Ok(Some(Experiment {
            name: name.clone(),
            holdout,
            arms,
        }));
    }
    Ok(None)
}

/// The bundle's text with the rule of `experiment` replaced: by arm `arm`'s action (the same
/// rule id and condition) for every reader who reaches it, or, for `None` (the holdout),
/// removed, so that the next rule decides as it does for readers held out.
pub(crate) fn forced(text: &str, experiment: &str, arm: Option<&str>) -> anyhow::Result<String> {
    for (start, end, rule) in rules(text)? {
        if rule.get("experiment").and_then(|v| v.as_str()) != Some(experiment) {
            continue;
        }
        let replacement = match arm {
            None => String::new(),
            Some(arm) => {
                let table = rule
                    .get("arms")
                    .and_then(|a| a.as_array())
                    .and_then(|arms| {
                        arms.iter()
                            .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(arm))
                    })
                    .and_then(|a| a.as_table())
                    .ok_or_else(|| anyhow!("experiment {experiment} has no arm {arm:?}"))?;
                let mut out = String::from("[[rules]]\n");
                for key in ["id", "when"] {
                    if let Some(v) = rule.get(key) {
                        out.push_str(&format!("{key} = {}\n", value(v)?));
                    }
                }
                for (key, v) in table {
                    if key != "name" && key != "weight" {
                        out.push_str(&format!("{key} = {}\n", value(v)?));
                    }
                }
                out.push('\n');
                out
            }
        };
        return Ok(format!("{}{replacement}{}", &text[..start], &text[end..]));
    }
    bail!("no rule runs experiment {experiment}")
}

/// The bundle's text without its rules: the same features and model, every page free.
pub(crate) fn without_rules(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut from = 0;
    for (start, end, _) in rules(text)? {
        out.push_str(&text[from..start]);
        from = end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// The bundle's rules: where each `[[rules]]` table starts and ends in the text (up to the next
/// table), and what it holds.
fn rules(text: &str) -> anyhow::Result<Vec<(usize, usize, toml::Table)>> {
    // Lines that start a table.
    let starts: Vec<usize> = line_starts(text)
        .filter(|&i| text[i..].trim_start().starts_with('['))
        .chain([text.len()])
        .collect();
    let mut out = Vec::new();
    for w in starts.windows(2) {
        if let Some(body) = text[w[0]..w[1]].trim_start().strip_prefix("[[rules]]") {
            let rule = toml::from_str(body).context("a rule is not TOML")?;
            out.push((w[0], w[1], rule));
        }
    }
    Ok(out)
}

fn line_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1))
}

/// A TOML value as text (the scalars an action is made of).
fn value(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        // A JSON string is a TOML basic string.
        toml::Value::String(s) => serde_json::to_string(s)?,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("an action's value is a string, number or boolean, not {other:?}"),
    })
}

/// An estimate of a mean with its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Estimate {
    pub(crate) mean: f64,
    /// Half the width of the 95 % interval.
    pub(crate) half_width: f64,
}

/// The mean outcome the arm's readers would have had if every eligible reader had been in it,
/// from the readers in the arm: each weighted by the inverse of its logged assignment
/// probability (the self-normalised, Hájek, form), with a design-based variance (the eligible
/// readers are fixed; only the assignment is random, each reader independently with its
/// probability): `Σ (1 − π)/π² · (y − mean)² / (Σ 1/π)²`, linearised.
pub(crate) fn ipw(rows: impl IntoIterator<Item = (f64, f64)>) -> Estimate {
    let rows: Vec<(f64, f64)> = rows.into_iter().collect();
    let weight: f64 = rows.iter().map(|(_, p)| 1.0 / p).sum();
    if rows.is_empty() || weight <= 0.0 || !weight.is_finite() {
        return Estimate {
            mean: f64::NAN,
            half_width: f64::NAN,
        };
    }
    let mean = rows.iter().map(|(y, p)| y / p).sum::<f64>() / weight;
    let variance = rows
        .iter()
        .map(|(y, p)| (1.0 - p) / (p * p) * (y - mean).powi(2))
        .sum::<f64>()
        / (weight * weight);
    Estimate {
        mean,
        half_width: 1.96 * variance.sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = r#"
[bundle]
name = "t"

[[rules]]
id = "first"
action = "allow"

# The test.
[[rules]]
id = "split"
when = "page.metered"
experiment = "exp-1"
holdout = 0.1
arms = [
  { name = "three", weight = 1, action = "meter", pages = "p", current_page = "c", limit = 3 },
  { name = "five", weight = 1, action = "meter", pages = "p", current_page = "c", limit = 5 },
]

[[rules]]
id = "last"
action = "paywall"
"#;

    #[test]
    fn finds_the_experiment_and_forces_an_arm() {
        let e = find(BUNDLE).unwrap().unwrap();
        assert_eq!(e.name, "exp-1");
        assert_eq!(e.holdout, 0.1);
        assert_eq!(e.arms, ["three", "five"]);
        let five = forced(BUNDLE, "exp-1", Some("five")).unwrap();
        let t: toml::Table = toml::from_str(&five).unwrap();
        let rules = t["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        let r = rules[1].as_table().unwrap();
        assert_eq!(r["id"].as_str(), Some("split"));
        assert_eq!(r["when"].as_str(), Some("page.metered"));
        assert_eq!(r["limit"].as_integer(), Some(5));
        assert!(!r.contains_key("experiment") && !r.contains_key("name"));
        let held = forced(BUNDLE, "exp-1", None).unwrap();
        let t: toml::Table = toml::from_str(&held).unwrap();
        let ids: Vec<&str> = t["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["first", "last"]);
        assert!(forced(BUNDLE, "exp-1", Some("seven")).is_err());
        let open: toml::Table = toml::from_str(&without_rules(BUNDLE).unwrap()).unwrap();
        assert!(!open.contains_key("rules") && open.contains_key("bundle"));
        assert!(forced(BUNDLE, "other", None).is_err());
    }

    #[test]
    fn ipw_weighs_by_the_inverse_probability() {
        // Equal probabilities: the plain mean.
        let e = ipw([(1.0, 0.5), (0.0, 0.5), (0.0, 0.5), (1.0, 0.5)]);
        assert_eq!(e.mean, 0.5);
        // (1 − 0.5)/0.25 · 0.25 · 4 / 64 = 1/32.
        assert!((e.half_width - 1.96 * (1.0f64 / 32.0).sqrt()).abs() < 1e-12);
        // A reader twice as unlikely to be here counts twice.
        let e = ipw([(1.0, 0.25), (0.0, 0.5)]);
        assert!((e.mean - 4.0 / 6.0).abs() < 1e-12);
        // Everyone in the arm: no uncertainty.
        assert_eq!(ipw([(1.0, 1.0), (0.0, 1.0)]).half_width, 0.0);
        assert!(ipw([]).mean.is_nan());
    }
}
