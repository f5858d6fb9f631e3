//! The Kafka sink: accepted events go to `events_topic` keyed by reader, dead letters to
//! `deadletter_topic` keyed by site, through one idempotent `acks=all` producer; the message
//! values are the same records the embedded log holds (JSON, see `protocol/PROTOCOL.md`).
//! A batch is durable once every one of its messages has a successful delivery report.
//!
//! Deadlines: librdkafka gives up on a message after `message.timeout.ms`, set to
//! `delivery_timeout_ms`; `append` itself stops waiting at the same deadline, so a batch is
//! answered within `delivery_timeout_ms` whatever librdkafka does. The gateway also cuts every
//! append at `limits.store_deadline_ms`: the page gets its 503 at the earlier of the two.
//!
//! Memory: the only buffer is librdkafka's queue, bounded by `queue_max_messages` and
//! `queue_max_kbytes`. A batch that does not fit is refused at once (never waited on), and a
//! batch's delivery futures live only as long as its request.
//!
//! Fatal errors: should librdkafka declare the idempotent producer broken (e.g. a sequence
//! desynchronization with a broker), it refuses every later message; the first batch that fails
//! afterwards replaces it with a fresh producer, so the pages' retries succeed again.
//!
//! IO boundary: librdkafka's own threads (network, retries, delivery reports); `append` only
//! enqueues and awaits reports, `close` flushes on a blocking thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use std::sync::Arc;

use pulse_protocol::RecordSchema;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::restore::KafkaOffsets;
use super::{BoxFuture, Receipt, RecordKind, Sink, SinkBatch, SinkError};
use crate::config::KafkaConfig;
use crate::pool::BufPool;

/// How much longer than `delivery_timeout_ms` `close` waits for the queue to drain: librdkafka
/// checks message timeouts about once a second, so reports can trail the deadline a little.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Producer properties set from the typed configuration (or fixed). `properties` may not name
/// them, nor their librdkafka aliases: two names for one setting would be applied in no defined
/// order.
const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "linger.ms",
    "queue.buffering.max.ms",
    "compression.type",
    "compression.codec",
    "partitioner",
];

/// The partitioner of every Pulse producer: Java's default for keyed records (murmur2 of the
/// key, `(h & 0x7fffffff) % partitions`), the hash the scorer groups readers by
/// ([`pulse_scorer::partition_of`]), so a reader's events, its state and its decisions share a
/// partition number whichever client produced them. librdkafka's own default (CRC32) would not.
pub(crate) const PARTITIONER: &str = "murmur2_random";

/// Header carrying an event's id (32 hex digits), so consumers can dedupe without parsing.
pub(crate) const HEADER_EVENT_ID: &str = "pulse-event-id";
/// Header carrying the site key, on events and dead letters.
pub(crate) const HEADER_SITE: &str = "pulse-site";
/// Header carrying an event's type (`page_view`, `click`, …).
pub(crate) const HEADER_EVENT_TYPE: &str = "pulse-event-type";
/// Header carrying a dead letter's reason.
pub(crate) const HEADER_REASON: &str = "pulse-reason";
/// Header naming the value's schema and its version (`event.v1`, `dead_letter.v1`, …): see
/// `protocol/schema/`.
pub(crate) const HEADER_SCHEMA: &str = pulse_protocol::SCHEMA_HEADER;
/// Header naming the value's format: always `application/json`.
pub(crate) const HEADER_CONTENT_TYPE: &str = "content-type";

/// Routes librdkafka's logs and client errors into the gateway's structured logs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(sink = "kafka", facility, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(sink = "kafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(sink = "kafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(sink = "kafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connection errors are routine while a cluster restarts; librdkafka retries.
        // A fatal error (idempotence broken) means every later batch fails: say so loudly.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(sink = "kafka", error = %error, reason, "fatal producer error");
        } else {
            tracing::warn!(sink = "kafka", error = %error, reason, "kafka client error");
        }
    }
}

/// The producer in use, numbered so that a fatal error replaces it only once.
struct Current {
    generation: u64,
    producer: FutureProducer<KafkaLog>,
}

/// The Kafka sink. Reader state stays in the embedded store; only the log moves to Kafka.
pub(crate) struct KafkaSink {
    /// Read-locked only for synchronous calls (enqueueing, counting), never across an await.
    current: RwLock<Current>,
    /// Kept to build a fresh producer after a fatal error.
    client: ClientConfig,
    events_topic: String,
    deadletter_topic: String,
    delivery_timeout: Duration,
    /// `queue_max_messages`; 0 means librdkafka's count limit is off.
    queue_max_messages: usize,
    closed: AtomicBool,
    /// Record buffers go back here once librdkafka has copied them.
    pool: Arc<BufPool>,
    /// Where each partition's delivered events stand against reader state (the restore's
    /// starting points, `super::restore`); none in tests of the sink alone.
    offsets: Option<Arc<KafkaOffsets>>,
    last: super::LastAppend,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("events_topic", &self.events_topic)
            .field("deadletter_topic", &self.deadletter_topic)
            .field("delivery_timeout", &self.delivery_timeout)
            .finish_non_exhaustive()
    }
}

/// What every Pulse client of the cluster shares, producer or consumer: the brokers and the
/// operator's properties (security settings, `client.id`, ...), logging errors only.
pub(crate) fn cluster_client(config: &KafkaConfig) -> Result<ClientConfig, SinkError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in config.client_properties().map_err(SinkError::Unavailable)? {
        client.set(key, value);
    }
    client.set_log_level(RDKafkaLogLevel::Error);
    Ok(client)
}

/// The producer settings for `config`: the fixed ones, those derived from typed keys, then
/// `properties`. Fails when `properties` names a setting that is fixed or derived.
pub(crate) fn client_config(config: &KafkaConfig) -> Result<ClientConfig, SinkError> {
    let managed: Vec<&str> = config
        .properties
        .keys()
        .map(String::as_str)
        .filter(|key| MANAGED_PROPERTIES.contains(key))
        .collect();
    if !managed.is_empty() {
        return Err(SinkError::Unavailable(format!(
            "sink.kafka.properties may not set {managed:?}: they are fixed or have their own key"
        )));
    }
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.delivery_timeout_ms.get().as_millis().to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            config.queue_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            config.queue_max_kbytes.to_string(),
        )
        .set("linger.ms", config.linger_ms.to_string())
        .set("compression.type", config.compression.as_str())
        .set("partitioner", PARTITIONER);
    for (key, value) in config.client_properties().map_err(SinkError::Unavailable)? {
        client.set(key, value);
    }
    client.set_log_level(RDKafkaLogLevel::Warning);
    Ok(client)
}

impl KafkaSink {
    /// Creates the producer. It connects in the background: brokers that are down now only
    /// make appends fail (503) until they are back.
    pub(crate) fn new(config: &KafkaConfig, pool: Arc<BufPool>) -> Result<Self, SinkError> {
        let client = client_config(config)?;
        let producer = create(&client)?;
        Ok(Self {
            current: RwLock::new(Current {
                generation: 0,
                producer,
            }),
            client,
            events_topic: config.events_topic.clone(),
            deadletter_topic: config.deadletter_topic.clone(),
            delivery_timeout: config.delivery_timeout_ms.get(),
            queue_max_messages: config.queue_max_messages as usize,
            closed: AtomicBool::new(false),
            pool,
            offsets: None,
            last: super::LastAppend::default(),
        })
    }

    /// Tracks the offsets of delivered events against reader state in `offsets`.
    pub(crate) fn with_offsets(mut self, offsets: Arc<KafkaOffsets>) -> Self {
        self.offsets = Some(offsets);
        self
    }

    /// The current producer, read-locked.
    fn current(&self) -> Result<RwLockReadGuard<'_, Current>, SinkError> {
        self.current
            .read()
            .map_err(|_| SinkError::Io("kafka producer lock poisoned".into()))
    }

    /// After a failed batch: when the producer of `generation` hit a fatal error (librdkafka
    /// can no longer vouch for idempotence and refuses every message from then on), replaces
    /// it with a fresh one, so that the pages' retries can succeed. The old producer's queued
    /// messages fail; their pages were or will be answered 503.
    fn replace_if_fatal(&self, generation: u64) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut current) = self.current.write() else {
            return;
        };
        if current.generation != generation {
            return; // another request replaced it already
        }
        let Some((code, reason)) = current.producer.client().fatal_error() else {
            return;
        };
        match create(&self.client) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut current.producer, fresh);
                current.generation += 1;
                drop(current);
                tracing::error!(
                    sink = "kafka",
                    error = %code,
                    reason,
                    "fatal kafka producer error: replaced the producer"
                );
                // Dropping a producer purges its queue and joins its thread: not on a runtime
                // worker.
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(e) => tracing::error!(
                sink = "kafka",
                error = %e,
                "fatal kafka producer error, and no new producer could be created"
            ),
        }
    }

    /// Hands one message to librdkafka without waiting: a full queue is an error at once.
    fn enqueue(
        &self,
        producer: &FutureProducer<KafkaLog>,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
        timestamp: u64,
    ) -> Result<DeliveryFuture, SinkError> {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Ok(ms) = i64::try_from(timestamp) {
            record = record.timestamp(ms);
        }
        producer.send_result(record).map_err(|(e, _)| match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                SinkError::Unavailable("the kafka producer queue is full".into())
            }
            e => SinkError::Unavailable(format!("kafka refused a message: {e}")),
        })
    }

    /// Enqueues a whole batch; on the first refusal the rest is not enqueued. Messages
    /// enqueued before a refusal are still delivered: the page retries the batch and consumers
    /// dedupe by event id.
    fn enqueue_batch(
        &self,
        producer: &FutureProducer<KafkaLog>,
        batch: &SinkBatch,
    ) -> Result<Vec<DeliveryFuture>, SinkError> {
        let mut pending = Vec::with_capacity(batch.events.len() + batch.dead_letters.len());
        let site = batch.site.as_str();
        let json = || Header {
            key: HEADER_CONTENT_TYPE,
            value: Some("application/json"),
        };
        for (payload, kind) in batch.events.iter().chain(batch.dead_letters.iter()) {
            let (topic, key, headers) = match kind {
                RecordKind::Event { id, kind } => {
                    let id = id.hex();
                    let headers = OwnedHeaders::new_with_capacity(5)
                        .insert(Header {
                            key: HEADER_SCHEMA,
                            value: Some(RecordSchema::Event.id()),
                        })
                        .insert(Header {
                            key: HEADER_EVENT_ID,
                            value: Some(id.as_str()),
                        })
                        .insert(Header {
                            key: HEADER_SITE,
                            value: Some(site),
                        })
                        .insert(Header {
                            key: HEADER_EVENT_TYPE,
                            value: Some(kind.as_str()),
                        })
                        .insert(json());
                    (&self.events_topic, batch.reader.as_str(), headers)
                }
                RecordKind::DeadLetter { reason } => {
                    let headers = OwnedHeaders::new_with_capacity(4)
                        .insert(Header {
                            key: HEADER_SCHEMA,
                            value: Some(RecordSchema::DeadLetter.id()),
                        })
                        .insert(Header {
                            key: HEADER_SITE,
                            value: Some(site),
                        })
                        .insert(Header {
                            key: HEADER_REASON,
                            value: Some(reason),
                        })
                        .insert(json());
                    (&self.deadletter_topic, site, headers)
                }
            };
            pending.push(self.enqueue(
                producer,
                topic,
                key,
                payload,
                headers,
                batch.received_at,
            )?);
        }
        Ok(pending)
    }
}

/// Creates a producer from `client`; it connects in the background.
fn create(client: &ClientConfig) -> Result<FutureProducer<KafkaLog>, SinkError> {
    client
        .create_with_context(KafkaLog)
        .map_err(|e| SinkError::Unavailable(format!("cannot create the kafka producer: {e}")))
}

/// Waits for every delivery report; the first failure fails the batch. Returns the partition
/// and the offsets of the first `events` messages, in order (the events; a batch's events
/// share a key, so a partition).
async fn delivered(
    pending: Vec<DeliveryFuture>,
    events: usize,
) -> Result<Option<(i32, Vec<i64>)>, SinkError> {
    let mut landed: Option<(i32, Vec<i64>)> = None;
    // librdkafka delivers them concurrently: awaiting in order takes as long as the slowest.
    for (i, report) in pending.into_iter().enumerate() {
        match report.await {
            Ok(Ok(d)) if i < events => {
                landed
                    .get_or_insert_with(|| (d.partition, Vec::with_capacity(events)))
                    .1
                    .push(d.offset);
            }
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(SinkError::Unavailable(format!(
                    "kafka delivery failed: {e}"
                )));
            }
            Err(_) => {
                return Err(SinkError::Unavailable(
                    "the kafka producer dropped a delivery report".into(),
                ));
            }
        }
    }
    if let Some((_, offsets)) = &mut landed {
        offsets.sort_unstable();
    }
    Ok(landed)
}

impl Sink for KafkaSink {
    fn erasure(&self, reader: &str, at: u64) -> BoxFuture<'_, Result<String, SinkError>> {
        let record = pulse_protocol::ErasureRecord::new(reader, at);
        let reader = reader.to_owned();
        Box::pin(async move {
            let payload = serde_json::to_vec(&record).map_err(|e| SinkError::Io(e.to_string()))?;
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: HEADER_SCHEMA,
                    value: Some(RecordSchema::Erasure.id()),
                })
                .insert(Header {
                    key: HEADER_CONTENT_TYPE,
                    value: Some("application/json"),
                });
            let pending = {
                let current = self.current()?;
                self.enqueue(
                    &current.producer,
                    &self.events_topic,
                    &reader,
                    &payload,
                    headers,
                    at,
                )?
            };
            match tokio::time::timeout(self.delivery_timeout, pending).await {
                Ok(Ok(Ok(d))) => Ok(format!(
                    "{}/{}@{}",
                    self.events_topic, d.partition, d.offset
                )),
                Ok(Ok(Err((e, _)))) => Err(SinkError::Unavailable(format!(
                    "kafka delivery failed: {e}"
                ))),
                Ok(Err(_)) => Err(SinkError::Unavailable(
                    "the kafka producer dropped a delivery report".into(),
                )),
                Err(_) => Err(SinkError::Unavailable(
                    "kafka did not confirm the erasure record in time".into(),
                )),
            }
        })
    }

    fn queue_depth(&self) -> usize {
        self.current().map_or(0, |c| {
            usize::try_from(c.producer.in_flight_count()).unwrap_or(0)
        })
    }

    fn append(&self, batch: SinkBatch) -> BoxFuture<'_, Result<Receipt, SinkError>> {
        Box::pin(async move {
            if self.closed.load(Ordering::Acquire) {
                return Err(SinkError::Closed);
            }
            let events = batch.events.len();
            let total = events + batch.dead_letters.len();
            if total == 0 {
                return Ok(Receipt {
                    events: 0,
                    applied: None,
                    offsets: Vec::new(),
                });
            }
            let deadline = tokio::time::Instant::now() + self.delivery_timeout;
            let (generation, enqueued) = {
                let current = self.current()?;
                // Refuse a batch that cannot fit before enqueueing any of it (librdkafka's
                // count includes messages in flight, so this errs on the side of refusing).
                let queued = usize::try_from(current.producer.in_flight_count()).unwrap_or(0);
                if self.queue_max_messages > 0 && queued + total > self.queue_max_messages {
                    return Err(SinkError::Unavailable(format!(
                        "the kafka producer queue is full ({queued} messages waiting)"
                    )));
                }
                (
                    current.generation,
                    self.enqueue_batch(&current.producer, &batch),
                )
            };
            // librdkafka copied every payload it took: the buffers can be reused.
            self.pool.put(batch.events.into_buffer());
            self.pool.put(batch.dead_letters.into_buffer());
            let result = match enqueued {
                Ok(pending) => {
                    match tokio::time::timeout_at(deadline, delivered(pending, events)).await {
                        Ok(result) => result,
                        Err(_) => Err(SinkError::Unavailable(format!(
                            "kafka did not confirm the batch within {} ms",
                            self.delivery_timeout.as_millis()
                        ))),
                    }
                }
                Err(e) => Err(e),
            };
            if result.is_err() {
                self.replace_if_fatal(generation);
            }
            self.last.record(&result);
            result.map(|landed| {
                let (partition, offsets) = landed.unwrap_or_default();
                let applied = match (offsets.first(), offsets.last()) {
                    (Some(&first), Some(&last)) => self
                        .offsets
                        .as_ref()
                        .and_then(|o| o.hold(partition, first, last)),
                    _ => None,
                };
                Receipt {
                    events,
                    applied,
                    offsets,
                }
            })
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            let producer = self.current()?.producer.clone();
            let wait = self.delivery_timeout + CLOSE_GRACE;
            // flush blocks; every message in the queue is delivered or times out within `wait`.
            let (flushed, left) = tokio::task::spawn_blocking(move || {
                let flushed = producer.flush(wait);
                (flushed, producer.in_flight_count())
            })
            .await
            .map_err(|e| SinkError::Io(format!("kafka flush: {e}")))?;
            match flushed {
                Ok(()) if left == 0 => {
                    tracing::info!(sink = "kafka", "producer flushed");
                    Ok(())
                }
                // Not a failure of the shutdown: a batch is acknowledged only once Kafka
                // confirmed every message of it, so what is left belongs to requests answered
                // with an error (their clients send them again) or given up with the server.
                // Messages of a brokers' outage that librdkafka still retries when the flush
                // runs out of time are the usual case.
                result => {
                    let why = result.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::error!(
                        sink = "kafka",
                        undelivered = left,
                        error = %why,
                        "messages left undelivered at shutdown (their requests were not acknowledged)"
                    );
                    Ok(())
                }
            }
        })
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn ready(&self) -> Result<(), String> {
        self.last.ready()
    }
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Instant;

    use pulse_protocol::{DeadLetter, EventRecord};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{BorrowedMessage, Headers};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{Message, Offset, TopicPartitionList};

    use super::*;
    use crate::config::Millis;
    use crate::sink::testing::test_batch;

    const PARTITIONS: i32 = 3;

    fn cluster() -> MockCluster<'static, DefaultProducerContext> {
        let cluster = MockCluster::new(3).unwrap();
        for topic in ["pulse.events", "pulse.deadletter"] {
            cluster.create_topic(topic, PARTITIONS, 3).unwrap();
        }
        cluster
    }

    fn config(brokers: &str, delivery_timeout_ms: u64) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.to_owned(),
            delivery_timeout_ms: Millis::try_from(delivery_timeout_ms).unwrap(),
            linger_ms: 1,
            ..KafkaConfig::default()
        }
    }

    /// A consumer of every partition of `topic`, from the beginning.
    fn assigned(brokers: &str, topic: &str) -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "pulse-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }

    /// Every message of `topic`, from the beginning, until `want` arrived (or 10 s passed).
    fn consume(brokers: &str, topic: &str, want: usize) -> Vec<(String, Vec<u8>, Headers_)> {
        let consumer = assigned(brokers, topic);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(owned(&m));
            }
        }
        out
    }

    type Headers_ = HashMap<String, String>;

    fn owned(m: &BorrowedMessage<'_>) -> (String, Vec<u8>, Headers_) {
        let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8(header.value.unwrap_or_default().to_vec()).unwrap(),
                );
            }
        }
        (key, m.payload().unwrap_or_default().to_vec(), headers)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_land_on_the_partition_javas_default_partitioner_picks() {
        // Eight reader keys, each on the partition a Java producer with its default partitioner
        // (and the scorer's `partition_of`) would pick; with librdkafka's default partitioner
        // only some would.
        let cluster = cluster();
        let brokers = cluster.bootstrap_servers();
        let sink = KafkaSink::new(&config(&brokers, 10_000), Arc::default()).unwrap();
        let readers: Vec<String> = (0..8).map(|i| format!("reader-{i}")).collect();
        for (i, r) in readers.iter().enumerate() {
            sink.append(test_batch(r, [i as u128 + 1], 0, &[]))
                .await
                .unwrap();
        }
        let consumer = assigned(&brokers, "pulse.events");
        let mut landed = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while landed.len() < readers.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                landed.insert(key, m.partition());
            }
        }
        let java = |key: &str| i32::from(pulse_scorer::partition_of(key, PARTITIONS as u16));
        let spread: std::collections::BTreeSet<i32> = landed.values().copied().collect();
        assert!(spread.len() > 1, "the keys spread: {landed:?}");
        for r in &readers {
            assert_eq!(landed.get(r), Some(&java(r)), "{r}: {landed:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_and_dead_letters_land_keyed_with_headers() {
        let cluster = cluster();
        let brokers = cluster.bootstrap_servers();
        let sink = KafkaSink::new(&config(&brokers, 10_000), Arc::default()).unwrap();
        assert_eq!(sink.kind(), "kafka");
        let receipt = sink
            .append(test_batch(
                "user-1",
                [1, 3],
                0,
                &[("invalid_event", b"{\"x\":1}")],
            ))
            .await
            .unwrap();
        assert_eq!(receipt.events, 2);
        assert!(receipt.applied.is_none());
        let receipt = sink.append(test_batch("anon", [2], 0, &[])).await.unwrap();
        assert_eq!(receipt.events, 1);

        let events = consume(&brokers, "pulse.events", 3);
        assert_eq!(events.len(), 3);
        for (key, payload, headers) in &events {
            let rec: EventRecord = serde_json::from_slice(payload).unwrap();
            assert_eq!(key, &rec.reader);
            assert_eq!(headers[HEADER_EVENT_ID], rec.event.id.to_string());
            assert_eq!(headers[HEADER_SITE], "demo");
            assert_eq!(headers[HEADER_EVENT_TYPE], "page_view");
            assert_eq!(headers[HEADER_CONTENT_TYPE], "application/json");
            // The data contract: the schema in a header and as the value's first field.
            assert_eq!(headers[HEADER_SCHEMA], "event.v1");
            assert!(payload.starts_with(b"{\"v\":1,"), "{payload:?}");
            assert_eq!(rec.v, 1);
        }
        let mut ids: Vec<u128> = events
            .iter()
            .map(|(_, p, _)| serde_json::from_slice::<EventRecord>(p).unwrap().event.id.0)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);

        let dead = consume(&brokers, "pulse.deadletter", 1);
        assert_eq!(dead.len(), 1);
        let (key, payload, headers) = &dead[0];
        assert_eq!(key, "demo");
        let dl = serde_json::from_slice::<DeadLetter>(payload).unwrap();
        assert_eq!(
            (dl.reason.as_str(), dl.raw.as_str()),
            ("invalid_event", "{\"x\":1}")
        );
        assert_eq!(headers[HEADER_REASON], dl.reason);
        assert_eq!(headers[HEADER_SCHEMA], "dead_letter.v1");
        assert_eq!(dl.v, 1);

        sink.close().await.unwrap();
        let after = sink.append(test_batch("anon", [4], 0, &[])).await;
        assert!(matches!(after, Err(SinkError::Closed)), "{after:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_produce_errors_are_retried() {
        let cluster = cluster();
        let sink = KafkaSink::new(
            &config(&cluster.bootstrap_servers(), 10_000),
            Arc::default(),
        )
        .unwrap();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        );
        let receipt = sink
            .append(test_batch("user-1", 0..5, 0, &[]))
            .await
            .unwrap();
        assert_eq!(receipt.events, 5);
        assert_eq!(
            consume(&cluster.bootstrap_servers(), "pulse.events", 5).len(),
            5
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_error_fails_the_batch() {
        let cluster = cluster();
        let sink = KafkaSink::new(
            &config(&cluster.bootstrap_servers(), 10_000),
            Arc::default(),
        )
        .unwrap();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
        );
        let started = Instant::now();
        let result = sink.append(test_batch("user-1", [1], 0, &[])).await;
        assert!(
            matches!(&result, Err(SinkError::Unavailable(m)) if m.contains("delivery failed")),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "failed only at the deadline"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn brokers_down_fail_the_batch_at_the_deadline() {
        let cluster = cluster();
        for broker in 1..=3 {
            cluster.broker_down(broker).unwrap();
        }
        let sink =
            KafkaSink::new(&config(&cluster.bootstrap_servers(), 1_000), Arc::default()).unwrap();
        let started = Instant::now();
        let result = sink.append(test_batch("user-1", [1], 0, &[])).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(SinkError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            took >= Duration::from_millis(900),
            "gave up early: {took:?}"
        );
        assert!(took < Duration::from_secs(4), "deadline overrun: {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let cluster = cluster();
        for broker in 1..=3 {
            cluster.broker_down(broker).unwrap();
        }
        let brokers = cluster.bootstrap_servers();
        // By count: 5 waiting messages leave no room for 10 more in a queue of 12.
        let sink = Arc::new(
            KafkaSink::new(
                &KafkaConfig {
                    queue_max_messages: 12,
                    ..config(&brokers, 30_000)
                },
                Arc::default(),
            )
            .unwrap(),
        );
        let waiting = {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.append(test_batch("a", 0..5, 0, &[])).await })
        };
        let until = Instant::now() + Duration::from_secs(10);
        while sink.current().unwrap().producer.in_flight_count() < 5 {
            assert!(Instant::now() < until, "the first batch was never queued");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let result = sink.append(test_batch("b", 10..20, 0, &[])).await;
        assert!(
            matches!(&result, Err(SinkError::Unavailable(m)) if m.contains("full")),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        waiting.abort();

        // By size: librdkafka itself answers QueueFull part-way through a batch.
        let sink = KafkaSink::new(
            &KafkaConfig {
                queue_max_kbytes: 1,
                ..config(&brokers, 30_000)
            },
            Arc::default(),
        )
        .unwrap();
        let started = Instant::now();
        let result = sink.append(test_batch("c", 100..104, 500, &[])).await;
        assert!(
            matches!(&result, Err(SinkError::Unavailable(m)) if m.contains("full")),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_producer_error_is_survived() {
        let cluster = cluster();
        let brokers = cluster.bootstrap_servers();
        let sink = KafkaSink::new(&config(&brokers, 5_000), Arc::default()).unwrap();
        // A head-of-line sequence error: librdkafka can no longer vouch for idempotence.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        let first = sink.append(test_batch("user-1", [1], 0, &[])).await;
        assert!(first.is_err(), "{first:?}");
        let until = Instant::now() + Duration::from_secs(20);
        let mut tries = 0;
        loop {
            tries += 1;
            let next = sink
                .append(test_batch("user-2", [100 + tries], 0, &[]))
                .await;
            if next.is_ok() {
                break;
            }
            // Each failed batch that finds the producer fatally broken replaces it.
            assert!(Instant::now() < until, "no recovery: {next:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("recovered from the fatal error after {tries} tries");
        let ids: Vec<u128> = consume(&brokers, "pulse.events", 1)
            .iter()
            .map(|(_, p, _)| serde_json::from_slice::<EventRecord>(p).unwrap().event.id.0)
            .collect();
        assert!(ids.contains(&(100 + tries)), "{ids:?}");
    }

    #[test]
    fn managed_properties_are_refused() {
        for key in [
            "delivery.timeout.ms",
            "linger.ms",
            "compression.codec",
            "acks",
        ] {
            let mut config = KafkaConfig::default();
            config.properties.insert(key.into(), "1".into());
            let err = KafkaSink::new(&config, Arc::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("client.id".into(), "pulse-gw-1".into());
        let client = client_config(&config).unwrap();
        assert_eq!(client.get("client.id"), Some("pulse-gw-1"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("message.timeout.ms"), Some("5000"));
    }
}
