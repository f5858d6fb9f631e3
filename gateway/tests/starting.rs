//! The listeners answer while the gateway opens (bringing reader state up to date can take
//! minutes): `/healthz` ok, `/readyz` 503 `starting`, a batch 503 with `Retry-After` and the
//! admin API 503; once the open gateway is handed over, everything is its own.

mod support;

use std::sync::Arc;

use pulse_gateway::{Config, Gateway, Starting};
use serde_json::{Value, json};
use support::agent;

#[test]
fn probes_get_answers_before_the_gateway_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data = dir.path().join("data");
    config.server.admin_token = Some("starting-token".into());
    config.sites = vec![serde_json::from_value(json!({"key": "demo", "origins": []})).unwrap()];
    let settings = config.listen_settings();
    let starting = Arc::new(Starting::default());
    let served = support::Served::start_app(Arc::clone(&starting), settings);
    let addr = served.url.trim_start_matches("http://").to_owned();
    let admin = served.admin.trim_start_matches("http://").to_owned();
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
    drop(served);
}
