//! Bundles as an operator uses them on the real gateway binary: `gateway bundle check` lists
//! every problem; SIGHUP with a bundle that changes only the decision applies to the next batch;
//! a broken bundle is refused and the old one kept; a bundle with new features is rebuilt from
//! the log and then decides; `gateway reader ID` explains a reader; an event too late for the
//! bundle is stored, counted and dead-lettered.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pulse_e2e::{
    GatewayProcess, agent, demo_config, gateway_bin, metric, metrics_text, page_view_batch,
    workspace_root,
};
use pulse_gateway::{LogFiles, now_ms};
use serde_json::Value;

const DAY: u64 = 24 * 60 * 60 * 1000;

/// Posts one article view for `reader` at event time `ts` (plus `id` ms, so that views are
/// apart as real ones are) and returns the answer.
fn view(gw: &GatewayProcess, reader: &str, id: u128, ts: u64) -> Value {
    let mut batch = page_view_batch(reader, 0, id, 1, now_ms());
    batch.events[0].ts = ts + id as u64;
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .send_json(&batch)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn admin(gw: &GatewayProcess, path: &str) -> Value {
    let mut resp = agent()
        .get(format!("{}{path}", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Points the config at `bundle` (a file written beside it).
fn use_bundle(config: &Path, text: &str) {
    let bundle = config.with_file_name("bundle.toml");
    std::fs::write(&bundle, text).unwrap();
    let conf = std::fs::read_to_string(config).unwrap();
    let start = conf.find("bundle = ").unwrap();
    let end = start + conf[start..].find('\n').unwrap();
    let conf = format!(
        "{}bundle = {:?}{}",
        &conf[..start],
        bundle.display().to_string(),
        &conf[end..]
    );
    std::fs::write(config, conf).unwrap();
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn meter_text() -> String {
    std::fs::read_to_string(workspace_root().join("examples/bundles/meter.toml")).unwrap()
}

#[test]
fn bundle_check_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        meter_text()
            .replace("window = \"30d\"", "window = \"40d\"")
            .replace("template = \"last\"", "template = \"latest\"")
            .replace("limit = 3", "limit = 3\ncolour = \"red\""),
    )
    .unwrap();
    let out = Command::new(gateway_bin())
        .args(["bundle", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "features.metered_pages.window: 40d is longer than the TTL",
        "features.current_page.template: unknown template \"latest\"",
        "rules[1]: unknown field `colour`",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    let ok = Command::new(gateway_bin())
        .args(["bundle", "check"])
        .arg(workspace_root().join("examples/bundles/reader-profile.toml"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("37 features") && text.contains("rfv: rfv"),
        "{text}"
    );
}

#[test]
fn bundles_change_while_the_gateway_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    use_bundle(&config, &meter_text());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let now = now_ms();
    for i in 0..4 {
        view(&gw, "ana", i, now);
    }
    let fifth = view(&gw, "ana", 10, now);
    assert_eq!(fifth["decision"]["action"], "paywall", "{fifth}");
    let first_id = fifth["decision"]["version"].clone();

    // A looser limit: same features, so it applies to the next batch.
    use_bundle(&config, &meter_text().replace("limit = 3", "limit = 6"));
    gw.signal("HUP");
    let mut answer = Value::Null;
    wait_until("the new limit", || {
        answer = view(&gw, "ana", 11, now);
        answer["decision"]["limit"] == 6
    });
    // The sixth distinct article: free under the new limit, with no state rewritten.
    assert_eq!(answer["decision"]["action"], "meter", "{answer}");
    assert_eq!(answer["decision"]["remaining"], 0, "{answer}");
    assert_ne!(answer["decision"]["version"], first_id);

    // A broken bundle: refused, the last good one stays.
    use_bundle(
        &config,
        "[bundle]\nname = \"broken\"\n[features.x]\ntemplate = \"nope\"\n",
    );
    gw.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(view(&gw, "ana", 13, now)["decision"]["limit"], 6);

    // New features: rebuilt from the log, then in force, with values from past events.
    // (Its model file named where the examples are, as the bundle moves to the test's folder.)
    let profile =
        std::fs::read_to_string(workspace_root().join("examples/bundles/reader-profile.toml"))
            .unwrap()
            .replace(
                "\"../train/",
                &format!("\"{}/", workspace_root().join("examples/train").display()),
            );
    use_bundle(&config, &profile);
    gw.signal("HUP");
    let wanted = pulse_scorer::Bundle::read(&config.with_file_name("bundle.toml"))
        .unwrap()
        .id;
    wait_until("the rebuilt bundle", || {
        admin(&gw, "/admin/bundle")["id"] == wanted.as_str()
    });
    let ana = admin(&gw, "/admin/readers/ana");
    assert_eq!(
        ana["features"]["page_views_lifetime"]["value"], 7.0,
        "every view of the log, counted once: {ana}"
    );
    let metrics = metrics_text(&gw);
    assert!(
        metric(&metrics, "pulse_scorer_rebuild_events_total") >= 7.0,
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("pulse_scorer_bundle_info{{id=\"{wanted}\"")),
        "{metrics}"
    );

    // `gateway reader` explains a reader from the shell.
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .args(["reader", "ana", "--admin", &gw.admin_url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["decision"]["action"], "paywall", "{shown}");
    assert_eq!(shown["features"]["metered_pages"]["value"], 7.0);
    let unknown = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .args(["reader", "nobody", "--admin", &gw.admin_url])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    gw.stop();
}

#[test]
fn an_event_too_late_is_stored_counted_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let now = now_ms();
    view(&gw, "bo", 1, now);
    // Three days behind the reader's latest event; the demo bundle allows one.
    let late = view(&gw, "bo", 2, now - 3 * DAY);
    assert_eq!(late["accepted"], 1, "stored: {late}");
    assert_eq!(late["decision"]["remaining"], 2, "not counted: {late}");
    let metrics = metrics_text(&gw);
    assert_eq!(
        metric(&metrics, "pulse_scorer_events_total{outcome=\"too_late\"}"),
        1.0,
        "{metrics}"
    );
    gw.stop();
    let store = LogFiles::open(&data).unwrap();
    assert_eq!(store.events_from(0).count(), 2);
    let dead = store.dead_letters().unwrap();
    assert!(
        dead.iter()
            .any(|d| d.reason == "too_late" && d.raw.contains(&format!("{:032x}", 2))),
        "{dead:?}"
    );
}

#[test]
fn the_gateway_refuses_to_start_with_a_bad_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    use_bundle(
        &config,
        &meter_text().replace("of = \"page\"", "of = \"pages\""),
    );
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("features.metered_pages: of: \"pages\" is not a field")
            && err.contains("features.current_page: of: \"pages\" is not a field"),
        "{err}"
    );
    let check = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert!(!check.status.success());
}

fn gateway_cli(config: &Path, gw: &GatewayProcess, args: &[&str]) -> std::process::Output {
    Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--admin", &gw.admin_url, "--token", &gw.admin_token()])
        .output()
        .unwrap()
}

#[test]
fn bundles_are_activated_kept_across_restarts_and_rolled_back_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let now = now_ms();
    for id in 1..=4 {
        view(&gw, "ana", id, now - 2 * DAY);
    }
    let meter = admin(&gw, "/admin/bundle")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A bundle with a problem is refused with every reason, here and by the API; nothing changes.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        meter_text().replace("limit = 3", "limit = 3\ncolour = \"red\""),
    )
    .unwrap();
    let out = gateway_cli(&config, &gw, &["bundle", "activate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `colour`"));
    let mut resp = agent()
        .put(format!("{}/admin/bundle", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(serde_json::json!({"bundle": "[bundle]\nname = \"x\"\n[features.a]\ntemplate = \"nope\"\n[model]\nfile = \"m.json\"\n"}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let refused: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(refused["error"]["code"], "invalid_config");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown template")
            && message.contains("m.json: not among the files sent"),
        "{message}"
    );
    assert_eq!(admin(&gw, "/admin/bundle")["id"], meter.as_str());

    // The reader profile (new features, a model file beside it): sent whole, rebuilt from the
    // log, then in force, without a restart.
    let profile = workspace_root().join("examples/bundles/reader-profile.toml");
    let wanted = pulse_scorer::Bundle::read(&profile).unwrap().id;
    let out = gateway_cli(
        &config,
        &gw,
        &["bundle", "activate", profile.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["id"], wanted.as_str());
    assert_eq!(answer["state"], "rebuilding");
    assert_eq!(answer["persisted"], true);
    wait_until("the activated bundle", || {
        admin(&gw, "/admin/bundle")["id"] == wanted.as_str()
    });
    let ana = admin(&gw, "/admin/readers/ana");
    assert_eq!(ana["features"]["articles_30d"]["value"], 4.0, "{ana}");
    assert!(ana["model"]["score"].is_number(), "{ana}");

    // Kept across a restart: the config now names the archive under the data folder.
    gw.stop();
    let conf = std::fs::read_to_string(&config).unwrap();
    assert!(conf.contains(&format!("{wanted}.bundle")), "{conf}");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert_eq!(admin(&gw, "/admin/bundle")["id"], wanted.as_str());
    let history = admin(&gw, "/admin/bundle")["history"].clone();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Rolled back to the meter, again without a restart.
    let out = gateway_cli(&config, &gw, &["bundle", "rollback"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("the rolled-back bundle", || {
        admin(&gw, "/admin/bundle")["id"] == meter.as_str()
    });
    let answer = view(&gw, "ana", 5, now - DAY);
    assert_eq!(answer["decision"]["version"], meter.as_str());
    assert_eq!(answer["decision"]["action"], "paywall", "{answer}");
    let out = gateway_cli(&config, &gw, &["bundle", "rollback"]);
    assert_eq!(out.status.code(), Some(1), "nothing earlier than the first");
    gw.stop();
}
