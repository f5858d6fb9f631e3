//! pulse-load against the real gateway binary (HTTP/1.1, open loop) and against pulse-floor
//! (HTTP/2 with prior knowledge, closed loop): no errors, consistent counts, and the gateway
//! stored what it acknowledged. Nothing here asserts a time.

use pulse_e2e::{
    FloorProcess, GatewayProcess, TlsGateway, demo_config, metric, metrics_text, run_load,
};
use serde_json::Value;

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn assert_consistent(report: &Value, events_per_batch: u64) {
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    assert_eq!(n("errors"), 0, "errors: {report}");
    assert!(n("requests") > 0, "{report}");
    assert_eq!(n("ok"), n("requests"));
    assert_eq!(n("events"), n("requests") * events_per_batch);
    assert_eq!(n("events_accepted"), n("events"));
    assert!(report["bytes_per_event"].as_f64().unwrap() > 0.0);
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn open_loop_h1_against_the_gateway_stores_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    // The demo site allows its own origin.
    let origin = gateway.url.clone();
    let (status, report) = run_load(&format!(
        "--url {} --origin {origin} --proto h1 --rate 50 --duration 3 --warmup 0 \
         --events-per-batch 10 --connections 4 --readers 200",
        gateway.url
    ));
    assert!(status.success(), "pulse-load failed: {report}");
    assert_consistent(&report, 10);
    assert_eq!(report["setup"]["mode"], "open");
    // About 150 requests are due in 3 s; the count is exact because due times are fixed.
    assert_eq!(report["requests"].as_u64(), Some(150));
    let metrics = metrics_text(&gateway);
    let stored = counter(&metrics, "pulse_gateway_events_accepted_total");
    assert_eq!(stored, report["events"].as_u64().unwrap());
    let batches = counter(&metrics, "pulse_gateway_batches_accepted_total");
    assert_eq!(batches, report["requests"].as_u64().unwrap());
    gateway.stop();
}

#[test]
fn closed_loop_h2c_against_the_floor() {
    let floor = FloorProcess::start();
    let (status, report) = run_load(&format!(
        "--url {} --proto h2 --connections 2 --streams 4 --duration 2 --warmup 0.2 \
         --events-per-batch 50 --readers 500 --pool 500",
        floor.url
    ));
    assert!(status.success(), "pulse-load failed: {report}");
    assert_consistent(&report, 50);
    assert_eq!(report["setup"]["proto"], "h2");
    assert_eq!(report["setup"]["mode"], "closed");
}

#[test]
fn errors_are_counted_by_reason_and_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let gateway = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let (status, report) = run_load(&format!(
        "--url {} --origin https://elsewhere.example --rate 20 --duration 0.5 --warmup 0",
        gateway.url
    ));
    assert!(!status.success());
    assert_eq!(report["ok"].as_u64(), Some(0));
    assert_eq!(
        report["errors_by_reason"]["origin_not_allowed"],
        report["requests"]
    );
    assert_eq!(report["errors_by_status"]["403"], report["requests"]);
}

#[test]
fn h2_over_tls_and_h3_against_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let gateway = TlsGateway::start(&config, &dir.path().join("data"));
    let url = format!("https://{}", gateway.tls_addr);
    let ca = gateway.cert_path.display().to_string();
    for proto in ["h2", "h3"] {
        let (status, report) = run_load(&format!(
            "--url {url} --origin {url} --ca {ca} --proto {proto} --rate 40 --duration 2 \
             --warmup 0 --events-per-batch 10 --connections 2 --streams 4 --readers 100"
        ));
        assert!(status.success(), "pulse-load {proto} failed: {report}");
        assert_consistent(&report, 10);
        assert_eq!(report["setup"]["proto"], proto);
    }
    let metrics = metrics_text(&gateway.process);
    for proto in ["http2", "http3"] {
        let ok = metric(
            &metrics,
            &format!(
                "pulse_gateway_requests_total{{handler=\"collect\",protocol=\"{proto}\",status=\"200\"}}"
            ),
        );
        assert!(ok >= 80.0, "{proto}: {ok} answered 200");
    }
    gateway.process.stop();
}
