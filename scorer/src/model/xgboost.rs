//! XGBoost's JSON model (`Booster.save_model("m.json")`, schema of XGBoost 2 and 3), evaluated as
//! XGBoost's CPU predictor does (`src/predictor/predict_fn.h`, `cpu_predictor.cc`, tree loading
//! in `src/tree/tree_model.cc`, objectives in `src/objective/regression_loss.h`):
//!
//! - inputs and thresholds are `f32`: a value goes left when `(x as f32) < split_condition`;
//! - a missing value (NaN) takes the node's default direction (`default_left`);
//! - a node is a leaf when its left child is -1; its value is its `split_conditions` entry
//!   (`base_weights` play no part in prediction);
//! - the margin starts at the base score mapped to a margin (`learner_model_param.base_score`,
//!   through the logit for `binary:logistic` and `reg:logistic`, clamped to [1e-6, 1 − 1e-6] as
//!   XGBoost does; as it is for `binary:logitraw` and `reg:squarederror`) and adds each tree's
//!   leaf in tree order, in `f32`;
//! - `binary:logistic` and `reg:logistic` output XGBoost's `f32` sigmoid of the margin;
//!   `binary:logitraw` and `reg:squarederror` (`reg:linear`) output the margin.
//!
//! Contributions are XGBoost's `predict(pred_contribs=True, approx_contribs=True)`
//! (`ApproxFeatureImportance` in `src/predictor/interpretability/shap.cc`, formerly
//! `cpu_predictor.cc`): a node's value is worked out from the leaves by cover as
//! `FillNodeMeanValues` does, in `f32` (`(left·left_hess + right·right_hess) / hess` over
//! `sum_hessian`; `base_weights` play no part here either), and the bias is the roots' values
//! plus the base margin. XGBoost then sums the credits in `f32`, Pulse in `f64`, so the two agree
//! to about 1e-6, not to the bit. A file without `sum_hessian` weighs children equally.
//!
//! Not evaluated, and refused with a reason: categorical splits, several classes or targets,
//! DART and linear boosters.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::error::ModelError;
use super::forest::{DEFAULT_LEFT, Forest, Node, RawNode, Rule};
use super::{InputKind, MAX_INPUTS, MAX_NODES, MAX_TREES, Output, Parsed, count};

/// An XGBoost tree ensemble.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Xgboost {
    forest: Forest,
    /// The base score as a margin.
    base_margin: f32,
    /// Whether the output is the sigmoid of the margin.
    sigmoid: bool,
    /// The base margin plus the trees' expected outputs: the bias of contributions.
    bias: f64,
}

/// XGBoost's split: `f32` comparison, missing by the default direction.
struct Split;

impl Rule for Split {
    #[inline(always)]
    fn left(node: &Node, x: f64, _: &Forest) -> bool {
        // Thresholds were read as f32, so this is XGBoost's f32 comparison; NaN compares
        // false and takes the default direction instead. Without branches (see `forest`).
        (((x as f32) as f64) < node.threshold) | (x.is_nan() & node.default_left())
    }

    /// `FillNodeMeanValues`, operation for operation in `f32` (values and covers were read as
    /// `f32`, so the casts are exact).
    fn expected(left: (f64, f64), right: (f64, f64), cover: f64) -> f64 {
        let mut v = left.0 as f32 * left.1 as f32;
        v += right.0 as f32 * right.1 as f32;
        v /= cover as f32;
        f64::from(v)
    }
}

impl Xgboost {
    pub(super) fn parse(text: &str) -> Result<Parsed<Self>, ModelError> {
        let file: File = serde_json::from_str(text).map_err(|e| ModelError::Json(e.to_string()))?;
        let learner = file.learner;
        let (sigmoid, logit_base) = match learner.objective.name.as_str() {
            "binary:logistic" | "reg:logistic" => (true, true),
            // XGBoost's LogisticRaw keeps the base score as it is (`regression_loss.h`).
            "binary:logitraw" => (false, false),
            "reg:squarederror" | "reg:linear" => (false, false),
            other => return Err(ModelError::UnknownObjective(other.to_owned())),
        };
        let param = &learner.learner_model_param;
        for (what, value) in [
            ("num_class", &param.num_class),
            ("num_target", &param.num_target),
        ] {
            if let Some(v) = value
                && count(what, v, usize::MAX)? > 1
            {
                return Err(ModelError::Unsupported(format!(
                    "{what} = {v}: one output only"
                )));
            }
        }
        let features = count("num_feature", &param.num_feature, MAX_INPUTS)?;
        let inputs = if learner.feature_names.0.is_empty() {
            // XGBoost's own names for unnamed columns.
            (0..features).map(|i| format!("f{i}")).collect()
        } else if learner.feature_names.0.len() == features {
            learner.feature_names.0
        } else {
            return Err(ModelError::FeatureNames(format!(
                "{} names for num_feature = {features}",
                learner.feature_names.0.len()
            )));
        };
        if let Some(t) = learner.feature_types.0.iter().find(|t| *t == "c") {
            return Err(ModelError::Unsupported(format!(
                "categorical feature type {t:?} (XGBoost's categorical splits are not evaluated)"
            )));
        }
        let base_margin = base_margin(&param.base_score, logit_base)?;

        let booster = learner.gradient_booster;
        let model = match (booster.name.as_str(), booster.model) {
            ("gbtree", Some(model)) => model,
            (name, _) => {
                return Err(ModelError::Unsupported(format!(
                    "booster {name:?} (gbtree is evaluated)"
                )));
            }
        };
        let declared = count("num_trees", &model.gbtree_model_param.num_trees, MAX_TREES)?;
        if declared != model.trees.0.len() {
            return Err(ModelError::Json(format!(
                "num_trees is {declared} but there are {} trees",
                model.trees.0.len()
            )));
        }
        if let Some(g) = model.tree_info.0.iter().find(|&&g| g != 0) {
            return Err(ModelError::Unsupported(format!(
                "a tree of output group {g}: one output only"
            )));
        }
        let mut forest = Forest::new(inputs.len());
        let mut raw = Vec::new();
        let mut covers = Vec::new();
        for (t, tree) in model.trees.0.iter().enumerate() {
            tree.raw_nodes(t, &mut raw, &mut covers)?;
            forest.add_tree::<Split>(t, &raw, &covers)?;
        }
        let kinds = vec![InputKind::Numeric; inputs.len()];
        Ok(Parsed {
            model: Self {
                bias: f64::from(base_margin) + forest.expected(),
                forest,
                base_margin,
                sigmoid,
            },
            inputs,
            kinds,
            output: if sigmoid {
                Output::Probability
            } else {
                Output::Raw
            },
        })
    }

    pub(super) fn trees(&self) -> usize {
        self.forest.trees()
    }

    /// The margin in XGBoost's `f32`.
    #[inline]
    fn margin32(&self, row: &[f64]) -> f32 {
        let mut sum = self.base_margin;
        self.forest
            .for_each_leaf::<Split>(row, |leaf| sum += leaf as f32);
        sum
    }

    pub(super) fn margin(&self, row: &[f64]) -> f64 {
        f64::from(self.margin32(row))
    }

    #[inline]
    pub(super) fn predict(&self, row: &[f64]) -> f64 {
        let m = self.margin32(row);
        f64::from(if self.sigmoid { sigmoid(m) } else { m })
    }

    /// Adds the row's contributions to `out` (zeros, one per input) and returns the bias.
    #[inline]
    pub(super) fn contributions(&self, row: &[f64], out: &mut [f64]) -> f64 {
        self.forest.add_contributions::<Split>(row, out);
        self.bias
    }
}

/// XGBoost's `common::Sigmoid(float)`, operation for operation.
fn sigmoid(x: f32) -> f32 {
    const EPS: f32 = 1e-16;
    let x = (-x).min(88.7);
    let denom = x.exp() + 1.0 + EPS;
    1.0 / denom
}

/// The base score as a margin: `"[5E-1]"` (XGBoost 3) or `"5E-1"` (before), through the logit
/// for logistic objectives (`LogisticRegression::ProbToMargin`).
fn base_margin(text: &str, logit: bool) -> Result<f32, ModelError> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.contains(',') {
        return Err(ModelError::Unsupported(format!(
            "base_score {text:?}: one output only"
        )));
    }
    let value: f32 = inner
        .trim()
        .parse()
        .map_err(|_| ModelError::Json(format!("base_score {text:?} is not a number")))?;
    if !value.is_finite() {
        return Err(ModelError::NotFinite("base_score".into()));
    }
    if !logit {
        return Ok(value);
    }
    if !(0.0..=1.0).contains(&value) {
        return Err(ModelError::Json(format!(
            "base_score {value} must be in [0, 1] for a logistic objective"
        )));
    }
    const EPS: f32 = 1e-6;
    let p = value.clamp(EPS, 1.0 - EPS);
    Ok(-(1.0 / p - 1.0).ln())
}

/// The parts of the file Pulse reads; the rest (training parameters, statistics) is ignored.
#[derive(Deserialize)]
struct File {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Bounded<String, MAX_INPUTS>,
    #[serde(default)]
    feature_types: Bounded<String, MAX_INPUTS>,
    gradient_booster: Booster,
    learner_model_param: ModelParam,
    objective: Objective,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    num_feature: String,
    #[serde(default)]
    num_class: Option<String>,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    #[serde(default)]
    model: Option<Trees>,
}

#[derive(Deserialize)]
struct Trees {
    gbtree_model_param: GbtreeParam,
    #[serde(default)]
    tree_info: Bounded<i32, MAX_TREES>,
    trees: Bounded<Tree, MAX_TREES>,
}

#[derive(Deserialize)]
struct GbtreeParam {
    num_trees: String,
}

#[derive(Deserialize)]
struct Tree {
    tree_param: TreeParam,
    left_children: Bounded<i32, MAX_NODES>,
    right_children: Bounded<i32, MAX_NODES>,
    split_indices: Bounded<u32, MAX_NODES>,
    split_conditions: Bounded<f32, MAX_NODES>,
    default_left: Bounded<Flag, MAX_NODES>,
    #[serde(default)]
    split_type: Bounded<u8, MAX_NODES>,
    /// The nodes' covers (sums of the hessian), for contributions only.
    #[serde(default)]
    sum_hessian: Bounded<f32, MAX_NODES>,
}

#[derive(Deserialize)]
struct TreeParam {
    num_nodes: String,
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

impl Tree {
    /// The tree's nodes as XGBoost numbers them, checked for lengths, and their covers (none
    /// when the file has no `sum_hessian`).
    fn raw_nodes(
        &self,
        t: usize,
        out: &mut Vec<RawNode>,
        covers: &mut Vec<f64>,
    ) -> Result<(), ModelError> {
        if let Some(v) = &self.tree_param.size_leaf_vector
            && count("size_leaf_vector", v, usize::MAX)? > 1
        {
            return Err(ModelError::Unsupported(format!(
                "tree {t}: leaves of {v} values (multi-target trees)"
            )));
        }
        let n = count("num_nodes", &self.tree_param.num_nodes, MAX_NODES)?;
        let lengths = [
            ("left_children", self.left_children.0.len()),
            ("right_children", self.right_children.0.len()),
            ("split_indices", self.split_indices.0.len()),
            ("split_conditions", self.split_conditions.0.len()),
            ("default_left", self.default_left.0.len()),
        ];
        let hessians = self.sum_hessian.0.len();
        let lengths = lengths
            .into_iter()
            .chain((hessians > 0).then_some(("sum_hessian", hessians)));
        for (field, found) in lengths {
            if found != n {
                return Err(ModelError::Length {
                    tree: t,
                    field,
                    found,
                    expected: n,
                });
            }
        }
        if let Some(i) = self.split_type.0.iter().position(|&s| s != 0) {
            return Err(ModelError::Unsupported(format!(
                "tree {t}: node {i} is a categorical split (XGBoost's categorical splits are not evaluated)"
            )));
        }
        covers.clear();
        covers.extend(self.sum_hessian.0.iter().map(|&h| f64::from(h)));
        out.clear();
        out.extend((0..n).map(|i| {
            let value = f64::from(self.split_conditions.0[i]);
            if self.left_children.0[i] == -1 {
                RawNode::Leaf(value)
            } else {
                RawNode::Split {
                    feature: i64::from(self.split_indices.0[i]),
                    threshold: value,
                    left: i64::from(self.left_children.0[i]),
                    right: i64::from(self.right_children.0[i]),
                    flags: if self.default_left.0[i].0 {
                        DEFAULT_LEFT
                    } else {
                        0
                    },
                }
            }
        }));
        Ok(())
    }
}

/// A JSON array of at most `N` values: a file cannot make loading allocate past the bounds.
struct Bounded<T, const N: usize>(Vec<T>);

impl<T, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Seq<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {N} values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(v) = seq.next_element()? {
                    if out.len() == N {
                        return Err(de::Error::custom(format!(
                            "an array of more than {N} values (the limit)"
                        )));
                    }
                    out.push(v);
                }
                Ok(Bounded(out))
            }
        }
        d.deserialize_seq(Seq(PhantomData))
    }
}

/// `default_left`: 0/1 (XGBoost 2 and 3) or a boolean (older files).
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("0, 1 or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                match v {
                    0 | 1 => Ok(Flag(v == 1)),
                    _ => Err(E::custom(format!("default_left {v} is not 0 or 1"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("default_left {v} is not 0 or 1")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ModelFormat};

    /// One tree: node 0 splits feature `a` at 0.5 (missing goes `left` when `dl`), leaves 1
    /// (left, -1.0) and 2 (right, 2.0).
    fn stump(objective: &str, base_score: &str, dl: u8) -> String {
        format!(
            r#"{{"learner": {{
                "feature_names": ["a", "b"], "feature_types": [],
                "learner_model_param": {{"base_score": "{base_score}", "num_feature": "2",
                    "num_class": "0", "num_target": "1", "boost_from_average": "1"}},
                "objective": {{"name": "{objective}"}},
                "gradient_booster": {{"name": "gbtree", "model": {{
                    "gbtree_model_param": {{"num_trees": "2", "num_parallel_tree": "1"}},
                    "tree_info": [0, 0],
                    "trees": [
                      {{"tree_param": {{"num_nodes": "3", "num_feature": "2", "size_leaf_vector": "1"}},
                        "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                        "parents": [2147483647, 0, 0], "split_indices": [0, 0, 0],
                        "split_conditions": [0.5, -1.0, 2.0], "default_left": [{dl}, 0, 0],
                        "split_type": [0, 0, 0], "base_weights": [0, 0, 0]}},
                      {{"tree_param": {{"num_nodes": "1", "num_feature": "2", "size_leaf_vector": "1"}},
                        "left_children": [-1], "right_children": [-1], "parents": [2147483647],
                        "split_indices": [0], "split_conditions": [0.25], "default_left": [0],
                        "split_type": [0], "base_weights": [0]}}
                    ]}}}}
            }}, "version": [3, 2, 0]}}"#
        )
    }

    fn load(text: &str) -> Result<Model, ModelError> {
        Model::parse(ModelFormat::XgboostJson, text)
    }

    #[test]
    fn regression_adds_leaves_to_the_base_score() {
        let m = load(&stump("reg:squarederror", "[1E0]", 0)).unwrap();
        assert_eq!(m.feature_names(), ["a", "b"]);
        assert_eq!(m.trees(), 2);
        assert_eq!(m.output(), Output::Raw);
        // A single-leaf tree adds 0.25 to every row.
        assert_eq!(m.predict(&[0.0, 0.0]), 1.0 - 1.0 + 0.25);
        assert_eq!(
            m.predict(&[0.5, 0.0]),
            1.0 + 2.0 + 0.25,
            "x < 0.5 goes left; 0.5 does not"
        );
        assert_eq!(
            m.predict(&[0.499_999_99, 0.0]),
            3.25,
            "compared as f32 (rounds to 0.5)"
        );
        assert_eq!(m.predict(&[f64::NAN, 0.0]), 3.25, "missing goes right");
        assert_eq!(m.predict(&[]), 3.25, "a short row is missing values");
    }

    #[test]
    fn missing_takes_the_default_left() {
        let m = load(&stump("reg:squarederror", "0.5", 1)).unwrap();
        assert_eq!(m.predict(&[f64::NAN, 1.0]), 0.5 - 1.0 + 0.25);
        assert_eq!(m.predict(&[9.0, 1.0]), 0.5 + 2.0 + 0.25);
    }

    #[test]
    fn logistic_maps_the_base_score_through_the_logit() {
        let m = load(&stump("binary:logistic", "[5E-1]", 0)).unwrap();
        assert_eq!(m.output(), Output::Probability);
        assert_eq!(m.margin(&[0.0, 0.0]), -0.75);
        let p = m.predict(&[0.0, 0.0]);
        assert!((p - 1.0 / (1.0 + 0.75f64.exp())).abs() < 1e-7, "{p}");
        // binary:logitraw keeps the base score as a margin (no logit).
        let raw = load(&stump("binary:logitraw", "[5E-1]", 0)).unwrap();
        assert_eq!(raw.output(), Output::Raw);
        assert_eq!(raw.predict(&[0.0, 0.0]), 0.5 - 0.75);
    }

    /// The stump with covers: the split 4, its leaves 1 (left) and 3 (right); the single leaf 4.
    fn stump_with_covers(objective: &str, base_score: &str) -> String {
        stump(objective, base_score, 0)
            .replace(
                "\"base_weights\": [0, 0, 0]",
                "\"base_weights\": [9, 9, 9], \"sum_hessian\": [4, 1, 3]",
            )
            .replace(
                "\"base_weights\": [0]",
                "\"base_weights\": [9], \"sum_hessian\": [4]",
            )
    }

    #[test]
    fn contributions_follow_the_path_from_the_cover_weighted_root() {
        let m = load(&stump_with_covers("reg:squarederror", "[1E0]")).unwrap();
        // The split's value: (-1·1 + 2·3) / 4 = 1.25 (base_weights play no part); the bias is
        // the base score, 1.25 and the single leaf's 0.25.
        let mut out = Vec::new();
        assert_eq!(m.contributions(&[0.0, 0.0], &mut out), 2.5);
        assert_eq!(out, [-1.0 - 1.25, 0.0]);
        assert_eq!(2.5 + out[0], m.margin(&[0.0, 0.0]));
        assert_eq!(m.contributions(&[f64::NAN, 5.0], &mut out), 2.5);
        assert_eq!(out, [2.0 - 1.25, 0.0], "missing goes right");
        assert_eq!(m.top_contributions(&[9.0, 9.0], 5), [(0, 0.75)]);
        // binary:logistic: the base score enters the bias as a margin, as in the score.
        let m = load(&stump_with_covers("binary:logistic", "[5E-1]")).unwrap();
        assert_eq!(m.contributions(&[0.0, 0.0], &mut out), 1.5);
        assert_eq!(1.5 + out[0], m.margin(&[0.0, 0.0]));
        // Without sum_hessian the children count equally: the split's value is 0.5.
        let m = load(&stump("reg:squarederror", "[1E0]", 0)).unwrap();
        assert_eq!(m.contributions(&[0.0, 0.0], &mut out), 1.75);
        assert_eq!(out, [-1.5, 0.0]);
        // A sum_hessian of the wrong length is refused.
        let bad = stump_with_covers("reg:squarederror", "[1E0]").replace("[4, 1, 3]", "[4, 1]");
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("sum_hessian"), "{e}");
    }

    #[test]
    fn node_values_are_worked_out_in_f32() {
        // XGBoost's FillNodeMeanValues: (l·hl + r·hr) / h, each step rounded to f32.
        let (l, hl, r, hr, h) = (0.1f32, 3.3f32, -0.7f32, 1.9f32, 5.2f32);
        let mut want = l * hl;
        want += r * hr;
        want /= h;
        let got = Split::expected(
            (f64::from(l), f64::from(hl)),
            (f64::from(r), f64::from(hr)),
            f64::from(h),
        );
        assert_eq!(got, f64::from(want));
        let wide = (f64::from(l) * f64::from(hl) + f64::from(r) * f64::from(hr)) / f64::from(h);
        assert_ne!(got, wide, "not in f64");
    }

    #[test]
    fn what_is_not_evaluated_is_refused_with_a_reason() {
        let base = stump("binary:logistic", "[5E-1]", 0);
        let cases = [
            (
                base.replace("binary:logistic", "multi:softprob"),
                "objective",
            ),
            (
                base.replace("\"num_class\": \"0\"", "\"num_class\": \"3\""),
                "num_class",
            ),
            (
                base.replace("\"gbtree\", \"model\"", "\"dart\", \"model\""),
                "dart",
            ),
            (base.replace("[5E-1]", "[5E-1,5E-1]"), "one output"),
            (base.replace("[5E-1]", "[2E0]"), "[0, 1]"),
            (
                base.replace("\"feature_types\": []", "\"feature_types\": [\"c\", \"q\"]"),
                "categorical",
            ),
            (
                base.replace("\"split_type\": [0, 0, 0]", "\"split_type\": [1, 0, 0]"),
                "categorical",
            ),
            (
                base.replace(
                    "\"left_children\": [1, -1, -1]",
                    "\"left_children\": [7, -1, -1]",
                ),
                "outside",
            ),
            (
                base.replace(
                    "\"left_children\": [1, -1, -1]",
                    "\"left_children\": [0, -1, -1]",
                ),
                "twice",
            ),
            (
                base.replace(
                    "\"split_indices\": [0, 0, 0]",
                    "\"split_indices\": [2, 0, 0]",
                ),
                "feature 2",
            ),
            (
                base.replace(
                    "\"right_children\": [2, -1, -1]",
                    "\"right_children\": [2, -1]",
                ),
                "right_children",
            ),
            (
                base.replace("\"num_trees\": \"2\"", "\"num_trees\": \"3\""),
                "num_trees",
            ),
            (
                base.replacen("\"num_feature\": \"2\"", "\"num_feature\": \"3\"", 1),
                "names",
            ),
            (
                base.replace("\"default_left\": [0, 0, 0]", "\"default_left\": [2, 0, 0]"),
                "default_left",
            ),
            (base.replace("\"learner\"", "\"learnr\""), "learner"),
            (base[..base.len() / 2].to_owned(), "EOF"),
        ];
        for (text, expected) in cases {
            let e = match load(&text) {
                Ok(_) => panic!("{expected}: it loaded"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn too_many_trees_are_refused_while_reading() {
        let tree = r#"{"tree_param": {"num_nodes": "1"}, "left_children": [-1], "right_children": [-1],
            "split_indices": [0], "split_conditions": [0.1], "default_left": [0]}"#;
        let trees = vec![tree; MAX_TREES + 1].join(",");
        let text = format!(
            r#"{{"learner": {{"learner_model_param": {{"base_score": "0", "num_feature": "1"}},
            "objective": {{"name": "reg:squarederror"}},
            "gradient_booster": {{"name": "gbtree", "model": {{
                "gbtree_model_param": {{"num_trees": "1"}}, "trees": [{trees}]}}}}}}}}"#
        );
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("more than 10000"), "{e}");
    }
}
