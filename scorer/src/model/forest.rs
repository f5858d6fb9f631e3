//! The compact layout every tree ensemble is evaluated in, whatever trainer wrote it: one flat
//! array of split nodes for all trees (24 bytes each), one array of leaf values, and a root per
//! tree. A child is an index into the nodes, or, with the top bit set, into the leaves.
//!
//! Trees are checked and renumbered as they are added ([`Forest::add_tree`]): every child in
//! range, every node reached at most once from the root (so no cycle and no shared child), every
//! split on a known feature, thresholds and leaves numbers. Nodes are laid out in preorder (a
//! split's left subtree follows it), so a child's index is always greater than its parent's:
//! evaluation walks forward and ends within the tree's size, whatever the file said. Nodes no
//! path reaches (XGBoost keeps pruned ones as "deleted") are dropped.
//!
//! How a split decides (which side a value and a missing value go) belongs to the trainer: a
//! [`Rule`] per trainer, chosen once per model so the loop is compiled for it.

use super::error::ModelError;
use super::{MAX_NODES, MAX_TREES};

/// Marks a child reference as a leaf index.
const LEAF: u32 = 1 << 31;

/// Flag: a missing value goes left.
pub(crate) const DEFAULT_LEFT: u32 = 1;
/// Flag (LightGBM missing type `Zero`): zero (and missing) take the default direction.
pub(crate) const MISSING_ZERO: u32 = 2;
/// Flag (LightGBM missing type `NaN`): NaN takes the default direction.
pub(crate) const MISSING_NAN: u32 = 4;
/// Flag: a categorical split; the category set's index is `flags >> CAT_SHIFT`.
pub(crate) const CATEGORICAL: u32 = 8;
/// Where the category set index starts in `flags`.
pub(crate) const CAT_SHIFT: u32 = 8;

/// One split node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Node {
    /// The threshold (unused by categorical splits).
    pub(crate) threshold: f64,
    /// The feature's index in the row.
    pub(crate) feature: u32,
    /// The left child: a node index, or a leaf index with [`LEAF`] set.
    pub(crate) left: u32,
    /// The right child, likewise.
    pub(crate) right: u32,
    /// [`DEFAULT_LEFT`], [`MISSING_ZERO`], [`MISSING_NAN`], [`CATEGORICAL`] and the category
    /// set index above [`CAT_SHIFT`].
    pub(crate) flags: u32,
}

impl Node {
    pub(crate) fn default_left(&self) -> bool {
        self.flags & DEFAULT_LEFT != 0
    }
}

/// A node of a tree as a loader read it, children numbered as in the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RawNode {
    /// A split.
    Split {
        /// The feature index as written.
        feature: i64,
        /// The threshold.
        threshold: f64,
        /// The left child's index in the tree's raw nodes, as written.
        left: i64,
        /// The right child's.
        right: i64,
        /// The flags of [`Node`].
        flags: u32,
    },
    /// A leaf with its value.
    Leaf(f64),
}

/// How a trainer's split sends a value left or right.
pub(crate) trait Rule {
    /// Whether `x` (NaN when missing) goes to the left child of `node`.
    fn left(node: &Node, x: f64, forest: &Forest) -> bool;
}

/// Trees in the compact layout.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct Forest {
    nodes: Vec<Node>,
    leaves: Vec<f64>,
    roots: Vec<u32>,
    /// Category sets: start and length in `cat_words`.
    cat_sets: Vec<(u32, u32)>,
    /// Bitsets of categories (bit `c % 32` of word `c / 32` is category `c`).
    cat_words: Vec<u32>,
    /// How many features a row has.
    features: usize,
}

impl Forest {
    /// An empty forest over rows of `features` values.
    pub(crate) fn new(features: usize) -> Self {
        Self {
            features,
            ..Self::default()
        }
    }

    /// How many trees.
    pub(crate) fn trees(&self) -> usize {
        self.roots.len()
    }

    /// Split nodes and leaves in all trees.
    pub(crate) fn size(&self) -> usize {
        self.nodes.len() + self.leaves.len()
    }

    /// Adds a category set (a bitset), returning the flags a split on it carries.
    pub(crate) fn add_category_set(&mut self, words: &[u32]) -> Result<u32, ModelError> {
        let index = self.cat_sets.len();
        if index >= 1 << (32 - CAT_SHIFT) || self.cat_words.len() + words.len() > MAX_NODES {
            return Err(ModelError::Limit {
                what: "category sets",
                found: index + 1,
                limit: 1 << (32 - CAT_SHIFT),
            });
        }
        // Both fit in u32: bounded just above.
        self.cat_sets
            .push((self.cat_words.len() as u32, words.len() as u32));
        self.cat_words.extend_from_slice(words);
        Ok(CATEGORICAL | ((index as u32) << CAT_SHIFT))
    }

    /// Whether category `code` is in the set a categorical split's flags name (codes past the
    /// set's bits are not).
    pub(crate) fn in_category_set(&self, flags: u32, code: u32) -> bool {
        let set = (flags >> CAT_SHIFT) as usize;
        let Some(&(start, len)) = self.cat_sets.get(set) else {
            return false;
        };
        let word = (code / 32) as usize;
        if word >= len as usize {
            return false;
        }
        self.cat_words
            .get(start as usize + word)
            .is_some_and(|w| (w >> (code % 32)) & 1 == 1)
    }

    /// Checks a tree read from a file (`tree` is its number there, for errors), whose root is
    /// `raw[0]`, and appends it in the compact layout.
    pub(crate) fn add_tree(&mut self, tree: usize, raw: &[RawNode]) -> Result<(), ModelError> {
        if self.roots.len() >= MAX_TREES {
            return Err(ModelError::Limit {
                what: "trees",
                found: self.roots.len() + 1,
                limit: MAX_TREES,
            });
        }
        if raw.is_empty() {
            return Err(ModelError::Length {
                tree,
                field: "nodes",
                found: 0,
                expected: 1,
            });
        }
        if self.size() + raw.len() > MAX_NODES {
            return Err(ModelError::Limit {
                what: "nodes in all trees",
                found: self.size() + raw.len(),
                limit: MAX_NODES,
            });
        }
        let (nodes_before, leaves_before) = (self.nodes.len(), self.leaves.len());
        let result = self.add_checked(tree, raw);
        if result.is_err() {
            self.nodes.truncate(nodes_before);
            self.leaves.truncate(leaves_before);
        }
        result
    }

    fn add_checked(&mut self, tree: usize, raw: &[RawNode]) -> Result<(), ModelError> {
        let mut seen = vec![false; raw.len()];
        // (raw index, where its reference goes: the parent's node index and side).
        let mut stack: Vec<(usize, Option<(usize, bool)>)> = vec![(0, None)];
        let mut root = None;
        while let Some((r, slot)) = stack.pop() {
            if seen[r] {
                return Err(ModelError::Cycle { tree, node: r });
            }
            seen[r] = true;
            let reference = match raw[r] {
                RawNode::Leaf(value) => {
                    if !value.is_finite() {
                        return Err(ModelError::NotFinite(format!(
                            "tree {tree}: the value of leaf node {r}"
                        )));
                    }
                    self.leaves.push(value);
                    // Below 2^31: the node count is bounded by MAX_NODES.
                    LEAF | (self.leaves.len() - 1) as u32
                }
                RawNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    flags,
                } => {
                    let feature = usize::try_from(feature)
                        .ok()
                        .filter(|&f| f < self.features)
                        .ok_or(ModelError::FeatureOutOfRange {
                            tree,
                            node: r,
                            feature,
                            features: self.features,
                        })?;
                    if threshold.is_nan() && flags & CATEGORICAL == 0 {
                        return Err(ModelError::NotFinite(format!(
                            "tree {tree}: the threshold of node {r}"
                        )));
                    }
                    let child = |c: i64| {
                        usize::try_from(c).ok().filter(|&c| c < raw.len()).ok_or(
                            ModelError::ChildOutOfRange {
                                tree,
                                node: r,
                                child: c,
                            },
                        )
                    };
                    let (left, right) = (child(left)?, child(right)?);
                    self.nodes.push(Node {
                        threshold,
                        // Below MAX_INPUTS, checked by the loaders.
                        feature: feature as u32,
                        left: 0,
                        right: 0,
                        flags,
                    });
                    let index = self.nodes.len() - 1;
                    // Right pushed first so the left subtree is laid out right after the split.
                    stack.push((right, Some((index, false))));
                    stack.push((left, Some((index, true))));
                    index as u32
                }
            };
            match slot {
                None => root = Some(reference),
                Some((parent, true)) => self.nodes[parent].left = reference,
                Some((parent, false)) => self.nodes[parent].right = reference,
            }
        }
        // The stack started with the root, so it was given a reference.
        if let Some(root) = root {
            self.roots.push(root);
        }
        Ok(())
    }

    /// Calls `f` with each tree's leaf value for `row`, in tree order. Values past the end of
    /// `row` are missing.
    #[inline]
    pub(crate) fn for_each_leaf<R: Rule>(&self, row: &[f64], mut f: impl FnMut(f64)) {
        for &root in &self.roots {
            let mut r = root;
            // Children lie after their parent (preorder, checked in `add_tree`): this ends.
            while r & LEAF == 0 {
                let node = &self.nodes[r as usize];
                let x = row.get(node.feature as usize).copied().unwrap_or(f64::NAN);
                r = if R::left(node, x, self) {
                    node.left
                } else {
                    node.right
                };
            }
            f(self.leaves[(r & !LEAF) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left when `x < threshold`, missing goes the default way.
    struct Less;
    impl Rule for Less {
        fn left(node: &Node, x: f64, _: &Forest) -> bool {
            if x.is_nan() {
                node.default_left()
            } else {
                x < node.threshold
            }
        }
    }

    fn split(feature: i64, threshold: f64, left: i64, right: i64) -> RawNode {
        RawNode::Split {
            feature,
            threshold,
            left,
            right,
            flags: 0,
        }
    }

    fn leaves(forest: &Forest, row: &[f64]) -> Vec<f64> {
        let mut out = Vec::new();
        forest.for_each_leaf::<Less>(row, |v| out.push(v));
        out
    }

    #[test]
    fn trees_are_laid_out_in_preorder_and_evaluate() {
        let mut f = Forest::new(2);
        // Children listed out of order; node 4 is unreachable (a deleted node).
        let raw = [
            split(0, 1.0, 2, 1),
            RawNode::Leaf(3.0),
            split(1, 5.0, 3, 5),
            RawNode::Leaf(1.0),
            RawNode::Leaf(99.0),
            RawNode::Leaf(2.0),
        ];
        f.add_tree(0, &raw).unwrap();
        f.add_tree(1, &[RawNode::Leaf(0.5)]).unwrap();
        assert_eq!(f.trees(), 2);
        assert_eq!(f.size(), 6, "the unreachable node is dropped");
        assert_eq!(leaves(&f, &[0.0, 0.0]), [1.0, 0.5]);
        assert_eq!(leaves(&f, &[0.0, 7.0]), [2.0, 0.5]);
        assert_eq!(leaves(&f, &[1.0, 0.0]), [3.0, 0.5]);
        // Missing (NaN, or past the row) goes right by default here.
        assert_eq!(leaves(&f, &[f64::NAN]), [3.0, 0.5]);
        assert_eq!(leaves(&f, &[]), [3.0, 0.5]);
        for (i, n) in f.nodes.iter().enumerate() {
            for c in [n.left, n.right] {
                assert!(c & LEAF != 0 || c as usize > i, "children after parents");
            }
        }
    }

    #[test]
    fn bad_structure_is_refused_and_leaves_the_forest_as_it_was() {
        let mut f = Forest::new(1);
        let cases: [(&[RawNode], &str); 6] = [
            (
                &[split(0, 1.0, 1, 7), RawNode::Leaf(1.0)],
                "outside the tree",
            ),
            (
                &[split(0, 1.0, -1, 1), RawNode::Leaf(1.0)],
                "outside the tree",
            ),
            (&[split(0, 1.0, 0, 1), RawNode::Leaf(1.0)], "reached twice"),
            (&[split(0, 1.0, 1, 1), RawNode::Leaf(1.0)], "reached twice"),
            (
                &[split(3, 1.0, 1, 2), RawNode::Leaf(1.0), RawNode::Leaf(2.0)],
                "feature 3",
            ),
            (
                &[
                    split(0, f64::NAN, 1, 2),
                    RawNode::Leaf(1.0),
                    RawNode::Leaf(2.0),
                ],
                "threshold",
            ),
        ];
        for (raw, expected) in cases {
            let e = f.add_tree(0, raw).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
            assert_eq!(f.size(), 0);
            assert_eq!(f.trees(), 0);
        }
        assert!(f.add_tree(0, &[]).is_err());
        assert!(f.add_tree(0, &[RawNode::Leaf(f64::INFINITY)]).is_err());
    }

    #[test]
    fn a_cycle_deep_in_a_tree_ends() {
        // A chain of splits, each with a leaf of its own on the right, whose last split points
        // back at the first.
        let n: i64 = 10_000;
        let mut raw: Vec<RawNode> = (0..n).map(|i| split(0, 0.0, i + 1, n + i)).collect();
        raw.extend((0..n).map(|i| RawNode::Leaf(i as f64)));
        raw[n as usize - 1] = split(0, 0.0, 0, 2 * n - 1);
        let e = Forest::new(1).add_tree(0, &raw).unwrap_err();
        assert_eq!(e, ModelError::Cycle { tree: 0, node: 0 });
    }

    #[test]
    fn category_sets() {
        let mut f = Forest::new(1);
        let flags = f.add_category_set(&[0b1010, 1]).unwrap();
        assert!(f.in_category_set(flags, 1));
        assert!(!f.in_category_set(flags, 2));
        assert!(f.in_category_set(flags, 3));
        assert!(f.in_category_set(flags, 32));
        assert!(!f.in_category_set(flags, 64));
        assert!(!f.in_category_set(flags, u32::MAX));
    }
}
