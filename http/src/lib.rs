//! What every Pulse server shares on the HTTP side: the listeners (HTTP/1.1 and HTTP/2 on
//! cleartext TCP and TLS, HTTP/3 on QUIC, and the admin listener) with one accept loop and one
//! drain, the answers (protocol label, status + machine-readable reason, CORS), and the body
//! decoder (zstd, gzip, JSON, capped). The gateway and the benchmark floor both run on it.
//!
//! IO lives in the listeners (sockets) and the certificate files ([`Certified`]); answers and
//! decoding are pure.

mod accept;
mod answer;
mod app;
mod decode;
mod listen;
mod quic;
mod settings;
mod tcp;
mod tls;

pub use answer::{
    ApiError, ConnInfo, Endpoint, Protocol, Resp, bearer, cors, error, header_str, json,
    query_param, shorten,
};
pub use app::{App, Bound, ListenError, OpenConnections};
pub use decode::{DecodeError, ZSTD_WINDOW_LOG_MAX, decode, decode_to_vec, sniff};
pub use listen::{Listeners, serve, serve_all};
pub use quic::H3Body;
pub use settings::{Millis, Settings, Transport};
pub use tls::{Certified, TlsError};
