//! The gateway is killed with SIGKILL while clients send batches; after a restart, every event
//! that was acknowledged (answered 200) is in the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulse_e2e::{GatewayProcess, agent, demo_config, page_view_batch};
use pulse_gateway::{EmbeddedStore, now_ms};

#[test]
fn acknowledged_events_survive_sigkill() {
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
    // Let the clients get going, then kill the gateway mid-stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 500 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    gateway.kill();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
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
    let store = EmbeddedStore::open(&data).unwrap();
    let stored: std::collections::HashSet<u128> = store
        .events_from(0)
        .map(|s| s.unwrap().record.event.id.0)
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
