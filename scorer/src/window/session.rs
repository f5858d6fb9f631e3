//! The session window: events whose gaps are under the idle time form a session; the window at
//! `now` is the reader's current session (the latest one, while `now` is within `idle` of its
//! end). Late events may bridge two sessions, which then merge (as Flink's merging windows do),
//! so the result does not depend on arrival order within the allowed lateness. Sessions that no
//! event within the lateness can reach are dropped; at most [`MAX_SESSIONS`] are kept.

use crate::state::codec::{CodecError, Reader, Writer};

use super::{Acc, Clock};

/// Most sessions a window keeps (the oldest go first).
pub(crate) const MAX_SESSIONS: usize = 64;

#[derive(Clone, Debug, Default, PartialEq)]
struct Session<A> {
    start: u64,
    end: u64,
    acc: A,
}

/// A reader's sessions, oldest first, not overlapping.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sessions<A> {
    items: Vec<Session<A>>,
}

impl<A: Acc> Sessions<A> {
    pub(crate) fn slot(&mut self, idle: u64, time: u64) -> Option<&mut A> {
        let joins = |s: &Session<A>| {
            time < s.end.saturating_add(idle) && s.start < time.saturating_add(idle)
        };
        // The common case: the event extends the latest session from inside or after its
        // start (no earlier session can join: each ended at least `idle` before it began).
        if self
            .items
            .last()
            .is_some_and(|l| l.start <= time && time < l.end.saturating_add(idle))
        {
            let last = self.items.last_mut()?;
            last.end = last.end.max(time);
            return Some(&mut last.acc);
        }
        // Most events extend the latest session: look from the end. Sessions are sorted and
        // apart by at least `idle`, so only those starting before `time + idle` can join, and
        // the ones that do are contiguous, ending at the last of those.
        let last_before = self
            .items
            .partition_point(|s| s.start < time.saturating_add(idle));
        let mut first = None;
        let mut i = last_before;
        while i > 0 && joins(&self.items[i - 1]) {
            i -= 1;
            first = Some(i);
        }
        let at = match first {
            None => {
                let at = self.items.partition_point(|s| s.start < time);
                self.items.insert(
                    at,
                    Session {
                        start: time,
                        end: time,
                        acc: A::default(),
                    },
                );
                at
            }
            Some(first) => {
                // Every session the event touches is contiguous from `first`: merge them.
                while first + 1 < self.items.len() && joins(&self.items[first + 1]) {
                    let next = self.items.remove(first + 1);
                    let s = &mut self.items[first];
                    s.end = s.end.max(next.end);
                    s.acc.merge(&next.acc);
                }
                first
            }
        };
        let s = &mut self.items[at];
        s.start = s.start.min(time);
        s.end = s.end.max(time);
        Some(&mut s.acc)
    }

    /// The current session at `now`, if one is open.
    fn current(&self, idle: u64, now: u64) -> Option<&Session<A>> {
        self.items
            .last()
            .filter(|s| now < s.end.saturating_add(idle) && now.saturating_add(idle) > s.start)
    }

    pub(crate) fn fold<R>(&self, idle: u64, now: u64, init: R, mut f: impl FnMut(R, &A) -> R) -> R {
        match self.current(idle, now) {
            Some(s) => f(init, &s.acc),
            None => init,
        }
    }

    pub(crate) fn parts(&self, idle: u64, now: u64) -> Vec<(String, &A)> {
        self.current(idle, now)
            .map(|s| vec![(format!("session {}..{}", s.start, s.end), &s.acc)])
            .unwrap_or_default()
    }

    /// Keeps the current session's window to what an event within the lateness can still
    /// reach, and at most [`MAX_SESSIONS`].
    pub(crate) fn touch(&self) -> u64 {
        self.items.last().map_or(0, |s| s.end ^ s.acc.touch())
    }

    pub(crate) fn prune(&mut self, idle: u64, clock: Clock) {
        let horizon = clock.watermark.saturating_sub(clock.lateness);
        self.take_where(|_, end| end.saturating_add(idle) <= horizon);
        self.take_oldest_over(MAX_SESSIONS);
    }

    /// Removes the sessions `(start, end)` for which `pred` holds (never the latest one), and
    /// returns them.
    pub(crate) fn take_where(&mut self, pred: impl Fn(u64, u64) -> bool) -> Vec<(u64, u64, A)> {
        let latest = self.items.len().saturating_sub(1);
        if !self.items[..latest].iter().any(|s| pred(s.start, s.end)) {
            return Vec::new();
        }
        self.items
            .extract_if(..latest, |s| pred(s.start, s.end))
            .map(|s| (s.start, s.end, s.acc))
            .collect()
    }

    /// Removes the oldest sessions past `cap`, and returns them.
    pub(crate) fn take_oldest_over(&mut self, cap: usize) -> Vec<(u64, u64, A)> {
        let over = self.items.len().saturating_sub(cap);
        if over == 0 {
            return Vec::new();
        }
        self.items
            .drain(..over)
            .map(|s| (s.start, s.end, s.acc))
            .collect()
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.items.len() as u64);
        for s in &self.items {
            w.u64(s.start);
            w.u64(s.end - s.start);
            s.acc.encode(w);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, cap: usize) -> Result<Self, CodecError> {
        let len = r.len(cap)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            let start = r.u64()?;
            let end = start
                .checked_add(r.u64()?)
                .ok_or(CodecError::Invalid("session end"))?;
            items.push(Session {
                start,
                end,
                acc: A::decode(r)?,
            });
        }
        Ok(Self { items })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.items.capacity() * size_of::<Session<A>>()
            + self.items.iter().map(|s| s.acc.heap_bytes()).sum::<usize>()
    }

    /// The sessions' (start, end, accumulator), oldest first (for session templates).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64, &A)> {
        self.items.iter().map(|s| (s.start, s.end, &s.acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MINUTE_MS;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct N(u64);

    impl Acc for N {
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

    const IDLE: u64 = 30 * MINUTE_MS;

    fn add(s: &mut Sessions<N>, minute: u64) {
        s.slot(IDLE, minute * MINUTE_MS).unwrap().0 += 1;
    }

    #[test]
    fn a_late_event_bridges_two_sessions() {
        let mut in_order = Sessions::<N>::default();
        for m in [0, 25, 50] {
            add(&mut in_order, m);
        }
        assert_eq!(in_order.items.len(), 1);
        let mut late = Sessions::<N>::default();
        for m in [0, 50, 25] {
            add(&mut late, m);
        }
        assert_eq!(late, in_order);
        assert_eq!(late.fold(IDLE, 60 * MINUTE_MS, 0, |t, a| t + a.0), 3);
        assert_eq!(
            late.fold(IDLE, 80 * MINUTE_MS, 0, |t, a| t + a.0),
            0,
            "timed out"
        );
        add(&mut late, 200);
        assert_eq!(late.items.len(), 2);
        let mut w = Writer::default();
        late.encode(&mut w);
        assert_eq!(
            Sessions::<N>::decode(&mut Reader::new(&w.buf), MAX_SESSIONS).unwrap(),
            late
        );
    }

    #[test]
    fn bounded() {
        let mut s = Sessions::<N>::default();
        for i in 0..(MAX_SESSIONS as u64 + 10) {
            add(&mut s, i * 100);
            s.prune(
                IDLE,
                Clock {
                    watermark: i * 100 * MINUTE_MS,
                    lateness: 1_000 * 100 * MINUTE_MS,
                },
            );
        }
        assert_eq!(s.items.len(), MAX_SESSIONS);
        assert_eq!(s.items[0].start, 10 * 100 * MINUTE_MS);
    }
}
