//! Kafka mode's state changelog (`[sink.kafka] state_topic`, `pulse.state` by default; create it
//! compacted, with the partitions of the events topic): every reader state the write-behind
//! stores is also produced there, keyed by the reader (so it lands in the partition their events
//! do), with the feature set it belongs to before the encoded state; a forgotten reader (TTL,
//! erasure) becomes a tombstone, so compaction keeps one record per living reader and nothing of
//! an erased one. The engine's position in the events topic goes with them under the key
//! [`META_PREFIX`]`<name>`.
//!
//! A gateway whose state store is empty (a new machine, a lost disk) restores it from the
//! changelog before it opens the engine: the states of the feature set last written, and the
//! positions, from which the events topic is then read as after any restart.
//!
//! IO boundary: a producer whose writes wait for their delivery reports (the write-behind's
//! thread waits; pages never do).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pulse_scorer::{FjallStore, StateStore, StoreError, StoreMirror, Write};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Keys of the engine's metadata in the changelog (reader keys never hold a NUL).
pub(crate) const META_PREFIX: &str = "\0pulse.meta/";
/// Time to read the topic's metadata.
const METADATA: Duration = Duration::from_secs(10);
/// A restore that hears nothing for this long gives up.
const STALL: Duration = Duration::from_secs(30);
/// States written to the store at once while restoring.
const CHUNK: usize = 10_000;

/// Counts the changelog records of the current write that were not delivered (records of an
/// earlier, failed write that time out meanwhile do not count against this one).
struct Reports {
    failed: Arc<AtomicU64>,
    /// The write whose records count (each record carries its write's number).
    current: Arc<AtomicU64>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, write: usize) {
        if let Err((e, _)) = result {
            tracing::warn!(error = %e, "a state changelog record was not delivered");
            if write as u64 == self.current.load(Ordering::Relaxed) {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The changelog's producer, a [`StoreMirror`] of the reader-state store.
pub(crate) struct Changelog {
    producer: BaseProducer<Reports>,
    topic: String,
    failed: Arc<AtomicU64>,
    current: Arc<AtomicU64>,
    timeout: Duration,
}

impl std::fmt::Debug for Changelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changelog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Changelog {
    /// A producer for `config.state_topic` with the sink's settings (acks from all replicas,
    /// idempotent, the partitioner every Pulse producer uses).
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self, super::SinkError> {
        let failed = Arc::new(AtomicU64::new(0));
        let current = Arc::new(AtomicU64::new(0));
        let producer = super::kafka::client_config(config)?
            .create_with_context(Reports {
                failed: Arc::clone(&failed),
                current: Arc::clone(&current),
            })
            .map_err(|e| super::SinkError::Unavailable(format!("state changelog: {e}")))?;
        check_topics(&producer, config);
        Ok(Self {
            producer,
            topic: config.state_topic.clone(),
            failed,
            current,
            // Waiting out librdkafka's own delivery timeout, and a little more.
            timeout: config.delivery_timeout_ms.get() + Duration::from_secs(1),
        })
    }

    fn send(&self, key: &str, payload: Option<&[u8]>, write: usize) -> Result<(), StoreError> {
        let mut record: BaseRecord<'_, str, [u8], usize> =
            BaseRecord::with_opaque_to(&self.topic, write).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The queue drains as reports come in.
                    self.producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => return Err(StoreError(format!("state changelog: {e}"))),
            }
        }
    }
}

/// Says at start what would make the changelog fail or mislead, as far as the brokers tell:
/// a missing topic (every write-behind would fail until it exists), or other partitions than
/// the events topic's (a reader's state would not sit in the partition of their events).
fn check_topics(producer: &BaseProducer<Reports>, config: &KafkaConfig) {
    let partitions = |topic: &str| -> Option<usize> {
        let md = producer
            .client()
            .fetch_metadata(Some(topic), METADATA)
            .ok()?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
    };
    match (
        partitions(&config.state_topic),
        partitions(&config.events_topic),
    ) {
        (None, _) => tracing::error!(
            topic = %config.state_topic,
            "the state changelog topic cannot be found: create it (cleanup.policy=compact, the events topic's partitions); until then every write-behind fails (pulse_scorer_flush_errors_total) and changed reader state stays in memory, or set state_topic = \"\""
        ),
        (Some(state), Some(events)) if state != events => tracing::warn!(
            state_topic = %config.state_topic,
            state,
            events,
            "the state changelog has other partitions than the events topic: give it the same number"
        ),
        _ => {}
    }
}

impl StoreMirror for Changelog {
    fn write(&self, fs: u64, writes: &[Write], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        // The store's writes are one at a time (the engine's flush lock).
        let write = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        let write = usize::try_from(write).unwrap_or_default();
        let failed_before = self.failed.load(Ordering::Relaxed);
        let mut value = Vec::new();
        for w in writes {
            match &w.value {
                Some(state) => {
                    value.clear();
                    value.extend_from_slice(&fs.to_le_bytes());
                    value.extend_from_slice(state);
                    self.send(&w.reader, Some(&value), write)?;
                }
                None => self.send(&w.reader, None, write)?,
            }
        }
        self.delivered(failed_before)?;
        // The positions only once every state before them is in: a restore never finds
        // positions ahead of the states it holds.
        let mirrored: Vec<_> = meta
            .iter()
            .filter(|(name, _)| pulse_scorer::MIRRORED_META.contains(name))
            .collect();
        if mirrored.is_empty() {
            return Ok(());
        }
        for (name, v) in mirrored {
            self.send(&format!("{META_PREFIX}{name}"), Some(v), write)?;
        }
        self.delivered(failed_before)
    }
}

impl Changelog {
    /// Waits for every record sent so far; `Err` when one of this write's failed.
    fn delivered(&self, failed_before: u64) -> Result<(), StoreError> {
        self.producer
            .flush(self.timeout)
            .map_err(|e| StoreError(format!("state changelog: {e}")))?;
        let failed = self.failed.load(Ordering::Relaxed) - failed_before;
        if failed > 0 {
            return Err(StoreError(format!(
                "state changelog: {failed} records not delivered"
            )));
        }
        Ok(())
    }
}

/// What a restore from the changelog found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Reader states written to the store.
    pub(crate) states: u64,
    /// Records read (states, tombstones, metadata).
    pub(crate) records: u64,
}

/// Fills the empty `store` from the changelog: every partition read to its end as it stands
/// now; the states of the feature set the metadata names (a later record of a reader replacing
/// an earlier one, a tombstone removing it) and the metadata. `partitions` is the engine's.
pub(crate) fn restore(
    kafka: &KafkaConfig,
    store: &FjallStore,
    partitions: u16,
) -> Result<Restored, String> {
    let topic = kafka.state_topic.as_str();
    let consumer: BaseConsumer = super::cluster_client(kafka)
        .map_err(|e| format!("the changelog's consumer: {e}"))?
        .set("group.id", "pulse-state-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| format!("the changelog's consumer: {e}"))?;
    let md = consumer
        .fetch_metadata(Some(topic), METADATA)
        .map_err(|e| format!("{topic}: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut left = HashMap::new();
    for p in md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, METADATA)
            .map_err(|e| format!("{topic}/{p}: {e}"))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
            left.insert(p, high);
        }
    }
    // Written as read, in chunks per feature set (a reader's later record after its earlier
    // one, all in its partition's order); the feature sets not in force at the end are dropped
    // by the engine when it opens.
    let mut pending: HashMap<u64, Vec<Write>> = HashMap::new();
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let mut restored = Restored::default();
    let flush = |fs: u64, writes: &mut Vec<Write>| -> Result<(), String> {
        store.write(fs, writes, &[]).map_err(|e| e.to_string())?;
        writes.clear();
        Ok(())
    };
    if !left.is_empty() {
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
    }
    let mut heard = Instant::now();
    while !left.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None if heard.elapsed() > STALL => {
                return Err(format!("{topic}: nothing heard for {} s", STALL.as_secs()));
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                left.remove(&p);
            }
            Some(Err(e)) => return Err(format!("{topic}: {e}")),
            Some(Ok(m)) => {
                heard = Instant::now();
                let (p, offset) = (m.partition(), m.offset());
                if left.get(&p).is_some_and(|end| offset + 1 >= *end) {
                    left.remove(&p);
                }
                restored.records += 1;
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if let Some(name) = key.strip_prefix(META_PREFIX) {
                    meta.insert(name.to_owned(), m.payload().unwrap_or_default().to_vec());
                    continue;
                }
                let partition = pulse_scorer::partition_of(&key, partitions);
                match m.payload() {
                    Some(v) if v.len() >= 8 => {
                        let mut fs = [0u8; 8];
                        fs.copy_from_slice(&v[..8]);
                        let fs = u64::from_le_bytes(fs);
                        let writes = pending.entry(fs).or_default();
                        writes.push(Write {
                            partition,
                            reader: key,
                            value: Some(v[8..].to_vec()),
                        });
                        restored.states += 1;
                        if writes.len() >= CHUNK {
                            flush(fs, writes)?;
                        }
                    }
                    _ => {
                        for (fs, writes) in &mut pending {
                            writes.push(Write {
                                partition,
                                reader: key.clone(),
                                value: None,
                            });
                            if writes.len() >= CHUNK {
                                flush(*fs, writes)?;
                            }
                        }
                    }
                }
            }
        }
    }
    for (fs, writes) in &mut pending {
        flush(*fs, writes)?;
    }
    let active = meta
        .get("feature_set")
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes);
    let Some(fs) = active else {
        return Ok(restored); // nothing was ever written behind
    };
    let meta: Vec<(&str, Vec<u8>)> = pulse_scorer::MIRRORED_META
        .iter()
        .filter_map(|name| meta.remove(*name).map(|v| (*name, v)))
        .collect();
    store.write(fs, &[], &meta).map_err(|e| e.to_string())?;
    Ok(restored)
}
