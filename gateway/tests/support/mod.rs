//! The real `serve` on a loopback port, driven over HTTP/1.1 (ureq, or raw bytes when a test
//! needs headers a client would not send), and batches to send it.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use pulse_gateway::{Config, Gateway, SiteConfig, serve};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct Server {
    pub url: String,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start(max_body: usize, max_decoded: usize) -> Self {
        Self::start_with(|config, _| {
            config.limits.max_body_bytes = max_body;
            config.limits.max_decoded_bytes = max_decoded;
        })
    }

    /// A server with the default test config changed by `change` (given the temp folder).
    pub fn start_with(change: impl FnOnce(&mut Config, &std::path::Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data = dir.path().join("data");
        // These tests check decisions, not the deadline: be generous on busy machines.
        config.limits.decision_deadline_ms = 2000.try_into().unwrap();
        config.sites = vec![SiteConfig::new("demo", &["https://news.example"])];
        change(&mut config, dir.path());
        let gateway = Arc::new(Gateway::open(config).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let gw = Arc::clone(&gateway);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(gw, listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            gateway,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    pub fn post(
        &self,
        query: &str,
        origin: Option<&str>,
        body: &[u8],
    ) -> (u16, Value, ureq::http::HeaderMap) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.post(format!("{}/v1/collect{query}", self.url));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, body, _) = self.get_from(path, None);
        (status, body)
    }

    /// GET `path` as a page on `origin` would (with its `Origin` header, as `fetch` sends it).
    pub fn get_from(
        &self,
        path: &str,
        origin: Option<&str>,
    ) -> (u16, String, ureq::http::HeaderMap) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(format!("{}{path}", self.url));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        let mut resp = req.call().unwrap();
        let headers = resp.headers().clone();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
            headers,
        )
    }
}

impl Server {
    /// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) as raw bytes; returns
    /// the status and the whole answer as text.
    pub fn raw(&self, request: &str, body: &[u8]) -> (u16, String) {
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    /// The value of one series in the metrics.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.gateway.metrics.text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP agent that returns error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

pub fn now() -> u64 {
    pulse_gateway::now_ms()
}

pub fn event(id: u128, kind: &str) -> Value {
    json!({
        "id": format!("{id:032x}"), "ts": now(), "type": kind,
        "page": {"url": "https://news.example/articles/a.html", "title": "A"},
        "props": {"content_type": "article"}
    })
}

pub fn batch(events: Vec<Value>) -> Value {
    json!({"v": 1, "site_key": "demo", "anonymous_id": "anon-1", "session_id": "s-1",
           "seq": 0, "sent_at": now(), "events": events})
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// `gateway` served by `serve_all` on loopback ports: the public listener and the admin one.
/// Stopped (drained) when dropped.
pub struct Served {
    pub url: String,
    pub admin: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Served {
    pub fn start(gateway: Arc<Gateway>) -> Self {
        let settings = gateway.config.listen_settings();
        Self::start_app(gateway, settings)
    }

    /// Any app (the gateway, or one standing in front of it) on listeners with `settings`.
    pub fn start_app<A: pulse_gateway::App>(app: Arc<A>, settings: pulse_http::Settings) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx
                    .send((listener.local_addr().unwrap(), admin.local_addr().unwrap()))
                    .unwrap();
                let listeners = pulse_gateway::Listeners::from_tcp(listener, settings)
                    .unwrap()
                    .with_admin(admin)
                    .unwrap();
                pulse_gateway::serve_all(app, listeners, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let (addr, admin) = addr_rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            admin: format!("http://{admin}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
