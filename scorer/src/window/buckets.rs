//! Sliding windows over buckets: `n` days or `n` hours by event time. A bucket holds the
//! accumulator of every event in it; the window at `now` is the buckets from `now`'s back `n`.
//! Memory is at most `n` buckets: a bucket that no window at or after the reader's watermark can
//! reach is dropped, and an event that would land in one changes nothing.

use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::units;

use super::Acc;

/// Buckets by index (`time / unit`), oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Buckets<A> {
    items: Vec<(u64, A)>,
}

/// Whether bucket `idx` can still be in a window of `n` buckets that ends at or after the
/// bucket of the watermark.
fn readable(idx: u64, n: u64, watermark_idx: u64) -> bool {
    idx + n > watermark_idx
}

impl<A: Acc> Buckets<A> {
    pub(crate) fn slot(&mut self, unit: u64, n: u64, time: u64, watermark: u64) -> Option<&mut A> {
        let idx = units(time, unit);
        if !readable(idx, n, units(watermark, unit)) {
            return None;
        }
        // Most events land in the latest bucket.
        if self.items.last().is_some_and(|(i, _)| *i == idx) {
            let at = self.items.len() - 1;
            return Some(&mut self.items[at].1);
        }
        let at = match self.items.binary_search_by_key(&idx, |(i, _)| *i) {
            Ok(at) => at,
            Err(at) => {
                self.items.insert(at, (idx, A::default()));
                at
            }
        };
        Some(&mut self.items[at].1)
    }

    pub(crate) fn fold<R>(
        &self,
        unit: u64,
        n: u64,
        now: u64,
        init: R,
        mut f: impl FnMut(R, &A) -> R,
    ) -> R {
        let last = units(now, unit);
        let first = (last + 1).saturating_sub(n);
        self.items
            .iter()
            .filter(|(i, _)| (first..=last).contains(i))
            .fold(init, |acc, (_, a)| f(acc, a))
    }

    pub(crate) fn parts(&self, unit: u64, n: u64, now: u64) -> Vec<(String, &A)> {
        let last = units(now, unit);
        let first = (last + 1).saturating_sub(n);
        let name = if unit == crate::time::DAY_MS {
            "day"
        } else {
            "hour"
        };
        self.items
            .iter()
            .filter(|(i, _)| (first..=last).contains(i))
            .map(|(i, a)| (format!("{name} {i}"), a))
            .collect()
    }

    pub(crate) fn touch(&self) -> u64 {
        self.items.last().map_or(0, |(i, a)| i ^ a.touch())
    }

    pub(crate) fn prune(&mut self, unit: u64, n: u64, watermark: u64) {
        let wm = units(watermark, unit);
        self.items.retain(|(i, _)| readable(*i, n, wm));
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.items.len() as u64);
        for (i, a) in &self.items {
            w.u64(*i);
            a.encode(w);
        }
    }

    pub(crate) fn decode(n: u64, r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let len = r.len(usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1))?;
        let mut items = Vec::with_capacity(len);
        let mut last = None;
        for _ in 0..len {
            let i = r.u64()?;
            if last.is_some_and(|l| l >= i) {
                return Err(CodecError::Invalid("buckets out of order"));
            }
            last = Some(i);
            items.push((i, A::decode(r)?));
        }
        Ok(Self { items })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.items.capacity() * size_of::<(u64, A)>()
            + self
                .items
                .iter()
                .map(|(_, a)| a.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

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

    fn sum(b: &Buckets<N>, now: u64) -> u64 {
        b.fold(DAY_MS, 3, now, 0, |s, a| s + a.0)
    }

    #[test]
    fn three_day_window() {
        let d = |day: u64| day * DAY_MS + 1;
        let mut b = Buckets::<N>::default();
        for day in [10, 10, 11, 12] {
            b.slot(DAY_MS, 3, d(day), d(12)).unwrap().0 += 1;
        }
        assert_eq!(sum(&b, d(12)), 4);
        assert_eq!(sum(&b, d(13)), 2, "day 10 left the window");
        assert_eq!(sum(&b, d(9)), 0, "nothing before");
        // An event whose day no window can reach any more changes nothing.
        assert!(b.slot(DAY_MS, 3, d(9), d(12)).is_none());
        b.prune(DAY_MS, 3, d(13));
        assert_eq!(b.items.len(), 2);
        let mut w = Writer::default();
        b.encode(&mut w);
        assert_eq!(
            Buckets::<N>::decode(3, &mut Reader::new(&w.buf)).unwrap(),
            b
        );
    }
}
