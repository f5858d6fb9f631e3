//! One reader floods the real gateway with 150,000 distinct custom events (1,500 batches of 100,
//! each event with its own name and properties): the reader's state stays bounded, a walled
//! reader stays walled, another reader's decisions are unaffected, and the process's memory
//! stays bounded.

use pulse_e2e::{
    GatewayProcess, agent, demo_config_with_bundle, metric, metrics_text, page_view_batch,
};
use pulse_gateway::now_ms;
use pulse_protocol::{EventId, EventType};
use serde_json::{Value, json};

fn post(gw: &GatewayProcess, batch: &pulse_protocol::Batch) -> Value {
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .send_json(batch)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_flood_from_one_reader_stays_bounded_and_walled() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config_with_bundle(dir.path(), "reader-profile");
    let gw = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let now = now_ms();
    for i in 0..4u128 {
        let mut b = page_view_batch("flooder", i as u64, i, 1, now);
        b.events[0].ts = now + i as u64;
        post(&gw, &b);
    }
    let mut walled = page_view_batch("flooder", 4, 100, 1, now);
    walled.events[0].ts = now + 10;
    assert_eq!(post(&gw, &walled)["decision"]["action"], "paywall");
    let rss_before = rss_kib(gw.pid());

    let mut id = 1u128 << 64;
    for b in 0..1_500u64 {
        let mut batch = page_view_batch("flooder", 10 + b, 0, 100, now);
        for (j, e) in batch.events.iter_mut().enumerate() {
            id += 1;
            e.id = EventId(id);
            e.kind = EventType::Custom;
            e.name = Some(format!("flood.{}", id % 10_000));
            e.ts = now + 1_000 + b * 100 + j as u64;
            e.page.url = format!("https://news.example/f/{id}");
            e.props = json!({"section": format!("s{id}"), "author": format!("a{id}"), "read_depth": id as f64})
                .as_object()
                .cloned()
                .unwrap_or_default();
        }
        let answer = post(&gw, &batch);
        assert_eq!(answer["accepted"], 100);
    }

    // Still walled on a new article; a bystander's meter is untouched.
    let mut next = page_view_batch("flooder", 2_000, 200, 1, now);
    next.events[0].ts = now + 1_000_000;
    let d = post(&gw, &next)["decision"].clone();
    assert_eq!(
        (d["action"].as_str(), d["fallback"].as_bool()),
        (Some("paywall"), Some(false)),
        "{d}"
    );
    let other = post(&gw, &page_view_batch("bystander", 0, 1 << 100, 1, now))["decision"].clone();
    assert_eq!(other["remaining"], 2, "{other}");

    // The flooder's state is bounded: dedupe at its cap, the distinct values bounded.
    let mut resp = agent()
        .get(format!("{}/admin/readers/flooder", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(
        v["dedupe"]["ids"].as_u64().unwrap() <= 2048,
        "{}",
        v["dedupe"]
    );
    let metrics = metrics_text(&gw);
    let cached = metric(&metrics, "pulse_scorer_cache_bytes");
    assert!(cached < 1_048_576.0, "state in memory: {cached} bytes");
    // 150,000 events of fresh strings leave the process's memory bounded: what it grows by is
    // the store's write buffers for the 60 MB of log (as for any 150,000 events), not the
    // reader (the old JSON state left 800 MB).
    let grew = rss_kib(gw.pid()).saturating_sub(rss_before);
    assert!(grew < 256 * 1024, "RSS grew by {grew} KiB");
    gw.stop();
}
