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

/// The remembered ids of one reader, in an open-addressing table: a check is a probe or two
/// whatever the count. Ids are not uniformly random in their low bits (a page's ids count up
/// from a base that shares its low 16 bits with the session's other pages), so the home slot
/// is taken from the high bits of the key times an odd constant (Fibonacci hashing), never
/// from the key's own low bits, which would pile a session's pages onto one run of slots.
/// Each slot holds the key and its time side by side (one cache line for both); the table is
/// rebuilt when ids expire (once an hour of event time at most) or past the bound. Written
/// sorted by id.
#[derive(Clone, Debug, Default)]
pub struct Dedupe {
    /// (key, time) slots (key 0 = empty; a key of 0 is stored as another), a power of two long.
    slots: Vec<(u64, u64)>,
    len: usize,
    floor: u64,
    /// At most the oldest time in the table (exact after an expiry or a rebuild): an expiry
    /// with a horizon at or below it has nothing to do, so it skips the walk.
    oldest: u64,
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
    /// The remembered (key, time) pairs in table order.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots.iter().copied().filter(|(k, _)| *k != 0)
    }

    fn sorted(&self) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = self.entries().collect();
        all.sort_unstable();
        all
    }

    /// The home slot of `key` in a table of `len` (a power of two) slots.
    fn home(key: u64, len: usize) -> usize {
        let bits = len.trailing_zeros();
        if bits == 0 {
            return 0;
        }
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The slot of `key`, or of the empty place it would go.
    fn probe(slots: &[(u64, u64)], key: u64) -> usize {
        let mask = slots.len() - 1;
        let mut i = Self::home(key, slots.len());
        while slots[i].0 != 0 && slots[i].0 != key {
            i = (i + 1) & mask;
        }
        i
    }

    /// Rebuilds the table for the pairs that `keep` admits, with room to grow (no order is
    /// needed: the table's layout never shows).
    fn rebuild(&mut self, extra: usize, keep: impl Fn(u64, u64) -> bool) {
        let kept = self.entries().filter(|&(k, t)| keep(k, t)).count();
        let cap = ((kept + extra) * 2).max(8).next_power_of_two();
        let old = std::mem::replace(&mut self.slots, vec![(0, 0); cap]);
        self.len = 0;
        self.oldest = u64::MAX;
        for (k, t) in old {
            if k != 0 && keep(k, t) {
                let i = Self::probe(&self.slots, k);
                self.slots[i] = (k, t);
                self.len += 1;
                self.oldest = self.oldest.min(t);
            }
        }
    }

    /// Whether `id` was applied (and is still remembered), without remembering it.
    pub fn contains(&self, id: u128) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let key = short(id);
        self.slots[Self::probe(&self.slots, key)].0 == key
    }

    /// A word of the slot each of `ids` is looked up in first.
    pub(crate) fn touch(&self, ids: impl IntoIterator<Item = u128>) -> u64 {
        if self.slots.is_empty() {
            return 0;
        }
        ids.into_iter()
            .map(|id| self.slots[Self::home(short(id), self.slots.len())].0)
            .fold(0, |a, k| a ^ k)
    }

    /// Checks an event and remembers it when fresh.
    pub fn check(&mut self, id: u128, time: u64, cap: usize) -> Seen {
        if self.floor > 0 && time <= self.floor {
            return Seen::Full;
        }
        let key = short(id);
        if self.slots.is_empty() {
            self.slots = vec![(0, 0); 8];
        }
        let i = Self::probe(&self.slots, key);
        if self.slots[i].0 == key {
            return Seen::Duplicate;
        }
        self.slots[i] = (key, time);
        self.len += 1;
        self.oldest = self.oldest.min(time);
        if self.len > cap {
            // The oldest eighth goes (at least one), and the floor rises to the latest time
            // among them: one rebuild per cap/8 new ids under a flood.
            let mut all: Vec<(u64, u64)> = self.entries().collect();
            all.sort_unstable_by_key(|(k, t)| (*t, *k));
            let gone = (cap / 8).max(1).min(all.len());
            let (edge_k, edge_t) = all[gone - 1];
            self.floor = self.floor.max(edge_t);
            // Everything up to the edge in (time, key) order goes.
            self.rebuild(0, |k, t| (t, k) > (edge_t, edge_k));
        } else if self.len * 4 > self.slots.len() * 3 {
            self.rebuild(1, |_, _| true);
        }
        Seen::Fresh
    }

    /// Empties slot `i` and moves back the entries after it that probing would no longer
    /// reach (backward-shift deletion: no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        self.len -= 1;
        'hole: loop {
            self.slots[i] = (0, 0);
            let mut j = i;
            loop {
                j = (j + 1) & mask;
                let k = self.slots[j].0;
                if k == 0 {
                    return;
                }
                let home = Self::home(k, self.slots.len());
                // The entry at j may fill the hole at i when its home is not in (i, j].
                let stays = if i <= j {
                    i < home && home <= j
                } else {
                    i < home || home <= j
                };
                if !stays {
                    self.slots[i] = self.slots[j];
                    i = j;
                    continue 'hole;
                }
            }
        }
    }

    /// Forgets ids older than `horizon`.
    pub fn expire(&mut self, horizon: u64) {
        if horizon <= self.oldest {
            return;
        }
        let mut i = 0;
        let mut oldest = u64::MAX;
        while i < self.slots.len() {
            let (k, t) = self.slots[i];
            if k != 0 && t < horizon {
                // An entry from after `i` may move into it: look at `i` again.
                self.remove_at(i);
            } else {
                if k != 0 {
                    oldest = oldest.min(t);
                }
                i += 1;
            }
        }
        self.oldest = oldest;
        if self.slots.len() > 8 && self.len * 8 < self.slots.len() {
            self.rebuild(0, |_, _| true);
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
        self.slots.capacity() * 16
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
            oldest: u64::MAX,
            ..Self::default()
        };
        if !ids.is_empty() {
            d.slots = vec![(0, 0); (ids.len() * 2).max(8).next_power_of_two()];
            for (k, t) in ids {
                let i = Self::probe(&d.slots, k);
                d.slots[i] = (k, t);
                d.oldest = d.oldest.min(t);
            }
            d.len = n;
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_answers_without_remembering() {
        let mut d = Dedupe::default();
        assert!(!d.contains(7));
        assert_eq!(d.check(7, 100, 64), Seen::Fresh);
        assert!(d.contains(7));
        assert!(!d.contains(8), "asking remembers nothing");
        assert_eq!(d.check(8, 100, 64), Seen::Fresh);
    }

    #[test]
    fn expiry_keeps_every_younger_id_findable() {
        // Ids crowded into three home slots at the end of the table, whatever its size (their
        // keys made from the inverse of the hash's multiplier), expired in every order of
        // times: what is kept is exactly the younger ones, each still found (backward-shift
        // deletion keeps probes whole, also across the table's wrap).
        const C: u64 = 0x9e37_79b9_7f4a_7c15;
        let inverse = (0..6).fold(C, |x, _| {
            x.wrapping_mul(2u64.wrapping_sub(C.wrapping_mul(x)))
        });
        assert_eq!(inverse.wrapping_mul(C), 1);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200u64 {
            let mut d = Dedupe::default();
            let mut all = Vec::new();
            for n in 0..40u64 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // The product's top 6 bits are 61, 62 or 63 and the next ones 0: the home is
                // one of the last three sixty-fourths of any table.
                let top = 61 + rng % 3;
                let id = u128::from(inverse.wrapping_mul((top << 58) | (rng >> 40)));
                let t = 1 + (rng >> 40) % 50;
                if d.check(id, t, 1000) == Seen::Fresh {
                    all.push((id, t));
                }
                let _ = n;
            }
            let len = d.slots.len();
            assert!(
                d.entries()
                    .all(|(k, _)| Dedupe::home(k, len) >= len - 1 - len * 3 / 64),
                "crowded at the end"
            );
            let horizon = 1 + round % 50;
            d.expire(horizon);
            let kept: Vec<_> = all.iter().filter(|(_, t)| *t >= horizon).collect();
            assert_eq!(d.len(), kept.len());
            for (id, t) in &kept {
                assert_eq!(d.check(*id, *t, 1000), Seen::Duplicate);
            }
            for (id, t) in all.iter().filter(|(_, t)| *t < horizon) {
                assert_eq!(d.check(*id, *t, 1000), Seen::Fresh, "expired, so new again");
            }
        }
    }

    #[test]
    fn a_sessions_pages_do_not_pile_up() {
        // The tracker's ids: each page counts up from the session id plus 48 random bits
        // above the low 16, so every page's ids share their low bits. Each lookup must stay
        // a probe or two; a home slot from the low bits made them runs of hundreds.
        let session: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let mut d = Dedupe::default();
        let mut rng = 0x9e37_79b9u64;
        for _page in 0..20 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let base = session.wrapping_add(u128::from(rng << 16));
            for i in 0..50 {
                assert_eq!(d.check(base + i, 1, 10_000), Seen::Fresh);
            }
        }
        let mask = d.slots.len() - 1;
        let longest = (0..d.slots.len())
            .filter(|&i| d.slots[i].0 != 0)
            .map(|i| i.wrapping_sub(Dedupe::home(d.slots[i].0, d.slots.len())) & mask)
            .max();
        assert!(longest.unwrap() < 24, "longest probe {longest:?}");
    }

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
