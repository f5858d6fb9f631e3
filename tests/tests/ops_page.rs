//! The operations page (`/ops/` on the admin listener) in real headless Chromium against the
//! real gateway binary: the page loads without the token and asks for it, a wrong token is
//! refused on the form, the right one signs in; under load its figures and charts move; a limit
//! changed on the page is refused with the gateway's reason when bad, and when good it is what
//! `GET /admin/limits` answers and is in force on the next request.
//!
//! `PULSE_OPS_SCREENSHOT=path.png` keeps a screenshot of the page under load (the README's).

use std::time::{Duration, Instant};

use base64::Engine as _;
use pulse_e2e::{Browser, GatewayProcess, agent, demo_config, page_view_batch, send_batch};
use pulse_gateway::now_ms;
use serde_json::{Value, json};

/// A JavaScript string literal of `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Types `token` into the sign-in form and submits it.
fn sign_in(browser: &mut Browser, token: &str) {
    browser.eval(&format!(
        "document.getElementById('login-token').value = {}; \
         document.getElementById('login-submit').click(); return true;",
        js(token)
    ));
}

/// Sets the limits form's inputs (named after the JSON keys) and presses Apply.
fn apply_limits(browser: &mut Browser, values: &[(&str, u64)]) {
    let sets: String = values
        .iter()
        .map(|(name, v)| {
            format!(
                "f.elements[{}].value = '{v}'; f.elements[{}].dispatchEvent(new Event('input', {{bubbles: true}}));",
                js(name),
                js(name)
            )
        })
        .collect();
    browser.eval(&format!(
        "const f = document.getElementById('limits-form'); {sets} \
         document.getElementById('limits-save').click(); return true;"
    ));
}

/// The state (`ok`, `error`, ...) and text of the form's status line, once it is not pending.
fn limits_status(browser: &mut Browser) -> (String, String) {
    let v = browser.wait_for(
        "const s = document.getElementById('limits-status'); \
         return s.dataset.state && s.dataset.state !== 'pending' && [s.dataset.state, s.textContent];",
        Duration::from_secs(10),
    );
    (
        v[0].as_str().unwrap_or("").to_owned(),
        v[1].as_str().unwrap_or("").to_owned(),
    )
}

fn limits(gw: &GatewayProcess) -> Value {
    let mut resp = agent()
        .get(format!("{}/admin/limits", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .expect("GET /admin/limits");
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap()
}

/// `pulse-load`, the project's load generator, sending batches of 5 events at a steady rate
/// until stopped.
struct Load(std::process::Child);

impl Load {
    fn start(url: &str) -> Self {
        let child = std::process::Command::new(pulse_e2e::workspace_bin("pulse-load"))
            .args([
                "--url",
                url,
                "--rate",
                "200",
                "--duration",
                "300",
                "--warmup",
                "0",
            ])
            .args([
                "--events-per-batch",
                "5",
                "--readers",
                "500",
                "--pool",
                "2000",
                "--quiet",
                "--json",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run pulse-load");
        Self(child)
    }

    fn finish(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_operations_page_shows_the_load_and_changes_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let token = gw.admin_token();
    let before = limits(&gw);
    assert_eq!(
        before["ip_requests"]["per_second"], 0,
        "the test config turns the address limit off: {before}"
    );
    let mut browser = Browser::start();

    // The page needs no token; its API calls do: a sign-in form first.
    browser.goto(&format!("{}/ops/", gw.admin_url));
    browser.wait_for(
        "return !document.getElementById('login').hidden && document.getElementById('app').hidden",
        Duration::from_secs(10),
    );
    sign_in(&mut browser, "not-the-token");
    browser.wait_for(
        "return document.getElementById('login-error').textContent.includes('401')",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("return sessionStorage.getItem('pulse.ops.token')"),
        Value::Null,
        "a refused token is not kept"
    );
    sign_in(&mut browser, &token);
    browser.wait_for(
        "return !document.getElementById('app').hidden",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("return sessionStorage.getItem('pulse.ops.token')"),
        json!(token),
        "the token is kept in the session"
    );
    // The header names the build (pulse_build_info).
    browser.wait_for(
        "return document.getElementById('build-version').textContent !== '–'",
        Duration::from_secs(10),
    );

    // Under load, the figures and the charts move, at least every 2 s.
    let load = Load::start(&gw.url);
    browser.wait_for(
        "return parseFloat(document.getElementById('events-rate').textContent) > 0",
        Duration::from_secs(20),
    );
    browser.wait_for(
        "return parseFloat(document.getElementById('requests-rate').textContent) > 0",
        Duration::from_secs(10),
    );
    let points = |browser: &mut Browser| {
        browser
            .eval("return +document.getElementById('chart-events').dataset.points")
            .as_u64()
            .unwrap_or(0)
    };
    let p0 = points(&mut browser);
    browser.wait_for(
        &format!(
            "return +document.getElementById('chart-events').dataset.points >= {}",
            p0 + 2
        ),
        Duration::from_secs(5),
    );
    let t0 = browser.eval("return +document.getElementById('last-update').dataset.ts");
    std::thread::sleep(Duration::from_millis(2100));
    let t1 = browser.eval("return +document.getElementById('last-update').dataset.ts");
    assert!(
        t1.as_f64() > t0.as_f64(),
        "a scrape at least every 2 s: {t0} then {t1}"
    );
    browser.wait_for(
        "return document.getElementById('decision-p99').textContent !== '–'",
        Duration::from_secs(10),
    );
    if let Ok(path) = std::env::var("PULSE_OPS_SCREENSHOT") {
        browser.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1800, "deviceScaleFactor": 1, "mobile": false}),
        );
        std::thread::sleep(Duration::from_secs(20)); // some history in the charts
        browser.eval("window.scrollTo(0, 0); return true;");
        let shot = browser.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = shot["value"]["data"].as_str().expect("a screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png)
            .expect("base64");
        std::fs::write(&path, bytes).expect("write the screenshot");
    }
    load.finish();

    // A bad change: refused with the gateway's reason, nothing changes.
    browser.wait_for(
        "return !document.getElementById('limits-save').disabled",
        Duration::from_secs(10),
    );
    apply_limits(
        &mut browser,
        &[("ip_requests.per_second", 10), ("ip_requests.burst", 5)],
    );
    let (state, text) = limits_status(&mut browser);
    assert_eq!(state, "error", "{text}");
    assert!(
        text.contains("invalid_config")
            && text.contains("rate_limits.ip_requests.burst (5) must be at least per_second (10)"),
        "the gateway's message, verbatim: {text}"
    );
    assert_eq!(limits(&gw), before, "a refused change changes nothing");

    // A good change: applied, answered by GET /admin/limits, in force on the next request.
    apply_limits(
        &mut browser,
        &[("ip_requests.per_second", 1), ("ip_requests.burst", 1)],
    );
    let (state, text) = limits_status(&mut browser);
    assert_eq!(state, "ok", "{text}");
    let now = limits(&gw);
    assert_eq!(
        now["ip_requests"],
        json!({"per_second": 1, "burst": 1}),
        "{now}"
    );
    let post = |seq: u64| {
        let batch = page_view_batch(
            "ops-after",
            seq,
            (1u128 << 100) | u128::from(seq),
            1,
            now_ms(),
        );
        send_batch(&gw.url, &batch).status().as_u16()
    };
    assert_eq!(post(1), 200);
    assert_eq!(post(2), 429, "the limit set on the page is in force");
    // The form shows what is in force.
    assert_eq!(
        browser.eval(
            "return document.getElementById('limits-form').elements['ip_requests.burst'].value"
        ),
        json!("1")
    );
    // Refusals by the limit show on the page within a few scrapes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 3;
    loop {
        seq += 1;
        post(seq); // 429 mostly; one a second passes
        let shown = browser
            .eval("return +(document.getElementById('ratelimited-rate').dataset.value || 0) > 0");
        if shown == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rate-limit refusals on the page"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Signing out forgets the token.
    browser.eval("document.getElementById('signout').click(); return true;");
    browser.wait_for(
        "return !document.getElementById('login').hidden && sessionStorage.getItem('pulse.ops.token') === null",
        Duration::from_secs(5),
    );

    // No page errors; the failed loads Chromium logs for the wrong token (401) and the refused
    // change (400) are expected.
    let severe: Vec<_> = browser
        .console()
        .into_iter()
        .filter(|(level, message)| {
            level == "SEVERE"
                && !message.contains("status of 401")
                && !message.contains("status of 400")
        })
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    drop(browser);
    gw.stop();
}

/// The page's Prometheus parser, rates and percentiles against worked answers, in Node.js (no
/// browser needed).
#[test]
fn the_pages_parser_and_percentiles_give_the_worked_answers() {
    let root = pulse_e2e::workspace_root();
    let out = std::process::Command::new("node")
        .arg(root.join("tests/ops/parse.test.js"))
        .output()
        .expect("node (scripts/setup.sh --test installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
