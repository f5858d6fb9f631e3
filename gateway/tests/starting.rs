//! The listeners answer while the gateway opens (bringing reader state up to date can take
//! minutes): `/healthz` ok, `/readyz` 503 `starting`, a batch 503 with `Retry-After` and the
//! admin API 503; once the open gateway is handed over, everything is its own.

use std::sync::Arc;
use std::time::Duration;

use pulse_gateway::{Config, Gateway, Starting};
use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

#[test]
fn probes_get_answers_before_the_gateway_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data = dir.path().join("data");
    config.server.admin_token = Some("starting-token".into());
    config.sites = vec![serde_json::from_value(json!({"key": "demo", "origins": []})).unwrap()];
    let settings = config.listen_settings();
    let starting = Arc::new(Starting::default());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = Arc::clone(&starting);
    let server = std::thread::spawn(move || {
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
    let get = |url: String| {
        let mut resp = agent()
            .get(url)
            .header("authorization", "Bearer starting-token")
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or_default();
        (status, retry, body)
    };
    let post = || {
        agent()
            .post(format!("http://{addr}/v1/collect?k=demo"))
            .send("{}")
            .unwrap()
    };

    // Opening: alive, not ready, and nothing else served.
    assert_eq!(get(format!("http://{addr}/healthz")).0, 200);
    let (status, _, body) = get(format!("http://{addr}/readyz"));
    assert_eq!((status, &body["reasons"]), (503, &json!(["starting"])));
    let resp = post();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    let (status, retry, body) = get(format!("http://{admin}/admin/limits"));
    assert_eq!(status, 503);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "store_unavailable");

    // Open: the gateway answers everything.
    starting.ready(Arc::new(Gateway::open(config).unwrap()));
    assert_eq!(get(format!("http://{addr}/readyz")).0, 200);
    assert_eq!(get(format!("http://{admin}/admin/limits")).0, 200);
    assert_eq!(
        post().status().as_u16(),
        400,
        "an empty batch, refused by the gateway itself"
    );
    let _ = stop.send(());
    server.join().unwrap();
}
