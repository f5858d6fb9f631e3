//! Kafka mode's control topic (`[sink.kafka] control_topic`, `pulse.control` by default): how a
//! change made on one gateway reaches every gateway, and how gateways see one another.
//!
//! The topic is compacted and keyed; each key keeps its latest value:
//! - `limits`: the rate limits in force for the cluster, as the JSON of `[rate_limits]`;
//! - `bundle`: the active bundle, whole (its text and the files it names, as
//!   [`pulse_scorer::Bundle::stored`] writes them);
//! - `gateway/<instance>`: a gateway's heartbeat (`{"instance", "interval_ms"}`), every
//!   [`HEARTBEAT`]; a tombstone when it stops cleanly;
//! - `scorer/<instance>`: a scorer's heartbeat in a split tier: the partitions it answers for
//!   and where (see [`crate::tier`]), sent when they change and every [`HEARTBEAT`]; a
//!   tombstone when it stops cleanly;
//! - `erase/<reader>`: a reader to forget everywhere, followed by its tombstone;
//! - `dictionary/<site>/<hash>`: a dictionary for the site's compact bodies, trained by one
//!   gateway and held by all (its creation time, 8 bytes little-endian, then its bytes; see
//!   [`crate::dictionary`]).
//!
//! A change through the admin API (`PUT /admin/limits`, `PUT /admin/bundle`, a rollback) is
//! applied locally first, then published; every gateway, the one that made it included, reads
//! the topic from the beginning and applies each `limits` and `bundle` that differs from what it
//! has, in the topic's order, so all of them end on the last one published, within a second or
//! two. A gateway that starts (or restarts) applies the latest ones it finds, over its config
//! file. SIGHUP and `POST /admin/reload` stay local to one gateway.
//!
//! Rate limits are the cluster's: each gateway enforces its share, the limits divided by the
//! live gateways (those whose heartbeat is younger than [`LIVE_FOR`], by the record's
//! timestamp), so with the load balancer spreading traffic evenly three gateways admit what one
//! would ([`crate::config::RateLimits::share`]).
//!
//! IO boundary: one thread (`pulse-control`) consumes and sends heartbeats; publishing from the
//! admin API awaits the delivery report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Timestamp;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::{KafkaConfig, RateLimits, Role};
use crate::control::Control;
use crate::ingest::now_ms;
use crate::sink::SinkError;
use crate::tier::{Claim, KEY_SCORER, Owners};

/// Key of the rate limits.
const KEY_LIMITS: &str = "limits";
/// Key of the active bundle.
const KEY_BUNDLE: &str = "bundle";
/// Prefix of erasure keys: `erase/<reader>` tells every gateway to forget the reader's state;
/// a tombstone follows at once, so compaction keeps no trace of the reader.
const KEY_ERASE: &str = "erase/";
/// Prefix of dictionary keys: `dictionary/<site>/<hash>`.
const KEY_DICTIONARY: &str = "dictionary/";
/// Prefix of heartbeat keys.
const KEY_GATEWAY: &str = "gateway/";
/// How often a gateway says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gateway whose last heartbeat is older than this takes no share of the limits.
pub(crate) const LIVE_FOR: Duration = Duration::from_secs(7);
/// The largest control record (a bundle with its model, uncompressed).
const MAX_RECORD_BYTES: usize = pulse_scorer::MAX_BUNDLE_BYTES + pulse_scorer::MAX_MODEL_BYTES;
/// Time a publish may take before the admin API says it did not reach the topic.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The control topic's client: its producer, and the thread that follows the topic.
pub struct ControlBus {
    producer: FutureProducer,
    topic: String,
    instance: String,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A scorer's claim, sent again with every heartbeat.
    claim: Arc<Mutex<Option<Vec<u8>>>>,
    role: Role,
}

impl std::fmt::Debug for ControlBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlBus")
            .field("topic", &self.topic)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A name for this gateway among the others: the host, the process and a random part.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(random)
    )
}

impl ControlBus {
    /// Starts following `kafka.control_topic` for `control`, keeping the scorers' claims in
    /// `owners`; `role` says which heartbeat this process sends.
    pub(crate) fn start(
        kafka: &KafkaConfig,
        control: Arc<Control>,
        owners: Arc<Owners>,
        role: Role,
    ) -> Result<Self, SinkError> {
        let unavailable = |e: rdkafka::error::KafkaError| {
            SinkError::Unavailable(format!("the control topic's client: {e}"))
        };
        let max = (MAX_RECORD_BYTES + 1024 * 1024).to_string();
        let producer: FutureProducer = crate::sink::client_config(kafka)?
            .set("compression.type", "zstd")
            .set("message.max.bytes", &max)
            .set("linger.ms", "0")
            .create()
            .map_err(unavailable)?;
        let instance = instance_name();
        let consumer: BaseConsumer = crate::sink::cluster_client(kafka)?
            .set("group.id", format!("pulse-control-{instance}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.message.max.bytes", &max)
            .set(
                "receive.message.max.bytes",
                (MAX_RECORD_BYTES + 2 * 1024 * 1024).to_string(),
            )
            .create()
            .map_err(unavailable)?;
        let stop = Arc::new(AtomicBool::new(false));
        let claim = Arc::new(Mutex::new(None));
        let follower = Follower {
            consumer,
            producer: producer.clone(),
            topic: kafka.control_topic.clone(),
            instance: instance.clone(),
            control,
            peers: HashMap::new(),
            assigned: false,
            stop: Arc::clone(&stop),
            owners,
            claim: Arc::clone(&claim),
            role,
        };
        let thread = std::thread::Builder::new()
            .name("pulse-control".into())
            .spawn(move || follower.run())
            .map_err(|e| SinkError::Unavailable(format!("cannot start pulse-control: {e}")))?;
        tracing::info!(topic = %kafka.control_topic, %instance, "following the control topic");
        Ok(Self {
            producer,
            topic: kafka.control_topic.clone(),
            instance,
            stop,
            thread: Mutex::new(Some(thread)),
            claim,
            role,
        })
    }

    /// A scorer's claim: sent now, and again with every heartbeat.
    pub(crate) fn set_claim(&self, claim: &Claim) {
        let Ok(value) = serde_json::to_vec(claim) else {
            return;
        };
        let key = format!("{KEY_SCORER}{}", self.instance);
        let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::warn!(error = %e, "the scorer's claim was not sent");
        }
        if let Ok(mut c) = self.claim.lock() {
            *c = Some(value);
        }
    }

    /// A scorer stops answering: its claim is withdrawn (a tombstone), sent before this returns.
    pub(crate) fn withdraw_claim(&self) {
        if let Ok(mut c) = self.claim.lock() {
            *c = None;
        }
        let key = format!("{KEY_SCORER}{}", self.instance);
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(&key);
        if self.producer.send_result(record).is_ok() {
            let _ = self.producer.flush(Timeout::After(Duration::from_secs(2)));
        }
    }

    /// This gateway's name on the topic.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn publish(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if value.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "{} bytes: larger than a control record may be ({MAX_RECORD_BYTES})",
                value.len()
            ));
        }
        let record = FutureRecord::to(&self.topic).key(key).payload(value);
        match self.producer.send(record, PUBLISH_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        }
    }

    /// Publishes the cluster's rate limits; `Err` says why they did not reach the topic.
    pub(crate) async fn publish_limits(&self, limits: &RateLimits) -> Result<(), String> {
        let value = serde_json::to_vec(limits).map_err(|e| e.to_string())?;
        self.publish(KEY_LIMITS, &value).await
    }

    /// Publishes the active bundle (its archive's bytes).
    /// Tells every gateway to forget `reader`'s state (this one has already): the record, then
    /// its tombstone.
    pub(crate) async fn publish_erasure(&self, reader: &str) -> Result<(), String> {
        let key = format!("{KEY_ERASE}{reader}");
        let value = serde_json::json!({ "reader": reader, "by": self.instance }).to_string();
        self.publish(&key, value.as_bytes()).await?;
        let tombstone: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(&key);
        self.producer
            .send(tombstone, PUBLISH_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }

    /// Shares a dictionary trained here (queued; a failure is logged: the others hold the
    /// versions they have, and bodies compressed with this one get 409 there until the next).
    pub(crate) fn publish_dictionary(&self, site: &str, v: &crate::dictionary::Version) {
        let key = format!("{KEY_DICTIONARY}{site}/{:08x}", v.hash);
        let value = v.encode();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::warn!(site, error = %e, "cannot share a dictionary on the control topic");
        }
    }

    pub(crate) async fn publish_bundle(&self, stored: &[u8]) -> Result<(), String> {
        self.publish(KEY_BUNDLE, stored).await
    }

    /// Stops following the topic and says goodbye (a tombstone on the heartbeat key), so the
    /// others stop counting this gateway at once.
    pub(crate) fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        if self.role == Role::Scorer {
            return;
        }
        let key = format!("{KEY_GATEWAY}{}", self.instance);
        let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).key(&key);
        if self.producer.send_result(record).is_ok() {
            let _ = self.producer.flush(Timeout::After(Duration::from_secs(2)));
        }
    }
}

/// The thread that follows the topic.
struct Follower {
    consumer: BaseConsumer,
    producer: FutureProducer,
    topic: String,
    instance: String,
    control: Arc<Control>,
    /// Gateways by instance: the time of their latest heartbeat (ms since the epoch).
    peers: HashMap<String, u64>,
    assigned: bool,
    stop: Arc<AtomicBool>,
    owners: Arc<Owners>,
    claim: Arc<Mutex<Option<Vec<u8>>>>,
    role: Role,
}

impl Follower {
    fn run(mut self) {
        let mut beat = Instant::now() - HEARTBEAT;
        let mut warned = false;
        while !self.stop.load(Ordering::Relaxed) {
            if !self.assigned {
                match self.assign() {
                    Ok(()) => self.assigned = true,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(topic = %self.topic, error = %e, "cannot follow the control topic yet; retrying (create it: one partition, cleanup.policy=compact)");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            if beat.elapsed() >= HEARTBEAT {
                self.heartbeat();
                beat = Instant::now();
            }
            let record = match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let at = match m.timestamp() {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => {
                            u64::try_from(t).unwrap_or(0)
                        }
                        Timestamp::NotAvailable => now_ms(),
                    };
                    m.key().map(|k| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            m.payload().map(<[u8]>::to_vec),
                            at,
                        )
                    })
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "control topic");
                    None
                }
                None => None,
            };
            if let Some((key, value, at)) = record {
                self.handle(&key, value.as_deref(), at);
            }
            self.share();
        }
    }

    /// Every partition of the topic from its beginning (it should have one).
    fn assign(&self) -> Result<(), String> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or("no such topic")?;
        if let Some(e) = topic.error() {
            return Err(format!("{e:?}"));
        }
        if topic.partitions().is_empty() {
            return Err("the topic has no partitions".into());
        }
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            tpl.add_partition_offset(&self.topic, p.id(), Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        self.consumer.assign(&tpl).map_err(|e| e.to_string())
    }

    fn heartbeat(&self) {
        if self.role == Role::Scorer {
            // A scorer is not a gateway (it takes no share of the rate limits): it says which
            // partitions it answers for, once it has any.
            let claim = self.claim.lock().ok().and_then(|c| c.clone());
            if let Some(value) = claim {
                let key = format!("{KEY_SCORER}{}", self.instance);
                let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
                if let Err((e, _)) = self.producer.send_result(record) {
                    tracing::debug!(error = %e, "claim not sent");
                }
            }
            return;
        }
        let key = format!("{KEY_GATEWAY}{}", self.instance);
        let value = serde_json::json!({
            "instance": self.instance,
            "interval_ms": HEARTBEAT.as_millis() as u64,
        })
        .to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&value);
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }

    fn handle(&mut self, key: &str, value: Option<&[u8]>, at: u64) {
        if let Some(instance) = key.strip_prefix(KEY_SCORER) {
            let claim = value.and_then(|v| serde_json::from_slice::<Claim>(v).ok());
            if value.is_some() && claim.is_none() {
                tracing::warn!(%instance, "an unreadable scorer claim on the control topic");
                return;
            }
            self.owners.update(instance, claim, at);
            return;
        }
        if let Some(instance) = key.strip_prefix(KEY_GATEWAY) {
            match value {
                Some(_) => {
                    self.peers.insert(instance.to_owned(), at);
                }
                None => {
                    self.peers.remove(instance);
                }
            }
            return;
        }
        let Some(value) = value else { return };
        let control = Arc::clone(&self.control);
        if let Some(rest) = key.strip_prefix(KEY_DICTIONARY) {
            let parsed = rest.rsplit_once('/').and_then(|(site, hash)| {
                let hash = crate::dictionary::parse_hash(hash)?;
                Some((site, crate::dictionary::Version::decode(hash, value)?))
            });
            match parsed {
                Some((site, version)) => {
                    if control.dictionaries.add(site, version) {
                        tracing::info!(site, "a dictionary from the control topic");
                    }
                }
                None => tracing::warn!(key, "an unreadable dictionary on the control topic"),
            }
            return;
        }
        if let Some(reader) = key.strip_prefix(KEY_ERASE) {
            let by_me = serde_json::from_slice::<serde_json::Value>(value)
                .is_ok_and(|v| v["by"] == self.instance.as_str());
            if !by_me {
                match control.erase_reader(reader) {
                    Ok(had) => tracing::info!(had, "a reader erased through the control topic"),
                    Err(e) => {
                        tracing::warn!(error = %e, "erasing a reader from the control topic failed")
                    }
                }
            }
            return;
        }
        match key {
            KEY_LIMITS => match serde_json::from_slice::<RateLimits>(value) {
                Ok(limits) if limits == control.limiter.limits() => {}
                Ok(_) => match control.change_limits(value) {
                    Ok((limits, _)) => {
                        tracing::info!(?limits, "rate limits from the control topic applied");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limits from the control topic refused");
                    }
                },
                Err(e) => tracing::warn!(error = %e, "unreadable rate limits on the control topic"),
            },
            KEY_BUNDLE => match pulse_scorer::Bundle::from_stored(value) {
                Ok(bundle) => {
                    let active = control.active_bundle_id();
                    if active.as_deref() != Some(bundle.id.as_str()) {
                        let id = bundle.id.clone();
                        match control.activate_bundle(bundle) {
                            Ok(_) => {
                                tracing::info!(bundle = %id, "bundle from the control topic activated");
                            }
                            Err(e) => {
                                tracing::warn!(bundle = %id, error = %e, "bundle from the control topic refused");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable bundle on the control topic"),
            },
            _ => {}
        }
    }

    /// Enforces this gateway's share among the live ones (itself always among them).
    fn share(&mut self) {
        let now = now_ms();
        let live_for = LIVE_FOR.as_millis() as u64;
        self.peers
            .retain(|_, at| now.saturating_sub(*at) < 10 * live_for);
        let others = self
            .peers
            .iter()
            .filter(|(name, at)| **name != self.instance && now.saturating_sub(**at) < live_for)
            .count();
        // A scorer counts no gateway, itself included.
        let me = usize::from(self.role != Role::Scorer);
        let live = u32::try_from(others + me).unwrap_or(u32::MAX).max(1);
        if live != self.control.limiter.share() {
            tracing::info!(
                gateways = live,
                "live gateways changed: enforcing a share of the rate limits"
            );
            self.control.limiter.set_share(live);
        }
    }
}
