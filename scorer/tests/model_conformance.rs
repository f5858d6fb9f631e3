//! Conformance: Pulse's scores equal the trainers' own predictions.
//!
//! `examples/train/train.py` trained the models in `examples/train/` with `xgboost-cpu` and
//! `lightgbm` on simulated readers with a known ground truth, and wrote a held-out set
//! (`holdout.csv`: 400 readers, half of them with a missing value, and 40 rows whose values sit
//! exactly on the models' split thresholds) with each trainer's predictions for it
//! (`holdout.<model>.pred`). Every row must score within 1e-6 of the trainer's prediction.
//!
//! Explanations: for the XGBoost model, `train.py` also wrote XGBoost's own contributions
//! (`pred_contribs=True, approx_contribs=True`) for every held-out row
//! (`holdout.xgb.contribs.csv`); Pulse's must equal them within 1e-5, bias included. LightGBM
//! offers only TreeSHAP (`holdout.lgb.contribs.csv`), a different attribution: there Pulse's bias
//! must equal LightGBM's (the trees' expected value) and its contributions add up to the margin.

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

/// The held-out rows with their columns in `m`'s input order (by name).
fn rows_for(m: &Model) -> Vec<Vec<f64>> {
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
    rows.iter()
        .map(|values| columns.iter().map(|&c| values[c]).collect())
        .collect()
}

/// A trainer's contributions for the held-out rows (`holdout.<model>.contribs.csv`): per row,
/// one per input in `m`'s order, then the bias.
fn trainer_contributions(m: &Model, file: &str) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(dir().join(file)).expect("contributions");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let mut columns: Vec<usize> = m
        .feature_names()
        .iter()
        .map(|name| header.iter().position(|h| h == name).expect("a column"))
        .collect();
    columns.push(header.iter().position(|&h| h == "bias").expect("bias"));
    lines
        .map(|l| {
            let values: Vec<f64> = l.split(',').map(|v| v.parse().expect("a number")).collect();
            columns.iter().map(|&c| values[c]).collect()
        })
        .collect()
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

/// Pulse's contributions for the XGBoost model equal XGBoost's `approx_contribs` on every
/// held-out row, input by input and the bias.
#[test]
fn xgboost_contributions_equal_xgboost_approx_contribs() {
    const TOLERANCE: f64 = 1e-5;
    let m = Model::read(&dir().join("propensity.xgb.json")).unwrap();
    let rows = rows_for(&m);
    let expected = trainer_contributions(&m, "holdout.xgb.contribs.csv");
    assert_eq!(rows.len(), expected.len());
    let inputs = m.feature_names().len();
    let (mut worst, mut worst_bias, mut nonzero): (f64, f64, usize) = (0.0, 0.0, 0);
    let mut out = Vec::new();
    for (i, (row, want)) in rows.iter().zip(&expected).enumerate() {
        let bias = m.contributions(row, &mut out);
        assert_eq!(out.len(), inputs);
        for (f, (&got, &want)) in out.iter().zip(&want[..inputs]).enumerate() {
            let diff = (got - want).abs();
            assert!(
                diff <= TOLERANCE,
                "row {i}, {}: Pulse {got}, XGBoost {want}",
                m.feature_names()[f]
            );
            worst = worst.max(diff);
        }
        let diff = (bias - want[inputs]).abs();
        assert!(
            diff <= TOLERANCE,
            "row {i}: bias {bias}, XGBoost {}",
            want[inputs]
        );
        worst_bias = worst_bias.max(diff);
        nonzero += out.iter().filter(|&&c| c != 0.0).count();
    }
    assert!(nonzero > rows.len() * 5, "rows read several inputs");
    println!(
        "propensity.xgb.json: {} rows, max |Pulse - XGBoost| = {worst:e} (contributions), \
         {worst_bias:e} (bias)",
        rows.len()
    );
}

/// LightGBM: bias + Σ contributions is the margin on every held-out row, of every LightGBM
/// model, and the bias is LightGBM's own expected value (the bias column of its TreeSHAP).
#[test]
fn lightgbm_contributions_add_up_to_the_margin() {
    for file in [
        "propensity.lgb.txt",
        "propensity.lgb-zero-cat.txt",
        "propensity-reg.lgb.txt",
    ] {
        let m = Model::read(&dir().join(file)).unwrap();
        let mut worst: f64 = 0.0;
        let mut out = Vec::new();
        for (i, row) in rows_for(&m).iter().enumerate() {
            let bias = m.contributions(row, &mut out);
            let margin = m.margin(row);
            let diff = (bias + out.iter().sum::<f64>() - margin).abs();
            assert!(
                diff <= 1e-12 * (1.0 + margin.abs()),
                "{file} row {i}: off by {diff:e}"
            );
            worst = worst.max(diff);
        }
        println!("{file}: max |bias + Σ contributions - margin| = {worst:e}");
    }
    let m = Model::read(&dir().join("propensity.lgb.txt")).unwrap();
    let shap = trainer_contributions(&m, "holdout.lgb.contribs.csv");
    let rows = rows_for(&m);
    assert_eq!(rows.len(), shap.len());
    let mut out = Vec::new();
    for (row, shap) in rows.iter().zip(&shap) {
        let bias = m.contributions(row, &mut out);
        let (shap_bias, shap_sum) = (shap[shap.len() - 1], shap.iter().sum::<f64>());
        assert!((bias - shap_bias).abs() < 1e-12, "{bias} {shap_bias}");
        // The rows line up: LightGBM's own explanation adds up to Pulse's margin too.
        assert!((shap_sum - m.margin(row)).abs() < 1e-9);
    }
}
