//! The admin API, on the admin listener: every request needs `Authorization: Bearer <token>`
//! (the scheme in any case); `GET /metrics` also takes the read-only `server.metrics_token`.
//!
//! - `GET /admin/limits`: the rate limits in force, as JSON (the `[rate_limits]` shape).
//! - `PUT /admin/limits`: a whole or partial `[rate_limits]` object, merged onto the limits in
//!   force, checked, written to the config file (read back first) and applied by reloading it.
//!   A bad change is refused with 400 `invalid_config` and every reason; nothing changes.
//! - `POST /admin/reload`: re-reads the config file, as SIGHUP does (the same function).
//! - `GET /admin/bundle`: the bundle in force (id, features, model, rules, source), whether a
//!   rebuild runs, and the bundles activated before.
//! - `PUT /admin/bundle`: `{"bundle": TOML, "files": {NAME: TEXT}}` (the files it names, e.g. its
//!   model): checked (400 `invalid_config` with every problem; nothing changes), kept under
//!   `<data>/bundles/`, named in the config file, and put in force (at once, or after a rebuild
//!   of reader state when it changes the features).
//! - `POST /admin/bundle/rollback`: activates the bundle active before the current one.
//! - `GET /admin/readers/{id}`: one reader's feature values, what they are made of, and the
//!   decision the bundle makes now.
//! - `GET /admin/shadow`: the shadow bundle (if any) and how its decisions compared with the
//!   active one's, by pair of actions; `DELETE /admin/shadow` clears it (until a reload sets
//!   `[scorer] shadow` again).
//! - `GET /admin/export?log=events|dead_letters|decisions&from=N&limit=M`: the embedded logs'
//!   records as JSON lines, from a position, with the next position in `Pulse-Next-Position`
//!   (an online export and tail; no need to stop the gateway).
//! - `GET /metrics`: the Prometheus text exposition.
//!
//! In Kafka mode, a change of limits or of the bundle is then published on the control topic
//! (`crate::cluster`) so that every gateway applies it; the answer's `published` says whether
//! it got there (`{"ok": false, "error": ...}` when not: this gateway has it, the others not).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use pulse_http::{ApiError, Resp, bearer, json};
use pulse_protocol::ErrorCode;
use serde::Serialize;

use crate::config::RateLimits;
use crate::control::ChangeError;
use crate::gateway::Gateway;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Time for an admin request body to arrive.
const ADMIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Compares in time independent of where the strings differ.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a successful change or reload.
#[derive(Debug, Serialize)]
struct Changed<'a> {
    limits: &'a RateLimits,
    /// Whether the change was written to the config file.
    persisted: bool,
    /// The file, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<String>,
    /// Kafka mode: whether the change reached the control topic (so every gateway applies it).
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<Published>,
}

/// Whether a change reached the control topic, and why not.
#[derive(Debug, Serialize)]
struct Published {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Result<(), String>> for Published {
    fn from(r: Result<(), String>) -> Self {
        if let Err(e) = &r {
            tracing::error!(error = %e, "a change did not reach the control topic: other gateways do not have it");
        }
        Self {
            ok: r.is_ok(),
            error: r.err(),
        }
    }
}

/// Publishes the bundle now in force (its archive) on the control topic, in Kafka mode.
async fn publish_bundle(gw: &Gateway, archive: &std::path::Path) -> Option<Published> {
    let bus = gw.bus()?;
    let bytes = match tokio::fs::read(archive).await {
        Ok(b) => b,
        Err(e) => return Some(Err(format!("{}: {e}", archive.display())).into()),
    };
    Some(bus.publish_bundle(&bytes).await.into())
}

fn ok_json(value: &impl Serialize) -> Resp {
    // The answers here (limits, counts, strings) always serialize.
    json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        None,
    )
}

fn error(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Resp {
    pulse_http::error(&ApiError::new(code, message), None)
}

fn refused(e: &ChangeError) -> Resp {
    match e {
        ChangeError::Invalid(problems) => pulse_http::error(
            &ApiError::new(ErrorCode::InvalidConfig, problems.join("; ")),
            None,
        ),
        ChangeError::NoFile => pulse_http::error(
            &ApiError::new(
                ErrorCode::InvalidConfig,
                "the gateway runs without a config file",
            ),
            None,
        ),
        ChangeError::File(_) => {
            tracing::error!(error = %e, "configuration not changed");
            pulse_http::error(
                &ApiError::new(ErrorCode::Internal, "the config file could not be written"),
                None,
            )
        }
    }
}

/// Answers one admin request.
pub(crate) async fn handle<B>(gw: &Gateway, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(page) = crate::ops::file(req.uri().path()) {
        return page;
    }
    if crate::tier::is_internal(req.uri().path()) {
        return crate::tier::serve(gw.tier(), req).await;
    }
    let given = bearer(req.headers());
    let authorized =
        given.is_some_and(|given| same_secret(given.as_bytes(), gw.admin_token().as_bytes()));
    // The scrape credential reads the metrics and nothing else.
    let scraping = !authorized
        && req.method() == Method::GET
        && req.uri().path() == "/metrics"
        && given
            .zip(gw.config.server.metrics_token.as_deref())
            .is_some_and(|(given, token)| {
                !token.is_empty() && same_secret(given.as_bytes(), token.as_bytes())
            });
    if !authorized && !scraping {
        return pulse_http::error(
            &ApiError::new(
                ErrorCode::Unauthorized,
                "send Authorization: Bearer <admin token>",
            ),
            None,
        );
    }
    let control = gw.control();
    let file = || gw.config.path.as_ref().map(|p| p.display().to_string());
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let accept = req.headers().get(header::ACCEPT);
            let format = crate::Format::accepted(accept.and_then(|a| a.to_str().ok()));
            let text = gw.metrics.render(gw.scraped(), format);
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            resp
        }
        (&Method::GET, "/admin/limits") => ok_json(&control.limiter.limits()),
        (&Method::GET, "/admin/export") => export(gw, req.uri().query()).await,
        (&Method::GET, "/admin/dead_letters") => dead_letters(gw, req.uri().query()).await,
        (&Method::PUT, "/admin/limits") => {
            let body = Limited::new(req.into_body(), MAX_ADMIN_BODY).collect();
            let body = match tokio::time::timeout(ADMIN_BODY_TIMEOUT, body).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => {
                    let e =
                        ApiError::new(ErrorCode::BodyTooLarge, "the body is too large or broken");
                    return pulse_http::error(&e, None);
                }
                Err(_) => {
                    let e = ApiError::new(ErrorCode::RequestTimeout, "the body did not arrive");
                    return pulse_http::error(&e, None);
                }
            };
            // Writing and reading the file back is blocking work: off the runtime's threads.
            let control = Arc::clone(control);
            let changed = tokio::task::spawn_blocking(move || control.change_limits(&body)).await;
            match changed.unwrap_or_else(|e| Err(ChangeError::File(e.to_string()))) {
                Ok((limits, persisted)) => {
                    let published = match gw.bus() {
                        Some(bus) => Some(bus.publish_limits(&limits).await.into()),
                        None => None,
                    };
                    ok_json(&Changed {
                        limits: &limits,
                        persisted,
                        config: file(),
                        published,
                    })
                }
                Err(e) => refused(&e),
            }
        }
        (&Method::POST, "/admin/reload") => {
            let control = Arc::clone(control);
            let reloaded = tokio::task::spawn_blocking(move || control.reload()).await;
            let reloaded = reloaded.unwrap_or_else(|e| Err(ChangeError::File(e.to_string())));
            gw.metrics.config_reload(reloaded.is_ok());
            match reloaded {
                Ok(applied) => ok_json(&Changed {
                    limits: &applied.limits,
                    persisted: false,
                    config: file(),
                    published: None,
                }),
                Err(e) => refused(&e),
            }
        }
        (&Method::GET, "/admin/bundle") => bundle(gw),
        (&Method::GET, "/admin/cluster") => ok_json(&gw.cluster()),
        (&Method::GET, "/admin/shadow") => shadow(gw),
        (&Method::DELETE, "/admin/shadow") => match gw.decider().set_shadow(None) {
            Ok(_) => shadow(gw),
            Err(e) => {
                tracing::error!(error = %e, "the shadow bundle could not be cleared");
                error(
                    ErrorCode::Internal,
                    "the shadow bundle could not be cleared",
                )
            }
        },
        (&Method::PUT, "/admin/bundle") => {
            let body = Limited::new(req.into_body(), MAX_BUNDLE_BODY).collect();
            let body = match tokio::time::timeout(ADMIN_BODY_TIMEOUT, body).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => {
                    return error(ErrorCode::BodyTooLarge, "the body is too large or broken");
                }
                Err(_) => return error(ErrorCode::RequestTimeout, "the body did not arrive"),
            };
            let control = Arc::clone(control);
            let done = tokio::task::spawn_blocking(move || {
                let bundle = bundle_of(&body)?;
                control.activate_bundle(bundle)
            })
            .await;
            activated(
                gw,
                done.unwrap_or_else(|e| Err(ChangeError::File(e.to_string()))),
            )
            .await
        }
        (&Method::POST, "/admin/bundle/rollback") => {
            let control = Arc::clone(control);
            let done = tokio::task::spawn_blocking(move || control.rollback_bundle()).await;
            activated(
                gw,
                done.unwrap_or_else(|e| Err(ChangeError::File(e.to_string()))),
            )
            .await
        }
        (&Method::DELETE, path) if path.starts_with("/admin/readers/") => {
            erase(gw, &path["/admin/readers/".len()..]).await
        }
        (&Method::GET, path) if path.starts_with("/admin/readers/") => {
            reader(gw, &path["/admin/readers/".len()..]).await
        }
        (
            _,
            "/metrics"
            | "/admin/limits"
            | "/admin/reload"
            | "/admin/bundle"
            | "/admin/bundle/rollback"
            | "/admin/export"
            | "/admin/dead_letters"
            | "/admin/shadow"
            | "/admin/cluster",
        ) => pulse_http::error(
            &ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed"),
            None,
        ),
        _ => pulse_http::error(
            &ApiError::new(ErrorCode::NotFound, "no such admin path"),
            None,
        ),
    }
}

/// Most records one `GET /admin/export` answers.
const MAX_EXPORT_RECORDS: usize = 10_000;
/// Most bytes one `GET /admin/export` answers (it stops before the record that would pass).
const MAX_EXPORT_BYTES: usize = 16 << 20;

/// `GET /admin/export?log=events|dead_letters|decisions&from=N&limit=M`: the embedded logs'
/// records from position `from` (default 0), as stored (a record written before records
/// carried a schema version given `"v":1`), one JSON object per line
/// (`application/x-ndjson`), at most `limit` (default and most 10,000) and 16 MiB. The position
/// to ask for next is in `Pulse-Next-Position` (`Pulse-End: true` once nothing more is kept),
/// so a data team tails the logs of a running gateway by asking again from there.
/// The newest dead letters, newest first (`limit`, default 20, at most 200), each as stored
/// with its position: what the operations page lists.
async fn dead_letters(gw: &Gateway, query: Option<&str>) -> Resp {
    let limit = match pulse_http::query_param(query, "limit").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) => n.min(200),
        Some(Err(_)) => return error(ErrorCode::InvalidRequest, "limit: a whole number"),
    };
    if gw.log().is_none() {
        return error(
            ErrorCode::InvalidRequest,
            "the dead letters are in Kafka (sink.kind = \"kafka\"): read their topic",
        );
    }
    let data = gw.config.server.data.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::log::LogFiles::read_only(&data).latest("dead_letters", limit)
    })
    .await;
    match read {
        Ok(Some(Ok(records))) => {
            let list: Vec<serde_json::Value> = records
                .into_iter()
                .map(|r| {
                    let mut v = serde_json::from_slice(&r.bytes)
                        .unwrap_or_else(|_| serde_json::Value::String("unreadable".into()));
                    if let Some(o) = v.as_object_mut() {
                        o.insert("position".into(), r.seq.into());
                    }
                    v
                })
                .collect();
            ok_json(&list)
        }
        Ok(Some(Err(e))) => error(ErrorCode::Internal, e.to_string()),
        Ok(None) | Err(_) => error(ErrorCode::Internal, "the dead letters could not be read"),
    }
}

async fn export(gw: &Gateway, query: Option<&str>) -> Resp {
    let log = pulse_http::query_param(query, "log")
        .unwrap_or("events")
        .to_owned();
    let number = |name: &str| -> Result<Option<u64>, String> {
        match pulse_http::query_param(query, name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}: a whole number, not {v:?}")),
        }
    };
    let (from, limit) = match (number("from"), number("limit")) {
        (Ok(f), Ok(l)) => (
            f.unwrap_or(0),
            l.map_or(MAX_EXPORT_RECORDS, |l| {
                usize::try_from(l)
                    .unwrap_or(usize::MAX)
                    .min(MAX_EXPORT_RECORDS)
            }),
        ),
        (Err(e), _) | (_, Err(e)) => return error(ErrorCode::InvalidRequest, e),
    };
    if gw.log().is_none() {
        return error(
            ErrorCode::InvalidRequest,
            "the logs are in Kafka (sink.kind = \"kafka\"): read the topics",
        );
    }
    let data = gw.config.server.data.clone();
    let read = tokio::task::spawn_blocking(move || {
        let files = crate::log::LogFiles::read_only(&data);
        let Some(records) = files.records_from(&log, from) else {
            return Err(format!(
                "log: events, dead_letters or decisions, not {log:?}"
            ));
        };
        let (mut body, mut next, mut n, mut more) = (Vec::new(), from, 0usize, false);
        for r in records {
            let r = r.map_err(|e| e.to_string())?;
            if n == limit || body.len() + r.bytes.len() + 1 > MAX_EXPORT_BYTES {
                more = true;
                break;
            }
            // A record written before records carried a version gets `"v":1`.
            pulse_protocol::push_versioned(&mut body, &r.bytes);
            body.push(b'\n');
            next = r.seq + 1;
            n += 1;
        }
        Ok((body, next, more))
    })
    .await;
    match read {
        Ok(Ok((body, next, more))) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            if let Ok(v) = HeaderValue::from_str(&next.to_string()) {
                headers.insert("pulse-next-position", v);
            }
            headers.insert(
                "pulse-end",
                HeaderValue::from_static(if more { "false" } else { "true" }),
            );
            resp
        }
        Ok(Err(message)) if message.starts_with("log: ") => {
            error(ErrorCode::InvalidRequest, message)
        }
        Ok(Err(message)) => {
            tracing::error!(error = %message, "export failed");
            error(ErrorCode::Internal, "the log could not be read")
        }
        Err(_) => error(ErrorCode::Internal, "the log could not be read"),
    }
}

/// The largest `PUT /admin/bundle` body: a bundle and its model, as JSON.
const MAX_BUNDLE_BODY: usize = pulse_scorer::MAX_BUNDLE_BYTES + 2 * pulse_scorer::MAX_MODEL_BYTES;

/// A bundle from `{"bundle": TOML, "files": {NAME: TEXT}}`, every problem listed.
fn bundle_of(body: &[u8]) -> Result<pulse_scorer::Bundle, ChangeError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sent {
        bundle: String,
        #[serde(default)]
        files: std::collections::BTreeMap<String, String>,
    }
    let sent: Sent = serde_json::from_slice(body).map_err(|e| {
        ChangeError::Invalid(vec![format!(
            "the body must be {{\"bundle\": TOML, \"files\": {{NAME: TEXT}}}}: {e}"
        )])
    })?;
    pulse_scorer::Bundle::compile_with(&sent.bundle, &mut |name| {
        sent.files
            .get(name)
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| format!("{name}: not among the files sent"))
    })
    .map_err(|e| ChangeError::Invalid(e.0.iter().map(ToString::to_string).collect()))
}

async fn activated(gw: &Gateway, result: Result<crate::control::Activated, ChangeError>) -> Resp {
    match result {
        Ok(a) => {
            let published = publish_bundle(gw, &a.archive).await;
            let (state, replaced) = match &a.change {
                crate::decide::BundleChange::Active { replaced } => ("active", Some(replaced)),
                crate::decide::BundleChange::Rebuilding { .. } => ("rebuilding", None),
            };
            ok_json(&serde_json::json!({
                "id": a.id,
                "name": a.name,
                "state": state,
                "replaced": replaced,
                "archive": a.archive.display().to_string(),
                "persisted": a.persisted,
                "published": published,
            }))
        }
        Err(e) => refused(&e),
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
    let model = b.model.as_ref().map(|m| {
        serde_json::json!({
            "file": m.file,
            "format": m.model.format().as_str(),
            "inputs": m.model.feature_names(),
            "trees": m.model.trees(),
        })
    });
    let answer = serde_json::json!({
        "id": b.id,
        "name": b.name,
        "feature_set": format!("{:016x}", b.feature_set),
        "features": features,
        "model": model,
        "rules": b.rules.ids(),
        "history": gw
            .control()
            .history()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, path)| serde_json::json!({"id": id, "archive": path.display().to_string()}))
            .collect::<Vec<_>>(),
        "rebuilding": stats.rebuilding.load(std::sync::atomic::Ordering::Relaxed) == 1,
        "source": &*b.source,
    });
    ok_json(&answer)
}

/// `GET /admin/shadow`: the shadow bundle deciding now (or `null`), one waiting for a rebuild,
/// and the decisions compared so far (since the start), by pair of actions.
fn shadow(gw: &Gateway) -> Resp {
    let (shadow, pending) = gw.decider().shadow();
    let pairs = gw.metrics.shadow_pairs();
    let compared: u64 = pairs.iter().map(|(_, _, n)| n).sum();
    let differing: u64 = pairs
        .iter()
        .filter(|(a, s, _)| a != s)
        .map(|(_, _, n)| n)
        .sum();
    let answer = serde_json::json!({
        "shadow": shadow.map(|b| serde_json::json!({
            "id": b.id,
            "name": b.name,
            "rules": b.rules.ids(),
        })),
        "pending": pending,
        "active": gw.engine().bundle().ok().map(|b| b.id.clone()),
        "compared": compared,
        "differing": differing,
        "pairs": pairs.iter().map(|(a, s, n)| serde_json::json!({
            "active": a.as_str(),
            "shadow": s.as_str(),
            "decisions": n,
        })).collect::<Vec<_>>(),
    });
    ok_json(&answer)
}

/// `GET /admin/readers/{id}`: one reader's features and the decision now.
async fn reader(gw: &Gateway, encoded: &str) -> Resp {
    let Some(id) = percent_decode(encoded).filter(|id| !id.is_empty() && id.len() <= 512) else {
        return error(ErrorCode::NotFound, "no such reader");
    };
    if let Some(asked) = gw.decider().explain_remote(&id).await {
        // A gateway of a split tier: the owner of the reader's partition answers.
        return match asked {
            Ok(Some(value)) => ok_json(&value),
            Ok(None) => error(
                ErrorCode::NotFound,
                "no such reader (or forgotten past its TTL)",
            ),
            Err(()) => error(
                ErrorCode::StoreUnavailable,
                "no scorer answers for this reader's partition now (a move under way?): retry",
            ),
        };
    }
    let engine = Arc::clone(gw.engine());
    let now = crate::ingest::now_ms();
    let found = tokio::task::spawn_blocking(move || engine.explain(&id, now)).await;
    match found {
        Ok(Ok(Some(value))) => ok_json(&value),
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

/// What erasing a reader did, by store.
#[derive(Serialize)]
struct ErasedReader<'a> {
    reader: &'a str,
    /// Whether they had state (in memory or stored).
    state: bool,
    /// Records erased from the embedded logs (none in Kafka mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<crate::Erased>,
    /// In Kafka mode: the erasure record written to the events topic for the consumers
    /// downstream (and for the gateways' restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    erasure_record: Option<String>,
}

/// `DELETE /admin/readers/ID`: erases a reader (a data subject's request). Their state goes,
/// then their records in the embedded logs; in Kafka mode an erasure record is produced to the
/// events topic. Erasing a reader Pulse never saw is not an error (nothing is erased).
async fn erase(gw: &Gateway, encoded: &str) -> Resp {
    let Some(id) = percent_decode(encoded).filter(|id| !id.is_empty() && id.len() <= 512) else {
        return error(ErrorCode::NotFound, "no such reader");
    };
    let engine = Arc::clone(gw.engine());
    let reader = id.clone();
    let state = match tokio::task::spawn_blocking(move || engine.erase(&reader)).await {
        Ok(Ok(had)) => had,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "erasing a reader's state failed");
            return error(
                ErrorCode::Internal,
                "the reader's state could not be erased",
            );
        }
        Err(_) => {
            return error(
                ErrorCode::Internal,
                "the reader's state could not be erased",
            );
        }
    };
    let (log, erasure_record) = match gw.log() {
        Some(log) => match log.erase(&id).await {
            Ok(erased) => (Some(erased), None),
            Err(e) => {
                tracing::error!(error = %e, "erasing a reader's records failed");
                return error(
                    ErrorCode::StoreUnavailable,
                    "the reader's state is erased, not yet their records: ask again",
                );
            }
        },
        None => match gw.erasure_record(&id).await {
            Ok(at) => (None, Some(at)),
            Err(e) => {
                tracing::error!(error = %e, "producing an erasure record failed");
                return error(
                    ErrorCode::StoreUnavailable,
                    "the reader's state is erased, the erasure record not yet sent: ask again",
                );
            }
        },
    };
    tracing::info!(reader = %id, state, ?log, "reader erased");
    ok_json(&ErasedReader {
        reader: &id,
        state,
        log,
        erasure_record,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
