//! `distinct`: how many different values of a field (the page, a property) fell in the window;
//! exact up to `exact` values, then a HyperLogLog sketch (256 registers per bucket, about 6.5 %
//! error) counts on while the earliest `exact` values stay exact. The exact values keep their
//! first time in the window, so a decision can ask for a value's rank by first sight: the
//! meter grants the first `limit` distinct articles of the window.
//!
//! ```toml
//! [features.metered_pages]
//! template = "distinct"
//! of = "page"            # or "props.section", "referrer_host", ...
//! window = "30d"
//! exact = 64             # default 64, at most 1000
//! labels = true          # keep each value's text for explanations (default false: keys only)
//! filter = { type = "page_view", props = { content_type = "article" } }
//! ```

use crate::time::units;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::filter::Field;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Clock, Window};

/// Most exact values a `distinct` feature may keep.
pub(crate) const MAX_EXACT: u32 = 1000;
/// Longest label kept per value, in bytes (for explanations).
const MAX_LABEL: usize = 96;
/// HyperLogLog registers per bucket (2^8).
const REGISTERS: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    of: String,
    #[serde(default = "default_exact")]
    exact: u32,
    #[serde(default)]
    labels: bool,
}

fn default_exact() -> u32 {
    64
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    of: Field,
    window: Window,
    exact: usize,
    labels: bool,
}

/// One value seen in one slot (bucket, or 0 for lifetime), with its first time there, and its
/// text when the feature keeps labels (empty otherwise).
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    key: u64,
    slot: u64,
    first: u64,
    label: Box<str>,
}

/// The state: exact entries, and per-slot sketches once they overflowed.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct State {
    entries: Vec<Entry>,
    sketch: Option<Vec<(u64, Box<[u8; REGISTERS]>)>>,
    /// The latest event taken, by (time, id): its time, id and key, kept even when its entry
    /// was evicted (a decision asks whether the current page is that event's).
    latest: Option<(u64, u64, u64)>,
}

fn slot_of(window: &Window, time: u64, watermark: u64) -> Option<u64> {
    match window {
        Window::Sliding { unit_ms, n } => {
            let idx = units(time, *unit_ms);
            (idx + n > units(watermark, *unit_ms)).then_some(idx)
        }
        _ => Some(0),
    }
}

fn in_window(window: &Window, slot: u64, now: u64) -> bool {
    match window {
        Window::Sliding { unit_ms, n } => {
            let last = units(now, *unit_ms);
            (last + 1).saturating_sub(*n) <= slot && slot <= last
        }
        _ => true,
    }
}

/// splitmix64's finalizer once more: the sketch takes its register from the top bits.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn sketch_add(registers: &mut [u8; REGISTERS], key: u64) {
    let h = mix(key);
    let idx = (h >> 56) as usize;
    let rho = ((h << 8) | 0x80).leading_zeros() as u8 + 1;
    registers[idx] = registers[idx].max(rho);
}

/// The registers of `slot`, created empty when missing (slots kept in order).
fn sketch_slot(sketch: &mut Vec<(u64, Box<[u8; REGISTERS]>)>, slot: u64) -> &mut [u8; REGISTERS] {
    let at = match sketch.binary_search_by_key(&slot, |(s, _)| *s) {
        Ok(at) => at,
        Err(at) => {
            sketch.insert(at, (slot, Box::new([0; REGISTERS])));
            at
        }
    };
    &mut sketch[at].1
}

fn sketch_estimate(registers: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    // 2^-r for every register value a 64-bit hash can give.
    let sum: f64 = registers
        .iter()
        .map(|r| f64::from_bits((1023 - u64::from((*r).min(64))) << 52))
        .sum();
    let zeros = registers.iter().filter(|r| **r == 0).count();
    let e = alpha * m * m / sum;
    if e <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        e
    }
}

impl Spec {
    /// Whether ranks up to `rank` are always exact (the meter's limit must be).
    pub(crate) fn covers_rank(&self, rank: u32) -> bool {
        rank as usize <= self.exact
    }

    /// Whether an event at `time` is inside the window at `now`.
    pub(crate) fn contains(&self, time: u64, now: u64) -> bool {
        let slot = match self.window {
            Window::Sliding { unit_ms, .. } => units(time, unit_ms),
            _ => 0,
        };
        in_window(&self.window, slot, now)
    }
}

impl State {
    /// The value's first time inside the window at `now`.
    fn first_in_window(&self, spec: &Spec, key: u64, now: u64) -> Option<u64> {
        self.entries
            .iter()
            .filter(|e| e.key == key && in_window(&spec.window, e.slot, now))
            .map(|e| e.first)
            .min()
    }

    /// Exact values in the window at `now`, each with its first time there, earliest first
    /// (for explanations; decisions use the allocation-free [`State::count`] and
    /// [`State::rank_of`]).
    fn firsts(&self, spec: &Spec, now: u64) -> Vec<(u64, u64, &str)> {
        let mut firsts: Vec<(u64, u64, &str)> = Vec::new();
        self.each_first(spec, now, |first, key, label| firsts.push((first, key, label)));
        firsts.sort_unstable_by_key(|(t, k, _)| (*t, *k));
        firsts
    }

    /// Calls `f(first time in the window, key, label)` once per exact value in the window at
    /// `now`. Entries are sorted by (key, slot), so a value's entries are adjacent.
    fn each_first<'s>(&'s self, spec: &Spec, now: u64, mut f: impl FnMut(u64, u64, &'s str)) {
        let mut current: Option<(u64, u64, &str)> = None;
        for e in &self.entries {
            if !in_window(&spec.window, e.slot, now) {
                continue;
            }
            match &mut current {
                Some((first, key, _)) if *key == e.key => *first = (*first).min(e.first),
                _ => {
                    if let Some((first, key, label)) = current.take() {
                        f(first, key, label);
                    }
                    current = Some((e.first, e.key, &e.label));
                }
            }
        }
        if let Some((first, key, label)) = current {
            f(first, key, label);
        }
    }

    /// `min(count, cap)`: the sketch is read only when the exact values are fewer than `cap`
    /// (a meter needs no more than its limit).
    pub(crate) fn count_up_to(&self, spec: &Spec, now: u64, cap: u64) -> u64 {
        let mut exact = 0u64;
        self.each_first(spec, now, |_, _, _| exact += 1);
        if exact >= cap {
            return cap;
        }
        self.count(spec, now).min(cap)
    }

    /// How many distinct values are in the window at `now` (estimated once over `exact`).
    pub(crate) fn count(&self, spec: &Spec, now: u64) -> u64 {
        let mut exact = 0u64;
        self.each_first(spec, now, |_, _, _| exact += 1);
        let Some(sketch) = &self.sketch else {
            return exact;
        };
        let mut merged = [0u8; REGISTERS];
        for (slot, regs) in sketch {
            if in_window(&spec.window, *slot, now) {
                for (m, r) in merged.iter_mut().zip(regs.iter()) {
                    *m = (*m).max(*r);
                }
            }
        }
        exact.max(sketch_estimate(&merged).round() as u64)
    }

    /// The 1-based rank of value `key` by first time in the window at `now` (ties by key), or
    /// `None` when it is not in the window.
    pub(crate) fn rank_of(&self, spec: &Spec, key: u64, now: u64) -> Option<u64> {
        let mine = self.first_in_window(spec, key, now)?;
        let mut before = 0u64;
        self.each_first(spec, now, |first, k, _| {
            if (first, k) < (mine, key) {
                before += 1;
            }
        });
        Some(1 + before)
    }

    /// Starts the sketch from the exact entries when it does not exist yet.
    fn add_to_sketch_all(&mut self) {
        if self.sketch.is_none() {
            let mut sketch: Vec<(u64, Box<[u8; REGISTERS]>)> = Vec::new();
            for e in &self.entries {
                sketch_add(sketch_slot(&mut sketch, e.slot), e.key);
            }
            self.sketch = Some(sketch);
        }
    }

    /// The time and key of the latest event taken.
    pub(crate) fn latest(&self) -> Option<(u64, u64)> {
        self.latest.map(|(t, _, k)| (t, k))
    }

    fn evict_latest(&mut self) {
        if let Some(at) = self
            .entries
            .iter()
            .enumerate()
            .max_by_key(|(_, e)| (e.first, e.key))
            .map(|(i, _)| i)
        {
            self.entries.remove(at);
        }
    }
}

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["distinct"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        let of = super::field(&p.of, &mut problems);
        let window = cx.window_not_session(&mut problems);
        if p.exact == 0 || p.exact > MAX_EXACT {
            problems.push(format!("exact: between 1 and {MAX_EXACT}, not {}", p.exact));
        }
        if problems.is_empty() {
            Ok(Spec {
                of,
                window,
                exact: p.exact as usize,
                labels: p.labels,
            })
        } else {
            Err(problems)
        }
    }

    fn new(_: &Spec) -> Self {
        Self::default()
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, clock: Clock) {
        let Some(key) = spec.of.key(ev) else { return };
        let Some(slot) = slot_of(&spec.window, time, clock.watermark) else {
            return;
        };
        let tie = ev.id() as u64;
        // Every entry's first time is the time of an event taken, so none is later than the
        // latest event before this one.
        let later_than_all = self.latest.is_none_or(|(t, _, _)| time > t);
        if self.latest.is_none_or(|(t, id, _)| (time, tie) > (t, id)) {
            self.latest = Some((time, tie, key));
        }
        if let Some(sketch) = &mut self.sketch {
            sketch_add(sketch_slot(sketch, slot), key);
        }
        // Entries are kept sorted by (key, slot): lookups are a binary search, and the state is
        // the same whatever order events arrived in.
        match self
            .entries
            .binary_search_by_key(&(key, slot), |e| (e.key, e.slot))
        {
            Ok(at) => {
                let e = &mut self.entries[at];
                e.first = e.first.min(time);
            }
            // Full, and this value later than every kept one: only the sketch takes it.
            Err(_) if later_than_all && self.entries.len() >= spec.exact => {
                self.add_to_sketch_all();
                if let Some(sketch) = &mut self.sketch {
                    sketch_add(sketch_slot(sketch, slot), key);
                }
                return;
            }
            Err(at) => {
                let label = if spec.labels {
                    spec.of
                        .text(ev)
                        .map(|t| truncate(&t, MAX_LABEL).into())
                        .unwrap_or_default()
                } else {
                    Box::default()
                };
                self.entries.insert(
                    at,
                    Entry {
                        key,
                        slot,
                        first: time,
                        label,
                    },
                );
            }
        }
        if self.entries.len() > spec.exact {
            // Usually the entry just added is later than every other, so it is the one to go.
            if later_than_all
                && let Ok(at) = self
                    .entries
                    .binary_search_by_key(&(key, slot), |e| (e.key, e.slot))
            {
                self.add_to_sketch_all();
                self.entries.remove(at);
                return;
            }
            self.add_to_sketch_all();
            self.evict_latest();
        }
    }

    fn touch(&self) -> u64 {
        // The entries are binary searched: their middle and ends.
        let e = &self.entries;
        [e.first(), e.get(e.len() / 2), e.last()]
            .into_iter()
            .flatten()
            .fold(0, |a, e| a ^ e.key)
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        if let Window::Sliding { unit_ms, n } = spec.window {
            let wm = units(clock.watermark, unit_ms);
            self.entries.retain(|e| e.slot + n > wm);
            if let Some(sketch) = &mut self.sketch {
                sketch.retain(|(s, _)| s + n > wm);
                if sketch.is_empty() {
                    self.sketch = None;
                }
            }
        }
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        Value::Num(self.count(spec, at.now) as f64)
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let values: Vec<Json> = self
            .firsts(spec, at.now)
            .into_iter()
            .enumerate()
            .map(|(i, (first, key, label))| {
                let value = if label.is_empty() {
                    json!(format!("#{key:016x}"))
                } else {
                    json!(label)
                };
                json!({"rank": i + 1, "value": value, "first_seen": first})
            })
            .collect();
        json!({
            "count": self.count(spec, at.now),
            "exact": self.sketch.is_none(),
            "values": values,
        })
    }

    fn encode(&self, _: &Spec, w: &mut Writer) {
        w.u64(self.entries.len() as u64);
        for e in &self.entries {
            w.fixed64(e.key);
            w.u64(e.slot);
            w.u64(e.first);
            w.str(&e.label);
        }
        match self.latest {
            None => w.byte(0),
            Some((t, id, k)) => {
                w.byte(1);
                w.u64(t);
                w.fixed64(id);
                w.fixed64(k);
            }
        }
        match &self.sketch {
            None => w.byte(0),
            Some(sketch) => {
                w.byte(1);
                w.u64(sketch.len() as u64);
                for (slot, regs) in sketch {
                    w.u64(*slot);
                    w.buf.extend_from_slice(&regs[..]);
                }
            }
        }
    }

    fn decode(spec: &Spec, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.len(spec.exact)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(Entry {
                key: r.fixed64()?,
                slot: r.u64()?,
                first: r.u64()?,
                label: r.str(MAX_LABEL)?.into(),
            });
        }
        let latest = match r.byte()? {
            0 => None,
            1 => Some((r.u64()?, r.fixed64()?, r.fixed64()?)),
            _ => return Err(CodecError::Invalid("distinct latest flag")),
        };
        let sketch = match r.byte()? {
            0 => None,
            1 => {
                let slots = r.len(crate::window::MAX_WINDOW_HOURS as usize + 1)?;
                let mut sketch = Vec::with_capacity(slots);
                for _ in 0..slots {
                    let slot = r.u64()?;
                    let mut regs = Box::new([0u8; REGISTERS]);
                    for reg in regs.iter_mut() {
                        *reg = r.byte()?;
                    }
                    sketch.push((slot, regs));
                }
                Some(sketch)
            }
            _ => return Err(CodecError::Invalid("distinct sketch flag")),
        };
        Ok(Self {
            entries,
            sketch,
            latest,
        })
    }

    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.entries.iter().map(|e| e.label.len()).sum::<usize>()
            + self
                .sketch
                .as_ref()
                .map_or(0, |s| s.len() * (REGISTERS + 16))
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(spec.window)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, view};
    use super::*;
    use crate::event::page_key;

    fn distinct(s: &super::super::State) -> &State {
        match s {
            super::super::State::Distinct(d) => d,
            _ => unreachable!(),
        }
    }

    fn spec(g: &Golden) -> &Spec {
        match &g.spec {
            super::super::Spec::Distinct(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn golden_pages_in_a_thirty_day_window_with_ranks() {
        let g = Golden::new(
            "template = \"distinct\"\nof = \"page\"\nwindow = \"30d\"\nlabels = true",
        );
        let mut s = g.state();
        // a on day 0, b on day 1, a again on day 2 (with a query string: the same page), c day 20.
        g.apply(&mut s, &view(1, "/a"), g.day(100, 9));
        g.apply(&mut s, &view(2, "/b"), g.day(101, 9));
        g.apply(&mut s, &view(3, "/a?utm=x"), g.day(102, 9));
        g.apply(&mut s, &view(4, "/c"), g.day(120, 9));
        let key = |p: &str| page_key(&format!("https://n.example{p}"));
        let rank = |s: &super::super::State, p: &str, now| distinct(s).rank_of(spec(&g), key(p), now);
        let now = g.day(120, 10);
        assert_eq!(g.value(&s, now), Value::Num(3.0));
        assert_eq!(
            (rank(&s, "/a", now), rank(&s, "/b", now), rank(&s, "/c", now)),
            (Some(1), Some(2), Some(3))
        );
        // Day 131 (window: days 102 to 131): a was seen on day 102, b only on day 101.
        let later = g.day(131, 10);
        assert_eq!(g.value(&s, later), Value::Num(2.0));
        assert_eq!(rank(&s, "/a", later), Some(1));
        assert_eq!(rank(&s, "/b", later), None);
        assert_eq!(rank(&s, "/c", later), Some(2));
        let explained = g.explain(&s, now);
        assert_eq!(explained["values"][0]["value"], "https://n.example/a", "{explained}");
        g.round_trip(&s);
    }

    #[test]
    fn exact_up_to_the_bound_then_a_sketch_with_bounded_memory() {
        let g = Golden::new("template = \"distinct\"\nof = \"page\"\nwindow = \"2d\"\nexact = 8");
        let mut s = g.state();
        for i in 0..5_000u64 {
            g.apply(&mut s, &view(u128::from(i), &format!("/p{i}")), g.day(10, 1) + i);
        }
        let d = distinct(&s);
        assert_eq!(d.entries.len(), 8, "exact values are bounded");
        let n = d.count(spec(&g), g.day(10, 2));
        assert!((4_500..=5_500).contains(&n), "estimate {n} of 5000");
        // The earliest pages keep their exact ranks.
        assert_eq!(d.rank_of(spec(&g), page_key("https://n.example/p0"), g.day(10, 2)), Some(1));
        assert_eq!(d.rank_of(spec(&g), page_key("https://n.example/p4999"), g.day(10, 2)), None);
        assert!(s.heap_bytes() < 4096, "{}", s.heap_bytes());
        g.round_trip(&s);
    }
}
