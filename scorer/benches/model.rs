//! Model evaluation per row: `cargo bench -p pulse-scorer --bench model`.
//!
//! The issue's model: 300 trees of depth 6 over 64 features, built here with that structure
//! (every tree full: 63 splits and 64 leaves, features and thresholds drawn at random), written
//! as an XGBoost JSON file and as a LightGBM text file and loaded through Pulse's own loaders.
//! Rows are 100,000 random rows over [0, 1) with 5 % of values missing, so paths vary from row
//! to row as they would across readers.
//!
//! - `model/xgboost_300x6_64f`, `model/lightgbm_300x6_64f`: one row, per row;
//! - `model/propensity_xgb`, `model/propensity_lgb`, `model/propensity_logistic`: the trained
//!   example models of `examples/train/` (200 trees of depth 4; 200 trees of 15 leaves; 28
//!   coefficients) on its 440 conformance rows of simulated readers' features, in turn;
//! - `contributions/xgboost_300x6_64f`, `contributions/propensity_xgb`: `Model::contributions`
//!   (the margin split by input, into a buffer reused from row to row) on the same rows;
//!   `contributions/top3_xgboost_300x6_64f`: `Model::top_contributions(row, 3)`, the
//!   explanation a decision carries (with its allocations). The generated model has no covers,
//!   so its children count equally: the work per row is the same;
//! - then, outside criterion, p50/p99/p99.9 of one `predict` call, and of one `contributions`
//!   call for the two XGBoost models, timed one call at a time over the 100,000 rows (the
//!   target: p99 at most 10 µs for `predict`; a decision's whole budget is 20 µs).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pulse_scorer::{Model, ModelFormat};

const TREES: usize = 300;
const DEPTH: u32 = 6;
const FEATURES: usize = 64;
const ROWS: usize = 100_000;

/// SplitMix64, for reproducible models and rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A full tree of depth [`DEPTH`] in breadth-first numbering: node i's children are 2i+1 and
/// 2i+2; the last 2^DEPTH nodes are leaves. (feature, threshold, default_left) per split, a
/// value per leaf.
struct FullTree {
    splits: Vec<(usize, f32, bool)>,
    leaves: Vec<f32>,
}

fn trees(rng: &mut Rng) -> Vec<FullTree> {
    let splits = (1 << DEPTH) - 1;
    (0..TREES)
        .map(|_| FullTree {
            splits: (0..splits)
                .map(|_| {
                    let f = (rng.next() % FEATURES as u64) as usize;
                    (f, rng.unit() as f32, rng.next().is_multiple_of(2))
                })
                .collect(),
            leaves: (0..=splits)
                .map(|_| (rng.unit() as f32 - 0.5) * 0.1)
                .collect(),
        })
        .collect()
}

fn names() -> Vec<String> {
    (0..FEATURES).map(|i| format!("feature_{i}")).collect()
}

/// The trees as an XGBoost `binary:logistic` JSON model.
fn xgboost_json(trees: &[FullTree]) -> String {
    let mut out = String::new();
    let names: Vec<String> = names().iter().map(|n| format!("{n:?}")).collect();
    let _ = write!(
        out,
        r#"{{"learner": {{"feature_names": [{}], "feature_types": [],
        "learner_model_param": {{"base_score": "[5E-1]", "num_feature": "{FEATURES}", "num_class": "0", "num_target": "1"}},
        "objective": {{"name": "binary:logistic"}},
        "gradient_booster": {{"name": "gbtree", "model": {{
        "gbtree_model_param": {{"num_trees": "{TREES}", "num_parallel_tree": "1"}},
        "tree_info": [{}], "trees": ["#,
        names.join(","),
        vec!["0"; TREES].join(",")
    );
    for (t, tree) in trees.iter().enumerate() {
        let n = tree.splits.len() + tree.leaves.len();
        let s = tree.splits.len();
        let join = |f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(",");
        let _ = write!(
            out,
            r#"{}{{"tree_param": {{"num_nodes": "{n}", "num_feature": "{FEATURES}", "size_leaf_vector": "1"}},
            "left_children": [{}], "right_children": [{}], "split_indices": [{}],
            "split_conditions": [{}], "default_left": [{}], "split_type": [{}]}}"#,
            if t == 0 { "" } else { "," },
            join(&|i| if i < s {
                (2 * i + 1).to_string()
            } else {
                "-1".into()
            }),
            join(&|i| if i < s {
                (2 * i + 2).to_string()
            } else {
                "-1".into()
            }),
            join(&|i| if i < s {
                tree.splits[i].0.to_string()
            } else {
                "0".into()
            }),
            join(&|i| if i < s {
                tree.splits[i].1.to_string()
            } else {
                tree.leaves[i - s].to_string()
            }),
            join(&|i| if i < s && tree.splits[i].2 {
                "1".into()
            } else {
                "0".into()
            }),
            join(&|_| "0".into()),
        );
    }
    out.push_str("]}}}}");
    out
}

/// The same trees as a LightGBM `binary` text model (missing type NaN, so missing values take
/// the default direction as in XGBoost).
fn lightgbm_text(trees: &[FullTree]) -> String {
    let mut out = format!(
        "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n\
         max_feature_idx={}\nobjective=binary sigmoid:1\nfeature_names={}\nfeature_infos={}\n\n",
        FEATURES - 1,
        names().join(" "),
        vec!["[0:1]"; FEATURES].join(" ")
    );
    for (t, tree) in trees.iter().enumerate() {
        let s = tree.splits.len();
        // Breadth-first children; a child index >= s is leaf (child - s), written as !leaf.
        let child = |c: usize| {
            if c < s {
                c.to_string()
            } else {
                (!((c - s) as i64)).to_string()
            }
        };
        let list =
            |f: &dyn Fn(usize) -> String, n: usize| (0..n).map(f).collect::<Vec<_>>().join(" ");
        let _ = write!(
            out,
            "Tree={t}\nnum_leaves={}\nnum_cat=0\nsplit_feature={}\nthreshold={}\ndecision_type={}\n\
             left_child={}\nright_child={}\nleaf_value={}\nis_linear=0\nshrinkage=1\n\n\n",
            tree.leaves.len(),
            list(&|i| tree.splits[i].0.to_string(), s),
            list(&|i| f64::from(tree.splits[i].1).to_string(), s),
            list(
                &|i| if tree.splits[i].2 {
                    "10".into()
                } else {
                    "8".into()
                },
                s
            ),
            list(&|i| child(2 * i + 1), s),
            list(&|i| child(2 * i + 2), s),
            list(
                &|i| f64::from(tree.leaves[i]).to_string(),
                tree.leaves.len()
            ),
        );
    }
    out.push_str("end of trees\n");
    out
}

fn rows(rng: &mut Rng, features: usize) -> Vec<Vec<f64>> {
    (0..ROWS)
        .map(|_| {
            (0..features)
                .map(|_| {
                    if rng.next().is_multiple_of(20) {
                        f64::NAN
                    } else {
                        rng.unit()
                    }
                })
                .collect()
        })
        .collect()
}

fn trained(name: &str) -> Model {
    Model::read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/train")
            .join(name),
    )
    .expect("a trained example model")
}

/// The held-out rows of `examples/train/` in the model's input order, repeated to [`ROWS`]:
/// real readers' features, whose paths through trained trees are as varied as real traffic's.
fn holdout(model: &Model) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/train/holdout.csv"),
    )
    .expect("holdout.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let columns: Vec<usize> = model
        .feature_names()
        .iter()
        .map(|n| header.iter().position(|h| h == n).expect("a column"))
        .collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            let values: Vec<f64> = l
                .split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            columns.iter().map(|&c| values[c]).collect()
        })
        .collect();
    rows.iter().cycle().take(ROWS).cloned().collect()
}

/// The models and the rows they read.
fn models() -> Vec<(&'static str, Model, Vec<Vec<f64>>)> {
    let mut rng = Rng(42);
    let trees = trees(&mut rng);
    let wide = rows(&mut rng, FEATURES);
    let xgb = Model::parse(ModelFormat::XgboostJson, &xgboost_json(&trees)).expect("loads");
    let lgb = Model::parse(ModelFormat::LightgbmText, &lightgbm_text(&trees)).expect("loads");
    assert_eq!((xgb.trees(), lgb.trees()), (TREES, TREES));
    // The two files hold the same trees: scores agree (up to XGBoost's f32 sums).
    for row in &wide[..1_000] {
        let (a, b) = (xgb.predict(row), lgb.predict(row));
        assert!((a - b).abs() < 1e-5, "{a} {b}");
    }
    let mut out = vec![
        ("xgboost_300x6_64f", xgb, wide.clone()),
        ("lightgbm_300x6_64f", lgb, wide),
    ];
    for (name, file) in [
        ("propensity_xgb", "propensity.xgb.json"),
        ("propensity_lgb", "propensity.lgb.txt"),
        ("propensity_logistic", "propensity.logistic.toml"),
    ] {
        let model = trained(file);
        let rows = holdout(&model);
        out.push((name, model, rows));
    }
    out
}

fn predict(c: &mut Criterion) {
    let models = models();
    let mut group = c.benchmark_group("model");
    group.measurement_time(Duration::from_secs(5));
    for (name, model, rows) in &models {
        let mut i = 0;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) % rows.len();
                black_box(model.predict(black_box(&rows[i])))
            })
        });
    }
    group.finish();

    let explained: Vec<_> = models
        .iter()
        .filter(|(name, ..)| ["xgboost_300x6_64f", "propensity_xgb"].contains(name))
        .collect();
    let mut group = c.benchmark_group("contributions");
    group.measurement_time(Duration::from_secs(5));
    let mut out = Vec::new();
    for (name, model, rows) in &explained {
        let mut i = 0;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 1) % rows.len();
                black_box(model.contributions(black_box(&rows[i]), &mut out))
            })
        });
    }
    let (_, model, rows) = explained[0];
    let mut i = 0;
    group.bench_function("top3_xgboost_300x6_64f", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            black_box(model.top_contributions(black_box(&rows[i]), 3))
        })
    });
    group.finish();

    for (name, model, rows) in &models {
        latency("predict", name, rows, |row| model.predict(row));
    }
    for (name, model, rows) in explained {
        latency("contributions", name, rows, |row| {
            model.contributions(row, &mut out)
        });
    }
}

/// p50/p99/p99.9 of one `call`, timed one call at a time over `rows`.
fn latency(what: &str, name: &str, rows: &[Vec<f64>], mut call: impl FnMut(&[f64]) -> f64) {
    let mut ns: Vec<u64> = Vec::with_capacity(rows.len());
    for row in rows {
        let started = Instant::now();
        black_box(call(black_box(row)));
        ns.push(started.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)] as f64 / 1000.0;
    println!(
        "{what} latency, {name}, {} rows: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.1} µs",
        ns.len(),
        q(0.50),
        q(0.99),
        q(0.999),
        q(1.0),
    );
}

criterion_group!(benches, predict);
criterion_main!(benches);
