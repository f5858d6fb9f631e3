//! At most `n` of something per second, by the clock the caller passes (ms): which shadow
//! differences are logged. Lock-free: one second's count in one atomic word.

use std::sync::atomic::{AtomicU64, Ordering};

/// A per-second allowance.
#[derive(Debug)]
pub(crate) struct PerSecond {
    per_second: u32,
    /// The second (high 32 bits) and how many were let through in it (low 32 bits).
    state: AtomicU64,
}

impl PerSecond {
    /// At most `per_second` a second (0: none).
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: AtomicU64::new(0),
        }
    }

    /// Whether one more is let through at `now_ms`.
    pub(crate) fn allow(&self, now_ms: u64) -> bool {
        if self.per_second == 0 {
            return false;
        }
        // Seconds since the epoch fit 32 bits until 2106.
        let second = (now_ms / 1000) & 0xffff_ffff;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (at, used) = (current >> 32, current & 0xffff_ffff);
            let used = if at == second { used } else { 0 };
            if used >= u64::from(self.per_second) {
                return false;
            }
            let next = (second << 32) | (used + 1);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_a_second() {
        let s = PerSecond::new(3);
        let t = 1_800_000_000_000;
        assert_eq!((0..10).filter(|_| s.allow(t)).count(), 3);
        assert!(!s.allow(t + 999));
        assert!(s.allow(t + 1000));
        assert_eq!((0..10).filter(|_| s.allow(t + 1500)).count(), 2);
        assert!(!PerSecond::new(0).allow(t));
    }
}
