//! Rules deciding from features, the page, the request and experiments: the first match decides,
//! a condition that fails at run time falls to the next rule and is counted, experiments assign
//! stably with their probability, and every decision says which rule made it and why.

use std::sync::Arc;

use pulse_protocol::{Action, Event, EventId, EventType, PageContext};
use pulse_scorer::{
    Bundle, DAY_MS, Engine, EngineConfig, HOUR_MS, MemoryStore, PageFacts, ReaderState, Request,
    decide,
};
use serde_json::json;

const T0: u64 = 20_000 * DAY_MS + 12 * HOUR_MS;

fn view(id: u128, path: &str, props: serde_json::Value, referrer: &str) -> Event {
    Event {
        id: EventId(id),
        ts: 0,
        kind: EventType::PageView,
        name: None,
        page: PageContext {
            url: format!("https://news.example{path}"),
            referrer: referrer.into(),
            title: String::new(),
        },
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

fn article(id: u128, path: &str) -> Event {
    view(
        id,
        path,
        json!({"content_type": "article", "section": "politics"}),
        "",
    )
}

const FEATURES: &str = r#"
[bundle]
name = "rules-test"

[features.metered_pages]
template = "distinct"
of = "page"
window = "30d"
filter = { type = "page_view", props = { content_type = "article" } }

[features.current_page]
template = "last"
of = "page"
filter = { type = "page_view" }

[features.articles_30d]
template = "count"
window = "30d"
filter = { type = "page_view", props = { content_type = "article" } }

[features.depth]
template = "avg"
of = "props.read_depth"
window = "30d"
filter = { type = "engagement" }
"#;

fn bundle(rules: &str) -> Bundle {
    Bundle::compile(&format!("{FEATURES}\n{rules}")).unwrap()
}

fn run(b: &Bundle, reader: &str, events: &[Event], request: &Request) -> pulse_scorer::Decided {
    let mut s = ReaderState::new(b);
    for (i, e) in events.iter().enumerate() {
        s.apply(b, e, T0 + i as u64 * 1000);
    }
    s.finish(b);
    let timed: Vec<(&Event, u64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e, T0 + i as u64 * 1000))
        .collect();
    let page = PageFacts::of(&timed);
    decide(b, reader, &s, T0 + 10 * 1000, &page, request)
}

#[test]
fn the_first_matching_rule_decides_and_says_why() {
    let b = bundle(
        r#"
[[rules]]
id = "mobile-search-offer"
when = "request.device == 'mobile' && page.referrer == 'search' && articles_30d >= 2"
action = "offer"
offer = "app-trial"

[[rules]]
id = "deep-readers-prompt"
when = "depth > 50.0"
action = "prompt"
prompt = "newsletter"

[[rules]]
id = "register-after-two"
when = "page.metered && articles_30d >= 2"
action = "register_wall"

[[rules]]
id = "meter"
action = "meter"
pages = "metered_pages"
current_page = "current_page"
limit = 3
"#,
    );
    let two = [
        article(1, "/a"),
        view(
            2,
            "/b",
            json!({"content_type": "article"}),
            "https://www.google.com/",
        ),
    ];
    let mobile = Request {
        device: Some("mobile".into()),
        ..Request::default()
    };
    let d = run(&b, "r", &two, &mobile).decision;
    assert_eq!(d.action, Action::Offer);
    assert_eq!(d.offer.as_deref(), Some("app-trial"));
    assert_eq!(d.rule.as_deref(), Some("mobile-search-offer"));
    assert_eq!(d.because, vec!["articles_30d = 2".to_owned()]);
    assert_eq!(d.version, b.id);

    // On a desktop: `depth` is missing (no engagement), so `depth > 50.0` fails at run time and
    // the next rule decides; the failure is counted.
    let desktop = Request::default();
    let decided = run(&b, "r", &two, &desktop);
    assert_eq!(decided.decision.action, Action::RegisterWall);
    assert_eq!(decided.errors, 1);

    // One article: the meter.
    let d = run(&b, "r", &two[..1], &desktop).decision;
    assert_eq!(
        (d.action, d.remaining, d.reason.as_str()),
        (Action::Meter, Some(2), "metered")
    );
    assert_eq!(d.rule.as_deref(), Some("meter"));
}

#[test]
fn experiments_assign_stably_with_their_probability() {
    let b = bundle(
        r#"
[[rules]]
id = "limit-test"
when = "page.content_type == 'article'"
experiment = "limit"
holdout = 0.2
arms = [
  { name = "wall", weight = 1, action = "paywall", variant = "hard" },
  { name = "offer", weight = 3, action = "offer", offer = "trial" },
]

[[rules]]
id = "fallthrough"
action = "allow"
"#,
    );
    let mut seen = std::collections::HashMap::new();
    for r in 0..4_000 {
        let reader = format!("reader-{r}");
        let decided = run(&b, &reader, &[article(1, "/a")], &Request::default());
        let again = run(&b, &reader, &[article(1, "/a")], &Request::default());
        assert_eq!(decided.decision, again.decision, "stable");
        let arm = decided.decision.experiment.clone().unwrap();
        assert_eq!(arm.experiment, "limit");
        let (action, p) = (decided.decision.action, decided.probability.unwrap());
        match arm.arm.as_str() {
            "holdout" => assert_eq!((action, p), (Action::Allow, 0.2)),
            "wall" => {
                assert_eq!(action, Action::Paywall);
                assert_eq!(decided.decision.variant.as_deref(), Some("hard"));
                assert!((p - 0.2).abs() < 1e-12, "{p}");
            }
            "offer" => assert!((p - 0.6).abs() < 1e-12, "{p}"),
            other => panic!("{other}"),
        }
        *seen.entry(arm.arm).or_insert(0usize) += 1;
    }
    let share = |arm: &str| seen[arm] as f64 / 4_000.0;
    assert!((share("holdout") - 0.2).abs() < 0.03, "{seen:?}");
    assert!((share("wall") - 0.2).abs() < 0.03, "{seen:?}");
    assert!((share("offer") - 0.6).abs() < 0.03, "{seen:?}");
    // Another page does not enter the experiment.
    let d = run(
        &b,
        "r",
        &[view(9, "/", json!({"content_type": "website"}), "")],
        &Request::default(),
    );
    assert_eq!(d.decision.experiment, None);
}

#[test]
fn bad_rules_are_refused_with_every_problem() {
    let text = format!(
        "{FEATURES}\n{}",
        r#"
[[rules]]
id = "a"
when = "nonexistent > 3"
action = "allow"

[[rules]]
id = "a"
when = "model.score > 0.5"
action = "offer"

[[rules]]
id = "b"
when = "1 +"
action = "paywall"
limit = 3

[[rules]]
id = "c"
experiment = "e"
arms = [{ name = "holdout", weight = 0, action = "allow" }]
"#
    );
    let err = Bundle::compile(&text).unwrap_err().to_string();
    for needle in [
        "rules[0] (a): when: \"nonexistent\" is not a feature",
        "rules[1] (a): id \"a\" is used twice",
        "rules[1] (a): when: reads `model`, but the bundle has no [model]",
        "rules[1] (a): action: action \"offer\" needs `offer`",
        "rules[2] (b): when:",
        "rules[2] (b): action: `limit` does not belong to action \"paywall\"",
        "rules[3] (c): arms[0].name \"holdout\"",
        "rules[3] (c): arms[0].weight must be above 0",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn the_engine_counts_rule_errors_and_returns_probabilities() {
    let b = bundle(
        r#"
[[rules]]
id = "broken"
when = "depth > 1.0"
action = "paywall"

[[rules]]
id = "split"
experiment = "x"
arms = [{ name = "only", action = "allow" }]
"#,
    );
    let (e, _) =
        Engine::open(Arc::new(MemoryStore::default()), b, EngineConfig::default()).unwrap();
    let ev = article(1, "/a");
    let s = e.score("r", &[(&ev, T0)], T0, &Request::default()).unwrap();
    assert_eq!(s.decision.rule.as_deref(), Some("split"));
    assert_eq!(s.probability, Some(1.0));
    assert_eq!(
        e.stats()
            .rule_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_shadow_bundle_decides_beside_the_active_one() {
    let active = bundle("[[rules]]\nid = \"all\"\naction = \"allow\"\n");
    let (e, _) = Engine::open(
        Arc::new(MemoryStore::default()),
        active,
        EngineConfig::default(),
    )
    .unwrap();
    let ev = article(1, "/a");
    assert_eq!(
        e.score("r", &[(&ev, T0)], T0, &Request::default())
            .unwrap()
            .shadow,
        None
    );
    e.set_shadow(Some(bundle(
        "[[rules]]\nid = \"wall\"\naction = \"paywall\"\n",
    )))
    .unwrap();
    let ev2 = article(2, "/b");
    let s = e
        .score("r", &[(&ev2, T0)], T0, &Request::default())
        .unwrap();
    assert_eq!(
        s.decision.action,
        Action::Allow,
        "the page sees the active bundle"
    );
    assert_eq!(s.shadow.map(|d| d.action), Some(Action::Paywall));
    // A shadow with other features is refused: it would need state of its own.
    let other = Bundle::compile(&FEATURES.replace("\"30d\"", "\"29d\"")).unwrap();
    assert!(e.set_shadow(Some(other)).is_err());
}

#[test]
fn entitlements_come_from_the_request() {
    let b = bundle(
        "[[rules]]\nid = \"entitled\"\nwhen = \"has(entitled.subscriber) && entitled.subscriber\"\naction = \"allow\"\n\n[[rules]]\nid = \"wall\"\naction = \"paywall\"\n",
    );
    let plain = run(&b, "r", &[article(1, "/a")], &Request::default()).decision;
    assert_eq!(plain.rule.as_deref(), Some("wall"));
    let vouched = Request {
        entitled: vec![("subscriber".into(), json!(true))],
        ..Request::default()
    };
    let d = run(&b, "r", &[article(1, "/a")], &vouched).decision;
    assert_eq!(d.rule.as_deref(), Some("entitled"));
}
