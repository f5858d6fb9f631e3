//! Where accepted events and dead letters are made durable. A [`Sink`] makes a request's
//! records durable before the gateway answers; every implementation has the same shape (the
//! sink, its tests) and takes the same [`Records`]. `embedded` (the segmented log of
//! `crate::log`, group-committed) is the default; `kafka` (rdkafka, idempotent, `acks=all`)
//! serves a publisher who outgrew one machine.

mod changelog;
mod embedded;
mod kafka;
mod records;
mod restore;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SinkKind};
use crate::log::{AppliedGuard, EventLog};

pub(crate) use changelog::{Changelog, META_PREFIX};
pub use embedded::EmbeddedSink;
use kafka::KafkaSink;
pub(crate) use kafka::{KafkaLog, client_config, cluster_client};
pub use records::{RecordKind, Records};
pub(crate) use restore::{KafkaOffsets, is_erasure, restore};

/// Fills an empty reader-state store from the state changelog (Kafka mode).
pub(crate) use changelog::restore as restore_changelog;

/// What one request appends: its accepted events and its dead letters, with what Kafka keys
/// and headers need.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// The site key.
    pub site: String,
    /// The reader the events belong to (Kafka's message key for events).
    pub reader: String,
    /// When the gateway received the request, ms since the epoch (Kafka's message timestamp).
    pub received_at: u64,
    /// Accepted events, in batch order.
    pub events: Records,
    /// Rejected events and refused batches, with their reasons.
    pub dead_letters: Records,
}

/// Proof that a batch is durable.
#[derive(Debug)]
pub struct Receipt {
    /// Number of events appended.
    pub events: usize,
    /// Held until the scorer has applied the events; dropping it lets the replay point move
    /// past them (the embedded log's position, or in Kafka mode the partition's offset).
    pub applied: Option<AppliedGuard>,
    /// Kafka: the offsets the events landed at, in their partition (empty when embedded).
    pub offsets: Vec<i64>,
}

/// Why a batch could not be made durable. Always retryable for the client (503).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The log failed to write or sync.
    #[error("log write failed: {0}")]
    Io(String),
    /// The log is shutting down.
    #[error("log closed")]
    Closed,
    /// The log cannot take the batch now (queue full, brokers unreachable, deadline passed).
    #[error("log unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so sinks can be chosen at runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The durable log.
pub trait Sink: Send + Sync + 'static {
    /// Appends a batch and resolves once it is durable.
    fn append(&self, batch: SinkBatch) -> BoxFuture<'_, Result<Receipt, SinkError>>;

    /// Stops taking appends and waits until everything appended is durable (on shutdown); what
    /// cannot be made durable in time belonged to requests not acknowledged (logged).
    fn close(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// `embedded` or `kafka`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Whether the sink can write now, as far as it knows: `Err` with the reason of the last
    /// append when it failed and none has succeeded since (`/readyz`).
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Produces the erasure record of `reader` (Kafka: to the events topic, keyed by the
    /// reader) and resolves with where it went once it is durable. The embedded sink has
    /// none: its logs are erased in place.
    fn erasure(&self, _reader: &str, _at: u64) -> BoxFuture<'_, Result<String, SinkError>> {
        Box::pin(async { Err(SinkError::Unavailable("no erasure records here".into())) })
    }

    /// What waits in the sink now: batches queued for the log writer (embedded), messages not
    /// yet acknowledged by the brokers (Kafka).
    fn queue_depth(&self) -> usize {
        0
    }
}

/// The outcome of the latest append, for [`Sink::ready`].
#[derive(Debug, Default)]
pub(crate) struct LastAppend {
    failure: std::sync::Mutex<Option<String>>,
    failing: std::sync::atomic::AtomicBool,
}

impl LastAppend {
    /// Records an append's outcome (cheap when nothing changes).
    pub(crate) fn record<T>(&self, result: &Result<T, SinkError>) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(_) if !self.failing.load(Relaxed) => {}
            Ok(_) => {
                self.failing.store(false, Relaxed);
                if let Ok(mut f) = self.failure.lock() {
                    *f = None;
                }
            }
            Err(e) => {
                self.failing.store(true, Relaxed);
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(e.to_string());
                }
            }
        }
    }

    pub(crate) fn ready(&self) -> Result<(), String> {
        match self.failure.lock() {
            Ok(f) => f.clone().map_or(Ok(()), Err),
            Err(_) => Err("poisoned".into()),
        }
    }
}

impl std::fmt::Debug for dyn Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// Opens the log the configuration names: the embedded one (`log`, already open), or Kafka.
/// Reader state stays in `server.data` either way.
pub(crate) fn open(
    config: &Config,
    log: Option<Arc<EventLog>>,
    offsets: Option<Arc<KafkaOffsets>>,
    pool: Arc<crate::pool::BufPool>,
) -> Result<Arc<dyn Sink>, SinkError> {
    match (config.sink.kind, log) {
        (SinkKind::Embedded, Some(log)) => {
            tracing::info!(
                sink = "embedded",
                data = %config.server.data.display(),
                "events, dead letters and reader state go to the embedded store"
            );
            Ok(Arc::new(EmbeddedSink::new(log)) as Arc<dyn Sink>)
        }
        (SinkKind::Embedded, None) => Err(SinkError::Unavailable("no embedded log".into())),
        (SinkKind::Kafka, _) => {
            let kafka = &config.sink.kafka;
            let mut sink = KafkaSink::new(kafka, pool)?;
            if let Some(offsets) = offsets {
                sink = sink.with_offsets(offsets);
            }
            tracing::info!(
                sink = "kafka",
                brokers = %kafka.brokers,
                events_topic = %kafka.events_topic,
                deadletter_topic = %kafka.deadletter_topic,
                state_topic = %kafka.state_topic,
                delivery_timeout_ms = kafka.delivery_timeout_ms.get().as_millis() as u64,
                data = %config.server.data.display(),
                "events and dead letters go to kafka; reader state is kept in the data folder and copied to the state changelog (when state_topic is set)"
            );
            let store_deadline = config.limits.store_deadline_ms.get();
            if kafka.delivery_timeout_ms.get() > store_deadline {
                // The page gets its 503 at the store deadline, while the producer may still
                // deliver the batch later: the page's retry then writes it twice (harmless, as
                // consumers dedupe by id, but wasteful).
                tracing::warn!(
                    delivery_timeout_ms = kafka.delivery_timeout_ms.get().as_millis() as u64,
                    store_deadline_ms = store_deadline.as_millis() as u64,
                    "sink.kafka.delivery_timeout_ms exceeds limits.store_deadline_ms; pages get 503 at the store deadline"
                );
            }
            Ok(Arc::new(sink) as Arc<dyn Sink>)
        }
    }
}

/// Batches for the sinks' tests, built the way the ingest path builds them.
#[cfg(test)]
pub(crate) mod testing {
    use pulse_protocol::{
        Batch, BatchHeader, Event, EventId, EventType, PageContext, RecordPrefix, parse_batch,
    };

    use super::{Records, SinkBatch};

    pub(crate) const NOW: u64 = 1_800_000_000_000;

    /// A batch of page views with `ids` from `reader` (a user id unless it is `anon`), titles
    /// of `title` bytes, and dead letters `(reason, raw)`.
    pub(crate) fn test_batch(
        reader: &str,
        ids: impl IntoIterator<Item = u128>,
        title: usize,
        dead: &[(&'static str, &[u8])],
    ) -> SinkBatch {
        let batch = Batch {
            header: BatchHeader {
                v: 1,
                site_key: "demo".into(),
                anonymous_id: "anon".into(),
                user_id: (reader != "anon").then(|| reader.to_owned()),
                auth: None,
                session_id: "s".into(),
                seq: 0,
                sent_at: NOW,
                resent: false,
            },
            events: ids
                .into_iter()
                .map(|id| Event {
                    id: EventId(id),
                    ts: NOW,
                    kind: EventType::PageView,
                    name: None,
                    page: PageContext {
                        url: "https://n.example/".into(),
                        title: "t".repeat(title),
                        ..Default::default()
                    },
                    props: Default::default(),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&batch).unwrap_or_default();
        let mut events = Records::default();
        if !batch.events.is_empty() {
            let parsed = parse_batch(&json, NOW).expect("a good batch");
            let prefix = RecordPrefix::new("demo", &parsed.header, NOW);
            for view in &parsed.accepted {
                events.push_event(&prefix, view);
            }
        }
        let mut dead_letters = Records::default();
        for (i, (reason, raw)) in dead.iter().enumerate() {
            dead_letters.push_dead_letter("demo", reason, Some(i as u32), NOW, raw);
        }
        SinkBatch {
            site: "demo".into(),
            reader: reader.into(),
            received_at: NOW,
            events,
            dead_letters,
        }
    }
}
