//! LightGBM's text model (`Booster.save_model("m.txt")`, format `v4`), evaluated as LightGBM's
//! own predictor does (`include/LightGBM/tree.h`: `NumericalDecision`, `CategoricalDecision`,
//! `Tree::Predict`; `src/boosting/gbdt_prediction.cpp`; the C API's dense rows in
//! `src/c_api.cpp`; objectives in `src/objective/`):
//!
//! - values within `kZeroThreshold` (1e-35) of zero are zero (the C API drops them from a row);
//! - a numerical split goes left when `x <= threshold`, in `f64`. Its `decision_type` carries a
//!   default-left bit (2) and a missing type (bits 2–3): `None` (NaN counts as 0, then
//!   compared), `Zero` (0 and NaN take the default direction) or `NaN` (NaN takes it);
//! - a categorical split (bit 1) goes left when the value, truncated to an integer, is in the
//!   node's category bitset; NaN and negative values go right;
//! - a child below 0 is leaf `-child - 1`; a tree of one leaf is that leaf's value; leaf values
//!   already include the shrinkage (and the initial score, in the first tree);
//! - the score is the sum of the trees (divided by their count for `average_output`, random
//!   forests); `binary sigmoid:k` outputs `1 / (1 + exp(-k·score))`, the regression objectives
//!   (`regression`, `regression_l1`, `huber`, `fair`, `quantile`, `mape`) the score (with
//!   `sqrt`: `sign(s)·s²`); a model without `objective` outputs the score.
//!
//! Contributions: LightGBM offers TreeSHAP only, so Pulse credits paths as XGBoost's
//! `approx_contribs` does, a node's value being its leaves' values weighed by their data counts
//! (`leaf_count`, `internal_count`): LightGBM's own measure of a tree's expected value
//! (`Tree::ExpectedValue`), so the bias equals the bias column of LightGBM's
//! `predict(pred_contrib=True)`. (`internal_value` is what the node would have output as a leaf,
//! written to 6 digits, not that mean.) Without counts, children weigh equally.
//!
//! Not evaluated, and refused with a reason: several classes, linear trees, other objectives.

use super::error::ModelError;
use super::forest::{
    CATEGORICAL, DEFAULT_LEFT, Forest, MISSING_NAN, MISSING_ZERO, Node, RawNode, Rule,
};
use super::{InputKind, MAX_INPUTS, MAX_NODES, MAX_TREES, Output, Parsed, count};

/// LightGBM's `kZeroThreshold`: `1e-35f` as a double.
const ZERO: f64 = 1e-35_f32 as f64;

/// A LightGBM tree ensemble.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Lightgbm {
    forest: Forest,
    link: Link,
    /// `average_output`: divide the sum by the number of trees.
    average: bool,
    /// The trees' expected outputs (averaged with `average`): the bias of contributions.
    bias: f64,
}

/// How the score becomes the output.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    /// The score itself.
    Identity,
    /// `sign(s)·s²` (regression objectives trained with `sqrt`).
    Square,
    /// `1 / (1 + exp(-k·s))`.
    Sigmoid(f64),
}

/// LightGBM's split.
struct Split;

impl Rule for Split {
    #[inline(always)]
    fn left(node: &Node, x: f64, forest: &Forest) -> bool {
        let x = if x.abs() <= ZERO { 0.0 } else { x };
        if node.flags & CATEGORICAL != 0 {
            // `static_cast<int>`: truncation (Rust saturates where C++ is undefined).
            if x.is_nan() || (x as i32) < 0 {
                return false;
            }
            return forest.in_category_set(node.flags, x as i32 as u32);
        }
        // Without branches (see `forest`): NaN reads as 0 unless the missing type is NaN; a
        // missing value (0 for type Zero, NaN for type NaN) takes the default direction.
        let nan = x.is_nan();
        let missing_nan = node.flags & MISSING_NAN != 0;
        let missing_zero = node.flags & MISSING_ZERO != 0;
        let x = if nan & !missing_nan { 0.0 } else { x };
        let default = (missing_zero & (x == 0.0)) | (missing_nan & nan);
        (default & node.default_left()) | (!default & (x <= node.threshold))
    }
}

impl Lightgbm {
    pub(super) fn parse(text: &str) -> Result<Parsed<Self>, ModelError> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).peekable();
        match lines.next() {
            Some("tree") => {}
            _ => return Err(syntax("header", "the first line is not \"tree\"")),
        }
        // The header: key=value lines up to the first tree.
        let mut header = Header::default();
        while let Some(line) = lines.next_if(|l| !l.starts_with("Tree=")) {
            if line.is_empty() {
                continue;
            }
            if line == "end of trees" {
                break;
            }
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            header.set(key, value);
        }
        let classes = count(
            "num_class",
            header
                .num_class
                .ok_or_else(|| missing("header", "num_class"))?,
            usize::MAX,
        )?;
        let per_iteration = match header.num_tree_per_iteration {
            Some(v) => count("num_tree_per_iteration", v, usize::MAX)?,
            None => classes,
        };
        if classes != 1 || per_iteration != 1 {
            return Err(ModelError::Unsupported(format!(
                "num_class = {classes}, num_tree_per_iteration = {per_iteration}: one output only"
            )));
        }
        let max_feature = header
            .max_feature_idx
            .ok_or_else(|| missing("header", "max_feature_idx"))?;
        let features = count("max_feature_idx", max_feature, MAX_INPUTS - 1)? + 1;
        let inputs: Vec<String> = header
            .feature_names
            .ok_or_else(|| missing("header", "feature_names"))?
            .split(' ')
            .map(str::to_owned)
            .collect();
        if inputs.len() != features {
            return Err(ModelError::FeatureNames(format!(
                "{} names for max_feature_idx = {max_feature}",
                inputs.len()
            )));
        }
        // A categorical feature's info lists its categories (`1:4:7`); a numerical one's is
        // its range (`[0:12]`), or `none` when unused.
        let kinds = match header.feature_infos {
            Some(infos) => {
                let infos: Vec<&str> = infos.split(' ').collect();
                if infos.len() != features {
                    return Err(syntax("header", "feature_infos: not one per feature"));
                }
                infos
                    .iter()
                    .map(|i| {
                        if i.starts_with('[') || *i == "none" {
                            InputKind::Numeric
                        } else {
                            InputKind::Categorical
                        }
                    })
                    .collect()
            }
            None => vec![InputKind::Numeric; features],
        };
        let (link, output) = objective(header.objective)?;

        let mut forest = Forest::new(features);
        let mut raw = Vec::new();
        let mut covers = Vec::new();
        let mut t = 0;
        loop {
            while lines.next_if(|l| l.trim().is_empty()).is_some() {}
            if lines.next_if(|l| l.starts_with("Tree=")).is_none() {
                break;
            }
            if t >= MAX_TREES {
                return Err(ModelError::Limit {
                    what: "trees",
                    found: t + 1,
                    limit: MAX_TREES,
                });
            }
            let mut tree = TreeText::default();
            while let Some(line) = lines.next_if(|l| !l.starts_with("Tree=")) {
                if line.is_empty() {
                    break;
                }
                if line == "end of trees" {
                    break;
                }
                let (key, value) = line.split_once('=').unwrap_or((line, ""));
                tree.set(key, value);
            }
            tree.raw_nodes(t, &mut forest, &mut raw, &mut covers)?;
            forest.add_tree::<Split>(t, &raw, &covers)?;
            t += 1;
        }
        if t == 0 {
            return Err(syntax("trees", "the model has no tree"));
        }
        let mut bias = forest.expected();
        if header.average_output {
            bias /= forest.trees() as f64;
        }
        Ok(Parsed {
            model: Self {
                forest,
                link,
                average: header.average_output,
                bias,
            },
            inputs,
            kinds,
            output,
        })
    }

    pub(super) fn trees(&self) -> usize {
        self.forest.trees()
    }

    #[inline]
    pub(super) fn margin(&self, row: &[f64]) -> f64 {
        let mut sum = 0.0;
        self.forest.for_each_leaf::<Split>(row, |leaf| sum += leaf);
        if self.average {
            sum /= self.forest.trees() as f64;
        }
        sum
    }

    /// Adds the row's contributions to `out` (zeros, one per input) and returns the bias.
    #[inline]
    pub(super) fn contributions(&self, row: &[f64], out: &mut [f64]) -> f64 {
        self.forest.add_contributions::<Split>(row, out);
        if self.average {
            let trees = self.forest.trees() as f64;
            out.iter_mut().for_each(|c| *c /= trees);
        }
        self.bias
    }

    #[inline]
    pub(super) fn predict(&self, row: &[f64]) -> f64 {
        let s = self.margin(row);
        match self.link {
            Link::Identity => s,
            Link::Square => s.signum() * s * s,
            Link::Sigmoid(k) => 1.0 / (1.0 + (-k * s).exp()),
        }
    }
}

/// The objective line: a name, then options (`binary sigmoid:1`, `regression sqrt`).
fn objective(line: Option<&str>) -> Result<(Link, Output), ModelError> {
    let Some(line) = line else {
        return Ok((Link::Identity, Output::Raw));
    };
    let mut words = line.split(' ').filter(|w| !w.is_empty());
    let name = words.next().unwrap_or("");
    let options: Vec<&str> = words.collect();
    match name {
        "binary" => {
            let k = options
                .iter()
                .find_map(|o| o.strip_prefix("sigmoid:"))
                .ok_or_else(|| missing("objective", "sigmoid"))?;
            let k: f64 = k
                .parse()
                .map_err(|_| syntax("objective", format!("sigmoid:{k} is not a number")))?;
            if !(k.is_finite() && k > 0.0) {
                return Err(syntax("objective", format!("sigmoid:{k} must be above 0")));
            }
            Ok((Link::Sigmoid(k), Output::Probability))
        }
        "regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape" => {
            let link = if options.contains(&"sqrt") {
                Link::Square
            } else {
                Link::Identity
            };
            Ok((link, Output::Raw))
        }
        _ => Err(ModelError::UnknownObjective(line.to_owned())),
    }
}

/// The header keys Pulse reads.
#[derive(Default)]
struct Header<'a> {
    num_class: Option<&'a str>,
    num_tree_per_iteration: Option<&'a str>,
    max_feature_idx: Option<&'a str>,
    feature_names: Option<&'a str>,
    feature_infos: Option<&'a str>,
    objective: Option<&'a str>,
    average_output: bool,
}

impl<'a> Header<'a> {
    fn set(&mut self, key: &str, value: &'a str) {
        match key {
            "num_class" => self.num_class = Some(value),
            "num_tree_per_iteration" => self.num_tree_per_iteration = Some(value),
            "max_feature_idx" => self.max_feature_idx = Some(value),
            "feature_names" => self.feature_names = Some(value),
            "feature_infos" => self.feature_infos = Some(value),
            "objective" => self.objective = Some(value),
            "average_output" => self.average_output = true,
            _ => {}
        }
    }
}

/// The keys of one `Tree=` block Pulse reads.
#[derive(Default)]
struct TreeText<'a> {
    num_leaves: Option<&'a str>,
    num_cat: Option<&'a str>,
    split_feature: Option<&'a str>,
    threshold: Option<&'a str>,
    decision_type: Option<&'a str>,
    left_child: Option<&'a str>,
    right_child: Option<&'a str>,
    leaf_value: Option<&'a str>,
    cat_boundaries: Option<&'a str>,
    cat_threshold: Option<&'a str>,
    is_linear: Option<&'a str>,
    internal_count: Option<&'a str>,
    leaf_count: Option<&'a str>,
}

impl<'a> TreeText<'a> {
    fn set(&mut self, key: &str, value: &'a str) {
        let slot = match key {
            "num_leaves" => &mut self.num_leaves,
            "num_cat" => &mut self.num_cat,
            "split_feature" => &mut self.split_feature,
            "threshold" => &mut self.threshold,
            "decision_type" => &mut self.decision_type,
            "left_child" => &mut self.left_child,
            "right_child" => &mut self.right_child,
            "leaf_value" => &mut self.leaf_value,
            "cat_boundaries" => &mut self.cat_boundaries,
            "cat_threshold" => &mut self.cat_threshold,
            "is_linear" => &mut self.is_linear,
            "internal_count" => &mut self.internal_count,
            "leaf_count" => &mut self.leaf_count,
            _ => return,
        };
        *slot = Some(value);
    }

    /// The tree's nodes: splits 0..n-1 as LightGBM numbers them, then the n leaves; and their
    /// covers, the data counts (none when the file has no counts).
    fn raw_nodes(
        &self,
        t: usize,
        forest: &mut Forest,
        out: &mut Vec<RawNode>,
        covers: &mut Vec<f64>,
    ) -> Result<(), ModelError> {
        let at = |key: &str| format!("Tree={t} {key}");
        if self.is_linear.is_some_and(|v| v.trim() != "0") {
            return Err(ModelError::Unsupported(format!(
                "tree {t} is a linear tree"
            )));
        }
        let leaves = count(
            "num_leaves",
            self.num_leaves
                .ok_or_else(|| missing(&at(""), "num_leaves"))?,
            MAX_NODES,
        )?;
        if leaves == 0 {
            return Err(syntax(&at("num_leaves"), "a tree has at least one leaf"));
        }
        let leaf_value: Vec<f64> = numbers(&at("leaf_value"), self.leaf_value)?;
        check_len(t, "leaf_value", leaf_value.len(), leaves)?;
        out.clear();
        covers.clear();
        if leaves == 1 {
            out.push(RawNode::Leaf(leaf_value[0]));
            return Ok(());
        }
        let splits = leaves - 1;
        let feature: Vec<i64> = numbers(&at("split_feature"), self.split_feature)?;
        let threshold: Vec<f64> = numbers(&at("threshold"), self.threshold)?;
        let left: Vec<i64> = numbers(&at("left_child"), self.left_child)?;
        let right: Vec<i64> = numbers(&at("right_child"), self.right_child)?;
        let decision: Vec<u8> = match self.decision_type {
            Some(v) => numbers(&at("decision_type"), Some(v))?,
            None => vec![0; splits],
        };
        for (field, found) in [
            ("split_feature", feature.len()),
            ("threshold", threshold.len()),
            ("left_child", left.len()),
            ("right_child", right.len()),
            ("decision_type", decision.len()),
        ] {
            check_len(t, field, found, splits)?;
        }
        // Category sets: the bitset words of set i are cat_threshold[b[i]..b[i+1]].
        let sets = match self.num_cat {
            Some(v) => count("num_cat", v, splits)?,
            None => 0,
        };
        let mut set_flags = Vec::with_capacity(sets);
        if sets > 0 {
            let bounds: Vec<usize> = numbers(&at("cat_boundaries"), self.cat_boundaries)?;
            let words: Vec<u32> = numbers(&at("cat_threshold"), self.cat_threshold)?;
            check_len(t, "cat_boundaries", bounds.len(), sets + 1)?;
            for w in bounds.windows(2) {
                if w[0] > w[1] || w[1] > words.len() {
                    return Err(syntax(
                        &at("cat_boundaries"),
                        "not increasing within cat_threshold",
                    ));
                }
                set_flags.push(forest.add_category_set(&words[w[0]..w[1]])?);
            }
        }
        let child = |node: usize, c: i64| -> Result<i64, ModelError> {
            let out_of_range = ModelError::ChildOutOfRange {
                tree: t,
                node,
                child: c,
            };
            if c >= 0 {
                if c as usize >= splits {
                    return Err(out_of_range);
                }
                Ok(c)
            } else {
                // Leaf !c, which is -c - 1 (no overflow for any negative i64).
                let leaf = !c as usize;
                if leaf >= leaves {
                    return Err(out_of_range);
                }
                Ok((splits + leaf) as i64)
            }
        };
        for i in 0..splits {
            let d = decision[i];
            if d > 15 {
                return Err(syntax(
                    &at("decision_type"),
                    format!("{d} is not a decision type"),
                ));
            }
            let mut flags = match (d >> 2) & 3 {
                0 => 0,
                1 => MISSING_ZERO,
                2 => MISSING_NAN,
                _ => {
                    return Err(syntax(
                        &at("decision_type"),
                        format!("{d}: unknown missing type 3"),
                    ));
                }
            };
            if d & 2 != 0 {
                flags |= DEFAULT_LEFT;
            }
            if d & 1 != 0 {
                // The threshold is the index of the node's category set.
                let set = threshold[i];
                let flag = (set >= 0.0 && set.fract() == 0.0)
                    .then(|| set_flags.get(set as usize))
                    .flatten()
                    .ok_or_else(|| {
                        syntax(
                            &at("threshold"),
                            format!("category set {set} of node {i} does not exist"),
                        )
                    })?;
                flags |= flag;
            }
            out.push(RawNode::Split {
                feature: feature[i],
                threshold: threshold[i],
                left: child(i, left[i])?,
                right: child(i, right[i])?,
                flags,
            });
        }
        out.extend(leaf_value.iter().map(|&v| RawNode::Leaf(v)));
        if let (Some(i), Some(l)) = (self.internal_count, self.leaf_count) {
            covers.extend(numbers::<f64>(&at("internal_count"), Some(i))?);
            check_len(t, "internal_count", covers.len(), splits)?;
            let leaf_count = numbers::<f64>(&at("leaf_count"), Some(l))?;
            check_len(t, "leaf_count", leaf_count.len(), leaves)?;
            covers.extend(leaf_count);
        }
        Ok(())
    }
}

/// Space-separated numbers (at most [`MAX_NODES`]).
fn numbers<T: std::str::FromStr>(what: &str, text: Option<&str>) -> Result<Vec<T>, ModelError> {
    let text = text.ok_or_else(|| missing(what, "the key"))?;
    let mut out = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if out.len() == MAX_NODES {
            return Err(ModelError::Limit {
                what: "values in a tree's line",
                found: out.len() + 1,
                limit: MAX_NODES,
            });
        }
        out.push(
            word.parse()
                .map_err(|_| syntax(what, format!("{word:?} is not a number of the right kind")))?,
        );
    }
    Ok(out)
}

fn check_len(
    tree: usize,
    field: &'static str,
    found: usize,
    expected: usize,
) -> Result<(), ModelError> {
    if found != expected {
        return Err(ModelError::Length {
            tree,
            field,
            found,
            expected,
        });
    }
    Ok(())
}

fn syntax(what: &str, message: impl Into<String>) -> ModelError {
    ModelError::Syntax {
        what: what.to_owned(),
        message: message.into(),
    }
}

fn missing(what: &str, key: &str) -> ModelError {
    syntax(what.trim(), format!("{key} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ModelFormat};

    /// A model over `a` and `b` of the given trees (each the lines of a `Tree=` block).
    fn model(objective: &str, infos: &str, trees: &[&str]) -> String {
        let mut s = format!(
            "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n\
             max_feature_idx=1\nobjective={objective}\nfeature_names=a b\nfeature_infos={infos}\n\n"
        );
        for (i, t) in trees.iter().enumerate() {
            s.push_str(&format!("Tree={i}\n{t}\nshrinkage=1\n\n\n"));
        }
        s.push_str("end of trees\n\nfeature_importances:\na=1\n\nparameters:\n[boosting: gbdt]\nend of parameters\n\npandas_categorical:null\n");
        s
    }

    /// One split on `a` at 0.5 with this decision type: left leaf -1, right leaf 2.
    fn stump(decision_type: u8) -> String {
        format!(
            "num_leaves=2\nnum_cat=0\nsplit_feature=0\nsplit_gain=1\nthreshold=0.5\n\
             decision_type={decision_type}\nleft_child=-1\nright_child=-2\nleaf_value=-1 2\n\
             leaf_weight=1 1\nleaf_count=1 1\ninternal_value=0\ninternal_weight=0\n\
             internal_count=2\nis_linear=0"
        )
    }

    fn load(text: &str) -> Result<Model, ModelError> {
        Model::parse(ModelFormat::LightgbmText, text)
    }

    fn score(decision_type: u8, x: f64) -> f64 {
        load(&model(
            "regression",
            "[0:1] [0:1]",
            &[&stump(decision_type)],
        ))
        .unwrap()
        .predict(&[x, 0.0])
    }

    #[test]
    fn numerical_splits_compare_with_less_or_equal() {
        assert_eq!(score(0, 0.5), -1.0);
        assert_eq!(score(0, 0.500_000_000_000_001), 2.0);
        assert_eq!(score(0, -3.0), -1.0);
    }

    #[test]
    fn missing_type_none_reads_nan_as_zero() {
        // Default-left has no say: NaN becomes 0, and 0 <= 0.5.
        assert_eq!(score(0, f64::NAN), -1.0);
        assert_eq!(score(2, f64::NAN), -1.0);
    }

    #[test]
    fn missing_type_zero_sends_zero_and_nan_the_default_way() {
        // 4 = Zero, default right; 6 = Zero, default left.
        for x in [0.0, -0.0, 1e-36, f64::NAN] {
            assert_eq!(score(4, x), 2.0, "{x}");
            assert_eq!(score(6, x), -1.0, "{x}");
        }
        assert_eq!(score(4, 0.25), -1.0);
        assert_eq!(score(6, 0.75), 2.0);
    }

    #[test]
    fn missing_type_nan_sends_nan_the_default_way_and_compares_zero() {
        // 8 = NaN, default right; 10 = NaN, default left.
        assert_eq!(score(8, f64::NAN), 2.0);
        assert_eq!(score(10, f64::NAN), -1.0);
        assert_eq!(score(8, 0.0), -1.0);
        assert_eq!(score(10, 0.9), 2.0);
    }

    #[test]
    fn a_single_leaf_tree_and_the_sigmoid() {
        let text = model(
            "binary sigmoid:2",
            "[0:1] [0:1]",
            &[
                &stump(0),
                "num_leaves=1\nnum_cat=0\nsplit_feature=\nthreshold=\ndecision_type=\nleft_child=\nright_child=\nleaf_value=0.25\nis_linear=0",
            ],
        );
        let m = load(&text).unwrap();
        assert_eq!(m.trees(), 2);
        assert_eq!(m.output(), Output::Probability);
        assert_eq!(m.margin(&[0.0, 0.0]), -0.75);
        assert_eq!(m.predict(&[0.0, 0.0]), 1.0 / (1.0 + (1.5f64).exp()));
    }

    #[test]
    fn categorical_splits_look_codes_up_in_the_bitset() {
        // Categories 1 and 33 go left; feature a is categorical.
        let tree = "num_leaves=2\nnum_cat=1\nsplit_feature=0\nthreshold=0\ndecision_type=1\n\
                    left_child=-1\nright_child=-2\nleaf_value=-1 2\ncat_boundaries=0 2\n\
                    cat_threshold=2 2\nis_linear=0";
        let m = load(&model("regression", "1:33:5 [0:1]", &[tree])).unwrap();
        assert_eq!(
            m.feature_kinds(),
            [InputKind::Categorical, InputKind::Numeric]
        );
        assert_eq!(m.predict(&[1.0, 0.0]), -1.0);
        assert_eq!(m.predict(&[1.9, 0.0]), -1.0, "truncated to 1");
        assert_eq!(m.predict(&[33.0, 0.0]), -1.0);
        for x in [0.0, 5.0, 64.0, 1e12, -1.0, f64::NAN] {
            assert_eq!(m.predict(&[x, 0.0]), 2.0, "{x}");
        }
    }

    #[test]
    fn average_output_and_sqrt() {
        let text = model("regression sqrt", "[0:1] [0:1]", &[&stump(0), &stump(0)])
            .replace("feature_names", "average_output\nfeature_names");
        let m = load(&text).unwrap();
        assert_eq!(m.margin(&[0.9, 0.0]), 2.0);
        assert_eq!(m.predict(&[0.9, 0.0]), 4.0);
        assert_eq!(m.predict(&[0.0, 0.0]), -1.0);
    }

    /// Split 0 on `a` at 0.5 (6 rows): left leaf 0 (-1, 3 rows), right split 1 on `b` at 0.5
    /// (3 rows) into leaves 1 (2, 1 row) and 2 (4, 2 rows).
    const THREE_LEAVES: &str = "num_leaves=3\nnum_cat=0\nsplit_feature=0 1\nsplit_gain=1 1\n\
        threshold=0.5 0.5\ndecision_type=2 2\nleft_child=-1 -2\nright_child=1 -3\n\
        leaf_value=-1 2 4\nleaf_weight=9 9 9\nleaf_count=3 1 2\ninternal_value=5 5\n\
        internal_weight=9 9\ninternal_count=6 3\nis_linear=0";

    #[test]
    fn contributions_weigh_leaves_by_their_counts() {
        let m = load(&model("regression", "[0:1] [0:1]", &[THREE_LEAVES])).unwrap();
        // Split 1's value: (2·1 + 4·2) / 3 = 10/3; the root's: (-1·3 + 10/3·3) / 6 = 7/6
        // (internal_value and the weights play no part).
        let (root, split1) = ((-3.0 + 10.0 / 3.0 * 3.0) / 6.0, 10.0 / 3.0);
        let mut out = Vec::new();
        let bias = m.contributions(&[0.9, 0.9], &mut out);
        assert_eq!(bias, root);
        assert_eq!(out, [split1 - root, 4.0 - split1]);
        assert!((bias + out[0] + out[1] - m.margin(&[0.9, 0.9])).abs() < 1e-15);
        m.contributions(&[0.1, 0.9], &mut out);
        assert_eq!(out, [-1.0 - root, 0.0]);
        // NaN reads as 0 (missing type None), as in the score.
        m.contributions(&[0.9, f64::NAN], &mut out);
        assert_eq!(out, [split1 - root, 2.0 - split1]);
        // average_output divides the bias and the contributions by the number of trees.
        let text = model("regression", "[0:1] [0:1]", &[THREE_LEAVES, &stump(0)])
            .replace("feature_names", "average_output\nfeature_names");
        let m = load(&text).unwrap();
        let bias = m.contributions(&[0.9, 0.9], &mut out);
        // The stump's value is (-1 + 2) / 2 = 0.5; it credits a with 2 - 0.5.
        assert_eq!(bias, (root + 0.5) / 2.0);
        assert_eq!(out, [(split1 - root + 1.5) / 2.0, (4.0 - split1) / 2.0]);
        assert_eq!(bias + out[0] + out[1], m.margin(&[0.9, 0.9]));
        // Counts of the wrong length are refused.
        let bad = THREE_LEAVES.replace("leaf_count=3 1 2", "leaf_count=3 1");
        let e = load(&model("regression", "[0:1] [0:1]", &[&bad]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaf_count"), "{e}");
    }

    #[test]
    fn what_is_not_evaluated_is_refused_with_a_reason() {
        let base = model("binary sigmoid:1", "[0:1] [0:1]", &[&stump(0)]);
        let cases = [
            (
                base.replace("binary sigmoid:1", "multiclass num_class:3"),
                "objective",
            ),
            (
                base.replace("binary sigmoid:1", "binary"),
                "sigmoid is missing",
            ),
            (base.replace("num_class=1", "num_class=3"), "one output"),
            (base.replace("is_linear=0", "is_linear=1"), "linear"),
            (base.replace("left_child=-1", "left_child=-3"), "outside"),
            (base.replace("left_child=-1", "left_child=0"), "twice"),
            (
                base.replace("split_feature=0", "split_feature=2"),
                "feature 2",
            ),
            (
                base.replace("split_feature=0", "split_feature=x"),
                "not a number",
            ),
            (
                base.replace("leaf_value=-1 2", "leaf_value=-1"),
                "leaf_value",
            ),
            (
                base.replace("leaf_value=-1 2", "leaf_value=-1 nan"),
                "not a finite",
            ),
            (base.replace("threshold=0.5", "threshold=nan"), "threshold"),
            (
                base.replace("decision_type=0", "decision_type=12"),
                "missing type",
            ),
            (
                base.replace("decision_type=0", "decision_type=1"),
                "category set",
            ),
            (
                base.replace("feature_names=a b", "feature_names=a"),
                "names",
            ),
            (
                base.replace("feature_names=a b", "feature_names=a a"),
                "two inputs",
            ),
            (base.replace("max_feature_idx=1\n", ""), "max_feature_idx"),
            (
                base.replace("num_leaves=2", "num_leaves=99999999999"),
                "limit",
            ),
            (
                base.replace("num_leaves=2", "num_leaves=0"),
                "at least one leaf",
            ),
            (base.replace("tree\n", "three\n"), "header"),
            (base[..base.find("Tree=0").unwrap()].to_owned(), "no tree"),
        ];
        for (text, expected) in cases {
            let e = match load(&text) {
                Ok(_) => panic!("{expected}: it loaded"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }
}
