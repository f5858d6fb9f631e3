//! The admin listener: on its own address, every request needs `Authorization: Bearer <token>`.
//!
//! - `GET /admin/limits`: the rate limits in force, as JSON (the `[rate_limits]` shape).
//! - `PUT /admin/limits`: a whole or partial `[rate_limits]` object, merged onto the limits in
//!   force, checked, applied atomically to new requests and written back to the config file.
//!   A bad change is refused with 400 `invalid_config` and every reason; the old limits stay.
//! - `GET /metrics`: the Prometheus text exposition.
//!
//! SIGHUP (see the binary) re-reads the config file and applies the same way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pulse_protocol::{ErrorBody, ErrorCode};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::{Config, RateLimits};
use crate::ingest::Gateway;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The environment variable that overrides `server.admin_token`.
pub const TOKEN_ENV: &str = "PULSE_ADMIN_TOKEN";

/// Where a token came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `PULSE_ADMIN_TOKEN`.
    Env,
    /// `server.admin_token`.
    Config,
    /// A file under the data folder (generated on first start).
    File(PathBuf),
}

/// The file holding a generated token.
pub fn token_file(data: &Path) -> PathBuf {
    data.join("admin.token")
}

/// The admin token: `PULSE_ADMIN_TOKEN`, else `server.admin_token`, else `<data>/admin.token`,
/// generated (random, 256 bits, file mode 0600) when missing.
pub fn admin_token(config: &Config) -> std::io::Result<(String, TokenSource)> {
    if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok((token, TokenSource::Env));
    }
    if let Some(token) = config.server.admin_token.clone().filter(|t| !t.is_empty()) {
        return Ok((token, TokenSource::Config));
    }
    let path = token_file(&config.server.data);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok((token, TokenSource::File(path)));
        }
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(&config.server.data)?;
    write_private(&path, token.as_bytes())?;
    Ok((token, TokenSource::File(path)))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a successful `PUT /admin/limits`.
#[derive(Debug, Serialize)]
struct Applied<'a> {
    limits: &'a RateLimits,
    /// Whether the change was written back to the config file.
    persisted: bool,
    /// The file, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<String>,
}

/// Why a change of limits was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change does not parse or does not make sense; the old limits stay.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The change was valid but could not be written to the config file; nothing changed.
    #[error("cannot write the config file: {0}")]
    Persist(std::io::Error),
}

/// Merges `patch` (a JSON object, whole or partial `[rate_limits]`) onto `current`.
pub fn merge_limits(current: &RateLimits, patch: &[u8]) -> Result<RateLimits, ChangeError> {
    let patch: serde_json::Value = serde_json::from_slice(patch)
        .map_err(|e| ChangeError::Invalid(vec![format!("the body is not JSON: {e}")]))?;
    if !patch.is_object() {
        return Err(ChangeError::Invalid(vec![
            "the body must be a JSON object of rate limits".to_owned(),
        ]));
    }
    let mut merged =
        serde_json::to_value(current).map_err(|e| ChangeError::Invalid(vec![e.to_string()]))?;
    merge_json(&mut merged, patch);
    serde_json::from_value(merged).map_err(|e| ChangeError::Invalid(vec![e.to_string()]))
}

fn merge_json(into: &mut serde_json::Value, patch: serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(into), serde_json::Value::Object(patch)) => {
            for (k, v) in patch {
                match into.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Checks `limits`, writes them to the config file (when the gateway has one) and applies them.
/// Returns whether they were written. Nothing changes when anything fails.
pub fn apply_limits(gw: &Gateway, limits: &RateLimits) -> Result<bool, ChangeError> {
    let problems = limits.problems(gw.config.limits.max_body_bytes);
    if !problems.is_empty() {
        return Err(ChangeError::Invalid(problems));
    }
    let persisted = match &gw.config.path {
        Some(path) => {
            write_back(path, limits).map_err(ChangeError::Persist)?;
            true
        }
        None => false,
    };
    gw.limiter.replace(limits);
    tracing::info!(?limits, persisted, "rate limits changed");
    Ok(persisted)
}

/// Replaces the `[rate_limits]` table of the TOML file at `path`, keeping everything else
/// (comments included); written to a temporary file and renamed, so a crash leaves either file.
pub fn write_back(path: &Path, limits: &RateLimits) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| std::io::Error::other(e.to_string()))?;
    let mut table = toml_edit::Table::new();
    let rate = |r: crate::config::Rate| {
        let mut t = toml_edit::InlineTable::new();
        t.insert("per_second", i64::from(r.per_second).into());
        t.insert("burst", i64::from(r.burst).into());
        toml_edit::value(t)
    };
    table["ip_requests"] = rate(limits.ip_requests);
    table["site_events"] = rate(limits.site_events);
    table["site_bytes"] = rate(limits.site_bytes);
    table["global_requests"] = rate(limits.global_requests);
    table["max_keys"] = toml_edit::value(limits.max_keys as i64);
    match doc
        .get_mut("rate_limits")
        .and_then(|item| item.as_table_mut())
    {
        Some(existing) => {
            // Keep the table's position and its comments; replace the values.
            for (key, value) in table.iter() {
                existing[key] = value.clone();
            }
        }
        None => {
            doc["rate_limits"] = toml_edit::Item::Table(table);
        }
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(&tmp, path)
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(code: ErrorCode, message: impl Into<String>) -> Resp {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json(
        status,
        serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default(),
    );
    if code == ErrorCode::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pulse-admin\""),
        );
    }
    resp
}

async fn handle(gw: &Gateway, token: &str, req: Request<Incoming>) -> Resp {
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()));
    if !authorized {
        return error(
            ErrorCode::Unauthorized,
            "send Authorization: Bearer <admin token>",
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut text = gw.metrics.render();
            crate::metrics::render_scorer(&mut text, gw.engine());
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        (&Method::GET, "/admin/limits") => json(
            StatusCode::OK,
            serde_json::to_vec(&gw.limiter.limits()).unwrap_or_default(),
        ),
        (&Method::PUT, "/admin/limits") => {
            let body = Limited::new(req.into_body(), MAX_ADMIN_BODY).collect();
            let body = match tokio::time::timeout(Duration::from_secs(10), body).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => {
                    return error(ErrorCode::BodyTooLarge, "the body is too large or broken");
                }
                Err(_) => return error(ErrorCode::RequestTimeout, "the body did not arrive"),
            };
            let outcome = merge_limits(&gw.limiter.limits(), &body)
                .and_then(|l| Ok((apply_limits(gw, &l)?, l)));
            match outcome {
                Ok((persisted, limits)) => {
                    let answer = Applied {
                        limits: &limits,
                        persisted,
                        config: gw.config.path.as_ref().map(|p| p.display().to_string()),
                    };
                    json(
                        StatusCode::OK,
                        serde_json::to_vec(&answer).unwrap_or_default(),
                    )
                }
                Err(ChangeError::Invalid(problems)) => {
                    error(ErrorCode::InvalidConfig, problems.join("; "))
                }
                Err(e @ ChangeError::Persist(_)) => {
                    tracing::error!(error = %e, "limits not changed");
                    error(ErrorCode::Internal, e.to_string())
                }
            }
        }
        (&Method::GET, "/admin/bundle") => bundle(gw),
        (&Method::GET, path) if path.starts_with("/admin/readers/") => {
            reader(gw, &path["/admin/readers/".len()..]).await
        }
        (_, "/metrics" | "/admin/limits" | "/admin/bundle") => {
            error(ErrorCode::MethodNotAllowed, "method not allowed")
        }
        _ => error(ErrorCode::NotFound, "no such admin path"),
    }
}

/// `GET /admin/bundle`: the active bundle, its features and whether a rebuild runs.
fn bundle(gw: &Gateway) -> Resp {
    let Ok(b) = gw.engine().bundle() else {
        return error(ErrorCode::Internal, "the scorer is unavailable");
    };
    let features: Vec<serde_json::Value> = b
        .features
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "template": f.template,
                "window": f.window.map(|w| w.to_string()),
            })
        })
        .collect();
    let stats = gw.engine().stats();
    let answer = serde_json::json!({
        "id": b.id,
        "name": b.name,
        "feature_set": format!("{:016x}", b.feature_set),
        "features": features,
        "rebuilding": stats.rebuilding.load(std::sync::atomic::Ordering::Relaxed) == 1,
        "source": &*b.source,
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}

/// `GET /admin/readers/{id}`: one reader's features and the decision now.
async fn reader(gw: &Gateway, encoded: &str) -> Resp {
    let Some(id) = percent_decode(encoded).filter(|id| !id.is_empty() && id.len() <= 512) else {
        return error(ErrorCode::NotFound, "no such reader");
    };
    let engine = Arc::clone(gw.engine());
    let now = crate::ingest::now_ms();
    let found = tokio::task::spawn_blocking(move || engine.explain(&id, now)).await;
    match found {
        Ok(Ok(Some(value))) => json(
            StatusCode::OK,
            serde_json::to_vec(&value).unwrap_or_default(),
        ),
        Ok(Ok(None)) => error(
            ErrorCode::NotFound,
            "no such reader (or forgotten past its TTL)",
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reader lookup failed");
            error(ErrorCode::Internal, "the reader could not be read")
        }
        Err(_) => error(ErrorCode::Internal, "the reader could not be read"),
    }
}

/// Decodes `%XX` escapes; `None` when they are broken or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    token: String,
    shutdown: impl Future<Output = ()>,
) {
    let token: Arc<str> = token.into();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config.limits.header_read_timeout_ms.get());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let gw = Arc::clone(&gateway);
        let token = Arc::clone(&token);
        let service = hyper::service::service_fn(move |req| {
            let gw = Arc::clone(&gw);
            let token = Arc::clone(&token);
            async move { Ok::<_, std::convert::Infallible>(handle(&gw, &token, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    #[test]
    fn partial_changes_merge_and_unknown_keys_are_refused() {
        let current = RateLimits::default();
        let merged = merge_limits(&current, br#"{"ip_requests":{"per_second":7}}"#).unwrap();
        assert_eq!(merged.ip_requests, Rate::new(7, current.ip_requests.burst));
        assert_eq!(merged.site_events, current.site_events);
        for bad in [
            &b"[1]"[..],
            b"nope",
            br#"{"ip_requests":{"per_sec":1}}"#,
            br#"{"x":1}"#,
        ] {
            assert!(
                merge_limits(&current, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn write_back_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        let text = "# top comment\n[server]\nlisten = \"127.0.0.1:1\"\n\n[rate_limits]\n# keep me\nmax_keys = 5\n\n[[sites]]\nkey = \"a\"\n";
        std::fs::write(&path, text).unwrap();
        let limits = RateLimits {
            ip_requests: Rate::new(9, 99),
            ..RateLimits::default()
        };
        write_back(&path, &limits).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains("# top comment") && written.contains("# keep me"),
            "{written}"
        );
        let config = Config::parse(&written).unwrap();
        assert_eq!(config.rate_limits, limits);
        assert_eq!(config.sites[0].key, "a");
        // A file without the table gets one.
        std::fs::write(&path, "[server]\n").unwrap();
        write_back(&path, &limits).unwrap();
        let config = Config::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config.rate_limits, limits);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
