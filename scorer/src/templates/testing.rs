//! Helpers for the templates' golden tests: one feature compiled from a TOML snippet, events
//! applied one batch at a time with the reader's watermark, values read at a moment.

use pulse_protocol::{Event, EventId, EventType, PageContext};
use serde_json::json;

use super::{At, CompileCx, Spec, State};
use crate::filter::Filter;
use crate::state::codec::{Reader, Writer};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::value::Value;
use crate::window::{Clock, Window};

/// A page view of `https://n.example{path}` with id `id`.
pub(crate) fn view(id: u128, path: &str) -> Event {
    event(id, EventType::PageView, None, path, json!({}))
}

/// Any event.
pub(crate) fn event(
    id: u128,
    kind: EventType,
    name: Option<&str>,
    path: &str,
    props: serde_json::Value,
) -> Event {
    Event {
        id: EventId(id),
        ts: 0,
        kind,
        name: name.map(str::to_owned),
        page: PageContext {
            url: format!("https://n.example{path}"),
            referrer: "https://www.google.com/".into(),
            title: String::new(),
        },
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

/// One feature under test.
pub(crate) struct Golden {
    pub(crate) spec: Spec,
    filter: Filter,
    lateness: u64,
    watermark: std::cell::Cell<u64>,
}

impl Golden {
    /// Compiles a feature table (`template = ...`, `window = ...`, parameters; `filter` too).
    pub(crate) fn new(toml_text: &str) -> Self {
        Self::try_new(toml_text).expect("valid parameters")
    }

    /// Like [`Golden::new`], returning the template's problems.
    pub(crate) fn try_new(toml_text: &str) -> Result<Self, Vec<String>> {
        let mut table: toml::Table = toml::from_str(toml_text).expect("feature TOML");
        let template = table
            .remove("template")
            .and_then(|t| t.as_str().map(str::to_owned))
            .expect("template");
        let window = table.remove("window").map(|w| {
            Window::parse(w.as_str().expect("window string"), 30 * MINUTE_MS).expect("window")
        });
        let filter = table
            .remove("filter")
            .map(|f| Filter::compile(&f.try_into().expect("filter table")).expect("filter"))
            .unwrap_or_else(Filter::any);
        let cx = CompileCx {
            window,
            session_idle_ms: 30 * MINUTE_MS,
        };
        let spec = super::compile(&template, table, &cx).expect("a template name")?;
        Ok(Self {
            spec,
            filter,
            lateness: DAY_MS,
            watermark: std::cell::Cell::new(0),
        })
    }

    /// Milliseconds of day `d`, hour `h`.
    pub(crate) fn day(&self, d: u64, h: u64) -> u64 {
        d * DAY_MS + h * HOUR_MS
    }

    pub(crate) fn state(&self) -> State {
        self.spec.new_state()
    }

    fn clock(&self) -> Clock {
        Clock {
            watermark: self.watermark.get(),
            lateness: self.lateness,
        }
    }

    /// Applies one event (a batch of one) if it passes the filter, then prunes.
    pub(crate) fn apply(&self, s: &mut State, ev: &Event, time: u64) {
        self.watermark.set(self.watermark.get().max(time));
        if self.filter.matches(ev) {
            s.apply(&self.spec, ev, time, self.clock());
        }
        s.prune(&self.spec, self.clock());
    }

    pub(crate) fn value(&self, s: &State, now: u64) -> Value {
        s.value(&self.spec, &At { now, inputs: &[] })
    }

    pub(crate) fn value_with(&self, s: &State, now: u64, inputs: &[Value]) -> Value {
        s.value(&self.spec, &At { now, inputs })
    }

    pub(crate) fn explain(&self, s: &State, now: u64) -> serde_json::Value {
        s.explain(&self.spec, &At { now, inputs: &[] })
    }

    /// Encodes and decodes the state and checks it comes back equal.
    pub(crate) fn round_trip(&self, s: &State) {
        let mut w = Writer::default();
        s.encode(&self.spec, &mut w);
        let mut r = Reader::new(&w.buf);
        let back = self.spec.decode(&mut r).expect("decodes");
        assert!(r.is_empty(), "everything read");
        assert_eq!(&back, s);
    }
}
