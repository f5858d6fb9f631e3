//! The decision log and the shadow bundle, on the real `serve_all` over loopback: every
//! decision logged with its snapshot and the shadow's beside it, read while the gateway runs;
//! shadow pairs counted in `/metrics`; `GET`/`DELETE /admin/shadow`; a reload setting the
//! shadow again and refusing one with other features; the log turned off.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_gateway::{BUILTIN_BUNDLE, Config, Gateway, LogFiles};
use serde_json::{Value, json};
use support::agent;

const TOKEN: &str = "decisions-admin-token";
/// The read-only scrape credential.
const SCRAPE: &str = "decisions-scrape-token";

struct Server {
    /// Serving until dropped (first: before the folder goes).
    _served: support::Served,
    url: String,
    admin: String,
    config_path: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A gateway with the demo meter and, as its shadow, the same meter with five free
    /// articles (`five.toml` in its folder); `extra` goes into the config file.
    fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("five.toml"),
            BUILTIN_BUNDLE.replace("limit = 3", "limit = 5"),
        )
        .unwrap();
        std::fs::write(dir.path().join("meter.toml"), BUILTIN_BUNDLE).unwrap();
        let config_path = dir.path().join("pulse.toml");
        std::fs::write(&config_path, config_text("five.toml", extra)).unwrap();
        let mut config = Config::load(&config_path).unwrap();
        let data = dir.path().join("data");
        config.server.data = data.clone();
        config.server.admin_token = Some(TOKEN.into());
        config.server.metrics_token = Some(SCRAPE.into());
        let served = support::Served::start(Arc::new(Gateway::open(config).unwrap()));
        Self {
            url: served.url.clone(),
            admin: served.admin.clone(),
            _served: served,
            config_path,
            data,
            _dir: dir,
        }
    }

    /// One article page view of `reader` (page `page`); returns the decision.
    fn read(&self, reader: &str, page: u32) -> Value {
        let id = (u128::from(page) << 32) | u128::from(reader.len() as u32);
        let body = json!({"v": 1, "site_key": "demo", "anonymous_id": reader, "session_id": "s",
            "seq": page, "sent_at": support::now(), "events": [{
                "id": format!("{id:032x}"), "ts": support::now(), "type": "page_view",
                "page": {"url": format!("https://news.example/a/{page}"), "title": "A"},
                "props": {"content_type": "article"}}]});
        let mut resp = agent()
            .post(format!("{}/v1/collect?k=demo", self.url))
            .header("Origin", "https://news.example")
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let answer: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        answer["decision"].clone()
    }

    fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.admin);
        let auth = format!("Bearer {TOKEN}");
        let mut resp = match method {
            "GET" => agent().get(&url).header("authorization", &auth).call(),
            "DELETE" => agent().delete(&url).header("authorization", &auth).call(),
            _ => agent().post(&url).header("authorization", &auth).send(""),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The decision log, read beside the running gateway, once it holds `n` records.
    fn decisions(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let files = LogFiles::read_only(&self.data);
            let got: Vec<Value> = files
                .decision_bytes()
                .map(|r| serde_json::from_slice(&r.unwrap()).unwrap())
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} decisions logged",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn config_text(shadow: &str, extra: &str) -> String {
    format!(
        "[scorer]\nbundle = \"meter.toml\"\nshadow = {shadow:?}\n\n{extra}\n\n\
         [limits]\ndecision_deadline_ms = 2000\n\n\
         [rate_limits]\nip_requests = {{ per_second = 0, burst = 0 }}\n\n\
         [[sites]]\nkey = \"demo\"\norigins = [\"https://news.example\"]\n"
    )
}

fn metrics(s: &Server) -> String {
    s.admin("GET", "/metrics").1.as_str().unwrap().to_owned()
}

#[test]
fn decisions_are_logged_with_the_shadow_beside_them() {
    let s = Server::start("");
    let (status, shadow) = s.admin("GET", "/admin/shadow");
    assert_eq!(status, 200, "{shadow}");
    let five = shadow["shadow"]["id"].as_str().unwrap().to_owned();
    let active = shadow["active"].as_str().unwrap().to_owned();
    assert_ne!(five, active);

    // Three free articles for the page, five for the shadow: the page never sees the shadow.
    let actions: Vec<Value> = (1..=5)
        .map(|p| s.read("reader-1", p)["action"].clone())
        .collect();
    assert_eq!(actions, ["meter", "meter", "meter", "paywall", "paywall"]);

    let log = s.decisions(5);
    assert_eq!(log.len(), 5);
    let raw = LogFiles::read_only(&s.data)
        .decision_bytes()
        .next()
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.starts_with("{\"v\":1,\"time\":")
            && raw.contains(",\"site\":\"demo\",\"reader\":\"reader-1\",\"bundle\":"),
        "{raw}"
    );
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r["site"], "demo");
        assert_eq!(r["reader"], "reader-1");
        assert_eq!(r["bundle"], active.as_str());
        assert_eq!(r["rule"], "meter");
        assert_eq!(r["action"], actions[i]);
        assert_eq!(r["limit"], 3);
        assert_eq!(r["features"]["metered_pages"], i as f64 + 1.0, "{r}");
        assert_eq!(
            r["shadow"],
            json!({"bundle": five, "rule": "meter", "action": "meter"})
        );
    }

    let (_, shadow) = s.admin("GET", "/admin/shadow");
    assert_eq!(shadow["compared"], 5);
    assert_eq!(shadow["differing"], 2);
    let text = metrics(&s);
    for line in [
        "pulse_scorer_shadow_decisions_total{active=\"meter\",shadow=\"meter\"} 3",
        "pulse_scorer_shadow_decisions_total{active=\"paywall\",shadow=\"meter\"} 2",
        "pulse_gateway_decisions_dropped_total 0",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    // Cleared: decisions go on without it.
    let (status, cleared) = s.admin("DELETE", "/admin/shadow");
    assert_eq!(
        (status, &cleared["shadow"]),
        (200, &Value::Null),
        "{cleared}"
    );
    assert_eq!(s.read("reader-2", 1)["action"], "meter");
    let log = s.decisions(6);
    assert!(log[5].get("shadow").is_none(), "{}", log[5]);

    // A reload sets it again from the file; one with other features is refused, and the
    // shadow in force stays.
    assert_eq!(s.admin("POST", "/admin/reload").0, 200);
    assert_eq!(
        s.admin("GET", "/admin/shadow").1["shadow"]["id"],
        five.as_str()
    );
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bundles/reader-profile.toml");
    std::fs::write(
        &s.config_path,
        config_text(&profile.display().to_string(), ""),
    )
    .unwrap();
    let (status, refused) = s.admin("POST", "/admin/reload");
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("scorer.shadow") && message.contains("features"),
        "{message}"
    );
    assert_eq!(
        s.admin("GET", "/admin/shadow").1["shadow"]["id"],
        five.as_str()
    );
    assert_eq!(s.admin("PUT", "/admin/shadow").0, 405);
}

#[test]
fn the_decision_log_can_be_turned_off() {
    let s = Server::start("[decision_log]\nenabled = false");
    assert_eq!(s.read("reader-1", 1)["action"], "meter");
    assert_eq!(decisions(&metrics(&s), "meter"), 1);
    assert!(!s.data.join("log/decisions").exists());
}

/// `GET /admin/export` on a running gateway: status, `Pulse-Next-Position`, `Pulse-End`, lines.
fn export(s: &Server, query: &str) -> (u16, Option<u64>, Option<bool>, Vec<Value>) {
    let mut resp = agent()
        .get(format!("{}/admin/export?{query}", s.admin))
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let next = header("pulse-next-position").and_then(|v| v.parse().ok());
    let end = header("pulse-end").map(|v| v == "true");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let lines = if status == 200 {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    };
    (status, next, end, lines)
}

#[test]
fn the_logs_are_exported_and_tailed_while_the_gateway_runs() {
    let s = Server::start("");
    for page in 1..=3 {
        s.read("reader-x", page);
    }
    // Events in pages of two, from where the last answer said.
    let (status, next, end, lines) = export(&s, "log=events&limit=2");
    assert_eq!(
        (status, next, end, lines.len()),
        (200, Some(2), Some(false), 2)
    );
    assert_eq!(lines[0]["reader"], "reader-x");
    assert_eq!(lines[0]["event"]["page"]["url"], "https://news.example/a/1");
    let (status, next, end, lines) = export(&s, "log=events&from=2");
    assert_eq!(
        (status, next, end, lines.len()),
        (200, Some(3), Some(true), 1)
    );
    assert_eq!(lines[0]["event"]["page"]["url"], "https://news.example/a/3");
    // Nothing new yet: an empty page at the same position; then a new event shows up there.
    assert_eq!(export(&s, "log=events&from=3").3.len(), 0);
    s.read("reader-x", 4);
    let (_, next, _, lines) = export(&s, "log=events&from=3");
    assert_eq!((next, lines.len()), (Some(4), 1));
    // The decision log too (written behind: wait for it).
    s.decisions(4);
    let (status, _, _, lines) = export(&s, "log=decisions");
    assert_eq!((status, lines.len()), (200, 4));
    assert_eq!(lines[0]["reader"], "reader-x");
    // Bad questions get reasons.
    for bad in ["log=nope", "from=-1", "limit=x"] {
        let (status, _, _, body) = export(&s, bad);
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body[0]["error"]["code"], "invalid_request", "{bad}");
    }
}

#[test]
fn the_scrape_credential_reads_metrics_and_nothing_else() {
    let s = Server::start("");
    let call = |method: &str, path: &str, token: &str| {
        let url = format!("{}{path}", s.admin);
        let auth = format!("Bearer {token}");
        match method {
            "GET" => agent().get(&url).header("authorization", &auth).call(),
            _ => agent()
                .put(&url)
                .header("authorization", &auth)
                .send(r#"{"ip_requests":{"per_second":1}}"#),
        }
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(call("GET", "/metrics", SCRAPE), 200);
    assert_eq!(call("GET", "/metrics", TOKEN), 200);
    for (method, path) in [
        ("GET", "/admin/limits"),
        ("PUT", "/admin/limits"),
        ("GET", "/admin/export"),
    ] {
        assert_eq!(call(method, path, SCRAPE), 401, "{method} {path}");
    }
    assert_eq!(call("GET", "/metrics", "wrong"), 401);
}

/// Decisions answered with `action`, whichever rule decided.
fn decisions(metrics: &str, action: &str) -> u64 {
    let prefix = format!("pulse_scorer_decisions_total{{action=\"{action}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
