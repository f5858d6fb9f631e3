//! The public routes, the same for every protocol: the collect endpoint (per-address limits,
//! admission, CORS, body cap and deadline, per-site byte limit, then the ingest path), its
//! preflight, the health check and static files. Errors become answers through
//! [`pulse_http::error`], the one mapping, after being counted here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use pulse_http::{ApiError, ConnInfo, Resp, header_str, json, query_param, shorten};
use pulse_protocol::ErrorCode;

use crate::gateway::Gateway;
use crate::ratelimit::client_ip;
use crate::statics::{self, StaticError};

/// The status a request is counted under when its client went away before its body arrived
/// (nginx's "client closed request").
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Answers one public request.
pub(crate) async fn route<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if gw.tier().is_some() && req.uri().path().starts_with("/v1/") {
        let e = ApiError::new(
            ErrorCode::NotFound,
            "this instance is a scorer (cluster.role): send pages to a gateway",
        );
        return refuse(gw, &e, None);
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/collect") => collect(gw, req, conn).await,
        (&Method::OPTIONS, "/v1/collect") => preflight(gw, req.headers()),
        (&Method::POST, path) if crate::segment::path_type(path).is_some() => {
            let single = crate::segment::path_type(path).flatten();
            crate::segment::handle(gw, req, conn, single).await
        }
        (_, "/v1/collect") => refuse(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "use POST"),
            None,
        ),
        (&Method::POST, "/v1/decide") => {
            gw.metrics.server_decision();
            server_decide(gw, req, conn).await
        }
        (_, "/v1/decide") => refuse(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "use POST"),
            None,
        ),
        (&Method::GET, "/v1/keys") => match gw.ingest().signer() {
            Some(signer) => json(
                StatusCode::OK,
                Bytes::from(signer.jwks().to_string()),
                Some("*"),
            ),
            None => refuse(
                gw,
                &ApiError::new(ErrorCode::NotFound, "this gateway signs no decisions"),
                None,
            ),
        },
        (&Method::GET, path) if path.starts_with(DICTIONARY_PATH) => {
            dictionary(gw, path, req.uri().query())
        }
        (&Method::GET, "/healthz") => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
            None,
        ),
        (&Method::GET, "/readyz") => match gw.readiness() {
            Ok(()) => json(
                StatusCode::OK,
                Bytes::from_static(b"{\"status\":\"ready\"}"),
                None,
            ),
            Err(reasons) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(
                    serde_json::json!({"status": "not_ready", "reasons": reasons}).to_string(),
                ),
                None,
            ),
        },
        (&Method::GET | &Method::HEAD, path) => {
            // Owned, so that the request (its body) need not be Sync across the await.
            let (path, headers) = (path.to_owned(), req.headers().clone());
            static_file(gw, &path, &headers).await
        }
        _ => refuse(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed"),
            None,
        ),
    }
}

/// The largest body of `POST /v1/decide`.
const MAX_DECIDE_BODY: usize = 16 * 1024;

/// `POST /v1/decide`: what a publisher's server sends to decide before it renders a page.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    /// The reader's anonymous id (the tracker's, from its cookie or `localStorage`).
    reader: String,
    /// The user id, on sites without token keys (with keys, only `auth` vouches for one).
    #[serde(default)]
    user_id: Option<String>,
    /// The reader's token signed by the publisher (as given to `identify`).
    #[serde(default)]
    auth: Option<String>,
    /// The page about to be shown.
    page: DecidePage,
    /// `mobile`, `tablet` or `desktop`; or the reader's User-Agent as `user_agent`.
    #[serde(default)]
    device: Option<String>,
    /// The reader's User-Agent (for the device class).
    #[serde(default)]
    user_agent: Option<String>,
    /// The reader's country (two letters).
    #[serde(default)]
    country: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecidePage {
    url: String,
    #[serde(default)]
    referrer: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    section: Option<String>,
}

/// `POST /v1/decide?k=KEY` with `Authorization: Bearer <the site's server_secret>`: the
/// decision for a reader on a page the publisher's server is about to render, signed, as if
/// the page view had happened (it is not recorded: the tracker's own event is, when the page
/// is shown).
async fn server_decide<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let control = gw.control();
    let headers = req.headers();
    if let Err(e) = limit_client(gw, headers, &conn) {
        return refuse(gw, &e, None);
    }
    let Some(key) = query_param(req.uri().query(), "k").filter(|k| !k.is_empty()) else {
        let e = ApiError::new(ErrorCode::MissingSiteKey, "send the site key as ?k=<key>");
        return refuse(gw, &e, None);
    };
    let Some((site, trust)) = control.sites().trust(key) else {
        let e = ApiError::new(
            ErrorCode::UnknownSiteKey,
            "the site key is not known to this gateway",
        );
        return refuse(gw, &e, None);
    };
    let Some(secret) = &trust.server_secret else {
        let e = ApiError::new(
            ErrorCode::Unauthorized,
            "this site has no server_secret: its server cannot ask for decisions",
        );
        return refuse(gw, &e, None);
    };
    let given = pulse_http::bearer(headers).unwrap_or_default();
    if !crate::admin::same_secret(given.as_bytes(), secret.as_bytes()) {
        let e = ApiError::new(
            ErrorCode::Unauthorized,
            "send Authorization: Bearer <the site's server_secret>",
        );
        return refuse(gw, &e, None);
    }
    let body = Limited::new(req.into_body(), MAX_DECIDE_BODY).collect();
    let body = match tokio::time::timeout(gw.config.limits.body_timeout_ms.get(), body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            let e = ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the body is larger than {MAX_DECIDE_BODY} bytes"),
            );
            return refuse(gw, &e, None);
        }
        Err(_) => {
            let e = ApiError::new(ErrorCode::RequestTimeout, "the body did not arrive in time");
            return refuse(gw, &e, None);
        }
    };
    let asked: DecideRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            let e = ApiError::new(ErrorCode::InvalidRequest, format!("the body: {e}"));
            return refuse(gw, &e, None);
        }
    };
    let now = crate::ingest::now_ms();
    let (reader, request, auth) = match server_reader(&asked, &trust, now) {
        Ok(r) => r,
        Err(message) => {
            return refuse(gw, &ApiError::new(ErrorCode::InvalidRequest, message), None);
        }
    };
    let mut props = serde_json::Map::new();
    for (name, value) in [
        ("content_type", &asked.page.content_type),
        ("section", &asked.page.section),
    ] {
        if let Some(v) = value {
            props.insert(name.to_owned(), serde_json::Value::String(v.clone()));
        }
    }
    let mut id = [0u8; 16];
    let _ = getrandom::fill(&mut id);
    let view = pulse_protocol::Event {
        id: pulse_protocol::EventId(u128::from_be_bytes(id)),
        ts: now,
        kind: pulse_protocol::EventType::PageView,
        name: None,
        page: pulse_protocol::PageContext {
            url: asked.page.url.clone(),
            referrer: asked.page.referrer.clone(),
            title: String::new(),
        },
        props,
    };
    let remote = gw
        .decider()
        .peek_remote(&reader, &view, now, &request)
        .await;
    let decision = match remote {
        // A gateway of a split tier: the owner of the reader's state decided.
        Some(decision) => decision,
        None => local_peek(gw, &reader, view, now, request).await,
    };
    let signed = gw.ingest().signer().map(|signer| {
        let signed = signer.sign(&site, &reader, &decision, now / 1000);
        gw.metrics.signed(signed.reused);
        signed.token
    });
    let answer = serde_json::json!({
        "reader": reader,
        "decision": decision,
        "signed": signed,
        "auth": auth,
    });
    json(StatusCode::OK, Bytes::from(answer.to_string()), None)
}

/// A decision from the local engine's state without applying the page (the fallback past
/// the decision deadline).
async fn local_peek(
    gw: &Gateway,
    reader: &str,
    view: pulse_protocol::Event,
    now: u64,
    request: pulse_scorer::Request,
) -> pulse_protocol::Decision {
    let engine = std::sync::Arc::clone(gw.engine());
    let who = reader.to_owned();
    let task = tokio::task::spawn_blocking(move || engine.peek(&who, &view, now, &request));
    let decided = tokio::time::timeout(gw.config.limits.decision_deadline_ms.get(), task).await;
    match decided {
        Ok(Ok(Ok(scored))) => scored.decision,
        _ => gw.decider().fallback().decision,
    }
}

/// The reader key, the request's context and what became of the token, for a server's ask.
fn server_reader(
    asked: &DecideRequest,
    trust: &crate::admit::Trust,
    now: u64,
) -> Result<(String, pulse_scorer::Request, Option<String>), String> {
    if !pulse_protocol::is_token(&asked.reader) {
        return Err("reader must be the tracker's anonymous id (1 to 64 of [A-Za-z0-9_-])".into());
    }
    let page = &asked.page;
    if page.url.len() > pulse_protocol::MAX_URL_LEN
        || page.referrer.len() > pulse_protocol::MAX_URL_LEN
    {
        return Err(format!(
            "page.url and page.referrer are at most {} bytes",
            pulse_protocol::MAX_URL_LEN
        ));
    }
    if [&page.content_type, &page.section]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > 128))
    {
        return Err("page.content_type and page.section are at most 128 bytes".into());
    }
    let device = match (&asked.device, &asked.user_agent) {
        (Some(d), _) if matches!(d.as_str(), "mobile" | "tablet" | "desktop") => Some(d.clone()),
        (Some(d), _) => return Err(format!("device is mobile, tablet or desktop, not {d:?}")),
        (None, Some(ua)) => Some(pulse_scorer::Request::device_of(ua).to_owned()),
        (None, None) => None,
    };
    let country = match &asked.country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(c) => return Err(format!("country is two letters, not {c:?}")),
        None => None,
    };
    let mut request = pulse_scorer::Request {
        device,
        country,
        entitled: Vec::new(),
    };
    let mut reader = asked.reader.clone();
    let auth = match &trust.tokens {
        None => {
            if let Some(uid) = &asked.user_id {
                if uid.is_empty()
                    || uid.len() > pulse_protocol::MAX_USER_ID_LEN
                    || uid.chars().any(char::is_control)
                {
                    return Err("user_id must be 1 to 256 bytes without control characters".into());
                }
                reader = uid.clone();
            }
            None
        }
        Some(keys) => match &asked.auth {
            None if asked.user_id.is_some() => Some("token_missing".to_owned()),
            None => None,
            Some(token) => match keys.verify(token, now / 1000) {
                Ok(vouched) => {
                    if let Some(user) = vouched.user {
                        reader = user;
                    }
                    request.entitled = vouched.entitled;
                    Some("valid".to_owned())
                }
                Err(e) => Some(e.reason().to_owned()),
            },
        },
    };
    Ok((reader, request, auth))
}

/// Counts a refusal and answers it.
/// The global and per-address request limits for a request from `conn` (through the trusted
/// proxies' headers); the refusal is counted.
pub(crate) fn limit_client(
    gw: &Gateway,
    headers: &HeaderMap,
    conn: &ConnInfo,
) -> Result<(), ApiError> {
    let client = client_ip(
        conn.peer.ip(),
        header_str(headers, header::FORWARDED),
        header_str(headers, "x-forwarded-for"),
        &gw.config.server.trusted_proxies,
    );
    gw.control()
        .limiter
        .check_request(client)
        .map_err(|limited| {
            gw.metrics.rate_limited(limited.limit);
            ApiError::rate_limited(limited.limit, limited.retry_after)
        })
}

pub(crate) fn refuse(gw: &Gateway, e: &ApiError, origin: Option<&str>) -> Resp {
    gw.metrics.error(e.code);
    pulse_http::error(e, origin)
}

async fn collect<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let headers = req.headers();
    let origin = header_str(headers, header::ORIGIN);
    let control = gw.control();
    let sites = control.sites();
    if let Err(e) = limit_client(gw, headers, &conn) {
        // The origin is not checked yet; echo it only if some site allows it, so the page can
        // read the reason.
        let cors = origin.filter(|o| sites.any_allows(o));
        return refuse(gw, &e, cors);
    }
    let key = query_param(req.uri().query(), "k");
    let admitted = match sites.admit(key, origin) {
        Ok(a) => a,
        // Refused before the body is read: nothing is stored and no decision is given. The
        // origin is echoed so that the page can read the reason (the tracker logs it and stops
        // resending) instead of seeing an opaque CORS failure that it would retry forever.
        Err(code) => return refuse(gw, &admission_error(code, origin), origin),
    };
    drop(sites);
    let cors = admitted.origin.as_deref();
    let max = gw.config.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return refuse(gw, &too_large(), cors);
    }
    let encoding = header_str(headers, header::CONTENT_ENCODING).map(str::to_owned);
    let request = scorer_request(headers, gw.config.scorer.country_header.as_deref());
    let body = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(gw.config.limits.body_timeout_ms.get(), body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(gw, &too_large(), cors);
        }
        Ok(Err(_)) => {
            // The client closed the connection or reset the stream mid-body (an HTTP/2 or
            // HTTP/3 cancel): nobody reads an answer, and the batch was neither invalid nor
            // stored. Counted as 499, "client closed request" (as nginx does), not as an error.
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = client_closed();
            return resp;
        }
        Err(_) => {
            let e = ApiError::new(ErrorCode::RequestTimeout, "the body did not arrive in time");
            return refuse(gw, &e, cors);
        }
    };
    if let Err(limited) = control.limiter.check_bytes(&admitted.key, body.len()) {
        gw.metrics.rate_limited(limited.limit);
        let e = ApiError::rate_limited(limited.limit, limited.retry_after);
        return refuse(gw, &e, cors);
    }
    let ingested = gw
        .ingest()
        .ingest(
            &admitted.key,
            &body,
            encoding.as_deref(),
            &control.limiter,
            &admitted.trust,
            request,
        )
        .await;
    match ingested {
        Ok(answer) => match serde_json::to_vec(&answer) {
            Ok(bytes) => json(StatusCode::OK, Bytes::from(bytes), cors),
            Err(_) => refuse(
                gw,
                &ApiError::new(ErrorCode::Internal, "internal error"),
                cors,
            ),
        },
        Err(e) => refuse(gw, &e, cors),
    }
}

/// Where a site's dictionaries are served: `/v1/dictionary/<hash>?k=KEY`.
const DICTIONARY_PATH: &str = "/v1/dictionary/";

/// A site's dictionary for compact bodies, named by its hash: public (it holds only what many
/// readers sent), the same forever (cached for a year), readable by any page.
fn dictionary(gw: &Gateway, path: &str, query: Option<&str>) -> Resp {
    let site = query_param(query, "k").unwrap_or_default();
    let found = path
        .strip_prefix(DICTIONARY_PATH)
        .and_then(crate::dictionary::parse_hash)
        .and_then(|hash| gw.control().dictionaries.get(site, hash));
    let Some(bytes) = found else {
        let e = ApiError::new(ErrorCode::NotFound, "no such dictionary for this site key");
        return refuse(gw, &e, Some("*"));
    };
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&bytes)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// What rules may read of the request: the device class from `User-Agent`, and the country
/// from the header the operator names (two letters, as CDNs send it; anything else is unknown).
pub(crate) fn scorer_request(
    headers: &HeaderMap,
    country_header: Option<&str>,
) -> pulse_scorer::Request {
    let device = header_str(headers, header::USER_AGENT)
        .map(|ua| pulse_scorer::Request::device_of(ua).to_owned());
    let country = country_header
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase);
    pulse_scorer::Request {
        device,
        country,
        entitled: Vec::new(),
    }
}

/// The answer to a refused admission, with a message that says what to fix.
fn admission_error(code: ErrorCode, origin: Option<&str>) -> ApiError {
    let message = match (code, origin) {
        (ErrorCode::MissingSiteKey, _) => "the site key is missing: send it as ?k=<key>".into(),
        (ErrorCode::UnknownSiteKey, _) => "the site key is not known to this gateway".into(),
        (_, Some(origin)) => format!(
            "the origin {} is not among this site's origins",
            shorten(origin, 200)
        ),
        (_, None) => "this site requires an Origin header".to_owned(),
    };
    ApiError::new(code, message)
}

fn preflight(gw: &Gateway, headers: &HeaderMap) -> Resp {
    let sites = gw.control().sites();
    let Some(origin) = header_str(headers, header::ORIGIN).filter(|o| sites.any_allows(o)) else {
        let e = ApiError::new(
            ErrorCode::OriginNotAllowed,
            "this origin may not send events",
        );
        return refuse(gw, &e, None);
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    pulse_http::cors(h, Some(origin));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, content-encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn static_file(gw: &Gateway, path: &str, headers: &HeaderMap) -> Resp {
    let ask = statics::Ask {
        path,
        accept_encoding: header_str(headers, header::ACCEPT_ENCODING),
        if_none_match: header_str(headers, header::IF_NONE_MATCH),
    };
    let site_dir = gw.config.server.site_dir.as_deref();
    match statics::load(gw.tracker(), site_dir, ask).await {
        Ok(file) => {
            let mut resp = Response::new(Full::new(file.body));
            if file.not_modified {
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
            }
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(file.cache_control),
            );
            if let Some(tag) = file.etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                h.insert(header::ETAG, tag);
            }
            if file.gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            if file.tracker {
                h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
                // The tracker runs on publishers' pages, whose origins are not the gateway's:
                // the page's `fetch` of the Wasm is a CORS request (no credentials), and a
                // page isolated with COEP may only embed resources that opt in with CORP.
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                h.insert(
                    "cross-origin-resource-policy",
                    HeaderValue::from_static("cross-origin"),
                );
                h.insert("timing-allow-origin", HeaderValue::from_static("*"));
            }
            resp
        }
        Err(StaticError::TrackerMissing) => {
            let e = ApiError::new(
                ErrorCode::NotFound,
                "the tracker is not built in server.tracker_dir: run scripts/build-tracker.sh",
            );
            refuse(gw, &e, None)
        }
        Err(StaticError::TrackerNotEmbedded) => {
            let e = ApiError::new(
                ErrorCode::NotFound,
                "the tracker is not built into this gateway: run scripts/build-tracker.sh, then build the gateway again (or set server.tracker_dir)",
            );
            refuse(gw, &e, None)
        }
        Err(StaticError::NotFound) => refuse(
            gw,
            &ApiError::new(ErrorCode::NotFound, "no such page"),
            None,
        ),
    }
}
