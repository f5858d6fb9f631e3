//! The gateway is killed with SIGKILL while clients send batches; after a restart, every event
//! that was acknowledged (answered 200) is in the store, and reader state counts every event of
//! the log exactly once (what was written behind before the kill, plus the replay of the rest).

use std::collections::HashMap;
use std::time::Duration;

use pulse_e2e::{
    AckingClients, GatewayProcess, agent, demo_config_with_bundle, metric, metrics_text,
    page_view_batch,
};
use pulse_gateway::{LogFiles, now_ms};

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config_with_bundle(dir.path(), "reader-profile");
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let clients = AckingClients::start(&format!("{}/v1/collect?k=demo", gateway.url), 4, 0);
    // Let the clients get going, then kill the gateway mid-stream.
    clients.wait_for(500, Duration::from_secs(20));
    // Some state was written behind before the kill, so recovery is store + replay of the rest.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(&metrics_text(&gateway), "pulse_scorer_states_written_total") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing written behind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    clients.wait_for(1000, Duration::from_secs(20));
    gateway.kill();
    let acked = clients.finish();
    assert!(
        acked.len() >= 500,
        "clients got {} acks before the kill",
        acked.len()
    );

    // Restart (recovery and replay run), serve one more batch, stop cleanly, then read the store.
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let batch = page_view_batch("after", 0, 1 << 100, 1, now_ms());
    let resp = agent()
        .post(format!("{}/v1/collect?k=demo", gateway.url))
        .send_json(&batch)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Each reader's lifetime page-view count, as the restarted gateway's state has it.
    let token = gateway.admin_token();
    let counted: HashMap<String, f64> = (0..4)
        .map(|c| {
            let reader = format!("reader-{c}");
            let mut resp = agent()
                .get(format!("{}/admin/readers/{reader}", gateway.admin_url))
                .header("authorization", format!("Bearer {token}"))
                .call()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let v: serde_json::Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            let n = v["features"]["page_views_lifetime"]["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("{v}"));
            (reader, n)
        })
        .collect();
    gateway.stop();
    let store = LogFiles::open(&data).unwrap();
    let stored: std::collections::HashSet<u128> = store
        .events_from(0)
        .map(|s| s.unwrap().record().unwrap().event.id.0)
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(stored.contains(&(1 << 100)));
    let mut in_log: HashMap<String, f64> = HashMap::new();
    for s in store.events_from(0) {
        *in_log
            .entry(s.unwrap().record().unwrap().reader)
            .or_default() += 1.0;
    }
    for (reader, n) in &counted {
        assert_eq!(
            Some(n),
            in_log.get(reader),
            "{reader}: state counts each logged event once"
        );
    }
}
