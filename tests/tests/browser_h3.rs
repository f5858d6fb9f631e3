//! Headless Chromium, told to use QUIC for the gateway's TLS origin and to trust its generated
//! certificate (by SPKI hash), loads the demo site over HTTP/3 and sends its batches over HTTP/3:
//! the page gets its decision, the browser's timing entries say `h3`, the gateway counts
//! `http3` requests and stores the page view.

use std::time::Duration;

use pulse_e2e::{Browser, TlsGateway, demo_config, metric, metrics_text};
use pulse_gateway::LogFiles;
use serde_json::json;

#[test]
fn chromium_loads_the_demo_and_sends_its_batches_over_http3() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gateway = TlsGateway::start(&config, &data);
    let origin = format!("https://{}", gateway.tls_addr);
    let mut browser = Browser::start_with_args(&[
        "--enable-quic".to_owned(),
        format!("--origin-to-force-quic-on={}", gateway.tls_addr),
        format!(
            "--ignore-certificate-errors-spki-list={}",
            gateway.spki_sha256
        ),
    ]);

    browser.goto(&format!("{origin}/articles/river-cleanup.html"));
    browser.wait_for(
        "return window.__decisions && window.__decisions.length > 0",
        Duration::from_secs(20),
    );
    let decision = browser.eval("return window.__decisions[0]");
    assert_eq!(decision["action"], "meter", "{decision}");
    assert_eq!(decision["remaining"], 2, "{decision}");
    assert_eq!(decision["fallback"], false, "{decision}");
    assert_eq!(browser.eval("return window.__errors"), json!([]));

    let navigation =
        browser.eval("return performance.getEntriesByType('navigation')[0].nextHopProtocol");
    assert_eq!(navigation, "h3", "the page came over HTTP/3");
    let collects = browser.eval(
        "return performance.getEntriesByType('resource')\
           .filter(e => e.name.includes('/v1/collect')).map(e => e.nextHopProtocol)",
    );
    let collects = collects.as_array().cloned().unwrap_or_default();
    assert!(!collects.is_empty(), "the batch shows in resource timing");
    assert!(collects.iter().all(|p| p == "h3"), "{collects:?}");

    let metrics = metrics_text(&gateway.process);
    let h3_ok = |handler: &str| {
        metric(
            &metrics,
            &format!(
                "pulse_gateway_requests_total{{handler=\"{handler}\",protocol=\"http3\",status=\"200\"}}"
            ),
        )
    };
    // The page, the tracker (script and Wasm) and at least one batch.
    assert!(h3_ok("collect") >= 1.0, "{metrics}");
    let h3_ok = h3_ok("collect") + h3_ok("static");
    assert!(
        h3_ok >= 4.0,
        "http3 requests answered 200: {h3_ok}\n{metrics}"
    );
    assert!(
        metric(&metrics, "pulse_gateway_events_accepted_total") >= 1.0,
        "{metrics}"
    );

    drop(browser);
    gateway.process.stop();
    let store = LogFiles::open(&data).unwrap();
    let views = store
        .events_from(0)
        .map(|s| s.unwrap().record().unwrap())
        .filter(|r| {
            r.event.kind == pulse_protocol::EventType::PageView
                && r.event.page.url.contains("river-cleanup")
        })
        .count();
    assert!(views >= 1, "the page view sent over HTTP/3 is stored");
}
