//! Packaging: the gateway as the container image and the systemd unit run it. Configured only by
//! the image's `PULSE_*` variables over `examples/pulse.toml`, it serves, and tells systemd
//! (`NOTIFY_SOCKET`) when it is ready, reloading and stopping. The Dockerfile's build steps are
//! the README's scripts, which this suite runs, so its steps are exercised here even where no
//! container engine runs.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use pulse_e2e::{agent, gateway_bin, workspace_root};

/// The `ENV` pairs of the Dockerfile's final stage.
fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut in_env = false;
    for line in text.lines() {
        let line = line.trim();
        let rest = if let Some(r) = line.strip_prefix("ENV ") {
            r
        } else if in_env {
            line
        } else {
            continue;
        };
        in_env = rest.ends_with('\\');
        let pair = rest.trim_end_matches('\\').trim();
        if let Some((k, v)) = pair.split_once('=') {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    env
}

#[test]
fn the_dockerfile_builds_with_the_readmes_scripts_and_its_files_exist() {
    let root = workspace_root();
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let run = std::fs::read_to_string(root.join("scripts/run.sh")).unwrap();
    // The build stage runs the scripts the two commands run, and the release build run.sh does.
    for step in [
        "scripts/setup.sh",
        "scripts/build-tracker.sh",
        "cargo build --release -p pulse-gateway --bin gateway",
    ] {
        assert!(docker.contains(step), "the Dockerfile lacks {step}");
        assert!(run.contains(step), "scripts/run.sh lacks {step}");
    }
    // What the final stage copies from the sources exists.
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY --from=build /src/"))
    {
        let path = line
            .trim_start_matches("COPY --from=build /src/")
            .split_whitespace()
            .next()
            .unwrap();
        if path.starts_with("target/") {
            continue; // built by the steps above
        }
        assert!(root.join(path).exists(), "{path} (copied into the image)");
    }
    assert!(
        docker.contains("USER pulse"),
        "the image runs as a non-root user"
    );
    let unit = std::fs::read_to_string(root.join("examples/pulse.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=pulse",
    ] {
        assert!(unit.contains(line), "examples/pulse.service lacks {line}");
    }
}

#[test]
fn configured_by_the_environment_it_serves_and_tells_systemd() {
    let root = workspace_root().canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The image's variables, with its folders mapped onto this checkout and free ports.
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let env: Vec<(String, String)> = dockerfile_env(&docker)
        .into_iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "PULSE_SERVER__LISTEN" | "PULSE_SERVER__ADMIN_LISTEN" => "127.0.0.1:0".to_owned(),
                "PULSE_SERVER__DATA" => dir.path().join("data").display().to_string(),
                "PULSE_SERVER__SITE_DIR" => root.join("examples/site").display().to_string(),
                _ => v,
            };
            (k, v)
        })
        .collect();
    assert_eq!(env.len(), 4, "{env:?}");
    let mut child = Command::new(gateway_bin())
        .args(["--config"])
        .arg(root.join("examples/pulse.toml"))
        .args(["--log", "warn"])
        .envs(env)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("pulse gateway listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .trim_end_matches('/')
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    let recv = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    // It serves: readiness, and the tracker embedded in the binary.
    let get = |path: &str| {
        agent()
            .get(format!("{url}{path}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("/readyz"), 200);
    assert_eq!(get("/pulse.js"), 200);

    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-HUP");
    assert!(recv().starts_with("RELOADING=1"));
    let after = recv();
    assert!(after.starts_with("READY=1"), "{after}");
    assert!(after.contains("applied"), "{after}");
    signal("-TERM");
    assert!(recv().starts_with("STOPPING=1"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_monitoring_examples_name_metrics_the_gateway_exports() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let gw = pulse_e2e::GatewayProcess::start(
        &pulse_e2e::demo_config(dir.path()),
        &dir.path().join("data"),
        "127.0.0.1:0",
    );
    // One request, so that every histogram has a line.
    let batch = pulse_e2e::page_view_batch("monitoring", 0, 9 << 64, 1, pulse_gateway::now_ms());
    assert_eq!(
        pulse_e2e::send_batch(&gw.url, &batch).status().as_u16(),
        200
    );
    let metrics = pulse_e2e::metrics_text(&gw);
    // Exported in Kafka mode only (the control topic's count of gateways), and once a shadow
    // bundle has decided (its pairs of actions).
    let kafka_only = [
        "pulse_gateway_live_gateways",
        "pulse_scorer_shadow_decisions_total",
    ];
    for file in [
        "examples/monitoring/pulse-alerts.yml",
        "examples/monitoring/grafana-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut named = 0;
        for (at, _) in text.match_indices("pulse_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !(name.starts_with("pulse_gateway_") || name.starts_with("pulse_scorer_")) {
                continue;
            }
            named += 1;
            let base = name.trim_end_matches("_bucket");
            assert!(
                kafka_only.contains(&base) || metrics.contains(&format!("# TYPE {base} ")),
                "{file} names {name}, which /metrics does not export"
            );
        }
        assert!(named >= 10, "{file} names {named} metrics");
    }
    gw.stop();
}

/// `promtool check metrics` (Prometheus' own linter, Debian's `prometheus` package) passes on
/// what a gateway that has answered, refused and decided exports; Prometheus itself, which asks
/// for OpenMetrics, gets it.
#[test]
fn promtool_passes_the_metrics_and_prometheus_gets_openmetrics() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let gw = pulse_e2e::GatewayProcess::start(
        &pulse_e2e::demo_config(dir.path()),
        &dir.path().join("data"),
        "127.0.0.1:0",
    );
    let batch = pulse_e2e::page_view_batch("promtool", 0, 7 << 64, 3, pulse_gateway::now_ms());
    assert_eq!(
        pulse_e2e::send_batch(&gw.url, &batch).status().as_u16(),
        200
    );
    // A refusal, a probe and a static file, so that those series have lines too.
    let refused = agent()
        .post(format!("{}/v1/collect", gw.url))
        .header("content-type", "application/json")
        .send("{")
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "no site key");
    for path in ["/healthz", "/pulse.js"] {
        let _ = agent().get(format!("{}{path}", gw.url)).call();
    }
    let text = pulse_e2e::metrics_text(&gw);
    for series in [
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http1\",status=\"200\"} 1",
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http1\",status=\"401\"} 1",
        "pulse_gateway_requests_total{handler=\"probe\",protocol=\"http1\",status=\"200\"} 1",
        "pulse_gateway_request_duration_seconds_count{handler=\"collect\"} 2",
        "pulse_gateway_errors_total{reason=\"missing_site_key\"} 1",
        "pulse_build_info{version=\"",
        "pulse_gateway_open_connections{listener=\"tcp\"}",
        "pulse_gateway_open_connections{listener=\"admin\"} 1",
        "pulse_gateway_in_flight_requests 1",
        "pulse_gateway_sink_queue_depth 0",
        "pulse_gateway_rate_limiter_tracked_keys",
        "pulse_gateway_event_log_bytes",
        "pulse_scorer_store_bytes",
        "pulse_gateway_config_last_reload_successful 1",
        "pulse_gateway_config_last_reload_success_timestamp_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh --test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    let mut open = agent()
        .get(format!("{}/metrics", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .call()
        .unwrap();
    let content_type = open.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    let body = open.body_mut().read_to_string().unwrap();
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE pulse_gateway_requests counter"));
    gw.stop();
}
