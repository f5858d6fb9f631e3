//! Experiments: a rule splits the readers it matches across arms (and may hold out a share),
//! by a stable hash of the reader and the experiment's name, so a reader stays in one arm for
//! the experiment's life and arms are independent across experiments. The assignment and its
//! probability go into the decision (and the decision log), so effects can be estimated without
//! bias (inverse-probability weighting when arms are unequal).

use super::Find;
use super::action::Act;
use crate::event::hash64;

/// A compiled arm.
#[derive(Clone, Debug)]
pub(crate) struct Arm {
    pub(crate) name: String,
    pub(crate) act: Act,
    /// Its share of the readers not held out.
    share: f64,
}

/// Compiles an experiment's holdout and arms.
pub(crate) fn compile(
    name: &str,
    holdout: Option<f64>,
    tables: &[super::ArmTable],
    find: Find<'_>,
    problems: &mut Vec<String>,
) -> Option<(f64, Vec<Arm>)> {
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if !ok_name(name) {
        problems.push(format!(
            "experiment {name:?}: letters, digits, _ - . (at most 64)"
        ));
    }
    let holdout = holdout.unwrap_or(0.0);
    if !(0.0..1.0).contains(&holdout) {
        problems.push(format!("holdout: a share in [0, 1), not {holdout}"));
    }
    if tables.is_empty() {
        problems.push("an experiment needs `arms`".into());
    }
    let total: f64 = tables.iter().map(|a| a.weight).sum();
    let mut arms = Vec::new();
    for (i, a) in tables.iter().enumerate() {
        if !ok_name(&a.name) || a.name == "holdout" {
            problems.push(format!(
                "arms[{i}].name {:?}: letters, digits, _ - . (not `holdout`)",
                a.name
            ));
        }
        if tables[..i].iter().any(|o| o.name == a.name) {
            problems.push(format!("arms[{i}].name {:?} is used twice", a.name));
        }
        if !(a.weight.is_finite() && a.weight > 0.0) {
            problems.push(format!("arms[{i}].weight must be above 0"));
        }
        if let Some(act) = a.action.compile(&format!("arms[{i}]"), find, problems) {
            arms.push(Arm {
                name: a.name.clone(),
                act,
                share: a.weight / total,
            });
        }
    }
    (arms.len() == tables.len() && !arms.is_empty()).then_some((holdout, arms))
}

/// The reader's position in `[0, 1)` for `experiment`.
fn position(reader: &str, experiment: &str) -> f64 {
    let mut key = Vec::with_capacity(reader.len() + experiment.len() + 1);
    key.extend_from_slice(experiment.as_bytes());
    key.push(0);
    key.extend_from_slice(reader.as_bytes());
    // Mixed once more: the experiment and the reader share the key.
    let mut x = hash64(&key);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The reader's arm (`None` when held out) and the probability of that assignment.
pub(crate) fn assign<'a>(
    reader: &str,
    experiment: &str,
    holdout: f64,
    arms: &'a [Arm],
) -> (Option<&'a Arm>, f64) {
    let u = position(reader, experiment);
    if u < holdout {
        return (None, holdout);
    }
    let mut v = (u - holdout) / (1.0 - holdout);
    for arm in arms {
        if v < arm.share {
            return (Some(arm), (1.0 - holdout) * arm.share);
        }
        v -= arm.share;
    }
    let last = arms.last();
    (last, last.map_or(0.0, |a| (1.0 - holdout) * a.share))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arms(weights: &[f64]) -> Vec<Arm> {
        let total: f64 = weights.iter().sum();
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Arm {
                name: format!("a{i}"),
                act: Act::Allow,
                share: w / total,
            })
            .collect()
    }

    #[test]
    fn stable_and_in_proportion() {
        let arms = arms(&[1.0, 3.0]);
        let mut counts = [0usize; 3];
        for r in 0..40_000 {
            let reader = format!("reader-{r}");
            let (arm, p) = assign(&reader, "exp", 0.1, &arms);
            assert_eq!(
                assign(&reader, "exp", 0.1, &arms).0.map(|a| &a.name),
                arm.map(|a| &a.name)
            );
            match arm {
                None => {
                    counts[0] += 1;
                    assert!((p - 0.1).abs() < 1e-12);
                }
                Some(a) if a.name == "a0" => {
                    counts[1] += 1;
                    assert!((p - 0.9 * 0.25).abs() < 1e-12);
                }
                Some(_) => counts[2] += 1,
            }
        }
        let share = |n: usize| n as f64 / 40_000.0;
        assert!((share(counts[0]) - 0.1).abs() < 0.01, "{counts:?}");
        assert!((share(counts[1]) - 0.225).abs() < 0.01, "{counts:?}");
        assert!((share(counts[2]) - 0.675).abs() < 0.01, "{counts:?}");
        // Independent across experiments: the other experiment reshuffles.
        let moved = (0..1000)
            .filter(|r| {
                let reader = format!("reader-{r}");
                assign(&reader, "exp", 0.0, &arms).0.map(|a| &a.name)
                    != assign(&reader, "other", 0.0, &arms).0.map(|a| &a.name)
            })
            .count();
        assert!(moved > 200, "{moved}");
    }
}
