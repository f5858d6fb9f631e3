//! The Segment-compatible door, with Segment's own Node.js library (`@segment/analytics-node`
//! from npm, pinned in `tests/segment/`, installed by `scripts/setup.sh --test`) sending to a
//! running gateway: its identify, pages and tracks are stored as Pulse events and scored like
//! the tracker's; a retried batch counts once; a wrong write key is refused.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use pulse_e2e::{
    DEMO_SERVER_SECRET, GatewayProcess, agent, demo_config, gateway_bin, workspace_root,
};
use pulse_protocol::EventRecord;
use serde_json::{Value, json};

/// Where `scripts/setup.sh --test` installed the library.
fn node_modules() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let modules = target.join("segment-node/node_modules");
    assert!(
        modules.join("@segment/analytics-node").is_dir(),
        "{} lacks @segment/analytics-node: run scripts/setup.sh --test",
        modules.display()
    );
    modules
}

fn reader(gw: &GatewayProcess, id: &str) -> Value {
    let mut resp = agent()
        .get(format!("{}/admin/readers/{id}", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .unwrap();
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn stored(config: &std::path::Path, data: &std::path::Path) -> Vec<EventRecord> {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("dump")
        .output()
        .expect("gateway dump");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn segments_own_library_sends_to_pulse() {
    let modules = node_modules();
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");

    let out = Command::new("node")
        .arg(workspace_root().join("tests/segment/send.js"))
        .env("NODE_PATH", &modules)
        .env("HOST", &gw.url)
        // The publisher's server: its userIds count (the demo site has token keys).
        .env("WRITE_KEY", format!("demo:{DEMO_SERVER_SECRET}"))
        .env("USER_ID", "seg-ana")
        .output()
        .expect("node (Node.js) runs: scripts/setup.sh --test installs it");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("flushed"),
        "{out:?}"
    );

    // Scored like the tracker's: three article pages on the meter.
    let ana = reader(&gw, "seg-ana");
    assert_eq!(
        ana["features"]["metered_pages"]["value"], 3.0,
        "the pages counted: {ana}"
    );
    let events = stored(&config, &data);
    let of = |reader: &str| -> Vec<&EventRecord> {
        events.iter().filter(|r| r.reader == reader).collect()
    };
    let ana_events = of("seg-ana");
    // Segment's library sends the first four messages (`flushAt`) in one request and the rest
    // in another when it closes; the two can arrive in either order, so the order is checked
    // within each request only.
    let mut kinds: Vec<&str> = ana_events.iter().map(|r| r.event.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["custom", "identify", "page_view", "page_view", "page_view"],
        "{ana_events:?}"
    );
    let of_kind = |kind: &str| -> Vec<&EventRecord> {
        ana_events
            .iter()
            .copied()
            .filter(|r| r.event.kind.as_str() == kind)
            .collect()
    };
    assert_eq!(of_kind("identify")[0].event.props["plan"], "pro");
    let urls: Vec<&str> = of_kind("page_view")
        .iter()
        .map(|r| r.event.page.url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://news.example/articles/1",
            "https://news.example/articles/2",
            "https://news.example/articles/3"
        ]
    );
    assert_eq!(
        of_kind("custom")[0].event.name.as_deref(),
        Some("Newsletter_Signup")
    );
    assert!(ana_events.iter().all(|r| r.site == "demo"));
    let anon = of("segment-anon-1");
    assert_eq!(anon.len(), 1, "{events:?}");
    assert_eq!(anon[0].event.name.as_deref(), Some("Video_Play"));
    assert_eq!(anon[0].event.props["seconds"], 12);

    // A batch Segment retries (the same message ids) counts once.
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let server = basic(&format!("demo:{DEMO_SERVER_SECRET}:"));
    let page = |user: &str, id: &str| {
        json!({
            "batch": [{"type": "page", "userId": user, "messageId": id,
                       "properties": {"url": "https://news.example/articles/9", "content_type": "article"}}],
        })
        .to_string()
    };
    for _ in 0..2 {
        let resp = agent()
            .post(format!("{}/v1/batch", gw.url))
            .header("authorization", &server)
            .header("content-type", "application/json")
            .send(page("seg-bo", "retry-1"))
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    assert_eq!(
        reader(&gw, "seg-bo")["features"]["metered_pages"]["value"],
        1.0
    );
    // The write key alone (as a browser would hold it): on a site with token keys the userId
    // is not trusted, and the message counts under its anonymous id.
    let resp = agent()
        .post(format!("{}/v1/batch", gw.url))
        .header("authorization", basic("demo:"))
        .header("content-type", "application/json")
        .send(page("seg-cy", "plain-1"))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(reader(&gw, "seg-cy")["error"]["code"], "not_found");
    // A password that is not the server secret is refused.
    let resp = agent()
        .post(format!("{}/v1/batch", gw.url))
        .header("authorization", basic("demo:guess:"))
        .header("content-type", "application/json")
        .send(page("seg-cy", "plain-2"))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // A wrong write key, or none: refused with the reason, nothing stored.
    for auth in [Some("Basic bm9wZTo="), None] {
        let mut req = agent().post(format!("{}/v1/track", gw.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut resp = req
            .header("content-type", "application/json")
            .send(json!({"userId": "x", "event": "e"}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            code == "unknown_site_key" || code == "missing_site_key",
            "{body}"
        );
    }
    assert!(stored(&config, &data).iter().all(|r| r.reader != "x"));
    gw.stop();
}
