//! Models: scores from the trainers' own files, evaluated natively (no native library, no ONNX
//! runtime). Three kinds, one file each and one shape (`parse` text into the kind, then `margin`
//! and `predict` a row):
//!
//! - `xgboost`: gradient-boosted trees from XGBoost's JSON (`Booster.save_model("m.json")`);
//! - `lightgbm`: gradient-boosted trees from LightGBM's text (`Booster.save_model("m.txt")`);
//! - `logistic`: logistic regression from a plain TOML file of coefficients.
//!
//! Trees of both trainers are checked and laid out flat by `forest` (one array of 24-byte nodes
//! in preorder, eight trees walked at once without branches); how a split treats a value and a
//! missing one is each trainer's own, exactly.
//!
//! Every kind also explains a score: [`Model::contributions`] splits the margin into a bias and
//! one contribution per input, and [`Model::top_contributions`] names the inputs that mattered
//! most. Trees are explained by their paths (Saabas's attribution, XGBoost's
//! `approx_contribs`): each split's feature is credited with the change in the expected output
//! from the split to the child the row took, the expected output of a subtree being its leaves
//! weighed by cover; the work is one more walk of the row's paths, as cheap as `predict`.
//! Logistic regression is explained by its terms, `coefficient·x`.
//!
//! A row is the model's inputs in the order of [`Model::feature_names`], `f64::NAN` for a
//! missing value (values past the row's end are missing too). The IO boundary is
//! [`Model::read`]; everything else is pure. Loading is bounded: a file of at most
//! [`MAX_MODEL_BYTES`], at most [`MAX_TREES`] trees of [`MAX_NODES`] nodes in all and
//! [`MAX_INPUTS`] inputs; past those, and for anything malformed, a [`ModelError`] says why.

mod error;
mod forest;
mod lightgbm;
mod logistic;
mod xgboost;

use std::io::Read;
use std::path::Path;

pub use error::ModelError;

use crate::templates::Kind;

/// The largest model file read, in bytes (64 MiB; a model of 300 trees of depth 6 takes about
/// 4 MB as XGBoost JSON, 1 MB as LightGBM text). Loading holds at most a few times this.
pub const MAX_MODEL_BYTES: usize = 64 << 20;
/// Most trees in a model.
pub const MAX_TREES: usize = 10_000;
/// Most nodes (splits and leaves) in all trees of a model: 96 MB in memory at most.
pub const MAX_NODES: usize = 4_000_000;
/// Most inputs (features) of a model.
pub const MAX_INPUTS: usize = 10_000;

/// The file formats a model is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// XGBoost's JSON model (`Booster.save_model("m.json")`).
    XgboostJson,
    /// LightGBM's text model (`Booster.save_model("m.txt")`).
    LightgbmText,
    /// Pulse's logistic-regression coefficients (TOML; see the README's "Models").
    Logistic,
}

impl ModelFormat {
    /// The format of a model file's text: JSON (an XGBoost model) starts with `{`, a LightGBM
    /// model with the line `tree`; anything else is read as logistic-regression TOML.
    pub fn detect(text: &str) -> Self {
        let start = text.trim_start();
        if start.starts_with('{') {
            Self::XgboostJson
        } else if start.lines().next().is_some_and(|l| l.trim() == "tree") {
            Self::LightgbmText
        } else {
            Self::Logistic
        }
    }

    /// Its name, for operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XgboostJson => "xgboost",
            Self::LightgbmText => "lightgbm",
            Self::Logistic => "logistic",
        }
    }
}

/// What [`Model::predict`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A probability in [0, 1] (binary logistic objectives; logistic regression).
    Probability,
    /// The raw score (regression objectives; `binary:logitraw`).
    Raw,
}

/// What a model expects of one input. Either way the input is a number: a bundle feature of
/// [`Kind::Num`] feeds it ([`InputKind::value_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// A number.
    Numeric,
    /// A category as LightGBM codes it: a non-negative integer (fractions are truncated;
    /// negative, missing or unseen codes go right).
    Categorical,
}

impl InputKind {
    /// The kind of bundle feature that feeds such an input.
    pub fn value_kind(self) -> Kind {
        Kind::Num
    }
}

/// A loaded model: its inputs by name and kind, and a score for a row of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    format: ModelFormat,
    inputs: Vec<String>,
    kinds: Vec<InputKind>,
    output: Output,
    evaluator: Evaluator,
}

/// The kinds of model, one shape each.
#[derive(Clone, Debug, PartialEq)]
enum Evaluator {
    Xgboost(xgboost::Xgboost),
    Lightgbm(lightgbm::Lightgbm),
    Logistic(logistic::Logistic),
}

/// What a kind's `parse` gives: the evaluator, its inputs and what it outputs.
#[derive(Debug)]
struct Parsed<T> {
    model: T,
    inputs: Vec<String>,
    kinds: Vec<InputKind>,
    output: Output,
}

impl Model {
    /// Reads a model file (at most [`MAX_MODEL_BYTES`]), its format detected from its content
    /// ([`ModelFormat::detect`]).
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::Io(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_MODEL_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ModelError::Io(e.to_string()))?;
        check_size(bytes.len())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| ModelError::NotText)?;
        Self::parse(ModelFormat::detect(text), text)
    }

    /// Loads a model from its file's text in `format`.
    pub fn parse(format: ModelFormat, text: &str) -> Result<Self, ModelError> {
        check_size(text.len())?;
        let model = match format {
            ModelFormat::XgboostJson => {
                Self::assemble(format, xgboost::Xgboost::parse(text)?, Evaluator::Xgboost)
            }
            ModelFormat::LightgbmText => Self::assemble(
                format,
                lightgbm::Lightgbm::parse(text)?,
                Evaluator::Lightgbm,
            ),
            ModelFormat::Logistic => Self::assemble(
                format,
                logistic::Logistic::parse(text)?,
                Evaluator::Logistic,
            ),
        };
        check_inputs(&model.inputs)?;
        Ok(model)
    }

    fn assemble<T>(format: ModelFormat, p: Parsed<T>, wrap: fn(T) -> Evaluator) -> Self {
        Self {
            format,
            inputs: p.inputs,
            kinds: p.kinds,
            output: p.output,
            evaluator: wrap(p.model),
        }
    }

    /// The score of one row: a probability or a raw score, as [`Model::output`] says, exactly
    /// as the trainer's own `predict` computes it. `row[i]` is the input named
    /// `feature_names()[i]`; `f64::NAN` (or a row too short) means missing.
    #[inline]
    pub fn predict(&self, row: &[f64]) -> f64 {
        match &self.evaluator {
            Evaluator::Xgboost(m) => m.predict(row),
            Evaluator::Lightgbm(m) => m.predict(row),
            Evaluator::Logistic(m) => m.predict(row),
        }
    }

    /// The raw score (the margin, before the objective's link), as the trainers'
    /// `predict(..., output_margin=True)` / `raw_score=True`.
    pub fn margin(&self, row: &[f64]) -> f64 {
        match &self.evaluator {
            Evaluator::Xgboost(m) => m.margin(row),
            Evaluator::Lightgbm(m) => m.margin(row),
            Evaluator::Logistic(m) => m.margin(row),
        }
    }

    /// The margin of one row split by input: fills `out` with one contribution per input, in
    /// the order of [`Model::feature_names`], and returns the bias, so that
    /// `bias + Σ out == margin(row)` up to float rounding (XGBoost's margin is summed in `f32`).
    ///
    /// For trees, Saabas's path attribution, as XGBoost's `predict(pred_contribs=True,
    /// approx_contribs=True)`: along the row's path through each tree, the feature of each split
    /// is credited with the value of the child taken less the value of the split, a node's value
    /// being the expected output of its subtree (its leaves weighed by cover: XGBoost's
    /// `sum_hessian`, LightGBM's data counts); the bias is the sum of the trees' root values,
    /// plus XGBoost's base margin. An input no split on the row's paths reads gets 0. For
    /// logistic regression, `coefficient·x` (`x` or its `missing` value); the bias is the
    /// intercept. No allocation once `out` has room for the inputs.
    pub fn contributions(&self, row: &[f64], out: &mut Vec<f64>) -> f64 {
        out.clear();
        out.resize(self.inputs.len(), 0.0);
        match &self.evaluator {
            Evaluator::Xgboost(m) => m.contributions(row, out),
            Evaluator::Lightgbm(m) => m.contributions(row, out),
            Evaluator::Logistic(m) => m.contributions(row, out),
        }
    }

    /// The `n` inputs that mattered most to the row's score: `(input, contribution)` by
    /// [`Model::contributions`], largest magnitude first (ties by input), inputs contributing
    /// exactly 0 left out.
    pub fn top_contributions(&self, row: &[f64], n: usize) -> Vec<(usize, f64)> {
        let mut all = Vec::with_capacity(self.inputs.len());
        self.contributions(row, &mut all);
        // Largest magnitude first, then the lower input.
        let before = |a: &(usize, f64), b: &(usize, f64)| {
            b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)) == std::cmp::Ordering::Less
        };
        let mut top: Vec<(usize, f64)> = Vec::with_capacity(n.min(all.len()));
        if n <= 16 {
            // The few kept in order as the inputs go by: no second buffer, no sort.
            for (i, c) in all.into_iter().enumerate() {
                // Inputs come in order, so one only as large as the last kept stays out.
                let full = top.len() == n;
                if c == 0.0 || full && top.last().is_none_or(|k| c.abs() <= k.1.abs()) {
                    continue;
                }
                let at = top.partition_point(|k| before(k, &(i, c)));
                top.truncate(n - 1);
                top.insert(at, (i, c));
            }
        } else {
            top.extend(all.into_iter().enumerate().filter(|&(_, c)| c != 0.0));
            top.sort_unstable_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
            top.truncate(n);
        }
        top
    }

    /// The inputs' names, in row order.
    pub fn feature_names(&self) -> &[String] {
        &self.inputs
    }

    /// The inputs' kinds, in row order.
    pub fn feature_kinds(&self) -> &[InputKind] {
        &self.kinds
    }

    /// The position of the input called `name` in a row.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|n| n == name)
    }

    /// What [`Model::predict`] returns.
    pub fn output(&self) -> Output {
        self.output
    }

    /// The format it was read from.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// How many trees (0 for logistic regression).
    pub fn trees(&self) -> usize {
        match &self.evaluator {
            Evaluator::Xgboost(m) => m.trees(),
            Evaluator::Lightgbm(m) => m.trees(),
            Evaluator::Logistic(_) => 0,
        }
    }
}

fn check_size(bytes: usize) -> Result<(), ModelError> {
    if bytes > MAX_MODEL_BYTES {
        return Err(ModelError::TooLarge {
            bytes,
            limit: MAX_MODEL_BYTES,
        });
    }
    Ok(())
}

/// Inputs must be named, at most [`MAX_INPUTS`], each once.
fn check_inputs(names: &[String]) -> Result<(), ModelError> {
    if names.is_empty() {
        return Err(ModelError::FeatureNames("the model has no inputs".into()));
    }
    if names.len() > MAX_INPUTS {
        return Err(ModelError::Limit {
            what: "inputs",
            found: names.len(),
            limit: MAX_INPUTS,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for name in names {
        if name.is_empty() {
            return Err(ModelError::FeatureNames(
                "an input has an empty name".into(),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(ModelError::FeatureNames(format!(
                "{name:?} names two inputs"
            )));
        }
    }
    Ok(())
}

/// Parses a count that must not exceed `limit` (model files give counts as text).
fn count(what: &'static str, text: &str, limit: usize) -> Result<usize, ModelError> {
    let n: usize = text.trim().parse().map_err(|_| ModelError::Syntax {
        what: what.into(),
        message: format!("{text:?} is not a count"),
    })?;
    if n > limit {
        return Err(ModelError::Limit {
            what,
            found: n,
            limit,
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_the_content() {
        assert_eq!(
            ModelFormat::detect("  {\"learner\": {}}"),
            ModelFormat::XgboostJson
        );
        assert_eq!(
            ModelFormat::detect("tree\nversion=v4\n"),
            ModelFormat::LightgbmText
        );
        assert_eq!(
            ModelFormat::detect("tree\r\nversion=v4\r\n"),
            ModelFormat::LightgbmText
        );
        assert_eq!(
            ModelFormat::detect("intercept = 1\n"),
            ModelFormat::Logistic
        );
    }

    #[test]
    fn a_file_too_large_is_refused_before_it_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_MODEL_BYTES as u64 + 10).unwrap();
        assert!(matches!(
            Model::read(&path),
            Err(ModelError::TooLarge { bytes, .. }) if bytes == MAX_MODEL_BYTES + 1
        ));
        assert!(matches!(
            Model::read(&dir.path().join("absent.json")),
            Err(ModelError::Io(_))
        ));
        std::fs::write(&path, [0xff, 0xfe, b'{']).unwrap();
        assert_eq!(Model::read(&path), Err(ModelError::NotText));
    }

    #[test]
    fn inputs_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_inputs(&names(&["a", "b"])).is_ok());
        assert!(check_inputs(&names(&[])).is_err());
        assert!(check_inputs(&names(&["a", ""])).is_err());
        assert!(check_inputs(&names(&["a", "a"])).is_err());
    }
}
