//! Erasing a reader on request, embedded mode, against the real gateway binary: the admin API
//! (`DELETE /admin/readers/ID`) and the CLI (`gateway reader ID --erase`) say what was erased;
//! the reader's state is gone, their events and decisions are gone from the online export and
//! from the log files on disk (replaced in place, so every other record keeps its position),
//! a restart does not bring them back, and another reader is untouched.

use std::path::Path;
use std::process::Command;

use pulse_e2e::{GatewayProcess, agent, demo_config, gateway_bin, page_view_batch, send_batch};
use pulse_gateway::now_ms;
use serde_json::Value;

fn call(gw: &GatewayProcess, method: &str, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", gw.admin_url);
    let auth = format!("Bearer {}", gw.admin_token());
    let mut resp = match method {
        "DELETE" => agent().delete(&url).header("authorization", &auth).call(),
        _ => agent().get(&url).header("authorization", &auth).call(),
    }
    .expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The records of one log through the online export from position `from`: `(index, record)`.
fn export(gw: &GatewayProcess, log: &str) -> Vec<(u64, Value)> {
    export_from(gw, log, 0, 10_000)
}

fn export_from(gw: &GatewayProcess, log: &str, from: u64, limit: u64) -> Vec<(u64, Value)> {
    let mut resp = agent()
        .get(format!(
            "{}/admin/export?log={log}&from={from}&limit={limit}",
            gw.admin_url
        ))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .expect("export");
    let text = resp.body_mut().read_to_string().unwrap();
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64, serde_json::from_str(l).unwrap()))
        .collect()
}

fn whose(records: &[(u64, Value)], reader: &str) -> usize {
    records
        .iter()
        .filter(|(_, r)| r["reader"] == reader || r["anonymous_id"] == reader)
        .count()
}

/// Whether any file under `dir` holds `needle` as it is.
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            on_disk(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

#[test]
fn an_erased_reader_is_gone_from_state_and_logs_and_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let base = u128::from(now_ms()) << 64;
    let mut sent = 0u128;
    for round in 0..3u64 {
        for reader in ["erase-me-7f3a", "keep-me-1b2c"] {
            sent += 1;
            let batch = page_view_batch(reader, round, base + sent * 8, 2, now_ms());
            assert_eq!(send_batch(&gw.url, &batch).status().as_u16(), 200);
        }
    }
    let before = export(&gw, "events");
    assert_eq!(whose(&before, "erase-me-7f3a"), 6);
    assert_eq!(whose(&before, "keep-me-1b2c"), 6);
    assert!(whose(&export(&gw, "decisions"), "erase-me-7f3a") > 0);
    assert_eq!(call(&gw, "GET", "/admin/readers/erase-me-7f3a").0, 200);

    let (status, erased) = call(&gw, "DELETE", "/admin/readers/erase-me-7f3a");
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["reader"], "erase-me-7f3a");
    assert_eq!(erased["state"], true);
    assert_eq!(erased["log"]["events"], 6, "{erased}");
    assert!(
        erased["log"]["decisions"].as_u64().unwrap() >= 3,
        "{erased}"
    );

    assert_eq!(call(&gw, "GET", "/admin/readers/erase-me-7f3a").0, 404);
    assert_eq!(call(&gw, "GET", "/admin/readers/keep-me-1b2c").0, 200);
    let after = export(&gw, "events");
    assert_eq!(whose(&after, "erase-me-7f3a"), 0);
    // Before the erasure every record was exported, so its index was its position: the other
    // reader's records are still found at theirs.
    let kept: Vec<&(u64, Value)> = before
        .iter()
        .filter(|(_, r)| r["reader"] == "keep-me-1b2c")
        .collect();
    assert_eq!(kept.len(), 6);
    for (position, record) in kept {
        let at = export_from(&gw, "events", *position, 1);
        assert_eq!(
            at.first().map(|(_, r)| r),
            Some(record),
            "position {position}"
        );
    }
    assert_eq!(whose(&export(&gw, "decisions"), "erase-me-7f3a"), 0);
    assert!(
        !on_disk(&data.join("log"), b"erase-me-7f3a"),
        "nothing of theirs left in the log files"
    );
    assert!(on_disk(&data.join("log"), b"keep-me-1b2c"));

    // Erasing again (here through the CLI) erases nothing more, and says so.
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .args([
            "reader",
            "erase-me-7f3a",
            "--erase",
            "--admin",
            &gw.admin_url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["state"], false, "{again}");
    assert_eq!(again["log"]["events"], 0, "{again}");

    // A restart replays the log: the erased reader does not come back.
    gw.stop();
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert_eq!(call(&gw, "GET", "/admin/readers/erase-me-7f3a").0, 404);
    assert_eq!(call(&gw, "GET", "/admin/readers/keep-me-1b2c").0, 200);
    assert_eq!(whose(&export(&gw, "events"), "keep-me-1b2c"), 6);
    gw.stop();
}
