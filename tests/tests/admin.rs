//! The operator's view of a running gateway binary: `gateway limits show|set` through the admin
//! API (token generated into the data folder), a change taking effect without a restart and
//! written back to pulse.toml, a bad change refused, and SIGHUP re-reading the file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pulse_e2e::{GatewayProcess, agent, demo_config, gateway_bin, page_view_batch};
use pulse_gateway::now_ms;

fn limits_cli(config: &Path, data: &Path, admin: &str, args: &[&str]) -> Output {
    Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("limits")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .output()
        .expect("run gateway limits")
}

fn post(gw: &GatewayProcess, seq: u64) -> u16 {
    post_to(gw, "demo", seq)
}

fn post_to(gw: &GatewayProcess, site: &str, seq: u64) -> u16 {
    let mut batch = page_view_batch("admin-reader", seq, u128::from(seq) << 8, 1, now_ms());
    batch.header.site_key = site.to_owned();
    agent()
        .post(format!("{}/v1/collect?k={site}", gw.url))
        .header("Origin", gw.url.as_str())
        .send(serde_json::to_vec(&batch).unwrap())
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn limits_change_through_the_cli_and_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert!(
        data.join("admin.token").exists(),
        "a token is generated into the data folder"
    );

    // Without the token: refused.
    let resp = agent()
        .get(format!("{}/admin/limits", gw.admin_url))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let show = limits_cli(&config, &data, &gw.admin_url, &["show"]);
    assert!(show.status.success(), "{show:?}");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["ip_requests"]["per_second"], 0, "{shown}");

    assert_eq!(post(&gw, 1), 200);
    assert_eq!(post_to(&gw, "late", 5), 401);
    let set = limits_cli(
        &config,
        &data,
        &gw.admin_url,
        &["set", "ip_requests.per_second=1", "ip_requests.burst=1"],
    );
    assert!(set.status.success(), "{set:?}");
    // No restart: the next requests meet the new limit at once.
    assert_eq!(post(&gw, 2), 200);
    assert_eq!(post(&gw, 3), 429);
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("ip_requests = { per_second = 1, burst = 1 }"),
        "{written}"
    );

    // A bad change is refused with the reason; the limits in force stay.
    let bad = limits_cli(
        &config,
        &data,
        &gw.admin_url,
        &["set", "ip_requests.per_second=10"],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("invalid_config") && stderr.contains("ip_requests.burst"),
        "{stderr}"
    );
    let typo = limits_cli(&config, &data, &gw.admin_url, &["set", "ip_requests=x"]);
    assert!(!typo.status.success());

    // SIGHUP: edit the file by hand (a looser limit, a new site), signal, and the gateway follows.
    let edited = written.replace(
        "ip_requests = { per_second = 1, burst = 1 }",
        "ip_requests = { per_second = 500, burst = 500 }",
    ) + "\n[[sites]]\nkey = \"late\"\nallow_same_origin = true\n";
    std::fs::write(&config, edited).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 10;
    loop {
        seq += 1;
        if post(&gw, seq) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not apply the file");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(post_to(&gw, "late", 6), 200);
    let show = limits_cli(&config, &data, &gw.admin_url, &["show"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["ip_requests"]["per_second"], 500, "{shown}");

    let show = limits_cli(&config, &data, &gw.admin_url, &["--token", "wrong", "show"]);
    assert!(!show.status.success());
    assert!(String::from_utf8_lossy(&show.stderr).contains("401"));

    // A broken file on SIGHUP changes nothing and the gateway keeps serving.
    std::fs::write(&config, "[rate_limits]\nip_requests = 5\n").unwrap();
    gw.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(post(&gw, 100), 200);
    gw.stop();
}
