//! The gateway's logs as operators' collectors want them: JSON lines on request, filters in
//! RUST_LOG's syntax, and no colour codes when stderr is not a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pulse_e2e::{demo_config, gateway_bin};
use serde_json::Value;

/// The first `n` stderr lines of a gateway started with `args` (then killed).
fn first_log_lines(args: &[&str], env: &[(&str, &str)], n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let mut child = Command::new(gateway_bin())
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let stderr = child.stderr.take().unwrap();
    // The gateway runs until killed: 3 s is plenty for its first lines.
    let pid = child.id().to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = std::sync::Arc::clone(&done);
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        if !finished.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .take(n)
        .map_while(Result::ok)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    lines
}

#[test]
fn json_lines_filters_and_no_colour_codes() {
    let lines = first_log_lines(&["--log-format", "json"], &[], 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
    let text = first_log_lines(&[], &[], 3);
    assert!(!text.is_empty());
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in a pipe: {text:?}"
    );
    // A filter from RUST_LOG: the start's info lines are gone at warn (the demo config's
    // warnings, if any, remain).
    let quiet = first_log_lines(&["--log-format", "json"], &[("RUST_LOG", "warn")], 5);
    assert!(
        quiet
            .iter()
            .all(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")),
        "only warnings at RUST_LOG=warn: {quiet:?}"
    );
    // `--log` wins over RUST_LOG.
    let loud = first_log_lines(
        &["--log-format", "json", "--log", "info"],
        &[("RUST_LOG", "error")],
        2,
    );
    assert!(
        loud.iter().any(|l| l.contains("\"INFO\"")),
        "--log info over RUST_LOG=error: {loud:?}"
    );
}
