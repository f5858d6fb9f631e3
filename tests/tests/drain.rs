//! SIGTERM under load: clients keep sending batches while the gateway is asked to stop. It
//! stops accepting, finishes what is in flight, flushes the log and exits 0; every event that
//! was acknowledged (answered 200) is in the store afterwards, as `gateway dump` prints it.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use pulse_e2e::{AckingClients, GatewayProcess, demo_config, gateway_bin};
use serde_json::Value;

#[test]
fn every_acknowledged_event_survives_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let clients = AckingClients::start(&format!("{}/v1/collect?k=demo", gateway.url), 4, 0);
    // Let the clients get going, then SIGTERM mid-stream; `stop` asserts exit status 0. Once the
    // gateway stops, requests fail: that is the end for each client.
    let before = clients.wait_for(500, Duration::from_secs(20));
    gateway.stop();
    let acked = clients.finish();
    assert!(
        before >= 500,
        "clients got {before} acks before the SIGTERM"
    );

    let dump = Command::new(gateway_bin())
        .arg("dump")
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("gateway dump");
    assert!(dump.status.success(), "{dump:?}");
    let stored: HashSet<u128> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line per event");
            let id = record["event"]["id"].as_str().expect("an event id");
            u128::from_str_radix(id, 16).expect("a hex event id")
        })
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn readyz_says_draining_while_pages_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("[server]\n"), "{text}");
    std::fs::write(
        &config,
        text.replacen("[server]\n", "[server]\ndrain_delay_ms = 3000\n", 1),
    )
    .unwrap();
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let get = |path: &str| {
        let mut resp = pulse_e2e::agent()
            .get(format!("{}{path}", gateway.url))
            .call()
            .expect("GET");
        let status = resp.status().as_u16();
        let body: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or_default();
        (status, body)
    };
    assert_eq!(
        get("/readyz"),
        (200, serde_json::json!({"status": "ready"}))
    );
    gateway.signal("TERM");
    // Within the drain delay: not ready, yet still serving (liveness and pages).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let (status, body) = loop {
        let (status, body) = get("/readyz");
        if status != 200 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reasons"], serde_json::json!(["draining"]));
    assert_eq!(get("/healthz").0, 200);
    let batch = pulse_e2e::page_view_batch("draining", 0, 7 << 64, 1, pulse_gateway::now_ms());
    let resp = pulse_e2e::send_batch(&gateway.url, &batch);
    assert_eq!(
        resp.status().as_u16(),
        200,
        "pages are served while draining"
    );
    gateway.stop();
}
