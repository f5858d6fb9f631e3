//! Logistic regression from a plain TOML file of coefficients:
//!
//! ```toml
//! intercept = -2.31
//! output = "probability"   # or "raw": the linear score itself (default "probability")
//!
//! [[features]]             # one per input, in row order
//! name = "active_days_30d"
//! coefficient = 0.42
//! missing = 3.1            # the value used when the input is missing (default 0)
//! ```
//!
//! The score is `intercept + Σ coefficient·x` summed in that order (`x` the input, or `missing`
//! when it is NaN), and the output its sigmoid `1 / (1 + exp(-score))`. Standardization, if
//! the model was fitted on standardized inputs, is folded into the coefficients and intercept
//! when the file is written (`examples/train/train.py` does).
//!
//! Contributions: input `i`'s is `coefficient·x` (`x` or `missing`, as in the score), the bias
//! the intercept; added in order from the intercept they are the score, to the bit.

use serde::Deserialize;

use super::error::ModelError;
use super::{InputKind, MAX_INPUTS, Output, Parsed};

/// A logistic regression.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Logistic {
    intercept: f64,
    coefficients: Vec<f64>,
    missing: Vec<f64>,
    sigmoid: bool,
}

/// The file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The intercept.
    intercept: f64,
    /// `"probability"` (default) or `"raw"`.
    #[serde(default)]
    output: Option<String>,
    /// The inputs, in row order.
    features: Vec<FeatureLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureLine {
    name: String,
    coefficient: f64,
    #[serde(default)]
    missing: f64,
}

impl Logistic {
    pub(super) fn parse(text: &str) -> Result<Parsed<Self>, ModelError> {
        let file: File = toml::from_str(text).map_err(|e| ModelError::Syntax {
            what: "logistic regression".into(),
            message: e.message().to_owned(),
        })?;
        let sigmoid = match file.output.as_deref() {
            None | Some("probability") => true,
            Some("raw") => false,
            Some(other) => {
                return Err(ModelError::Syntax {
                    what: "output".into(),
                    message: format!("{other:?} is not \"probability\" or \"raw\""),
                });
            }
        };
        if file.features.len() > MAX_INPUTS {
            return Err(ModelError::Limit {
                what: "inputs",
                found: file.features.len(),
                limit: MAX_INPUTS,
            });
        }
        if !file.intercept.is_finite() {
            return Err(ModelError::NotFinite("intercept".into()));
        }
        for (i, f) in file.features.iter().enumerate() {
            for (what, v) in [("coefficient", f.coefficient), ("missing", f.missing)] {
                if !v.is_finite() {
                    return Err(ModelError::NotFinite(format!("features[{i}].{what}")));
                }
            }
        }
        let kinds = vec![InputKind::Numeric; file.features.len()];
        Ok(Parsed {
            model: Self {
                intercept: file.intercept,
                coefficients: file.features.iter().map(|f| f.coefficient).collect(),
                missing: file.features.iter().map(|f| f.missing).collect(),
                sigmoid,
            },
            inputs: file.features.into_iter().map(|f| f.name).collect(),
            kinds,
            output: if sigmoid {
                Output::Probability
            } else {
                Output::Raw
            },
        })
    }

    pub(super) fn margin(&self, row: &[f64]) -> f64 {
        let mut z = self.intercept;
        for (i, (&c, &m)) in self.coefficients.iter().zip(&self.missing).enumerate() {
            let x = row.get(i).copied().filter(|x| !x.is_nan()).unwrap_or(m);
            z += c * x;
        }
        z
    }

    /// Writes the row's contributions to `out` (one per input) and returns the bias.
    pub(super) fn contributions(&self, row: &[f64], out: &mut [f64]) -> f64 {
        for (i, ((o, &c), &m)) in out
            .iter_mut()
            .zip(&self.coefficients)
            .zip(&self.missing)
            .enumerate()
        {
            let x = row.get(i).copied().filter(|x| !x.is_nan()).unwrap_or(m);
            *o = c * x;
        }
        self.intercept
    }

    pub(super) fn predict(&self, row: &[f64]) -> f64 {
        let z = self.margin(row);
        if self.sigmoid {
            1.0 / (1.0 + (-z).exp())
        } else {
            z
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ModelFormat};

    const FILE: &str = r#"
        intercept = -1.0
        [[features]]
        name = "visits"
        coefficient = 0.5
        missing = 2.0
        [[features]]
        name = "depth"
        coefficient = -0.25
    "#;

    #[test]
    fn score_and_missing_values() {
        let m = Model::parse(ModelFormat::detect(FILE), FILE).unwrap();
        assert_eq!(m.format(), ModelFormat::Logistic);
        assert_eq!(m.feature_names(), ["visits", "depth"]);
        assert_eq!(m.margin(&[4.0, 2.0]), -1.0 + 2.0 - 0.5);
        assert_eq!(m.margin(&[f64::NAN, f64::NAN]), -1.0 + 1.0);
        assert_eq!(m.margin(&[]), 0.0);
        assert_eq!(m.predict(&[4.0, 2.0]), 1.0 / (1.0 + (-0.5f64).exp()));
        let raw = FILE.replace("intercept = -1.0", "intercept = -1.0\noutput = \"raw\"");
        let m = Model::parse(ModelFormat::Logistic, &raw).unwrap();
        assert_eq!((m.output(), m.predict(&[4.0, 2.0])), (Output::Raw, 0.5));
    }

    #[test]
    fn contributions_are_the_terms() {
        let m = Model::parse(ModelFormat::Logistic, FILE).unwrap();
        let mut out = Vec::new();
        assert_eq!(m.contributions(&[4.0, 2.0], &mut out), -1.0);
        assert_eq!(out, [2.0, -0.5]);
        assert_eq!(m.contributions(&[f64::NAN], &mut out), -1.0);
        assert_eq!(out, [1.0, 0.0], "missing values, and values past the row");
        assert_eq!(m.top_contributions(&[4.0, 2.0], 1), [(0, 2.0)]);
        assert_eq!(m.top_contributions(&[1.0, -2.0], 5), [(0, 0.5), (1, 0.5)]);
        assert_eq!(
            m.top_contributions(&[0.0, 0.0], 5),
            [],
            "zeros are left out"
        );
    }

    #[test]
    fn bad_files_say_why() {
        let cases = [
            (FILE.replace("intercept = -1.0", ""), "intercept"),
            (
                FILE.replace("coefficient = 0.5", "coefficient = nan"),
                "coefficient",
            ),
            (
                FILE.replace("coefficient = 0.5", "coefficient = \"x\""),
                "invalid type",
            ),
            (
                FILE.replace("missing = 2.0", "missing = 2.0\nscale = 1"),
                "scale",
            ),
            (
                FILE.replace("name = \"depth\"", "name = \"visits\""),
                "two inputs",
            ),
            (
                FILE.replace("intercept = -1.0", "intercept = -1.0\noutput = \"odds\""),
                "odds",
            ),
            ("intercept = 1\nfeatures = []".to_owned(), "no inputs"),
        ];
        for (text, expected) in cases {
            let e = Model::parse(ModelFormat::Logistic, &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }
}
