//! The durable log behind the gateway. A [`Sink`] makes a batch's records durable before the
//! gateway answers: every implementation has the same shape (`config`, the sink, its tests).
//! `embedded` (fjall, group-committed fsync) is the default; `kafka` (rdkafka, idempotent,
//! `acks=all`) serves a publisher who outgrew one machine.

mod embedded;
mod kafka;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SinkKind};

use pulse_protocol::{DeadLetter, EventRecord};

pub use embedded::{AppliedGuard, EmbeddedStore, StoredEvent};
use kafka::KafkaSink;

/// What one request appends: its accepted events and its dead letters.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// Accepted events, in batch order.
    pub events: Vec<EventRecord>,
    /// Rejected events and refused batches, with their reasons.
    pub dead_letters: Vec<DeadLetter>,
}

/// Proof that a batch is durable.
#[derive(Debug)]
pub struct Receipt {
    /// Number of events appended.
    pub events: usize,
    /// Held until the scorer has applied the events; dropping it lets the store advance the
    /// point from which state is replayed after a crash.
    pub applied: Option<AppliedGuard>,
}

/// Why a batch could not be made durable. Always retryable for the client (503).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store failed to write or sync.
    #[error("store write failed: {0}")]
    Io(String),
    /// The store is shutting down.
    #[error("store closed")]
    Closed,
    /// The log cannot take the batch now (queue full, brokers unreachable, deadline passed).
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// A record could not be encoded.
    #[error("record encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A boxed future, so sinks can be chosen at runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The durable log.
pub trait Sink: Send + Sync + 'static {
    /// Appends a batch and resolves once it is durable.
    fn append(&self, batch: SinkBatch) -> BoxFuture<'_, Result<Receipt, SinkError>>;

    /// Stops taking appends and waits until everything appended is durable (on shutdown).
    fn close(&self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// `embedded` or `kafka`, for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// Opens the log the configuration names. `state` is the embedded store, which also keeps reader
/// state; with `kind = "embedded"` it is the log as well. With `kind = "kafka"` the events and
/// dead letters go to Kafka, while reader state stays in the embedded store (`server.data`).
pub(crate) fn open(
    config: &Config,
    state: &Arc<EmbeddedStore>,
) -> Result<Arc<dyn Sink>, SinkError> {
    match config.sink.kind {
        SinkKind::Embedded => {
            tracing::info!(
                sink = "embedded",
                data = %config.server.data.display(),
                "events, dead letters and reader state go to the embedded store"
            );
            Ok(Arc::clone(state) as Arc<dyn Sink>)
        }
        SinkKind::Kafka => {
            let kafka = &config.sink.kafka;
            let sink = KafkaSink::new(kafka)?;
            tracing::info!(
                sink = "kafka",
                brokers = %kafka.brokers,
                events_topic = %kafka.events_topic,
                deadletter_topic = %kafka.deadletter_topic,
                delivery_timeout_ms = kafka.delivery_timeout_ms.get().as_millis() as u64,
                data = %config.server.data.display(),
                "events and dead letters go to kafka; reader state stays in the embedded store"
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
