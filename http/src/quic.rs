//! HTTP/3 over QUIC (quinn + h3): the UDP listener beside the TLS one, at the same port number.
//! Each request goes to the same [`App::answer`] as HTTP/1.1 and HTTP/2, its body read through
//! [`H3Body`] so that the same size caps and deadlines apply. Connections come from the one
//! accept loop (`listen`), which refuses those past `quic_max_connections`.
//!
//! Limits applied here: open QUIC connections (`quic_max_connections`; past it new ones are
//! refused), concurrent request streams per connection (`quic_max_streams`), the idle timeout
//! (`quic_idle_timeout_ms`), the handshake time (`tls_handshake_timeout_ms`), the request head's
//! size (`max_header_bytes`, answered 431 by h3) and count (`max_headers`, answered 431 here) and
//! the time for it (`header_read_timeout_ms`). 0-RTT is never accepted.
//!
//! IO boundary: the quinn endpoint; everything else is request plumbing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use crate::accept::{Listener, Stop};
use crate::answer::{ConnInfo, Endpoint};
use crate::app::{App, ListenError, host_from_authority, too_many_headers};
use crate::settings::Settings;
use crate::tls::Certified;

/// Unidirectional streams a peer may open: HTTP/3 needs three (control, QPACK encoder and
/// decoder) and clients may add a few (e.g. grease); there is no server push.
const MAX_UNI_STREAMS: u32 = 16;

/// Least and most time a connection lingers after its last answer before it is closed.
const LINGER_MIN: Duration = Duration::from_millis(100);
const LINGER_MAX: Duration = Duration::from_secs(1);

/// The receive side of an HTTP/3 request stream.
type RecvStream = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;
/// An HTTP/3 request whose head has not been read yet.
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// The quinn server settings: TLS 1.3 with ALPN `h3` and no 0-RTT, and the transport limits.
pub(crate) fn server_config(
    certified: &Certified,
    settings: &Settings,
) -> Result<quinn::ServerConfig, ListenError> {
    let transport = &settings.transport;
    let crypto = certified.quic_config()?;
    let mut quic = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(transport.quic_idle_timeout_ms.get())
        .map_err(|_| ListenError::Quic("transport.quic_idle_timeout_ms is too large".into()))?;
    // Flow control: a stream may hold one whole request (head and body) in flight, the
    // connection a few of them; every buffer is bounded by these windows.
    let stream_window =
        (settings.max_body_bytes + transport.max_header_bytes + 16 * 1024).max(64 * 1024) as u64;
    let stream_window = quinn::VarInt::try_from(stream_window)
        .map_err(|_| ListenError::Quic("limits.max_body_bytes is too large".into()))?;
    let conn_window = quinn::VarInt::from_u64(stream_window.into_inner().saturating_mul(8))
        .map_err(|_| ListenError::Quic("limits.max_body_bytes is too large".into()))?;
    quic.max_concurrent_bidi_streams(quinn::VarInt::from_u32(transport.quic_max_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(Some(idle))
        .stream_receive_window(stream_window)
        .receive_window(conn_window);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(quic));
    Ok(server)
}

/// The QUIC endpoint as the accept loop sees it: past the cap a connection is refused at
/// once (a client waiting in a queue would only time out); on shutdown new attempts are
/// refused, and once every connection is drained the endpoint closes.
impl Listener for quinn::Endpoint {
    type Conn = quinn::Incoming;

    async fn accept(&mut self) -> Option<std::io::Result<(Self::Conn, std::net::SocketAddr)>> {
        let incoming = Self::accept(self).await?;
        let peer = incoming.remote_address();
        Some(Ok((incoming, peer)))
    }

    fn refuse(conn: Self::Conn) {
        tracing::debug!(peer = %conn.remote_address(), "too many QUIC connections; refused");
        conn.refuse();
    }

    fn stop_accepting(&mut self) {
        self.set_server_config(None);
    }

    async fn finish(self) {
        self.close(quinn::VarInt::from_u32(0), b"shutting down");
        // Let the close frames go out; bounded, the grace period may already be spent.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wait_idle()).await;
    }
}

/// One QUIC connection: the handshake, the HTTP/3 settings exchange, then its requests until
/// it closes or shutdown.
pub(crate) async fn connection<A: App>(
    incoming: quinn::Incoming,
    app: Arc<A>,
    settings: Arc<Settings>,
    mut stop: Stop,
    _permit: OwnedSemaphorePermit,
) {
    let peer = incoming.remote_address();
    let transport = &settings.transport;
    let handshake_timeout = transport.tls_handshake_timeout_ms.get();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    let established = tokio::select! {
        c = tokio::time::timeout(handshake_timeout, connecting) => c,
        _ = stop.requested() => return,
    };
    let conn = match established {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake not done in time; closing");
            return;
        }
    };
    let mut builder = h3::server::builder();
    builder.max_field_section_size(transport.max_header_bytes as u64);
    let h3 = builder.build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()));
    let started = tokio::select! {
        h = tokio::time::timeout(handshake_timeout, h3) => h,
        _ = stop.requested() => return,
    };
    let mut h3 = match started {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/3 settings not exchanged in time; closing");
            return;
        }
    };
    let mut requests = JoinSet::new();
    let info = ConnInfo {
        peer,
        endpoint: Endpoint::Public,
    };
    loop {
        while requests.try_join_next().is_some() {}
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(request(Arc::clone(&app), Arc::clone(&settings), resolver, info));
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    }
                    break;
                }
            },
            _ = stop.requested() => {
                // GOAWAY: requests up to the last one accepted are served, later ones refused
                // (the client may retry them elsewhere).
                if let Err(e) = h3.shutdown(1).await {
                    tracing::debug!(%peer, error = %e, "GOAWAY not sent");
                }
                break;
            }
        }
    }
    // In-flight requests finish (bounded by the listener's grace period, which aborts this
    // task and with it `requests`).
    while requests.join_next().await.is_some() {}
    // Closing a QUIC connection abandons stream data not yet sent, and h3 does not say when a
    // response was delivered: give the last answers a few round trips to go out (or the client
    // time to close first) before dropping `h3`, which closes the connection.
    let linger = (conn.rtt() * 4).clamp(LINGER_MIN, LINGER_MAX);
    let _ = tokio::time::timeout(linger, conn.closed()).await;
    drop(h3);
}

/// One HTTP/3 request: its head within the header read timeout, the common handler with the
/// body as an [`H3Body`], then the response.
async fn request<A: App>(app: Arc<A>, settings: Arc<Settings>, resolver: Resolver, info: ConnInfo) {
    let resolved =
        tokio::time::timeout(settings.header_read_timeout, resolver.resolve_request()).await;
    let (req, stream) = match resolved {
        Ok(Ok(resolved)) => resolved,
        Ok(Err(e)) => {
            // Malformed or oversized heads are answered by h3 itself (400-like reset, 431).
            tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 request head refused");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "HTTP/3 request head not in time");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let head_only = req.method() == Method::HEAD;
    let resp = match too_many_headers(&*app, settings.transport.max_headers, &req) {
        Some(refused) => refused,
        None => {
            let mut req = req.map(|()| H3Body::new(recv));
            host_from_authority(&mut req);
            app.answer(req, info).await
        }
    };
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let respond = async {
        send.send_response(Response::from_parts(parts, ())).await?;
        if !head_only && !body.is_empty() {
            send.send_data(body).await?;
        }
        send.finish().await
    };
    // A client that does not read its answer is not waited on past the body deadline.
    match tokio::time::timeout(settings.body_timeout, respond).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(peer = %info.peer, error = %e, "HTTP/3 response not sent"),
        Err(_) => tracing::debug!(peer = %info.peer, "HTTP/3 response not taken in time"),
    }
}

/// The body of an HTTP/3 request, read from the receive side of its stream: an
/// [`http_body::Body`](Body) like hyper's, so the handler applies the same caps and deadlines.
pub struct H3Body {
    recv: RecvStream,
    done: bool,
}

impl H3Body {
    fn new(recv: RecvStream) -> Self {
        Self { recv, done: false }
    }
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.recv.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Ok(None)) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
