//! The gateway as the listeners see it: every request of the public listeners goes to the
//! public routes, every request of the admin listener to the admin API; the listeners' addresses
//! become the gateway's own origins; closing flushes and closes the stores.

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::Request;
use hyper::body::Body;
use pulse_http::{App, Bound, ConnInfo, Endpoint, Protocol, Resp};

use crate::gateway::Gateway;
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
        match conn.endpoint {
            Endpoint::Admin => admin::handle(self, req).await,
            Endpoint::Public => {
                let protocol = Protocol::of(req.version());
                let resp = routes::route(self, req, conn).await;
                self.metrics.request(protocol, resp.status().as_u16());
                resp
            }
        }
    }

    fn count(&self, protocol: Protocol, status: u16) {
        self.metrics.request(protocol, status);
    }

    fn listening(&self, bound: &Bound) {
        self.control().listening(bound);
    }

    async fn close(&self) -> io::Result<()> {
        Self::close(self).await.map_err(io::Error::other)
    }
}
