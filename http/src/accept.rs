//! The one accept loop and the one drain, for every listener (TCP cleartext, TLS, admin, QUIC):
//! connections are taken until shutdown, each holding one of its listener's slots while open;
//! on shutdown the listener stops accepting, open connections get until the grace deadline to
//! finish, and the rest are closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long in-flight requests get to finish after shutdown is asked for.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long an accept loop backs off after an accept error (out of file descriptors and the
/// like) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The shutdown signal as the listeners see it: once asked for, it carries the deadline by which
/// in-flight requests must be done.
#[derive(Clone, Debug)]
pub(crate) struct Stop(pub(crate) watch::Receiver<Option<Instant>>);

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
    fn deadline(&self) -> Option<Instant> {
        *self.0.borrow()
    }
}

/// A listening socket the accept loop takes connections from.
pub(crate) trait Listener: Send + 'static {
    /// An accepted connection, not served yet.
    type Conn: Send + 'static;

    /// The next connection; `None` once the listener is closed for good.
    fn accept(
        &mut self,
    ) -> impl Future<Output = Option<io::Result<(Self::Conn, SocketAddr)>>> + Send;

    /// Turns away a connection that found every slot taken (listeners that refuse at the cap).
    fn refuse(conn: Self::Conn);

    /// Stops taking new connections (shutdown has begun).
    fn stop_accepting(&mut self);

    /// Runs once every connection has been drained.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// What a listener does with a connection when every slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtCap {
    /// Hold it and stop accepting until a slot frees (TCP: the kernel's backlog queues the
    /// rest).
    Wait,
    /// Refuse it at once (QUIC).
    Refuse,
}

/// The one accept loop: takes connections from `listener` until shutdown, gives each one of
/// the listener's `slots` (waiting or refusing at the cap, per `at_cap`) and serves it with
/// `serve` on a task of its own; then stops accepting and drains.
pub(crate) async fn accept_loop<L, F, Fut>(
    mut listener: L,
    slots: Arc<Semaphore>,
    at_cap: AtCap,
    mut stop: Stop,
    what: &'static str,
    serve: F,
) where
    L: Listener,
    F: Fn(L::Conn, SocketAddr, OwnedSemaphorePermit, Stop) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.requested() => break,
        };
        let (conn, peer) = match accepted {
            None => break,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match at_cap {
            AtCap::Refuse => match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    L::refuse(conn);
                    continue;
                }
            },
            // Hold this one and accept no other until a connection closes.
            AtCap::Wait => tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break, // closed: never happens, the semaphore lives here
                },
                _ = stop.requested() => break,
            },
        };
        connections.spawn(serve(conn, peer, permit, stop.clone()));
    }
    listener.stop_accepting();
    drain(&mut connections, &stop, what).await;
    listener.finish().await;
}

/// Waits for a listener's connection tasks until the shutdown deadline, then aborts the rest
/// (their requests were not answered, so nothing acknowledged is lost).
async fn drain(tasks: &mut JoinSet<()>, stop: &Stop, what: &str) {
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
