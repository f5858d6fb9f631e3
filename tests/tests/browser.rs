//! A reader in real headless Chromium reads four articles on a publisher's own site (a plain
//! static server on its own origin, each page carrying the README's snippet pointed at the real
//! gateway binary on another origin): three are free with the meter counting down, the fourth is
//! walled; the count survives a gateway restart; a subscriber is never walled.

use std::time::Duration;

use pulse_e2e::{
    Browser, GatewayProcess, StaticServer, publisher_config, publisher_site, readme_snippet,
};
use pulse_gateway::{Config, LogFiles};
use serde_json::{Value, json};

const ARTICLES: [&str; 6] = [
    "city-council-budget",
    "river-cleanup",
    "startup-funding",
    "school-lunches",
    "night-trains",
    "library-hours",
];

/// Opens an article and returns (html attribute, remaining attribute, meter text, event details,
/// pulse.decision()).
fn read(browser: &mut Browser, base: &str, slug: &str) -> (String, String, String, Value, Value) {
    browser.goto(&format!("{base}/articles/{slug}.html"));
    browser.wait_for(
        "return window.__decisions && window.__decisions.length > 0",
        Duration::from_secs(15),
    );
    let v = browser.eval(
        "const h = document.documentElement; return [h.getAttribute('data-pulse-paywall'), \
         h.getAttribute('data-pulse-remaining'), document.querySelector('.meter').textContent, \
         window.__decisions, pulse.decision()];",
    );
    let s = |i: usize| v[i].as_str().unwrap_or("").to_owned();
    (s(0), s(1), s(2), v[3].clone(), v[4].clone())
}

fn no_errors(browser: &mut Browser) {
    let errors = browser.eval("return window.__errors");
    assert_eq!(errors, json!([]), "page errors");
    let severe: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
}

#[test]
fn three_free_articles_then_the_paywall_surviving_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let publisher = StaticServer::folder(&site);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let addr = gateway.addr.clone();
    // The publisher's pages, with the README's tag pointed at this gateway.
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    publisher_site(&site, &tag);
    let base = publisher.url.clone();
    assert_ne!(
        base, gateway.url,
        "the pages and the gateway are on different origins"
    );
    let mut browser = Browser::start();

    let expected = [
        ("meter", "2", "2 free articles left"),
        ("meter", "1", "1 free article left"),
        ("meter", "0", "0 free articles left"),
        ("paywall", "0", "0 free articles left"),
    ];
    for (slug, (action, remaining, text)) in ARTICLES.iter().zip(expected) {
        let (got_action, got_remaining, got_text, events, latest) = read(&mut browser, &base, slug);
        assert_eq!(
            (
                got_action.as_str(),
                got_remaining.as_str(),
                got_text.as_str()
            ),
            (action, remaining, text),
            "{slug}"
        );
        // pulse:decision fired with the decision as its detail; pulse.decision() returns it too.
        let detail = &events[0];
        assert_eq!(detail["action"], action, "{slug}: {events}");
        assert_eq!(detail["remaining"].to_string(), remaining, "{slug}");
        assert_eq!(detail["limit"], 3);
        assert_eq!(detail["fallback"], false);
        assert_eq!(latest["action"], action);
        no_errors(&mut browser);
    }
    let overlay =
        browser.eval("return getComputedStyle(document.querySelector('.paywall')).display");
    assert_eq!(
        overlay, "flex",
        "the paywall overlay covers the fourth article"
    );
    browser.goto("about:blank"); // the last page sends its engagement event as it is hidden

    gateway.stop();
    {
        let store = LogFiles::open(&data).unwrap();
        let events: Vec<_> = store
            .events_from(0)
            .map(|s| s.unwrap().record().unwrap())
            .collect();
        for slug in &ARTICLES[..4] {
            let views = events
                .iter()
                .filter(|r| {
                    r.event.kind == pulse_protocol::EventType::PageView
                        && r.event.page.url.contains(slug)
                })
                .count();
            assert!(views >= 1, "the page view of {slug} is in the store");
        }
        assert!(
            events
                .iter()
                .any(|r| r.event.kind == pulse_protocol::EventType::Engagement),
            "engagement stored"
        );
        let readers: std::collections::HashSet<_> =
            events.iter().map(|r| r.reader.clone()).collect();
        assert_eq!(readers.len(), 1, "one reader across pages: {readers:?}");
    }

    // A new process on the same address (the pages name it); the reader id lives in the
    // publisher origin's storage.
    let gateway = GatewayProcess::start(&config, &data, &addr);
    let (action, remaining, ..) = read(&mut browser, &base, ARTICLES[4]);
    assert_eq!(
        (action.as_str(), remaining.as_str()),
        ("paywall", "0"),
        "the count survived the restart"
    );
    let (action, ..) = read(&mut browser, &base, ARTICLES[0]);
    assert_eq!(action, "meter", "an article already granted stays readable");

    // A reader who types the old trick into the console stays walled: traits grant nothing.
    browser.eval(
        "pulse('identify', 'someone-else', {subscriber: true}); pulse('track', 'nudge'); return true;",
    );
    browser.wait_for(
        "return pulse.decision() && pulse.decision().reason !== 'subscriber' && pulse.decision().signed !== undefined",
        Duration::from_secs(15),
    );
    let (action, ..) = read(&mut browser, &base, ARTICLES[5]);
    assert_eq!(action, "paywall", "a forged subscriber trait lifts nothing");
    // The anonymous id a publisher's server asks about (POST /v1/decide).
    let reader = browser.eval("return pulse.reader()");
    assert!(
        reader
            .as_str()
            .is_some_and(|r| r.len() == 32 && r.bytes().all(|b| b.is_ascii_hexdigit())),
        "{reader}"
    );
    browser.eval("pulse('reset'); return true;");

    // A subscriber (the publisher's signed token, as the demo's log-in button passes it) is
    // never walled.
    browser.eval("document.querySelector('[data-action=login]').click(); return true;");
    browser.wait_for(
        "return pulse.decision() && pulse.decision().reason === 'subscriber'",
        Duration::from_secs(15),
    );
    let (action, _, _, events, _) = read(&mut browser, &base, ARTICLES[5]);
    assert_eq!(action, "allow", "subscriber on a fifth article: {events}");
    no_errors(&mut browser);
    drop(browser);
    gateway.stop();
    // The meter came from the demo's bundle (a limit of 3, as the decisions said).
    let bundle = Config::load(&config).unwrap().scorer.load_bundle().unwrap();
    assert_eq!(bundle.name, "demo-meter");
}
