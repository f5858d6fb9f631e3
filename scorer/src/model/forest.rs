//! The compact layout every tree ensemble is evaluated in, whatever trainer wrote it: one flat
//! array of nodes for all trees (24 bytes each) and a root per tree. A split holds its feature,
//! threshold, flags and its two children's indices; a leaf holds its value and points at itself.
//!
//! Trees are checked and renumbered as they are added ([`Forest::add_tree`]): every child in
//! range, every node reached at most once from the root (so no cycle and no shared child), every
//! split on a known feature, thresholds and leaves numbers. Nodes are laid out in preorder (a
//! split's left subtree follows it). Nodes no path reaches (XGBoost keeps pruned ones as
//! "deleted") are dropped.
//!
//! Evaluation walks [`GROUP`] trees at once, in lockstep, for as many steps as the deepest of
//! them: a walker at a leaf stays there (the leaf points at itself), so a step has no branch
//! to mispredict and the walks of the group overlap in the CPU instead of waiting on one
//! another. The number of steps is fixed when the trees are loaded, so a walk always ends.
//! Leaves are then read in tree order, so sums are the trainer's (XGBoost's `f32` sum depends
//! on the order).
//!
//! How a split decides (which side a value and a missing value go) belongs to the trainer: a
//! [`Rule`] per trainer, chosen once per model so the loop is compiled for it.
//!
//! Contributions (Saabas's path attribution, XGBoost's `approx_contribs`): a node's value is the
//! expected output of its subtree, its children's values weighed by their covers (the trainer's
//! measure of the rows that reached them, [`Rule::expected`]); walking a row's path, each split's
//! feature is credited with the change of value from the split to the child taken, so a tree's
//! leaf is its root's value plus the credits on its path. The values are worked out when a tree
//! is added and kept as a separate array parallel to the nodes, of each node's change from its
//! parent (a root's: its value), which only [`Forest::add_contributions`] reads. Where a file
//! gives no covers, or they give no finite value (a cover of 0), a split's children count equally:
//! the credits then still add up to the leaf.

use super::error::ModelError;
use super::{MAX_NODES, MAX_TREES};

/// Trees walked together.
pub(crate) const GROUP: usize = 8;

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

/// One node: a split, or a leaf (whose children are itself).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Node {
    /// A split's threshold (unused by categorical splits); a leaf's value.
    pub(crate) threshold: f64,
    /// The feature's index in the row (0 for a leaf: read, never used).
    pub(crate) feature: u32,
    /// The left and right children's indices.
    pub(crate) children: [u32; 2],
    /// [`DEFAULT_LEFT`], [`MISSING_ZERO`], [`MISSING_NAN`], [`CATEGORICAL`] and the category
    /// set index above [`CAT_SHIFT`]; 0 for a leaf.
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

/// A node waiting to be laid out while a tree is added.
struct Pending {
    /// Its index in the tree's raw nodes.
    raw: usize,
    /// Splits above it.
    depth: u32,
    /// Where its index goes: the parent's node index and side (0 left, 1 right).
    parent: Option<(usize, usize)>,
}

/// How a trainer's split sends a value left or right.
pub(crate) trait Rule {
    /// Whether `x` (NaN when missing) goes to the left child of `node`. Called on leaves too
    /// (where either answer stays put): it must not panic on them.
    fn left(node: &Node, x: f64, forest: &Forest) -> bool;

    /// A split's value (the expected output of its subtree) from its children's values and
    /// covers and its own cover, in the trainer's arithmetic: by default in `f64`,
    /// `(left·left_cover + right·right_cover) / cover`.
    fn expected(left: (f64, f64), right: (f64, f64), cover: f64) -> f64 {
        (left.0 * left.1 + right.0 * right.1) / cover
    }
}

/// Trees in the compact layout.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct Forest {
    nodes: Vec<Node>,
    /// Parallel to `nodes`, read by contributions only: a node's value less its parent's; a
    /// root's value.
    deltas: Vec<f64>,
    /// The sum of the roots' values, in tree order.
    expected: f64,
    roots: Vec<u32>,
    /// For each group of [`GROUP`] trees, the depth of the deepest (splits on its longest path).
    group_depths: Vec<u32>,
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
        self.nodes.len()
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

    /// The sum of the trees' expected outputs (their roots' values), in tree order.
    pub(crate) fn expected(&self) -> f64 {
        self.expected
    }

    /// Checks a tree read from a file (`tree` is its number there, for errors), whose root is
    /// `raw[0]`, and appends it in the compact layout. `covers` are the raw nodes' covers (one
    /// each), or empty when the file has none; with `R::expected` they give the nodes' values.
    pub(crate) fn add_tree<R: Rule>(
        &mut self,
        tree: usize,
        raw: &[RawNode],
        covers: &[f64],
    ) -> Result<(), ModelError> {
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
        if !covers.is_empty() && covers.len() != raw.len() {
            return Err(ModelError::Length {
                tree,
                field: "covers",
                found: covers.len(),
                expected: raw.len(),
            });
        }
        if self.size() + raw.len() > MAX_NODES {
            return Err(ModelError::Limit {
                what: "nodes in all trees",
                found: self.size() + raw.len(),
                limit: MAX_NODES,
            });
        }
        let before = self.nodes.len();
        let mut order = Vec::with_capacity(raw.len());
        match self.add_checked(tree, raw, &mut order) {
            Ok(depth) => {
                self.add_deltas::<R>(before, &order, covers);
                let root = before as u32;
                if self.roots.len().is_multiple_of(GROUP) {
                    self.group_depths.push(depth);
                } else if let Some(d) = self.group_depths.last_mut() {
                    *d = (*d).max(depth);
                }
                self.roots.push(root);
                Ok(())
            }
            Err(e) => {
                self.nodes.truncate(before);
                Err(e)
            }
        }
    }

    /// Appends the tree's reachable nodes in preorder (its root first) and returns its depth;
    /// `order` gets each appended node's index in `raw`.
    fn add_checked(
        &mut self,
        tree: usize,
        raw: &[RawNode],
        order: &mut Vec<usize>,
    ) -> Result<u32, ModelError> {
        let mut seen = vec![false; raw.len()];
        let mut stack = vec![Pending {
            raw: 0,
            depth: 0,
            parent: None,
        }];
        let mut depth = 0;
        while let Some(Pending {
            raw: r,
            depth: d,
            parent: slot,
        }) = stack.pop()
        {
            if seen[r] {
                return Err(ModelError::Cycle { tree, node: r });
            }
            seen[r] = true;
            order.push(r);
            // Below 2^32: the node count is bounded by MAX_NODES.
            let index = self.nodes.len();
            match raw[r] {
                RawNode::Leaf(value) => {
                    if !value.is_finite() {
                        return Err(ModelError::NotFinite(format!(
                            "tree {tree}: the value of leaf node {r}"
                        )));
                    }
                    depth = depth.max(d);
                    self.nodes.push(Node {
                        threshold: value,
                        feature: 0,
                        children: [index as u32; 2],
                        flags: 0,
                    });
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
                        children: [0; 2],
                        flags,
                    });
                    // Right pushed first so the left subtree is laid out right after the split.
                    stack.push(Pending {
                        raw: right,
                        depth: d + 1,
                        parent: Some((index, 1)),
                    });
                    stack.push(Pending {
                        raw: left,
                        depth: d + 1,
                        parent: Some((index, 0)),
                    });
                }
            }
            if let Some((parent, side)) = slot {
                self.nodes[parent].children[side] = index as u32;
            }
        }
        Ok(depth)
    }

    /// Works out the values of the tree just laid out from `before` (`order`: each node's raw
    /// index, for its cover) and appends their deltas.
    fn add_deltas<R: Rule>(&mut self, before: usize, order: &[usize], covers: &[f64]) {
        let nodes = &self.nodes[before..];
        let local = |c: u32| c as usize - before;
        let cover = |i: usize| covers.get(order[i]).copied().unwrap_or(f64::NAN);
        // Preorder: children come after their parent, so a backward pass meets them first.
        let mut value = vec![0.0; nodes.len()];
        for (i, node) in nodes.iter().enumerate().rev() {
            let [l, r] = node.children.map(local);
            value[i] = if l == i {
                node.threshold
            } else {
                let v = R::expected((value[l], cover(l)), (value[r], cover(r)), cover(i));
                if v.is_finite() {
                    v
                } else {
                    value[l] / 2.0 + value[r] / 2.0
                }
            };
        }
        let mut deltas = vec![0.0; nodes.len()];
        deltas[0] = value[0];
        for (i, node) in nodes.iter().enumerate() {
            let [l, r] = node.children.map(local);
            if l != i {
                deltas[l] = value[l] - value[i];
                deltas[r] = value[r] - value[i];
            }
        }
        self.expected += value[0];
        self.deltas.extend_from_slice(&deltas);
    }

    /// Adds each split's credit on `row`'s path through every tree to its feature's entry in
    /// `out` (one per feature): `expected() + Σ out` is then the sum of the trees' leaves. Values
    /// past the end of `row` are missing.
    #[inline]
    pub(crate) fn add_contributions<R: Rule>(&self, row: &[f64], out: &mut [f64]) {
        // Walkers past the last group's trees wait at a leaf (the last node in preorder is one)
        // and credit nothing.
        let parked = self.nodes.len().saturating_sub(1) as u32;
        for (group, &depth) in self.roots.chunks(GROUP).zip(&self.group_depths) {
            let mut at = [parked; GROUP];
            at[..group.len()].copy_from_slice(group);
            for _ in 0..depth {
                let mut moved = false;
                for a in &mut at {
                    let node = &self.nodes[*a as usize];
                    let f = node.feature as usize;
                    let x = row.get(f).copied().unwrap_or(f64::NAN);
                    let next = node.children[usize::from(!R::left(node, x, self))];
                    let step = next != *a;
                    // A leaf's feature is 0 and it credits 0. In range: `out` has one entry
                    // per feature, and a group walks only if a tree of it splits a feature.
                    out[f] += if step {
                        self.deltas[next as usize]
                    } else {
                        0.0
                    };
                    moved |= step;
                    *a = next;
                }
                if !moved {
                    break;
                }
            }
        }
    }

    /// Calls `f` with each tree's leaf value for `row`, in tree order. Values past the end of
    /// `row` are missing.
    #[inline]
    pub(crate) fn for_each_leaf<R: Rule>(&self, row: &[f64], mut f: impl FnMut(f64)) {
        for (group, &depth) in self.roots.chunks(GROUP).zip(&self.group_depths) {
            // Walkers past the group's trees repeat its first tree, and are not read.
            let mut at = [group[0]; GROUP];
            at[..group.len()].copy_from_slice(group);
            for _ in 0..depth {
                let mut moved = false;
                for a in &mut at {
                    let node = &self.nodes[*a as usize];
                    let x = row.get(node.feature as usize).copied().unwrap_or(f64::NAN);
                    let next = node.children[usize::from(!R::left(node, x, self))];
                    moved |= next != *a;
                    *a = next;
                }
                // All at their leaves before the deepest path's end (uneven trees).
                if !moved {
                    break;
                }
            }
            for &a in &at[..group.len()] {
                f(self.nodes[a as usize].threshold);
            }
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
        f.add_tree::<Less>(0, &raw, &[]).unwrap();
        f.add_tree::<Less>(1, &[RawNode::Leaf(0.5)], &[]).unwrap();
        assert_eq!(f.trees(), 2);
        assert_eq!(f.size(), 6, "the unreachable node is dropped");
        assert_eq!(f.group_depths, [2]);
        assert_eq!(leaves(&f, &[0.0, 0.0]), [1.0, 0.5]);
        assert_eq!(leaves(&f, &[0.0, 7.0]), [2.0, 0.5]);
        assert_eq!(leaves(&f, &[1.0, 0.0]), [3.0, 0.5]);
        // Missing (NaN, or past the row) goes right by default here.
        assert_eq!(leaves(&f, &[f64::NAN]), [3.0, 0.5]);
        assert_eq!(leaves(&f, &[]), [3.0, 0.5]);
        for (i, n) in f.nodes.iter().enumerate() {
            for c in n.children {
                assert!(c as usize >= i, "children after parents; leaves at home");
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
            let e = f.add_tree::<Less>(0, raw, &[]).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
            assert_eq!(f.size(), 0);
            assert_eq!(f.trees(), 0);
        }
        assert!(f.add_tree::<Less>(0, &[], &[]).is_err());
        assert!(
            f.add_tree::<Less>(0, &[RawNode::Leaf(f64::INFINITY)], &[])
                .is_err()
        );
    }

    #[test]
    fn a_cycle_deep_in_a_tree_ends() {
        // A chain of splits, each with a leaf of its own on the right, whose last split points
        // back at the first.
        let n: i64 = 10_000;
        let mut raw: Vec<RawNode> = (0..n).map(|i| split(0, 0.0, i + 1, n + i)).collect();
        raw.extend((0..n).map(|i| RawNode::Leaf(i as f64)));
        raw[n as usize - 1] = split(0, 0.0, 0, 2 * n - 1);
        let e = Forest::new(1).add_tree::<Less>(0, &raw, &[]).unwrap_err();
        assert_eq!(e, ModelError::Cycle { tree: 0, node: 0 });
    }

    /// Random trees of uneven depths, a number that is not a multiple of [`GROUP`]: the grouped
    /// walk gives each tree's leaf, in order, as a plain walk of the raw nodes does.
    #[test]
    fn grouped_walks_match_a_plain_walk() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut forest = Forest::new(4);
        let mut raws = Vec::new();
        for t in 0..(3 * GROUP + 5) {
            // Grow a tree by splitting random leaves.
            let mut raw = vec![RawNode::Leaf(t as f64)];
            for _ in 0..next() % 20 {
                let leaves: Vec<usize> = (0..raw.len())
                    .filter(|&i| matches!(raw[i], RawNode::Leaf(_)))
                    .collect();
                let at = leaves[next() as usize % leaves.len()];
                let n = raw.len() as i64;
                raw.push(RawNode::Leaf(next() as f64));
                raw.push(RawNode::Leaf(next() as f64));
                raw[at] = RawNode::Split {
                    feature: (next() % 4) as i64,
                    threshold: (next() % 100) as f64 / 100.0,
                    left: n,
                    right: n + 1,
                    flags: (next() % 2) as u32,
                };
            }
            forest.add_tree::<Less>(t, &raw, &[]).unwrap();
            raws.push(raw);
        }
        for _ in 0..200 {
            let row: Vec<f64> = (0..4)
                .map(|_| {
                    if next() % 5 == 0 {
                        f64::NAN
                    } else {
                        (next() % 100) as f64 / 100.0
                    }
                })
                .collect();
            let plain: Vec<f64> = raws
                .iter()
                .map(|raw| {
                    let mut i = 0;
                    loop {
                        match raw[i] {
                            RawNode::Leaf(v) => break v,
                            RawNode::Split {
                                feature,
                                threshold,
                                left,
                                right,
                                flags,
                            } => {
                                let node = Node {
                                    threshold,
                                    feature: feature as u32,
                                    children: [0; 2],
                                    flags,
                                };
                                let x = row[feature as usize];
                                i = if Less::left(&node, x, &forest) {
                                    left
                                } else {
                                    right
                                } as usize;
                            }
                        }
                    }
                })
                .collect();
            assert_eq!(leaves(&forest, &row), plain);
        }
    }

    fn contributions(forest: &Forest, row: &[f64]) -> (f64, Vec<f64>) {
        let mut out = vec![0.0; forest.features];
        forest.add_contributions::<Less>(row, &mut out);
        (forest.expected(), out)
    }

    /// Node 0 splits feature 0 at 1 (cover 10): left a leaf of 1 (cover 4), right node 2, a
    /// split of feature 1 at 5 (cover 6) into leaves of 2 (cover 2) and 5 (cover 4).
    fn small(covers: &[f64]) -> Forest {
        let mut f = Forest::new(2);
        let raw = [
            split(0, 1.0, 1, 2),
            RawNode::Leaf(1.0),
            split(1, 5.0, 3, 4),
            RawNode::Leaf(2.0),
            RawNode::Leaf(5.0),
        ];
        f.add_tree::<Less>(0, &raw, covers).unwrap();
        f
    }

    #[test]
    fn contributions_credit_the_change_of_expected_value_along_the_path() {
        let f = small(&[10.0, 4.0, 6.0, 2.0, 4.0]);
        // Node 2's value: (2·2 + 5·4) / 6 = 4; the root's: (1·4 + 4·6) / 10 = 2.8.
        let (bias, out) = contributions(&f, &[2.0, 7.0]);
        assert_eq!(bias, 2.8);
        assert_eq!(out, [4.0 - 2.8, 5.0 - 4.0]);
        let (_, out) = contributions(&f, &[2.0, 0.0]);
        assert_eq!(out, [4.0 - 2.8, 2.0 - 4.0]);
        let (_, out) = contributions(&f, &[0.0, 7.0]);
        assert_eq!(out, [1.0 - 2.8, 0.0], "feature 1 is not on the path");
        // Without covers, or with a cover of 0, children count equally.
        for covers in [&[][..], &[0.0, 4.0, 0.0, 2.0, 4.0]] {
            let f = small(covers);
            let (bias, out) = contributions(&f, &[2.0, 7.0]);
            assert_eq!((bias, out), (2.25, vec![3.5 - 2.25, 1.5]), "{covers:?}");
        }
        let e = Forest::new(2)
            .add_tree::<Less>(0, &[RawNode::Leaf(1.0)], &[1.0, 2.0])
            .unwrap_err();
        assert!(e.to_string().contains("covers"), "{e}");
    }

    /// Random trees of uneven depths, a number that is not a multiple of [`GROUP`], with random
    /// covers: the grouped walk credits what a plain walk of each tree credits, and the bias and
    /// credits add up to the leaves.
    #[test]
    fn grouped_contributions_match_a_plain_walk() {
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut forest = Forest::new(4);
        let mut trees = Vec::new();
        for t in 0..(2 * GROUP + 3) {
            let mut raw = vec![RawNode::Leaf(t as f64)];
            for _ in 0..next() % 12 {
                let leaves: Vec<usize> = (0..raw.len())
                    .filter(|&i| matches!(raw[i], RawNode::Leaf(_)))
                    .collect();
                let at = leaves[next() as usize % leaves.len()];
                let n = raw.len() as i64;
                raw.push(RawNode::Leaf(next() as f64 / 1e9));
                raw.push(RawNode::Leaf(next() as f64 / 1e9));
                raw[at] = split((next() % 4) as i64, (next() % 100) as f64 / 100.0, n, n + 1);
            }
            let covers: Vec<f64> = raw.iter().map(|_| (1 + next() % 50) as f64).collect();
            forest.add_tree::<Less>(t, &raw, &covers).unwrap();
            trees.push((raw, covers));
        }
        // A node's value by recursion over the raw tree.
        fn value(raw: &[RawNode], covers: &[f64], i: usize) -> f64 {
            match raw[i] {
                RawNode::Leaf(v) => v,
                RawNode::Split { left, right, .. } => {
                    let (l, r) = (left as usize, right as usize);
                    (value(raw, covers, l) * covers[l] + value(raw, covers, r) * covers[r])
                        / covers[i]
                }
            }
        }
        for _ in 0..200 {
            let row: Vec<f64> = (0..4)
                .map(|_| match next() % 5 {
                    0 => f64::NAN,
                    _ => (next() % 100) as f64 / 100.0,
                })
                .collect();
            let (mut bias, mut credits, mut leaves) = (0.0, vec![0.0; 4], 0.0);
            for (raw, covers) in &trees {
                let mut i = 0;
                bias += value(raw, covers, 0);
                while let RawNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    ..
                } = raw[i]
                {
                    let x = row[feature as usize];
                    let next = if x < threshold { left } else { right } as usize;
                    credits[feature as usize] += value(raw, covers, next) - value(raw, covers, i);
                    i = next;
                }
                leaves += value(raw, covers, i);
            }
            let (got_bias, got) = contributions(&forest, &row);
            assert!((got_bias - bias).abs() < 1e-9, "{got_bias} {bias}");
            for (a, b) in got.iter().zip(&credits) {
                assert!((a - b).abs() < 1e-9, "{got:?} {credits:?}");
            }
            let sum = got_bias + got.iter().sum::<f64>();
            assert!((sum - leaves).abs() < 1e-9, "{sum} {leaves}");
        }
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
