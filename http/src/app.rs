//! What the listeners and the apps they serve share: the [`App`] trait, the addresses the
//! listeners got, why they could not be set up, and the request plumbing every protocol applies
//! before the app sees a request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Version};

use crate::answer::{ConnInfo, Protocol, Resp};
use crate::tls::TlsError;

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// `TCP` or `UDP (QUIC)`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The certificate or the TLS settings are not usable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A QUIC transport setting is out of range.
    #[error("QUIC settings: {0}")]
    Quic(String),
}

/// What the listeners serve: the gateway, or anything else that answers requests the same way
/// (the benchmark floor).
pub trait App: Send + Sync + 'static {
    /// Answers one request, whatever protocol and listener it came over.
    fn answer<B>(&self, req: Request<B>, conn: ConnInfo) -> impl Future<Output = Resp> + Send
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static;

    /// Counts a request for `path` that the listener answered itself (431 for too many headers).
    fn count(&self, protocol: Protocol, path: &str, status: u16);

    /// Called once the listeners are bound, before the first connection, with their addresses.
    fn listening(&self, _bound: &Bound) {}

    /// Called once, before the first connection, with the count of open connections (for
    /// metrics).
    fn connections(&self, _open: OpenConnections) {}

    /// Runs once after every listener has stopped (flush the log, close the stores).
    fn close(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// The connections open now on each kind of listener: every open connection holds one of its
/// listener's slots.
#[derive(Clone, Debug, Default)]
pub struct OpenConnections {
    slots: Vec<(&'static str, Arc<tokio::sync::Semaphore>, usize)>,
}

impl OpenConnections {
    pub(crate) fn add(
        &mut self,
        kind: &'static str,
        slots: &Arc<tokio::sync::Semaphore>,
        max: usize,
    ) {
        self.slots.push((kind, Arc::clone(slots), max));
    }

    /// `(listener kind, open connections)`: `tcp` (cleartext and TLS, HTTP/1.1 and HTTP/2),
    /// `quic` (HTTP/3) and `admin`, those that are on.
    pub fn open(&self) -> Vec<(&'static str, usize)> {
        self.slots
            .iter()
            .map(|(kind, slots, max)| (*kind, max.saturating_sub(slots.available_permits())))
            .collect()
    }
}

/// The addresses the listeners got (ports chosen when 0 was asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Cleartext HTTP.
    pub http: SocketAddr,
    /// TLS (HTTP/1.1 and HTTP/2), when on.
    pub https: Option<SocketAddr>,
    /// QUIC (HTTP/3), when on.
    pub quic: Option<SocketAddr>,
    /// The admin listener, when there is one.
    pub admin: Option<SocketAddr>,
}

/// The answer to a request with more than `max_headers` headers: 431 with no body, as hyper
/// gives on HTTP/1.1 (where it applies the limit itself; it is checked here for HTTP/2 and
/// HTTP/3). Counted in the app's request metrics.
pub(crate) fn too_many_headers<A: App, B>(
    app: &A,
    max_headers: usize,
    req: &Request<B>,
) -> Option<Resp> {
    if req.headers().len() <= max_headers {
        return None;
    }
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    app.count(
        Protocol::of(req.version()),
        req.uri().path(),
        status.as_u16(),
    );
    let mut resp = Resp::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    Some(resp)
}

/// HTTP/2 and HTTP/3 carry the host in the `:authority` pseudo-header, which is equivalent to
/// `Host` (RFC 9113 §8.3.1, RFC 9114 §4.3.1); apps read `Host`, so copy it there.
pub(crate) fn host_from_authority<B>(req: &mut Request<B>) {
    if req.version() < Version::HTTP_2 || req.headers().contains_key(header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
}
