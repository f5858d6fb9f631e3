//! Malformed model files give errors, never panics, hangs or unbounded memory: property tests
//! that damage small real models (the first trees of the committed ones) byte by byte and token
//! by token, and bounds that refuse a model of a million trees.

use std::path::PathBuf;

use proptest::prelude::*;
use pulse_scorer::{MAX_TREES, Model, ModelError, ModelFormat};

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/train")
        .join(name);
    std::fs::read_to_string(path).expect("a committed model")
}

/// The XGBoost model cut to its first three trees.
fn small_xgboost() -> String {
    let mut v: serde_json::Value = serde_json::from_str(&read("propensity.xgb.json")).unwrap();
    let model = &mut v["learner"]["gradient_booster"]["model"];
    model["trees"].as_array_mut().unwrap().truncate(3);
    model["tree_info"].as_array_mut().unwrap().truncate(3);
    model["iteration_indptr"] = serde_json::json!([0, 1, 2, 3]);
    model["gbtree_model_param"]["num_trees"] = "3".into();
    v.to_string()
}

/// A LightGBM model cut to its first three trees.
fn small_lightgbm(name: &str) -> String {
    let text = read(name);
    let start = text.find("Tree=3\n").unwrap();
    let end = text.find("end of trees").unwrap();
    let mut out = format!("{}{}", &text[..start], &text[end..]);
    // tree_sizes would no longer match; LightGBM reads without it, and so does Pulse.
    if let Some(i) = out.find("tree_sizes=") {
        let j = i + out[i..].find('\n').unwrap() + 1;
        out.replace_range(i..j, "");
    }
    out
}

fn models() -> Vec<(ModelFormat, String)> {
    vec![
        (ModelFormat::XgboostJson, small_xgboost()),
        (
            ModelFormat::LightgbmText,
            small_lightgbm("propensity.lgb.txt"),
        ),
        (
            ModelFormat::LightgbmText,
            small_lightgbm("propensity.lgb-zero-cat.txt"),
        ),
        (ModelFormat::Logistic, read("propensity.logistic.toml")),
    ]
}

/// Values that break parsers: out of range, not numbers, structure.
const NASTY: [&str; 16] = [
    "-1",
    "-2",
    "0",
    "2147483647",
    "-2147483649",
    "99999999999999999999",
    "1e400",
    "nan",
    "inf",
    "-0",
    "",
    "[",
    "{}",
    "\"x\"",
    "=",
    "\n",
];

/// One way to damage a file.
#[derive(Clone, Debug)]
enum Damage {
    /// Cut it at a fraction of its length.
    Truncate(f64),
    /// Set the byte at a fraction of its length.
    Byte(f64, u8),
    /// Replace the number at or after a fraction of its length with a nasty value.
    Number(f64, usize),
    /// Delete a span.
    Delete(f64, usize),
    /// Repeat a span.
    Repeat(f64, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0).prop_map(Damage::Truncate),
        (0.0..1.0, any::<u8>()).prop_map(|(p, b)| Damage::Byte(p, b)),
        (0.0..1.0, 0..NASTY.len()).prop_map(|(p, i)| Damage::Number(p, i)),
        (0.0..1.0, 1..200usize).prop_map(|(p, n)| Damage::Delete(p, n)),
        (0.0..1.0, 1..200usize).prop_map(|(p, n)| Damage::Repeat(p, n)),
    ]
}

fn apply(text: &str, d: &Damage) -> String {
    let mut b = text.as_bytes().to_vec();
    let at = |p: f64, len: usize| ((p * len as f64) as usize).min(len.saturating_sub(1));
    match *d {
        Damage::Truncate(p) => b.truncate(at(p, b.len())),
        Damage::Byte(p, v) => {
            let i = at(p, b.len());
            b[i] = v;
        }
        Damage::Number(p, n) => {
            let mut i = at(p, b.len());
            while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'-') {
                i += 1;
            }
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b"-+.".contains(&b[j])) {
                j += 1;
            }
            b.splice(i..j, NASTY[n].bytes());
        }
        Damage::Delete(p, n) => {
            let i = at(p, b.len());
            b.drain(i..(i + n).min(b.len()));
        }
        Damage::Repeat(p, n) => {
            let i = at(p, b.len());
            let span = b[i..(i + n).min(b.len())].to_vec();
            b.splice(i..i, span);
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn the_small_models_load() {
    for (format, text) in models() {
        let m = Model::parse(format, &text).unwrap();
        assert!(m.trees() == 3 || format == ModelFormat::Logistic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Damaged files either load (and then score any row without panicking) or give an error;
    /// a few rounds of damage at once, in each format.
    #[test]
    fn damaged_models_give_errors_not_panics(
        which in 0..4usize,
        damages in proptest::collection::vec(damage(), 1..4),
        row in proptest::collection::vec(prop_oneof![Just(f64::NAN), -1e6..1e6f64, Just(0.0)], 0..40),
    ) {
        let (format, text) = &models()[which];
        let mut text = text.clone();
        for d in &damages {
            text = apply(&text, d);
        }
        // Any format reading any damaged file: none may panic.
        for f in [*format, ModelFormat::detect(&text)] {
            if let Ok(m) = Model::parse(f, &text) {
                let _ = m.predict(&row);
                let _ = m.margin(&row);
            }
        }
    }
}

/// A LightGBM model of `n` single-leaf trees.
fn many_trees(n: usize) -> String {
    let mut text = String::from(
        "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=0\n\
         objective=regression\nfeature_names=a\nfeature_infos=[0:1]\n\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "Tree={i}\nnum_leaves=1\nnum_cat=0\nleaf_value=0.5\nis_linear=0\nshrinkage=1\n\n"
        ));
    }
    text.push_str("end of trees\n");
    text
}

#[test]
fn too_many_trees_are_refused_with_a_reason() {
    assert_eq!(
        Model::parse(ModelFormat::LightgbmText, &many_trees(MAX_TREES))
            .unwrap()
            .trees(),
        MAX_TREES
    );
    let e = Model::parse(ModelFormat::LightgbmText, &many_trees(MAX_TREES + 1)).unwrap_err();
    assert_eq!(
        e,
        ModelError::Limit {
            what: "trees",
            found: MAX_TREES + 1,
            limit: MAX_TREES
        }
    );
    assert!(e.to_string().contains("exceeds the limit of 10000"), "{e}");
    // A million trees do not fit in the largest file read.
    let e = Model::parse(ModelFormat::LightgbmText, &many_trees(1_000_000)).unwrap_err();
    assert!(matches!(e, ModelError::TooLarge { .. }), "{e}");
}
