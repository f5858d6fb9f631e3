//! One TCP connection, cleartext or TLS, public or admin: the TLS handshake within its time
//! limit, then HTTP/1.1 or HTTP/2 through hyper-util's automatic builder (the HTTP/2 preface
//! decides on cleartext; on TLS the client's ALPN choice shows in what it sends).
//!
//! Timers: hyper's header read timer covers a request head on HTTP/1.1 (and closes idle
//! keep-alive connections); on top of it, a connection with no request in flight for
//! `header_read_timeout` is shut down gracefully (HTTP/2: GOAWAY), which also covers a client
//! that connects and sends nothing. The body deadline is the app's, on every protocol.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::accept::Stop;
use crate::answer::{ConnInfo, Endpoint, Resp};
use crate::app::{App, host_from_authority, too_many_headers};
use crate::settings::Settings;

/// What every TCP connection shares: the app, the protocol settings and the timers.
pub(crate) struct Shared<A> {
    pub(crate) app: Arc<A>,
    builder: auto::Builder<TokioExecutor>,
    alt_svc: Option<HeaderValue>,
    max_headers: usize,
    header_timeout: Duration,
    handshake_timeout: Duration,
}

impl<A: App> Shared<A> {
    pub(crate) fn new(app: Arc<A>, settings: &Settings, alt_svc: Option<HeaderValue>) -> Self {
        let transport = &settings.transport;
        let header_timeout = settings.header_read_timeout;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // hyper starts this timer whenever it waits for a request head, so it also closes
            // idle keep-alive connections.
            .header_read_timeout(header_timeout)
            .max_buf_size(transport.max_header_bytes.max(8192))
            .max_headers(transport.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(transport.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(transport.max_header_bytes).unwrap_or(u32::MAX));
        Self {
            app,
            builder,
            alt_svc,
            max_headers: transport.max_headers,
            header_timeout,
            handshake_timeout: transport.tls_handshake_timeout_ms.get(),
        }
    }
}

impl<A> std::fmt::Debug for Shared<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Serves one accepted TCP connection until it closes or shutdown (holding `_permit`, one of
/// its listener's connection slots, until then).
pub(crate) async fn connection<A: App>(
    stream: TcpStream,
    info: ConnInfo,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<A>>,
    mut stop: Stop,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let peer = info.peer;
    match tls {
        None => serve_http(TokioIo::new(stream), info, &shared, stop).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                h = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)) => h,
                _ = stop.requested() => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_http(TokioIo::new(tls), info, &shared, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in time; closing"),
            }
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on an established connection. On shutdown the connection finishes
/// its in-flight requests and closes (HTTP/2: GOAWAY); so does one with no request in flight for
/// the header read timeout.
async fn serve_http<A, I>(io: I, info: ConnInfo, shared: &Arc<Shared<A>>, mut stop: Stop)
where
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
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = tokio::select! {
        done = conn.as_mut() => return log_end(done, info.peer),
        _ = stop.requested() => false,
        () = activity.idle(shared.header_timeout) => true,
    };
    conn.as_mut().graceful_shutdown();
    let outcome = if idle {
        // Nothing in flight: the connection ends at once (HTTP/2 after its GOAWAY), unless the
        // peer stops reading; do not wait on it past another period.
        tokio::time::timeout(shared.header_timeout, conn)
            .await
            .unwrap_or(Ok(()))
    } else {
        conn.await
    };
    log_end(outcome, info.peer);
}

fn log_end(outcome: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// One request from a TCP connection: too many headers refused (hyper counts them on HTTP/1.1
/// only), `Host` from the authority when absent (HTTP/2), the app's answer, `Alt-Svc` when
/// HTTP/3 is on (public listeners only).
async fn answer<A: App>(shared: &Shared<A>, mut req: Request<Incoming>, info: ConnInfo) -> Resp {
    let mut resp = match too_many_headers(&*shared.app, shared.max_headers, &req) {
        Some(refused) => refused,
        None => {
            host_from_authority(&mut req);
            shared.app.answer(req, info).await
        }
    };
    if let (Some(alt_svc), Endpoint::Public) = (&shared.alt_svc, info.endpoint) {
        resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
    }
    resp
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

#[cfg(test)]
mod tests {
    use super::*;

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
