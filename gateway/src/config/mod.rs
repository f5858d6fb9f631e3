//! `pulse.toml`: the gateway's configuration, read once into typed values. Relative paths in the
//! file are relative to the file's own folder. Every field is documented with its unit and default;
//! `examples/pulse.toml` shows them all.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pulse_http::{Millis, Transport};
use pulse_protocol::{RateLimit, is_token};
use pulse_scorer::{Bundle, EngineConfig};
use serde::{Deserialize, Serialize};

mod cluster;
mod dictionary;
mod env;
mod limits;
mod sink;
mod site;

pub use cluster::{ClusterConfig, Role};
pub use dictionary::{DictionaryConfig, MAX_DICTIONARY_BYTES};
pub use limits::{IpNet, Limits, MAX_RATE_LIMIT_KEYS, Rate, RateLimits};
pub use sink::{
    Compression, DeadLetters, DecisionLogConfig, EventLogConfig, KafkaConfig, SinkConfig, SinkKind,
};
pub use site::SiteConfig;

/// The bundle the gateway runs when `[scorer] bundle` names none: the demo's meter.
pub const BUILTIN_BUNDLE: &str = include_str!("../../../examples/bundles/meter.toml");

/// A configuration that could not be loaded; lists every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key path and position.
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway listens and keeps its files.
    #[serde(default)]
    pub server: ServerConfig,
    /// Size caps and deadlines of the ingest path.
    #[serde(default)]
    pub limits: Limits,
    /// The scorer: its bundle and its state cache.
    #[serde(default)]
    pub scorer: ScorerConfig,
    /// The meter settings of earlier versions, now in the bundle; only read to say so.
    #[serde(default, skip_serializing)]
    pub meter: Option<toml::Value>,
    /// Connection-level limits of the listeners, per protocol.
    #[serde(default)]
    pub transport: Transport,
    /// Rate limits per client address, per site and global; tunable while running.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Where accepted events are made durable.
    #[serde(default)]
    pub sink: SinkConfig,
    /// How much of refused input the embedded store keeps, and for how long.
    #[serde(default)]
    pub dead_letters: DeadLetters,
    /// How much of the embedded event log is kept (all of it by default).
    #[serde(default)]
    pub event_log: EventLogConfig,
    /// The log of every decision with its feature snapshot (the next model's training set).
    #[serde(default)]
    pub decision_log: DecisionLogConfig,
    /// The sites allowed to send events, each with its key and origins.
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// Which tier this process is when gateways and scorers run apart on Kafka.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The dictionaries of compact bodies, trained on each site's traffic.
    #[serde(default)]
    pub dictionary: DictionaryConfig,
    /// The file this configuration was read from (for writing limits back and for SIGHUP).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[scorer]`: the bundle of features and decision, and where reader state lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerConfig {
    /// The bundle file (TOML: settings, features, decision), relative to this file. SIGHUP
    /// re-reads it. Default: the built-in demo meter (`examples/bundles/meter.toml`).
    pub bundle: Option<PathBuf>,
    /// Memory for reader state, in MiB; past it, readers not used lately are evicted (after
    /// their state was written) and reloaded when they return. Default 64.
    pub cache_mb: u32,
    /// Partitions of reader state (a Kafka-compatible hash of the reader key). Changing it
    /// rebuilds state from the log. 1 to 1024, default 32.
    pub partitions: u16,
    /// How often changed reader state is written to the store, in ms (sooner when unwritten
    /// changes hold the cache's memory). A reader changed by many batches meanwhile is written
    /// once; a crash replays the log from the last write. Default 10000.
    pub flush_interval_ms: Millis,
    /// How often reader state (in memory and stored) is swept for readers past the bundle's
    /// TTL, in seconds. Default 600.
    pub sweep_interval_s: u32,
    /// The request header that carries the reader's country (two letters), set by the CDN or
    /// proxy in front of the gateway (`CF-IPCountry`, `CloudFront-Viewer-Country`, ...); rules
    /// read it as `request.country`. Default none: the country is unknown.
    pub country_header: Option<String>,
    /// Whether a decision's snapshot in the decision log holds every feature's value (for
    /// training a first model), not only those the decision read. Default false.
    pub full_snapshots: bool,
    /// A candidate bundle (TOML), relative to this file, that decides beside the active one on
    /// live traffic: the page sees only the active one's decision; differences are counted in
    /// `/metrics` and the shadow's decision goes into the decision log. It must have the
    /// bundle's features. SIGHUP re-reads it. Default: none.
    pub shadow: Option<PathBuf>,
    /// Most differences between the shadow's and the active bundle's actions logged (tracing,
    /// level info) per second; 0 logs none. Default 10.
    pub shadow_log_per_second: u32,
    /// Whether the heap (the reader-state cache above all) is put in transparent huge pages:
    /// where the kernel gives them on request (`madvise`) and glibc is the allocator, the
    /// gateway starts itself again with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, which cuts the
    /// TLB misses of reading reader state (BENCH.md section 2) where glibc gives the pages (its
    /// main heap and large blocks; glibc 2.36 leaves other threads' arenas in small pages).
    /// Default true.
    pub huge_pages: bool,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            bundle: None,
            cache_mb: 64,
            partitions: 32,
            flush_interval_ms: Millis::from_ms(10000),
            sweep_interval_s: 600,
            country_header: None,
            full_snapshots: false,
            shadow: None,
            shadow_log_per_second: 10,
            huge_pages: true,
        }
    }
}

impl ScorerConfig {
    /// The engine's settings.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            partitions: self.partitions,
            cache_bytes: (self.cache_mb as usize) << 20,
            flush_interval: self.flush_interval_ms.get(),
            sweep_interval: Duration::from_secs(u64::from(self.sweep_interval_s)),
            full_snapshots: self.full_snapshots,
        }
    }

    /// Reads and compiles the bundle; every problem is listed, prefixed with the file.
    pub fn load_bundle(&self) -> Result<Bundle, ConfigError> {
        let (bundle, name) = match &self.bundle {
            None => (
                Bundle::compile(BUILTIN_BUNDLE),
                "the built-in bundle".to_owned(),
            ),
            Some(path) => (Bundle::read(path), path.display().to_string()),
        };
        bundle.map_err(|e| {
            ConfigError::Invalid(
                e.0.iter()
                    .map(|p| format!("scorer.bundle ({name}): {p}"))
                    .collect(),
            )
        })
    }

    /// Reads and compiles the bundle and the shadow bundle (none when `shadow` is not set),
    /// listing every problem of both; the shadow must have the bundle's features, since it
    /// decides on the same reader state.
    pub fn load_bundles(&self) -> Result<(Bundle, Option<Bundle>), ConfigError> {
        let bundle = self.load_bundle();
        let shadow = self.shadow.as_ref().map(|path| {
            Bundle::read(path).map_err(|e| {
                e.0.iter()
                    .map(|p| format!("scorer.shadow ({}): {p}", path.display()))
                    .collect::<Vec<_>>()
            })
        });
        match (bundle, shadow) {
            (Ok(b), None) => Ok((b, None)),
            (Ok(b), Some(Ok(s))) if s.feature_set == b.feature_set => Ok((b, Some(s))),
            (Ok(b), Some(Ok(s))) => Err(ConfigError::Invalid(vec![format!(
                "scorer.shadow ({}): {} (its features differ from those of {}, {})",
                self.shadow
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                pulse_scorer::EngineError::ShadowFeatures,
                b.name,
                s.name
            )])),
            (Ok(_), Some(Err(shadow))) => Err(ConfigError::Invalid(shadow)),
            (Err(ConfigError::Invalid(mut problems)), shadow) => {
                if let Some(Err(more)) = shadow {
                    problems.extend(more);
                }
                Err(ConfigError::Invalid(problems))
            }
            (Err(e), _) => Err(e),
        }
    }
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Cleartext TCP address for HTTP/1.1 and HTTP/2 (prior knowledge). Default `127.0.0.1:8080`;
    /// port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS address: HTTP/1.1 and HTTP/2 (ALPN) on TCP and HTTP/3 on UDP, same port. Default: none.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for TLS and QUIC. Without it (and `tls_key`) a self-signed
    /// certificate is generated at start and its SHA-256 fingerprint logged. Default: none.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`. Default: none.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTP/3 over QUIC on `tls_listen`'s port (UDP). Default true.
    #[serde(default = "default_true")]
    pub http3: bool,
    /// Admin address (limits API, `/metrics`), protected by `admin_token`. Default
    /// `127.0.0.1:9090`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API. `PULSE_ADMIN_TOKEN` overrides it; with neither, a random
    /// token is generated and written to `<data>/admin.token`. Default: none.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A read-only bearer token for `GET /metrics` on the admin listener (for Prometheus), which
    /// can change nothing; the admin token works there too. Default: none.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// The origins at which pages reach this gateway, as browsers send them in `Origin`
    /// (`https://pulse.example.com`), besides its own listen addresses: what a site with
    /// `allow_same_origin` admits. Needed behind a proxy, under a host name, or when listening
    /// on an unspecified address (`0.0.0.0`). Default: none.
    #[serde(default)]
    pub public_origins: Vec<String>,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed (addresses or CIDR
    /// blocks, e.g. `10.0.0.0/8`). Default: none (the socket's address is the client's).
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Folder of the embedded store (events, dead letters, reader state). Default `data`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Folder served at `/` (the demo publisher site); none when absent. Default: none.
    #[serde(default)]
    pub site_dir: Option<PathBuf>,
    /// A folder holding a built tracker (`pulse.js`, `pulse_bg.wasm`) to serve instead of the
    /// one embedded in the binary, e.g. `target/pulse-tracker` while working on the tracker: it
    /// is read again whenever its files change, and `/pulse.js` is revalidated on every load.
    /// Default: none (the embedded tracker, as `scripts/build-tracker.sh` built it before the
    /// gateway was built).
    #[serde(default)]
    pub tracker_dir: Option<PathBuf>,
    /// The Ed25519 key (PKCS#8 DER) decisions are signed with; generated on first start when
    /// the file does not exist (mode 0600). Its public key is served at `GET /v1/keys`.
    /// Default `<data>/decision-key.pk8`.
    #[serde(default)]
    pub decision_key: Option<PathBuf>,
    /// After SIGTERM, how long the gateway keeps serving while `/readyz` answers 503, so that
    /// a load balancer stops sending pages before the listeners close, in ms. Default 0.
    #[serde(default)]
    pub drain_delay_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

fn default_true() -> bool {
    true
}

fn default_data() -> PathBuf {
    PathBuf::from("data")
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            http3: true,
            admin_listen: default_admin_listen(),
            admin_token: None,
            metrics_token: None,
            public_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            data: default_data(),
            site_dir: None,
            tracker_dir: None,
            decision_key: None,
            drain_delay_ms: 0,
        }
    }
}

impl Config {
    /// Reads and checks a configuration file, with the `PULSE_<TABLE>__<KEY>` environment
    /// overrides (`config/env.rs`) applied; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse_with(&text, std::env::vars()).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.server.data = base.join(&config.server.data);
        config.server.tracker_dir = config.server.tracker_dir.map(|d| base.join(d));
        config.server.site_dir = config.server.site_dir.map(|d| base.join(d));
        config.server.tls_cert = config.server.tls_cert.map(|p| base.join(p));
        config.server.tls_key = config.server.tls_key.map(|p| base.join(p));
        config.server.decision_key = config.server.decision_key.map(|p| base.join(p));
        config.scorer.bundle = config.scorer.bundle.map(|p| base.join(p));
        config.scorer.shadow = config.scorer.shadow.map(|p| base.join(p));
        config.path = Some(path.to_owned());
        config.scorer.load_bundles()?;
        Ok(config)
    }

    /// What the listeners need: addresses, certificate files, limits of every protocol.
    pub fn listen_settings(&self) -> pulse_http::Settings {
        let server = &self.server;
        pulse_http::Settings {
            listen: server.listen,
            tls_listen: server.tls_listen,
            http3: server.http3,
            admin_listen: Some(server.admin_listen),
            tls_cert: server.tls_cert.clone(),
            tls_key: server.tls_key.clone(),
            data: server.data.clone(),
            transport: self.transport.clone(),
            header_read_timeout: self.limits.header_read_timeout_ms.get(),
            body_timeout: self.limits.body_timeout_ms.get(),
            max_body_bytes: self.limits.max_body_bytes,
        }
    }

    /// The configuration without a file: the defaults with the environment's overrides
    /// (relative paths relative to the working folder).
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self::parse_with("", std::env::vars())?;
        config.scorer.load_bundles()?;
        Ok(config)
    }

    /// Parses and checks configuration text with the overrides among `vars` (see
    /// `config/env.rs`) applied; paths stay as written.
    pub fn parse_with(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let overrides = env::overrides(vars);
        if overrides.is_empty() {
            return Self::parse(text);
        }
        let parse_error = |message: String| ConfigError::Parse {
            path: PathBuf::new(),
            message,
        };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let problems = env::apply(&mut doc, &overrides);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let names: Vec<&str> = overrides.iter().map(|(n, _, _)| n.as_str()).collect();
        let config: Self = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| {
                parse_error(format!("{e} (with the environment's {})", names.join(", ")))
            })?;
        config.check()?;
        tracing::info!(overrides = ?names, "configuration overridden by the environment");
        Ok(config)
    }

    /// Parses and checks configuration text (paths stay as written).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Every problem with values that parse, reported together.
    fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.meter.is_some() {
            problems.push(
                "[meter] moved into the bundle: see examples/bundles/meter.toml (limit, window) and set [scorer] bundle".to_owned(),
            );
        }
        if !(1..=1024).contains(&self.scorer.partitions) {
            problems.push(format!(
                "scorer.partitions must be between 1 and 1024, not {}",
                self.scorer.partitions
            ));
        }
        if self.scorer.cache_mb == 0 {
            problems.push("scorer.cache_mb must be at least 1".to_owned());
        }
        if self.scorer.sweep_interval_s == 0 {
            problems.push("scorer.sweep_interval_s must be at least 1".to_owned());
        }
        let l = &self.limits;
        if l.max_body_bytes == 0 {
            problems.push("limits.max_body_bytes must be at least 1".to_owned());
        }
        if l.max_decoded_bytes < l.max_body_bytes {
            problems
                .push("limits.max_decoded_bytes must be at least limits.max_body_bytes".to_owned());
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            problems.push("server.tls_cert and server.tls_key go together".to_owned());
        }
        if self.transport.max_header_bytes < 8192 {
            problems.push("transport.max_header_bytes must be at least 8192".to_owned());
        }
        problems.extend(self.rate_limits.problems(self.limits.max_body_bytes));
        problems.extend(self.dictionary.problems());
        let kafka = &self.sink.kafka;
        problems.extend(self.cluster.problems(
            self.sink.kind == SinkKind::Kafka,
            !kafka.control_topic.is_empty(),
            !kafka.state_topic.is_empty(),
        ));
        if let Err(problem) = self.sink.kafka.client_properties() {
            problems.push(problem);
        }
        for key in self.sink.kafka.properties.keys() {
            if matches!(
                key.as_str(),
                "enable.idempotence" | "acks" | "request.required.acks" | "bootstrap.servers"
            ) {
                problems.push(format!(
                    "sink.kafka.properties may not set {key:?} (idempotence and acks=all are fixed; brokers go in sink.kafka.brokers)"
                ));
            }
        }
        if self.dead_letters.max_bytes < 1 << 20 {
            problems.push("dead_letters.max_bytes must be at least 1048576".to_owned());
        }
        if self.dead_letters.retention_hours == 0 {
            problems.push("dead_letters.retention_hours must be at least 1".to_owned());
        }
        let d = &self.decision_log;
        if d.max_bytes < 1 << 20 {
            problems.push("decision_log.max_bytes must be at least 1048576".to_owned());
        }
        if d.retention_hours == 0 {
            problems.push("decision_log.retention_hours must be at least 1".to_owned());
        }
        if !(64 << 10..=256 << 20).contains(&d.queue_bytes) {
            problems.push(format!(
                "decision_log.queue_bytes must be 65536 to 268435456, not {}",
                d.queue_bytes
            ));
        }
        for (k, origin) in self.server.public_origins.iter().enumerate() {
            if !is_origin(origin) {
                problems.push(format!(
                    "server.public_origins[{k}] must be scheme://host[:port] without a path, not {origin:?}"
                ));
            }
        }
        let mut seen = HashMap::new();
        for (i, site) in self.sites.iter().enumerate() {
            if !is_token(&site.key) {
                problems.push(format!(
                    "sites[{i}].key must be 1 to 64 characters of [A-Za-z0-9_-]"
                ));
            }
            if let Some(j) = seen.insert(site.key.as_str(), i) {
                problems.push(format!("sites[{i}].key repeats sites[{j}].key"));
            }
            for (k, origin) in site.origins.iter().enumerate() {
                if !is_origin(origin) {
                    problems.push(format!(
                        "sites[{i}].origins[{k}] must be scheme://host[:port] without a path, not {origin:?}"
                    ));
                }
            }
            if let Err(ps) = site.tokens() {
                problems.extend(ps.into_iter().map(|p| format!("sites[{i}].{p}")));
            }
            if let Err(p) = site.server_secret() {
                problems.push(format!("sites[{i}].server_secret: {p}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Whether `origin` is `scheme://host[:port]` with an http(s) scheme and no path.
fn is_origin(origin: &str) -> bool {
    (origin.starts_with("http://") || origin.starts_with("https://"))
        && !origin.ends_with('/')
        && origin.splitn(4, '/').nth(3).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pulse.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.sites[0].key, "demo");
        assert!(config.server.site_dir.unwrap().ends_with("site"));
        let bundle = config.scorer.load_bundle().unwrap();
        assert_eq!(bundle.name, "demo-meter");
        assert_eq!(
            bundle.id,
            Config::default().scorer.load_bundle().unwrap().id,
            "the example names the built-in bundle's file"
        );
        // The demo page's subscriber token is signed with the example's (public) demo key.
        let demo_js = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/site/demo.js"),
        )
        .unwrap();
        let token = demo_js
            .split('\'')
            .find(|part| part.starts_with("eyJ"))
            .expect("a token in demo.js");
        let keys = config.sites[0]
            .tokens()
            .unwrap()
            .expect("the demo has keys");
        let vouched = keys.verify(token, 1_800_000_000).unwrap();
        assert_eq!(vouched.user.as_deref(), Some("demo-subscriber"));
        assert_eq!(
            vouched.entitled,
            vec![("subscriber".to_owned(), serde_json::json!(true))]
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
            [limits]
            max_body_bytes = 0
            [[sites]]
            key = "bad key"
            origins = ["https://a.example/"]
            [[sites]]
            key = "bad key"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::parse(text) else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn new_keys_are_checked() {
        let text = "[server]\npublic_origins = [\"https://a.example/x\", \"ftp://b\"]\n\
                    [dead_letters]\nmax_bytes = 10\nretention_hours = 0\n\
                    [rate_limits]\nmax_keys = 100000001";
        let Err(ConfigError::Invalid(problems)) = Config::parse(text) else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let ok = Config::parse(
            "[server]\npublic_origins = [\"https://pulse.example.com\"]\n[sink.kafka]\ncompression = \"zstd\"",
        )
        .unwrap();
        assert_eq!(ok.sink.kafka.compression, Compression::Zstd);
        let err = Config::parse("[sink.kafka]\ncompression = \"brotli\"").unwrap_err();
        assert!(err.to_string().contains("compression"), "{err}");
    }

    #[test]
    fn decision_log_keys_are_checked() {
        let text = "[decision_log]\nmax_bytes = 10\nretention_hours = 0\nqueue_bytes = 1";
        let Err(ConfigError::Invalid(problems)) = Config::parse(text) else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 3, "{problems:#?}");
        let ok =
            Config::parse("[decision_log]\nenabled = false\n[sink.kafka]\ndecisions_topic = \"d\"")
                .unwrap();
        assert!(!ok.decision_log.enabled);
        assert_eq!(ok.sink.kafka.decisions_topic, "d");
        let err = Config::parse("[decision_log]\nenable = true").unwrap_err();
        assert!(err.to_string().contains("enable"), "{err}");
    }

    #[test]
    fn the_shadow_must_compile_and_have_the_bundle_features() {
        let dir = tempfile::tempdir().unwrap();
        let meter = BUILTIN_BUNDLE.replace("limit = 3", "limit = 5");
        std::fs::write(dir.path().join("five.toml"), &meter).unwrap();
        std::fs::write(dir.path().join("broken.toml"), "[bundle]\nname = 1\n").unwrap();
        let profile =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bundles/reader-profile.toml");
        let path = dir.path().join("pulse.toml");
        let load = |scorer: &str| {
            std::fs::write(&path, format!("[scorer]\n{scorer}\n")).unwrap();
            Config::load(&path)
        };
        let config = load("shadow = \"five.toml\"").unwrap();
        let (bundle, shadow) = config.scorer.load_bundles().unwrap();
        let shadow = shadow.unwrap();
        assert_eq!(shadow.feature_set, bundle.feature_set);
        assert_ne!(shadow.id, bundle.id);
        let err = load(&format!("shadow = {:?}", profile.display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scorer.shadow") && err.contains("features"),
            "{err}"
        );
        // Every problem of both bundles at once.
        let Err(ConfigError::Invalid(problems)) =
            load("bundle = \"broken.toml\"\nshadow = \"broken.toml\"")
        else {
            panic!("accepted")
        };
        assert!(
            problems.iter().any(|p| p.starts_with("scorer.bundle"))
                && problems.iter().any(|p| p.starts_with("scorer.shadow")),
            "{problems:#?}"
        );
        assert!(load("shadow = \"missing.toml\"").is_err());
    }

    #[test]
    fn ip_blocks() {
        let net = IpNet::try_from("10.0.0.0/8".to_owned()).unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one = IpNet::try_from("::1".to_owned()).unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all = IpNet::try_from("0.0.0.0/0".to_owned()).unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(IpNet::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits_are_checked() {
        let text = "[rate_limits]\nip_requests = { per_second = 10, burst = 5 }\nmax_keys = 0";
        let Err(ConfigError::Invalid(problems)) = Config::parse(text) else {
            panic!("accepted")
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        let ok = Config::parse("[rate_limits]\nglobal_requests = { per_second = 5, burst = 5 }")
            .unwrap();
        assert_eq!(ok.rate_limits.global_requests, Rate::new(5, 5));
        assert_eq!(
            ok.rate_limits.ip_requests,
            RateLimits::default().ip_requests
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_path() {
        let err = Config::parse("[server]\nlisten = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Config::parse("[limits]\nbody_timeout_ms = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_timeout_ms"), "{err}");
        let err = Config::parse("[scorer]\nbundel = \"x.toml\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bundel"), "{err}");
        let err = Config::parse("[meter]\nlimit = 3").unwrap_err().to_string();
        assert!(err.contains("moved into the bundle"), "{err}");
    }
}
