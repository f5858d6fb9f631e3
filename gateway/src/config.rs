//! `pulse.toml`: the gateway's configuration, read once into typed values. Relative paths in the
//! file are relative to the file's own folder. Every field is documented with its unit and default;
//! `examples/pulse.toml` shows them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pulse_scorer::MeterRules;
use serde::{Deserialize, Serialize};

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

/// A duration in milliseconds, at least 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Millis(Duration);

impl Millis {
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
    /// The meter rule the scorer applies.
    #[serde(default)]
    pub meter: MeterRules,
    /// The sites allowed to send events, each with its key and origins.
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for HTTP/1.1. Default `127.0.0.1:8080`; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Folder of the embedded store (events, dead letters, reader state). Default `data`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Folder served at `/` (the demo publisher site); none when absent. Default: none.
    #[serde(default)]
    pub site_dir: Option<PathBuf>,
    /// Folder holding the built tracker (`pulse.js`, `pulse_bg.wasm`), served at `/`.
    /// Default `target/pulse-tracker`.
    #[serde(default = "default_tracker_dir")]
    pub tracker_dir: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data() -> PathBuf {
    PathBuf::from("data")
}

fn default_tracker_dir() -> PathBuf {
    PathBuf::from("target/pulse-tracker")
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data: default_data(),
            site_dir: None,
            tracker_dir: default_tracker_dir(),
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body as sent (compressed), in bytes. Default 65536 (64 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest request body after decompression, in bytes; decoding stops there. Default 524288.
    #[serde(default = "default_max_decoded")]
    pub max_decoded_bytes: usize,
    /// Time allowed for a request's headers to arrive, in ms. Default 10000.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: Millis,
    /// Time allowed for a request's body to arrive, in ms. Default 10000.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: Millis,
    /// Time allowed to make a batch durable before answering 503, in ms. Default 5000.
    #[serde(default = "default_store_deadline")]
    pub store_deadline_ms: Millis,
    /// Time allowed for the scorer before a fallback decision, in ms. Default 50.
    #[serde(default = "default_decision_deadline")]
    pub decision_deadline_ms: Millis,
}

fn default_max_body() -> usize {
    pulse_protocol::DEFAULT_MAX_BODY_BYTES
}
fn default_max_decoded() -> usize {
    pulse_protocol::DEFAULT_MAX_DECODED_BYTES
}
fn default_header_timeout() -> Millis {
    Millis(Duration::from_secs(10))
}
fn default_body_timeout() -> Millis {
    Millis(Duration::from_secs(10))
}
fn default_store_deadline() -> Millis {
    Millis(Duration::from_secs(5))
}
fn default_decision_deadline() -> Millis {
    Millis(Duration::from_millis(50))
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_decoded_bytes: default_max_decoded(),
            header_read_timeout_ms: default_header_timeout(),
            body_timeout_ms: default_body_timeout(),
            store_deadline_ms: default_store_deadline(),
            decision_deadline_ms: default_decision_deadline(),
        }
    }
}

/// `[[sites]]`: one publisher site.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site key pages send as `?k=` (1–64 characters of `[A-Za-z0-9_-]`).
    pub key: String,
    /// Origins allowed to send with this key, exactly as browsers send them
    /// (`https://news.example`, no path). Default: none.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Also allow pages served by the gateway itself (the `Origin` equals the request's `Host`).
    /// Default false; the demo site sets it so that `--listen` on any address works.
    #[serde(default)]
    pub allow_same_origin: bool,
    /// Refuse requests without an `Origin` header (server-side senders). Default false.
    #[serde(default)]
    pub require_origin: bool,
}

impl Config {
    /// Reads and checks a configuration file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.server.data = base.join(&config.server.data);
        config.server.tracker_dir = base.join(&config.server.tracker_dir);
        config.server.site_dir = config.server.site_dir.map(|d| base.join(d));
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
        let l = &self.limits;
        if l.max_body_bytes == 0 {
            problems.push("limits.max_body_bytes must be at least 1".to_owned());
        }
        if l.max_decoded_bytes < l.max_body_bytes {
            problems
                .push("limits.max_decoded_bytes must be at least limits.max_body_bytes".to_owned());
        }
        let mut seen = HashMap::new();
        for (i, site) in self.sites.iter().enumerate() {
            let key_ok = !site.key.is_empty()
                && site.key.len() <= pulse_protocol::MAX_TOKEN_LEN
                && site
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !key_ok {
                problems.push(format!(
                    "sites[{i}].key must be 1 to 64 characters of [A-Za-z0-9_-]"
                ));
            }
            if let Some(j) = seen.insert(site.key.as_str(), i) {
                problems.push(format!("sites[{i}].key repeats sites[{j}].key"));
            }
            for (k, origin) in site.origins.iter().enumerate() {
                let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && origin.splitn(4, '/').nth(3).is_none();
                if !ok {
                    problems.push(format!(
                        "sites[{i}].origins[{k}] must be scheme://host[:port] without a path, not {origin:?}"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pulse.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.sites[0].key, "demo");
        assert_eq!(config.meter.limit, 3);
        assert!(config.server.site_dir.unwrap().ends_with("site"));
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
    fn unknown_keys_and_bad_values_name_their_path() {
        let err = Config::parse("[server]\nlisten = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Config::parse("[limits]\nbody_timeout_ms = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_timeout_ms"), "{err}");
        let err = Config::parse("[meter]\nlimt = 3").unwrap_err().to_string();
        assert!(err.contains("limt"), "{err}");
    }
}
