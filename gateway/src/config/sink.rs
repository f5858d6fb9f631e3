//! `[sink]` (embedded or Kafka), `[dead_letters]` and `[decision_log]`.

use super::*;

/// Which durable log the gateway appends to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// The embedded segment logs under `<server.data>/log/` (group-committed fdatasync).
    #[default]
    Embedded,
    /// Kafka topics `pulse.events`, `pulse.deadletter` and `pulse.decisions` (see `[sink.kafka]`).
    Kafka,
}

/// `[sink]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `embedded` (default) or `kafka`.
    pub kind: SinkKind,
    /// Producer settings, used when `kind = "kafka"`.
    pub kafka: KafkaConfig,
}

/// `[sink.kafka]`: the Kafka producer. Idempotence and `acks=all` are always on. Its `Debug`
/// hides the values of secret `properties` (passwords, keys).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port`. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic of accepted events, keyed by reader. Default `pulse.events`.
    pub events_topic: String,
    /// Topic of rejected events and refused batches, keyed by site. Default `pulse.deadletter`.
    pub deadletter_topic: String,
    /// Topic of the decision log, keyed by reader (`[decision_log]`). Default `pulse.decisions`.
    pub decisions_topic: String,
    /// The control topic (one partition, compacted): rate limits and bundles changed through
    /// the admin API reach every gateway through it, and gateways see one another on it to
    /// share the rate limits. Empty: each gateway on its own. Default `pulse.control`.
    pub control_topic: String,
    /// The reader-state changelog (compacted, partitioned like the events topic): every state
    /// written behind is also produced there keyed by the reader, a forgotten or erased reader
    /// as a tombstone, and a gateway whose state store is empty restores it from there before
    /// reading the events topic. Empty: no changelog. Default `pulse.state`.
    pub state_topic: String,
    /// Time for every event of a batch to get its delivery report before the page gets 503 with
    /// `Retry-After`, in ms. Default 5000.
    pub delivery_timeout_ms: Millis,
    /// Messages the producer may hold in memory; past it batches are refused with 503 at once.
    /// Default 100000.
    pub queue_max_messages: u32,
    /// Kilobytes the producer may hold in memory (same effect). Default 65536.
    pub queue_max_kbytes: u32,
    /// Time the producer waits to fill a Kafka batch, in ms (`linger.ms`). Default 1: every page
    /// waits for its batch's acknowledgement, and under load batches fill while others are in
    /// flight anyway (librdkafka's own default, 5, doubled the median answer time in the bench).
    pub linger_ms: u32,
    /// Compression of Kafka batches: `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default `lz4`.
    pub compression: Compression,
    /// Further librdkafka properties of every Pulse client of the cluster, e.g. for a managed
    /// cluster `security.protocol = "SASL_SSL"`, `sasl.mechanisms`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`; they may not weaken idempotence or `acks`, nor set
    /// what has its own key. Default: none.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// `properties` as librdkafka gets them: a value `env:NAME` is read from the environment
    /// (secrets such as `sasl.password` need not be in the file); an unset variable is an
    /// error naming the property.
    pub(crate) fn client_properties(&self) -> Result<Vec<(&str, String)>, String> {
        self.properties
            .iter()
            .map(|(key, value)| match value.strip_prefix("env:") {
                Some(name) => std::env::var(name).map(|v| (key.as_str(), v)).map_err(|_| {
                    format!("sink.kafka.properties.{key:?} names ${name}, which is not set")
                }),
                None => Ok((key.as_str(), value.clone())),
            })
            .collect()
    }
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...): its value is never shown.
fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "key.pem", "oauthbearer.config"]
        .iter()
        .any(|part| key.contains(part))
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("events_topic", &self.events_topic)
            .field("deadletter_topic", &self.deadletter_topic)
            .field("decisions_topic", &self.decisions_topic)
            .field("control_topic", &self.control_topic)
            .field("state_topic", &self.state_topic)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("queue_max_messages", &self.queue_max_messages)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("linger_ms", &self.linger_ms)
            .field("compression", &self.compression)
            .field("properties", &properties)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            events_topic: "pulse.events".to_owned(),
            deadletter_topic: "pulse.deadletter".to_owned(),
            decisions_topic: "pulse.decisions".to_owned(),
            control_topic: "pulse.control".to_owned(),
            state_topic: "pulse.state".to_owned(),
            delivery_timeout_ms: Millis::from_ms(5_000),
            queue_max_messages: 100_000,
            queue_max_kbytes: 65_536,
            linger_ms: 1,
            compression: Compression::Lz4,
            properties: BTreeMap::new(),
        }
    }
}

/// How Kafka batches are compressed (librdkafka's `compression.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default).
    #[default]
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// `[dead_letters]`: what the embedded store keeps of refused input. Each dead letter keeps at
/// most 4 KiB of what was refused (the protocol's `DEAD_LETTER_MAX_RAW`), and what it takes
/// counts against the site's `site_bytes` limit. In Kafka mode the topic's own retention
/// applies instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetters {
    /// Most bytes of dead letters kept on disk (compressed); past it the oldest are deleted.
    /// Default 268435456 (256 MiB). At least 1048576.
    pub max_bytes: u64,
    /// Hours a dead letter is kept. Default 168 (a week). At least 1.
    pub retention_hours: u32,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            retention_hours: 168,
        }
    }
}

/// `[event_log]`: how much of the embedded event log is kept. By default all of it (so that a
/// bundle with new features can be rebuilt from every event). Only events already in stored
/// reader state are ever deleted: a crash still replays everything it needs. In Kafka mode the
/// topic's own retention applies instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventLogConfig {
    /// Most bytes of events kept on disk (compressed); past it the oldest are deleted. 0 (the
    /// default): no cap.
    pub max_bytes: u64,
    /// Hours an event is kept. 0 (the default): forever.
    pub retention_hours: u32,
}

/// `[decision_log]`: every decision the gateway answers, with the bundle, the rule, the model's
/// score, the experiment arm and its probability, and the feature values it read (see
/// `protocol/PROTOCOL.md`, "The logs"). Embedded: a segment log under `<data>/log/decisions/`;
/// with Kafka: the topic `sink.kafka.decisions_topic`. Written after the answer is decided,
/// never delaying it: past `queue_bytes` waiting, decisions are dropped and counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// Whether decisions are logged. Default true.
    pub enabled: bool,
    /// Most bytes of decisions kept on disk (compressed, embedded store); past it the oldest
    /// are deleted. Default 1073741824 (1 GiB). At least 1048576.
    pub max_bytes: u64,
    /// Hours a decision is kept (embedded store). Default 720 (30 days). At least 1.
    pub retention_hours: u32,
    /// Bytes of decisions waiting to be written (or, with Kafka, in the decisions producer's
    /// queue), at most; past it new decisions are dropped and counted
    /// (`pulse_gateway_decisions_dropped_total`). Default 8388608 (8 MiB). 65536 to 268435456.
    pub queue_bytes: usize,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 1 << 30,
            retention_hours: 720,
            queue_bytes: 8 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn secrets_are_read_from_the_environment_and_never_shown() {
        // PATH is set wherever tests run (setting a variable here would need unsafe code).
        let path = std::env::var("PATH").unwrap();
        let config = with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "pulse"),
            ("sasl.password", "env:PATH"),
            ("ssl.key.password", "hunter2-hunter2"),
        ]);
        let resolved = config.client_properties().unwrap();
        assert!(resolved.contains(&("sasl.password", path.clone())));
        assert!(resolved.contains(&("security.protocol", "SASL_SSL".to_owned())));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("SASL_SSL") && shown.contains("pulse"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");

        let unset = with(&[("sasl.password", "env:PULSE_TEST_SURELY_UNSET_7f3a")]);
        let problem = unset.client_properties().unwrap_err();
        assert!(
            problem.contains("sasl.password") && problem.contains("PULSE_TEST_SURELY_UNSET_7f3a"),
            "{problem}"
        );
    }
}
