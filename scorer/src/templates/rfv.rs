//! `rfv`: the FT / Deep.BI engagement score from three other features: Recency (days since
//! the last visit), Frequency (active days) and Volume (e.g. articles read). Each is banded 1–5
//! by four thresholds, and the score is their sum, 3–15 (the explanation gives the segment,
//! `R5F3V2`). A missing input scores 1. It keeps no state of its own: it reuses the features
//! it names, which must be numeric.
//!
//! ```toml
//! [features.rfv]
//! template = "rfv"
//! recency = "days_since_last_visit"   # lower is better
//! frequency = "active_days_30d"       # higher is better
//! volume = "articles_30d"             # higher is better
//! recency_days = [1, 3, 7, 14]        # <= 1 day: 5, <= 3: 4, <= 7: 3, <= 14: 2, else 1
//! frequency_days = [2, 5, 10, 20]     # >= 20: 5, >= 10: 4, >= 5: 3, >= 2: 2, else 1
//! volume_count = [3, 10, 25, 50]      # >= 50: 5, ...
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::Clock;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    recency: String,
    frequency: String,
    volume: String,
    #[serde(default = "default_recency")]
    recency_days: [f64; 4],
    #[serde(default = "default_frequency")]
    frequency_days: [f64; 4],
    #[serde(default = "default_volume")]
    volume_count: [f64; 4],
}

fn default_recency() -> [f64; 4] {
    [1.0, 3.0, 7.0, 14.0]
}

fn default_frequency() -> [f64; 4] {
    [2.0, 5.0, 10.0, 20.0]
}

fn default_volume() -> [f64; 4] {
    [3.0, 10.0, 25.0, 50.0]
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    inputs: [String; 3],
    recency: [f64; 4],
    frequency: [f64; 4],
    volume: [f64; 4],
}

/// No state: the score is derived.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct State;

/// 5 for values at or below the first threshold, down to 1 past the last.
fn band_low(v: Option<f64>, t: &[f64; 4]) -> u8 {
    v.map_or(1, |v| 5 - t.iter().take_while(|x| v > **x).count() as u8)
}

/// 5 for values at or above the last threshold, down to 1 below the first.
fn band_high(v: Option<f64>, t: &[f64; 4]) -> u8 {
    v.map_or(1, |v| 1 + t.iter().take_while(|x| v >= **x).count() as u8)
}

impl State {
    fn bands(spec: &Spec, at: &At<'_>) -> (u8, u8, u8) {
        let num = |i: usize| at.inputs.get(i).and_then(Value::as_num);
        (
            band_low(num(0), &spec.recency),
            band_high(num(1), &spec.frequency),
            band_high(num(2), &spec.volume),
        )
    }
}

fn ascending(t: &[f64; 4]) -> bool {
    t.windows(2).all(|w| w[0] < w[1]) && t.iter().all(|x| x.is_finite())
}

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["rfv"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        if cx.window.is_some() {
            problems.push("window: rfv takes none (its inputs have theirs)".into());
        }
        for (name, t) in [
            ("recency_days", &p.recency_days),
            ("frequency_days", &p.frequency_days),
            ("volume_count", &p.volume_count),
        ] {
            if !ascending(t) {
                problems.push(format!("{name}: four ascending numbers"));
            }
        }
        if problems.is_empty() {
            Ok(Spec {
                inputs: [p.recency, p.frequency, p.volume],
                recency: p.recency_days,
                frequency: p.frequency_days,
                volume: p.volume_count,
            })
        } else {
            Err(problems)
        }
    }

    fn new(_: &Spec) -> Self {
        Self
    }

    fn apply<E: Observed + ?Sized>(&mut self, _: &Spec, _: &E, _: u64, _: Clock) {}

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        let (r, f, v) = Self::bands(spec, at);
        Value::Num(f64::from(r + f + v))
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let (r, f, v) = Self::bands(spec, at);
        json!({
            "segment": format!("R{r}F{f}V{v}"),
            "inputs": {
                spec.inputs[0].clone(): at.inputs.first().map(Value::to_json),
                spec.inputs[1].clone(): at.inputs.get(1).map(Value::to_json),
                spec.inputs[2].clone(): at.inputs.get(2).map(Value::to_json),
            },
        })
    }

    fn encode(&self, _: &Spec, _: &mut Writer) {}

    fn decode(_: &Spec, _: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self)
    }

    fn heap_bytes(&self) -> usize {
        0
    }

    fn inputs(spec: &Spec) -> Vec<String> {
        spec.inputs.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Golden;
    use super::*;

    #[test]
    fn golden_bands_and_score() {
        let g = Golden::new(
            "template = \"rfv\"\nrecency = \"r\"\nfrequency = \"f\"\nvolume = \"v\"",
        );
        let s = g.state();
        let score = |r, f, v| g.value_with(&s, 0, &[r, f, v]);
        assert_eq!(score(Value::Num(0.5), Value::Num(25.0), Value::Num(60.0)), Value::Num(15.0));
        assert_eq!(score(Value::Num(5.0), Value::Num(5.0), Value::Num(9.0)), Value::Num(3.0 + 3.0 + 2.0));
        assert_eq!(score(Value::Missing, Value::Num(0.0), Value::Missing), Value::Num(3.0));
        assert_eq!(score(Value::Num(30.0), Value::Num(1.0), Value::Num(2.0)), Value::Num(3.0));
        assert!(Golden::try_new(
            "template = \"rfv\"\nrecency = \"r\"\nfrequency = \"f\"\nvolume = \"v\"\nvolume_count = [5, 4, 3, 2]"
        )
        .is_err());
    }
}
