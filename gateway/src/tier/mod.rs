//! The split scoring tier on Kafka (`[cluster] role`): gateways without reader state, and
//! scorers that own the partitions of `pulse.events` through Kafka's consumer-group protocol.
//!
//! - A reader's partition is Kafka's default partitioner of their key (murmur2, the same in
//!   every producer); the scorer's engine keeps its state under the same partition number.
//! - A scorer ([`owner`]) restores a partition it is given from the state changelog, reads the
//!   events topic from the group's committed offset up to the end, and only then claims it on
//!   the control topic (key `scorer/<instance>`: its address and the partitions it answers for,
//!   sent again with every heartbeat). It commits a partition's offset only once the states of
//!   the events before it are in the changelog, so a new owner replays what the changelog lacks.
//! - A gateway ([`router`]) makes the batch durable on the events topic first, then asks the
//!   owner (`POST /internal/v1/score` on the scorer's admin listener) for the decision, which
//!   applies the batch's events at once; the owner sees them again on the topic, where dedupe by
//!   event id makes them count once. Without an owner that answers (a move under way) it retries
//!   until the decision deadline, then answers the fallback decision with `fallback: true`.

pub(crate) mod owner;
mod partition;
pub(crate) mod router;
mod serve;

pub(crate) use owner::Tier;
pub(crate) use router::Router;
pub(crate) use serve::serve;

use std::collections::HashMap;
use std::sync::RwLock;

use pulse_protocol::{Decision, Event};
use pulse_scorer::{Outcome, Request};
use serde::{Deserialize, Serialize};

/// The scorer's endpoint for gateways' decisions.
pub(crate) const SCORE_PATH: &str = "/internal/v1/score";
/// Whether `path` is one of the scorer's endpoints for gateways.
pub(crate) fn is_internal(path: &str) -> bool {
    matches!(path, SCORE_PATH | READER_PATH)
}

/// The scorer's endpoint for what it keeps of a reader (`{"reader", "now"}`: the reader's
/// explained state, or `null`).
pub(crate) const READER_PATH: &str = "/internal/v1/reader";
/// Prefix of the scorers' claims on the control topic.
pub(crate) const KEY_SCORER: &str = "scorer/";

/// What a gateway asks a scorer: a batch's accepted (and durable) events of one reader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScoreCall {
    /// The site key (for the decision log the scorer writes).
    #[serde(default)]
    pub(crate) site: String,
    pub(crate) reader: String,
    pub(crate) now: u64,
    pub(crate) device: Option<String>,
    pub(crate) country: Option<String>,
    pub(crate) entitled: Vec<(String, serde_json::Value)>,
    /// Each event with its server time.
    pub(crate) events: Vec<(Event, u64)>,
    /// A server's ask (`/v1/decide`): decide for the one page without applying it.
    #[serde(default)]
    pub(crate) peek: bool,
    /// Where the events landed in their partition of the events topic (ascending): the scorer
    /// decides once every event before the first is applied.
    #[serde(default)]
    pub(crate) offsets: Vec<i64>,
    /// How long the scorer may wait for that, in milliseconds.
    #[serde(default)]
    pub(crate) wait_ms: u64,
}

impl ScoreCall {
    /// The request facts the rules read.
    pub(crate) fn request(&self) -> Request {
        Request {
            device: self.device.clone(),
            country: self.country.clone(),
            entitled: self.entitled.clone(),
        }
    }
}

/// Why a scorer does not answer for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Another scorer owns the reader's partition (or none yet).
    NotOwner,
    /// This scorer was given it and is bringing it up to date.
    Restoring,
    /// Events of the partition before the call's are neither applied nor asked for in time
    /// (a request that never came: the events topic brings them).
    Behind,
    /// The engine failed.
    Failed(String),
}

/// A scorer's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScoreReply {
    pub(crate) decision: Decision,
    /// Events (by index) not applied, and why (`too_late`, `dedupe_full`; duplicates are not
    /// listed: the gateway's retries and the topic's copy are duplicates by design).
    pub(crate) late: Vec<(usize, String)>,
}

/// Checks that the events topic has `partitions` partitions (`scorer.partitions`): a gateway
/// routes a reader by that count, and Kafka places their events by the topic's. `Err` names
/// both; a topic the brokers cannot be asked about now passes (a warning is logged).
pub(crate) fn check_partitions(
    kafka: &crate::config::KafkaConfig,
    partitions: u16,
) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = kafka.events_topic.as_str();
    let consumer: BaseConsumer = crate::sink::cluster_client(kafka)
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    let found = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .ok()
        .and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        })
        .filter(|n| *n > 0);
    match found {
        Some(n) if n != usize::from(partitions) => Err(format!(
            "{topic} has {n} partitions but scorer.partitions is {partitions}: set it to {n} on every gateway and scorer"
        )),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(topic, "cannot check the events topic's partitions now");
            Ok(())
        }
    }
}

/// An [`Outcome`] by the name [`Outcome::as_str`] gives.
pub(crate) fn outcome(name: &str) -> Option<Outcome> {
    [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::TooLate,
        Outcome::DedupeFull,
    ]
    .into_iter()
    .find(|o| o.as_str() == name)
}

/// A scorer's claim as it goes on the control topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    /// Where gateways reach it (`host:port` of its admin listener).
    pub(crate) addr: String,
    /// When it was last given partitions (ms since the epoch): of two scorers claiming one
    /// partition during a move, the later one is asked first.
    pub(crate) since: u64,
    /// The partitions it answers for (restored and caught up).
    pub(crate) partitions: Vec<u16>,
}

/// Who answers for each partition, as the control topic tells: the scorers' latest claims with
/// the time of each (the record's timestamp, ms since the epoch).
#[derive(Debug, Default)]
pub(crate) struct Owners {
    claims: RwLock<HashMap<String, (Claim, u64)>>,
}

impl Owners {
    /// A scorer's claim (or, with `None`, its goodbye).
    pub(crate) fn update(&self, instance: &str, claim: Option<Claim>, at: u64) {
        let Ok(mut claims) = self.claims.write() else {
            return;
        };
        match claim {
            Some(c) => {
                if claims.get(instance).is_none_or(|(_, t)| *t <= at) {
                    claims.insert(instance.to_owned(), (c, at));
                }
            }
            None => {
                claims.remove(instance);
            }
        }
    }

    /// The scorers claiming `partition` among those heard within `live_ms` of `now`, the most
    /// recent assignment first.
    pub(crate) fn of(&self, partition: u16, now: u64, live_ms: u64) -> Vec<String> {
        let Ok(claims) = self.claims.read() else {
            return Vec::new();
        };
        let mut found: Vec<(u64, u64, &str)> = claims
            .values()
            .filter(|(c, at)| {
                now.saturating_sub(*at) < live_ms && c.partitions.contains(&partition)
            })
            .map(|(c, at)| (c.since, *at, c.addr.as_str()))
            .collect();
        found.sort_unstable_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        found.into_iter().map(|(_, _, a)| a.to_owned()).collect()
    }

    /// The live scorers and their partitions, for `/admin/cluster` and metrics.
    pub(crate) fn live(&self, now: u64, live_ms: u64) -> Vec<(String, Claim)> {
        let Ok(claims) = self.claims.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = claims
            .iter()
            .filter(|(_, (_, at))| now.saturating_sub(*at) < live_ms)
            .map(|(i, (c, _))| (i.clone(), c.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(addr: &str, since: u64, partitions: &[u16]) -> Option<Claim> {
        Some(Claim {
            addr: addr.into(),
            since,
            partitions: partitions.to_vec(),
        })
    }

    #[test]
    fn the_newest_live_claim_comes_first() {
        let owners = Owners::default();
        owners.update("a", claim("a:1", 3, &[0, 1]), 1_000);
        owners.update("b", claim("b:1", 4, &[1, 2]), 1_500);
        assert_eq!(owners.of(1, 2_000, 7_000), ["b:1", "a:1"]);
        assert_eq!(owners.of(0, 2_000, 7_000), ["a:1"]);
        assert!(owners.of(3, 2_000, 7_000).is_empty());
        // An older record of a scorer does not replace a newer one.
        owners.update("a", claim("a:1", 2, &[]), 900);
        assert_eq!(owners.of(0, 2_000, 7_000), ["a:1"]);
        // Silent for too long: not asked; gone: forgotten.
        assert!(owners.of(0, 9_000, 7_000).is_empty());
        owners.update("b", None, 2_000);
        assert!(owners.of(2, 2_000, 7_000).is_empty());
        assert_eq!(owners.live(2_000, 7_000).len(), 1);
    }

    #[test]
    fn outcomes_read_back_by_name() {
        for o in [Outcome::Applied, Outcome::TooLate, Outcome::DedupeFull] {
            assert_eq!(outcome(o.as_str()), Some(o));
        }
        assert_eq!(outcome("nonsense"), None);
    }
}
