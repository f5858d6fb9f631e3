//! The gateway as the listeners see it: every request of the public listeners goes to the
//! public routes, every request of the admin listener to the admin API; the listeners' addresses
//! become the gateway's own origins; closing flushes and closes the stores.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::Request;
use hyper::body::Body;
use pulse_http::{App, Bound, ConnInfo, Endpoint, OpenConnections, Protocol, Resp};

use crate::gateway::Gateway;
use crate::metrics::Handler;
use crate::{admin, routes};

/// Serves the gateway's public routes (HTTP/1.1 and HTTP/2) on `listener`, with the limits of
/// its configuration, until `shutdown` resolves; then drains and closes it. The admin API is not
/// served (see [`Listeners::with_admin`](pulse_http::Listeners::with_admin) for that).
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut settings = gateway.config.listen_settings();
    settings.admin_listen = None;
    pulse_http::serve(gateway, listener, settings, shutdown).await
}

impl App for Gateway {
    async fn answer<B>(&self, req: Request<B>, conn: ConnInfo) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let protocol = Protocol::of(req.version());
        let (handler, resp) = match conn.endpoint {
            Endpoint::Admin => (
                Handler::admin(req.uri().path()),
                admin::handle(self, req).await,
            ),
            Endpoint::Public => (
                Handler::public(req.uri().path()),
                routes::route(self, req, conn).await,
            ),
        };
        let status = resp.status().as_u16();
        self.metrics
            .request(handler, protocol, status, started.elapsed());
        resp
    }

    fn count(&self, protocol: Protocol, path: &str, status: u16) {
        self.metrics.count(Handler::public(path), protocol, status);
    }

    fn listening(&self, bound: &Bound) {
        self.control().listening(bound);
        self.start_tier(bound.admin);
    }

    fn connections(&self, open: OpenConnections) {
        self.set_connections(open);
    }

    async fn close(&self) -> io::Result<()> {
        Self::close(self).await.map_err(io::Error::other)
    }
}

/// The gateway while it opens (bringing reader state up to date can take minutes on a large
/// store): the listeners answer from the first moment, `/healthz` with ok, `/readyz` with 503
/// `starting`, everything else with 503 `store_unavailable` and `Retry-After` (the tracker keeps
/// its batches and retries); once [`Starting::ready`] hands it the open gateway, every request
/// goes there.
#[derive(Debug, Default)]
pub struct Starting {
    gateway: std::sync::OnceLock<Arc<Gateway>>,
    bound: std::sync::Mutex<Option<Bound>>,
    connections: std::sync::Mutex<Option<OpenConnections>>,
}

impl Starting {
    /// The gateway is open: from now on it answers.
    pub fn ready(&self, gateway: Arc<Gateway>) {
        // Under the lock `listening` takes, so the gateway learns the addresses exactly once.
        let bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = bound.as_ref() {
            App::listening(&*gateway, b);
        }
        let open = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = open.as_ref() {
            gateway.set_connections(open.clone());
        }
        let _ = self.gateway.set(gateway);
    }

    /// The open gateway, once there is one.
    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.gateway.get()
    }
}

impl App for Starting {
    async fn answer<B>(&self, req: Request<B>, conn: ConnInfo) -> Resp
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if let Some(gw) = self.gateway.get() {
            return App::answer(&**gw, req, conn).await;
        }
        let status = |code: u16, body: &'static [u8]| {
            pulse_http::json(
                hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE),
                Bytes::from_static(body),
                None,
            )
        };
        match (conn.endpoint, req.uri().path()) {
            (Endpoint::Public, "/healthz") => status(200, b"{\"status\":\"ok\"}"),
            (Endpoint::Public, "/readyz") => status(
                503,
                b"{\"status\":\"not_ready\",\"reasons\":[\"starting\"]}",
            ),
            _ => {
                let mut e = pulse_http::ApiError::new(
                    pulse_protocol::ErrorCode::StoreUnavailable,
                    "the gateway is starting (bringing reader state up to date): retry shortly",
                );
                e.retry_after = Some(1);
                pulse_http::error(&e, None)
            }
        }
    }

    fn count(&self, protocol: Protocol, path: &str, status: u16) {
        if let Some(gw) = self.gateway.get() {
            gw.count(protocol, path, status);
        }
    }

    fn connections(&self, open: OpenConnections) {
        let mut stored = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        *stored = Some(open.clone());
        if let Some(gw) = self.gateway.get() {
            gw.set_connections(open);
        }
    }

    fn listening(&self, bound: &Bound) {
        let mut stored = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        *stored = Some(bound.clone());
        if let Some(gw) = self.gateway.get() {
            App::listening(&**gw, bound);
        }
    }

    async fn close(&self) -> io::Result<()> {
        match self.gateway.get() {
            Some(gw) => App::close(&**gw).await,
            None => Ok(()),
        }
    }
}
