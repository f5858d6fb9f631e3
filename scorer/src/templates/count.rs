//! `count`: how many matching events fell in the window.
//!
//! ```toml
//! [features.articles_7d]
//! template = "count"
//! window = "7d"
//! filter = { type = "page_view", props = { content_type = "article" } }
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Acc, Clock, Window, Windowed};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// The compiled spec: the window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    window: Window,
}

/// A count per window slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct N(pub(crate) u64);

impl Acc for N {
    fn merge(&mut self, other: &Self) {
        self.0 += other.0;
    }
    fn encode(&self, w: &mut Writer) {
        w.u64(self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self(r.u64()?))
    }
}

/// The state: counts over the window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State(Windowed<N>);

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["count"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        super::params::<Params>(params)?;
        Ok(Spec {
            window: cx.window_or_lifetime(),
        })
    }

    fn new(spec: &Spec) -> Self {
        Self(Windowed::new(&spec.window))
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, _: &E, time: u64, clock: Clock) {
        if let Some(n) = self.0.slot(&spec.window, time, clock) {
            n.0 += 1;
        }
    }

    fn touch(&self) -> u64 {
        self.0.touch()
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        self.0.prune(&spec.window, clock);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        Value::Num(self.0.fold(&spec.window, at.now, 0, |s, n| s + n.0) as f64)
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let parts: serde_json::Map<String, Json> = self
            .0
            .parts(&spec.window, at.now)
            .into_iter()
            .map(|(label, n)| (label, json!(n.0)))
            .collect();
        json!({ "count_by_slot": parts })
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, view};
    use super::*;

    #[test]
    fn golden_counts_in_a_two_day_window() {
        let g = Golden::new("template = \"count\"\nwindow = \"2d\"");
        let mut s = g.state();
        for (i, at) in [g.day(99, 23), g.day(100, 12), g.day(100, 13), g.day(101, 9)]
            .into_iter()
            .enumerate()
        {
            g.apply(&mut s, &view(i as u128, "/a"), at);
        }
        assert_eq!(g.value(&s, g.day(101, 10)), Value::Num(3.0), "days 100 and 101");
        assert_eq!(g.value(&s, g.day(102, 0)), Value::Num(1.0), "day 101 only");
        assert_eq!(g.value(&s, g.day(103, 0)), Value::Num(0.0));
        // Day 99 is outside every window still readable: a late event there changes nothing.
        let before = s.clone();
        g.apply(&mut s, &view(9, "/a"), g.day(99, 22));
        assert_eq!(s, before);
        g.round_trip(&s);
    }
}
