//! Explanations add up: for random rows (values of any size, zeros, missing values, rows cut
//! short) on every committed example model (`examples/train/`), the bias plus the contributions
//! is the margin, and the top contributions are the largest ones, in order.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use pulse_scorer::{Model, ModelFormat};

const MODELS: [&str; 6] = [
    "propensity.xgb.json",
    "propensity-reg.xgb.json",
    "propensity.lgb.txt",
    "propensity.lgb-zero-cat.txt",
    "propensity-reg.lgb.txt",
    "propensity.logistic.toml",
];

fn models() -> &'static [Model] {
    static LOADED: OnceLock<Vec<Model>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/train");
        MODELS
            .iter()
            .map(|f| Model::read(&dir.join(f)).expect("an example model"))
            .collect()
    })
}

/// A value as rows carry them: missing, zero, a small count, or anything from -100 to 10^7.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => Just(f64::NAN),
        1 => Just(0.0),
        3 => (0u32..60).prop_map(f64::from),
        3 => -100.0..1.0e7f64,
    ]
}

/// How far `bias + Σ contributions` may be from `margin`, relative to `max(1, |margin|)`:
/// 1e-6. XGBoost's margin is XGBoost's own `f32` sum over the trees, whose rounding alone
/// reaches about 1.4e-6 of it here (XGBoost's own contributions miss its margin by as much), so
/// there `trees · 2^-24` more is allowed, the bound of that rounding were the partial sums no
/// larger than the margin. (Pulse sums the contributions in `f64`: on LightGBM and logistic
/// models they miss by 1e-14 at most.)
fn tolerance(m: &Model, margin: f64) -> f64 {
    let scale = margin.abs().max(1.0);
    let f32_sum = match m.format() {
        ModelFormat::XgboostJson => m.trees() as f64 * f64::from(f32::EPSILON) / 2.0,
        ModelFormat::LightgbmText | ModelFormat::Logistic => 0.0,
    };
    (1e-6 + f32_sum) * scale
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn bias_plus_contributions_is_the_margin(
        model in 0..MODELS.len(),
        row in prop::collection::vec(value(), 0..=28),
    ) {
        let m = &models()[model];
        let mut out = vec![7.0; 3];
        let bias = m.contributions(&row, &mut out);
        prop_assert_eq!(out.len(), m.feature_names().len());
        let margin = m.margin(&row);
        let sum = out.iter().fold(bias, |s, c| s + c);
        prop_assert!(
            (sum - margin).abs() <= tolerance(m, margin),
            "{}: bias {} + {:?} = {} but the margin is {}", MODELS[model], bias, out, sum, margin
        );
        if m.format() == ModelFormat::Logistic {
            // The same terms added in the same order.
            prop_assert_eq!(sum, margin);
        }
    }

    #[test]
    fn top_contributions_are_the_largest_in_order(
        model in 0..MODELS.len(),
        row in prop::collection::vec(value(), 0..=28),
        n in 0usize..30,
    ) {
        let m = &models()[model];
        let mut all = Vec::new();
        m.contributions(&row, &mut all);
        let top = m.top_contributions(&row, n);
        let nonzero = all.iter().filter(|&&c| c != 0.0).count();
        prop_assert_eq!(top.len(), n.min(nonzero));
        for &(i, c) in &top {
            prop_assert!(c != 0.0);
            prop_assert_eq!(c, all[i]);
        }
        for w in top.windows(2) {
            let ((i, a), (j, b)) = (w[0], w[1]);
            prop_assert!(a.abs() > b.abs() || (a.abs() == b.abs() && i < j), "{:?}", top);
        }
        // Nothing left out is larger than the last one kept.
        if let Some(&(_, last)) = top.last() {
            let kept: Vec<usize> = top.iter().map(|&(i, _)| i).collect();
            for (i, c) in all.iter().enumerate() {
                if !kept.contains(&i) {
                    prop_assert!(c.abs() <= last.abs());
                }
            }
        }
    }
}
