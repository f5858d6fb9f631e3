//! The scorer's endpoints for gateways: `POST /internal/v1/reader` (what it keeps of a reader)
//! and `POST /internal/v1/score` on its admin listener, with
//! `Authorization: Bearer <cluster.token>` and a [`ScoreCall`] as JSON. Answers 200 with a
//! [`super::ScoreReply`]; 409 `not_owner` when another scorer owns the reader's partition, 503
//! `restoring` while this one brings it up to date, 503 `behind` while earlier events of the
//! partition are neither applied nor asked for (the gateway asks again, or elsewhere);
//! 401, 404 (not a scorer), 405, 413 and 400 for what is wrong with the request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use hyper::{Method, Request, StatusCode};
use pulse_http::Resp;

use super::Refusal;
use super::ScoreCall;
use super::owner::Tier;

/// The largest call: a batch's events with their props, as JSON.
const MAX_CALL_BYTES: usize = 4 << 20;
/// Time to read a call's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

fn answer(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    pulse_http::json(status, Bytes::from(body.to_string()), None)
}

/// What this scorer keeps of a reader whose partition it answers for.
async fn explain(tier: &Arc<Tier>, body: &[u8]) -> Resp {
    #[derive(serde::Deserialize)]
    struct Ask {
        reader: String,
        now: u64,
    }
    let ask: Ask = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let tier = Arc::clone(tier);
    match tokio::task::spawn_blocking(move || tier.explain(&ask.reader, ask.now)).await {
        Ok(Ok(value)) => pulse_http::json(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            None,
        ),
        Ok(Err(Refusal::NotOwner)) => answer(
            StatusCode::CONFLICT,
            "not_owner",
            "another scorer owns this reader's partition",
        ),
        Ok(Err(_)) | Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "restoring",
            "this scorer cannot read the reader now",
        ),
    }
}

/// Answers a gateway's call (`tier`: this process's scorer side, none unless a scorer).
pub(crate) async fn serve<B>(tier: Option<&Arc<Tier>>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(tier) = tier else {
        return answer(
            StatusCode::NOT_FOUND,
            "not_a_scorer",
            "this instance is not a scorer (cluster.role)",
        );
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| crate::admin::same_secret(g.as_bytes(), tier.token.as_bytes())) {
        return answer(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <cluster.token>",
        );
    }
    let path = req.uri().path().to_owned();
    if req.method() != Method::POST {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST a score call",
        );
    }
    let body = Limited::new(req.into_body(), MAX_CALL_BYTES).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "a score call is at most 4 MiB",
            );
        }
        Err(_) => {
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body took too long",
            );
        }
    };
    if path == super::READER_PATH {
        return explain(tier, &body).await;
    }
    let call: ScoreCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let tier = Arc::clone(tier);
    let scored = tokio::task::spawn_blocking(move || tier.score(&call)).await;
    match scored {
        Ok(Ok(reply)) => pulse_http::json(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&reply).unwrap_or_default()),
            None,
        ),
        Ok(Err(Refusal::NotOwner)) => answer(
            StatusCode::CONFLICT,
            "not_owner",
            "another scorer owns this reader's partition",
        ),
        Ok(Err(Refusal::Restoring)) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "restoring",
            "this scorer is bringing the reader's partition up to date",
        ),
        Ok(Err(Refusal::Behind)) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "behind",
            "earlier events of the reader's partition are not applied yet",
        ),
        Ok(Err(Refusal::Failed(e))) => {
            tracing::error!(error = %e, "scorer failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "scorer_failed",
                "the scorer failed; see its log",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "scorer task failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "scorer_failed",
                "the scorer failed; see its log",
            )
        }
    }
}
