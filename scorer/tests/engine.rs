//! The engine over its in-memory and on-disk stores: the meter as a bundle, replay equals live,
//! order within the lateness does not matter, windows never count an event outside them, TTL
//! frees exactly the readers it should, a flood from one reader stays bounded, write-behind and
//! crash recovery, and a rebuild for a new feature set.

use std::sync::Arc;

use proptest::prelude::*;
use pulse_protocol::{Action, Event, EventId, EventType, PageContext};
use pulse_scorer::{
    Batcher, Bundle, DAY_MS, Engine, EngineConfig, FjallStore, HOUR_MS, MINUTE_MS, MemoryStore,
    ReaderState, SWEEP_SLACK_MS, StateStore, Value,
};
use serde_json::json;

fn bundle_text(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/bundles/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn meter() -> Bundle {
    Bundle::compile(&bundle_text("meter")).unwrap()
}

fn profile() -> Bundle {
    Bundle::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bundles/reader-profile.toml"
    )))
    .unwrap()
}

const T0: u64 = 20_000 * DAY_MS + 12 * HOUR_MS;

fn page(id: u128, path: &str, article: bool) -> Event {
    let props = if article {
        json!({"content_type": "article", "section": "news"})
    } else {
        json!({"content_type": "website"})
    };
    Event {
        id: EventId(id),
        ts: 0,
        kind: EventType::PageView,
        name: None,
        page: PageContext {
            url: format!("https://n.example{path}"),
            ..Default::default()
        },
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

fn identify(id: u128, subscriber: bool) -> Event {
    let mut e = page(id, "/account", false);
    e.kind = EventType::Identify;
    e.props = json!({"subscriber": subscriber})
        .as_object()
        .cloned()
        .unwrap_or_default();
    e
}

fn engine(bundle: Bundle) -> Engine<Arc<MemoryStore>> {
    let (e, _) = Engine::open(
        Arc::new(MemoryStore::default()),
        bundle,
        EngineConfig::default(),
    )
    .unwrap();
    e
}

fn read(
    e: &Engine<Arc<MemoryStore>>,
    reader: &str,
    ev: &Event,
    at: u64,
) -> (Action, Option<u32>, String) {
    let d = e
        .score(reader, &[(ev, at)], at, &pulse_scorer::Request::default())
        .unwrap()
        .decision;
    (d.action, d.remaining, d.reason)
}

#[test]
fn the_demo_meter_as_a_bundle() {
    let e = engine(meter());
    let got: Vec<_> = (1..=4)
        .map(|i| {
            let (a, r, _) = read(
                &e,
                "r",
                &page(i, &format!("/a{i}"), true),
                T0 + i as u64 * MINUTE_MS,
            );
            (a, r)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Action::Meter, Some(2)),
            (Action::Meter, Some(1)),
            (Action::Meter, Some(0)),
            (Action::Paywall, Some(0)),
        ]
    );
    // A granted article stays free, its reload with a query string too; a section front is not
    // metered; a subscriber is never walled.
    assert_eq!(
        read(&e, "r", &page(10, "/a2?utm=x", true), T0 + HOUR_MS).0,
        Action::Meter
    );
    assert_eq!(
        read(&e, "r", &page(11, "/", false), T0 + HOUR_MS).0,
        Action::Allow
    );
    // A trait the page sends grants nothing: only an entitlement a token vouched for does.
    assert_eq!(
        read(&e, "r", &identify(12, true), T0 + HOUR_MS).2,
        "not_metered"
    );
    assert_eq!(
        read(&e, "r", &page(15, "/a9", true), T0 + HOUR_MS).0,
        Action::Paywall
    );
    let entitled = pulse_scorer::Request {
        entitled: vec![("subscriber".into(), serde_json::Value::Bool(true))],
        ..Default::default()
    };
    let d = e
        .score(
            "r",
            &[(&page(13, "/a9", true), T0 + HOUR_MS)],
            T0 + HOUR_MS,
            &entitled,
        )
        .unwrap()
        .decision;
    assert_eq!((d.action, d.reason.as_str()), (Action::Allow, "subscriber"));
    // The decision names the bundle.
    let d = e
        .score(
            "r",
            &[(&page(14, "/a9", true), T0 + HOUR_MS)],
            T0 + HOUR_MS,
            &pulse_scorer::Request::default(),
        )
        .unwrap();
    assert_eq!(d.decision.version, meter().id);
}

#[test]
fn an_old_article_is_outside_every_window() {
    // A fresh reader whose only article is 31 days old: not walled, three left.
    let e = engine(meter());
    let now = T0 + 31 * DAY_MS;
    let d = e
        .score(
            "fresh",
            &[(&page(1, "/old", true), T0)],
            now,
            &pulse_scorer::Request::default(),
        )
        .unwrap()
        .decision;
    assert_eq!((d.action, d.remaining), (Action::Meter, Some(3)), "{d:?}");
}

#[test]
fn a_new_limit_applies_to_the_next_decision_without_touching_state() {
    let e = engine(meter());
    for i in 1..=4 {
        read(&e, "r", &page(i, &format!("/a{i}"), true), T0 + i as u64);
    }
    assert_eq!(
        read(&e, "r", &page(5, "/a4", true), T0 + 5).0,
        Action::Paywall
    );
    let before = e.store().len(meter().feature_set);
    let looser = Bundle::compile(&bundle_text("meter").replace("limit = 3", "limit = 5")).unwrap();
    e.activate(looser).unwrap();
    let (a, r, _) = read(&e, "r", &page(6, "/a4", true), T0);
    assert_eq!(
        (a, r),
        (Action::Meter, Some(1)),
        "the fourth article is now free"
    );
    assert_eq!(
        e.store().len(meter().feature_set),
        before,
        "no state rewritten"
    );
}

/// A reader's events at random times within a few days, with duplicates.
fn events_strategy() -> impl Strategy<Value = Vec<(u128, u64, u8, u8)>> {
    proptest::collection::vec((0u128..60, 0u64..(3 * 24 * 60), 0u8..12, 0u8..4), 1..60)
}

fn to_event((id, _, page_no, kind): &(u128, u64, u8, u8)) -> Event {
    match kind {
        0 => identify(*id, page_no % 2 == 0),
        1 => {
            let mut e = page(*id, &format!("/p{page_no}"), true);
            e.kind = EventType::Engagement;
            e.props = json!({"read_depth": page_no * 8, "active_ms": 1000})
                .as_object()
                .cloned()
                .unwrap_or_default();
            e
        }
        _ => page(*id, &format!("/p{page_no}"), page_no % 3 != 0),
    }
}

fn state_bytes(bundle: &Bundle, events: &[(Event, u64)]) -> Vec<u8> {
    let mut s = ReaderState::new(bundle);
    for (e, t) in events {
        s.apply(bundle, e, *t);
        s.finish(bundle);
    }
    s.normalize(bundle);
    s.encode(bundle)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any order of the same events, all within the allowed lateness of each other, gives the
    /// same state as the order of their times.
    #[test]
    fn order_within_the_lateness_does_not_matter(
        raw in events_strategy(),
        shuffle in any::<u64>(),
    ) {
        let bundle = profile();
        // Squeeze the times into the lateness (1 day) so no event is refused as late. A retry
        // resends the same event: an id stands for one event (its first draw here).
        let mut first: std::collections::HashMap<u128, (u128, u64, u8, u8)> = Default::default();
        let events: Vec<(Event, u64)> = raw
            .iter()
            .map(|r| {
                let r = *first.entry(r.0).or_insert(*r);
                (to_event(&r), T0 + (r.1 % (23 * 60)) * MINUTE_MS)
            })
            .collect();
        let mut sorted = events.clone();
        sorted.sort_by_key(|(e, t)| (*t, e.id));
        let mut shuffled = events.clone();
        let mut x = shuffle | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(state_bytes(&bundle, &sorted), state_bytes(&bundle, &shuffled));
    }

    /// A window never counts an event outside it: count features equal a brute-force count.
    #[test]
    fn windows_never_count_outside(raw in events_strategy(), probe in 0u64..(5 * 24 * 60)) {
        let bundle = profile();
        let mut events: Vec<(Event, u64)> = raw
            .iter()
            .map(|r| (to_event(r), T0 + r.1 * MINUTE_MS))
            .collect();
        events.sort_by_key(|(e, t)| (*t, e.id));
        let mut s = ReaderState::new(&bundle);
        let mut applied = Vec::new();
        for (e, t) in &events {
            if s.apply(&bundle, e, *t) == pulse_scorer::Outcome::Applied {
                applied.push((e.clone(), *t));
            }
            s.finish(&bundle);
        }
        let now = (T0 + probe * MINUTE_MS).max(s.watermark());
        for (name, unit, n) in [("page_views_1h", HOUR_MS, 1), ("page_views_24h", HOUR_MS, 24), ("page_views_7d", DAY_MS, 7)] {
            let first_bucket = (now / unit + 1).saturating_sub(n);
            let expected = applied
                .iter()
                .filter(|(e, t)| e.kind == EventType::PageView && t / unit >= first_bucket && t / unit <= now / unit)
                .count() as f64;
            let got = s.value(&bundle, bundle.feature(name).unwrap(), now);
            prop_assert_eq!(got, Value::Num(expected), "{} at {}", name, now);
        }
    }

    /// Replaying the log (batches in log order) ends in the same state and makes the same
    /// decisions as live traffic did.
    #[test]
    fn replay_equals_live(raw in events_strategy(), batch in 1usize..6) {
        let bundle = meter();
        let mut log: Vec<(String, Event, u64, u64)> = Vec::new();
        let live = engine(meter());
        let mut decisions = Vec::new();
        for (i, chunk) in raw.chunks(batch).enumerate() {
            let reader = format!("reader-{}", i % 3);
            let received = T0 + chunk.iter().map(|r| r.1).max().unwrap_or(0) * MINUTE_MS;
            let evs: Vec<(Event, u64)> = chunk.iter().map(|r| (to_event(r), T0 + r.1 * MINUTE_MS)).collect();
            let refs: Vec<(&Event, u64)> = evs.iter().map(|(e, t)| (e, *t)).collect();
            decisions.push(live.score(&reader, &refs, received, &pulse_scorer::Request::default()).unwrap().decision);
            for (e, t) in evs {
                log.push((reader.clone(), e, t, received));
            }
        }
        let replayed = engine(meter());
        let mut again = Vec::new();
        let mut batcher = Batcher::new(batch);
        for (reader, e, t, received) in log {
            batcher.push(&reader, received, e, t, &mut |r: &str, evs: &[(&Event, u64)], at| {
                again.push(replayed.score(r, evs, at, &pulse_scorer::Request::default())?.decision);
                Ok::<(), pulse_scorer::EngineError>(())
            }).unwrap();
        }
        batcher.flush(&mut |r: &str, evs: &[(&Event, u64)], at| {
            again.push(replayed.score(r, evs, at, &pulse_scorer::Request::default())?.decision);
            Ok::<(), pulse_scorer::EngineError>(())
        }).unwrap();
        prop_assert_eq!(&decisions, &again);
        for r in 0..3 {
            let reader = format!("reader-{r}");
            let a = live.explain(&reader, T0 + 5 * DAY_MS).unwrap();
            let b = replayed.explain(&reader, T0 + 5 * DAY_MS).unwrap();
            prop_assert_eq!(a, b);
        }
        let _ = bundle;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the readers' last days and however far the watermark moves, the sweep frees
    /// exactly the readers whose last event is more than TTL + slack behind it, and a freed
    /// reader answers as a new one.
    #[test]
    fn ttl_frees_exactly_the_readers_it_should_whatever_the_days(
        days in proptest::collection::vec(0u64..120, 1..12),
        ahead in 0u64..200,
    ) {
        let ttl = meter().settings.ttl_ms;
        let e = engine(meter());
        for (i, d) in days.iter().enumerate() {
            read(&e, &format!("r{i}"), &page(i as u128, "/a", true), T0 + d * DAY_MS);
        }
        e.flush().unwrap();
        let watermark = T0 + ahead * DAY_MS;
        read(&e, "ahead", &page(1_000, "/b", true), watermark);
        e.flush().unwrap();
        e.sweep().unwrap();
        let top = e.watermark();
        for (i, d) in days.iter().enumerate() {
            let last = T0 + d * DAY_MS;
            let kept = e.explain(&format!("r{i}"), top).unwrap().is_some();
            prop_assert_eq!(kept, last + ttl + SWEEP_SLACK_MS >= top, "reader {} last seen day {}", i, d);
        }
    }
}

#[test]
fn ttl_frees_exactly_the_readers_it_should() {
    let bundle = meter();
    let ttl = bundle.settings.ttl_ms;
    let e = engine(meter());
    // Readers last seen on days 0, 5, 10, ... 45.
    for i in 0..10u64 {
        read(
            &e,
            &format!("r{i}"),
            &page(u128::from(i), "/a", true),
            T0 + i * 5 * DAY_MS,
        );
    }
    e.flush().unwrap();
    assert_eq!(e.store().len(bundle.feature_set), 10);
    // Nobody is past TTL + slack yet.
    assert_eq!(e.sweep().unwrap(), 0);
    // Move the watermark: readers whose last event + TTL + slack is behind it are freed, in
    // memory (at the next flush) and in the store (at the next sweep).
    let late = T0 + 100 * DAY_MS;
    read(&e, "ahead", &page(100, "/a", true), late);
    e.flush().unwrap();
    e.sweep().unwrap();
    let kept: Vec<u64> = (0..10)
        .filter(|i| e.explain(&format!("r{i}"), late).unwrap().is_some())
        .collect();
    let expected: Vec<u64> = (0..10)
        .filter(|i| T0 + i * 5 * DAY_MS + ttl + SWEEP_SLACK_MS >= late)
        .collect();
    assert_eq!(kept, expected);
    assert!(!expected.is_empty() && expected.len() < 10, "{expected:?}");
    // A forgotten reader comes back as new, exactly as one whose state was still there but
    // past its TTL: three free articles.
    let (a, r, _) = read(&e, "r0", &page(200, "/b", true), late);
    assert_eq!((a, r), (Action::Meter, Some(2)));
}

#[test]
fn a_flood_from_one_reader_stays_bounded_and_walled() {
    let bundle = profile();
    let e = engine(profile());
    for i in 1..=4 {
        read(
            &e,
            "flooder",
            &page(i, &format!("/a{i}"), true),
            T0 + i as u64,
        );
    }
    assert_eq!(
        read(&e, "flooder", &page(5, "/a4", true), T0 + 5).0,
        Action::Paywall
    );
    // 150,000 distinct custom events in batches of 100, then distinct articles.
    let mut id = 1_000u128;
    for b in 0..1_500u64 {
        let evs: Vec<Event> = (0..100)
            .map(|j| {
                id += 1;
                let mut ev = page(id, &format!("/junk/{b}/{j}"), false);
                ev.kind = EventType::Custom;
                ev.name = Some(format!("junk.{}", id % 1000));
                ev.props = json!({"section": format!("s{id}"), "read_depth": id as f64})
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                ev
            })
            .collect();
        let t = T0 + b * 1_000;
        let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, t)).collect();
        e.score("flooder", &refs, t, &pulse_scorer::Request::default())
            .unwrap();
    }
    for j in 0..3_000u128 {
        read(
            &e,
            "flooder",
            &page(500_000 + j, &format!("/art/{j}"), true),
            T0 + 2_000_000,
        );
    }
    let d = e
        .score(
            "flooder",
            &[(&page(900_000, "/a4", true), T0 + 2_000_001)],
            T0 + 2_000_001,
            &pulse_scorer::Request::default(),
        )
        .unwrap()
        .decision;
    assert_eq!(d.action, Action::Paywall, "a walled reader stays walled");
    let cache = e.cache();
    assert!(
        cache.bytes < 512 * 1024,
        "one reader's state is bounded: {cache:?}"
    );
    let explained = e.explain("flooder", T0 + 2_000_001).unwrap().unwrap();
    assert!(explained["dedupe"]["ids"].as_u64().unwrap() <= bundle.settings.max_dedupe_ids as u64);
    // Others are unaffected.
    assert_eq!(read(&e, "other", &page(1, "/a1", true), T0).1, Some(2));
}

#[test]
fn a_small_cache_evicts_and_reloads_with_the_same_decisions() {
    let big = engine(meter());
    let (small, _) = Engine::open(
        Arc::new(MemoryStore::default()),
        meter(),
        EngineConfig {
            cache_bytes: 64 * 1024,
            partitions: 4,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut evicted_any = false;
    for round in 0..4u64 {
        for r in 0..400u64 {
            let ev = page(u128::from(round * 1000 + r), &format!("/a{round}"), true);
            let t = T0 + round * HOUR_MS;
            let a = big
                .score(
                    &format!("r{r}"),
                    &[(&ev, t)],
                    t,
                    &pulse_scorer::Request::default(),
                )
                .unwrap()
                .decision;
            let b = small
                .score(
                    &format!("r{r}"),
                    &[(&ev, t)],
                    t,
                    &pulse_scorer::Request::default(),
                )
                .unwrap()
                .decision;
            assert_eq!(a, b);
            if small
                .stats()
                .evictions
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
            {
                evicted_any = true;
            }
        }
        small.flush().unwrap();
    }
    assert!(evicted_any, "the small cache evicted");
    assert!(
        small.cache().bytes <= 64 * 1024 + 8 * 1024,
        "{:?}",
        small.cache()
    );
}

#[test]
fn state_survives_a_crash_through_the_store_and_the_replay_position() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        Engine::open(
            FjallStore::new(db).unwrap(),
            meter(),
            EngineConfig::default(),
        )
        .unwrap()
    };
    let log: Vec<Event> = (1..=6).map(|i| page(i, &format!("/a{i}"), true)).collect();
    let position = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (e, start) = open();
        assert_eq!(start.replay_from, 0);
        let p = Arc::clone(&position);
        e.set_progress(Box::new(move || {
            Some(p.load(std::sync::atomic::Ordering::SeqCst))
        }));
        for (seq, ev) in log.iter().enumerate().take(3) {
            let t = T0 + seq as u64;
            e.score("r", &[(ev, t)], t, &pulse_scorer::Request::default())
                .unwrap();
            position.store(seq as u64 + 1, std::sync::atomic::Ordering::SeqCst);
        }
        e.flush().unwrap();
        // Two more applied in memory, never written: the crash loses them.
        for (seq, ev) in log.iter().enumerate().skip(3).take(2) {
            let t = T0 + seq as u64;
            e.score("r", &[(ev, t)], t, &pulse_scorer::Request::default())
                .unwrap();
            position.store(seq as u64 + 1, std::sync::atomic::Ordering::SeqCst);
        }
        drop(e); // no close, so no last flush: what a crash leaves
    }
    let (e, start) = open();
    assert_eq!(
        start.replay_from, 3,
        "replay from the first event not in stored state"
    );
    for (seq, ev) in log
        .iter()
        .enumerate()
        .take(5)
        .skip(start.replay_from as usize)
    {
        e.replay("r", &[(ev, T0 + seq as u64)]).unwrap();
    }
    let d = e
        .score(
            "r",
            &[(&log[5], T0 + 5)],
            T0 + 5,
            &pulse_scorer::Request::default(),
        )
        .unwrap()
        .decision;
    assert_eq!(
        d.action,
        Action::Paywall,
        "six articles: the sixth is walled"
    );
    let explained = e.explain("r", T0).unwrap().unwrap();
    assert_eq!(explained["features"]["metered_pages"]["value"], 6.0);
    e.close().unwrap();
}

#[test]
fn new_partitions_start_from_the_whole_log() {
    let store = Arc::new(MemoryStore::default());
    let open = |partitions| {
        Engine::open(
            Arc::clone(&store),
            meter(),
            EngineConfig {
                partitions,
                ..EngineConfig::default()
            },
        )
        .unwrap()
    };
    let (e, start) = open(8);
    assert_eq!(start.replay_from, 0);
    e.score(
        "r",
        &[(&page(1, "/a", true), T0)],
        T0,
        &pulse_scorer::Request::default(),
    )
    .unwrap();
    e.set_progress(Box::new(|| Some(1)));
    e.close().unwrap();
    drop(e);
    let (_, same) = open(8);
    assert_eq!(
        same.replay_from, 1,
        "the same partitions: replay the rest only"
    );
    let (e, changed) = open(16);
    assert_eq!(changed.replay_from, 0, "other partitions: the whole log");
    assert!(e.explain("r", T0).unwrap().is_none(), "old keys are gone");
}

#[test]
fn a_bundle_with_new_features_is_rebuilt_from_the_log() {
    let e = engine(meter());
    let log: Vec<(String, Event)> = (0..30u128)
        .map(|i| {
            (
                format!("r{}", i % 3),
                page(i, &format!("/a{i}"), i % 2 == 0),
            )
        })
        .collect();
    for (r, ev) in &log {
        e.score(r, &[(ev, T0)], T0, &pulse_scorer::Request::default())
            .unwrap();
    }
    let mut rebuild = e.rebuild(profile()).unwrap();
    for (r, ev) in &log[..20] {
        rebuild.apply(r, &[(ev, T0)]).unwrap();
    }
    // Live traffic goes on meanwhile under the old bundle.
    let late = page(99, "/late", true);
    e.score("r0", &[(&late, T0)], T0, &pulse_scorer::Request::default())
        .unwrap();
    let active = rebuild
        .finish(|rb| {
            for (r, ev) in &log[20..] {
                rb.apply(r, &[(ev, T0)])?;
            }
            rb.apply("r0", &[(&late, T0)])?;
            Ok(Some(31))
        })
        .unwrap();
    assert_eq!(active.id, profile().id);
    assert_eq!(e.bundle().unwrap().id, profile().id);
    let r0 = e.explain("r0", T0).unwrap().unwrap();
    assert_eq!(r0["features"]["page_views_lifetime"]["value"], 11.0, "{r0}");
    assert_eq!(
        e.store().feature_sets().unwrap(),
        vec![profile().feature_set]
    );
}

/// A [`MemoryStore`] that records each write's size and whether it carried metadata, and
/// fails the write numbered `fail_at` (counting from 0) once.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    /// Per write: states, their encoded bytes, metadata keys.
    writes: std::sync::Mutex<Vec<(usize, usize, Vec<String>)>>,
    fail_at: std::sync::Mutex<Option<usize>>,
}

impl StateStore for Recording {
    fn get(
        &self,
        fs: u64,
        partition: u16,
        reader: &str,
    ) -> Result<Option<Vec<u8>>, pulse_scorer::StoreError> {
        self.inner.get(fs, partition, reader)
    }

    fn write(
        &self,
        fs: u64,
        writes: &[pulse_scorer::Write],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), pulse_scorer::StoreError> {
        let mut log = self.writes.lock().unwrap();
        if self
            .fail_at
            .lock()
            .unwrap()
            .take_if(|n| *n == log.len())
            .is_some()
        {
            return Err(pulse_scorer::StoreError("the disk is full".into()));
        }
        let bytes = writes.iter().filter_map(|w| w.value.as_ref()).map(Vec::len);
        let keys = meta.iter().map(|(k, _)| (*k).to_owned()).collect();
        log.push((writes.len(), bytes.sum(), keys));
        self.inner.write(fs, writes, meta)
    }

    fn scan(
        &self,
        fs: u64,
        partition: u16,
        f: &mut dyn FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), pulse_scorer::StoreError> {
        self.inner.scan(fs, partition, f)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, pulse_scorer::StoreError> {
        self.inner.meta(key)
    }

    fn feature_sets(&self) -> Result<Vec<u64>, pulse_scorer::StoreError> {
        self.inner.feature_sets()
    }

    fn drop_feature_set(&self, fs: u64) -> Result<(), pulse_scorer::StoreError> {
        self.inner.drop_feature_set(fs)
    }
}

#[test]
fn a_large_write_behind_goes_in_bounded_batches_with_the_position_last() {
    let store = Arc::new(Recording::default());
    let bundle = profile();
    let fs = bundle.feature_set;
    let (e, _) = Engine::open(Arc::clone(&store), bundle, EngineConfig::default()).unwrap();
    let position = Arc::new(std::sync::atomic::AtomicU64::new(7));
    let p = Arc::clone(&position);
    e.set_progress(Box::new(move || {
        Some(p.load(std::sync::atomic::Ordering::SeqCst))
    }));
    let opened = store.writes.lock().unwrap().len();
    // Readers with a few pages each: several MiB of encoded state in all.
    let readers: u32 = 4000;
    for r in 0..readers {
        for i in 0..4u128 {
            let ev = page(u128::from(r) * 10 + i, &format!("/s{}/a{i}", r % 7), true);
            let t = T0 + u64::from(r) * 10 + i as u64;
            e.score(
                &format!("r{r}"),
                &[(&ev, t)],
                t,
                &pulse_scorer::Request::default(),
            )
            .unwrap();
        }
    }
    let replay_from = || {
        store
            .meta("replay_from")
            .unwrap()
            .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
    };
    let before = replay_from();

    // The third batch fails: nothing is lost, and the position does not move.
    *store.fail_at.lock().unwrap() = Some(opened + 2);
    assert!(e.flush().is_err(), "a failed batch fails the write-behind");
    assert_eq!(replay_from(), before, "the position waits for every state");
    assert!(
        store.writes.lock().unwrap()[opened..]
            .iter()
            .all(|(_, _, meta)| meta.is_empty()),
        "no metadata before the last batch"
    );

    store.writes.lock().unwrap().clear();
    e.flush().unwrap();
    let writes = store.writes.lock().unwrap().clone();
    assert!(writes.len() >= 3, "several batches: {writes:?}");
    let (last, rest) = writes.split_last().unwrap();
    assert!(last.2.iter().any(|k| k == "replay_from"), "{last:?}");
    for (states, bytes, meta) in rest {
        assert!(meta.is_empty(), "metadata only with the last batch");
        // A batch closes at the first state past a MiB.
        assert!(
            *bytes < (1 << 20) + 64 * 1024,
            "{states} states, {bytes} bytes"
        );
    }
    assert_eq!(
        writes.iter().map(|w| w.0).sum::<usize>(),
        readers as usize,
        "every reader written once, those of the failed attempt too"
    );
    assert_eq!(store.inner.len(fs), readers as usize);
    assert_eq!(replay_from(), Some(7));
    e.close().unwrap();
}
