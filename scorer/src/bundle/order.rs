//! The features' inputs resolved by name, and the order they are computed in (inputs first;
//! a cycle is a problem).

use super::{Feature, Problem};
use crate::templates::Kind;

pub(super) fn resolve_inputs(
    features: &mut [Feature],
    declared: &[&str],
    problems: &mut Vec<Problem>,
) {
    let kinds: Vec<(String, Kind)> = features
        .iter()
        .map(|f| (f.name.clone(), f.spec.kind()))
        .collect();
    for f in features.iter_mut() {
        for input in f.spec.inputs() {
            match kinds.iter().position(|(n, _)| *n == input) {
                Some(i) if kinds[i].1 == Kind::Num => f.inputs.push(i),
                Some(_) => problems.push(Problem::new(
                    format!("features.{}", f.name),
                    format!("uses {input:?}, which is not numeric"),
                )),
                None if declared.contains(&input.as_str()) => {} // has problems of its own
                None => problems.push(Problem::new(
                    format!("features.{}", f.name),
                    format!("uses {input:?}, which is not a feature of this bundle"),
                )),
            }
        }
    }
}

/// A topological order of the features (inputs first); a cycle is a problem.
pub(super) fn order(features: &[Feature], problems: &mut Vec<Problem>) -> Vec<usize> {
    let mut order = Vec::with_capacity(features.len());
    let mut mark = vec![0u8; features.len()]; // 0 new, 1 visiting, 2 done
    fn visit(i: usize, fs: &[Feature], mark: &mut [u8], order: &mut Vec<usize>) -> bool {
        match mark[i] {
            2 => return true,
            1 => return false,
            _ => {}
        }
        mark[i] = 1;
        for &j in &fs[i].inputs {
            if !visit(j, fs, mark, order) {
                return false;
            }
        }
        mark[i] = 2;
        order.push(i);
        true
    }
    for i in 0..features.len() {
        if !visit(i, features, &mut mark, &mut order) {
            problems.push(Problem::new(
                format!("features.{}", features[i].name),
                "its inputs form a cycle",
            ));
            return (0..features.len()).collect();
        }
    }
    order
}
