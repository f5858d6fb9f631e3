//! `sum`, `avg`, `min`, `max`: of a numeric property over the window. Events without the
//! property (or with a non-number) are skipped. `avg`, `min` and `max` of no value are missing;
//! `sum` of none is 0.
//!
//! ```toml
//! [features.read_depth_avg_30d]
//! template = "avg"
//! of = "props.read_depth"
//! window = "30d"
//! filter = { type = "engagement" }
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::filter::Field;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Acc, Clock, Window, Windowed};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    of: String,
}

/// Which statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stat {
    Sum,
    Avg,
    Min,
    Max,
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    stat: Stat,
    of: Field,
    window: Window,
}

/// Count, sum, min and max of the values in a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Moments {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

impl Acc for Moments {
    fn merge(&mut self, o: &Self) {
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
    fn encode(&self, w: &mut Writer) {
        w.u64(self.n);
        if self.n > 0 {
            w.f64(self.sum);
            w.f64(self.min);
            w.f64(self.max);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.u64()?;
        if n == 0 {
            return Ok(Self::default());
        }
        Ok(Self {
            n,
            sum: r.f64()?,
            min: r.f64()?,
            max: r.f64()?,
        })
    }
}

/// The state: moments over the window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State(Windowed<Moments>);

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["sum", "avg", "min", "max"];

    fn compile(name: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        let of = super::field(&p.of, &mut problems);
        if !matches!(of, Field::Prop(_)) {
            problems.push(format!("of: {:?} is not a numeric property (props.<key>)", p.of));
        }
        let stat = match name {
            "sum" => Stat::Sum,
            "avg" => Stat::Avg,
            "min" => Stat::Min,
            _ => Stat::Max,
        };
        let window = cx.window_or_lifetime();
        if problems.is_empty() {
            Ok(Spec { stat, of, window })
        } else {
            Err(problems)
        }
    }

    fn new(spec: &Spec) -> Self {
        Self(Windowed::new(&spec.window))
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, clock: Clock) {
        let Some(v) = spec.of.num(ev) else { return };
        if let Some(m) = self.0.slot(&spec.window, time, clock) {
            m.add(v);
        }
    }

    fn touch(&self) -> u64 {
        self.0.touch()
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        self.0.prune(&spec.window, clock);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        let m = self
            .0
            .fold(&spec.window, at.now, Moments::default(), |mut acc, m| {
                acc.merge(m);
                acc
            });
        match (spec.stat, m.n) {
            (Stat::Sum, _) => Value::Num(m.sum),
            (_, 0) => Value::Missing,
            (Stat::Avg, n) => Value::Num(m.sum / n as f64),
            (Stat::Min, _) => Value::Num(m.min),
            (Stat::Max, _) => Value::Num(m.max),
        }
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let parts: serde_json::Map<String, Json> = self
            .0
            .parts(&spec.window, at.now)
            .into_iter()
            .map(|(label, m)| {
                let v = if m.n == 0 {
                    json!({"n": 0})
                } else {
                    json!({"n": m.n, "sum": m.sum, "min": m.min, "max": m.max})
                };
                (label, v)
            })
            .collect();
        json!({ "by_slot": parts })
    }

    fn encode(&self, _: &Spec, w: &mut Writer) {
        self.0.encode(w);
    }

    fn decode(spec: &Spec, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Windowed::decode(&spec.window, r).map(Self)
    }

    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(spec.window)
    }

    fn same_state(a: &Spec, b: &Spec) -> bool {
        a.of == b.of && a.window == b.window
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, event};
    use super::*;
    use pulse_protocol::EventType;
    use serde_json::json;

    #[test]
    fn golden_sum_avg_min_max() {
        let depth = |id, d: serde_json::Value| {
            event(id, EventType::Engagement, None, "/a", json!({ "read_depth": d }))
        };
        let evs = [
            depth(1, json!(40)),
            depth(2, json!(90)),
            depth(3, json!("deep")), // not a number: skipped
            depth(4, json!(20)),
        ];
        for (template, want) in [("sum", 150.0), ("avg", 50.0), ("min", 20.0), ("max", 90.0)] {
            let g = Golden::new(&format!(
                "template = \"{template}\"\nof = \"props.read_depth\"\nwindow = \"1d\""
            ));
            let mut s = g.state();
            assert_eq!(
                g.value(&s, g.day(5, 1)),
                if template == "sum" { Value::Num(0.0) } else { Value::Missing }
            );
            for (i, e) in evs.iter().enumerate() {
                g.apply(&mut s, e, g.day(5, i as u64));
            }
            assert_eq!(g.value(&s, g.day(5, 23)), Value::Num(want), "{template}");
            g.round_trip(&s);
        }
    }

    #[test]
    fn needs_a_numeric_property() {
        let cx = CompileCx {
            window: None,
            session_idle_ms: 1,
        };
        let mut t = toml::Table::new();
        t.insert("of".into(), "page".into());
        assert!(State::compile("sum", t, &cx).is_err());
        assert!(State::compile("sum", toml::Table::new(), &cx).is_err());
    }
}
