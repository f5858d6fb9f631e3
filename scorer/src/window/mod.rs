//! Windows by event time, one file per kind: [`lifetime`](Window::Lifetime), sliding days and
//! hours over buckets (`buckets.rs`: bounded memory, buckets not raw events), and the current
//! session (`session.rs`). A template keeps its accumulator `A` in a [`Windowed<A>`], asks it
//! for the slot an event at time `t` belongs to, and folds the slots inside the window at `now`
//! to read its value.

mod buckets;
mod session;

use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::{DAY_MS, HOUR_MS};

pub(crate) use buckets::Buckets;
pub(crate) use session::Sessions;

/// Longest sliding window in days.
pub(crate) const MAX_WINDOW_DAYS: u64 = 400;
/// Longest sliding window in hours.
pub(crate) const MAX_WINDOW_HOURS: u64 = 720;

/// A window kind, as a bundle writes it: `"lifetime"`, `"30d"`, `"12h"` or `"session"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Every event the reader ever sent (until the reader's TTL).
    Lifetime,
    /// The last `n` buckets of `unit_ms` (days or hours) up to the one `now` is in.
    Sliding {
        /// Bucket length, [`DAY_MS`] or [`HOUR_MS`].
        unit_ms: u64,
        /// Number of buckets.
        n: u64,
    },
    /// The reader's current session: events with gaps under `idle_ms`.
    Session {
        /// The gap that ends a session.
        idle_ms: u64,
    },
}

impl Window {
    /// Parses a window; `session_idle_ms` is the bundle's session gap.
    pub fn parse(s: &str, session_idle_ms: u64) -> Result<Self, String> {
        match s {
            "lifetime" => return Ok(Self::Lifetime),
            "session" => {
                return Ok(Self::Session {
                    idle_ms: session_idle_ms,
                });
            }
            _ => {}
        }
        let bad = || format!("{s:?} is not a window (\"lifetime\", \"session\", \"30d\", \"12h\")");
        let (n, unit_ms, max) = match (s.strip_suffix('d'), s.strip_suffix('h')) {
            (Some(n), _) => (n, DAY_MS, MAX_WINDOW_DAYS),
            (_, Some(n)) => (n, HOUR_MS, MAX_WINDOW_HOURS),
            _ => return Err(bad()),
        };
        let n: u64 = n.parse().map_err(|_| bad())?;
        if n == 0 || n > max {
            return Err(format!("{s:?}: between 1 and {max}"));
        }
        Ok(Self::Sliding { unit_ms, n })
    }

    /// How far back from `now` the window reaches, in ms (`None` for lifetime).
    pub fn span_ms(&self) -> Option<u64> {
        match self {
            Self::Lifetime => None,
            Self::Sliding { unit_ms, n } => Some(unit_ms * n),
            Self::Session { idle_ms } => Some(*idle_ms),
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lifetime => f.write_str("lifetime"),
            Self::Sliding { unit_ms, n } if *unit_ms == DAY_MS => write!(f, "{n}d"),
            Self::Sliding { n, .. } => write!(f, "{n}h"),
            Self::Session { .. } => f.write_str("session"),
        }
    }
}

/// What windows need to know of the reader when an event arrives or state is pruned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// The reader's watermark: the latest event time applied.
    pub(crate) watermark: u64,
    /// The bundle's allowed lateness: no event older than `watermark - lateness` arrives.
    pub(crate) lateness: u64,
}

/// An accumulator that windows keep per slot and merge across slots.
pub(crate) trait Acc: Clone + Default + std::fmt::Debug + PartialEq {
    /// Adds `other` into `self` (two buckets, or two sessions bridged by an event).
    fn merge(&mut self, other: &Self);
    /// Writes the accumulator.
    fn encode(&self, w: &mut Writer);
    /// Reads it back.
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError>;
    /// Heap bytes it holds (for the cache's accounting).
    fn heap_bytes(&self) -> usize {
        0
    }
    /// A word of its heap block, if it has one ([`crate::templates::Template::touch`]).
    fn touch(&self) -> u64 {
        0
    }
}

/// An accumulator kept over a window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Windowed<A> {
    /// One accumulator for everything.
    Lifetime(A),
    /// One per bucket.
    Sliding(Buckets<A>),
    /// One per session.
    Session(Sessions<A>),
}

impl<A: Acc> Windowed<A> {
    /// An empty accumulator for `window`.
    pub(crate) fn new(window: &Window) -> Self {
        match window {
            Window::Lifetime => Self::Lifetime(A::default()),
            Window::Sliding { .. } => Self::Sliding(Buckets::default()),
            Window::Session { .. } => Self::Session(Sessions::default()),
        }
    }

    /// The slot an event at `time` goes into, or `None` when no window that can still be read
    /// contains it (the event changes no window).
    pub(crate) fn slot(&mut self, window: &Window, time: u64, clock: Clock) -> Option<&mut A> {
        match (self, window) {
            (Self::Lifetime(a), _) => Some(a),
            (Self::Sliding(b), Window::Sliding { unit_ms, n }) => {
                b.slot(*unit_ms, *n, time, clock.watermark)
            }
            (Self::Session(s), Window::Session { idle_ms }) => s.slot(*idle_ms, time),
            _ => None,
        }
    }

    /// Folds the slots inside the window that ends at `now`.
    pub(crate) fn fold<R>(
        &self,
        window: &Window,
        now: u64,
        init: R,
        f: impl FnMut(R, &A) -> R,
    ) -> R {
        match (self, window) {
            (Self::Lifetime(a), _) => {
                let mut f = f;
                f(init, a)
            }
            (Self::Sliding(b), Window::Sliding { unit_ms, n }) => {
                b.fold(*unit_ms, *n, now, init, f)
            }
            (Self::Session(s), Window::Session { idle_ms }) => s.fold(*idle_ms, now, init, f),
            _ => init,
        }
    }

    /// The slots inside the window at `now`, each with a label (`"day 20394"`, `"session from
    /// ..."`), for explanations.
    pub(crate) fn parts(&self, window: &Window, now: u64) -> Vec<(String, &A)> {
        match (self, window) {
            (Self::Lifetime(a), _) => vec![("lifetime".to_owned(), a)],
            (Self::Sliding(b), Window::Sliding { unit_ms, n }) => b.parts(*unit_ms, *n, now),
            (Self::Session(s), Window::Session { idle_ms }) => s.parts(*idle_ms, now),
            _ => Vec::new(),
        }
    }

    /// A word of the latest slot and of its accumulator's heap block.
    pub(crate) fn touch(&self) -> u64 {
        match self {
            Self::Lifetime(a) => a.touch(),
            Self::Sliding(b) => b.touch(),
            Self::Session(s) => s.touch(),
        }
    }

    /// Forgets what no window can read any more.
    pub(crate) fn prune(&mut self, window: &Window, clock: Clock) {
        match (self, window) {
            (Self::Lifetime(_), _) => {}
            (Self::Sliding(b), Window::Sliding { unit_ms, n }) => {
                b.prune(*unit_ms, *n, clock.watermark);
            }
            (Self::Session(s), Window::Session { idle_ms }) => s.prune(*idle_ms, clock),
            _ => {}
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            Self::Lifetime(a) => a.encode(w),
            Self::Sliding(b) => b.encode(w),
            Self::Session(s) => s.encode(w),
        }
    }

    pub(crate) fn decode(window: &Window, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match window {
            Window::Lifetime => Self::Lifetime(A::decode(r)?),
            Window::Sliding { n, .. } => Self::Sliding(Buckets::decode(*n, r)?),
            Window::Session { .. } => Self::Session(Sessions::decode(r, session::MAX_SESSIONS)?),
        })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::Lifetime(a) => a.heap_bytes(),
            Self::Sliding(b) => b.heap_bytes(),
            Self::Session(s) => s.heap_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows() {
        assert_eq!(Window::parse("lifetime", 1), Ok(Window::Lifetime));
        assert_eq!(
            Window::parse("session", 7),
            Ok(Window::Session { idle_ms: 7 })
        );
        assert_eq!(
            Window::parse("30d", 1),
            Ok(Window::Sliding {
                unit_ms: DAY_MS,
                n: 30
            })
        );
        assert_eq!(Window::parse("12h", 1).unwrap().to_string(), "12h");
        for bad in ["0d", "401d", "721h", "d", "30", "week", "-1d"] {
            assert!(Window::parse(bad, 1).is_err(), "{bad}");
        }
    }
}
