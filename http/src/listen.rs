//! The listeners: cleartext TCP (HTTP/1.1 and HTTP/2 with prior knowledge), TLS on TCP
//! (HTTP/1.1 and HTTP/2 by ALPN), QUIC on UDP at the TLS port number (HTTP/3), and the admin
//! listener (cleartext TCP). One accept loop serves each, holding one of its connection slots
//! per open connection (`max_connections`, shared by cleartext and TLS; `admin_max_connections`;
//! `quic_max_connections`), and one drain ends them all: on shutdown every listener stops
//! accepting, in-flight requests of every protocol finish within a grace period, what is left
//! is closed, and the app is closed once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::accept::{AtCap, Listener, SHUTDOWN_GRACE, Stop, accept_loop};
use crate::answer::{ConnInfo, Endpoint};
use crate::app::{App, Bound, ListenError};
use crate::settings::Settings;
use crate::tls::Certified;
use crate::{quic, tcp};

/// The bound sockets: cleartext TCP; with `tls_listen`, TLS on TCP and (with `http3`) QUIC on
/// UDP at the same port number; with `admin_listen`, the admin listener.
#[derive(Debug)]
pub struct Listeners {
    settings: Arc<Settings>,
    plain: TcpListener,
    tls: Option<TlsListeners>,
    admin: Option<TcpListener>,
    bound: Bound,
}

struct TlsListeners {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    quic: Option<quinn::Endpoint>,
    certified: Certified,
}

impl std::fmt::Debug for TlsListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListeners")
            .field("quic", &self.quic.is_some())
            .field("certified", &self.certified)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// Binds every listener `settings` asks for. With TLS on port 0, TCP is bound first and QUIC
    /// takes the port TCP got (retried a few times should that UDP port be taken).
    pub async fn bind(settings: Settings) -> Result<Self, ListenError> {
        let plain = bind_tcp(settings.listen).await?;
        let http = local_addr(&plain, settings.listen)?;
        let admin = match settings.admin_listen {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let admin_addr = match (&admin, settings.admin_listen) {
            (Some(listener), Some(addr)) => Some(local_addr(listener, addr)?),
            _ => None,
        };
        let mut bound = Bound {
            http,
            https: None,
            quic: None,
            admin: admin_addr,
        };
        let Some(tls_addr) = settings.tls_listen else {
            return Ok(Self {
                settings: Arc::new(settings),
                plain,
                tls: None,
                admin,
                bound,
            });
        };
        let certified = Certified::load_or_generate(&settings)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(certified.tcp_config()?);
        let quic_config = if settings.http3 {
            Some(quic::server_config(&certified, &settings)?)
        } else {
            None
        };
        let attempts = if tls_addr.port() == 0 { 5 } else { 1 };
        let mut attempt = 0;
        let (tcp, addr, quic) = loop {
            attempt += 1;
            let tcp = bind_tcp(tls_addr).await?;
            let addr = local_addr(&tcp, tls_addr)?;
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
        bound.https = Some(addr);
        bound.quic = quic.as_ref().and_then(|q| q.local_addr().ok());
        Ok(Self {
            settings: Arc::new(settings),
            plain,
            tls: Some(TlsListeners {
                tcp,
                acceptor,
                quic,
                certified,
            }),
            admin,
            bound,
        })
    }

    /// Only a cleartext TCP listener, with default settings otherwise (what [`serve`] runs).
    pub fn from_tcp(plain: TcpListener, settings: Settings) -> io::Result<Self> {
        let http = plain.local_addr()?;
        Ok(Self {
            settings: Arc::new(settings),
            plain,
            tls: None,
            admin: None,
            bound: Bound {
                http,
                https: None,
                quic: None,
                admin: None,
            },
        })
    }

    /// Adds an admin listener (what tests that start [`serve`] use).
    pub fn with_admin(mut self, admin: TcpListener) -> io::Result<Self> {
        self.bound.admin = Some(admin.local_addr()?);
        self.admin = Some(admin);
        Ok(self)
    }

    /// The addresses.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The cleartext TCP address (HTTP/1.1, HTTP/2 with prior knowledge).
    pub fn http_addr(&self) -> SocketAddr {
        self.bound.http
    }

    /// The TLS address (HTTP/1.1 and HTTP/2 on TCP), when TLS is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.bound.https
    }

    /// The QUIC address (HTTP/3 on UDP, same port as TLS), when HTTP/3 is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.bound.quic
    }

    /// The admin address, when there is an admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.bound.admin
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

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ListenError> {
    listener.local_addr().map_err(|source| ListenError::Bind {
        what: "TCP",
        addr,
        source,
    })
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on `listener`, with default settings otherwise,
/// until `shutdown` resolves; then drains and closes the app (see [`serve_all`]).
pub async fn serve<A: App>(
    app: Arc<A>,
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_all(app, Listeners::from_tcp(listener, settings)?, shutdown).await
}

/// Serves every listener until `shutdown` resolves; then stops accepting on all of them, lets
/// in-flight requests of every protocol finish within a grace period (connections still open
/// after it are closed), and closes the app once.
pub async fn serve_all<A: App>(
    app: Arc<A>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Listeners {
        settings,
        plain,
        tls,
        admin,
        bound,
    } = listeners;
    app.listening(&bound);
    let (stop_tx, stop_rx) = watch::channel(None);
    let stop = Stop(stop_rx);
    let alt_svc = bound
        .quic
        .and_then(|a| HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", a.port())).ok());
    let shared = Arc::new(tcp::Shared::new(Arc::clone(&app), &settings, alt_svc));
    let transport = &settings.transport;
    let tcp_slots = Arc::new(Semaphore::new(transport.max_connections));
    let mut open = crate::OpenConnections::default();
    open.add("tcp", &tcp_slots, transport.max_connections);
    let mut loops = JoinSet::new();
    let tcp_serve = |tls: Option<tokio_rustls::TlsAcceptor>, endpoint: Endpoint| {
        let shared = Arc::clone(&shared);
        move |stream: TcpStream, peer, permit, stop| {
            let info = ConnInfo { peer, endpoint };
            tcp::connection(stream, info, tls.clone(), Arc::clone(&shared), stop, permit)
        }
    };
    let tcp_loop = |listener, slots, what, serve| {
        accept_loop(
            TcpAcceptor(Some(listener)),
            slots,
            AtCap::Wait,
            stop.clone(),
            what,
            serve,
        )
    };
    loops.spawn(tcp_loop(
        plain,
        Arc::clone(&tcp_slots),
        "tcp",
        tcp_serve(None, Endpoint::Public),
    ));
    if let Some(tls) = tls {
        loops.spawn(tcp_loop(
            tls.tcp,
            Arc::clone(&tcp_slots),
            "tls",
            tcp_serve(Some(tls.acceptor), Endpoint::Public),
        ));
        if let Some(endpoint) = tls.quic {
            let slots = Arc::new(Semaphore::new(transport.quic_max_connections));
            open.add("quic", &slots, transport.quic_max_connections);
            let (app, settings) = (Arc::clone(&app), Arc::clone(&settings));
            let serve = move |incoming, _peer, permit, stop| {
                quic::connection(
                    incoming,
                    Arc::clone(&app),
                    Arc::clone(&settings),
                    stop,
                    permit,
                )
            };
            loops.spawn(accept_loop(
                endpoint,
                slots,
                AtCap::Refuse,
                stop.clone(),
                "quic",
                serve,
            ));
        }
    }
    if let Some(admin) = admin {
        let slots = Arc::new(Semaphore::new(transport.admin_max_connections.max(1)));
        open.add("admin", &slots, transport.admin_max_connections.max(1));
        loops.spawn(tcp_loop(
            admin,
            slots,
            "admin",
            tcp_serve(None, Endpoint::Admin),
        ));
    }
    drop(stop);
    app.connections(open);
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(Some(Instant::now() + SHUTDOWN_GRACE));
    while let Some(done) = loops.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a listener task failed");
        }
    }
    drop(shared);
    app.close().await
}

/// A TCP listening socket; dropped (closed) when shutdown begins.
struct TcpAcceptor(Option<TcpListener>);

impl Listener for TcpAcceptor {
    type Conn = TcpStream;

    async fn accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match &self.0 {
            Some(listener) => Some(listener.accept().await),
            None => None,
        }
    }

    fn refuse(conn: TcpStream) {
        drop(conn);
    }

    fn stop_accepting(&mut self) {
        self.0 = None;
    }

    async fn finish(self) {}
}
