//! A Segment-compatible door: sites already instrumented with Segment's libraries send to Pulse
//! by pointing them at the gateway. `POST /v1/batch` (what Segment's server libraries send) and
//! the single-message `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/group`,
//! `/v1/alias` take Segment's Tracking API payloads, authenticated as Segment does: the write
//! key is the site key, as the user of HTTP Basic auth (or `writeKey` in the body). A server
//! library may use `KEY:SERVER_SECRET` as its write key: with the site's `server_secret` as the
//! password, the sender is the publisher's server and its `userId`s count as sent; otherwise the
//! site's rules apply (on a site with token keys, messages count under their anonymous id).
//!
//! Each message becomes a Pulse event and goes down the same path as the tracker's batches
//! (admission, checks, the durable append, the decision), in batches of one reader each:
//! - `track` → `custom`, its `event` as the name (characters a Pulse name cannot hold become
//!   `_`: `Article Viewed` → `Article_Viewed`), `properties` as props;
//! - `page` and `screen` → `page_view`: the URL from `properties.url` or `context.page.url`
//!   (a screen's is `app://screen/NAME`), the title, the referrer, `properties` as props;
//! - `identify` → `identify` with `traits` as props; `group` and `alias` → `custom` events
//!   named `segment.group` and `segment.alias` (kept, so nothing is dropped unseen);
//! - the reader is `userId` when given, else `anonymousId`; the event id is the `messageId`
//!   (a UUID as is, any other string hashed), so Segment's retries count once;
//! - times: `timestamp` corrected by the client's skew (`sentAt` against the gateway's clock),
//!   as the tracker's are.
//!
//! Limits are Segment's: a message of at most 32 KB, a request of at most 500 KB. The answer is
//! Segment's `{"success": true}`; a refused request gets Pulse's error answer with its status
//! (429 and 503 make Segment's libraries retry).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use pulse_http::{ApiError, ConnInfo, Resp, header_str, json};
use pulse_protocol::{ErrorCode, MAX_EVENTS_PER_BATCH};
use serde_json::{Map, Value, json};

use crate::gateway::Gateway;

/// Segment's largest request.
pub(crate) const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Segment's largest message.
const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The paths of the door, with the message type a single-message path implies.
pub(crate) fn path_type(path: &str) -> Option<Option<&'static str>> {
    Some(match path {
        "/v1/batch" => None,
        "/v1/track" => Some("track"),
        "/v1/page" => Some("page"),
        "/v1/screen" => Some("screen"),
        "/v1/identify" => Some("identify"),
        "/v1/group" => Some("group"),
        "/v1/alias" => Some("alias"),
        _ => return None,
    })
}

/// The write key and password of HTTP Basic auth. Segment's libraries send the write key as
/// the user and no password; a write key of `KEY:SERVER_SECRET` arrives as `KEY` with the
/// password `SERVER_SECRET:` (the trailing colon Segment adds is dropped).
fn basic_auth(headers: &HeaderMap) -> Option<(String, Option<String>)> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = match text.split_once(':') {
        Some((u, p)) => (u, p.strip_suffix(':').unwrap_or(p)),
        None => (text.as_str(), ""),
    };
    (!user.is_empty()).then(|| {
        (
            user.to_owned(),
            (!password.is_empty()).then(|| password.to_owned()),
        )
    })
}

/// Answers one request to the door.
pub(crate) async fn handle<B>(
    gw: &Gateway,
    req: Request<B>,
    conn: ConnInfo,
    single: Option<&'static str>,
) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let refuse = |e: &ApiError| crate::routes::refuse(gw, e, None);
    let headers = req.headers();
    let control = gw.control();
    if let Err(e) = crate::routes::limit_client(gw, headers, &conn) {
        return refuse(&e);
    }
    if header_str(headers, header::CONTENT_ENCODING)
        .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return refuse(&ApiError::new(
            ErrorCode::UnsupportedEncoding,
            "send the Segment payload as plain JSON",
        ));
    }
    let origin = header_str(headers, header::ORIGIN).map(str::to_owned);
    let (auth_key, password) = basic_auth(headers).unzip();
    let password = password.flatten();
    let request =
        crate::routes::scorer_request(headers, gw.config.scorer.country_header.as_deref());
    let body = Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect();
    let body = match tokio::time::timeout(gw.config.limits.body_timeout_ms.get(), body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(&ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("a Segment request is at most {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        Ok(Err(_)) | Err(_) => {
            return refuse(&ApiError::new(
                ErrorCode::RequestTimeout,
                "the body did not arrive in time",
            ));
        }
    };
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return refuse(&ApiError::new(
                ErrorCode::InvalidBatch,
                "the body is not a JSON object",
            ));
        }
    };
    let key = auth_key.or_else(|| payload["writeKey"].as_str().map(str::to_owned));
    let sites = control.sites();
    let admitted = match sites.admit(key.as_deref(), origin.as_deref()) {
        Ok(a) => a,
        Err(code) => {
            return refuse(&ApiError::new(
                code,
                "send the site key as the write key (HTTP Basic auth user)",
            ));
        }
    };
    drop(sites);
    // A password must be the site's server secret: then the sender is the publisher's server,
    // and its userIds count as sent (as `POST /v1/decide` trusts it). Without one, the site's
    // own rules apply (with token keys, a userId counts only when a token vouches for it).
    let server = match (&password, &admitted.trust.server_secret) {
        (None, _) => false,
        (Some(p), Some(secret)) if crate::admin::same_secret(p.as_bytes(), secret.as_bytes()) => {
            true
        }
        (Some(_), _) => {
            return refuse(&ApiError::new(
                ErrorCode::Unauthorized,
                "the write key's password is not the site's server_secret",
            ));
        }
    };
    let server_trust = crate::admit::Trust {
        tokens: None,
        server_secret: None,
        sign: admitted.trust.sign,
    };
    let trust = if server {
        &server_trust
    } else {
        &*admitted.trust
    };
    if let Err(limited) = control.limiter.check_bytes(&admitted.key, body.len()) {
        gw.metrics.rate_limited(limited.limit);
        return refuse(&ApiError::rate_limited(limited.limit, limited.retry_after));
    }
    let now = crate::ingest::now_ms();
    let batches = match to_batches(&payload, single, &admitted.key, now) {
        Ok(b) => b,
        Err(e) => return refuse(&e),
    };
    for batch in batches {
        let Ok(bytes) = serde_json::to_vec(&batch) else {
            return refuse(&ApiError::new(ErrorCode::Internal, "internal error"));
        };
        if let Err(e) = gw
            .ingest()
            .ingest(
                &admitted.key,
                &bytes,
                None,
                &control.limiter,
                trust,
                request.clone(),
            )
            .await
        {
            // What went before is stored: a retry of the whole request counts it once.
            return refuse(&e);
        }
    }
    json(
        StatusCode::OK,
        Bytes::from_static(b"{\"success\":true}"),
        admitted.origin.as_deref(),
    )
}

/// The Pulse batches (as JSON) of a Segment payload: one reader each, in the order of the
/// readers' first messages, at most [`MAX_EVENTS_PER_BATCH`] events each.
fn to_batches(
    payload: &Value,
    single: Option<&'static str>,
    site: &str,
    now: u64,
) -> Result<Vec<Value>, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidBatch, m);
    let messages: Vec<&Value> = match single {
        Some(_) => vec![payload],
        None => payload["batch"]
            .as_array()
            .ok_or_else(|| invalid("a Segment batch is {\"batch\": [messages]}".into()))?
            .iter()
            .collect(),
    };
    if messages.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyBatch,
            "the batch has no messages",
        ));
    }
    let batch_sent_at = payload["sentAt"].as_str().and_then(rfc3339_ms);
    // Readers in order of first appearance, each with its events.
    let mut order: Vec<(Option<String>, String)> = Vec::new();
    let mut events: BTreeMap<(Option<String>, String), (u64, Vec<Value>)> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        let size = serde_json::to_vec(m).map_or(0, |v| v.len());
        if size > MAX_MESSAGE_BYTES {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("message {i} is {size} bytes; Segment's limit is {MAX_MESSAGE_BYTES}"),
            ));
        }
        let kind = single
            .or_else(|| m["type"].as_str())
            .ok_or_else(|| invalid(format!("message {i} has no type")))?;
        let user = id_text(&m["userId"]);
        let anon = id_text(&m["anonymousId"]);
        if user.is_none() && anon.is_none() {
            return Err(invalid(format!(
                "message {i} has neither userId nor anonymousId"
            )));
        }
        let anonymous_id = match &anon {
            Some(a) if is_pulse_id(a) => a.clone(),
            Some(a) => format!("seg-{}", hex128(a)),
            None => format!("seg-{}", hex128(user.as_deref().unwrap_or_default())),
        };
        let sent_at = m["sentAt"]
            .as_str()
            .and_then(rfc3339_ms)
            .or(batch_sent_at)
            .unwrap_or(now);
        let ts = m["timestamp"]
            .as_str()
            .and_then(rfc3339_ms)
            .unwrap_or(sent_at);
        let event = event_of(kind, m, ts).map_err(|e| invalid(format!("message {i}: {e}")))?;
        let reader = (user, anonymous_id);
        if !events.contains_key(&reader) {
            order.push(reader.clone());
        }
        let slot = events.entry(reader).or_insert((sent_at, Vec::new()));
        slot.0 = slot.0.max(sent_at);
        slot.1.push(event);
    }
    let mut out = Vec::new();
    for reader in order {
        let Some((sent_at, evs)) = events.remove(&reader) else {
            continue;
        };
        let (user, anonymous_id) = reader;
        for chunk in evs.chunks(MAX_EVENTS_PER_BATCH) {
            let mut header = json!({
                "v": 1,
                "site_key": site,
                "anonymous_id": anonymous_id,
                "session_id": "segment",
                "seq": 0,
                "sent_at": sent_at,
                "events": chunk,
            });
            if let Some(u) = &user {
                header["user_id"] = json!(u);
            }
            out.push(header);
        }
    }
    Ok(out)
}

/// One Pulse event of a Segment message.
fn event_of(kind: &str, m: &Value, ts: u64) -> Result<Value, String> {
    let id = m["messageId"].as_str().map_or_else(random_hex, |id| {
        let plain: String = id.chars().filter(|c| *c != '-').collect();
        if plain.len() == 32 && plain.bytes().all(|b| b.is_ascii_hexdigit()) {
            plain.to_ascii_lowercase()
        } else {
            hex128(id)
        }
    });
    let props = |v: &Value| match v {
        Value::Object(o) => Value::Object(o.clone()),
        _ => Value::Object(Map::new()),
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let page_ctx = &m["context"]["page"];
    let (kind, name, url, title, referrer, props) = match kind {
        "track" => {
            let event = m["event"].as_str().ok_or("a track has no event name")?;
            (
                "custom",
                Some(pulse_name(event)),
                text(&page_ctx["url"]),
                String::new(),
                String::new(),
                props(&m["properties"]),
            )
        }
        "page" | "screen" => {
            let p = &m["properties"];
            let name = m["name"].as_str().unwrap_or_default();
            let url = p["url"]
                .as_str()
                .or_else(|| page_ctx["url"].as_str())
                .map_or_else(
                    || {
                        format!(
                            "app://{kind}/{}",
                            pulse_name(if name.is_empty() { "unnamed" } else { name })
                        )
                    },
                    str::to_owned,
                );
            let title = p["title"]
                .as_str()
                .or_else(|| page_ctx["title"].as_str())
                .unwrap_or(name);
            let referrer = p["referrer"]
                .as_str()
                .or_else(|| page_ctx["referrer"].as_str())
                .unwrap_or_default();
            (
                "page_view",
                None,
                url,
                title.to_owned(),
                referrer.to_owned(),
                props(p),
            )
        }
        "identify" => (
            "identify",
            None,
            text(&page_ctx["url"]),
            String::new(),
            String::new(),
            props(&m["traits"]),
        ),
        "group" => (
            "custom",
            Some("segment.group".to_owned()),
            text(&page_ctx["url"]),
            String::new(),
            String::new(),
            {
                let mut p = props(&m["traits"]);
                if let (Value::Object(o), Some(g)) = (&mut p, id_text(&m["groupId"])) {
                    o.insert("group_id".into(), json!(g));
                }
                p
            },
        ),
        "alias" => (
            "custom",
            Some("segment.alias".to_owned()),
            String::new(),
            String::new(),
            String::new(),
            {
                let mut o = Map::new();
                if let Some(prev) = id_text(&m["previousId"]) {
                    o.insert("previous_id".into(), json!(prev));
                }
                Value::Object(o)
            },
        ),
        other => return Err(format!("unknown type {other:?}")),
    };
    let mut event = json!({
        "id": id,
        "ts": ts,
        "type": kind,
        "page": {"url": url, "title": title, "referrer": referrer},
        "props": props,
    });
    if let Some(name) = name {
        event["name"] = json!(name);
    }
    Ok(event)
}

/// A Segment id (a string, or a number some libraries send) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `s` may be a Pulse anonymous id (1–64 of `[A-Za-z0-9_-]`).
fn is_pulse_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A Pulse custom-event name (1–128 of `[A-Za-z0-9_.:-]`) from any text.
fn pulse_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() {
        "_".to_owned()
    } else {
        name
    }
}

/// 128 bits of `s` as 32 hex digits (two independent 64-bit hashes).
fn hex128(s: &str) -> String {
    let a = pulse_scorer::hash64(s.as_bytes());
    let b = pulse_scorer::hash64(format!("segment:{s}").as_bytes());
    format!("{a:016x}{b:016x}")
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-11-30T12:00:00.123Z`, or with an
/// offset), as Segment's libraries write them.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-11-30T12:00:00.123Z"),
            Some(1_796_040_000_123)
        );
        assert_eq!(
            rfc3339_ms("2026-11-30T13:00:00.123+01:00"),
            Some(1_796_040_000_123)
        );
        assert_eq!(
            rfc3339_ms("2024-02-29T00:00:00.5Z"),
            Some(1_709_164_800_500)
        );
        for bad in [
            "",
            "2026-11-30",
            "2026-13-01T00:00:00Z",
            "2026-11-30T12:00:00",
            "x026-11-30T12:00:00Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn messages_become_one_batch_per_reader() {
        let payload = json!({
            "sentAt": "2026-11-30T12:00:01.000Z",
            "batch": [
                {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "6f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "timestamp": "2026-11-30T12:00:00.000Z"},
                {"type": "track", "anonymousId": "anon 7", "event": "Article Viewed", "properties": {"section": "sport"}, "messageId": "m-2"},
                {"type": "page", "userId": "u1", "name": "Home", "properties": {"url": "https://news.example/a/1", "content_type": "article"}, "messageId": "m-3"},
                {"type": "alias", "userId": "u1", "previousId": "anon 7", "messageId": "m-4"}
            ]
        });
        let batches = to_batches(&payload, None, "demo", 0).unwrap();
        assert_eq!(batches.len(), 2);
        let u1 = &batches[0];
        assert_eq!(u1["user_id"], "u1");
        assert_eq!(u1["sent_at"], 1_796_040_001_000u64);
        let evs = u1["events"].as_array().unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(
            evs[0]["id"], "6f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b",
            "a UUID is the id"
        );
        assert_eq!(evs[0]["type"], "identify");
        assert_eq!(evs[0]["ts"], 1_796_040_000_000u64);
        assert_eq!(evs[1]["type"], "page_view");
        assert_eq!(evs[1]["page"]["url"], "https://news.example/a/1");
        assert_eq!(evs[1]["page"]["title"], "Home");
        assert_eq!(evs[2]["name"], "segment.alias");
        let anon = &batches[1];
        assert!(anon.get("user_id").is_none());
        assert!(
            anon["anonymous_id"].as_str().unwrap().starts_with("seg-"),
            "{anon}"
        );
        let track = &anon["events"][0];
        assert_eq!(track["name"], "Article_Viewed");
        assert_eq!(track["id"], hex128("m-2"), "the same message, the same id");
        assert_eq!(track["ts"], 1_796_040_001_000u64, "no timestamp: sentAt");
        // Refused as a whole: no reader, an unknown type, an empty batch.
        for bad in [
            json!({"batch": [{"type": "track", "event": "x"}]}),
            json!({"batch": [{"type": "nope", "userId": "u"}]}),
            json!({"batch": []}),
            json!({"nope": 1}),
        ] {
            assert!(to_batches(&bad, None, "demo", 0).is_err(), "{bad}");
        }
    }
}
