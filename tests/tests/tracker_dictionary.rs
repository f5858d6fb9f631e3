//! The tracker and the site's dictionary in real headless Chromium, on a publisher's own origin:
//! once an answer names the dictionary the gateway trained on the site's traffic, the tracker
//! fetches it, keeps it, and compresses the next batches against it; a kept dictionary the
//! gateway does not hold (409 `unknown_dictionary`) is dropped and the batch sent again
//! without, nothing lost. Event ids are the session id plus an offset (8 bytes on the wire).

use std::path::Path;
use std::time::Duration;

use pulse_e2e::{
    Browser, GatewayProcess, StaticServer, agent, metric, metrics_text, publisher_config,
    readme_snippet,
};
use pulse_gateway::{LogFiles, now_ms};
use pulse_protocol::compact::{dictionary_hash, encode_body, encode_record};
use pulse_protocol::{EventType, WireBatch};

fn site(dir: &Path, gateway: &str) {
    let tag = readme_snippet("tag").replace("https://pulse.example", gateway);
    std::fs::create_dir_all(dir).unwrap();
    for name in ["a", "b"] {
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <title>Page {name}</title>{tag}</head><body><h1>Page {name}</h1></body></html>"
        );
        std::fs::write(dir.join(format!("{name}.html")), page).unwrap();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lookups(gw: &GatewayProcess) -> f64 {
    metric(&metrics_text(gw), "pulse_gateway_dictionary_lookups_total")
}

#[test]
fn the_tracker_fetches_keeps_and_uses_the_site_dictionary_and_drops_one_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("site");
    let publisher = StaticServer::folder(&pages);
    let base = publisher.url.clone();
    let config = publisher_config(dir.path(), &[&base]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[dictionary]\nmin_samples = 10\nsamples = 15\nmin_readers = 3\nbytes = 4096\n",
    );
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    site(&pages, &gateway.url);

    // Other readers of the site's pages, until an answer names the trained dictionary.
    let mut named = None;
    for r in 0..100u64 {
        let mut batch =
            pulse_e2e::page_view_batch(&format!("other-{r}"), 0, 1 + u128::from(r), 1, now_ms());
        batch.events[0].page.url = format!("{base}/a.html");
        batch.events[0].page.title = "Page a".into();
        let body = encode_body(&encode_record(&WireBatch::from(&batch)), None);
        let mut resp = agent()
            .post(format!("{}/v1/collect?k=demo", gateway.url))
            .header("origin", &base)
            .send(body)
            .expect("POST");
        assert_eq!(resp.status().as_u16(), 200);
        let answer: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        if let Some(name) = answer["dictionary"].as_str() {
            named = Some(name.to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let name = named.expect("a dictionary is trained");
    let before = lookups(&gateway);

    // The first page's answer names it: fetched and kept; the next batch uses it.
    let mut browser = Browser::start();
    browser.goto(&format!("{base}/a.html"));
    browser.wait_for(
        &format!("return (localStorage.getItem('pulse_dict') || '').startsWith('{name}')"),
        Duration::from_secs(15),
    );
    browser.goto(&format!("{base}/b.html"));
    browser.wait_for(
        "return window.__decisions && window.__decisions.length >= 1",
        Duration::from_secs(15),
    );
    // Served once, then read for at least the page view of b.
    assert!(lookups(&gateway) >= before + 2.0, "the dictionary was used");

    // A kept dictionary this gateway never held (its name right for its bytes): the page view
    // is refused 409, sent again without it, and the site's dictionary fetched again.
    let fake = b"https://elsewhere.example/ a dictionary of another gateway";
    let fake_name = format!("{:08x}", dictionary_hash(fake));
    browser.eval(&format!(
        "localStorage.setItem('pulse_dict', '{fake_name}{}')",
        hex(fake)
    ));
    browser.goto(&format!("{base}/a.html?again=1"));
    browser.wait_for(
        &format!("return (localStorage.getItem('pulse_dict') || '').startsWith('{name}')"),
        Duration::from_secs(15),
    );
    assert_eq!(
        metric(
            &metrics_text(&gateway),
            "pulse_gateway_errors_total{reason=\"unknown_dictionary\"}"
        ),
        1.0
    );
    let errors = browser.eval("return window.__errors");
    assert_eq!(errors, serde_json::json!([]), "page errors");
    drop(browser);
    gateway.stop();

    // Every page view of the browser's reader is stored: a, b and a again; each event's id is
    // its session's id plus less than 2^64 (8 bytes on the wire, not 16).
    let mine: Vec<_> = LogFiles::open(&data)
        .unwrap()
        .events_from(0)
        .map(|s| s.unwrap().record().unwrap())
        .filter(|r| !r.anonymous_id.starts_with("other-"))
        .collect();
    for r in &mine {
        let session = pulse_protocol::EventId::parse_hex(&r.session_id).unwrap().0;
        assert!(r.event.id.0.wrapping_sub(session) >> 64 == 0, "{r:?}");
    }
    let views: Vec<String> = mine
        .into_iter()
        .filter(|r| r.event.kind == EventType::PageView)
        .map(|r| r.event.page.url)
        .collect();
    assert_eq!(
        views,
        [
            format!("{base}/a.html"),
            format!("{base}/b.html"),
            format!("{base}/a.html")
        ]
    );
}
