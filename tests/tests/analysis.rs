//! The decision log end to end, with the analysis example: the real gateway with
//! `examples/bundles/reader-profile.toml` (its experiment `meter-limit-2026-12`: arms `three`
//! and `five`, a tenth held out) takes a few hundred readers' page views, a quarter of them
//! subscribing afterwards (a custom event `subscribe`); `gateway dump --decisions` reads the
//! decision log while it runs; after it stops, `gateway dump` and `gateway dump --decisions`
//! give the two logs to `examples/analysis/conversion.py`, run with the real DuckDB, whose
//! per-arm figures must be what was sent; and `gateway replay` with the configured bundle
//! decides the stored log as the gateway did.
//!
//! DuckDB comes from PyPI (pinned in `examples/analysis/requirements.txt`), installed by
//! `scripts/setup.sh --test` into `target/pulse-venv` (or name a Python with `PULSE_PYTHON`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pulse_e2e::{
    GatewayProcess, agent, analysis_python as python, demo_config_with_bundle, gateway_bin,
    page_view_batch, workspace_root,
};
use pulse_gateway::now_ms;
use pulse_protocol::{Event, EventId, EventType, PageContext};
use serde_json::Value;

const READERS: usize = 300;

fn gateway(config: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("run the gateway");
    assert!(
        out.status.success(),
        "gateway {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Sends one batch; returns the decision.
fn send(url: &str, batch: &pulse_protocol::Batch) -> Value {
    let mut resp = agent()
        .post(format!("{url}/v1/collect?k=demo"))
        .send_json(batch)
        .expect("collect");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    answer["decision"].clone()
}

#[test]
fn conversion_per_arm_from_the_logs_with_duckdb() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config_with_bundle(dir.path(), "reader-profile");
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");

    let reader = |i: usize| format!("reader-{i:04}");
    let subscribes = |i: usize| i.is_multiple_of(4);
    // Each reader's first arm, as the pages were told.
    let mut arm_of: BTreeMap<usize, String> = BTreeMap::new();
    let mut batches = 0u64;
    let mut id = 1u128 << 64;
    // Round by round, so that consecutive records of the log are of different readers.
    for round in 0..3u64 {
        for i in 0..READERS {
            id += 1;
            let mut batch = page_view_batch(&reader(i), round, id, 1, now_ms());
            if round == 2 && subscribes(i) {
                batch.events = vec![Event {
                    id: EventId(id),
                    ts: now_ms(),
                    kind: EventType::Custom,
                    name: Some("subscribe".into()),
                    page: PageContext {
                        url: "https://news.example/thanks".into(),
                        ..Default::default()
                    },
                    props: Default::default(),
                }];
            }
            let decision = send(&gw.url, &batch);
            batches += 1;
            if let Some(arm) = decision["experiment"]["arm"].as_str() {
                assert_eq!(decision["experiment"]["experiment"], "meter-limit-2026-12");
                arm_of.entry(i).or_insert_with(|| arm.to_owned());
            }
        }
    }
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (i, arm) in &arm_of {
        let w = want.entry(arm.clone()).or_default();
        w.0 += 1;
        w.1 += u64::from(subscribes(*i));
    }
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["five", "holdout", "three"],
        "{want:?}"
    );
    assert!(
        arm_of.len() > READERS / 2,
        "{} readers exposed",
        arm_of.len()
    );

    // While the gateway runs: every decision reaches the log within a second or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = gateway(&config, &data, &["dump", "--decisions"]);
        let n = lines(&live.stdout).len() as u64;
        if n == batches {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {batches} decisions logged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    gw.stop();

    let decisions = gateway(&config, &data, &["dump", "--decisions"]).stdout;
    let events = gateway(&config, &data, &["dump"]).stdout;
    let logged = lines(&decisions);
    assert_eq!(logged.len() as u64, batches);
    assert_eq!(lines(&events).len() as u64, batches);
    for d in &logged {
        assert!(d["bundle"].is_string() && d["rule"].is_string(), "{d}");
        assert!(d["features"].is_object(), "{d}");
    }
    let decisions_file = dir.path().join("decisions.jsonl");
    let events_file = dir.path().join("events.jsonl");
    std::fs::write(&decisions_file, &decisions).unwrap();
    std::fs::write(&events_file, &events).unwrap();

    let script = workspace_root().join("examples/analysis/conversion.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&decisions_file)
        .arg(&events_file)
        .arg("--json")
        .output()
        .expect("run the analysis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let arms = report["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 3, "{report}");
    for a in arms {
        let arm = a["arm"].as_str().unwrap();
        let (readers, conversions) = want[arm];
        assert_eq!(a["experiment"], "meter-limit-2026-12");
        assert_eq!(a["readers"], readers, "{arm}: {a}");
        assert_eq!(a["conversions"], conversions, "{arm}: {a}");
        let p = a["probability"].as_f64().unwrap();
        let configured = if arm == "holdout" { 0.1 } else { 0.45 };
        assert!((p - configured).abs() < 1e-12, "{arm}: {p}");
        let rate = a["rate"].as_f64().unwrap();
        assert!(
            (rate - conversions as f64 / readers as f64).abs() < 1e-9,
            "{a}"
        );
        let (low, high) = (
            a["ci_low"].as_f64().unwrap(),
            a["ci_high"].as_f64().unwrap(),
        );
        assert!(low <= rate && rate <= high && high - low < 1.0, "{a}");
    }
    // The table, as a person reads it.
    let out = Command::new(&python)
        .arg(&script)
        .arg(&decisions_file)
        .arg(&events_file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{table}");
    assert!(
        table.starts_with("experiment") && table.contains("holdout"),
        "{table}"
    );

    // The backtest: the configured bundle over the stored log decides as the gateway did.
    let replay = gateway(
        &config,
        &data,
        &[
            "replay",
            "--bundle",
            &workspace_root()
                .join("examples/bundles/meter.toml")
                .display()
                .to_string(),
            "--json",
        ],
    );
    let replay: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(replay["events"], batches);
    let active = &replay["bundles"][0];
    assert_eq!(active["role"], "active");
    assert_eq!(active["decisions"], batches);
    let count = |key: &dyn Fn(&Value) -> Option<String>| {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for d in &logged {
            if let Some(k) = key(d) {
                *m.entry(k).or_default() += 1;
            }
        }
        serde_json::to_value(m).unwrap()
    };
    assert_eq!(
        active["actions"],
        count(&|d| d["action"].as_str().map(str::to_owned))
    );
    assert_eq!(
        active["arms"],
        count(&|d| Some(format!(
            "{}/{}",
            d["experiment"].as_str()?,
            d["arm"].as_str()?
        )))
    );
    let candidate = &replay["bundles"][1];
    assert_eq!(candidate["name"], "demo-meter");
    assert_eq!(candidate["decisions"], batches);
    let table = gateway(
        &config,
        &data,
        &[
            "replay",
            "--bundle",
            &workspace_root()
                .join("examples/bundles/meter.toml")
                .display()
                .to_string(),
        ],
    );
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("{table}");
    assert!(
        table.contains("by action") && table.contains("demo-meter"),
        "{table}"
    );
}
