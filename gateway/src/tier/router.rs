//! A gateway's side of the split tier: finds the scorer that owns a reader's partition (from
//! the claims on the control topic) and asks it for the decision over HTTP/1.1, on connections
//! kept open per scorer. A scorer that refuses (not the owner, still restoring) or cannot be
//! reached is tried again, or the next claimant, every [`RETRY`] until the deadline.
//!
//! IO boundary: the requests to scorers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use pulse_scorer::partition_of;

use super::{Owners, READER_PATH, SCORE_PATH, ScoreCall, ScoreReply};
use crate::cluster::LIVE_FOR;
use crate::ingest::now_ms;

/// Pause between two rounds of asking.
const RETRY: Duration = Duration::from_millis(20);
/// Idle connections kept per scorer.
const POOL: usize = 64;

/// Routes batches to their scorers.
pub(crate) struct Router {
    owners: Arc<Owners>,
    partitions: u16,
    auth: HeaderValue,
    pool: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Routes by `owners`, readers spread over `partitions`, presenting `token`.
    pub(crate) fn new(owners: Arc<Owners>, partitions: u16, token: &str) -> Result<Self, String> {
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "cluster.token: not a valid header value".to_owned())?;
        Ok(Self {
            owners,
            partitions,
            auth,
            pool: Mutex::new(HashMap::new()),
        })
    }

    /// The owner's answer for `call`, or `None` when no owner answered before `deadline`.
    pub(crate) async fn score(&self, call: &ScoreCall, deadline: Instant) -> Option<ScoreReply> {
        let body = Bytes::from(serde_json::to_vec(call).ok()?);
        let answer = self.ask(&call.reader, SCORE_PATH, body, deadline).await?;
        match serde_json::from_slice(&answer) {
            Ok(reply) => Some(reply),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable answer of a scorer");
                None
            }
        }
    }

    /// What the owner keeps of `reader` (`GET /admin/readers/<id>` on a gateway): `Ok(None)`
    /// when it keeps nothing, `Err` when no owner answered before `deadline`.
    pub(crate) async fn explain(
        &self,
        reader: &str,
        deadline: Instant,
    ) -> Result<Option<serde_json::Value>, ()> {
        let call = serde_json::json!({ "reader": reader, "now": now_ms() });
        let body = Bytes::from(call.to_string());
        let answer = self
            .ask(reader, READER_PATH, body, deadline)
            .await
            .ok_or(())?;
        serde_json::from_slice(&answer).map_err(|_| ())
    }

    /// POSTs `body` to `path` on the scorer owning `reader`'s partition, asking again (or the
    /// next claimant) until one answers 200: its body.
    async fn ask(&self, reader: &str, path: &str, body: Bytes, deadline: Instant) -> Option<Bytes> {
        let p = partition_of(reader, self.partitions);
        let live = LIVE_FOR.as_millis() as u64;
        loop {
            for addr in self.owners.of(p, now_ms(), live) {
                let asked =
                    tokio::time::timeout_at(deadline.into(), self.post(&addr, path, body.clone()));
                match asked.await {
                    Err(_) => return None,
                    Ok(Ok((200, answer))) => return Some(answer),
                    Ok(Ok((status, answer))) => tracing::debug!(
                        scorer = %addr,
                        status,
                        answer = %String::from_utf8_lossy(&answer),
                        "the scorer did not answer"
                    ),
                    Ok(Err(e)) => tracing::debug!(scorer = %addr, error = %e, "scorer unreachable"),
                }
            }
            if Instant::now() + RETRY >= deadline {
                return None;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One request on a kept connection (a fresh one when none is idle, or when the kept one
    /// turns out closed).
    async fn post(&self, addr: &str, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
        let kept = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(addr).and_then(Vec::pop));
        let sender = match kept {
            Some(mut s) if !s.is_closed() => match s.ready().await {
                Ok(()) => s,
                Err(_) => connect(addr).await?,
            },
            _ => connect(addr).await?,
        };
        self.post_on(sender, addr, path, body).await
    }

    async fn post_on(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        addr: &str,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let req = hyper::Request::post(path)
            .header(HOST, addr)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let answer = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if let Ok(mut pool) = self.pool.lock() {
            let idle = pool.entry(addr.to_owned()).or_default();
            if idle.len() < POOL {
                idle.push(sender);
            }
        }
        Ok((status, answer))
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
