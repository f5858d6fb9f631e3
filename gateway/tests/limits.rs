//! Rate limits and the admin API, on the real `serve` and `serve_admin` over loopback: per
//! address, per site (events, bytes), global; trusted proxies and spoofed headers; a change
//! through the admin API takes effect at once and is written back; a bad change is refused; many
//! distinct addresses keep the key table bounded.

mod support;

use std::sync::Arc;

use pulse_gateway::{Config, Gateway};
use serde_json::{Value, json};
use support::agent;

const TOKEN: &str = "s3cret-admin-token";

struct Server {
    /// Serving until dropped (first: before the folder goes).
    _served: support::Served,
    url: String,
    admin: String,
    config_path: std::path::PathBuf,
    gateway: Arc<Gateway>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A gateway whose config file holds `extra` (TOML) besides the site `demo` and `other`.
    fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("pulse.toml");
        let text = format!(
            "{extra}\n\n[limits]\ndecision_deadline_ms = 2000\nmax_body_bytes = 65536\n\n\
             [[sites]]\nkey = \"demo\"\norigins = [\"https://news.example\"]\n\n\
             [[sites]]\nkey = \"other\"\norigins = [\"https://news.example\"]\n"
        );
        std::fs::write(&config_path, text).unwrap();
        let mut config = Config::load(&config_path).unwrap();
        config.server.data = dir.path().join("data");
        config.server.admin_token = Some(TOKEN.into());
        let gateway = Arc::new(Gateway::open(config).unwrap());
        let served = support::Served::start(Arc::clone(&gateway));
        Self {
            url: served.url.clone(),
            admin: served.admin.clone(),
            _served: served,
            config_path,
            gateway,
            _dir: dir,
        }
    }

    fn post_as(
        &self,
        site: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Value, Option<String>) {
        let mut req = agent()
            .post(format!("{}/v1/collect?k={site}", self.url))
            .header("Origin", "https://news.example");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            retry,
        )
    }

    fn post(&self, events: usize) -> (u16, Value, Option<String>) {
        self.post_as("demo", &batch("demo", events), &[])
    }

    fn admin(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        self.admin_as(method, path, auth, body)
    }

    /// An admin request with this `Authorization` header (none when `None`).
    fn admin_as(&self, method: &str, path: &str, auth: Option<String>, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.admin);
        let mut resp = match method {
            "GET" => {
                let mut req = agent().get(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req.call()
            }
            "POST" => {
                let mut req = agent().post(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req.send(body)
            }
            _ => {
                let mut req = agent().put(&url);
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                req.send(body)
            }
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn batch(site: &str, n: usize) -> Vec<u8> {
    let now = pulse_gateway::now_ms();
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("{:032x}", rand_id(i)), "ts": now, "type": "custom", "name": "tick",
                "page": {"url": "https://news.example/a.html", "title": "A"}, "props": {}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"v": 1, "site_key": site, "anonymous_id": "anon-1",
        "session_id": "s-1", "seq": 0, "sent_at": now, "events": events}))
    .unwrap()
}

fn rand_id(i: usize) -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) << 16 | i as u128
}

fn limit_of(body: &Value) -> &str {
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    body["error"]["limit"].as_str().unwrap_or("<none>")
}

fn metric(gw: &Gateway, line: &str) -> bool {
    gw.metrics.text().lines().any(|l| l == line)
}

#[test]
fn per_address_limit_answers_429_with_retry_after_and_the_limit() {
    let s = Server::start("[rate_limits]\nip_requests = { per_second = 1, burst = 3 }");
    for _ in 0..3 {
        assert_eq!(s.post(1).0, 200);
    }
    let (status, body, retry) = s.post(1);
    assert_eq!(status, 429);
    assert_eq!(limit_of(&body), "ip_requests");
    let retry: u32 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(metric(
        &s.gateway,
        "pulse_gateway_rate_limited_total{limit=\"ip_requests\"} 1"
    ));
    assert!(metric(
        &s.gateway,
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http1\",status=\"429\"} 1"
    ));
    // The peer is not a trusted proxy: forwarded headers do not buy a fresh bucket.
    let (status, _, _) = s.post_as(
        "demo",
        &batch("demo", 1),
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ],
    );
    assert_eq!(status, 429);
}

#[test]
fn trusted_proxies_forward_the_client_address() {
    let s = Server::start(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
         [rate_limits]\nip_requests = { per_second = 1, burst = 2 }",
    );
    let body = batch("demo", 1);
    let from = |h: &[(&str, &str)]| s.post_as("demo", &body, h).0;
    assert_eq!(from(&[("x-forwarded-for", "198.51.100.1")]), 200);
    assert_eq!(from(&[("x-forwarded-for", "198.51.100.1")]), 200);
    assert_eq!(from(&[("x-forwarded-for", "198.51.100.1")]), 429);
    // A spoofed first hop before the real client changes nothing: the nearest untrusted hop counts.
    assert_eq!(
        from(&[("x-forwarded-for", "203.0.113.77, 198.51.100.1")]),
        429
    );
    // Another client behind the same proxy has its own bucket; so does one named by Forwarded.
    assert_eq!(from(&[("x-forwarded-for", "198.51.100.2")]), 200);
    assert_eq!(from(&[("forwarded", "for=\"[2001:db8::1]:443\"")]), 200);
    assert_eq!(from(&[("forwarded", "for=\"[2001:db8::1]:443\"")]), 200);
    assert_eq!(from(&[("forwarded", "for=\"[2001:db8::1]:443\"")]), 429);
}

#[test]
fn per_site_limits_count_events_and_bytes() {
    let s = Server::start(
        "[rate_limits]\nip_requests = { per_second = 0, burst = 0 }\n\
         site_events = { per_second = 100, burst = 150 }",
    );
    assert_eq!(s.post(100).0, 200);
    let (status, body, retry) = s.post(60);
    assert_eq!(status, 429);
    assert_eq!(limit_of(&body), "site_events");
    assert!(retry.is_some());
    // Another site is not affected.
    assert_eq!(s.post_as("other", &batch("other", 100), &[]).0, 200);

    // Bytes: bodies of about 40 KB; the second exceeds the 64 KiB burst.
    let big = |site: &str| {
        let mut b = batch(site, 1);
        let pad = " ".repeat(40_000);
        b.splice(1..1, pad.bytes());
        b
    };
    let s = Server::start("[rate_limits]\nsite_bytes = { per_second = 65536, burst = 65536 }");
    assert_eq!(s.post_as("demo", &big("demo"), &[]).0, 200);
    let (status, body, _) = s.post_as("demo", &big("demo"), &[]);
    assert_eq!(status, 429);
    assert_eq!(limit_of(&body), "site_bytes");
    assert_eq!(s.post_as("other", &big("other"), &[]).0, 200);
    assert!(metric(
        &s.gateway,
        "pulse_gateway_rate_limited_total{limit=\"site_bytes\"} 1"
    ));
}

#[test]
fn global_limit_covers_every_address() {
    let s = Server::start(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [rate_limits]\nglobal_requests = { per_second = 1, burst = 2 }",
    );
    let body = batch("demo", 1);
    assert_eq!(
        s.post_as("demo", &body, &[("x-forwarded-for", "192.0.2.1")])
            .0,
        200
    );
    assert_eq!(
        s.post_as("demo", &body, &[("x-forwarded-for", "192.0.2.2")])
            .0,
        200
    );
    let (status, body, _) = s.post_as("demo", &body, &[("x-forwarded-for", "192.0.2.3")]);
    assert_eq!(status, 429);
    assert_eq!(limit_of(&body), "global_requests");
}

#[test]
fn admin_changes_apply_at_once_are_written_back_and_bad_ones_are_refused() {
    let s = Server::start(
        "[rate_limits]\n# operators' note\nip_requests = { per_second = 1, burst = 1 }",
    );
    assert_eq!(s.post(1).0, 200);
    assert_eq!(s.post(1).0, 429);

    // Every admin path wants the token.
    assert_eq!(s.admin("GET", "/admin/limits", None, "").0, 401);
    assert_eq!(s.admin("GET", "/admin/limits", Some("wrong"), "").0, 401);
    assert_eq!(s.admin("GET", "/metrics", None, "").0, 401);
    let (status, limits) = s.admin("GET", "/admin/limits", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert_eq!(limits["ip_requests"], json!({"per_second": 1, "burst": 1}));

    // Raise the limit: the very next request passes, without a restart.
    let (status, answer) = s.admin(
        "PUT",
        "/admin/limits",
        Some(TOKEN),
        r#"{"ip_requests": {"per_second": 1000, "burst": 1000}}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["persisted"], true);
    assert_eq!(s.post(1).0, 200);
    let written = std::fs::read_to_string(&s.config_path).unwrap();
    assert!(written.contains("# operators' note"), "{written}");
    let reread = Config::load(&s.config_path).unwrap();
    assert_eq!(reread.rate_limits.ip_requests.per_second, 1000);

    // A bad change is refused with its reasons; the limits and the file stay.
    let (status, answer) = s.admin(
        "PUT",
        "/admin/limits",
        Some(TOKEN),
        r#"{"ip_requests": {"per_second": 10, "burst": 5}, "site_events": {"per_second": 10, "burst": 10}}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_config");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ip_requests.burst") && message.contains("site_events.burst"),
        "{message}"
    );
    for bad in ["{\"ip_requests\": 5}", "{\"nope\": 1}", "not json"] {
        assert_eq!(
            s.admin("PUT", "/admin/limits", Some(TOKEN), bad).0,
            400,
            "{bad}"
        );
    }
    let (_, limits) = s.admin("GET", "/admin/limits", Some(TOKEN), "");
    assert_eq!(
        limits["ip_requests"],
        json!({"per_second": 1000, "burst": 1000})
    );
    assert_eq!(std::fs::read_to_string(&s.config_path).unwrap(), written);

    // Metrics are served on the admin listener.
    let (status, metrics) = s.admin("GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("pulse_gateway_rate_limited_total{limit=\"ip_requests\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pulse_gateway_decision_duration_seconds_count"),
        "{metrics}"
    );
    // The public listener does not serve them.
    let (status, _) = {
        let mut resp = agent().get(format!("{}/metrics", s.url)).call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    assert_eq!(status, 404);
}

#[test]
fn admin_numbers_are_range_checked_and_the_file_always_loads() {
    let s = Server::start("[rate_limits]\nmax_keys = 1000");
    let before = std::fs::read_to_string(&s.config_path).unwrap();
    for (body, field) in [
        (r#"{"max_keys": 18446744073709551615}"#, "max_keys"),
        (r#"{"max_keys": 0}"#, "max_keys"),
        (
            r#"{"ip_requests": {"per_second": 4294967296}}"#,
            "4294967296",
        ),
        (r#"{"site_bytes": {"burst": -1}}"#, "-1"),
    ] {
        let (status, answer) = s.admin("PUT", "/admin/limits", Some(TOKEN), body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_config", "{body}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {message}");
        // Nothing was written: the file is as it was, and `gateway check` would pass.
        assert_eq!(std::fs::read_to_string(&s.config_path).unwrap(), before);
        Config::load(&s.config_path).unwrap();
    }
    // The largest value the file holds is taken, written, and loads again.
    let (status, answer) = s.admin(
        "PUT",
        "/admin/limits",
        Some(TOKEN),
        &format!(r#"{{"max_keys": {}}}"#, pulse_gateway::MAX_RATE_LIMIT_KEYS),
    );
    assert_eq!(status, 200, "{answer}");
    let config = Config::load(&s.config_path).unwrap();
    assert_eq!(
        config.rate_limits.max_keys,
        pulse_gateway::MAX_RATE_LIMIT_KEYS
    );
}

#[test]
fn the_bearer_scheme_is_matched_in_any_case_and_reload_is_one_call() {
    let s = Server::start("[rate_limits]\nip_requests = { per_second = 1, burst = 1 }");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = Some(format!("{scheme} {TOKEN}"));
        assert_eq!(
            s.admin_as("GET", "/admin/limits", auth, "").0,
            200,
            "{scheme}"
        );
    }
    for auth in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_owned(),
    ] {
        assert_eq!(
            s.admin_as("GET", "/admin/limits", Some(auth.clone()), "").0,
            401,
            "{auth}"
        );
    }
    // An edit of the file applies with POST /admin/reload (what SIGHUP calls too).
    let text = std::fs::read_to_string(&s.config_path).unwrap().replace(
        "ip_requests = { per_second = 1, burst = 1 }",
        "ip_requests = { per_second = 7, burst = 70 }",
    );
    std::fs::write(&s.config_path, text).unwrap();
    let (status, answer) = s.admin("POST", "/admin/reload", Some(TOKEN), "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["limits"]["ip_requests"],
        json!({"per_second": 7, "burst": 70})
    );
    // A file that does not check is refused whole, and nothing changes.
    let broken =
        std::fs::read_to_string(&s.config_path).unwrap() + "\n[[sites]]\nkey = \"bad key\"\n";
    std::fs::write(&s.config_path, broken).unwrap();
    let (status, answer) = s.admin("POST", "/admin/reload", Some(TOKEN), "");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_config"))
    );
    let (_, limits) = s.admin("GET", "/admin/limits", Some(TOKEN), "");
    assert_eq!(limits["ip_requests"], json!({"per_second": 7, "burst": 70}));
}

#[test]
fn many_distinct_addresses_keep_the_key_table_bounded() {
    let s = Server::start(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [rate_limits]\nip_requests = { per_second = 1000, burst = 1000 }\nmax_keys = 100",
    );
    let body = batch("demo", 1);
    let agent = agent();
    for i in 0..2_000u32 {
        let ip = std::net::Ipv4Addr::from(0xc633_6400 + i); // 198.51.100.0 on
        let resp = agent
            .post(format!("{}/v1/collect?k=demo", s.url))
            .header("Origin", "https://news.example")
            .header("x-forwarded-for", ip.to_string())
            .send(&body[..])
            .unwrap();
        assert!(
            matches!(resp.status().as_u16(), 200 | 429),
            "{}",
            resp.status()
        );
    }
    let tracked = s.gateway.control().limiter.tracked_addresses();
    assert!(tracked <= 100, "{tracked} addresses tracked");
}
