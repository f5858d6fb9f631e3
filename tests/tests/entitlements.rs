//! Trusted entitlements and enforced decisions, against the real gateway: on a site with token
//! keys, only a token signed by the publisher makes a reader a subscriber or vouches for a user
//! id (a forged trait, a victim's user id, an expired or tampered token all count as the
//! anonymous reader and grant nothing, each with its reason in the answer and in `/metrics`);
//! every decision comes signed, verifiable with the key the gateway serves; and the publisher's
//! server can ask for a decision on a page before rendering it, without counting that page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pulse_e2e::{
    DEMO_SERVER_SECRET, DEMO_TOKEN_SECRET, GatewayProcess, agent, demo_config, metric,
    metrics_text, page_view_batch,
};
use pulse_gateway::{now_ms, sign_hs256};
use pulse_protocol::{Event, EventId, EventType, PageContext};
use serde_json::{Value, json};

fn post(gw: &GatewayProcess, body: &Value) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .header("origin", gw.url.as_str())
        .send_json(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A batch of `n` article views by `anon`, claiming `user_id` and carrying `auth`.
fn batch(
    anon: &str,
    seq: u64,
    first: u128,
    n: usize,
    user_id: Option<&str>,
    auth: Option<&str>,
) -> Value {
    let mut b = page_view_batch(anon, seq, first, n, now_ms());
    b.header.user_id = user_id.map(str::to_owned);
    b.header.auth = auth.map(str::to_owned);
    serde_json::to_value(b).unwrap()
}

/// An `identify` with `subscriber: true` among its traits: what a reader types in the console.
fn forged_identify(anon: &str, seq: u64, id: u128, user_id: &str) -> Value {
    let mut b = page_view_batch(anon, seq, id, 1, now_ms());
    b.header.user_id = Some(user_id.to_owned());
    b.events = vec![Event {
        id: EventId(id),
        ts: now_ms(),
        kind: EventType::Identify,
        name: None,
        page: PageContext {
            url: "https://news.example/".into(),
            ..PageContext::default()
        },
        props: json!({"subscriber": true})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }];
    serde_json::to_value(b).unwrap()
}

fn token(claims: &Value) -> String {
    sign_hs256(DEMO_TOKEN_SECRET.as_bytes(), None, claims)
}

fn subscriber_token(user: &str, exp: u64) -> String {
    token(&json!({"sub": user, "exp": exp, "entitlements": {"subscriber": true}}))
}

fn admin(gw: &GatewayProcess, path: &str) -> (u16, Value) {
    let mut resp = agent()
        .get(format!("{}{path}", gw.admin_url))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Verifies a signed decision with the key `GET /v1/keys` serves; returns its claims.
fn verified(gw: &GatewayProcess, signed: &str) -> Value {
    let mut resp = agent().get(format!("{}/v1/keys", gw.url)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let jwks: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    let (signing, sig) = signed.rsplit_once('.').unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
        .verify(signing.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("the decision's signature verifies with the served key");
    let (header, claims) = signing.split_once('.').unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], key["kid"]);
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[test]
fn only_a_token_signed_by_the_publisher_vouches_and_decisions_come_signed() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let gw = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    let soon = now_ms() / 1000 + 3600;

    // Mallory claims the victim's user id and a subscriber trait, with no token: counted under
    // her anonymous id, not a subscriber, told why.
    let (status, answer) = post(&gw, &forged_identify("mallory", 0, 1, "victim"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["auth"], "token_missing");
    let (_, answer) = post(&gw, &batch("mallory", 1, 10, 4, Some("victim"), None));
    assert_eq!(answer["decision"]["action"], "paywall", "{answer}");
    assert_ne!(answer["decision"]["reason"], "subscriber");
    assert_eq!(
        admin(&gw, "/admin/readers/victim").0,
        404,
        "the victim untouched"
    );
    assert_eq!(admin(&gw, "/admin/readers/mallory").0, 200);

    // A token for another user, tampered to name the victim: the signature fails.
    let good = subscriber_token("mallory-account", soon);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(
        json!({"sub": "victim", "exp": soon, "entitlements": {"subscriber": true}}).to_string(),
    );
    let (_, answer) = post(
        &gw,
        &batch("mallory", 2, 20, 1, Some("victim"), Some(&parts.join("."))),
    );
    assert_eq!(answer["auth"], "token_signature");
    assert_eq!(answer["decision"]["action"], "paywall");
    // An expired token, and one signed with another secret.
    let (_, answer) = post(
        &gw,
        &batch(
            "mallory",
            3,
            30,
            1,
            None,
            Some(&subscriber_token("m", 1_000)),
        ),
    );
    assert_eq!(answer["auth"], "token_expired");
    let other = sign_hs256(
        b"a secret of the attacker's own, 32 bytes or more",
        None,
        &json!({"sub": "victim", "exp": soon, "entitlements": {"subscriber": true}}),
    );
    let (_, answer) = post(&gw, &batch("mallory", 4, 40, 1, None, Some(&other)));
    assert_eq!(answer["auth"], "token_signature");
    assert_eq!(admin(&gw, "/admin/readers/victim").0, 404);
    // Not a token at all: the batch is refused with the reason.
    let (status, answer) = post(&gw, &batch("mallory", 5, 50, 1, None, Some("not a jwt!")));
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_batch");
    let (status, _) = post(
        &gw,
        &batch("mallory", 6, 60, 1, None, Some(&"a".repeat(5000))),
    );
    assert_eq!(status, 400);

    // The real subscriber, with the publisher's token: keyed by the vouched user id, allowed
    // past the meter, the entitlement shown as what the rule read.
    let sub = subscriber_token("sub-1", soon);
    let (_, answer) = post(&gw, &batch("anon-sub", 0, 100, 5, None, Some(&sub)));
    assert_eq!(answer["auth"], "valid", "{answer}");
    assert_eq!(answer["decision"]["action"], "allow", "{answer}");
    assert_eq!(answer["decision"]["reason"], "subscriber");
    assert_eq!(admin(&gw, "/admin/readers/sub-1").0, 200);
    assert_eq!(admin(&gw, "/admin/readers/anon-sub").0, 404);

    // Every decision is signed; the signature verifies with the served key and says what the
    // page was told.
    let claims = verified(&gw, answer["signed"].as_str().expect("signed"));
    assert_eq!(claims["sub"], "sub-1");
    assert_eq!(claims["site"], "demo");
    assert_eq!(claims["action"], "allow");
    assert_eq!(claims["rule"], "subscriber");
    // The same decision again for the same reader within a minute: the same token (one
    // Ed25519 signature saved), counted as reused.
    let (_, again) = post(&gw, &batch("anon-sub", 1, 200, 1, None, Some(&sub)));
    assert_eq!(again["decision"]["rule"], "subscriber", "{again}");
    assert_eq!(again["signed"], answer["signed"]);

    let m = metrics_text(&gw);
    assert_eq!(
        metric(&m, "pulse_gateway_auth_total{result=\"valid\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "pulse_gateway_auth_total{result=\"token_missing\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "pulse_gateway_auth_total{result=\"token_signature\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "pulse_gateway_auth_total{result=\"token_expired\"}"),
        1.0
    );
    assert_eq!(metric(&m, "pulse_gateway_signed_decisions_total"), 7.0);
    // That one, and mallory's answers that repeated the decision before them.
    assert_eq!(metric(&m, "pulse_gateway_signatures_reused_total"), 4.0);
    gw.stop();
}

fn ask(gw: &GatewayProcess, secret: &str, body: &Value) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("{}/v1/decide?k=demo", gw.url))
        .header("authorization", format!("Bearer {secret}"))
        .send_json(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn the_publishers_server_asks_before_rendering_and_the_page_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let gw = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    // Three articles read through the tracker.
    let (_, answer) = post(&gw, &batch("reader-7", 0, 1, 3, None, None));
    assert_eq!(answer["decision"]["remaining"], 0, "{answer}");
    let page = |n: u32| {
        json!({
            "reader": "reader-7",
            "page": {"url": format!("https://news.example/articles/{n}.html"), "content_type": "article"},
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148",
        })
    };
    // The server asks about a fourth article: the wall, signed for it to enforce.
    let (status, answer) = ask(&gw, DEMO_SERVER_SECRET, &page(4));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"]["action"], "paywall", "{answer}");
    let claims = verified(&gw, answer["signed"].as_str().unwrap());
    assert_eq!(claims["action"], "paywall");
    assert_eq!(claims["sub"], "reader-7");
    // An article already read stays readable.
    let (_, answer) = ask(&gw, DEMO_SERVER_SECRET, &page(2));
    assert_eq!(answer["decision"]["action"], "meter", "{answer}");
    // Asking counted nothing: still three page views.
    let (_, reader) = admin(&gw, "/admin/readers/reader-7");
    assert_eq!(
        reader["features"]["metered_pages"]["value"], 3.0,
        "{reader}"
    );
    // A subscriber's token makes the server's answer `allow`.
    let sub = subscriber_token("sub-2", now_ms() / 1000 + 600);
    let mut body = page(9);
    body["auth"] = json!(sub);
    let (_, answer) = ask(&gw, DEMO_SERVER_SECRET, &body);
    assert_eq!(answer["decision"]["reason"], "subscriber", "{answer}");
    assert_eq!(answer["reader"], "sub-2");

    // Wrong secret, no secret, unknown fields, bad values: clear refusals.
    let (status, answer) = ask(&gw, "guess", &page(4));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, answer) = ask(
        &gw,
        DEMO_SERVER_SECRET,
        &json!({"reader": "r", "page": {"url": "x"}, "admin": true}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = ask(
        &gw,
        DEMO_SERVER_SECRET,
        &json!({"reader": "a b", "page": {"url": "x"}}),
    );
    assert_eq!(status, 400);
    let (status, _) = ask(
        &gw,
        DEMO_SERVER_SECRET,
        &json!({"reader": "r", "page": {"url": "x"}, "country": "Narnia"}),
    );
    assert_eq!(status, 400);
    let (status, _) = ask(
        &gw,
        DEMO_SERVER_SECRET,
        &json!({"reader": "r", "page": {"url": "x".repeat(20_000)}}),
    );
    assert_eq!(status, 413);
    gw.stop();
}
