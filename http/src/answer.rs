//! What every listener shares about answers, the public ones and the admin one alike: the
//! protocol a request came over (the metrics label), the shape of an answer, the one mapping
//! from an error to its status, machine-readable code and `Retry-After`, and the CORS headers.
//! A leaf: it depends on nothing else in this crate.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode, Version};
use pulse_protocol::{BatchError, ErrorBody, ErrorCode, RateLimit};

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
    /// Every protocol, for metrics.
    pub const ALL: [Self; 3] = [Self::Http1, Self::Http2, Self::Http3];

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

/// Which listener a connection came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The public listeners: cleartext, TLS and QUIC.
    Public,
    /// The admin listener.
    Admin,
}

/// What the listener knows of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's address (a proxy's, when the server sits behind one).
    pub peer: SocketAddr,
    /// The listener.
    pub endpoint: Endpoint,
}

/// A refused request: its code (which fixes the status), a safe message, and for retryable
/// errors the seconds to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A message safe to show the client.
    pub message: Cow<'static, str>,
    /// `Retry-After` in seconds, for retryable errors.
    pub retry_after: Option<u32>,
    /// For `rate_limited`: the limit that refused the request.
    pub limit: Option<RateLimit>,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        let retry_after = code.is_retryable().then_some(1);
        Self {
            code,
            message: message.into(),
            retry_after,
            limit: None,
        }
    }

    /// A request refused by the rate limit `limit`; the same request passes after
    /// `retry_after`.
    pub fn rate_limited(limit: RateLimit, retry_after: Duration) -> Self {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u32;
        Self {
            code: ErrorCode::RateLimited,
            message: format!("rate limit {} exceeded; retry in {secs} s", limit.as_str()).into(),
            retry_after: Some(secs),
            limit: Some(limit),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let code = match &e {
            BatchError::Malformed(_) => ErrorCode::MalformedJson,
            BatchError::Invalid(_) => ErrorCode::InvalidBatch,
            BatchError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            BatchError::EventCount(0) => ErrorCode::EmptyBatch,
            BatchError::EventCount(_) => ErrorCode::TooManyEvents,
        };
        Self::new(code, e.to_string())
    }
}

/// A JSON answer, never cached, with CORS headers for `origin` when given.
pub fn json(status: StatusCode, body: Bytes, origin: Option<&str>) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors(h, origin);
    resp
}

/// The one place errors become answers: status from the code, `{"error":{…}}` body with the
/// code, the message and the limit, `Retry-After` for retryable ones, CORS for `origin`.
pub fn error(e: &ApiError, origin: Option<&str>) -> Resp {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = ErrorBody::new(e.code, e.message.clone());
    answer.error.limit = e.limit;
    // An error body (strings and an enum) always serializes.
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let mut resp = json(status, Bytes::from(body), origin);
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.code == ErrorCode::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pulse-admin\""),
        );
    }
    resp
}

/// The CORS headers of an answer to a page on `origin` (when it is allowed): it may read the
/// answer, its timing and `Retry-After`. Every answer varies by `Origin`.
pub fn cors(h: &mut HeaderMap, origin: Option<&str>) {
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

/// A header's value, when it is present and visible ASCII.
pub fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A query parameter's raw value.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is matched
/// case-insensitively (RFC 9110 §11.1), the token as given.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, header::AUTHORIZATION)?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// At most `max` bytes of `s`, cut at a character boundary (for echoing client input).
pub fn shorten(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            bearer(&h).map(str::to_owned)
        };
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "bEaReR t0k"] {
            assert_eq!(with(v).as_deref(), Some("t0k"), "{v}");
        }
        for v in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k"] {
            assert_eq!(with(v), None, "{v}");
        }
    }

    #[test]
    fn errors_carry_status_code_limit_and_retry_after() {
        let e = ApiError::rate_limited(RateLimit::SiteBytes, Duration::from_millis(1500));
        let resp = error(&e, Some("https://a.example"));
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        let unauthorized = error(&ApiError::new(ErrorCode::Unauthorized, "no"), None);
        assert!(
            unauthorized
                .headers()
                .contains_key(header::WWW_AUTHENTICATE)
        );
        assert!(!unauthorized.headers().contains_key(header::RETRY_AFTER));
    }
}
