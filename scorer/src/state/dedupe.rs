//! Dedupe of event ids per reader, exact within the allowed lateness and bounded.
//!
//! Every id applied with a time inside the lateness horizon (the reader's watermark minus the
//! allowed lateness) is remembered; older ids can be forgotten because an event that old is
//! refused as late before dedupe is asked, so its retry is refused too. At most `cap` ids are
//! kept per reader: past it, the oldest goes and the reader's *floor* rises to its time, and
//! events at or below the floor are refused (`dedupe_full`) rather than risk counting one twice.
//! A reader must send `cap` events within the lateness horizon for that to happen.

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

/// The remembered ids of one reader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dedupe {
    ids: Vec<u64>,
    times: Vec<u64>,
    floor: u64,
}

/// The 64-bit dedupe key of a 128-bit random id.
fn short(id: u128) -> u64 {
    (id >> 64) as u64 ^ id as u64
}

impl Dedupe {
    /// Checks an event and remembers it when fresh.
    pub fn check(&mut self, id: u128, time: u64, cap: usize) -> Seen {
        if self.floor > 0 && time <= self.floor {
            return Seen::Full;
        }
        let key = short(id);
        if self.ids.contains(&key) {
            return Seen::Duplicate;
        }
        self.ids.push(key);
        self.times.push(time);
        if self.ids.len() > cap {
            let oldest = self
                .times
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.floor = self.floor.max(self.times[oldest]);
            self.ids.swap_remove(oldest);
            self.times.swap_remove(oldest);
        }
        Seen::Fresh
    }

    /// Forgets ids older than `horizon`.
    pub fn expire(&mut self, horizon: u64) {
        let mut i = 0;
        while i < self.ids.len() {
            if self.times[i] < horizon {
                self.ids.swap_remove(i);
                self.times.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The floor (0 when none).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.ids.capacity() + self.times.capacity()) * 8
    }

    /// Writes the ids sorted by time, times as deltas.
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.floor);
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_unstable_by_key(|&i| (self.times[i], self.ids[i]));
        w.u64(order.len() as u64);
        let mut prev = 0;
        for i in order {
            w.u64(self.times[i] - prev);
            prev = self.times[i];
            w.fixed64(self.ids[i]);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, cap: usize) -> Result<Self, CodecError> {
        let floor = r.u64()?;
        let n = r.len(cap)?;
        let (mut ids, mut times) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev
                .checked_add(r.u64()?)
                .ok_or(CodecError::Invalid("dedupe time"))?;
            times.push(prev);
            ids.push(r.fixed64()?);
        }
        Ok(Self { ids, times, floor })
    }

    /// Puts the ids in a canonical order (state compares equal whatever the arrival order).
    pub(crate) fn normalize(&mut self) {
        let mut pairs: Vec<(u64, u64)> = self
            .times
            .iter()
            .copied()
            .zip(self.ids.iter().copied())
            .collect();
        pairs.sort_unstable();
        (self.times, self.ids) = pairs.into_iter().unzip();
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
        d.encode(&mut w);
        assert_eq!(Dedupe::decode(&mut Reader::new(&w.buf), 3).unwrap(), d);
    }
}
