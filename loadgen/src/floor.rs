//! The floor server: the least work any collect endpoint must do per request (read the body
//! with a cap, decode it (the tracker's compact body, zstd, gzip), parse it into the protocol types, answer a fixed decision), so
//! that the gateway's figures can be read as a ratio to it.
//!
//! [`floor_answer`] is the per-request work, free of IO; [`Floor`] puts it behind the gateway's
//! own listeners (HTTP/1.1, HTTP/2, TLS, HTTP/3), so transports cost the same on both sides.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use pulse_http::{ApiError, App, ConnInfo, Listeners, Protocol, Settings, decode, serve_all};
use pulse_protocol::{
    Action, CollectResponse, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DECODED_BYTES, Decision,
    ErrorBody, ErrorCode, parse_batch,
};
use tokio::net::TcpListener;

/// The decision the floor always gives.
fn fixed_decision() -> Decision {
    Decision::new(Action::Allow, "not_metered", "floor")
}

fn error_body(e: &ApiError) -> (u16, Bytes) {
    let body = serde_json::to_vec(&ErrorBody::new(e.code, e.message.clone())).unwrap_or_default();
    (e.code.status(), Bytes::from(body))
}

/// The floor's answer to a collect body: decode (compact, zstd, gzip or JSON, capped at
/// [`DEFAULT_MAX_DECODED_BYTES`]), parse and check the batch, and answer 200 with a
/// `CollectResponse` (every valid event accepted, a fixed `allow` decision), or the error status
/// and JSON body the gateway would give for the same fault.
pub fn floor_answer(body: &[u8]) -> (u16, Bytes) {
    thread_local! {
        /// This thread's decode buffer, reused (as the gateway reuses its own).
        static DECODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    if body.len() > DEFAULT_MAX_BODY_BYTES {
        return error_body(&ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body is larger than {DEFAULT_MAX_BODY_BYTES} bytes"),
        ));
    }
    DECODED.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => answer_decoded(body, &mut buf),
        Err(_) => answer_decoded(body, &mut Vec::new()),
    })
}

fn answer_decoded(body: &[u8], buf: &mut Vec<u8>) -> (u16, Bytes) {
    let decoded = match decode(
        body,
        None,
        DEFAULT_MAX_DECODED_BYTES,
        buf,
        pulse_protocol::compact::no_dictionary,
    ) {
        Ok(d) => d,
        Err(e) => return error_body(&ApiError::new(e.code(), e.to_string())),
    };
    let parsed = match parse_batch(decoded, crate::now_ms()) {
        Ok(p) => p,
        Err(e) => return error_body(&ApiError::from(e)),
    };
    let answer = CollectResponse {
        accepted: parsed.accepted.len() as u32,
        rejected: parsed.rejected.into_iter().map(|(r, _)| r).collect(),
        decision: fixed_decision(),
        signed: None,
        auth: None,
        dictionary: None,
    };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => (200, Bytes::from(bytes)),
        Err(_) => error_body(&ApiError::new(ErrorCode::Internal, "internal error")),
    }
}

fn respond(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The floor as an [`App`]: it runs behind the gateway's own listeners (cleartext HTTP/1.1 and
/// HTTP/2, TLS, HTTP/3), with the same limits and timeouts, so only the per-request work differs.
#[derive(Debug, Default)]
pub struct Floor;

impl App for Floor {
    async fn answer<B>(&self, req: Request<B>, _conn: ConnInfo) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/v1/collect") => {
                let body = Limited::new(req.into_body(), DEFAULT_MAX_BODY_BYTES).collect();
                let (status, body) = match body.await {
                    Ok(collected) => floor_answer(&collected.to_bytes()),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => error_body(
                        &ApiError::new(ErrorCode::BodyTooLarge, "the body is too large"),
                    ),
                    Err(_) => error_body(&ApiError::new(
                        ErrorCode::InvalidBatch,
                        "the body could not be read",
                    )),
                };
                respond(status, body)
            }
            (&Method::GET, "/healthz") => respond(200, Bytes::from_static(b"{\"status\":\"ok\"}")),
            _ => {
                let (status, body) =
                    error_body(&ApiError::new(ErrorCode::NotFound, "no such path"));
                respond(status, body)
            }
        }
    }

    fn count(&self, _protocol: Protocol, _path: &str, _status: u16) {}

    async fn close(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serves the floor on `listener` (HTTP/1.1 keep-alive, and HTTP/2 with prior knowledge) until
/// `shutdown` resolves, through the gateway's listener code with default limits.
pub async fn serve_floor(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let floor = Arc::new(Floor);
    serve_all(
        floor,
        Listeners::from_tcp(listener, Settings::default())?,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_sim::{Traffic, TrafficConfig};
    use pulse_tracker::{batch_json, encode_batch};

    #[test]
    fn answers_a_tracker_batch_with_every_event_accepted() {
        let mut traffic = Traffic::new(&TrafficConfig::default());
        let batch = traffic.next_batch(10, crate::now_ms());
        let (status, body) = floor_answer(&encode_batch(&batch));
        assert_eq!(status, 200);
        assert_eq!(crate::check_answer(status, &body, 10), Ok(10));
        // Plain JSON too.
        let (status, _) = floor_answer(&batch_json(&batch));
        assert_eq!(status, 200);
    }

    #[test]
    fn refuses_what_the_gateway_refuses() {
        let code = |body: &[u8]| {
            let (status, answer) = floor_answer(body);
            (
                status,
                crate::check_answer(status, &answer, 1).unwrap_err().reason,
            )
        };
        assert_eq!(code(b"hello"), (415, "unsupported_encoding".to_owned()));
        assert_eq!(code(b"{"), (400, "malformed_json".to_owned()));
        assert_eq!(code(br#"{"v":1}"#), (400, "invalid_batch".to_owned()));
        let big = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
        assert_eq!(code(&big), (413, "body_too_large".to_owned()));
    }
}
