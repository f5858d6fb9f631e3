//! The gateway's logs as operators' collectors want them: JSON lines on request, filters in
//! RUST_LOG's syntax, and no colour codes when stderr is not a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use pulse_e2e::{demo_config, gateway_bin};
use serde_json::Value;

/// A gateway on the demo config in `dir`, started with `args` and `env` (the environment's own
/// RUST_LOG and GLIBC_TUNABLES left out), its stderr piped.
fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(gateway_bin())
        .arg("--config")
        .arg(demo_config(dir))
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("GLIBC_TUNABLES")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway")
}

/// The first `n` stderr lines of a gateway started with `args` (then killed).
fn first_log_lines(args: &[&str], env: &[(&str, &str)], n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start(dir.path(), args, env);
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

/// The gateway puts its heap in transparent huge pages where the kernel gives them on request:
/// it starts itself again, same process, with glibc's tunable, and says so in its log; with
/// `[scorer] huge_pages = false` it keeps small pages and says why.
#[test]
fn the_heap_goes_in_huge_pages_where_the_kernel_gives_them_on_request() {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
    for (wanted, env) in [(true, "true"), (false, "false")] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = start(
            dir.path(),
            &["--log-format", "json", "--log", "info"],
            &[("PULSE_SCORER__HUGE_PAGES", env)],
        );
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let heap = lines
            .take(20)
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .find_map(|v| v["fields"]["heap"].as_str().map(str::to_owned));
        // The process that logged is the one started (exec keeps the process id).
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        let heap = heap.expect("the gateway logs where its heap is");
        let tunable = String::from_utf8_lossy(&environ)
            .split('\0')
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.hugetlb=1");
        match thp.as_deref() {
            Some(mode) if mode.contains("[madvise]") && wanted => {
                assert!(heap.contains("glibc.malloc.hugetlb=1"), "{heap}");
                assert!(tunable, "started again with the tunable");
            }
            Some(mode) if mode.contains("[madvise]") => {
                assert!(heap.contains("turned off"), "{heap}");
                assert!(!tunable);
            }
            // `always`: every heap has them; `never` or no THP: none can.
            Some(mode) if mode.contains("[always]") => assert!(heap.contains("always"), "{heap}"),
            _ => assert!(heap.starts_with("small pages"), "{heap}"),
        }
    }
}
