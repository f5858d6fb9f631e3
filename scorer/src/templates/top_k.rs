//! `top_k`: the `k` most frequent values of a field in the window, with their counts (the
//! sections a reader reads most). Each slot keeps at most `4 k` counters (Space-Saving: a new
//! value past that replaces the least counted one and inherits its count), so memory is bounded
//! and counts are exact while a slot holds fewer than `4 k` values. Values are kept up to 64
//! bytes.
//!
//! ```toml
//! [features.top_sections_30d]
//! template = "top_k"
//! of = "props.section"
//! k = 3
//! window = "30d"
//! filter = { type = "page_view" }
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Kind, Template};
use crate::event::{Observed, hash64};
use crate::filter::Field;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Acc, Clock, Window, Windowed};

/// Largest `k`.
pub(crate) const MAX_K: u32 = 20;
/// Longest value kept, in bytes.
const MAX_TEXT: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    of: String,
    #[serde(default = "default_k")]
    k: u32,
}

fn default_k() -> u32 {
    3
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    of: Field,
    k: usize,
    window: Window,
}

/// Counters of one slot: (hash of the value, the value, count), sorted by hash, so a lookup
/// is a binary search over integers and the state is the same whatever the arrival order.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Counters {
    items: Vec<(u64, Box<str>, u64)>,
}

impl Counters {
    /// Counts one more `value` (whose hash is `hash`).
    fn add(&mut self, hash: u64, value: &str, capacity: usize) {
        match self.items.binary_search_by_key(&hash, |(h, _, _)| *h) {
            Ok(at) => self.items[at].2 += 1,
            Err(at) if self.items.len() < capacity => self.items.insert(at, (hash, value.into(), 1)),
            Err(_) => {
                // Space-Saving: the least counted goes, its count inherited (ties: larger value).
                let Some(min) = self
                    .items
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.2.cmp(&b.1.2).then_with(|| b.1.1.cmp(&a.1.1)))
                    .map(|(i, _)| i)
                else {
                    return;
                };
                let (_, _, count) = self.items.remove(min);
                let at = self
                    .items
                    .binary_search_by_key(&hash, |(h, _, _)| *h)
                    .unwrap_or_else(|at| at);
                self.items.insert(at, (hash, value.into(), count + 1));
            }
        }
    }

    fn ranked(&self) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self.items.iter().map(|(_, v, n)| (&**v, *n)).collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        all
    }
}

impl Acc for Counters {
    fn merge(&mut self, other: &Self) {
        for (h, v, n) in &other.items {
            match self.items.binary_search_by_key(h, |(x, _, _)| *x) {
                Ok(at) => self.items[at].2 += n,
                Err(at) => self.items.insert(at, (*h, v.clone(), *n)),
            }
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u64(self.items.len() as u64);
        for (_, v, n) in &self.items {
            w.str(v);
            w.u64(*n);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let len = r.len(4 * MAX_K as usize)?;
        let mut items: Vec<(u64, Box<str>, u64)> = Vec::with_capacity(len);
        for _ in 0..len {
            let v: Box<str> = r.str(MAX_TEXT)?.into();
            let h = hash64(v.as_bytes());
            if items.last().is_some_and(|(last, _, _)| *last >= h) {
                return Err(CodecError::Invalid("top_k counters out of order"));
            }
            items.push((h, v, r.u64()?));
        }
        Ok(Self { items })
    }
    fn touch(&self) -> u64 {
        self.items.first().map_or(0, |(h, _, _)| *h)
    }
    fn heap_bytes(&self) -> usize {
        self.items.capacity() * 32 + self.items.iter().map(|(_, v, _)| v.len()).sum::<usize>()
    }
}

/// The state: counters over the window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State(Windowed<Counters>);

impl State {
    fn merged(&self, spec: &Spec, now: u64) -> Counters {
        self.0.fold(&spec.window, now, Counters::default(), |mut a, c| {
            a.merge(c);
            a
        })
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["top_k"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        let of = super::field(&p.of, &mut problems);
        if p.k == 0 || p.k > MAX_K {
            problems.push(format!("k: between 1 and {MAX_K}, not {}", p.k));
        }
        if problems.is_empty() {
            Ok(Spec {
                of,
                k: p.k as usize,
                window: cx.window_or_lifetime(),
            })
        } else {
            Err(problems)
        }
    }

    fn new(spec: &Spec) -> Self {
        Self(Windowed::new(&spec.window))
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, clock: Clock) {
        let Some(text) = spec.of.text(ev) else { return };
        let value = truncate(&text);
        let hash = hash64(value.as_bytes());
        if let Some(c) = self.0.slot(&spec.window, time, clock) {
            c.add(hash, value, 4 * spec.k);
            if c.items.len() > 4 * spec.k {
                // Two sessions bridged by this event merged their counters: keep the most counted.
                let mut kept = c.items.clone();
                kept.sort_unstable_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
                kept.truncate(4 * spec.k);
                kept.sort_unstable_by_key(|(h, _, _)| *h);
                c.items = kept;
            }
        }
    }

    fn touch(&self) -> u64 {
        self.0.touch()
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        self.0.prune(&spec.window, clock);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        let merged = self.merged(spec, at.now);
        Value::Top(
            merged
                .ranked()
                .into_iter()
                .take(spec.k)
                .map(|(v, n)| (v.to_owned(), n))
                .collect(),
        )
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let merged = self.merged(spec, at.now);
        json!({ "counters": merged.ranked().into_iter().map(|(v, n)| json!([v, n])).collect::<Vec<_>>() })
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

    fn kind(_: &Spec) -> Kind {
        Kind::Top
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(spec.window)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, event};
    use super::*;
    use pulse_protocol::EventType;
    use serde_json::json;

    #[test]
    fn golden_top_sections() {
        let g = Golden::new("template = \"top_k\"\nof = \"props.section\"\nk = 2\nwindow = \"2d\"");
        let mut s = g.state();
        let sections = ["sport", "politics", "sport", "culture", "sport", "politics"];
        for (i, sec) in sections.iter().enumerate() {
            let e = event(i as u128, EventType::PageView, None, "/a", json!({ "section": sec }));
            g.apply(&mut s, &e, g.day(5, i as u64));
        }
        assert_eq!(
            g.value(&s, g.day(5, 12)),
            Value::Top(vec![("sport".into(), 3), ("politics".into(), 2)])
        );
        g.round_trip(&s);
    }

    #[test]
    fn bounded_counters_under_a_flood_of_values() {
        let g = Golden::new("template = \"top_k\"\nof = \"props.section\"\nk = 1");
        let mut s = g.state();
        for i in 0..10_000u64 {
            let sec = if i % 2 == 0 { "sport".to_owned() } else { format!("junk-{i}") };
            let e = event(u128::from(i), EventType::PageView, None, "/a", json!({ "section": sec }));
            g.apply(&mut s, &e, g.day(5, 1) + i);
        }
        let Value::Top(top) = g.value(&s, g.day(5, 2)) else { panic!() };
        assert_eq!(top[0].0, "sport");
        assert!(s.heap_bytes() < 1024, "{}", s.heap_bytes());
    }
}
