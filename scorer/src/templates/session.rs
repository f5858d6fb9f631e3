//! `sessions`, `pages_per_session`, `session_length`: the reader's sessions (events with gaps
//! under `idle`, the bundle's `session_idle` by default) in the window: how many, how many page
//! views each had on average, and how long the current one has lasted (seconds; 0 when none is
//! open). Late events can bridge sessions, which then merge. At most 512 sessions are kept; with
//! a lifetime window, older ones are folded into totals.
//!
//! ```toml
//! [features.sessions_30d]
//! template = "sessions"
//! window = "30d"
//! ```

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{At, CompileCx, Template};
use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::{SECOND_MS, parse_duration};
use crate::value::Value;
use crate::window::{Acc, Clock, Sessions, Window};
use pulse_protocol::EventType;

/// Most sessions kept.
const MAX_KEPT: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    idle: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stat {
    Count,
    PagesPerSession,
    Length,
}

/// The compiled spec.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spec {
    stat: Stat,
    idle: u64,
    window: Window,
}

/// Page views in a session.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Pages(u64);

impl Acc for Pages {
    fn merge(&mut self, o: &Self) {
        self.0 += o.0;
    }
    fn encode(&self, w: &mut Writer) {
        w.u64(self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self(r.u64()?))
    }
}

/// The state: recent sessions, and totals of older ones (lifetime windows only).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct State {
    sessions: Sessions<Pages>,
    older_sessions: u64,
    older_pages: u64,
}

impl State {
    /// (sessions, pages) in the window at `now`.
    fn totals(&self, spec: &Spec, now: u64) -> (u64, u64) {
        let from = spec.window.span_ms().map(|span| now.saturating_sub(span));
        let (mut n, mut pages) = match spec.window {
            Window::Lifetime => (self.older_sessions, self.older_pages),
            _ => (0, 0),
        };
        for (start, end, p) in self.sessions.iter() {
            if start <= now && from.is_none_or(|from| end >= from) {
                n += 1;
                pages += p.0;
            }
        }
        (n, pages)
    }

    fn fold_older(&mut self, spec: &Spec, taken: Vec<(u64, u64, Pages)>) {
        if spec.window == Window::Lifetime {
            for (_, _, p) in taken {
                self.older_sessions += 1;
                self.older_pages += p.0;
            }
        }
    }
}

impl Template for State {
    type Spec = Spec;
    const NAMES: &'static [&'static str] = &["sessions", "pages_per_session", "session_length"];

    fn compile(name: &str, params: toml::Table, cx: &CompileCx) -> Result<Spec, Vec<String>> {
        let p = super::params::<Params>(params)?;
        let mut problems = Vec::new();
        let idle = match p.idle.as_deref().map(parse_duration) {
            None => cx.session_idle_ms,
            Some(Ok(ms)) if ms >= SECOND_MS => ms,
            Some(Ok(_)) => {
                problems.push("idle: at least 1s".into());
                cx.session_idle_ms
            }
            Some(Err(e)) => {
                problems.push(format!("idle: {e}"));
                cx.session_idle_ms
            }
        };
        let window = cx.window_not_session(&mut problems);
        let stat = match name {
            "sessions" => Stat::Count,
            "pages_per_session" => Stat::PagesPerSession,
            _ => Stat::Length,
        };
        if problems.is_empty() {
            Ok(Spec { stat, idle, window })
        } else {
            Err(problems)
        }
    }

    fn new(_: &Spec) -> Self {
        Self::default()
    }

    fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, _: Clock) {
        if let Some(p) = self.sessions.slot(spec.idle, time) {
            p.0 += u64::from(ev.kind() == EventType::PageView);
        }
        let taken = self.sessions.take_oldest_over(MAX_KEPT);
        self.fold_older(spec, taken);
    }

    fn touch(&self) -> u64 {
        self.sessions.touch()
    }

    fn prune(&mut self, spec: &Spec, clock: Clock) {
        // A session is dropped once no event within the lateness can reach it and, for a
        // sliding window, it ended before any window still readable begins.
        let horizon = clock.watermark.saturating_sub(clock.lateness);
        let window_start = spec
            .window
            .span_ms()
            .map(|span| clock.watermark.saturating_sub(span));
        let idle = spec.idle;
        let taken = self.sessions.take_where(|_, end| {
            end.saturating_add(idle) <= horizon && window_start.is_none_or(|from| end < from)
        });
        self.fold_older(spec, taken);
    }

    fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
        match spec.stat {
            Stat::Count => Value::Num(self.totals(spec, at.now).0 as f64),
            Stat::PagesPerSession => match self.totals(spec, at.now) {
                (0, _) => Value::Missing,
                (n, pages) => Value::Num(pages as f64 / n as f64),
            },
            Stat::Length => {
                let current = self
                    .sessions
                    .iter()
                    .last()
                    .filter(|(start, end, _)| at.now < end + spec.idle && *start <= at.now);
                Value::Num(current.map_or(0.0, |(start, end, _)| (end - start) as f64 / 1000.0))
            }
        }
    }

    fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
        let (n, pages) = self.totals(spec, at.now);
        let recent: Vec<Json> = self
            .sessions
            .iter()
            .map(|(start, end, p)| json!({"start": start, "end": end, "pages": p.0}))
            .collect();
        json!({"sessions": n, "pages": pages, "recent": recent})
    }

    fn encode(&self, _: &Spec, w: &mut Writer) {
        self.sessions.encode(w);
        w.u64(self.older_sessions);
        w.u64(self.older_pages);
    }

    fn decode(_: &Spec, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            sessions: Sessions::decode(r, MAX_KEPT)?,
            older_sessions: r.u64()?,
            older_pages: r.u64()?,
        })
    }

    fn heap_bytes(&self) -> usize {
        self.sessions.heap_bytes()
    }

    fn window(spec: &Spec) -> Option<Window> {
        Some(spec.window)
    }

    fn same_state(a: &Spec, b: &Spec) -> bool {
        a.idle == b.idle && a.window == b.window
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Golden, event, view};
    use super::*;
    use crate::time::MINUTE_MS;
    use serde_json::json;

    #[test]
    fn golden_sessions_pages_and_length() {
        let minutes = |g: &Golden, m: u64| g.day(50, 8) + m * MINUTE_MS;
        // Session 1: views at 0 and 10, a click at 20. Session 2: views at 90 and 95.
        // Session 3 (day 52): one view.
        let evs = |g: &Golden| {
            vec![
                (view(1, "/a"), minutes(g, 0)),
                (view(2, "/b"), minutes(g, 10)),
                (event(3, EventType::Click, None, "/b", json!({})), minutes(g, 20)),
                (view(4, "/c"), minutes(g, 90)),
                (view(5, "/d"), minutes(g, 95)),
            ]
        };
        let run = |template: &str, window: &str| {
            let g = Golden::new(&format!("template = \"{template}\"\nwindow = \"{window}\""));
            let mut s = g.state();
            for (e, t) in evs(&g) {
                g.apply(&mut s, &e, t);
            }
            g.round_trip(&s);
            (g, s)
        };
        let (g, s) = run("sessions", "1d");
        assert_eq!(g.value(&s, minutes(&g, 100)), Value::Num(2.0));
        let (g, s) = run("pages_per_session", "1d");
        assert_eq!(g.value(&s, minutes(&g, 100)), Value::Num(2.0));
        let (g, s) = run("session_length", "1d");
        assert_eq!(g.value(&s, minutes(&g, 100)), Value::Num(300.0), "90..95");
        assert_eq!(g.value(&s, minutes(&g, 130)), Value::Num(0.0), "timed out");
        // A late event at minute 50 bridges sessions 1 and 2 (gaps of 30 and 40 > idle? no:
        // 20→50 is 30 minutes, not under the idle time), so they stay apart; one at 45 and
        // one at 70 bridge them.
        let (g, mut s) = run("sessions", "lifetime");
        g.apply(&mut s, &view(6, "/e"), minutes(&g, 45));
        g.apply(&mut s, &view(7, "/f"), minutes(&g, 70));
        assert_eq!(g.value(&s, minutes(&g, 100)), Value::Num(1.0));
    }
}
