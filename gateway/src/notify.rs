//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd passes a datagram
//! socket in `NOTIFY_SOCKET`, and the gateway says `READY=1` once it serves, `RELOADING=1` then
//! `READY=1` around a SIGHUP reload, and `STOPPING=1` when it drains. Without the variable
//! (any other way of running it) nothing is sent. `examples/pulse.service` is such a unit.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, when it listens; failures are
/// logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot tell systemd (NOTIFY_SOCKET)");
    }
}
