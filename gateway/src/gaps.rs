//! Gaps in sessions' batch numbers: the tracker numbers each session's batches from 0 and a
//! retry resends its number, so a number never received while later ones are is a batch lost
//! on its way (a page killed with its batch unsent and no outbox, storage cleared, a proxy
//! that dropped it).
//!
//! Counted where every batch of a reader arrives: the gateway of a single process (`role =
//! all`, after the batch is stored) or the scorer that owns the reader's partition (as it
//! applies the events topic). Each tracked session keeps its highest number and which of the
//! 64 numbers below it arrived; a number still missing when it leaves that window (64 later
//! batches) or when the session goes idle for an hour is counted lost. A batch that arrives
//! after its number was counted is counted late (lost minus late is what never came). Numbers
//! below the first one seen are not counted: a scorer given a partition, or a restart, starts
//! in the middle of sessions. A jump counts at most [`MAX_JUMP`] lost (a forged number costs
//! the count, not memory), and at most 229,376 sessions are tracked ([`PER_SHARD`] in each of
//! 16 shards), in tables that never grow past [`SLOTS`] slots of 25 bytes each (6.5 MB when
//! full); beyond that, batches of new sessions are counted untracked until idle ones go, and so
//! are a session's numbers past `u32::MAX` (four billion batches: only a forged number gets
//! there).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;
/// Slots of a shard's table when full. A hash table of `2^k` slots holds `7/8` of them before
/// it doubles (hashbrown's load factor), so a shard takes at most [`PER_SHARD`] sessions: its
/// table then has this many slots, never twice as many with half of them empty.
const SLOTS: usize = 16 * 1024;
/// Most sessions one shard tracks.
const PER_SHARD: usize = SLOTS / 8 * 7;
/// Most sessions tracked at once (229,376).
#[cfg(test)]
const MAX_SESSIONS: usize = PER_SHARD * SHARDS;
/// Most batches one jump of a session's number counts lost.
pub(crate) const MAX_JUMP: u64 = 1024;
/// A session idle this long is done: its missing numbers are counted and it is forgotten.
const IDLE_MS: u64 = 60 * 60 * 1000;
/// How often a shard drops its idle sessions.
const SWEEP_EVERY_MS: u64 = 60 * 1000;

/// One session: its highest number, and bit `i` set when number `high - i` arrived (numbers
/// below the first one seen count as arrived), in 16 bytes (24 with its key).
#[derive(Debug, Clone, Copy)]
struct Track {
    seen: u64,
    high: u32,
    /// When its last batch arrived, in seconds since the Unix epoch.
    last_s: u32,
}

#[derive(Debug, Default)]
struct Shard {
    sessions: HashMap<u64, Track>,
    swept_ms: u64,
}

/// What has been counted so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeqCounts {
    /// Batches counted lost.
    pub(crate) lost: u64,
    /// Batches that arrived after their number was counted lost.
    pub(crate) late: u64,
    /// Batches of sessions not tracked (the table was full).
    pub(crate) untracked: u64,
    /// Sessions tracked now.
    pub(crate) sessions: u64,
}

/// The sessions' batch numbers (see the module's documentation).
#[derive(Debug)]
pub(crate) struct SeqGaps {
    shards: [Mutex<Shard>; SHARDS],
    hasher: RandomState,
    lost: AtomicU64,
    late: AtomicU64,
    untracked: AtomicU64,
}

impl Default for SeqGaps {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: RandomState::new(),
            lost: AtomicU64::new(0),
            late: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }
}

impl SeqGaps {
    /// Batch `seq` of the session `session` of `anonymous_id` on `site` arrived at `now_ms`.
    pub(crate) fn observe(
        &self,
        site: &str,
        anonymous_id: &str,
        session: &str,
        seq: u64,
        now_ms: u64,
    ) {
        let key = self.hasher.hash_one((site, anonymous_id, session));
        let Ok(mut shard) = self.shards[(key % SHARDS as u64) as usize].lock() else {
            return;
        };
        if now_ms.saturating_sub(shard.swept_ms) >= SWEEP_EVERY_MS {
            shard.swept_ms = now_ms;
            self.sweep(&mut shard, now_ms);
        }
        // A number past `u32::MAX` is not tracked (nor is its session, if it starts there).
        let (Ok(seq), Ok(now_s)) = (u32::try_from(seq), u32::try_from(now_ms / 1000)) else {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let full = shard.sessions.len() >= PER_SHARD;
        let track = match shard.sessions.get_mut(&key) {
            Some(track) => track,
            None if full => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                shard.sessions.insert(
                    key,
                    Track {
                        high: seq,
                        seen: u64::MAX,
                        last_s: now_s,
                    },
                );
                return;
            }
        };
        track.last_s = now_s;
        if seq > track.high {
            let jump = u64::from(seq - track.high);
            let lost = if jump < 64 {
                // The numbers that leave the window, and those still missing among them.
                let leaving = track.seen >> (64 - jump);
                track.seen = (track.seen << jump) | 1;
                jump - u64::from(leaving.count_ones())
            } else {
                let missing = 64 - u64::from(track.seen.count_ones());
                // Between the window's old end and its new start, nothing arrived.
                track.seen = 1;
                missing + (jump - 64).min(MAX_JUMP)
            };
            track.high = seq;
            self.lost.fetch_add(lost, Ordering::Relaxed);
        } else {
            let back = track.high - seq;
            if back >= 64 {
                // Counted lost when it left the window (or below the first number seen, then
                // counted as arrived: not late either).
                self.late.fetch_add(1, Ordering::Relaxed);
            } else {
                track.seen |= 1 << back;
            }
        }
    }

    /// Forgets sessions idle for [`IDLE_MS`], counting what they still miss.
    fn sweep(&self, shard: &mut Shard, now_ms: u64) {
        let mut lost = 0;
        shard.sessions.retain(|_, t| {
            let idle = now_ms.saturating_sub(u64::from(t.last_s) * 1000) >= IDLE_MS;
            if idle {
                lost += 64 - u64::from(t.seen.count_ones());
            }
            !idle
        });
        self.lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> SeqCounts {
        SeqCounts {
            lost: self.lost.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
            sessions: self
                .shards
                .iter()
                .map(|s| s.lock().map_or(0, |s| s.sessions.len() as u64))
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(gaps: &SeqGaps, seqs: impl IntoIterator<Item = u64>) {
        for s in seqs {
            gaps.observe("demo", "a", "s", s, 1_000);
        }
    }

    #[test]
    fn an_unbroken_session_in_any_order_with_retries_loses_nothing() {
        let gaps = SeqGaps::default();
        seen(&gaps, [0, 1, 3, 2, 2, 4, 5, 5, 7, 6]);
        seen(&gaps, 8..200);
        assert_eq!(gaps.counts().lost, 0);
        assert_eq!(gaps.counts().late, 0);
        assert_eq!(gaps.counts().sessions, 1);
    }

    #[test]
    fn a_missing_number_counts_once_it_leaves_the_window_and_a_late_one_after() {
        let gaps = SeqGaps::default();
        seen(&gaps, (0..10).chain(11..74));
        assert_eq!(gaps.counts().lost, 0, "10 may still come");
        seen(&gaps, [74]);
        assert_eq!(gaps.counts().lost, 1);
        seen(&gaps, [10]);
        assert_eq!(gaps.counts().late, 1);
        // A jump past the window: the 36 numbers that never enter it are lost at once, the 63
        // in it once they leave it (or the session goes idle).
        seen(&gaps, [74 + 100]);
        assert_eq!(gaps.counts().lost, 1 + 36);
        seen(&gaps, [74 + 100 + 64]);
        assert_eq!(gaps.counts().lost, 1 + 36 + 63);
    }

    #[test]
    fn idle_sessions_are_forgotten_with_their_holes_counted() {
        let gaps = SeqGaps::default();
        seen(&gaps, [5, 7]);
        // Other sessions, an hour later, sweep the shards they land in (1,000 reach all 16).
        for i in 0..1000 {
            gaps.observe("demo", "b", &i.to_string(), 0, 1_000 + IDLE_MS);
        }
        assert_eq!(
            gaps.counts().lost,
            1,
            "6 never came; 0-4 were before the first seen"
        );
        assert_eq!(gaps.counts().sessions, 1000);
    }

    #[test]
    fn forged_numbers_cost_a_bounded_count_and_no_memory() {
        let gaps = SeqGaps::default();
        seen(&gaps, [0, u64::from(u32::MAX), u64::MAX, 3]);
        assert_eq!(gaps.counts().lost, MAX_JUMP);
        assert_eq!(gaps.counts().late, 1);
        // Past what a session's 32-bit number holds: not tracked.
        assert_eq!(gaps.counts().untracked, 1);
        assert_eq!(gaps.counts().sessions, 1);
    }

    #[test]
    fn a_full_table_counts_new_sessions_untracked_and_never_grows() {
        let gaps = SeqGaps::default();
        // Twice as many sessions as fit: every shard fills.
        let sent = 2 * MAX_SESSIONS;
        for i in 0..sent {
            gaps.observe("demo", "a", &i.to_string(), 0, 1_000);
        }
        let counts = gaps.counts();
        assert_eq!(counts.sessions, MAX_SESSIONS as u64);
        assert_eq!(counts.sessions + counts.untracked, sent as u64);
        // Each full table holds its sessions in `SLOTS` slots of 24 bytes (and a control
        // byte): 6.5 MB in all, not twice that with half of them empty.
        assert_eq!(size_of::<(u64, Track)>(), 24);
        for shard in &gaps.shards {
            let shard = shard.lock().unwrap();
            assert_eq!(shard.sessions.len(), PER_SHARD);
            assert_eq!(shard.sessions.capacity(), PER_SHARD);
        }
    }
}
