//! The gateway is killed with SIGKILL while clients send batches; after a restart, every event
//! that was acknowledged (answered 200) is in the store.

use std::time::Duration;

use pulse_e2e::{AckingClients, GatewayProcess, agent, demo_config, page_view_batch};
use pulse_gateway::{LogFiles, now_ms};

#[test]
fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let clients = AckingClients::start(&format!("{}/v1/collect?k=demo", gateway.url), 4, 0);
    // Let the clients get going, then kill the gateway mid-stream.
    clients.wait_for(500, Duration::from_secs(20));
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
}
