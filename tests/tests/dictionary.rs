//! A site's dictionary for compact bodies, through a real gateway: trained on the site's own
//! traffic once enough readers sent it, named in answers, served immutable at
//! `/v1/dictionary/<hash>?k=KEY` with nothing in it that only one reader sent, read back for
//! bodies compressed against it, kept across a restart; a body naming a dictionary the gateway
//! does not hold is answered 409 `unknown_dictionary`.

use std::time::Duration;

use pulse_e2e::{GatewayProcess, agent, batch_of, demo_config, metric, metrics_text};
use pulse_gateway::now_ms;
use pulse_protocol::compact::{dictionary_hash, encode_body, encode_record};
use pulse_protocol::{Batch, Event, EventId, EventType, PageContext, WireBatch};
use serde_json::{Value, json};

/// Reader `r`'s page view of one of three articles, with a title, a section and a private
/// property only this reader sends.
fn view(r: u64, seq: u64, now: u64) -> Batch {
    let article = r % 3;
    let event = Event {
        id: EventId(u128::from(now) << 64 | u128::from(r * 1000 + seq)),
        ts: now,
        kind: EventType::PageView,
        name: None,
        page: PageContext {
            url: format!("https://news.example/politics/2026/budget-talks-stall-{article}"),
            referrer: String::new(),
            title: format!("Budget talks stall as deadline nears, part {article}"),
        },
        props: json!({"section": "politics", "note": format!("private-{r}")})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let mut batch = batch_of(&format!("reader-{r:04}"), seq, vec![event], now);
    batch.header.user_id = Some(format!("user-{r}@example.com"));
    batch
}

fn post(gw: &GatewayProcess, body: Vec<u8>) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .send(body)
        .expect("POST /v1/collect");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn compact(batch: &Batch, dictionary: Option<(u32, &[u8])>) -> Vec<u8> {
    encode_body(&encode_record(&WireBatch::from(batch)), dictionary)
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = demo_config(dir);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n[dictionary]\nmin_samples = 30\nsamples = 40\nmin_readers = 4\nbytes = 4096\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_site_dictionary_is_trained_served_used_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");

    // Before enough batches, answers name no dictionary.
    let now = now_ms();
    let (status, answer) = post(&gw, compact(&view(0, 0, now), None));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("dictionary").is_none(), "{answer}");
    // Other readers' views: training starts at the 40th sample, on its own thread; a later
    // answer names the dictionary.
    let mut named = None;
    for r in 1..200 {
        let (status, answer) = post(&gw, compact(&view(r, 0, now_ms()), None));
        assert_eq!(status, 200, "{answer}");
        if let Some(hash) = answer["dictionary"].as_str() {
            named = Some(hash.to_owned());
            break;
        }
        if r > 40 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let hash = named.expect("an answer names the trained dictionary");
    assert_eq!(hash.len(), 8);

    // Served as it is named, immutable, to any page; only what many readers sent is in it.
    let fetch = |gw: &GatewayProcess, path: &str| {
        let mut resp = agent()
            .get(format!("{}{path}", gw.url))
            .call()
            .expect("GET dictionary");
        let cache = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cors = resp
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_vec().unwrap(), cache, cors)
    };
    let (status, dict, cache, cors) = fetch(&gw, &format!("/v1/dictionary/{hash}?k=demo"));
    assert_eq!(status, 200);
    assert!(cache.contains("immutable"), "{cache}");
    assert_eq!(cors, "*");
    assert_eq!(format!("{:08x}", dictionary_hash(&dict)), hash);
    let text = String::from_utf8_lossy(&dict);
    assert!(text.contains("budget-talks-stall-"), "{text}");
    assert!(text.contains("\"section\":\"politics\""), "{text}");
    for private in ["reader-", "user-", "@example.com", "private-"] {
        assert!(
            !text.contains(private),
            "{private} is in the served dictionary"
        );
    }
    for path in [
        format!("/v1/dictionary/{hash}?k=other"),
        "/v1/dictionary/00000000?k=demo".to_owned(),
        "/v1/dictionary/nothex?k=demo".to_owned(),
    ] {
        let resp = agent()
            .get(format!("{}{path}", gw.url))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
    }

    // A body against it: read back, smaller, and its answer names nothing newer.
    let hash_n = u32::from_str_radix(&hash, 16).unwrap();
    let batch = view(7, 1, now_ms());
    let with = compact(&batch, Some((hash_n, &dict)));
    let without = compact(&batch, None);
    assert!(
        with.len() * 10 < without.len() * 8,
        "{} against {} bytes",
        with.len(),
        without.len()
    );
    let (status, answer) = post(&gw, with.clone());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert!(answer.get("dictionary").is_none(), "{answer}");
    assert!(metric(&metrics_text(&gw), "pulse_gateway_dictionary_lookups_total") >= 2.0);
    assert_eq!(
        metric(&metrics_text(&gw), "pulse_gateway_dictionaries"),
        1.0
    );

    // A dictionary the gateway does not hold: 409, with the reason.
    let (status, answer) = post(&gw, compact(&batch, Some((hash_n ^ 1, &dict))));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_dictionary");

    // Kept across a restart.
    gw.stop();
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let (status, again, _, _) = fetch(&gw, &format!("/v1/dictionary/{hash}?k=demo"));
    assert_eq!((status, again), (200, dict));
    let (status, answer) = post(&gw, with);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
}
