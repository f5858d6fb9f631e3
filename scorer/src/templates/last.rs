//! `last`: the latest value of a field by event time (ties go to the larger event id, so the
//! result does not depend on arrival order), while it is inside the window. Strings are kept up
//! to 256 bytes; a page also keeps its key, which decisions compare with other features.
//!
//! ```toml
//! [features.subscriber]
//! template = "last"
//! of = "props.subscriber"
//! filter = { type = "identify", has = ["subscriber"] }
//! ```

use crate::time::units;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Kind, Template};
use crate::event::{Observed, hash64};
use crate::filter::{Field, Read};
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Clock, Window};

/// Longest string kept, in bytes.
const MAX_TEXT: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    of: String,
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    of: Field,
    window: Window,
}

#[derive(Clone, Debug, PartialEq)]
enum Kept {
    Bool(bool),
    Num(f64),
    /// A string and the key of its whole value.
    Text(String, u64),
}

/// The state: the latest value with its time and id.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct State {
    last: Option<(u64, u64, Kept)>,
}

impl State {
    /// The time and key of the latest value when it is a string inside the window at `now`.
    pub(crate) fn at_key(&self, spec: &Spec, now: u64) -> Option<(u64, u64)> {
        match &self.last {
            Some((t, _, Kept::Text(_, key))) if visible(&spec.window, *t, now) => Some((*t, *key)),
            _ => None,
        }
    }
}

fn visible(window: &Window, time: u64, now: u64) -> bool {
    match window {
        Window::Sliding { unit_ms, n } => {
            let last = units(now, *unit_ms);
            (last + 1).saturating_sub(*n) <= units(time, *unit_ms) && units(time, *unit_ms) <= last
        }
        _ => true,
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
    const NAMES: &'static [&'static str] = &["last"];

    fn compile(_: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        let of = super::field(&p.of, &mut problems);
        let window = cx.window_not_session(&mut problems);
        if problems.is_empty() {
            Ok(Spec { of, window })
        } else {
            Err(problems)
        }
    }

    fn new(_: &Spec) -> Self {
        Self::default()
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, _: Clock) {
        let tie = ev.id() as u64;
        if self
            .last
            .as_ref()
            .is_some_and(|(t, id, _)| (*t, *id) >= (time, tie))
        {
            return;
        }
        let kept = match spec.of.read(ev) {
            Some(Read::Bool(b)) => Kept::Bool(b),
            Some(Read::Num(n)) => Kept::Num(n),
            Some(Read::Str(s)) => {
                let key = match spec.of {
                    Field::Page => ev.page_key(),
                    _ => hash64(s.as_bytes()),
                };
                // Reuse the string's buffer: no allocation per event.
                if let Some((t, id, Kept::Text(text, k))) = &mut self.last {
                    if *k != key {
                        text.clear();
                        text.push_str(truncate(&s));
                        *k = key;
                    }
                    (*t, *id) = (time, tie);
                    return;
                }
                Kept::Text(truncate(&s).to_owned(), key)
            }
            None => return,
        };
        self.last = Some((time, tie, kept));
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        match &self.last {
            Some((t, _, kept)) if visible(&spec.window, *t, at.now) => match kept {
                Kept::Bool(b) => Value::Bool(*b),
                Kept::Num(n) => Value::Num(*n),
                Kept::Text(s, _) => Value::Str(s.clone()),
            },
            _ => Value::Missing,
        }
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        json!({
            "value": self.value(spec, at).to_json(),
            "at": self.last.as_ref().map(|(t, _, _)| *t),
        })
    }

    fn encode(&self, _: &Spec, w: &mut Writer) {
        match &self.last {
            None => w.byte(0),
            Some((t, id, kept)) => {
                match kept {
                    Kept::Bool(b) => {
                        w.byte(1);
                        w.byte(u8::from(*b));
                    }
                    Kept::Num(n) => {
                        w.byte(2);
                        w.f64(*n);
                    }
                    Kept::Text(s, key) => {
                        w.byte(3);
                        w.str(s);
                        w.fixed64(*key);
                    }
                }
                w.u64(*t);
                w.fixed64(*id);
            }
        }
    }

    fn decode(_: &Spec, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let kept = match r.byte()? {
            0 => return Ok(Self::default()),
            1 => Kept::Bool(r.byte()? != 0),
            2 => Kept::Num(r.f64()?),
            3 => Kept::Text(r.str(MAX_TEXT)?.to_owned(), r.fixed64()?),
            _ => return Err(CodecError::Invalid("last: kind")),
        };
        Ok(Self {
            last: Some((r.u64()?, r.fixed64()?, kept)),
        })
    }

    fn heap_bytes(&self) -> usize {
        match &self.last {
            Some((_, _, Kept::Text(s, _))) => s.capacity(),
            _ => 0,
        }
    }

    fn kind(_: &Spec) -> Kind {
        Kind::Any
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(spec.window)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, event, view};
    use super::*;
    use pulse_protocol::EventType;
    use serde_json::json;

    #[test]
    fn golden_latest_by_event_time_whatever_the_order() {
        let g = Golden::new("template = \"last\"\nof = \"props.subscriber\"\nfilter = { type = \"identify\" }");
        let id = |i, sub: bool| event(i, EventType::Identify, None, "/", json!({ "subscriber": sub }));
        let mut s = g.state();
        assert_eq!(g.value(&s, g.day(1, 0)), Value::Missing);
        g.apply(&mut s, &id(1, true), g.day(1, 10));
        g.apply(&mut s, &view(2, "/x"), g.day(1, 12)); // filtered out
        g.apply(&mut s, &id(3, false), g.day(1, 9)); // earlier: does not win
        assert_eq!(g.value(&s, g.day(1, 13)), Value::Bool(true));
        g.apply(&mut s, &id(4, false), g.day(1, 11));
        assert_eq!(g.value(&s, g.day(1, 13)), Value::Bool(false));
        g.round_trip(&s);
    }

    #[test]
    fn a_page_within_its_window() {
        let g = Golden::new("template = \"last\"\nof = \"page\"\nwindow = \"1d\"");
        let mut s = g.state();
        g.apply(&mut s, &view(1, "/a?x=1"), g.day(3, 8));
        assert_eq!(g.value(&s, g.day(3, 9)), Value::Str("https://n.example/a".into()));
        assert_eq!(g.value(&s, g.day(4, 9)), Value::Missing, "left the window");
        g.round_trip(&s);
    }
}
