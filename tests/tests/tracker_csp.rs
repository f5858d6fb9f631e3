//! The Content Security Policy a site needs for the tracker, as README.md states it, in real
//! headless Chromium: with it (the snippet allowed by a nonce, the gateway in `script-src` and
//! `connect-src`, `'wasm-unsafe-eval'`) the tracker runs and decides; without
//! `'wasm-unsafe-eval'` it cannot compile its Wasm, says so, and the page is not broken.

use std::time::Duration;

use pulse_e2e::{Browser, GatewayProcess, StaticServer, publisher_config, readme_snippet};
use serde_json::json;

fn page(tag: &str, policy: &str) -> String {
    let tag = tag.replace("<script>", "<script nonce=\"pulse-1\">");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\
         <title>csp</title>{tag}</head><body><h1>csp</h1></body></html>"
    )
}

#[test]
fn the_documented_policy_lets_the_tracker_run_and_without_wasm_eval_it_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let publisher = StaticServer::folder(&root);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    let g = &gateway.url;
    let strict = format!(
        "default-src 'none'; script-src 'nonce-pulse-1' {g} 'wasm-unsafe-eval'; connect-src {g}"
    );
    let no_wasm = format!("default-src 'none'; script-src 'nonce-pulse-1' {g}; connect-src {g}");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("strict.html"), page(&tag, &strict)).unwrap();
    std::fs::write(root.join("no-wasm.html"), page(&tag, &no_wasm)).unwrap();
    let mut browser = Browser::start();

    browser.goto(&format!("{}/strict.html", publisher.url));
    browser.wait_for(
        "return window.__decisions && window.__decisions.length > 0",
        Duration::from_secs(15),
    );
    assert_eq!(browser.eval("return window.__errors"), json!([]));

    browser.goto(&format!("{}/no-wasm.html", publisher.url));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let warned = browser
            .console()
            .iter()
            .any(|(_, m)| m.contains("pulse: could not load the tracker"));
        if warned {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning that the tracker could not load"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        browser.eval("return window.__errors"),
        json!([]),
        "the page broke"
    );
    // The snippet still painted the last decision (kept by the first page).
    assert_eq!(
        browser.eval("return document.documentElement.getAttribute('data-pulse-paywall')"),
        "meter"
    );
}
