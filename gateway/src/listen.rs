//! The listeners: they accept connections, speak the protocols and hand every request to
//! [`handle`]. Cleartext TCP serves HTTP/1.1 and HTTP/2 with prior knowledge; TLS on TCP serves
//! HTTP/1.1 and HTTP/2 chosen by ALPN; QUIC on UDP (same port number as TLS) serves HTTP/3 (see
//! `quic`). Every TCP answer advertises HTTP/3 with `Alt-Svc` when it is on.
//!
//! Limits applied here, per protocol: open TCP connections (`max_connections`, shared by both
//! TCP listeners: at the cap the listeners stop accepting until one closes), the request head
//! (HTTP/1.1 size and count, HTTP/2 header list size), HTTP/2 concurrent streams, the time for a
//! request head (HTTP/1.1; also how long an idle HTTP/1.1 or HTTP/2 connection is kept) and for
//! the TLS handshake. The body deadline is enforced in `server` for every protocol.
//!
//! Shutdown stops accepting, lets in-flight requests of every protocol finish within a grace
//! period, then flushes the sink and closes the store once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use crate::ingest::Gateway;
use crate::quic;
use crate::server::{ConnInfo, Protocol, Resp, handle};
use crate::tls::{Certified, TlsError};

/// How long in-flight requests get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long an accept loop backs off after an accept error (out of file descriptors and the
/// like) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
/// (the benchmark floor). The listeners read `[transport]` and `[limits]` from its config.
pub trait App: Send + Sync + 'static {
    /// The configuration the listeners take their limits from.
    fn config(&self) -> &Config;

    /// Answers one request, whatever protocol it came over.
    fn answer<B>(&self, req: Request<B>, conn: ConnInfo) -> impl Future<Output = Resp> + Send
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static;

    /// Counts a request the listener answered itself (431 for too many headers).
    fn count(&self, protocol: Protocol, status: u16);

    /// Runs once after every listener has stopped (flush the sink, close the store).
    fn close(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl App for Gateway {
    fn config(&self) -> &Config {
        &self.config
    }

    fn answer<B>(&self, req: Request<B>, conn: ConnInfo) -> impl Future<Output = Resp> + Send
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        handle(self, req, conn)
    }

    fn count(&self, protocol: Protocol, status: u16) {
        self.metrics.request(protocol, status);
    }

    async fn close(&self) -> io::Result<()> {
        Self::close(self).await.map_err(io::Error::other)
    }
}

/// The bound sockets of a gateway: cleartext TCP, and when `server.tls_listen` is set, TLS on TCP
/// and (with `server.http3`) QUIC on UDP at the same port number.
#[derive(Debug)]
pub struct Listeners {
    plain: TcpListener,
    plain_addr: SocketAddr,
    tls: Option<TlsListeners>,
}

struct TlsListeners {
    tcp: TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    quic: Option<quinn::Endpoint>,
    certified: Certified,
}

impl std::fmt::Debug for TlsListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListeners")
            .field("addr", &self.addr)
            .field("quic", &self.quic.is_some())
            .field("certified", &self.certified)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// Binds every listener `config` asks for. With TLS on port 0, TCP is bound first and QUIC
    /// takes the port TCP got (retried a few times should that UDP port be taken).
    pub async fn bind(config: &Config) -> Result<Self, ListenError> {
        let server = &config.server;
        let plain = bind_tcp(server.listen).await?;
        let plain_addr = local_addr(&plain, "TCP", server.listen)?;
        let Some(tls_addr) = server.tls_listen else {
            return Ok(Self {
                plain,
                plain_addr,
                tls: None,
            });
        };
        let certified = Certified::load_or_generate(server)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(certified.tcp_config()?);
        let quic_config = if server.http3 {
            Some(quic::server_config(&certified, config)?)
        } else {
            None
        };
        let attempts = if tls_addr.port() == 0 { 5 } else { 1 };
        let mut attempt = 0;
        let (tcp, addr, quic) = loop {
            attempt += 1;
            let tcp = bind_tcp(tls_addr).await?;
            let addr = local_addr(&tcp, "TCP", tls_addr)?;
            let Some(quic_config) = &quic_config else {
                break (tcp, addr, None);
            };
            match quinn::Endpoint::server(quic_config.clone(), addr) {
                Ok(endpoint) => break (tcp, addr, Some(endpoint)),
                Err(e) if attempt < attempts && e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(source) => {
                    return Err(ListenError::Bind {
                        what: "UDP (QUIC)",
                        addr,
                        source,
                    });
                }
            }
        };
        Ok(Self {
            plain,
            plain_addr,
            tls: Some(TlsListeners {
                tcp,
                addr,
                acceptor,
                quic,
                certified,
            }),
        })
    }

    /// Only a cleartext TCP listener (what [`serve`] runs).
    pub fn from_tcp(plain: TcpListener) -> io::Result<Self> {
        let plain_addr = plain.local_addr()?;
        Ok(Self {
            plain,
            plain_addr,
            tls: None,
        })
    }

    /// The cleartext TCP address (HTTP/1.1, HTTP/2 with prior knowledge).
    pub fn http_addr(&self) -> SocketAddr {
        self.plain_addr
    }

    /// The TLS address (HTTP/1.1 and HTTP/2 on TCP), when TLS is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.addr)
    }

    /// The QUIC address (HTTP/3 on UDP, same port as TLS), when HTTP/3 is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        let quic = self.tls.as_ref()?.quic.as_ref()?;
        quic.local_addr().ok()
    }

    /// The certificate of the TLS and QUIC listeners, when TLS is on.
    pub fn certificate(&self) -> Option<&Certified> {
        self.tls.as_ref().map(|t| &t.certified)
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            what: "TCP",
            addr,
            source,
        })
}

fn local_addr(
    listener: &TcpListener,
    what: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, ListenError> {
    listener
        .local_addr()
        .map_err(|source| ListenError::Bind { what, addr, source })
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish (up to a grace period) and closes the sink and
/// the store.
pub async fn serve<A: App>(
    gateway: Arc<A>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_all(gateway, Listeners::from_tcp(listener)?, shutdown).await
}

/// Serves every listener until `shutdown` resolves; then stops accepting on all of them, lets
/// in-flight requests of every protocol finish within a grace period (connections still open
/// after it are closed), and closes the sink and the store once.
pub async fn serve_all<A: App>(
    gateway: Arc<A>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(None);
    let alt_svc = listeners
        .quic_addr()
        .and_then(|a| HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", a.port())).ok());
    let shared = Arc::new(Shared::new(Arc::clone(&gateway), alt_svc));
    let mut loops = JoinSet::new();
    let mut tls_tcp = None;
    if let Some(tls) = listeners.tls {
        tls_tcp = Some((tls.tcp, tls.acceptor));
        if let Some(endpoint) = tls.quic {
            loops.spawn(quic::serve(
                endpoint,
                Arc::clone(&gateway),
                Stop(stop_rx.clone()),
            ));
        }
    }
    loops.spawn(accept_tcp(
        listeners.plain,
        tls_tcp,
        Arc::clone(&shared),
        Stop(stop_rx.clone()),
    ));
    drop(stop_rx);
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(Some(Instant::now() + SHUTDOWN_GRACE));
    while let Some(done) = loops.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a listener task failed");
        }
    }
    drop(shared);
    gateway.close().await
}

/// The shutdown signal as the listeners see it: once asked for, it carries the deadline by which
/// in-flight requests must be done.
#[derive(Clone, Debug)]
pub(crate) struct Stop(watch::Receiver<Option<Instant>>);

impl Stop {
    /// Resolves once shutdown is asked for, with its deadline.
    pub(crate) async fn requested(&mut self) -> Instant {
        match self.0.wait_for(Option::is_some).await {
            Ok(deadline) => deadline.unwrap_or_else(Instant::now),
            // The sender is gone: nobody will ask any more, stop now.
            Err(_) => Instant::now(),
        }
    }

    /// The deadline, once shutdown is asked for.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.0.borrow()
    }
}

/// Waits for the connection tasks of a listener until the shutdown deadline, then aborts the
/// rest (their requests were not answered, so nothing acknowledged is lost).
pub(crate) async fn drain<T: 'static>(tasks: &mut JoinSet<T>, stop: &Stop, what: &str) {
    let deadline = stop
        .deadline()
        .unwrap_or_else(|| Instant::now() + SHUTDOWN_GRACE);
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all).await.is_err() {
        tracing::warn!(
            listener = what,
            open = tasks.len(),
            "grace period over; closing remaining connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// What every TCP connection shares: the gateway, the protocol settings and the limits.
struct Shared<A> {
    gateway: Arc<A>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    alt_svc: Option<HeaderValue>,
    connections: Arc<Semaphore>,
    header_timeout: Duration,
    handshake_timeout: Duration,
}

impl<A: App> Shared<A> {
    fn new(gateway: Arc<A>, alt_svc: Option<HeaderValue>) -> Self {
        let transport = &gateway.config().transport;
        let header_timeout = gateway.config().limits.header_read_timeout_ms.get();
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper starts this timer whenever it waits for a request head, so it also closes
            // idle keep-alive connections.
            .header_read_timeout(header_timeout)
            .max_buf_size(transport.max_header_bytes)
            .max_header_size(transport.max_header_bytes)
            .max_headers(transport.max_headers);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(transport.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(transport.max_header_bytes).unwrap_or(u32::MAX));
        Self {
            h1,
            h2,
            alt_svc,
            connections: Arc::new(Semaphore::new(transport.max_connections)),
            header_timeout,
            handshake_timeout: transport.tls_handshake_timeout_ms.get(),
            gateway,
        }
    }
}

impl<A> std::fmt::Debug for Shared<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Accepts TCP connections on the cleartext listener and, when there is one, the TLS listener
/// until shutdown, holding one of `max_connections` permits per open connection; then drains
/// them. One loop serves both, so that a freed permit goes to whichever listener has a
/// connection waiting.
async fn accept_tcp<A: App>(
    plain: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    shared: Arc<Shared<A>>,
    mut stop: Stop,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap, wait for a connection to close before accepting the next one.
        let permit = tokio::select! {
            permit = Arc::clone(&shared.connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // closed: never happens, the semaphore lives in `shared`
            },
            _ = stop.requested() => break,
        };
        let on_tls = async {
            match &tls {
                Some((listener, acceptor)) => (listener.accept().await, Some(acceptor.clone())),
                None => std::future::pending().await,
            }
        };
        let (accepted, acceptor) = tokio::select! {
            accepted = plain.accept() => (accepted, None),
            accepted = on_tls => accepted,
            _ = stop.requested() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        connections.spawn(tcp_connection(
            stream,
            peer,
            acceptor,
            Arc::clone(&shared),
            stop.clone(),
            permit,
        ));
    }
    drop(plain);
    drop(tls);
    drain(&mut connections, &stop, "tcp").await;
}

/// One TCP connection: the TLS handshake or the cleartext protocol sniff (each within its time
/// limit), then HTTP/1.1 or HTTP/2 until it closes or shutdown.
async fn tcp_connection<A: App>(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<A>>,
    mut stop: Stop,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let info = ConnInfo { peer };
    match acceptor {
        None => {
            let sniffed = tokio::select! {
                s = tokio::time::timeout(shared.header_timeout, sniff_h2(&mut stream)) => s,
                _ = stop.requested() => return,
            };
            let (is_h2, prefix) = match sniffed {
                Ok(Ok(sniffed)) => sniffed,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed before a request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no request head in time; closing");
                    return;
                }
            };
            let io = TokioIo::new(Rewind {
                prefix,
                inner: stream,
            });
            serve_http(io, is_h2, info, &shared, stop).await;
        }
        Some(acceptor) => {
            let handshake = tokio::select! {
                h = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)) => h,
                _ = stop.requested() => return,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake not done in time; closing");
                    return;
                }
            };
            let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(TokioIo::new(tls), is_h2, info, &shared, stop).await;
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on an established connection. On shutdown the connection finishes
/// its in-flight requests and closes (HTTP/2: GOAWAY). An HTTP/2 connection with no request in
/// flight for the header read timeout is closed the same way (HTTP/1.1 does this itself).
async fn serve_http<A, I>(
    io: I,
    is_h2: bool,
    info: ConnInfo,
    shared: &Arc<Shared<A>>,
    mut stop: Stop,
) where
    A: App,
    I: Read + Write + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let shared = Arc::clone(shared);
        let activity = Arc::clone(&activity);
        service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let busy = activity.start();
            async move {
                let resp = answer(&shared, req, info).await;
                drop(busy);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let outcome = if is_h2 {
        let conn = shared.h2.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = tokio::select! {
            done = conn.as_mut() => return log_end(done, info),
            _ = stop.requested() => false,
            () = activity.idle(shared.header_timeout) => true,
        };
        conn.as_mut().graceful_shutdown();
        if idle {
            // Nothing in flight: GOAWAY goes out and the connection ends at once, unless the
            // peer stops reading; do not wait on it past another period.
            match tokio::time::timeout(shared.header_timeout, conn).await {
                Ok(done) => done,
                Err(_) => Ok(()),
            }
        } else {
            conn.await
        }
    } else {
        let conn = shared.h1.serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            done = conn.as_mut() => return log_end(done, info),
            _ = stop.requested() => {}
        }
        conn.as_mut().graceful_shutdown();
        conn.await
    };
    log_end(outcome, info);
}

fn log_end(outcome: Result<(), hyper::Error>, info: ConnInfo) {
    if let Err(e) = outcome {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
}

/// One request from a TCP connection: `Host` from the authority when absent (HTTP/2), the
/// common handler, `Alt-Svc` when HTTP/3 is on.
async fn answer<A: App>(shared: &Shared<A>, mut req: Request<Incoming>, info: ConnInfo) -> Resp {
    // hyper enforces `max_headers` on HTTP/1.1 itself, not on HTTP/2.
    let mut resp = match too_many_headers(&*shared.gateway, &req) {
        Some(refused) => refused,
        None => {
            host_from_authority(&mut req);
            shared.gateway.answer(req, info).await
        }
    };
    if let Some(alt_svc) = &shared.alt_svc {
        resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
    }
    resp
}

/// The answer to a request with more than `transport.max_headers` headers: 431 with no body,
/// as hyper gives on HTTP/1.1 (where it applies the limit itself; it is checked here for HTTP/2
/// and HTTP/3). Counted in the request metrics.
pub(crate) fn too_many_headers<A: App, B>(gateway: &A, req: &Request<B>) -> Option<Resp> {
    if req.headers().len() <= gateway.config().transport.max_headers {
        return None;
    }
    let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    gateway.count(Protocol::of(req.version()), status.as_u16());
    let mut resp = Resp::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    Some(resp)
}

/// HTTP/2 and HTTP/3 carry the host in the `:authority` pseudo-header, which is equivalent to
/// `Host` (RFC 9113 §8.3.1, RFC 9114 §4.3.1); the handler reads `Host`, so copy it there.
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

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

/// Marks a request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn start(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(Arc::clone(self))
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    fn last(&self) -> Instant {
        self.last.lock().map_or_else(|_| Instant::now(), |l| *l)
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            tokio::time::sleep_until(self.last() + limit).await;
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // A request is running: its own deadlines bound it; look again later.
                tokio::time::sleep(limit).await;
            } else if self.last().elapsed() >= limit {
                return;
            }
        }
    }
}

/// The HTTP/2 connection preface a prior-knowledge client starts with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a cleartext connection until they either are the HTTP/2 preface or
/// cannot be; returns which, and the bytes read (to be read again by the protocol).
async fn sniff_h2(stream: &mut TcpStream) -> io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            break;
        }
    }
    Ok((
        buf[..filled] == *H2_PREFACE,
        Bytes::copy_from_slice(&buf[..filled]),
    ))
}

/// A stream whose first bytes were already read: they are read again first.
#[derive(Debug)]
struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sniffed_bytes_are_read_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, h2) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], false),
            (
                b"POST /v1/collect?k=demo HTTP/1.1\r\nHost: x\r\n\r\n",
                false,
            ),
            (H2_PREFACE, true),
            (b"PRI * HTTP/1.1\r\n", false),
            (b"P", false),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut client, sent)
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut client, b"-rest")
                .await
                .unwrap();
            drop(client);
            let (mut server, _) = listener.accept().await.unwrap();
            let (is_h2, prefix) = sniff_h2(&mut server).await.unwrap();
            assert_eq!(is_h2, h2, "{sent:?}");
            let mut all = Vec::new();
            let mut rewound = Rewind {
                prefix,
                inner: server,
            };
            rewound.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, [sent, b"-rest"].concat());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_without_requests_in_flight() {
        let activity = Arc::new(Activity::default());
        let limit = Duration::from_secs(10);
        let busy = activity.start();
        let started = Instant::now();
        let idle = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { activity.idle(limit).await }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!idle.is_finished(), "a request is in flight");
        drop(busy);
        idle.await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(35));
    }
}
