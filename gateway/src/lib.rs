//! The Pulse ingest gateway: it admits batches from publisher pages (site key, origin, rate
//! limits), decodes them with hard caps, parses each once, appends the accepted events durably,
//! asks the scorer for a decision and answers with both. It also serves the tracker and the
//! demo site, and the admin API.
//!
//! The listeners live in `pulse-http` (shared with the benchmark floor); here: the ingest path
//! (`ingest`, `decide`, `decisions`: the decision log and the shadow's comparison), the control side (`control`, `admit`, `ratelimit`), the stores (`log`
//! for the event and dead-letter logs, `state` for reader state) and the sinks. IO lives in the
//! log writer, the stores and the sinks; admission, parsing and the scorer's core are pure.

mod admin;
mod admit;
mod app;
mod backtest;
mod cluster;
mod config;
mod control;
mod decide;
mod decisions;
mod dictionary;
mod entitlements;
mod gaps;
mod gateway;
mod inflight;
mod ingest;
mod log;
mod metrics;
mod notify;
mod ops;
mod pool;
mod ratelimit;
mod routes;
mod segment;
mod signing;
mod sink;
mod state;
mod statics;
mod tier;
mod token;

pub use admit::{Admitted, OwnOrigins, Sites, Trust};
pub use app::{Starting, serve};
pub use backtest::{Backtest, BacktestError, BacktestRun, backtest};
pub use cluster::ControlBus;
pub use config::{
    BUILTIN_BUNDLE, ClusterConfig, Compression, Config, ConfigError, DeadLetters,
    DecisionLogConfig, DictionaryConfig, EventLogConfig, IpNet, KafkaConfig, Limits,
    MAX_DICTIONARY_BYTES, MAX_RATE_LIMIT_KEYS, Millis, Rate, RateLimits, Role, ScorerConfig,
    ServerConfig, SinkConfig, SinkKind, SiteConfig, Transport,
};
pub use control::{Activated, Applied, ChangeError, Control, merge_limits, write_back};
pub use decide::{BundleChange, Decided, Decider, ShadowChange};
pub use entitlements::{
    MAX_ENTITLEMENTS, MAX_TOKEN_BYTES, TokenError, TokenKeySpec, TokenKeys, Vouched, sign_hs256,
};
pub use gateway::{Gateway, OpenError};
pub use ingest::{Ingest, now_ms};
pub use log::{
    AppliedGuard, DecisionLogSettings, Erased, EventLog, LogError, LogFiles, LogSettings,
    StoredEvent,
};
pub use metrics::{AUTH_RESULTS, Format, Handler, Latency, Metrics, Snapshot};
pub use notify::notify;
pub use pool::BufPool;
pub use ratelimit::{Limited, RateLimiter, client_ip};
pub use signing::{DECISION_TTL_S, DecisionSigner, REUSE_S, Signed, SigningError};
pub use sink::{BoxFuture, EmbeddedSink, Receipt, RecordKind, Records, Sink, SinkBatch, SinkError};
pub use token::{TOKEN_ENV, TokenSource, admin_token, token_file};

// The listeners the gateway runs on, for its binary and its tests.
pub use pulse_http::{App, Bound, ConnInfo, Endpoint, Listeners, Protocol, serve_all};
