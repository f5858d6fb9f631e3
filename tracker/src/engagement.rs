//! Read depth and active time on one page, sans IO.
//!
//! Active time is the time the page was visible and the reader interacted (scroll, key, pointer,
//! touch) within the last [`ACTIVE_GAP_MS`]: each gap between two interactions counts, up to that
//! cap. Becoming visible counts as an interaction. The shell feeds times and scroll positions in
//! and sends [`Engagement::take`] as an `engagement` event when the page is hidden.

/// Longest gap between interactions that still counts as active, in ms (5 s).
pub const ACTIVE_GAP_MS: u64 = 5_000;

/// Engagement on the current page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Engagement {
    max_depth: u32,
    sent_depth: u32,
    active_ms: u64,
    /// Last interaction while visible; `None` while hidden.
    last_active: Option<u64>,
}

impl Engagement {
    /// Starts measuring at `now_ms`; `visible` is the page's visibility then.
    pub fn new(now_ms: u64, visible: bool) -> Self {
        Self {
            last_active: visible.then_some(now_ms),
            ..Self::default()
        }
    }

    /// Records how far down the reader has seen, in percent of the document height (0 to 100).
    pub fn on_depth(&mut self, percent: u32) {
        self.max_depth = self.max_depth.max(percent.min(100));
    }

    /// Records an interaction at `now_ms`.
    pub fn on_activity(&mut self, now_ms: u64) {
        if let Some(last) = self.last_active {
            self.active_ms += now_ms.saturating_sub(last).min(ACTIVE_GAP_MS);
            self.last_active = Some(now_ms.max(last));
        }
    }

    /// Records a visibility change at `now_ms`.
    pub fn on_visibility(&mut self, now_ms: u64, visible: bool) {
        self.on_activity(now_ms);
        self.last_active = visible.then_some(now_ms);
    }

    /// The deepest point seen so far, in percent.
    pub fn read_depth(&self) -> u32 {
        self.max_depth
    }

    /// `(read_depth, active_ms)` to send at `now_ms`: the deepest point seen and the active time
    /// since the last call. `None` when neither changed since the last call.
    pub fn take(&mut self, now_ms: u64) -> Option<(u32, u64)> {
        self.on_activity(now_ms);
        if self.active_ms == 0 && self.max_depth <= self.sent_depth {
            return None;
        }
        let active = core::mem::take(&mut self.active_ms);
        self.sent_depth = self.max_depth;
        Some((self.max_depth, active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_time_counts_gaps_up_to_the_cap_while_visible() {
        let mut e = Engagement::new(0, true);
        e.on_activity(1_000); // +1 s
        e.on_activity(3_000); // +2 s
        e.on_activity(60_000); // idle 57 s: +5 s
        e.on_visibility(61_000, false); // +1 s, then hidden
        e.on_activity(70_000); // hidden: nothing
        e.on_visibility(100_000, true);
        e.on_activity(102_000); // +2 s
        e.on_depth(35);
        e.on_depth(20);
        e.on_depth(250);
        assert_eq!(e.take(102_500), Some((100, 11_500)));
        // Nothing new since: nothing to send (pagehide right after visibilitychange).
        assert_eq!(e.take(102_500), None);
    }

    #[test]
    fn hidden_from_the_start_counts_nothing() {
        let mut e = Engagement::new(0, false);
        e.on_activity(1_000);
        assert_eq!(e.take(2_000), None);
        e.on_depth(10);
        assert_eq!(e.take(2_000), Some((10, 0)));
    }
}
