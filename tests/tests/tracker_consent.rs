//! Consent in real headless Chromium, on a publisher's own origin with the README's snippet
//! pointed at the real gateway binary: `consent: 'pending'` sends and stores nothing until the
//! reader grants it, a refusal is remembered across pages, Global Privacy Control is honoured,
//! and the memory-only mode keeps no identifier in storage.
//!
//! "Nothing was sent" is read from the page's own `fetch`, counted by a wrapper the page
//! installs before the snippet, after a timer queued behind the tracker's first one has run.

use std::path::Path;
use std::time::Duration;

use pulse_e2e::{Browser, GatewayProcess, StaticServer, publisher_config, readme_snippet};
use serde_json::{Value, json};

struct Site {
    _dir: tempfile::TempDir,
    base: String,
    _publisher: StaticServer,
    _gateway: GatewayProcess,
    browser: Browser,
}

/// A publisher whose pages each run `before` ahead of the snippet, whose `init` gets `options`.
fn site(pages: &[(&str, &str, &str)]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let publisher = StaticServer::folder(&root);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    write_pages(&root, &gateway.url, pages);
    Site {
        base: publisher.url.clone(),
        _dir: dir,
        _publisher: publisher,
        _gateway: gateway,
        browser: Browser::start(),
    }
}

fn write_pages(root: &Path, gateway: &str, pages: &[(&str, &str, &str)]) {
    std::fs::create_dir_all(root).unwrap();
    let tag = readme_snippet("tag").replace("https://pulse.example", gateway);
    for (name, before, options) in pages {
        let tag = tag.replace(
            "pulse('init',{key:'demo'});",
            &format!("pulse('init',{options});"),
        );
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title>\
             <script>window.__fetches = []; const f = window.fetch; \
             window.fetch = function (u) {{ __fetches.push(String(u)); return f.apply(this, arguments) }};\
             {before}</script>{tag}</head><body><h1>{name}</h1></body></html>"
        );
        std::fs::write(root.join(format!("{name}.html")), page).unwrap();
    }
}

impl Site {
    /// Opens a page and waits until the tracker has run its first timer.
    fn open(&mut self, name: &str) {
        self.browser.goto(&format!("{}/{name}.html", self.base));
        self.browser.wait_for(
            "return !!(window.pulse && window.pulse.reader)",
            Duration::from_secs(15),
        );
        self.browser
            .eval("window.__tick = 0; setTimeout(() => { window.__tick = 1 }, 0)");
        self.browser
            .wait_for("return window.__tick === 1", Duration::from_secs(15));
    }

    /// The collect requests the page made so far.
    fn sent(&mut self) -> usize {
        let v = self
            .browser
            .eval("return window.__fetches.filter(u => u.includes('/v1/collect')).length");
        v.as_u64().unwrap_or(u64::MAX) as usize
    }

    fn storage(&mut self, key: &str) -> Value {
        self.browser
            .eval(&format!("return localStorage.getItem({key:?})"))
    }

    fn decided(&mut self) {
        self.browser.wait_for(
            "return window.__decisions && window.__decisions.length > 0",
            Duration::from_secs(15),
        );
    }
}

#[test]
fn pending_sends_and_stores_nothing_until_granted() {
    let mut s = site(&[("p", "", "{key:'demo',consent:'pending'}")]);
    s.open("p");
    assert_eq!(s.sent(), 0, "sent before consent");
    assert_eq!(s.storage("pulse_state"), Value::Null);
    s.browser.eval("pulse('consent', {granted: true})");
    s.decided();
    assert!(s.sent() >= 1);
    assert_ne!(
        s.storage("pulse_state"),
        Value::Null,
        "the session is kept once granted"
    );
}

#[test]
fn a_refusal_is_remembered_on_the_next_page() {
    let mut s = site(&[
        ("p", "", "{key:'demo',consent:'pending'}"),
        ("q", "", "{key:'demo'}"),
    ]);
    s.open("p");
    s.browser.eval("pulse('consent', {granted: false})");
    s.open("q");
    assert_eq!(s.sent(), 0, "sent after an opt-out");
    assert_eq!(s.storage("pulse_state"), Value::Null);
    assert_eq!(s.storage("pulse_optout"), json!("1"));
    // Granting again lifts it.
    s.browser.eval("pulse('consent', {granted: true})");
    s.decided();
    assert_eq!(s.storage("pulse_optout"), Value::Null);
}

#[test]
fn global_privacy_control_is_honoured() {
    let gpc = "Object.defineProperty(navigator, 'globalPrivacyControl', {value: true});";
    let mut s = site(&[("p", gpc, "{key:'demo'}")]);
    s.open("p");
    assert_eq!(s.sent(), 0, "sent despite Global Privacy Control");
    assert_eq!(s.storage("pulse_state"), Value::Null);
    // The reader's own consent on the site overrides the browser's signal.
    s.browser.eval("pulse('consent', {granted: true})");
    s.decided();
}

#[test]
fn memory_only_keeps_no_identifier_in_storage() {
    let mut s = site(&[("p", "", "{key:'demo',consent:'memory'}")]);
    s.open("p");
    s.decided();
    assert_eq!(s.storage("pulse_state"), Value::Null);
    let first = s.browser.eval("return pulse.reader()");
    s.open("p");
    s.decided();
    let second = s.browser.eval("return pulse.reader()");
    assert_ne!(first, second, "a new reader on every page load");
    assert_eq!(s.storage("pulse_state"), Value::Null);
}
