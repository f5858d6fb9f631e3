//! One reader's state: page views in day buckets, the metered pages granted in the rolling
//! window, the event ids already applied, and traits. Pure: every method takes the time.

use std::collections::{BTreeMap, HashMap};

use pulse_protocol::{Action, Decision, Event, EventId, EventType, MAX_EVENT_AGE_MS};
use serde::{Deserialize, Serialize};

use crate::MeterRules;

/// Milliseconds in a day; day buckets are `time / DAY_MS` (UTC days).
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How many days event ids are remembered for dedupe: as long as the gateway accepts late events.
const SEEN_DAYS: u32 = (MAX_EVENT_AGE_MS / DAY_MS) as u32 + 1;

/// The page a decision is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct Page {
    /// [`page_key`] of the page's URL.
    key: u64,
    /// Whether the page is metered (its `content_type` matches the rules).
    metered: bool,
}

/// A reader's state. Serialized into the state store between batches.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ReaderState {
    /// Page views per UTC day (all pages), kept for the window.
    views: BTreeMap<u32, u32>,
    /// Metered pages granted for free, by the day of their grant.
    granted: BTreeMap<u32, Vec<u64>>,
    /// Ids of events already applied, with their day; kept as long as late events are accepted.
    seen: HashMap<EventId, u32>,
    /// The reader's last page view.
    last_page: Option<Page>,
    /// Whether the reader identified with the trait `subscriber: true`.
    subscriber: bool,
}

/// A stable 64-bit key of a page URL without its query and fragment (FNV-1a), so that a reload
/// or a tracking parameter does not make the same article count twice.
pub fn page_key(url: &str) -> u64 {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let path = url[..end].trim_end_matches('/');
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn day_of(time: u64) -> u32 {
    u32::try_from(time / DAY_MS).unwrap_or(u32::MAX)
}

impl ReaderState {
    /// Applies one event at event time `time`, as seen at `now`. Returns false when the event was
    /// already applied (same id) and so changed nothing.
    pub fn apply(&mut self, event: &Event, time: u64, rules: &MeterRules, now: u64) -> bool {
        let day = day_of(time);
        let today = day_of(now);
        if today.saturating_sub(day) >= SEEN_DAYS {
            // Older than anything the gateway accepts: it cannot matter to any window.
            return false;
        }
        if self.seen.insert(event.id, day).is_some() {
            return false;
        }
        match event.kind {
            EventType::PageView => {
                *self.views.entry(day).or_default() += 1;
                let metered = event.prop_str("content_type") == Some(rules.content_type.as_str());
                let page = Page {
                    key: page_key(&event.page.url),
                    metered,
                };
                let in_window = today.saturating_sub(day) < rules.window_days.get();
                if metered
                    && in_window
                    && !self.is_granted(page.key, rules, today)
                    && self.granted_count(rules, today) < rules.limit
                {
                    self.granted.entry(day).or_default().push(page.key);
                }
                self.last_page = Some(page);
            }
            EventType::Identify => {
                if let Some(subscriber) = event.props.get("subscriber").and_then(|v| v.as_bool()) {
                    self.subscriber = subscriber;
                }
            }
            EventType::Engagement | EventType::Click | EventType::Custom => {}
        }
        true
    }

    /// Forgets what has left the window (and ids older than the dedupe horizon).
    pub fn prune(&mut self, rules: &MeterRules, now: u64) {
        let today = day_of(now);
        let window_start = today.saturating_sub(rules.window_days.get() - 1);
        self.views.retain(|&d, _| d >= window_start);
        self.granted.retain(|&d, _| d >= window_start);
        let seen_start = today.saturating_sub(SEEN_DAYS - 1);
        self.seen.retain(|_, d| *d >= seen_start);
    }

    /// Page views in the rolling window ending today (day buckets), deduplicated by event id.
    pub fn views_in_window(&self, rules: &MeterRules, now: u64) -> u32 {
        let today = day_of(now);
        let start = today.saturating_sub(rules.window_days.get() - 1);
        self.views.range(start..=today).map(|(_, n)| *n).sum()
    }

    /// Metered pages granted for free in the rolling window ending `today`.
    fn granted_count(&self, rules: &MeterRules, today: u32) -> u32 {
        let start = today.saturating_sub(rules.window_days.get() - 1);
        self.granted
            .range(start..)
            .map(|(_, keys)| keys.len() as u32)
            .sum()
    }

    fn is_granted(&self, key: u64, rules: &MeterRules, today: u32) -> bool {
        let start = today.saturating_sub(rules.window_days.get() - 1);
        self.granted
            .range(start..)
            .any(|(_, keys)| keys.contains(&key))
    }

    /// Whether the reader is a subscriber.
    pub fn is_subscriber(&self) -> bool {
        self.subscriber
    }

    /// The decision for the reader's current page (their last page view) at `now`.
    pub fn decide(&self, rules: &MeterRules, now: u64) -> Decision {
        let today = day_of(now);
        let version = rules.version();
        if self.subscriber {
            return Decision {
                action: Action::Allow,
                remaining: None,
                limit: None,
                reason: "subscriber".into(),
                fallback: false,
                version,
            };
        }
        let remaining = rules.limit.saturating_sub(self.granted_count(rules, today));
        let (action, reason) = match self.last_page {
            Some(page) if page.metered => {
                if self.is_granted(page.key, rules, today) {
                    (Action::Meter, "metered")
                } else {
                    (Action::Paywall, "exhausted")
                }
            }
            _ if remaining > 0 => (Action::Meter, "metered"),
            _ => (Action::Allow, "not_metered"),
        };
        Decision {
            action,
            remaining: Some(remaining),
            limit: Some(rules.limit),
            reason: reason.into(),
            fallback: false,
            version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use pulse_protocol::PageContext;
    use serde_json::json;

    const T0: u64 = 20_000 * DAY_MS + 12 * 3_600_000; // noon UTC, day 20000

    fn view(id: u128, url: &str, article: bool) -> Event {
        let props = if article {
            json!({"content_type": "article"})
        } else {
            json!({})
        };
        Event {
            id: EventId(id),
            ts: 0,
            kind: EventType::PageView,
            name: None,
            page: PageContext {
                url: url.into(),
                ..Default::default()
            },
            props: props.as_object().cloned().unwrap_or_default(),
        }
    }

    fn identify(id: u128, subscriber: bool) -> Event {
        let mut e = view(id, "https://n.example/", false);
        e.kind = EventType::Identify;
        e.props = json!({ "subscriber": subscriber })
            .as_object()
            .cloned()
            .unwrap_or_default();
        e
    }

    fn read(state: &mut ReaderState, rules: &MeterRules, id: u128, url: &str, at: u64) -> Decision {
        state.apply(&view(id, url, true), at, rules, at);
        state.decide(rules, at)
    }

    #[test]
    fn three_free_articles_then_the_wall() {
        let rules = MeterRules::default();
        let mut s = ReaderState::default();
        let d = |a, r| (a, Some(r));
        let got: Vec<_> = (1..=4)
            .map(|i| {
                let dec = read(
                    &mut s,
                    &rules,
                    i,
                    &format!("https://n.example/a{i}"),
                    T0 + i as u64,
                );
                (dec.action, dec.remaining)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                d(Action::Meter, 2),
                d(Action::Meter, 1),
                d(Action::Meter, 0),
                d(Action::Paywall, 0)
            ]
        );
        // Re-reading a granted article is still free; its reload with a query string too.
        let again = read(&mut s, &rules, 10, "https://n.example/a2?utm=x", T0 + 10);
        assert_eq!(
            (again.action, again.reason.as_str()),
            (Action::Meter, "metered")
        );
        // A non-metered page is never walled.
        s.apply(
            &view(11, "https://n.example/", false),
            T0 + 11,
            &rules,
            T0 + 11,
        );
        assert_eq!(s.decide(&rules, T0 + 11).action, Action::Allow);
        assert_eq!(s.views_in_window(&rules, T0 + 11), 6);
    }

    #[test]
    fn duplicate_ids_do_not_count_twice() {
        let rules = MeterRules::default();
        let mut s = ReaderState::default();
        assert!(s.apply(&view(1, "https://n.example/a", true), T0, &rules, T0));
        assert!(!s.apply(&view(1, "https://n.example/b", true), T0, &rules, T0));
        assert_eq!(s.views_in_window(&rules, T0), 1);
        assert_eq!(s.decide(&rules, T0).remaining, Some(2));
    }

    #[test]
    fn the_window_rolls_by_event_time() {
        let rules = MeterRules::default();
        let mut s = ReaderState::default();
        for i in 0..3 {
            read(&mut s, &rules, i, &format!("https://n.example/a{i}"), T0);
        }
        // Day 29 after: still inside the 30-day window.
        let day29 = T0 + 29 * DAY_MS;
        assert_eq!(
            read(&mut s, &rules, 100, "https://n.example/x", day29).action,
            Action::Paywall
        );
        // Day 30 after: the first three left the window.
        let day30 = T0 + 30 * DAY_MS;
        let dec = read(&mut s, &rules, 101, "https://n.example/x", day30);
        assert_eq!((dec.action, dec.remaining), (Action::Meter, Some(2)));
        s.prune(&rules, day30);
        assert_eq!(s.views.len(), 2, "day 0 bucket pruned: {:?}", s.views);
    }

    #[test]
    fn late_events_outside_the_window_do_not_grant() {
        let rules = MeterRules::default();
        let mut s = ReaderState::default();
        let now = T0 + 40 * DAY_MS;
        s.apply(
            &view(1, "https://n.example/old", true),
            T0 + 5 * DAY_MS,
            &rules,
            now,
        );
        assert_eq!(s.granted_count(&rules, day_of(now)), 0);
        // Older than the dedupe horizon: ignored entirely.
        assert!(!s.apply(&view(2, "https://n.example/older", true), T0, &rules, now));
    }

    #[test]
    fn subscribers_are_never_walled() {
        let rules = MeterRules {
            limit: 0,
            ..MeterRules::default()
        };
        let mut s = ReaderState::default();
        assert_eq!(
            read(&mut s, &rules, 1, "https://n.example/a", T0).action,
            Action::Paywall
        );
        s.apply(&identify(2, true), T0, &rules, T0);
        let dec = read(&mut s, &rules, 3, "https://n.example/b", T0);
        assert_eq!(
            (dec.action, dec.reason.as_str()),
            (Action::Allow, "subscriber")
        );
        s.apply(&identify(4, false), T0, &rules, T0);
        assert_eq!(s.decide(&rules, T0).action, Action::Paywall);
    }

    proptest! {
        /// Whatever the order and duplication of page views, the granted count never exceeds the
        /// limit, views count each id once, and pruning never changes a decision.
        #[test]
        fn window_invariants(
            views in proptest::collection::vec((0u128..40, 0u64..45, 0u8..8), 1..80),
            limit in 0u32..6,
        ) {
            let rules = MeterRules { limit, ..MeterRules::default() };
            let now = T0 + 44 * DAY_MS;
            let mut s = ReaderState::default();
            let mut ids = std::collections::HashSet::new();
            for (id, day, page) in &views {
                let time = T0 + day * DAY_MS;
                let fresh = s.apply(&view(*id, &format!("https://n.example/{page}"), true), time, &rules, now);
                let expected = 44 - day < u64::from(SEEN_DAYS) && ids.insert(*id);
                prop_assert_eq!(fresh, expected);
            }
            prop_assert!(s.granted_count(&rules, day_of(now)) <= limit);
            let before = s.decide(&rules, now);
            let views_before = s.views_in_window(&rules, now);
            s.prune(&rules, now);
            prop_assert_eq!(s.decide(&rules, now), before);
            prop_assert_eq!(s.views_in_window(&rules, now), views_before);
        }
    }
}
