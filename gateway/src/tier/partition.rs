//! A partition a scorer was given: where it stands, how far its events are applied, and its
//! restore from the state changelog.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pulse_scorer::{FjallStore, Write};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Time for the brokers' watermarks.
const METADATA: Duration = Duration::from_secs(10);
/// A changelog restore that hears nothing for this long gives up.
const STALL: Duration = Duration::from_secs(30);
/// States written to the store at once while restoring.
const CHUNK: usize = 10_000;

/// Where a partition this scorer was given stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Being rebuilt from the changelog.
    Restoring,
    /// Reading the events topic up to this offset (its end when it was given).
    CatchingUp(i64),
    /// Answering for its readers.
    Ready,
}

/// How far a ready partition's events are applied: every offset below `contiguous` (from the
/// topic or by a request), and the offsets above it that requests applied.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) contiguous: i64,
    pub(crate) ahead: BTreeSet<i64>,
}

impl Applied {
    /// A request applied the event at `offset`.
    pub(crate) fn mark(&mut self, offset: i64) {
        if offset >= self.contiguous {
            self.ahead.insert(offset);
        }
        self.absorb();
    }

    /// The topic's events are applied up to `end` (exclusive).
    pub(crate) fn reach(&mut self, end: i64) {
        self.contiguous = self.contiguous.max(end);
        self.absorb();
    }

    fn absorb(&mut self) {
        while let Some(&first) = self.ahead.first() {
            if first > self.contiguous {
                break;
            }
            self.ahead.pop_first();
            if first == self.contiguous {
                self.contiguous += 1;
            }
        }
    }
}

/// Fills the store with partition `p` of the changelog: the states of feature set `fs` (a
/// later record of a reader replacing an earlier one, a tombstone removing it). How many
/// states were read.
pub(crate) fn restore_partition(
    kafka: &KafkaConfig,
    store: &FjallStore,
    p: i32,
    fs: u64,
) -> Result<u64, String> {
    let topic = kafka.state_topic.as_str();
    let consumer: BaseConsumer = crate::sink::cluster_client(kafka)
        .map_err(|e| e.to_string())?
        .set("group.id", "pulse-state-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("the changelog's consumer: {e}"))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, p, METADATA)
        .map_err(|e| format!("{topic}/{p}: {e}"))?;
    if high <= low {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let partition = p as u16;
    let mut writes = Vec::new();
    let mut states = 0;
    let mut heard = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            None if heard.elapsed() > STALL => {
                return Err(format!(
                    "{topic}/{p}: nothing heard for {} s",
                    STALL.as_secs()
                ));
            }
            None => continue,
            Some(Err(e)) => return Err(format!("{topic}/{p}: {e}")),
            Some(Ok(m)) => {
                heard = Instant::now();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let last = m.offset() + 1 >= high;
                if !key.starts_with(crate::sink::META_PREFIX) {
                    let value = match m.payload() {
                        Some(v) if v.len() >= 8 && v[..8] == fs.to_le_bytes() => {
                            states += 1;
                            Some(v[8..].to_vec())
                        }
                        Some(_) => None, // another feature set's: not this bundle's state
                        None => None,
                    };
                    writes.push(Write {
                        partition,
                        reader: key,
                        value,
                    });
                    if writes.len() >= CHUNK {
                        store.write_local(fs, &writes).map_err(|e| e.to_string())?;
                        writes.clear();
                    }
                }
                if last {
                    break;
                }
            }
        }
    }
    store.write_local(fs, &writes).map_err(|e| e.to_string())?;
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_offsets_close_their_gaps() {
        let mut a = Applied {
            contiguous: 10,
            ahead: BTreeSet::new(),
        };
        // Requests ahead of the topic, one event missing (11).
        a.mark(12);
        a.mark(10);
        assert_eq!(a.contiguous, 11);
        a.mark(13);
        assert_eq!(a.contiguous, 11, "11 is neither asked for nor read");
        // The topic brings 11: everything up to 13 is applied.
        a.reach(12);
        assert_eq!(a.contiguous, 14);
        assert!(a.ahead.is_empty());
        // An offset behind is nothing new; the topic passing requests drops them.
        a.mark(5);
        a.mark(20);
        a.reach(30);
        assert_eq!((a.contiguous, a.ahead.len()), (30, 0));
    }
}
