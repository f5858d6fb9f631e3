//! What the listeners need to know: where to listen, the certificate, and the limits of every
//! protocol. A server's configuration file fills it in (the gateway's `[server]`, `[limits]`
//! and `[transport]`); `Transport` and `Millis` are parsed from there directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration in milliseconds, at least 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Millis(Duration);

impl Millis {
    /// `ms` milliseconds, at least 1.
    pub const fn from_ms(ms: u64) -> Self {
        Self(Duration::from_millis(if ms == 0 { 1 } else { ms }))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<u64> for Millis {
    type Error = String;

    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        if ms == 0 {
            Err("a duration must be at least 1 ms".into())
        } else {
            Ok(Self(Duration::from_millis(ms)))
        }
    }
}

impl From<Millis> for u64 {
    fn from(m: Millis) -> Self {
        m.0.as_millis() as Self
    }
}

/// `[transport]`: connection-level limits of the listeners. Every limit has a safe default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transport {
    /// Open TCP connections (cleartext and TLS together); past it the gateway stops accepting
    /// until one closes. Default 10000.
    pub max_connections: usize,
    /// Open connections to the admin listener; past it the next waits until one closes.
    /// Default 64.
    pub admin_max_connections: usize,
    /// Largest request head (request line and headers) in bytes: HTTP/1.1 read buffer, HTTP/2
    /// header list, HTTP/3 field section. At least 8192. Default 16384.
    pub max_header_bytes: usize,
    /// Most headers in one HTTP/1.1 request. Default 64.
    pub max_headers: usize,
    /// Time for a TLS handshake, in ms. Default 10000.
    pub tls_handshake_timeout_ms: Millis,
    /// HTTP/2 streams a connection may have open at once. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Open QUIC connections; past it new ones are refused. Default 10000.
    pub quic_max_connections: usize,
    /// HTTP/3 request streams a QUIC connection may have open at once. Default 100.
    pub quic_max_streams: u32,
    /// A QUIC connection idle this long is closed, in ms. Default 30000.
    pub quic_idle_timeout_ms: Millis,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            admin_max_connections: 64,
            max_header_bytes: 16_384,
            max_headers: 64,
            tls_handshake_timeout_ms: Millis(Duration::from_secs(10)),
            h2_max_concurrent_streams: 100,
            quic_max_connections: 10_000,
            quic_max_streams: 100,
            quic_idle_timeout_ms: Millis(Duration::from_secs(30)),
        }
    }
}

/// Where the listeners listen, their certificate, and their limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Cleartext TCP: HTTP/1.1 and HTTP/2 with prior knowledge.
    pub listen: SocketAddr,
    /// TLS on TCP (HTTP/1.1 and HTTP/2 by ALPN) and, with `http3`, QUIC on UDP at the same
    /// port number.
    pub tls_listen: Option<SocketAddr>,
    /// HTTP/3 beside TLS.
    pub http3: bool,
    /// The admin listener (HTTP/1.1 and HTTP/2, cleartext), when there is one.
    pub admin_listen: Option<SocketAddr>,
    /// Certificate chain (PEM); without it and `tls_key` a self-signed one is generated.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Where a generated certificate is written (`<folder>/tls/`).
    pub data: PathBuf,
    /// Connection-level limits.
    pub transport: Transport,
    /// Time for a request head to arrive; also how long an idle connection is kept.
    pub header_read_timeout: Duration,
    /// Time for a request body to arrive (and, on HTTP/3, for an answer to be taken).
    pub body_timeout: Duration,
    /// Largest request body, in bytes (it sizes QUIC's flow-control windows).
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_listen: None,
            http3: true,
            admin_listen: None,
            tls_cert: None,
            tls_key: None,
            data: PathBuf::from("data"),
            transport: Transport::default(),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body_bytes: pulse_protocol::DEFAULT_MAX_BODY_BYTES,
        }
    }
}
