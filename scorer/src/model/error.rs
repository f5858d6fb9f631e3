//! Why a model file could not be loaded. Every variant says what is wrong and, where it helps,
//! where (tree and node as the trainer numbered them).

/// A model file that could not be loaded. Loading never panics: every way a file can be wrong
/// ends here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read the model file: {0}")]
    Io(String),
    /// The file is larger than [`MAX_MODEL_BYTES`](crate::MAX_MODEL_BYTES).
    #[error("the model file has {bytes} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Its size (or the first size found past the limit).
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The file is not valid UTF-8 text.
    #[error("the model file is not UTF-8 text")]
    NotText,
    /// An XGBoost model that is not valid JSON, or JSON that is not an XGBoost model (a field
    /// missing or of the wrong type).
    #[error("not an XGBoost JSON model: {0}")]
    Json(String),
    /// A LightGBM model text or a logistic-regression file that cannot be read: a line, key
    /// or number that is not what the format has there.
    #[error("{what}: {message}")]
    Syntax {
        /// Where (`Tree=3 threshold`, `header`, `features[2].coefficient`).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The objective is not one Pulse evaluates (binary logistic and regression are).
    #[error("objective {0:?} is not supported (binary logistic and regression are)")]
    UnknownObjective(String),
    /// The model is of a kind Pulse does not evaluate (several classes or targets, DART,
    /// linear boosters or linear trees, XGBoost categorical splits, …).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// An array of a tree does not have the length the tree's size calls for.
    #[error("tree {tree}: {field} has {found} values, {expected} expected")]
    Length {
        /// The tree (the trainer's order, from 0).
        tree: usize,
        /// The field.
        field: &'static str,
        /// How many it has.
        found: usize,
        /// How many it should have.
        expected: usize,
    },
    /// A child index that points outside its tree.
    #[error("tree {tree}: node {node} has child {child}, outside the tree")]
    ChildOutOfRange {
        /// The tree.
        tree: usize,
        /// The node (the trainer's numbering).
        node: usize,
        /// The child as written.
        child: i64,
    },
    /// A node reached twice from the root: a cycle, or a child shared by two parents.
    #[error("tree {tree}: node {node} is reached twice from the root (a cycle or a shared child)")]
    Cycle {
        /// The tree.
        tree: usize,
        /// The node (the trainer's numbering).
        node: usize,
    },
    /// A split on a feature index past the model's feature names.
    #[error(
        "tree {tree}: node {node} splits on feature {feature}, but the model has {features} features"
    )]
    FeatureOutOfRange {
        /// The tree.
        tree: usize,
        /// The node (the trainer's numbering).
        node: usize,
        /// The feature index as written.
        feature: i64,
        /// How many features the model names.
        features: usize,
    },
    /// A threshold, leaf value, coefficient or base score that is NaN (or infinite where only
    /// a finite number makes sense).
    #[error("{0} is not a finite number")]
    NotFinite(String),
    /// Feature names that cannot be inputs: none, empty, repeated, or not as many as the model
    /// says it has.
    #[error("feature names: {0}")]
    FeatureNames(String),
    /// Past one of the documented bounds ([`MAX_TREES`](crate::MAX_TREES),
    /// [`MAX_NODES`](crate::MAX_NODES), [`MAX_INPUTS`](crate::MAX_INPUTS)).
    #[error("{what}: {found} exceeds the limit of {limit}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many there are (at least).
        found: usize,
        /// The limit.
        limit: usize,
    },
}
