//! `active_days`: on how many different days (UTC) of the window the reader did what the filter
//! says: the frequency of RFV. The window is in days; memory is at most one entry per day.
//!
//! ```toml
//! [features.active_days_30d]
//! template = "active_days"
//! window = "30d"
//! filter = { type = "page_view" }
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::DAY_MS;
use crate::value::Value;
use crate::window::{Clock, Window};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// The compiled spec: the window's length in days.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    days: u64,
}

/// The state: the active days, ascending.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct State {
    days: Vec<u64>,
}

impl State {
    fn in_window(&self, spec: &Spec, now: u64) -> impl Iterator<Item = &u64> {
        let last = now / DAY_MS;
        let first = (last + 1).saturating_sub(spec.days);
        self.days.iter().filter(move |d| (first..=last).contains(*d))
    }
}

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["active_days"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        super::params::<Params>(params)?;
        match cx.window {
            Some(Window::Sliding { unit_ms, n }) if unit_ms == DAY_MS => Ok(Spec { days: n }),
            _ => Err(vec!["window: active_days needs a window in days (\"30d\")".into()]),
        }
    }

    fn new(_: &Spec) -> Self {
        Self::default()
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, _: &E, time: u64, clock: Clock) {
        let day = time / DAY_MS;
        if day + spec.days <= clock.watermark / DAY_MS {
            return;
        }
        if let Err(at) = self.days.binary_search(&day) {
            self.days.insert(at, day);
        }
    }

    fn touch(&self) -> u64 {
        self.days.last().copied().unwrap_or(0)
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        let wm = clock.watermark / DAY_MS;
        self.days.retain(|d| d + spec.days > wm);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        Value::Num(self.in_window(spec, at.now).count() as f64)
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        json!({ "days": self.in_window(spec, at.now).collect::<Vec<_>>() })
    }

    fn encode(&self, _: &Spec, w: &mut Writer) {
        w.u64(self.days.len() as u64);
        let mut prev = 0;
        for d in &self.days {
            w.u64(d - prev);
            prev = *d;
        }
    }

    fn decode(spec: &Spec, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.len(usize::try_from(spec.days).unwrap_or(usize::MAX))?;
        let mut days = Vec::with_capacity(n);
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev
                .checked_add(r.u64()?)
                .ok_or(CodecError::Invalid("active day"))?;
            days.push(prev);
        }
        Ok(Self { days })
    }

    fn heap_bytes(&self) -> usize {
        self.days.capacity() * 8
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(Window::Sliding {
            unit_ms: DAY_MS,
            n: spec.days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, view};
    use super::*;

    #[test]
    fn golden_days_with_activity() {
        let g = Golden::new("template = \"active_days\"\nwindow = \"7d\"");
        let mut s = g.state();
        for (i, (d, h)) in [(1, 9), (1, 20), (3, 1), (7, 5), (2, 2)].into_iter().enumerate() {
            g.apply(&mut s, &view(i as u128, "/a"), g.day(d, h));
        }
        assert_eq!(g.value(&s, g.day(7, 6)), Value::Num(4.0), "days 1, 2, 3, 7");
        assert_eq!(g.value(&s, g.day(9, 0)), Value::Num(2.0), "days 3 and 7");
        g.round_trip(&s);
        assert!(Golden::try_new("template = \"active_days\"\nwindow = \"12h\"").is_err());
    }
}
