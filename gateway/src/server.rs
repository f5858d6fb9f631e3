//! Routing, the same for every protocol: CORS, body limits and timeouts, the collect endpoint,
//! static files. It turns requests into calls on [`Gateway`] and errors into status + JSON
//! reason. The listeners (`listen`) bring requests here from HTTP/1.1, HTTP/2 and HTTP/3.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use pulse_protocol::{ErrorBody, ErrorCode};

use crate::ingest::{ApiError, Gateway};
use crate::ratelimit::client_ip;
use crate::statics::{self, StaticError};

/// Every answer: a whole body.
pub type Resp = Response<Full<Bytes>>;

/// The protocol a request came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0), cleartext or TLS.
    Http1,
    /// HTTP/2, cleartext (prior knowledge) or TLS (ALPN).
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

impl Protocol {
    /// The label used in metrics: `http1`, `http2`, `http3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Http3 => "http3",
        }
    }

    /// The protocol of a request, from its version.
    pub fn of(version: Version) -> Self {
        match version {
            Version::HTTP_2 => Self::Http2,
            Version::HTTP_3 => Self::Http3,
            _ => Self::Http1,
        }
    }
}

/// What the listener knows of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's address (a proxy's, when the gateway sits behind one).
    pub peer: SocketAddr,
}

/// Answers one request, whatever protocol it came over.
pub async fn handle<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let protocol = Protocol::of(req.version());
    let resp = route(gw, req, conn).await;
    gw.metrics.request(protocol, resp.status().as_u16());
    resp
}

async fn route<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/v1/collect") => collect(gw, req, conn).await,
        (&Method::OPTIONS, "/v1/collect") => preflight(gw, req.headers()),
        (_, "/v1/collect") => error(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "use POST"),
            None,
        ),
        (&Method::GET, "/healthz") => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
            None,
        ),
        (&Method::GET | &Method::HEAD, _) => static_file(gw, &path).await,
        _ => error(
            gw,
            &ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed"),
            None,
        ),
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

async fn collect<B>(gw: &Gateway, req: Request<B>, conn: ConnInfo) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let headers = req.headers();
    let origin = header_str(headers, header::ORIGIN);
    let client = client_ip(
        conn.peer.ip(),
        header_str(headers, header::FORWARDED),
        header_str(headers, "x-forwarded-for"),
        &gw.config.server.trusted_proxies,
    );
    if let Err(limited) = gw.limiter.check_request(client) {
        gw.metrics.rate_limited(limited.limit);
        // The origin is not checked yet; echo it only if some site allows it, so the page can
        // read the reason.
        let host = header_str(headers, header::HOST);
        let cors = origin.filter(|o| gw.preflight_allowed(o, host));
        return error(gw, &ApiError::limited(limited), cors);
    }
    let host = header_str(headers, header::HOST);
    let key = query_param(req.uri().query(), "k");
    let admitted = match gw.admit(key, origin, host) {
        Ok(a) => a,
        // Refused before the body is read: nothing is stored and no decision is given. The
        // origin is echoed so that the page can read the reason (the tracker logs it and stops
        // resending) instead of seeing an opaque CORS failure that it would retry forever.
        Err(e) => return error(gw, &e, origin),
    };
    let cors = admitted.origin.clone();
    let max = gw.config.limits.max_body_bytes;
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let e = ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body is larger than {max} bytes"),
        );
        return error(gw, &e, cors.as_deref());
    }
    let encoding = header_str(headers, header::CONTENT_ENCODING).map(str::to_owned);
    let body = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(gw.config.limits.body_timeout_ms.get(), body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let e = ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the body is larger than {max} bytes"),
            );
            return error(gw, &e, cors.as_deref());
        }
        Ok(Err(_)) => {
            let e = ApiError::new(ErrorCode::InvalidBatch, "the body could not be read");
            return error(gw, &e, cors.as_deref());
        }
        Err(_) => {
            let e = ApiError::new(ErrorCode::RequestTimeout, "the body did not arrive in time");
            return error(gw, &e, cors.as_deref());
        }
    };
    if let Err(limited) = gw.limiter.check_bytes(&admitted.key, body.len()) {
        gw.metrics.rate_limited(limited.limit);
        return error(gw, &ApiError::limited(limited), cors.as_deref());
    }
    match gw.ingest(&admitted.key, &body, encoding.as_deref()).await {
        Ok(answer) => match serde_json::to_vec(&answer) {
            Ok(bytes) => json(StatusCode::OK, Bytes::from(bytes), cors.as_deref()),
            Err(_) => error(
                gw,
                &ApiError::new(ErrorCode::Internal, "internal error"),
                cors.as_deref(),
            ),
        },
        Err(e) => error(gw, &e, cors.as_deref()),
    }
}

fn preflight(gw: &Gateway, headers: &HeaderMap) -> Resp {
    let host = header_str(headers, header::HOST);
    let Some(origin) =
        header_str(headers, header::ORIGIN).filter(|o| gw.preflight_allowed(o, host))
    else {
        return error(
            gw,
            &ApiError::new(
                ErrorCode::OriginNotAllowed,
                "this origin may not send events",
            ),
            None,
        );
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    cors_headers(h, Some(origin));
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

fn cors_headers(h: &mut HeaderMap, origin: Option<&str>) {
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        // The page may also read the request's timing (its RUM can see collect's latency).
        h.insert("timing-allow-origin", value.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
}

fn json(status: StatusCode, body: Bytes, origin: Option<&str>) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors_headers(h, origin);
    resp
}

/// The one place errors become answers: status from the code, JSON reason, `Retry-After`.
fn error(gw: &Gateway, e: &ApiError, origin: Option<&str>) -> Resp {
    gw.metrics.error(e.code);
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = ErrorBody::new(e.code, e.message.clone());
    answer.error.limit = e.limit.map(str::to_owned);
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let mut resp = json(status, Bytes::from(body), origin);
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
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
            error(gw, &e, None)
        }
        Err(StaticError::NotFound) => error(
            gw,
            &ApiError::new(ErrorCode::NotFound, "no such page"),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("k=demo&x=1"), "k"), Some("demo"));
        assert_eq!(query_param(Some("x=1&k="), "k"), Some(""));
        assert_eq!(query_param(Some("kk=1"), "k"), None);
        assert_eq!(query_param(None, "k"), None);
    }
}
