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

/// `[sink.kafka]`: the Kafka producer. Idempotence and `acks=all` are always on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Further librdkafka producer properties (e.g. `security.protocol`, `sasl.*`); they may not
    /// weaken idempotence or `acks`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            events_topic: "pulse.events".to_owned(),
            deadletter_topic: "pulse.deadletter".to_owned(),
            decisions_topic: "pulse.decisions".to_owned(),
            control_topic: "pulse.control".to_owned(),
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
