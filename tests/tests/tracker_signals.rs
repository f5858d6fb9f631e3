//! What the tracker records in real headless Chromium, on a publisher's own origin with the
//! README's snippet pointed at the real gateway binary: page views on load, on single-page
//! navigation (History API), on a back/forward-cache restore, on the activation of a prerendered
//! page (never while it is prerendered) and by hand (`pulse('page')`),
//! the engagement of the page left, delivery of a page left at once, clicks on marked elements
//! and outbound links, forms sent (never their fields), the read depth of a marked article,
//! events that outlive a crashed page or an offline spell, a new session for a new campaign,
//! and URLs stripped of query parameters but the campaign's (`utm_*`); `pulse('debug', true)`.

use std::path::Path;
use std::time::{Duration, Instant};

use pulse_e2e::{Browser, GatewayProcess, StaticServer, publisher_config, readme_snippet};
use pulse_gateway::LogFiles;
use pulse_protocol::{EventRecord, EventType};

/// A publisher's pages, each with the README's snippet pointed at `gateway`.
fn site(dir: &Path, gateway: &str) {
    let tag = readme_snippet("tag").replace("https://pulse.example", gateway);
    std::fs::create_dir_all(dir).unwrap();
    for name in ["a", "b"] {
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta property=\"og:type\" content=\"article\"><title>Page {name}</title>{tag}</head>\
             <body><h1>Page {name}</h1><a href=\"/b.html?utm_source=x&amp;id=7\">b</a></body></html>"
        );
        std::fs::write(dir.join(format!("{name}.html")), page).unwrap();
    }
}

/// Waits until the page has seen `n` decisions (one per page view answered).
fn decisions(browser: &mut Browser, n: usize) {
    browser.wait_for(
        &format!("return window.__decisions && window.__decisions.length >= {n}"),
        Duration::from_secs(15),
    );
}

fn stored(data: &Path) -> Vec<EventRecord> {
    LogFiles::open(data)
        .unwrap()
        .events_from(0)
        .map(|s| s.unwrap().record().unwrap())
        .collect()
}

#[test]
fn page_views_on_load_history_navigation_and_by_hand_with_urls_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let base = publisher.url.clone();
    let mut browser = Browser::start();

    browser.goto(&format!("{base}/a.html?utm_source=news&email=x%40y.z#top"));
    decisions(&mut browser, 1);
    // A single-page site moves to another page, then only tidies its URL (no page view), then
    // reports a view by hand.
    browser.eval("history.pushState({}, '', '/b.html?utm_medium=email&token=t1')");
    decisions(&mut browser, 2);
    browser.eval("history.replaceState({}, '', '/b.html?utm_medium=email&token=t2#x')");
    browser.eval("pulse('page', {section: 'sport'})");
    decisions(&mut browser, 3);
    let errors = browser.eval("return window.__errors");
    assert_eq!(errors, serde_json::json!([]), "page errors");
    gateway.stop();

    let events = stored(&data);
    let views: Vec<(&str, String)> = events
        .iter()
        .filter(|r| r.event.kind == EventType::PageView)
        .map(|r| {
            let props = serde_json::to_string(&r.event.props).unwrap();
            (r.event.page.url.as_str(), props)
        })
        .collect();
    let a = format!("{base}/a.html?utm_source=news#top");
    let b = format!("{base}/b.html?utm_medium=email");
    assert_eq!(
        views,
        [
            (a.as_str(), r#"{"content_type":"article"}"#.to_owned()),
            (b.as_str(), r#"{"content_type":"article"}"#.to_owned()),
            (
                format!("{b}#x").as_str(),
                r#"{"section":"sport"}"#.to_owned()
            ),
        ]
    );
    // The page left by the History API reported its engagement, under its own URL.
    assert!(
        events
            .iter()
            .any(|r| r.event.kind == EventType::Engagement && r.event.page.url == a),
        "engagement of page a"
    );
    for r in &events {
        let text = format!("{} {}", r.event.page.url, r.event.page.referrer);
        assert!(
            !text.contains("email=x") && !text.contains("token"),
            "a query parameter not allowed was sent: {text}"
        );
    }
}

#[test]
fn debug_logs_what_is_recorded_sent_and_received() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let tag = readme_snippet("tag")
        .replace("https://pulse.example", &gateway.url)
        .replace("pulse('init',", "pulse('debug',true);pulse('init',");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(
        pages.join("d.html"),
        format!("<!doctype html><html><head><title>d</title>{tag}</head><body>d</body></html>"),
    )
    .unwrap();
    let mut browser = Browser::start();
    browser.goto(&format!("{}/d.html", publisher.url));
    decisions(&mut browser, 1);
    let logs: Vec<String> = browser
        .console()
        .into_iter()
        .map(|(_, message)| message)
        .collect();
    for what in [
        "pulse: record page_view",
        "pulse: send 1 event(s), bytes:",
        "pulse: answer",
    ] {
        assert!(
            logs.iter().any(|m| m.contains(what)),
            "no {what:?} in {logs:#?}"
        );
    }
}

#[test]
fn events_of_a_page_left_at_once_arrive_through_keepalive_or_the_next_page() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let mut browser = Browser::start();
    browser.goto(&format!("{}/a.html", publisher.url));
    decisions(&mut browser, 1);
    // About 80 KiB of properties that do not compress: more than the 64 KiB the browser lets
    // keepalive requests carry at once. The page is left before their batch is due.
    browser.eval(
        "for (let i = 0; i < 40; i++) { let pad = ''; \
         while (pad.length < 3000) pad += Math.random().toString(36).slice(2); \
         pulse('track', 'big', {i, pad: pad.slice(0, 3000)}) }",
    );
    browser.goto("about:blank");
    // The next page of the site resends whatever did not get through.
    browser.goto(&format!("{}/b.html", publisher.url));
    browser.wait_for(
        "return window.__decisions.length > 0 && localStorage.getItem('pulse_queue') === null",
        Duration::from_secs(30),
    );
    gateway.stop();
    let ids: std::collections::HashSet<_> = stored(&data)
        .into_iter()
        .filter(|r| r.event.name.as_deref() == Some("big"))
        .map(|r| r.event.id)
        .collect();
    assert_eq!(ids.len(), 40, "every event of the page left arrived");
}

#[test]
fn a_page_restored_from_the_back_forward_cache_counts_again() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let mut browser = Browser::start();
    browser.goto(&format!("{}/a.html", publisher.url));
    decisions(&mut browser, 1);
    browser.eval("window.__same_document = true");
    browser.goto(&format!("{}/b.html", publisher.url));
    decisions(&mut browser, 1);
    browser.eval("history.back()");
    // The same document is back (not a new load), and it reported a page view again.
    browser.wait_for(
        "return window.__same_document === true && window.__decisions.length >= 2",
        Duration::from_secs(15),
    );
    gateway.stop();
    let a = format!("{}/a.html", publisher.url);
    let views = stored(&data)
        .iter()
        .filter(|r| r.event.kind == EventType::PageView && r.event.page.url == a)
        .count();
    assert_eq!(views, 2, "the first view and the restore");
}

/// Waits until `script` returns `true` (only that: an error answered while the page changes is
/// not a yes), else fails saying `what` did not happen.
fn until(browser: &mut Browser, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.eval(script) != serde_json::json!(true) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the running gateway has stored so far, read beside it (whole blocks only, each written
/// before its requests were answered).
fn stored_so_far(data: &Path) -> Vec<EventRecord> {
    LogFiles::read_only(data)
        .events_from(0)
        .map(|s| s.unwrap().record().unwrap())
        .collect()
}

/// Waits until what the running gateway has stored holds an event that `wanted` picks, else
/// fails saying `what` did not arrive; returns all it has stored.
fn stored_until(
    data: &Path,
    what: &str,
    wanted: impl Fn(&EventRecord) -> bool,
) -> Vec<EventRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = stored_so_far(data);
        if events.iter().any(&wanted) {
            return events;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_prerendered_page_counts_once_when_shown_and_not_while_prerendered() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    // The front page asks Chromium to prerender the next one (speculation rules).
    let front = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Front</title>{tag}\
         <script type=\"speculationrules\">{{\"prerender\":[{{\"source\":\"list\",\
         \"urls\":[\"/next.html\"]}}]}}</script></head>\
         <body><a id=\"next\" href=\"/next.html\">next</a></body></html>"
    );
    // The next page notes whether it started prerendered (in its own window, and in the
    // origin's storage for the front page to read meanwhile), and sends a probe event of its own
    // through the tracker: it shows that the tracker ran and reached the gateway while the page
    // was prerendered, so that no page view then is the tracker waiting, not a page that never
    // ran or could not send.
    let next = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta property=\"og:type\" content=\"article\"><title>Next</title>\
         <script>window.__started_prerendering = document.prerendering === true;\
         localStorage.setItem('next_started_prerendering', String(document.prerendering));\
         </script>{tag}\
         <script>pulse('track', 'probe', {{prerendering: document.prerendering === true}})</script>\
         </head><body>next</body></html>"
    );
    std::fs::write(pages.join("front.html"), front).unwrap();
    std::fs::write(pages.join("next.html"), next).unwrap();
    let next_url = format!("{}/next.html", publisher.url);
    let views_of_next = |events: &[EventRecord]| {
        events
            .iter()
            .filter(|r| r.event.kind == EventType::PageView && r.event.page.url == next_url)
            .count()
    };
    let mut browser = Browser::start();
    browser.goto(&format!("{}/front.html", publisher.url));
    decisions(&mut browser, 1);
    until(
        &mut browser,
        "return localStorage.getItem('next_started_prerendering') === 'true'",
        "Chromium did not prerender /next.html (no speculation rules here?): the case is untested",
    );
    // The probe is not urgent: it leaves at least 2 s (the tracker's batch delay) after the
    // tracker started, and with or after anything the tracker recorded when it started.
    let events = stored_until(&data, "no probe from the prerendered page's tracker", |r| {
        r.event.name.as_deref() == Some("probe")
    });
    let probe = events
        .iter()
        .find(|r| r.event.name.as_deref() == Some("probe"))
        .map(|r| serde_json::to_value(&r.event.props).unwrap());
    assert_eq!(
        probe,
        Some(serde_json::json!({"prerendering": true})),
        "the probe was recorded while the page was prerendered"
    );
    // A second more, for anything else the prerendered page might send late.
    std::thread::sleep(Duration::from_secs(1));
    let events = stored_so_far(&data);
    let front_views = events
        .iter()
        .filter(|r| {
            r.event.kind == EventType::PageView && r.event.page.url.ends_with("/front.html")
        })
        .count();
    assert_eq!(
        front_views, 1,
        "the front page's view, read beside the gateway"
    );
    assert_eq!(views_of_next(&events), 0, "a page view while prerendered");

    // The reader follows the link: the prerendered page is shown, not loaded again.
    browser.eval("document.getElementById('next').click()");
    until(
        &mut browser,
        "return location.pathname === '/next.html'",
        "the link was not followed",
    );
    let shown = browser.eval(
        "return [window.__started_prerendering, \
         performance.getEntriesByType('navigation')[0].activationStart > 0]",
    );
    assert_eq!(
        shown,
        serde_json::json!([true, true]),
        "a prerendered page activated"
    );
    stored_until(&data, "no page view once shown", |r| {
        r.event.kind == EventType::PageView && r.event.page.url == next_url
    });
    // Leaving it delivers whatever else it recorded; the next page empties the queue.
    browser.goto(&format!("{}/b.html", publisher.url));
    browser.wait_for(
        "return window.__decisions.length > 0 && localStorage.getItem('pulse_queue') === null",
        Duration::from_secs(30),
    );
    gateway.stop();
    assert_eq!(
        views_of_next(&stored(&data)),
        1,
        "one page view, when shown"
    );
}

#[test]
fn marked_clicks_outbound_links_forms_and_the_articles_read_depth() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>e</title>{tag}</head><body \
         style=\"margin:0\"><article data-pulse-article style=\"height:1000px\">story</article>\
         <div data-pulse-click=\"subscribe-cta\"><span id=\"cta\">Subscribe</span></div>\
         <a id=\"out\" href=\"https://elsewhere.example/x?token=1&amp;utm_source=y\" \
         onclick=\"return false\">out</a>\
         <form id=\"newsletter\" action=\"/signup?email=x\" onsubmit=\"return false\">\
         <input name=\"email\" value=\"secret@reader.example\"></form>\
         <footer style=\"height:5000px\">more</footer></body></html>"
    );
    std::fs::write(pages.join("e.html"), page).unwrap();
    let mut browser = Browser::start();
    browser.goto(&format!("{}/e.html", publisher.url));
    decisions(&mut browser, 1);
    // The article's bottom comes into view, the document's is far below.
    browser.eval(
        "window.scrollTo(0, 1000); dispatchEvent(new Event('scroll')); \
         document.getElementById('cta').click(); document.getElementById('out').click(); \
         document.getElementById('newsletter').requestSubmit()",
    );
    browser.goto(&format!("{}/b.html", publisher.url));
    browser.wait_for(
        "return window.__decisions.length > 0 && localStorage.getItem('pulse_queue') === null",
        Duration::from_secs(30),
    );
    gateway.stop();
    let events = stored(&data);
    let props = |r: &EventRecord| serde_json::to_value(&r.event.props).unwrap();
    let page_e = format!("{}/e.html", publisher.url);
    let of_e: Vec<&EventRecord> = events
        .iter()
        .filter(|r| r.event.page.url == page_e)
        .collect();
    let clicks: Vec<serde_json::Value> = of_e
        .iter()
        .filter(|r| r.event.kind == EventType::Click)
        .map(|r| props(r))
        .collect();
    assert!(
        clicks
            .iter()
            .any(|p| p["name"] == "subscribe-cta" && p["tag"] == "div"),
        "{clicks:?}"
    );
    assert!(
        clicks
            .iter()
            .any(|p| p["outbound"] == true
                && p["href"] == "https://elsewhere.example/x?utm_source=y"),
        "{clicks:?}"
    );
    let form = of_e
        .iter()
        .find(|r| r.event.name.as_deref() == Some("form_submit"))
        .map(|r| props(r));
    assert_eq!(
        form,
        Some(
            serde_json::json!({"form": "newsletter", "action": format!("{}/signup", publisher.url)})
        )
    );
    let depth = of_e
        .iter()
        .filter(|r| r.event.kind == EventType::Engagement)
        .map(|r| props(r)["read_depth"].as_u64().unwrap_or(0))
        .max();
    assert_eq!(depth, Some(100), "read depth of the marked article");
    for r in &events {
        assert!(
            !props(r).to_string().contains("secret"),
            "a field value was sent"
        );
    }
}

#[test]
fn a_new_campaign_starts_a_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let mut browser = Browser::start();
    for page in [
        "a.html?utm_source=news&utm_campaign=one",
        "b.html",
        "a.html?utm_source=social",
    ] {
        browser.goto(&format!("{}/{page}", publisher.url));
        decisions(&mut browser, 1);
    }
    gateway.stop();
    let sessions: Vec<String> = stored(&data)
        .into_iter()
        .filter(|r| r.event.kind == EventType::PageView)
        .map(|r| r.session_id)
        .collect();
    assert_eq!(sessions.len(), 3);
    assert_eq!(
        sessions[0], sessions[1],
        "a page without a campaign stays in it"
    );
    assert_ne!(
        sessions[1], sessions[2],
        "another campaign, another session"
    );
}

#[test]
fn events_recorded_before_a_crash_arrive_from_the_next_page() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let mut browser = Browser::start();
    browser.goto(&format!("{}/a.html", publisher.url));
    decisions(&mut browser, 1);
    // Recorded, not yet due (2 s), and the page's process dies: no pagehide, no flush.
    browser.eval("for (let i = 0; i < 5; i++) pulse('track', 'before_crash', {i})");
    let next = browser.new_tab();
    browser.cdp("Page.crash", serde_json::json!({}));
    browser.switch_to(&next);
    browser.goto(&format!("{}/b.html", publisher.url));
    browser.wait_for(
        "return window.__decisions.length > 0 && localStorage.getItem('pulse_queue') === null",
        Duration::from_secs(30),
    );
    gateway.stop();
    let ids: std::collections::HashSet<_> = stored(&data)
        .into_iter()
        .filter(|r| r.event.name.as_deref() == Some("before_crash"))
        .map(|r| r.event.id)
        .collect();
    assert_eq!(
        ids.len(),
        5,
        "every event recorded before the crash arrived"
    );
}

#[test]
fn events_recorded_offline_arrive_once_back_online() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);
    let mut browser = Browser::start();
    browser.goto(&format!("{}/a.html", publisher.url));
    decisions(&mut browser, 1);
    browser.cdp("Network.enable", serde_json::json!({}));
    let network = |offline: bool| {
        serde_json::json!({"offline": offline, "latency": 0, "downloadThroughput": -1,
            "uploadThroughput": -1})
    };
    browser.cdp("Network.emulateNetworkConditions", network(true));
    browser
        .eval("pulse('debug', true); for (let i = 0; i < 3; i++) pulse('track', 'offline', {i})");
    // The tracker tried and failed (it logs the failed attempt it will retry).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !browser
        .console()
        .iter()
        .any(|(_, m)| m.contains("no answer to keep:") && m.contains("retry"))
    {
        assert!(Instant::now() < deadline, "no failed attempt");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.cdp("Network.emulateNetworkConditions", network(false));
    browser.wait_for(
        "return localStorage.getItem('pulse_queue') === null",
        Duration::from_secs(60),
    );
    gateway.stop();
    let ids: std::collections::HashSet<_> = stored(&data)
        .into_iter()
        .filter(|r| r.event.name.as_deref() == Some("offline"))
        .map(|r| r.event.id)
        .collect();
    assert_eq!(ids.len(), 3, "every event recorded offline arrived");
}
