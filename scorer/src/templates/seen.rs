//! `first_seen`, `last_seen`, `recency`: when the reader was first and last seen doing what the
//! filter says within the window (ms since the epoch), and how long ago the last time was
//! (`unit` = `days` (default), `hours` or `minutes`, fractional).
//!
//! ```toml
//! [features.days_since_last_visit]
//! template = "recency"
//! filter = { type = "page_view" }
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::value::Value;
use crate::window::{Acc, Clock, Window, Windowed};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    First,
    Last,
    Recency,
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    which: Which,
    unit_ms: u64,
    window: Window,
}

/// First and last time in a slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Span {
    first: u64,
    last: u64,
}

impl Default for Span {
    fn default() -> Self {
        Self {
            first: u64::MAX,
            last: 0,
        }
    }
}

impl Acc for Span {
    fn merge(&mut self, o: &Self) {
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }
    fn encode(&self, w: &mut Writer) {
        w.u64(self.first);
        w.u64(self.last);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            first: r.u64()?,
            last: r.u64()?,
        })
    }
}

/// The state: first/last times over the window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State(Windowed<Span>);

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["first_seen", "last_seen", "recency"];

    fn compile(name: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let which = match name {
            "first_seen" => Which::First,
            "last_seen" => Which::Last,
            _ => Which::Recency,
        };
        let unit_ms = match (which, p.unit.as_deref()) {
            (_, None | Some("days")) => DAY_MS,
            (Which::Recency, Some("hours")) => HOUR_MS,
            (Which::Recency, Some("minutes")) => MINUTE_MS,
            (_, Some(u)) => {
                return Err(vec![format!(
                    "unit: {u:?} (recency takes days, hours or minutes; first/last_seen no unit)"
                )]);
            }
        };
        Ok(Spec {
            which,
            unit_ms,
            window: cx.window_or_lifetime(),
        })
    }

    fn new(spec: &Spec) -> Self {
        Self(Windowed::new(&spec.window))
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, _: &E, time: u64, clock: Clock) {
        if let Some(s) = self.0.slot(&spec.window, time, clock) {
            s.merge(&Span {
                first: time,
                last: time,
            });
        }
    }

    fn touch(&self) -> u64 {
        self.0.touch()
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        self.0.prune(&spec.window, clock);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        let span = self.0.fold(&spec.window, at.now, Span::default(), |mut a, s| {
            a.merge(s);
            a
        });
        if span.first == u64::MAX {
            return Value::Missing;
        }
        match spec.which {
            Which::First => Value::Num(span.first as f64),
            Which::Last => Value::Num(span.last as f64),
            Which::Recency => {
                Value::Num(at.now.saturating_sub(span.last) as f64 / spec.unit_ms as f64)
            }
        }
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let span = self.0.fold(&spec.window, at.now, Span::default(), |mut a, s| {
            a.merge(s);
            a
        });
        if span.first == u64::MAX {
            json!({"seen": false})
        } else {
            json!({"first": span.first, "last": span.last})
        }
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
        a.window == b.window
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, view};
    use super::*;

    #[test]
    fn golden_first_last_and_recency() {
        let times = |g: &Golden| [g.day(10, 6), g.day(12, 18), g.day(11, 0)];
        for (template, want) in [
            ("first_seen", (10 * 24 + 6) as f64 * HOUR_MS as f64),
            ("last_seen", (12 * 24 + 18) as f64 * HOUR_MS as f64),
            ("recency", 1.25),
        ] {
            let g = Golden::new(&format!("template = \"{template}\""));
            let mut s = g.state();
            assert_eq!(g.value(&s, g.day(14, 0)), Value::Missing);
            for (i, t) in times(&g).into_iter().enumerate() {
                g.apply(&mut s, &view(i as u128, "/a"), t);
            }
            assert_eq!(g.value(&s, g.day(14, 0)), Value::Num(want), "{template}");
            g.round_trip(&s);
        }
        let g = Golden::new("template = \"recency\"\nunit = \"hours\"\nwindow = \"1d\"");
        let mut s = g.state();
        g.apply(&mut s, &view(1, "/a"), g.day(3, 1));
        assert_eq!(g.value(&s, g.day(3, 4)), Value::Num(3.0));
        assert_eq!(g.value(&s, g.day(4, 4)), Value::Missing, "outside the window");
    }
}
