//! The public routes, the same for every protocol: the collect endpoint (per-address limits,
//! admission, CORS, body cap and deadline, per-site byte limit, then the ingest path), its
//! preflight, the health check and static files. Errors become answers through
//! [`pulse_http::error`], the one mapping, after being counted here.

use std::time::Instant;

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
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/collect") => {
            let started = Instant::now();
            let resp = collect(gw, req, conn).await;
            gw.metrics.request_latency.observe(started.elapsed());
            resp
        }
        (&Method::OPTIONS, "/v1/collect") => preflight(gw, req.headers()),
        (_, "/v1/collect") => refuse(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "use POST"),
            None,
        ),
        (&Method::GET, "/healthz") => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
            None,
        ),
        (&Method::GET | &Method::HEAD, path) => {
            let path = path.to_owned();
            static_file(gw, &path).await
        }
        _ => refuse(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed"),
            None,
        ),
    }
}

/// Counts a refusal and answers it.
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
    let client = client_ip(
        conn.peer.ip(),
        header_str(headers, header::FORWARDED),
        header_str(headers, "x-forwarded-for"),
        &gw.config.server.trusted_proxies,
    );
    let sites = control.sites();
    if let Err(limited) = control.limiter.check_request(client) {
        gw.metrics.rate_limited(limited.limit);
        // The origin is not checked yet; echo it only if some site allows it, so the page can
        // read the reason.
        let cors = origin.filter(|o| sites.any_allows(o));
        let e = ApiError::rate_limited(limited.limit, limited.retry_after);
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

/// What rules may read of the request: the device class from `User-Agent`, and the country
/// from the header the operator names (two letters, as CDNs send it; anything else is unknown).
fn scorer_request(headers: &HeaderMap, country_header: Option<&str>) -> pulse_scorer::Request {
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

async fn static_file(gw: &Gateway, path: &str) -> Resp {
    let server = &gw.config.server;
    match statics::load(&server.tracker_dir, server.site_dir.as_deref(), path).await {
        Ok(file) => {
            let mut resp = Response::new(Full::new(Bytes::from(file.body)));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(file.cache_control),
            );
            if file.cross_origin {
                // The tracker runs on publishers' pages, whose origins are not the gateway's:
                // the page's `fetch` of pulse_bg.wasm is a CORS request (no credentials), and a
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
                "the tracker is not built: run scripts/build-tracker.sh",
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
