//! Conformance: Pulse's scores equal the trainers' own predictions.
//!
//! `examples/train/train.py` trained the models in `examples/train/` with `xgboost-cpu` and
//! `lightgbm` on simulated readers with a known ground truth, and wrote a held-out set
//! (`holdout.csv`: 400 readers, half of them with a missing value, and 40 rows whose values sit
//! exactly on the models' split thresholds) with each trainer's predictions for it
//! (`holdout.<model>.pred`). Every row must score within 1e-6 of the trainer's prediction.

use std::path::PathBuf;

use pulse_scorer::{InputKind, Model, ModelFormat, Output};

const TOLERANCE: f64 = 1e-6;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/train")
}

/// The held-out rows: the header's names and the values (NaN where empty).
fn holdout() -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(dir().join("holdout.csv")).expect("holdout.csv");
    let mut lines = text.lines();
    let header = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| {
            l.split(',')
                .map(|v| {
                    if v.is_empty() {
                        f64::NAN
                    } else {
                        v.parse().expect("a number")
                    }
                })
                .collect()
        })
        .collect();
    (header, rows)
}

/// Loads `model`, scores every held-out row (its columns put in the model's input order by
/// name) and returns the largest difference from the trainer's predictions in `preds`.
fn check(model: &str, preds: &str, format: ModelFormat, output: Output) -> f64 {
    let m = Model::read(&dir().join(model)).expect("the model loads");
    assert_eq!(m.format(), format);
    assert_eq!(m.output(), output);
    let (header, rows) = holdout();
    let columns: Vec<usize> = m
        .feature_names()
        .iter()
        .map(|name| {
            header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("{name} is not in holdout.csv"))
        })
        .collect();
    let expected: Vec<f64> = std::fs::read_to_string(dir().join(preds))
        .expect("predictions")
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert!(rows.len() >= 300, "a few hundred rows");
    assert!(
        rows.iter().filter(|r| r.iter().any(|v| v.is_nan())).count() >= 100,
        "rows with missing values"
    );
    let mut worst: f64 = 0.0;
    let mut row = vec![f64::NAN; columns.len()];
    for (i, (values, want)) in rows.iter().zip(&expected).enumerate() {
        for (slot, &c) in row.iter_mut().zip(&columns) {
            *slot = values[c];
        }
        let got = m.predict(&row);
        let diff = (got - want).abs();
        assert!(
            diff <= TOLERANCE,
            "{model} row {i}: Pulse {got}, trainer {want}"
        );
        worst = worst.max(diff);
    }
    println!(
        "{model}: {} rows, {} trees, max |Pulse - trainer| = {worst:e}",
        rows.len(),
        m.trees()
    );
    worst
}

#[test]
fn xgboost_scores_equal_xgboost_predictions() {
    check(
        "propensity.xgb.json",
        "holdout.xgb.pred",
        ModelFormat::XgboostJson,
        Output::Probability,
    );
}

#[test]
fn lightgbm_scores_equal_lightgbm_predictions() {
    check(
        "propensity.lgb.txt",
        "holdout.lgb.pred",
        ModelFormat::LightgbmText,
        Output::Probability,
    );
}

#[test]
fn lightgbm_zero_as_missing_and_categorical_scores_equal_lightgbm_predictions() {
    check(
        "propensity.lgb-zero-cat.txt",
        "holdout.lgb-zero-cat.pred",
        ModelFormat::LightgbmText,
        Output::Probability,
    );
    let m = Model::read(&dir().join("propensity.lgb-zero-cat.txt")).unwrap();
    let rfv = m.feature_index("rfv").unwrap();
    assert_eq!(m.feature_kinds()[rfv], InputKind::Categorical);
}

#[test]
fn logistic_scores_equal_the_fitted_predictions() {
    check(
        "propensity.logistic.toml",
        "holdout.logistic.pred",
        ModelFormat::Logistic,
        Output::Probability,
    );
}

#[test]
fn xgboost_regression_scores_equal_xgboost_predictions() {
    check(
        "propensity-reg.xgb.json",
        "holdout.xgb-reg.pred",
        ModelFormat::XgboostJson,
        Output::Raw,
    );
}

#[test]
fn lightgbm_regression_scores_equal_lightgbm_predictions() {
    check(
        "propensity-reg.lgb.txt",
        "holdout.lgb-reg.pred",
        ModelFormat::LightgbmText,
        Output::Raw,
    );
}
