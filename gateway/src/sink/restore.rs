//! Kafka mode's reader state across restarts. Reader state lives in the embedded store and is
//! written behind once a second; after a crash, the events acknowledged since then are in
//! `pulse.events` only. So the state's write-behind also records, per partition of the events
//! topic, the offset below which every event this gateway delivered has been applied (a delivered
//! batch holds its partition's point at its first offset until the scorer has applied it, as the
//! embedded log's replay point does), and at start the gateway reads each partition from that
//! offset (from the earliest one kept, for a partition with none) up to its end as it stood, and
//! applies those events before it serves pages. Events applied twice are duplicates by id (dedupe is
//! exact within the allowed lateness), so reading from a point a little early changes nothing.
//!
//! A gateway among several reads every gateway's events this way, which is more than it applied
//! live: that disagreement is what the partitioned scoring tier removes.
//!
//! IO boundary: [`restore`] runs a consumer once, before the gateway serves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_protocol::{ErasureRecord, EventRecord, RecordSchema};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::decide::Decider;
use crate::log::{AppliedGuard, Watermark};

/// How long the brokers may stay silent while a restore still has events to read.
const STALL: Duration = Duration::from_secs(30);
/// Time allowed for the topic's metadata and each partition's offsets.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Per partition of the events topic: the delivered events not yet applied, and the end.
#[derive(Debug)]
pub(crate) struct KafkaOffsets {
    topic: String,
    parts: Mutex<BTreeMap<i32, Arc<Mutex<Watermark>>>>,
}

impl KafkaOffsets {
    /// Offsets of `topic` starting at `ends` (where the restore stopped).
    pub(crate) fn new(topic: &str, ends: &BTreeMap<i32, u64>) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.to_owned(),
            parts: Mutex::new(
                ends.iter()
                    .map(|(&p, &end)| (p, Arc::new(Mutex::new(Watermark::at(end)))))
                    .collect(),
            ),
        })
    }

    /// The events of one batch were delivered to `partition` at offsets `first..=last`: held
    /// until the guard is dropped (once the scorer has applied them).
    pub(crate) fn hold(&self, partition: i32, first: i64, last: i64) -> Option<AppliedGuard> {
        let (first, end) = (u64::try_from(first).ok()?, u64::try_from(last).ok()? + 1);
        let wm = {
            let mut parts = self.parts.lock().ok()?;
            // A partition added since the start: nothing before this batch was applied.
            Arc::clone(
                parts
                    .entry(partition)
                    .or_insert_with(|| Arc::new(Mutex::new(Watermark::at(first)))),
            )
        };
        Watermark::hold(&wm, first, end)
    }

    /// Where a restore would start, per partition, in the form the engine stores.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let parts = self.parts.lock().ok()?;
        let offsets: BTreeMap<String, u64> = parts
            .iter()
            .filter_map(|(p, wm)| Some((p.to_string(), wm.lock().ok()?.point())))
            .collect();
        serde_json::to_vec(&serde_json::json!({"topic": self.topic, "offsets": offsets})).ok()
    }
}

/// The offsets [`KafkaOffsets::encode`] wrote, when they are for `topic`.
pub(crate) fn decode(bytes: &[u8], topic: &str) -> BTreeMap<i32, u64> {
    #[derive(serde::Deserialize)]
    struct Stored {
        topic: String,
        offsets: BTreeMap<String, u64>,
    }
    match serde_json::from_slice::<Stored>(bytes) {
        Ok(s) if s.topic == topic => s
            .offsets
            .into_iter()
            .filter_map(|(p, o)| Some((p.parse().ok()?, o)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// What a restore did.
#[derive(Debug)]
pub(crate) struct Restored {
    /// Events applied.
    pub(crate) events: u64,
    /// Where each partition ended (its end when the restore started).
    pub(crate) ends: BTreeMap<i32, u64>,
}

/// Reads every partition of the events topic from `stored` (see the module) to its end as it
/// stands now, applying each event to reader state through `decider`.
pub(crate) fn restore(
    kafka: &KafkaConfig,
    stored: Option<&[u8]>,
    decider: &Decider,
) -> Result<Restored, String> {
    let topic = kafka.events_topic.as_str();
    let from = stored.map(|b| decode(b, topic)).unwrap_or_default();
    let consumer: BaseConsumer = super::cluster_client(kafka)
        .map_err(|e| format!("the restore's consumer: {e}"))?
        .set("group.id", "pulse-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| format!("the restore's consumer: {e}"))?;
    let md = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| format!("{topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("{topic}: no such topic, or no partitions"));
    }
    let mut ends = BTreeMap::new();
    let mut left = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| format!("{topic}/{p}: {e}"))?;
        let (low, high) = (
            u64::try_from(low).unwrap_or(0),
            u64::try_from(high).unwrap_or(0),
        );
        let start = match from.get(&p) {
            Some(&o) if o < low => {
                tracing::warn!(
                    partition = p,
                    from = o,
                    earliest = low,
                    "events past the topic's retention were never applied to reader state"
                );
                low
            }
            Some(&o) => o,
            None => low,
        };
        ends.insert(p, high);
        if start < high {
            let offset = i64::try_from(start).map_err(|e| e.to_string())?;
            tpl.add_partition_offset(topic, p, Offset::Offset(offset))
                .map_err(|e| e.to_string())?;
            left.insert(p, high);
        }
    }
    if left.is_empty() {
        return Ok(Restored { events: 0, ends });
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut failure = None;
    let mut heard = Instant::now();
    // Readers erased on request: forgotten once the events before are applied.
    let mut erased = Vec::new();
    let records = std::iter::from_fn(|| {
        while !left.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                None if heard.elapsed() > STALL => {
                    failure = Some(format!(
                        "{topic}: no events for {} s with partitions {:?} unread",
                        STALL.as_secs(),
                        left.keys().collect::<Vec<_>>()
                    ));
                    return None;
                }
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    left.remove(&p);
                }
                Some(Err(e)) => {
                    failure = Some(format!("{topic}: {e}"));
                    return None;
                }
                Some(Ok(m)) => {
                    heard = Instant::now();
                    let (p, offset) = (m.partition(), u64::try_from(m.offset()).unwrap_or(0));
                    let Some(&end) = left.get(&p) else { continue };
                    if offset + 1 >= end {
                        left.remove(&p);
                    }
                    if offset >= end {
                        continue; // appended since the restore began: applied live
                    }
                    if is_erasure(&m) {
                        match serde_json::from_slice::<ErasureRecord>(
                            m.payload().unwrap_or_default(),
                        ) {
                            Ok(e) => erased.push(e.erased),
                            Err(e) => {
                                tracing::warn!(partition = p, offset, error = %e, "an unreadable erasure record")
                            }
                        }
                        continue;
                    }
                    let record =
                        serde_json::from_slice::<EventRecord>(m.payload().unwrap_or_default())
                            .map_err(|e| format!("{topic}/{p}@{offset}: not an EventRecord: {e}"));
                    return Some(record);
                }
            }
        }
        None
    });
    let events = decider.replay_records(records)?;
    if let Some(e) = failure {
        return Err(e);
    }
    // The reader's state as restored so far includes what they did before the erasure (and,
    // should they have come back since, after it: they start afresh).
    for reader in &erased {
        decider
            .engine()
            .erase(reader)
            .map_err(|e| format!("erasing a reader named by an erasure record: {e}"))?;
    }
    Ok(Restored { events, ends })
}

/// Whether a message of the events topic is an erasure record (by its `pulse-schema` header).
pub(crate) fn is_erasure(m: &impl Message) -> bool {
    use rdkafka::message::Headers;
    m.headers().is_some_and(|h| {
        h.iter().any(|h| {
            h.key == pulse_protocol::SCHEMA_HEADER
                && h.value == Some(RecordSchema::Erasure.id().as_bytes())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_waits_at_its_first_unapplied_batch() {
        let offsets = KafkaOffsets::new("pulse.events", &BTreeMap::from([(0, 10), (1, 4)]));
        let a = offsets.hold(0, 10, 12).unwrap();
        let b = offsets.hold(0, 13, 13).unwrap();
        let point = |o: &KafkaOffsets| decode(&o.encode().unwrap(), "pulse.events");
        assert_eq!(point(&offsets), BTreeMap::from([(0, 10), (1, 4)]));
        drop(b);
        assert_eq!(
            point(&offsets)[&0],
            10,
            "the earlier batch is not applied yet"
        );
        drop(a);
        assert_eq!(point(&offsets)[&0], 14);
        // A partition unknown at start begins at its first batch.
        let c = offsets.hold(2, 7, 8).unwrap();
        assert_eq!(point(&offsets)[&2], 7);
        drop(c);
        assert_eq!(point(&offsets)[&2], 9);
        // Offsets of another topic are not these.
        assert!(decode(&offsets.encode().unwrap(), "other").is_empty());
    }
}
