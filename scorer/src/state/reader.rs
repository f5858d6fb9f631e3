//! One reader's state: the watermark (the latest event time applied), the dedupe of event ids,
//! and one state per stateful feature of the bundle. Pure: every call takes the time.
//!
//! The order of checks for an event at time `t`:
//! 1. TTL: if `t` is more than the TTL after the watermark, the old state is forgotten first
//!    (the reader returns as new), exactly as if it had been swept.
//! 2. Lateness: `t` more than the allowed lateness before the watermark is refused (`too_late`).
//! 3. Dedupe: an id already applied is a `duplicate`; past the bound, `dedupe_full`.
//! 4. The watermark moves to `max(watermark, t)`, and every feature whose filter passes takes
//!    the event. After a batch, [`ReaderState::finish`] prunes what no window can read.
//!
//! Encoded: the format byte, the bundle's feature-set hash (so state is never read with the
//! wrong features), the watermark, the dedupe ids, then each feature's state in bundle order.

use pulse_protocol::EventType;
use serde_json::{Value as Json, json};

use super::codec::{CodecError, Reader, Writer};
use super::dedupe::{Dedupe, Seen};
use crate::bundle::Bundle;
use crate::event::{Cached, Observed};
use crate::templates::{At, State};
use crate::value::Value;
use crate::window::Clock;

/// What happened to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Applied to the features.
    Applied,
    /// Its id was applied before.
    Duplicate,
    /// Older than the allowed lateness behind the reader's watermark.
    TooLate,
    /// Refused by dedupe's bound (a flood of events within the lateness).
    DedupeFull,
}

impl Outcome {
    /// The reason as metrics and dead letters name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::TooLate => "too_late",
            Self::DedupeFull => "dedupe_full",
        }
    }
}

/// Why stored state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// It was written for another feature set (the bundle's features changed).
    #[error("state of another feature set")]
    OtherFeatureSet,
    /// It is damaged.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One reader's state.
#[derive(Clone, Debug, PartialEq)]
pub struct ReaderState {
    watermark: u64,
    dedupe: Dedupe,
    features: Vec<State>,
    /// The watermark's hour at the last prune (not stored: a loaded state prunes at once).
    pruned_hour: u64,
}

impl ReaderState {
    /// A new reader under `bundle`.
    pub fn new(bundle: &Bundle) -> Self {
        Self {
            watermark: 0,
            dedupe: Dedupe::default(),
            features: bundle
                .owners
                .iter()
                .map(|&o| bundle.features[o].spec.new_state())
                .collect(),
            pruned_hour: 0,
        }
    }

    /// The latest event time applied (0 for a new reader).
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    fn clock(&self, bundle: &Bundle) -> Clock {
        Clock {
            watermark: self.watermark,
            lateness: bundle.settings.lateness_ms,
        }
    }

    /// Whether the event with `id` was applied to this state (exact within the allowed
    /// lateness; see [`Dedupe`]).
    pub fn holds(&self, id: u128) -> bool {
        self.dedupe.contains(id)
    }

    /// Reads a word of every heap block that applying events with `ids` reads first, so that
    /// the blocks of a reader whose state is not in the CPU's caches are fetched from memory
    /// together (the loads do not depend on one another) rather than one miss at a time as
    /// the features take each event. Call it before applying a batch; it changes nothing.
    pub fn prefetch(&self, ids: impl IntoIterator<Item = u128>) {
        let words = self
            .features
            .iter()
            .fold(self.dedupe.touch(ids), |a, s| a ^ s.touch());
        std::hint::black_box(words);
    }

    /// Applies one event at event time `time`.
    pub fn apply<E: Observed + ?Sized>(&mut self, bundle: &Bundle, ev: &E, time: u64) -> Outcome {
        let s = &bundle.settings;
        if self.watermark > 0 && time > self.watermark.saturating_add(s.ttl_ms) {
            *self = Self::new(bundle);
        }
        if self.watermark > 0 && time.saturating_add(s.lateness_ms) < self.watermark {
            return Outcome::TooLate;
        }
        match self.dedupe.check(ev.id(), time, s.max_dedupe_ids) {
            Seen::Fresh => {}
            Seen::Duplicate => return Outcome::Duplicate,
            Seen::Full => return Outcome::DedupeFull,
        }
        self.watermark = self.watermark.max(time);
        let clock = self.clock(bundle);
        let ev = Cached::new(ev);
        for step in bundle.features_for(ev.kind()) {
            let f = &bundle.features[step.feature];
            let holds = match step.mask {
                Some(mask) => ev.holds_all(mask, &bundle.conditions),
                None => f.filter.conds_hold(&ev),
            };
            if holds {
                self.features[step.state].apply(&f.spec, &ev, time, clock);
            }
        }
        Outcome::Applied
    }

    /// Prunes what can no longer be read (call after a batch). Windows and dedupe ignore what
    /// is outside them on their own, so pruning runs once per hour of event time (the dedupe
    /// and the states of hour and session windows) or day (every state: lifetime and sliding
    /// days lose a bucket only when the day changes): it frees memory and never changes a value.
    pub fn finish(&mut self, bundle: &Bundle) {
        let hour = self.watermark / crate::time::HOUR_MS;
        if hour != self.pruned_hour {
            let new_day = hour / 24 != self.pruned_hour / 24;
            self.pruned_hour = hour;
            if new_day {
                self.prune(bundle);
            } else {
                self.expire_ids(bundle);
                let clock = self.clock(bundle);
                for &si in &bundle.hourly {
                    let o = bundle.owners[si];
                    self.features[si].prune(&bundle.features[o].spec, clock);
                }
            }
        }
    }

    fn expire_ids(&mut self, bundle: &Bundle) {
        self.dedupe
            .expire(self.watermark.saturating_sub(bundle.settings.lateness_ms));
    }

    fn prune(&mut self, bundle: &Bundle) {
        self.expire_ids(bundle);
        let clock = self.clock(bundle);
        for (si, &o) in bundle.owners.iter().enumerate() {
            self.features[si].prune(&bundle.features[o].spec, clock);
        }
    }

    /// Whether the reader is forgotten at `now` (no event for the TTL).
    pub fn expired(&self, bundle: &Bundle, now: u64) -> bool {
        self.watermark > 0 && now > self.watermark.saturating_add(bundle.settings.ttl_ms)
    }

    /// The value of feature `index` at `now` (its inputs computed first).
    pub fn value(&self, bundle: &Bundle, index: usize, now: u64) -> Value {
        if self.expired(bundle, now) {
            return Value::Missing;
        }
        let f = &bundle.features[index];
        let inputs: Vec<Value> = f
            .inputs
            .iter()
            .map(|&i| self.value(bundle, i, now))
            .collect();
        match f.state {
            Some(si) => self.features[si].value(&f.spec, &At { now, inputs: &[] }),
            None => f.spec.new_state().value(
                &f.spec,
                &At {
                    now,
                    inputs: &inputs,
                },
            ),
        }
    }

    /// The state of feature `index`, when it keeps one.
    pub(crate) fn feature_state(&self, bundle: &Bundle, index: usize) -> Option<&State> {
        bundle.features[index].state.map(|si| &self.features[si])
    }

    /// Every feature's value and what it is made of, for operators.
    pub fn explain(&self, bundle: &Bundle, now: u64) -> Json {
        let expired = self.expired(bundle, now);
        let mut values: Vec<Value> = vec![Value::Missing; bundle.features.len()];
        let mut features = serde_json::Map::new();
        for &i in &bundle.order {
            let f = &bundle.features[i];
            let inputs: Vec<Value> = f.inputs.iter().map(|&j| values[j].clone()).collect();
            let at = At {
                now,
                inputs: &inputs,
            };
            let (value, detail) = match (expired, f.state) {
                (true, _) => (Value::Missing, Json::Null),
                (false, Some(si)) => (
                    self.features[si].value(&f.spec, &at),
                    self.features[si].explain(&f.spec, &at),
                ),
                (false, None) => {
                    let st = f.spec.new_state();
                    (st.value(&f.spec, &at), st.explain(&f.spec, &at))
                }
            };
            features.insert(
                f.name.clone(),
                json!({
                    "template": f.template,
                    "window": f.window.map(|w| w.to_string()),
                    "value": value.to_json(),
                    "detail": detail,
                }),
            );
            values[i] = value;
        }
        json!({
            "watermark": self.watermark,
            "expired": expired,
            "dedupe": {"ids": self.dedupe.len(), "floor": self.dedupe.floor()},
            "features": features,
        })
    }

    /// Heap bytes held (approximate), for the cache's accounting.
    pub fn heap_bytes(&self) -> usize {
        self.dedupe.heap_bytes()
            + self.features.capacity() * size_of::<State>()
            + self.features.iter().map(State::heap_bytes).sum::<usize>()
    }

    /// The binary form.
    pub fn encode(&self, bundle: &Bundle) -> Vec<u8> {
        // Room for most readers at once (growing a byte at a time reallocated a dozen times).
        let mut buf = Vec::with_capacity(4096);
        self.encode_into(bundle, &mut buf);
        buf
    }

    /// The binary form, in `buf` (cleared first): a caller that keeps many encoded states
    /// copies each out at its size rather than holding a buffer's room per state.
    pub fn encode_into(&self, bundle: &Bundle, buf: &mut Vec<u8>) {
        buf.clear();
        let mut w = Writer {
            buf: std::mem::take(buf),
        };
        w.byte(crate::bundle::STATE_FORMAT);
        w.fixed64(bundle.feature_set);
        w.u64(self.watermark);
        self.dedupe.encode(&mut w, self.watermark);
        for (si, &o) in bundle.owners.iter().enumerate() {
            self.features[si].encode(&bundle.features[o].spec, &mut w);
        }
        *buf = w.buf;
    }

    /// Encoded bytes per state (named by the features that own them) and of the dedupe, for
    /// operators and benchmarks.
    pub fn sizes(&self, bundle: &Bundle) -> Vec<(String, usize)> {
        let mut out = Vec::with_capacity(bundle.owners.len() + 1);
        let mut w = Writer::default();
        self.dedupe.encode(&mut w, self.watermark);
        out.push(("(dedupe)".to_owned(), w.buf.len()));
        for (si, &o) in bundle.owners.iter().enumerate() {
            let f = &bundle.features[o];
            let mut w = Writer::default();
            self.features[si].encode(&f.spec, &mut w);
            out.push((f.name.clone(), w.buf.len()));
        }
        out
    }

    /// Reads the watermark of encoded state without decoding the rest (for TTL sweeps).
    pub fn peek_watermark(bytes: &[u8]) -> Result<u64, CodecError> {
        let mut r = Reader::new(bytes);
        r.byte()?;
        r.fixed64()?;
        r.u64()
    }

    /// Reads state written by [`ReaderState::encode`] under the same feature set.
    pub fn decode(bundle: &Bundle, bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new(bytes);
        if r.byte()? != crate::bundle::STATE_FORMAT || r.fixed64()? != bundle.feature_set {
            return Err(StateError::OtherFeatureSet);
        }
        let watermark = r.u64()?;
        let dedupe = Dedupe::decode(&mut r, bundle.settings.max_dedupe_ids, watermark)?;
        let mut features = Vec::with_capacity(bundle.owners.len());
        for &o in &bundle.owners {
            features.push(bundle.features[o].spec.decode(&mut r)?);
        }
        if !r.is_empty() {
            return Err(CodecError::Invalid("trailing bytes").into());
        }
        Ok(Self {
            watermark,
            dedupe,
            features,
            pruned_hour: 0,
        })
    }

    /// Canonical form for comparisons: pruned now.
    pub fn normalize(&mut self, bundle: &Bundle) {
        self.prune(bundle);
    }

    /// Whether an event of this type could change any feature (else it only moves the
    /// watermark and the dedupe).
    pub fn interested(bundle: &Bundle, kind: EventType) -> bool {
        !bundle.features_for(kind).is_empty()
    }
}
