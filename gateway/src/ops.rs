//! The operations page on the admin listener: static files built into the binary (the page,
//! its script and style, and uPlot, the charting library, vendored; nothing is fetched at run
//! time). The page itself holds no data and needs no token; everything it shows comes from the
//! admin API with the token the operator typed into its login form (kept in the browser
//! session), so a page without the token shows nothing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use pulse_http::Resp;

/// The page's files: `(path, content type, bytes)`.
const FILES: [(&str, &str, &[u8]); 6] = [
    (
        "/ops/",
        "text/html; charset=utf-8",
        include_bytes!("../assets/ops/index.html"),
    ),
    (
        "/ops/ops.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/ops/ops.js"),
    ),
    (
        "/ops/ops.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/ops/ops.css"),
    ),
    (
        "/ops/uplot.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/ops/uplot.js"),
    ),
    (
        "/ops/uplot.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/ops/uplot.css"),
    ),
    (
        "/ops/favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/ops/favicon.svg"),
    ),
];

/// Only the page's own files, scripts and styles, and requests to this listener.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The answer for `path` under `/ops`, if it is one of the page's files.
pub(crate) fn file(path: &str) -> Option<Resp> {
    if path == "/ops" {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ops/"));
        return Some(resp);
    }
    let (_, content_type, body) = FILES.iter().find(|(p, _, _)| *p == path)?;
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_parts_are_served_with_a_strict_policy() {
        for (path, kind) in [
            ("/ops/", "text/html"),
            ("/ops/ops.js", "text/javascript"),
            ("/ops/uplot.css", "text/css"),
        ] {
            let resp = file(path).unwrap();
            assert_eq!(resp.status(), 200);
            let h = resp.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
        }
        assert_eq!(file("/ops").unwrap().status(), 308);
        assert!(file("/ops/../pulse.toml").is_none());
        assert!(file("/ops/missing.js").is_none());
    }
}
