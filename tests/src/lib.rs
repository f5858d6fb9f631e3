//! Helpers for Pulse's end-to-end tests: the real `gateway` binary as a child process, a small
//! WebDriver client for headless Chromium, and batch builders. Everything talks over loopback.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pulse_protocol::{Batch, BatchHeader, Event, EventId, EventType, PageContext};
use serde_json::{Value, json};

mod proxy;
mod publisher;

pub use proxy::FaultProxy;
pub use publisher::{StaticServer, publisher_site, readme_snippet};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `gateway` binary of this build (`cargo build --bins` puts it beside the test binaries).
pub fn gateway_bin() -> PathBuf {
    workspace_bin("gateway")
}

/// A binary of this workspace's build (`gateway`, `pulse-load`, `pulse-floor`), which
/// `cargo build --workspace --bins` puts beside the test binaries' folder.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A running `pulse-floor` process.
#[derive(Debug)]
pub struct FloorProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl FloorProcess {
    /// Starts the floor server on any free loopback port and waits until it names its address.
    pub fn start() -> Self {
        let mut child = Command::new(workspace_bin("pulse-floor"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pulse-floor");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let url = first
            .strip_prefix("pulse floor listening on ")
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| panic!("pulse-floor did not start: {first:?}"));
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `pulse-load` binary with `args` (split at whitespace) plus `--json --quiet`, and
/// returns its exit status and its JSON report.
pub fn run_load(args: &str) -> (std::process::ExitStatus, Value) {
    let out = Command::new(workspace_bin("pulse-load"))
        .args(args.split_whitespace())
        .args(["--json", "--quiet"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run pulse-load");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("pulse-load printed no JSON report ({e}): {text}"));
    (out.status, report)
}

/// An HTTP agent that returns error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The Python with DuckDB for the analysis examples (`examples/analysis/`): `PULSE_PYTHON`,
/// else the venv `scripts/setup.sh --test` makes in the target folder.
pub fn analysis_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PULSE_PYTHON") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/pulse-venv
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the target folder")
        .to_owned();
    let python = target.join("pulse-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh --test (it installs DuckDB from PyPI there), or set PULSE_PYTHON",
        python.display()
    );
    python
}

/// A running gateway process.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The address it listens on.
    pub addr: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin_url: String,
    /// `127.0.0.1:PORT` of TLS (TCP) and QUIC (UDP), when started with `--tls-listen`.
    pub tls_addr: Option<String>,
    /// Its data folder.
    pub data: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway with `config`, storing in `data`, on `listen` (`127.0.0.1:0` for any
    /// port), and waits until it names its address.
    pub fn start(config: &Path, data: &Path, listen: &str) -> Self {
        Self::start_with(config, data, &["--listen", listen])
    }

    /// Starts the gateway with `config`, storing in `data`, with more arguments, and waits until
    /// it names its addresses (the TLS one too when `--tls-listen` is among `args`).
    pub fn start_with(config: &Path, data: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(gateway_bin())
            .arg("--config")
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(args)
            // PULSE_TEST_LOG=info (or debug) shows what the processes log.
            .args([
                "--log",
                &std::env::var("PULSE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let url = first
            .strip_prefix("pulse gateway listening on ")
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| panic!("the gateway did not start: {first:?}"));
        let want_tls = args.contains(&"--tls-listen");
        let (mut admin_url, mut tls_addr) = (None, None);
        for line in lines.by_ref().take(30).map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("pulse admin listening on ") {
                admin_url = Some(u.trim_end_matches('/').to_owned());
            }
            if let Some(rest) = line.strip_prefix("pulse gateway listening on https://") {
                tls_addr = rest.split('/').next().map(str::to_owned);
            }
            if admin_url.is_some() && (tls_addr.is_some() || !want_tls) {
                break;
            }
        }
        let admin_url = admin_url.expect("the gateway names its admin address");
        assert!(tls_addr.is_some() || !want_tls, "no TLS address printed");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let addr = url.trim_start_matches("http://").to_owned();
        Self {
            child,
            url,
            addr,
            admin_url,
            tls_addr,
            data: data.to_owned(),
        }
    }

    /// The admin token the gateway generated into its data folder.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .expect("the gateway writes its admin token")
            .trim()
            .to_owned()
    }

    /// Sends `signal` (e.g. `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("wait for the gateway");
        assert!(
            exit.success(),
            "the gateway exited with {exit:?} after SIGTERM"
        );
    }

    /// Kills the process with SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a configuration for the demo site with absolute paths into `dir`, returning its path.
/// The site `demo` takes events from pages the gateway serves itself (the quick start).
pub fn demo_config(dir: &Path) -> PathBuf {
    site_config(dir, "meter", "origins = []\nallow_same_origin = true\n")
}

/// Like [`demo_config`], with the bundle `examples/bundles/{bundle}.toml`.
pub fn demo_config_with_bundle(dir: &Path, bundle: &str) -> PathBuf {
    site_config(dir, bundle, "origins = []\nallow_same_origin = true\n")
}

/// Like [`demo_config`], but the site `demo` takes events only from pages on `origins` (a
/// publisher's own site), as a publisher configures it.
pub fn publisher_config(dir: &Path, origins: &[&str]) -> PathBuf {
    let list: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    site_config(
        dir,
        "meter",
        &format!(
            "origins = [{}]\nallow_same_origin = false\nrequire_origin = true\n",
            list.join(", ")
        ),
    )
}

/// The demo site's reader-token secret (HS256), as in `examples/pulse.toml`: public.
pub const DEMO_TOKEN_SECRET: &str = "pulse-demo-secret-public-never-use-for-a-real-site";
/// The demo site's server secret, as in `examples/pulse.toml`: public.
pub const DEMO_SERVER_SECRET: &str = "demo-server-secret-public-never-use-for-a-real-site";

fn site_config(dir: &Path, bundle: &str, site: &str) -> PathBuf {
    let root = workspace_root().canonicalize().expect("workspace root");
    let text = format!(
        "[server]\nsite_dir = {site_dir:?}\nadmin_listen = \"127.0.0.1:0\"\n\n\
         # The tests send from one address as fast as they can.\n\
         [rate_limits]\nip_requests = {{ per_second = 0, burst = 0 }}\n\n\
         # The tests check the scorer's decisions, not its deadline: be generous on busy machines.\n\
         [limits]\ndecision_deadline_ms = 2000\n\n[scorer]\nbundle = {bundle:?}\nflush_interval_ms = 100\n\n\
         [[sites]]\nkey = \"demo\"\n{site}\n\
         server_secret = \"{DEMO_SERVER_SECRET}\"\n\
         [[sites.token_keys]]\nalg = \"HS256\"\nsecret = \"{DEMO_TOKEN_SECRET}\"\n",
        site_dir = root.join("examples/site").display().to_string(),
        bundle = root
            .join(format!("examples/bundles/{bundle}.toml"))
            .display()
            .to_string(),
    );
    let path = dir.join("pulse.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A batch of `n` page views for reader `anon`, ids from `first_id`.
pub fn page_view_batch(anon: &str, seq: u64, first_id: u128, n: usize, now: u64) -> Batch {
    let events = (0..n as u128)
        .map(|i| Event {
            id: EventId(first_id + i),
            ts: now,
            kind: EventType::PageView,
            name: None,
            page: PageContext {
                url: format!("https://news.example/articles/{}.html", first_id + i),
                referrer: String::new(),
                title: "An article".into(),
            },
            props: json!({"content_type": "article"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    batch_of(anon, seq, events, now)
}

/// A batch of `events` for reader `anon` of site `demo`, sent at `now`.
pub fn batch_of(anon: &str, seq: u64, events: Vec<Event>, now: u64) -> Batch {
    Batch {
        header: BatchHeader {
            v: 1,
            site_key: "demo".into(),
            anonymous_id: anon.into(),
            user_id: None,
            auth: None,
            session_id: "s1".into(),
            seq,
            sent_at: now,
            resent: false,
        },
        events,
    }
}

/// POSTs `batch` to the collect endpoint of the gateway at `url` (site `demo`); the answer,
/// whatever its status.
pub fn send_batch(url: &str, batch: &Batch) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("{url}/v1/collect?k=demo"))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(batch).expect("encode batch"))
        .expect("POST /v1/collect")
}

/// A free TCP port on loopback (racy by nature; good enough for a driver we start at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal W3C WebDriver client for chromedriver and headless Chromium.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Like [`Browser::start`], with further Chromium arguments (e.g. `--enable-quic`).
    pub fn start_with_args(extra: &[String]) -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (install chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent().get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        if let Some(list) = args.as_array_mut() {
            list.extend(extra.iter().map(|a| json!(a)));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer = post(&format!("{base}/session"), &caps);
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        let mut browser = Self {
            driver,
            base,
            session,
            _profile: profile,
        };
        // Record decisions and page errors from the very start of every document.
        browser.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__decisions = []; window.__errors = [];\
                addEventListener('pulse:decision', e => __decisions.push(e.detail));\
                addEventListener('error', e => __errors.push(String(e.message)));\
                addEventListener('unhandledrejection', e => __errors.push(String(e.reason)));"}),
        );
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// Runs a DevTools command through chromedriver.
    pub fn cdp(&mut self, cmd: &str, params: Value) -> Value {
        post(
            &self.url("/goog/cdp/execute"),
            &json!({"cmd": cmd, "params": params}),
        )
    }

    /// Opens a new tab of the same profile (not switching to it) and returns its handle.
    pub fn new_tab(&mut self) -> String {
        let answer = post(&self.url("/window/new"), &json!({"type": "tab"}));
        answer["value"]["handle"]
            .as_str()
            .unwrap_or_else(|| panic!("no new tab: {answer}"))
            .to_owned()
    }

    /// Closes the current tab (as a reader closing it: the page gets `pagehide`); switch to
    /// another with [`Browser::switch_to`] before the next command.
    pub fn close_tab(&mut self) {
        let url = self.url("/window");
        let _ = agent().delete(&url).call();
    }

    /// Works in the tab `handle` from now on (also away from a tab that crashed).
    pub fn switch_to(&mut self, handle: &str) {
        let answer = post(&self.url("/window"), &json!({"handle": handle}));
        assert!(answer["value"].is_null(), "cannot switch tabs: {answer}");
    }

    /// Loads a page and waits for it.
    pub fn goto(&mut self, url: &str) {
        let answer = post(&self.url("/url"), &json!({"url": url}));
        assert!(answer["value"].is_null(), "navigation failed: {answer}");
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&mut self, script: &str) -> Value {
        let answer = post(
            &self.url("/execute/sync"),
            &json!({"script": script, "args": []}),
        );
        answer["value"].clone()
    }

    /// Waits until `script` returns a truthy value, and returns it.
    pub fn wait_for(&mut self, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {script}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Browser console entries since the last call, as (level, message).
    pub fn console(&mut self) -> Vec<(String, String)> {
        let answer = post(&self.url("/se/log"), &json!({"type": "browser"}));
        answer["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_owned(),
                            e["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent()
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn post(url: &str, body: &Value) -> Value {
    let mut resp = agent()
        .post(url)
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A gateway process with TLS (HTTP/1.1, HTTP/2) and HTTP/3 on one more port.
#[derive(Debug)]
pub struct TlsGateway {
    /// The process; its `url` is the cleartext one.
    pub process: GatewayProcess,
    /// `127.0.0.1:PORT` of TLS (TCP) and QUIC (UDP).
    pub tls_addr: String,
    /// The generated self-signed certificate (PEM).
    pub cert_path: PathBuf,
    /// Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub spki_sha256: String,
}

impl TlsGateway {
    /// Starts the gateway with `config`, storing in `data`, on cleartext `127.0.0.1:0` and TLS +
    /// QUIC `127.0.0.1:0` (a self-signed certificate is generated into `data/tls`), and waits
    /// until it names both addresses.
    pub fn start(config: &Path, data: &Path) -> Self {
        let process = GatewayProcess::start_with(
            config,
            data,
            &["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
        );
        let tls_addr = process.tls_addr.clone().expect("a TLS address");
        let cert_path = data.join("tls/cert.pem");
        let spki_sha256 = std::fs::read_to_string(data.join("tls/spki.sha256.base64"))
            .expect("the gateway writes the SPKI hash of its certificate")
            .trim()
            .to_owned();
        Self {
            process,
            tls_addr,
            cert_path,
            spki_sha256,
        }
    }
}

/// The gateway's Prometheus metrics text (one place to change if they move to another listener).
pub fn metrics_text(gateway: &GatewayProcess) -> String {
    let mut resp = agent()
        .get(format!("{}/metrics", gateway.admin_url))
        .header("authorization", format!("Bearer {}", gateway.admin_token()))
        .call()
        .expect("GET /metrics");
    resp.body_mut().read_to_string().unwrap_or_default()
}

/// The value of one metric line (`name{labels}`), 0 when absent.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Client threads that send batches of 5 page views to a collect URL as fast as they can and
/// record the ids of every event answered 200 with all 5 accepted. A client ends at the first
/// request that fails to get an answer (the gateway is gone) or when told to stop.
#[derive(Debug)]
pub struct AckingClients {
    acked: Arc<Mutex<Vec<u128>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AckingClients {
    /// Starts `clients` threads posting to `url`; event ids are `id_base + (client << 40) +
    /// batch * 10 + k`.
    pub fn start(url: &str, clients: u128, id_base: u128) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|c| {
                let (url, acked, stop) = (url.to_owned(), Arc::clone(&acked), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let agent = agent();
                    for i in 0..100_000u128 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let first = id_base + (c << 40) + i * 10;
                        let now = pulse_gateway::now_ms();
                        let batch =
                            page_view_batch(&format!("reader-{c}"), i as u64, first, 5, now);
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
        Self {
            acked,
            stop,
            threads,
        }
    }

    /// Waits until at least `n` events are acknowledged or `timeout` passes; returns how many are.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let acked = self.acked.lock().unwrap().len();
            if acked >= n || Instant::now() >= deadline {
                return acked;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients, waits for them and returns every acknowledged event id.
    pub fn finish(self) -> Vec<u128> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}
