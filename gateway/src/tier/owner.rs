//! A scorer's side of the split tier: the partitions it owns through the consumer group, and
//! the decisions it gives gateways for their readers.
//!
//! A partition goes through three states here. Given by the group, it is *restoring*: its
//! cached and stored states are dropped (another scorer kept it meanwhile) and rebuilt from its
//! partition of the state changelog. Then it is *catching up*: the events topic is read from
//! the group's committed offset to the end. Then it is *ready*: claimed on the control topic,
//! and gateways' requests for its readers are answered. Requests for a partition that is not
//! ready are refused (409 `not_owner`, 503 `restoring`), so a gateway never gets a decision from
//! a state that misses acknowledged events: it retries, or answers the fallback.
//!
//! Every second, and before a partition is given up, the changed states are written (to the
//! local store and the changelog) and then the offsets of the events applied before that write
//! are committed. Taken away, a partition's states are written, dropped from memory and from the
//! local store (its next owner keeps them), and its claim withdrawn.
//!
//! IO boundary: one thread (`pulse-owner`) polls the group's consumer; the rebalance callbacks
//! run on it. Decisions run on the gateway's blocking pool.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pulse_protocol::EventRecord;
use pulse_scorer::{Engine, FjallStore, partition_of};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::partition::{Applied, Part, restore_partition};
use super::{Claim, Refusal, ScoreCall, ScoreReply};
use crate::cluster::ControlBus;
use crate::config::{ClusterConfig, KafkaConfig};

/// Time for the brokers' metadata, offsets and watermarks.
const METADATA: Duration = Duration::from_secs(10);

/// The partitions a scorer owns and its engine.
pub(crate) struct Tier {
    engine: Arc<Engine<FjallStore>>,
    partitions: u16,
    parts: RwLock<HashMap<u16, Part>>,
    /// Next offset to commit per partition (after the events before it are written).
    next: Mutex<HashMap<i32, i64>>,
    /// How far each ready partition's events are applied, and its signal.
    applied: Mutex<HashMap<u16, Applied>>,
    moved: Condvar,
    /// When partitions were last given (ms since the epoch).
    since: AtomicU64,
    /// The secret gateways present.
    pub(crate) token: String,
    /// Where this scorer logs the decisions it makes (with the features they read).
    decisions: std::sync::OnceLock<Arc<crate::decisions::DecisionLog>>,
    /// Gaps in the batch numbers of the readers' sessions, counted as events are applied.
    gaps: Arc<crate::gaps::SeqGaps>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: (KafkaConfig, ClusterConfig),
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Tier {
    /// A scorer over `engine`, not yet in the group (see [`Tier::start`]).
    pub(crate) fn new(
        engine: Arc<Engine<FjallStore>>,
        kafka: &KafkaConfig,
        cluster: &ClusterConfig,
        gaps: Arc<crate::gaps::SeqGaps>,
    ) -> Result<Self, String> {
        // What an earlier run kept belongs to whoever owns it now: a partition is restored
        // from the changelog when given, and nothing else may linger (the TTL sweep would
        // write tombstones for readers another scorer keeps).
        let partitions = engine.config().partitions;
        let mut dropped = 0;
        for p in 0..partitions {
            dropped += engine
                .store()
                .clear_partition(p)
                .map_err(|e| e.to_string())?;
        }
        if dropped > 0 {
            tracing::info!(
                states = dropped,
                "dropped the reader states of an earlier run: partitions are restored from the changelog when given"
            );
        }
        Ok(Self {
            partitions,
            engine,
            parts: RwLock::new(HashMap::new()),
            next: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            moved: Condvar::new(),
            since: AtomicU64::new(0),
            token: cluster.secret()?,
            decisions: std::sync::OnceLock::new(),
            gaps,
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
            config: (kafka.clone(), cluster.clone()),
        })
    }

    /// Logs every decision from now on to `log`.
    pub(crate) fn set_decision_log(&self, log: Arc<crate::decisions::DecisionLog>) {
        let _ = self.decisions.set(log);
    }

    /// Applies a gateway's batch and decides, if this scorer answers for the reader now.
    /// Blocking (the engine may read the store).
    pub(crate) fn score(&self, call: &ScoreCall) -> Result<ScoreReply, Refusal> {
        let p = partition_of(&call.reader, self.partitions);
        if let Some(&first) = call.offsets.first() {
            self.wait_applied(p, first, Duration::from_millis(call.wait_ms.min(2_000)))?;
        }
        // Held while scoring: a partition is given up only once no decision is under way.
        let _parts = self.ready(p)?;
        let scored = match (call.peek, call.events.as_slice()) {
            (true, [(view, _)]) => self
                .engine
                .peek(&call.reader, view, call.now, &call.request()),
            (true, _) => return Err(Refusal::Failed("a peek is about one page".into())),
            (false, events) => {
                let events: Vec<_> = events.iter().map(|(e, t)| (e, *t)).collect();
                self.engine
                    .score(&call.reader, &events, call.now, &call.request())
            }
        }
        .map_err(|e| Refusal::Failed(e.to_string()))?;
        if !call.offsets.is_empty()
            && let Ok(mut applied) = self.applied.lock()
            && let Some(a) = applied.get_mut(&p)
        {
            for &o in &call.offsets {
                a.mark(o);
            }
            self.moved.notify_all();
        }
        let reply = ScoreReply {
            late: scored
                .refused
                .iter()
                .map(|(i, o)| (*i, o.as_str().to_owned()))
                .collect(),
            decision: scored.decision.clone(),
        };
        if !call.peek
            && let Some(log) = self.decisions.get()
        {
            // Never waits: queued for the producer, or dropped and counted.
            let decided = crate::decide::Decided {
                decision: scored.decision.clone(),
                late: Vec::new(),
                scored: Some(scored),
            };
            log.record(&call.site, &call.reader, call.now, &decided);
        }
        Ok(reply)
    }

    /// What this scorer keeps of `reader` (`None`: nothing), if it answers for them.
    pub(crate) fn explain(
        &self,
        reader: &str,
        now: u64,
    ) -> Result<Option<serde_json::Value>, Refusal> {
        let p = partition_of(reader, self.partitions);
        let _parts = self.ready(p)?;
        self.engine
            .explain(reader, now)
            .map_err(|e| Refusal::Failed(e.to_string()))
    }

    /// Waits until every event of partition `p` before `offset` is applied (a request for an
    /// earlier event still on its way, or one that never comes and the topic brings).
    fn wait_applied(&self, p: u16, offset: i64, wait: Duration) -> Result<(), Refusal> {
        let until = Instant::now() + wait;
        let mut applied = self
            .applied
            .lock()
            .map_err(|_| Refusal::Failed("poisoned".into()))?;
        loop {
            match applied.get(&p) {
                Some(a) if a.contiguous >= offset => return Ok(()),
                Some(_) => {}
                None => {
                    drop(applied);
                    return Err(
                        match self.parts.read().ok().and_then(|s| s.get(&p).copied()) {
                            Some(_) => Refusal::Restoring,
                            None => Refusal::NotOwner,
                        },
                    );
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refusal::Behind);
            }
            applied = self
                .moved
                .wait_timeout(applied, left)
                .map_err(|_| Refusal::Failed("poisoned".into()))?
                .0;
        }
    }

    /// The partitions given to this scorer, each with where it stands (`restoring`,
    /// `catching_up`, `ready`).
    pub(crate) fn owned(&self) -> serde_json::Value {
        let parts = self.parts.read().map(|p| p.clone()).unwrap_or_default();
        let mut owned: Vec<_> = parts.into_iter().collect();
        owned.sort_unstable_by_key(|(p, _)| *p);
        owned
            .into_iter()
            .map(|(p, s)| {
                let state = match s {
                    Part::Restoring => "restoring",
                    Part::CatchingUp(_) => "catching_up",
                    Part::Ready => "ready",
                };
                serde_json::json!({"partition": p, "state": state})
            })
            .collect()
    }

    /// How many partitions are in each state, for metrics.
    pub(crate) fn by_state(&self) -> Vec<(&'static str, usize)> {
        let parts = self.parts.read().map(|p| p.clone()).unwrap_or_default();
        let count = |f: fn(&Part) -> bool| parts.values().filter(|s| f(s)).count();
        vec![
            ("restoring", count(|s| *s == Part::Restoring)),
            ("catching_up", count(|s| matches!(s, Part::CatchingUp(_)))),
            ("ready", count(|s| *s == Part::Ready)),
        ]
    }

    /// The partitions, read-locked, when `p` is ready here (held while a decision is made: a
    /// partition is given up only once none is under way); else why not.
    fn ready(&self, p: u16) -> Result<std::sync::RwLockReadGuard<'_, HashMap<u16, Part>>, Refusal> {
        let parts = self
            .parts
            .read()
            .map_err(|_| Refusal::Failed("poisoned".into()))?;
        match parts.get(&p) {
            Some(Part::Ready) => Ok(parts),
            Some(_) => Err(Refusal::Restoring),
            None => Err(Refusal::NotOwner),
        }
    }

    /// The claim to publish: the partitions ready now.
    fn claim(&self, addr: &str) -> Claim {
        let mut partitions: Vec<u16> = self
            .parts
            .read()
            .map(|p| {
                p.iter()
                    .filter(|(_, s)| **s == Part::Ready)
                    .map(|(p, _)| *p)
                    .collect()
            })
            .unwrap_or_default();
        partitions.sort_unstable();
        Claim {
            addr: addr.to_owned(),
            since: self.since.load(Ordering::Relaxed),
            partitions,
        }
    }

    /// Joins the group and starts following the partitions it gives (`addr`: where gateways
    /// reach this scorer).
    pub(crate) fn start(
        self: &Arc<Self>,
        bus: Arc<ControlBus>,
        addr: String,
    ) -> Result<(), String> {
        let (kafka, cluster) = &self.config;
        let context = Owner {
            tier: Arc::clone(self),
            bus,
            addr,
            kafka: kafka.clone(),
        };
        let session = cluster.session_timeout_ms;
        let consumer: BaseConsumer<Owner> = crate::sink::cluster_client(kafka)
            .map_err(|e| e.to_string())?
            .set("group.id", &cluster.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).max(50).to_string())
            .set(
                "max.poll.interval.ms",
                cluster.rebalance_timeout_ms.to_string(),
            )
            // Cooperative: a rebalance moves only the partitions that change owner; the others
            // keep answering (and are not restored again).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create_with_context(context)
            .map_err(|e| format!("the scorers' group consumer: {e}"))?;
        consumer
            .subscribe(&[kafka.events_topic.as_str()])
            .map_err(|e| e.to_string())?;
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new()
            .name("pulse-owner".into())
            .spawn(move || {
                follow(&consumer, &stop);
                let bus = Arc::clone(&consumer.context().bus);
                drop(consumer);
                bus.withdraw_claim();
            })
            .map_err(|e| e.to_string())?;
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(thread);
        }
        tracing::info!(group = %cluster.group, topic = %kafka.events_topic, "joined the scorers' group");
        Ok(())
    }

    /// Leaves the group: every partition written, its offsets committed, its claim withdrawn.
    pub(crate) fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The consumer's context: the rebalance callbacks.
struct Owner {
    tier: Arc<Tier>,
    bus: Arc<ControlBus>,
    addr: String,
    kafka: KafkaConfig,
}

impl ClientContext for Owner {
    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is how catching up ends, not a failure.
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(error = %error, reason, "the scorers' group consumer");
        }
    }
}

impl ConsumerContext for Owner {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let given_up: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if !given_up.is_empty() {
                self.give_up(consumer, &given_up);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let given: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if given.is_empty() {
                    return; // a cooperative round that gives this scorer nothing new
                }
                self.tier
                    .since
                    .store(crate::ingest::now_ms(), Ordering::Relaxed);
                self.take(consumer, &given);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "scorers' group rebalance"),
        }
    }
}

impl Owner {
    fn publish(&self) {
        self.bus.set_claim(&self.tier.claim(&self.addr));
    }

    /// Partitions taken away: refused from now on, written, committed, forgotten locally.
    fn give_up(&self, consumer: &BaseConsumer<Self>, given_up: &[i32]) {
        let tier = &self.tier;
        {
            // Waits for the decisions under way.
            let Ok(mut parts) = tier.parts.write() else {
                return;
            };
            for p in given_up {
                parts.remove(&(*p as u16));
            }
        }
        if let Ok(mut applied) = tier.applied.lock() {
            for p in given_up {
                applied.remove(&(*p as u16));
            }
            tier.moved.notify_all();
        }
        self.publish();
        checkpoint(consumer, tier);
        for &p in given_up {
            let p16 = p as u16;
            if let Err(e) = tier.engine.release(p16) {
                tracing::error!(partition = p, error = %e, "writing a partition given up failed");
            }
            if let Err(e) = tier.engine.store().clear_partition(p16) {
                tracing::warn!(partition = p, error = %e, "a partition given up stays in the local store");
            }
            if let Ok(mut next) = tier.next.lock() {
                next.remove(&p);
            }
        }
        tracing::info!(partitions = ?given_up, "partitions given up");
    }

    /// Partitions given: restored from the changelog, then caught up from the events topic.
    fn take(&self, consumer: &BaseConsumer<Self>, given: &[i32]) {
        let tier = &self.tier;
        if let Ok(mut parts) = tier.parts.write() {
            for p in given {
                parts.insert(*p as u16, Part::Restoring);
            }
        }
        let started = Instant::now();
        let fs = match tier.engine.bundle() {
            Ok(b) => b.feature_set,
            Err(e) => {
                tracing::error!(error = %e, "no bundle: the partitions stay unrestored");
                return;
            }
        };
        let mut states = 0;
        for &p in given {
            let p16 = p as u16;
            let _ = tier.engine.release(p16);
            let _ = tier.engine.store().clear_partition(p16);
            match restore_partition(&self.kafka, tier.engine.store(), p, fs) {
                Ok(n) => states += n,
                Err(e) => {
                    // The state starts from what the events topic still holds.
                    tracing::error!(partition = p, error = %e, "restoring a partition from the changelog failed");
                }
            }
        }
        // Each partition is read from the group's committed offset (from its earliest one,
        // for a partition never committed).
        let topic = &self.kafka.events_topic;
        let mut tpl = TopicPartitionList::new();
        for &p in given {
            let _ = tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, METADATA).ok();
        for &p in given {
            let from = committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .or_else(|| {
                    consumer
                        .fetch_watermarks(topic, p, METADATA)
                        .ok()
                        .map(|(low, _)| low)
                })
                .unwrap_or(0);
            if let Ok(mut next) = tier.next.lock() {
                next.insert(p, from);
            }
            if let Ok(mut parts) = tier.parts.write() {
                parts.insert(p as u16, Part::CatchingUp(0));
            }
        }
        tracing::info!(partitions = ?given, states, ms = started.elapsed().as_millis() as u64, "partitions restored from the changelog; catching up");
        for &p in given {
            caught_up(consumer, tier, p);
        }
    }
}

/// Writes the changed states, then commits the offsets applied before the write.
fn checkpoint(consumer: &BaseConsumer<Owner>, tier: &Tier) {
    let next = tier.next.lock().map(|n| n.clone()).unwrap_or_default();
    if let Err(e) = tier.engine.flush() {
        tracing::warn!(error = %e, "write-behind failed: offsets not committed");
        return;
    }
    if next.is_empty() {
        return;
    }
    let topic = &consumer.context().kafka.events_topic;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {}
        // Committed again at the next checkpoint, or by the revocation the rebalance brings.
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::RebalanceInProgress) => {
            tracing::debug!(error = %e, "offsets not committed during a rebalance");
        }
        Err(e) => tracing::warn!(error = %e, "committing the scorers' offsets failed"),
    }
}

/// The owner thread: applies the events of the partitions it owns, checkpoints every second.
fn follow(consumer: &BaseConsumer<Owner>, stop: &AtomicBool) {
    let tier = Arc::clone(&consumer.context().tier);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => apply(consumer, &tier, &m),
            Some(Err(KafkaError::PartitionEOF(p))) => caught_up(consumer, &tier, p),
            Some(Err(e)) => tracing::debug!(error = %e, "scorers' group"),
            None => {}
        }
        if last.elapsed() >= Duration::from_secs(1) {
            checkpoint(consumer, &tier);
            last = Instant::now();
        }
    }
    // Leaving: every partition given up (written, committed, claim withdrawn), then the group
    // gives them to the others at once.
    consumer.unsubscribe();
    let leaving = Instant::now();
    while leaving.elapsed() < Duration::from_secs(5)
        && tier.parts.read().map(|p| !p.is_empty()).unwrap_or(false)
    {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    checkpoint(consumer, &tier);
}

fn apply(consumer: &BaseConsumer<Owner>, tier: &Tier, m: &rdkafka::message::BorrowedMessage<'_>) {
    let (p, offset) = (m.partition(), m.offset());
    // A message fetched before its partition was given up is its next owner's.
    if !tier
        .parts
        .read()
        .is_ok_and(|parts| parts.contains_key(&(p as u16)))
    {
        return;
    }
    let payload = m.payload().unwrap_or_default();
    if crate::sink::is_erasure(m) {
        if let Ok(e) = serde_json::from_slice::<pulse_protocol::ErasureRecord>(payload)
            && let Err(err) = tier.engine.erase(&e.erased)
        {
            tracing::warn!(error = %err, "erasing a reader named on the events topic failed");
        }
    } else {
        match serde_json::from_slice::<EventRecord>(payload) {
            Ok(r) => {
                let now = crate::ingest::now_ms();
                tier.gaps
                    .observe(&r.site, &r.anonymous_id, &r.session_id, r.seq, now);
                if let Err(e) = tier.engine.replay(&r.reader, &[(&r.event, r.time)]) {
                    // Not committed past: applied again after the next restore.
                    tracing::error!(partition = p, offset, error = %e, "applying an event failed");
                    return;
                }
            }
            Err(e) => tracing::warn!(partition = p, offset, error = %e, "not an EventRecord"),
        }
    }
    if let Ok(mut next) = tier.next.lock() {
        next.insert(p, offset + 1);
    }
    if let Ok(mut applied) = tier.applied.lock()
        && let Some(a) = applied.get_mut(&(p as u16))
    {
        a.reach(offset + 1);
        tier.moved.notify_all();
    }
    caught_up(consumer, tier, p);
}

/// A partition catching up is ready once every event acknowledged so far is applied: the
/// consumer has passed the partition's end, asked for with the partition locked, so that a
/// request that arrives meanwhile waits instead of being refused (a request refused before
/// carries events below that end, applied by then).
fn caught_up(consumer: &BaseConsumer<Owner>, tier: &Tier, p: i32) {
    let reached = tier
        .next
        .lock()
        .ok()
        .and_then(|n| n.get(&p).copied())
        .unwrap_or(0);
    let p16 = p as u16;
    match tier
        .parts
        .read()
        .ok()
        .and_then(|parts| parts.get(&p16).copied())
    {
        Some(Part::CatchingUp(target)) if reached >= target => {}
        _ => return,
    }
    let topic = &consumer.context().kafka.events_topic;
    let ready = {
        let Ok(mut parts) = tier.parts.write() else {
            return;
        };
        match consumer.fetch_watermarks(topic, p, METADATA) {
            Ok((_, high)) if reached >= high => {
                parts.insert(p16, Part::Ready);
                if let Ok(mut applied) = tier.applied.lock() {
                    applied.insert(
                        p16,
                        Applied {
                            contiguous: reached,
                            ahead: BTreeSet::new(),
                        },
                    );
                }
                true
            }
            Ok((_, high)) => {
                parts.insert(p16, Part::CatchingUp(high));
                false
            }
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "the partition's end is unknown for now");
                false
            }
        }
    };
    if ready {
        tracing::info!(
            partition = p,
            "partition caught up: answering for its readers"
        );
        consumer.context().publish();
    }
}
