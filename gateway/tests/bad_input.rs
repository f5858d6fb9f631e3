//! The real `serve` on a loopback port, driven over HTTP/1.1: good batches, and every kind of bad
//! input answered with its status and machine-readable reason, counted, with the gateway still
//! serving afterwards.

mod support;

use serde_json::json;
use support::{Server, batch, code, event};

#[test]
fn a_good_batch_is_stored_and_decided_with_per_event_rejections() {
    let s = Server::start(64 * 1024, 512 * 1024);
    let mut bad = event(2, "custom"); // a custom event without a name
    bad["props"] = json!({});
    let body = serde_json::to_vec(&batch(vec![event(1, "page_view"), bad])).unwrap();
    let zstd = zstd::encode_all(&body[..], 3).unwrap();
    let (status, answer, headers) = s.post("?k=demo", Some("https://news.example"), &zstd);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(
        answer["rejected"],
        json!([{"index": 1, "id": format!("{:032x}", 2), "reason": "missing_name"}])
    );
    assert_eq!(answer["decision"]["action"], "meter");
    assert_eq!(answer["decision"]["remaining"], 2);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://news.example"
    );
    // The same batch again (a retry) is stored again but does not count twice.
    let (_, again, _) = s.post("?k=demo", Some("https://news.example"), &body);
    assert_eq!(again["decision"]["remaining"], 2);
    let store = s.gateway.log().unwrap();
    assert_eq!(store.events_from(0).count(), 2);
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].reason, "missing_name");
    let metrics = s.gateway.metrics.text();
    assert!(
        metrics.contains("pulse_gateway_events_accepted_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pulse_gateway_events_rejected_total{reason=\"missing_name\"} 2"),
        "{metrics}"
    );
}

/// (what, query, origin, body, status, reason)
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[test]
fn bad_input_gets_its_status_and_reason_and_is_counted() {
    let max_body = 2048;
    let max_decoded = 8192;
    let s = Server::start(max_body, max_decoded);
    let good = serde_json::to_vec(&batch(vec![event(1, "page_view")])).unwrap();
    let origin = Some("https://news.example");
    let mut truncated = zstd::encode_all(&good[..], 3).unwrap();
    truncated.truncate(truncated.len() / 2);
    let bomb = zstd::encode_all(&vec![b' '; 1 << 20][..], 3).unwrap();
    assert!(bomb.len() < max_body);
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed json",
            "?k=demo",
            origin,
            b"{\"v\":1,".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "not a batch",
            "?k=demo",
            origin,
            b"{\"v\":1}".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "empty batch",
            "?k=demo",
            origin,
            serde_json::to_vec(&batch(vec![])).unwrap(),
            400,
            "empty_batch",
        ),
        (
            "missing key",
            "",
            origin,
            good.clone(),
            401,
            "missing_site_key",
        ),
        (
            "unknown key",
            "?k=other",
            origin,
            good.clone(),
            401,
            "unknown_site_key",
        ),
        (
            "bad origin",
            "?k=demo",
            Some("https://evil.example"),
            good.clone(),
            403,
            "origin_not_allowed",
        ),
        (
            "body over cap",
            "?k=demo",
            origin,
            vec![b' '; max_body + 1],
            413,
            "body_too_large",
        ),
        (
            "decoded over cap",
            "?k=demo",
            origin,
            bomb,
            413,
            "decoded_too_large",
        ),
        (
            "not zstd nor json",
            "?k=demo",
            origin,
            b"\x00\x01garbage".to_vec(),
            415,
            "unsupported_encoding",
        ),
        (
            "corrupt zstd",
            "?k=demo",
            origin,
            truncated,
            422,
            "undecodable_body",
        ),
    ];
    for (what, query, origin, body, status, reason) in &cases {
        let (got, answer, _) = s.post(query, *origin, body);
        assert_eq!((got, code(&answer)), (*status, *reason), "{what}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let metrics = s.gateway.metrics.text();
    for (what, _, _, _, _, reason) in &cases {
        let line = format!("pulse_gateway_errors_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{what}: {line} not in\n{metrics}");
    }
    // Still serving, and the good batch is still accepted.
    assert_eq!(s.get("/healthz").0, 200);
    assert_eq!(s.post("?k=demo", origin, &good).0, 200);
    // Batches from a known site that could not be read are kept as dead letters.
    let reasons: Vec<_> = s
        .gateway
        .log()
        .unwrap()
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    for reason in [
        "malformed_json",
        "invalid_batch",
        "decoded_too_large",
        "undecodable_body",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} not in {reasons:?}"
        );
    }
}

#[test]
fn body_cap_at_limit_minus_one_limit_and_plus_one() {
    let max_body = 1024;
    let s = Server::start(max_body, 4096);
    let good = serde_json::to_vec(&batch(vec![event(1, "page_view")])).unwrap();
    for (extra, status) in [(max_body - 1, 200), (max_body, 200), (max_body + 1, 413)] {
        // JSON allows trailing whitespace: pad the body to the exact size.
        let mut body = good.clone();
        body.resize(extra, b' ');
        let (got, answer, _) = s.post("?k=demo", None, &body);
        assert_eq!(got, status, "{extra} bytes: {answer}");
    }
}

#[test]
fn preflight_and_wrong_methods() {
    let s = Server::start(64 * 1024, 512 * 1024);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .options(format!("{}/v1/collect?k=demo", s.url))
        .header("Origin", "https://news.example")
        .header("Access-Control-Request-Method", "POST")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://news.example"
    );
    let resp = agent
        .options(format!("{}/v1/collect", s.url))
        .header("Origin", "https://evil.example")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let (status, body) = s.get("/v1/collect");
    assert_eq!(status, 405, "{body}");
    let (status, body) = s.get("/../Cargo.toml");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn the_tracker_files_load_from_any_origin_and_refusals_say_why() {
    let s = Server::start_with(|config, dir| {
        let tracker = dir.join("tracker");
        std::fs::create_dir_all(&tracker).unwrap();
        std::fs::write(tracker.join("pulse.js"), "/* tracker */").unwrap();
        std::fs::write(tracker.join("pulse_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
        config.server.tracker_dir = Some(tracker);
        config.sites[0].require_origin = true;
    });
    // A publisher's page (any origin: the gateway cannot know every page that embeds the tag)
    // fetches the Wasm with CORS; the script needs no CORS but gets the same headers.
    for (path, content_type) in [
        ("/pulse.js", "text/javascript; charset=utf-8"),
        ("/pulse_bg.wasm", "application/wasm"),
    ] {
        let (status, _, headers) = s.get_from(path, Some("https://any-publisher.example"));
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["access-control-allow-origin"], "*", "{path}");
        assert_eq!(
            headers["cross-origin-resource-policy"], "cross-origin",
            "{path}"
        );
    }
    // The demo site is the gateway's own: not opened to other origins.
    let (_, _, headers) = s.get_from("/healthz", Some("https://any-publisher.example"));
    assert!(headers.get("access-control-allow-origin").is_none());

    // A listed origin gets its decision, readable by the page.
    let good = serde_json::to_vec(&batch(vec![event(1, "page_view")])).unwrap();
    let (status, answer, headers) = s.post("?k=demo", Some("https://news.example"), &good);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["decision"]["action"].is_string(), "{answer}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://news.example"
    );
    // An unlisted origin gets no decision and nothing is stored; the refusal is readable by the
    // page, so the tracker can log why instead of retrying an opaque CORS failure.
    let other = serde_json::to_vec(&batch(vec![event(2, "page_view")])).unwrap();
    let (status, answer, headers) = s.post("?k=demo", Some("https://elsewhere.example"), &other);
    assert_eq!((status, code(&answer)), (403, "origin_not_allowed"));
    assert!(answer.get("decision").is_none(), "{answer}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://elsewhere.example"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("https://elsewhere.example"), "{message}");
    // Without an Origin, a site that requires one refuses too.
    let (status, answer, _) = s.post("?k=demo", None, &other);
    assert_eq!(
        (status, code(&answer)),
        (403, "origin_not_allowed"),
        "{answer}"
    );
    let stored: Vec<_> = s
        .gateway
        .log()
        .unwrap()
        .events_from(0)
        .map(|e| e.unwrap().record().unwrap().event.id.0)
        .collect();
    assert_eq!(stored, vec![1], "only the listed origin's event is stored");
}
