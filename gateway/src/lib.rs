//! The Pulse ingest gateway: it admits batches from publisher pages (site key, origin), decodes
//! them with hard caps, appends the accepted events durably, asks the scorer for a decision and
//! answers with both. It also serves the tracker and the demo site.
//!
//! IO lives in [`serve_all`] (sockets: TCP, TLS, QUIC) and the sink (disk); admission, decoding and the scorer's core
//! are pure and tested without either.

mod admin;
mod admit;
mod config;
mod decode;
mod entitlements;
mod ingest;
mod listen;
mod metrics;
mod quic;
mod ratelimit;
mod server;
mod signing;
mod sink;
mod statics;
mod tls;

pub use admin::{
    ChangeError, TOKEN_ENV, TokenSource, admin_token, apply_limits, merge_limits, serve_admin,
    token_file, write_back,
};
pub use admit::{Admitted, Sites};
pub use config::{
    BUILTIN_BUNDLE, Config, ConfigError, IpNet, KafkaConfig, Limits, Millis, Rate, RateLimits,
    ScorerConfig, ServerConfig, SinkConfig, SinkKind, SiteConfig, Transport,
};
pub use decode::{DecodeError, Encoding, decode, sniff};
pub use entitlements::{
    MAX_ENTITLEMENTS, MAX_TOKEN_BYTES, TokenError, TokenKeySpec, TokenKeys, Vouched, sign_hs256,
};
pub use ingest::{ApiError, BundleChange, Gateway, now_ms};
pub use listen::{App, ListenError, Listeners, serve, serve_all};
pub use metrics::{Histogram, LIMIT_NAMES, Metrics};
pub use quic::H3Body;
pub use ratelimit::{Limited, RateLimiter, client_ip};
pub use server::{ConnInfo, Protocol, Resp, handle};
pub use signing::{DECISION_TTL_S, DecisionSigner, SigningError};
pub use sink::{
    AppliedGuard, BoxFuture, EmbeddedStore, Receipt, Sink, SinkBatch, SinkError, StoredEvent,
};
pub use tls::{Certified, TlsError};
