//! Decisions without flicker, in real headless Chromium: the README's snippet marks the page
//! `data-pulse-paywall="pending"` before its first paint (so the site's CSS chooses fail-open or
//! fail-closed), and on later pages sets the last decision's attributes from `localStorage` at
//! once, before the tracker has even loaded; each answer then refreshes them.
//!
//! What is painted is read by a script inline in the body, right after the article: it runs
//! while the page is parsed, before the asynchronous tracker could answer anything.

use std::time::Duration;

use pulse_e2e::{Browser, GatewayProcess, StaticServer, publisher_config, readme_snippet};
use serde_json::json;

#[test]
fn the_snippet_paints_pending_then_the_last_decision_before_the_tracker_loads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let publisher = StaticServer::folder(&root);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    std::fs::create_dir_all(&root).unwrap();
    for name in ["one", "two"] {
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta property=\"og:type\" content=\"article\"><title>{name}</title>{tag}\
             <style>html[data-pulse-paywall=pending] .body {{ visibility: hidden }}\
             html[data-pulse-paywall=meter] .meter {{ display: block }} .meter {{ display: none }}</style>\
             </head><body><article><p class=\"body\">Story {name}</p><p class=\"meter\">meter</p></article>\
             <script>const h = document.documentElement;\
             window.__painted = [h.getAttribute('data-pulse-paywall'), h.getAttribute('data-pulse-remaining'),\
             getComputedStyle(document.querySelector('.body')).visibility,\
             getComputedStyle(document.querySelector('.meter')).display, !!(window.pulse && window.pulse.reader)];\
             </script></body></html>"
        );
        std::fs::write(root.join(format!("{name}.html")), page).unwrap();
    }
    let mut browser = Browser::start();
    let open = |browser: &mut Browser, name: &str| {
        browser.goto(&format!("{}/{name}.html", publisher.url));
        let painted = browser.eval("return window.__painted");
        browser.wait_for(
            "return window.__decisions && window.__decisions.length > 0",
            Duration::from_secs(15),
        );
        painted
    };
    // A first visit: nothing known, the story hidden (this site fails closed), the tracker not
    // yet running.
    assert_eq!(
        open(&mut browser, "one"),
        json!(["pending", null, "hidden", "none", false])
    );
    let now = browser.eval(
        "const h = document.documentElement; \
         return [h.getAttribute('data-pulse-paywall'), h.getAttribute('data-pulse-remaining')]",
    );
    assert_eq!(now, json!(["meter", "2"]), "the answer applied");
    // The next page paints the last decision at once.
    assert_eq!(
        open(&mut browser, "two"),
        json!(["meter", "2", "visible", "block", false])
    );
    let now = browser.eval("return document.documentElement.getAttribute('data-pulse-remaining')");
    assert_eq!(now, "1", "then refreshed by this page's answer");
    drop(gateway);
}
