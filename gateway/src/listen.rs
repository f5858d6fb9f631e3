//! The listeners: they accept connections, speak the protocols and hand every request to
//! [`handle`]. Cleartext TCP serves HTTP/1.1 and HTTP/2 with prior knowledge. Shutdown stops
//! accepting, lets in-flight requests finish within a grace period, then flushes the sink.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::ingest::Gateway;
use crate::server::{ConnInfo, handle};

/// How long in-flight requests get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish (up to a grace period) and closes the sink and
/// the store.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let transport = &gateway.config.transport;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config.limits.header_read_timeout_ms.get())
        .max_buf_size(transport.max_header_bytes)
        .max_headers(transport.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(transport.h2_max_concurrent_streams)
        .max_header_list_size(transport.max_header_bytes as u32);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let gw = Arc::clone(&gateway);
        let conn_info = ConnInfo { peer };
        let service = hyper::service::service_fn(move |req| {
            let gw = Arc::clone(&gw);
            async move { Ok::<_, std::convert::Infallible>(handle(&gw, req, conn_info).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    gateway.close().await.map_err(std::io::Error::other)
}
