//! The tag as publishers deploy it: the pages on the publisher's own origin (a plain static
//! server), the tracker's files from the gateway or from a CDN on a third origin, the collect
//! endpoint on the gateway; over HTTP/1.1, HTTP/2 and HTTP/3, in real headless Chromium. A page
//! on an origin the site does not list gets no decision, and the console says why.

use std::time::Duration;

use pulse_e2e::{
    Browser, GatewayProcess, StaticServer, TlsGateway, agent, metric, metrics_text,
    publisher_config, publisher_site, readme_snippet,
};
use serde_json::{Value, json};

/// Opens an article and waits for its decision; returns the first `pulse:decision` detail.
fn read_article(browser: &mut Browser, url: &str) -> Value {
    browser.goto(url);
    browser.wait_for(
        "return window.__decisions && window.__decisions.length > 0",
        Duration::from_secs(20),
    );
    assert_eq!(browser.eval("return window.__errors"), json!([]), "{url}");
    browser.eval("return window.__decisions[0]")
}

/// `nextHopProtocol` of the page's resource entries whose URL contains `part`.
fn protocols_of(browser: &mut Browser, part: &str) -> Vec<Value> {
    let script = format!(
        "return performance.getEntriesByType('resource')\
           .filter(e => e.name.includes({part:?})).map(e => e.nextHopProtocol)"
    );
    browser
        .eval(&script)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The Wasm file a served `pulse.js` loads: `pulse_bg.<16 hex digits>.wasm`.
fn hashed_wasm_name(script: &str) -> String {
    let at = script
        .find("'pulse_bg.")
        .unwrap_or_else(|| panic!("pulse.js names no Wasm file"));
    let name: String = script[at + 1..]
        .chars()
        .take_while(|c| *c != '\'')
        .collect();
    assert_eq!(name.len(), "pulse_bg..wasm".len() + 16, "{name}");
    name
}

/// `name` of the page's resource entries whose URL contains `part`.
fn urls_of(browser: &mut Browser, part: &str) -> Vec<String> {
    let script = format!(
        "return performance.getEntriesByType('resource')\
           .filter(e => e.name.includes({part:?})).map(e => e.name)"
    );
    browser
        .eval(&script)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_tag_on_a_publishers_own_origin_over_http1_http2_and_http3() {
    let dir = tempfile::tempdir().unwrap();
    // One publisher site per protocol: each names the gateway by the address it reaches it on.
    let sites: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|p| {
            let folder = dir.path().join(p);
            let server = StaticServer::folder(&folder);
            (folder, server)
        })
        .collect();
    let origins: Vec<&str> = sites.iter().map(|(_, s)| s.url.as_str()).collect();
    let config = publisher_config(dir.path(), &origins);
    let data = dir.path().join("data");
    let gateway = TlsGateway::start(&config, &data);
    let https = format!("https://{}", gateway.tls_addr);
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        gateway.spki_sha256
    );
    let cases = [
        // Cleartext: Chromium speaks HTTP/1.1.
        ("http/1.1", "http1", gateway.process.url.clone(), vec![]),
        // TLS with QUIC off: HTTP/2 by ALPN.
        (
            "h2",
            "http2",
            https.clone(),
            vec![trust.clone(), "--disable-quic".to_owned()],
        ),
        // QUIC forced for the gateway's origin: HTTP/3.
        (
            "h3",
            "http3",
            https.clone(),
            vec![
                trust.clone(),
                "--enable-quic".to_owned(),
                format!("--origin-to-force-quic-on={}", gateway.tls_addr),
            ],
        ),
    ];
    for ((folder, site), (hop, label, gateway_url, args)) in sites.iter().zip(cases) {
        let tag = readme_snippet("tag").replace("https://pulse.example", &gateway_url);
        publisher_site(folder, &tag);
        // Answered 200 over `label`: the tracker's files (static) and batches (collect).
        let answered = |text: &str| {
            ["collect", "static"]
                .iter()
                .map(|handler| {
                    metric(
                        text,
                        &format!(
                            "pulse_gateway_requests_total{{handler=\"{handler}\",protocol=\"{label}\",status=\"200\"}}"
                        ),
                    )
                })
                .sum::<f64>()
        };
        let before = answered(&metrics_text(&gateway.process));
        // A fresh profile: a new reader, whose first article is free with 2 left.
        let mut browser = Browser::start_with_args(&args);
        let decision = read_article(
            &mut browser,
            &format!("{}/articles/river-cleanup.html", site.url),
        );
        assert_eq!(decision["action"], "meter", "{hop}: {decision}");
        assert_eq!(decision["remaining"], 2, "{hop}: {decision}");
        assert_eq!(decision["fallback"], false, "{hop}: {decision}");
        let html =
            browser.eval("return document.documentElement.getAttribute('data-pulse-paywall')");
        assert_eq!(html, "meter", "{hop}");
        // The page came from the publisher; the tracker's files and the batch from the gateway.
        let page = browser.eval("return location.origin");
        assert_eq!(page, site.url.as_str(), "{hop}");
        // The Wasm by its content-hashed name (`pulse_bg.<hash>.wasm`).
        for part in ["/pulse.js", "/pulse_bg.", "/v1/collect"] {
            let urls = urls_of(&mut browser, part);
            assert!(
                !urls.is_empty() && urls.iter().all(|u| u.starts_with(&gateway_url)),
                "{hop}: {part} from the gateway: {urls:?}"
            );
            let hops = protocols_of(&mut browser, part);
            assert!(hops.iter().all(|p| p == hop), "{hop}: {part} over {hops:?}");
        }
        drop(browser);
        let after = metrics_text(&gateway.process);
        let served = answered(&after) - before;
        // pulse.js, pulse_bg.wasm and at least one batch.
        assert!(
            served >= 3.0,
            "{hop}: {served} answers over {label}\n{after}"
        );
    }
}

#[test]
fn the_tracker_files_from_a_cdn_on_a_third_origin() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("site");
    let publisher = StaticServer::folder(&folder);
    let config = publisher_config(dir.path(), &[&publisher.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    // A pull CDN: it copies the files and their headers from the gateway once: the script
    // the tag names, and the Wasm that script names (by its content hash).
    let script = agent()
        .get(format!("{}/pulse.js", gateway.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let wasm = hashed_wasm_name(&script);
    let cdn = StaticServer::mirror(&[
        ("/pulse/pulse.js", &format!("{}/pulse.js", gateway.url)),
        (
            &format!("/pulse/{wasm}"),
            &format!("{}/{wasm}", gateway.url),
        ),
    ]);
    let tag = readme_snippet("tag-from-cdn")
        .replace("https://cdn.example", &cdn.url)
        .replace("https://pulse.example", &gateway.url);
    publisher_site(&folder, &tag);
    let origins = [&publisher.url, &cdn.url, &gateway.url];
    assert!(
        origins[0] != origins[1] && origins[1] != origins[2] && origins[0] != origins[2],
        "three origins: {origins:?}"
    );

    let mut browser = Browser::start();
    let decision = read_article(
        &mut browser,
        &format!("{}/articles/night-trains.html", publisher.url),
    );
    assert_eq!(decision["action"], "meter", "{decision}");
    assert_eq!(decision["remaining"], 2, "{decision}");
    for (part, from) in [
        ("/pulse.js", &cdn.url),
        (&format!("/pulse/{wasm}"), &cdn.url),
        ("/v1/collect", &gateway.url),
    ] {
        let urls = urls_of(&mut browser, part);
        assert!(
            !urls.is_empty() && urls.iter().all(|u| u.starts_with(from.as_str())),
            "{part} from {from}: {urls:?}"
        );
    }
    // A second article: the same reader (the publisher's storage), counted on.
    browser.goto(&format!("{}/articles/harbour-festival.html", publisher.url));
    let second = browser.wait_for(
        "return window.__decisions.length > 0 && window.__decisions[0]",
        Duration::from_secs(20),
    );
    assert_eq!(second["remaining"], 1, "{second}");
}

#[test]
fn a_page_on_an_unlisted_origin_gets_nothing_and_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let listed = StaticServer::folder(&dir.path().join("listed"));
    let folder = dir.path().join("other");
    let other = StaticServer::folder(&folder);
    let config = publisher_config(dir.path(), &[&listed.url]);
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let tag = readme_snippet("tag").replace("https://pulse.example", &gateway.url);
    publisher_site(&folder, &tag);

    let mut browser = Browser::start();
    browser.goto(&format!("{}/articles/library-hours.html", other.url));
    // The tracker reads the refusal and says why in the console.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let warning = loop {
        let found = browser
            .console()
            .into_iter()
            .find(|(_, message)| message.contains("origin_not_allowed"));
        if let Some((_, message)) = found {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no console message names origin_not_allowed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(warning.contains("(403)"), "{warning}");
    assert_eq!(browser.eval("return window.__decisions"), json!([]));
    assert_eq!(browser.eval("return pulse.decision()"), Value::Null);
    // The snippet's "pending" stays: no decision came.
    assert_eq!(
        browser.eval("return document.documentElement.getAttribute('data-pulse-paywall')"),
        "pending"
    );
    // Refused for good: nothing parked for a later page to resend.
    assert_eq!(
        browser.eval("return localStorage.getItem('pulse_queue')"),
        Value::Null
    );
    let metrics = metrics_text(&gateway);
    assert!(
        metric(
            &metrics,
            "pulse_gateway_errors_total{reason=\"origin_not_allowed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "pulse_gateway_events_accepted_total"),
        0.0,
        "{metrics}"
    );
}
