//! Dedupe of event ids per reader, exact within the allowed lateness and bounded.
//!
//! Every id applied with a time inside the lateness horizon (the reader's watermark minus the
//! allowed lateness) is remembered; older ids can be forgotten because an event that old is
//! refused as late before dedupe is asked, so its retry is refused too. At most `cap` ids are
//! kept per reader: past it, the oldest go and the reader's *floor* rises to their time, and
//! events at or below the floor are refused (`dedupe_full`) rather than risk counting one twice.
//! A reader must send `cap` events within the lateness horizon for that to happen; then the
//! oldest eighth of the ids goes at once (so a flood costs one rebuild per `cap / 8` events).

use crate::state::codec::{CodecError, Reader, Writer};

/// What dedupe says of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before: apply it.
    Fresh,
    /// Its id was applied already.
    Duplicate,
    /// At or below the floor raised by a flood of events.
    Full,
}

/// The remembered ids of one reader, in an open-addressing table keyed by the id's own bits
/// (ids are random, so they hash themselves): a check is a probe or two whatever the count.
/// Times sit beside the keys for expiry; the table is rebuilt when ids expire (once an hour of
/// event time at most) or past the bound. Written sorted by id.
#[derive(Clone, Debug, Default)]
pub struct Dedupe {
    /// Keys (0 = empty; a key of 0 is stored as 1), a power of two long.
    keys: Vec<u64>,
    times: Vec<u64>,
    len: usize,
    floor: u64,
}

impl PartialEq for Dedupe {
    fn eq(&self, other: &Self) -> bool {
        self.floor == other.floor && self.sorted() == other.sorted()
    }
}

/// The 64-bit dedupe key of a 128-bit random id (never 0, the empty slot).
fn short(id: u128) -> u64 {
    match (id >> 64) as u64 ^ id as u64 {
        0 => 0x9e37_79b9_7f4a_7c15,
        k => k,
    }
}

impl Dedupe {
    fn sorted(&self) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = self
            .keys
            .iter()
            .zip(&self.times)
            .filter(|(k, _)| **k != 0)
            .map(|(k, t)| (*k, *t))
            .collect();
        all.sort_unstable();
        all
    }

    /// The slot of `key`, or of the empty place it would go.
    fn probe(&self, key: u64) -> usize {
        let mask = self.keys.len() - 1;
        let mut i = (key as usize) & mask;
        while self.keys[i] != 0 && self.keys[i] != key {
            i = (i + 1) & mask;
        }
        i
    }

    /// Rebuilds the table for `entries` with room to grow.
    fn rebuild(&mut self, entries: Vec<(u64, u64)>) {
        let cap = (entries.len() * 2).max(8).next_power_of_two();
        self.keys = vec![0; cap];
        self.times = vec![0; cap];
        self.len = 0;
        for (k, t) in entries {
            let i = self.probe(k);
            self.keys[i] = k;
            self.times[i] = t;
            self.len += 1;
        }
    }

    /// Checks an event and remembers it when fresh.
    pub fn check(&mut self, id: u128, time: u64, cap: usize) -> Seen {
        if self.floor > 0 && time <= self.floor {
            return Seen::Full;
        }
        let key = short(id);
        if self.keys.is_empty() {
            self.rebuild(Vec::new());
        }
        let i = self.probe(key);
        if self.keys[i] == key {
            return Seen::Duplicate;
        }
        self.keys[i] = key;
        self.times[i] = time;
        self.len += 1;
        if self.len > cap {
            // The oldest eighth goes (at least one), and the floor rises to the latest time
            // among them: one rebuild per cap/8 new ids under a flood.
            let mut all = self.sorted();
            all.sort_unstable_by_key(|(k, t)| (*t, *k));
            let gone = (cap / 8).max(1).min(all.len());
            self.floor = self.floor.max(all[gone - 1].1);
            all.drain(..gone);
            all.sort_unstable();
            self.rebuild(all);
        } else if self.len * 4 > self.keys.len() * 3 {
            let all = self.sorted();
            self.rebuild(all);
        }
        Seen::Fresh
    }

    /// Forgets ids older than `horizon`.
    pub fn expire(&mut self, horizon: u64) {
        if self
            .times
            .iter()
            .zip(&self.keys)
            .any(|(t, k)| *k != 0 && *t < horizon)
        {
            let kept: Vec<(u64, u64)> = self
                .sorted()
                .into_iter()
                .filter(|(_, t)| *t >= horizon)
                .collect();
            self.rebuild(kept);
        }
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The floor (0 when none).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.keys.capacity() + self.times.capacity()) * 8
    }

    /// Writes the ids (sorted by id) with their times as distances back from `watermark` (the
    /// reader's; all ids are within the lateness of it, so a few bytes each).
    pub(crate) fn encode(&self, w: &mut Writer, watermark: u64) {
        let ids = self.sorted();
        w.u64(self.floor);
        w.u64(ids.len() as u64);
        for (k, t) in &ids {
            w.fixed64(*k);
            w.u64(watermark.saturating_sub(*t));
        }
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        cap: usize,
        watermark: u64,
    ) -> Result<Self, CodecError> {
        let floor = r.u64()?;
        let n = r.len(cap)?;
        let mut ids: Vec<(u64, u64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.fixed64()?;
            if k == 0 || ids.last().is_some_and(|(last, _)| *last >= k) {
                return Err(CodecError::Invalid("dedupe ids out of order"));
            }
            let t = watermark
                .checked_sub(r.u64()?)
                .ok_or(CodecError::Invalid("dedupe time"))?;
            ids.push((k, t));
        }
        let mut d = Self {
            floor,
            ..Self::default()
        };
        if !ids.is_empty() {
            d.rebuild(ids);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_bounded() {
        let mut d = Dedupe::default();
        assert_eq!(d.check(1, 10, 3), Seen::Fresh);
        assert_eq!(d.check(1, 10, 3), Seen::Duplicate);
        assert_eq!(d.check(2, 11, 3), Seen::Fresh);
        assert_eq!(d.check(3, 12, 3), Seen::Fresh);
        assert_eq!(d.check(4, 13, 3), Seen::Fresh);
        assert_eq!(d.len(), 3);
        assert_eq!(d.floor(), 10, "the oldest went: the floor is its time");
        assert_eq!(
            d.check(1, 10, 3),
            Seen::Full,
            "a retry of the forgotten one"
        );
        assert_eq!(d.check(5, 9, 3), Seen::Full);
        d.expire(13);
        assert_eq!(d.len(), 1);
        let mut w = Writer::default();
        d.encode(&mut w, 20);
        assert_eq!(Dedupe::decode(&mut Reader::new(&w.buf), 3, 20).unwrap(), d);
    }
}
