//! SIGTERM under load: clients keep sending batches while the gateway is asked to stop. It
//! stops accepting, finishes what is in flight, flushes the log and exits 0; every event that
//! was acknowledged (answered 200) is in the store afterwards, as `gateway dump` prints it.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_e2e::{GatewayProcess, agent, demo_config, gateway_bin, page_view_batch};
use pulse_gateway::now_ms;
use serde_json::Value;

#[test]
fn every_acknowledged_event_survives_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gateway = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let url = format!("{}/v1/collect?k=demo", gateway.url);
    let acked = Arc::new(Mutex::new(Vec::<u128>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u128)
        .map(|c| {
            let (url, acked, stop) = (url.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let agent = agent();
                for i in 0..100_000u128 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let first = (c << 64) | (i * 10);
                    let batch =
                        page_view_batch(&format!("reader-{c}"), i as u64, first, 5, now_ms());
                    // Once the gateway stops, requests fail: that is the end for this client.
                    let Ok(mut resp) = agent.post(&url).send_json(&batch) else {
                        break;
                    };
                    let ok = resp.status().as_u16() == 200
                        && resp
                            .body_mut()
                            .read_to_string()
                            .is_ok_and(|t| t.contains("\"accepted\":5"));
                    if ok {
                        acked.lock().unwrap().extend((0..5).map(|k| first + k));
                    }
                }
            })
        })
        .collect();
    // Let the clients get going, then SIGTERM mid-stream; `stop` asserts exit status 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = acked.lock().unwrap().len();
    gateway.stop();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
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
