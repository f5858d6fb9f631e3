//! The durable log behind the gateway. A [`Sink`] makes a batch's records durable before the
//! gateway answers: every implementation has the same shape (`config`, the sink, its tests).
//! `embedded` (fjall, group-committed fsync) is the default; `kafka` (rdkafka, idempotent,
//! `acks=all`) serves a publisher who outgrew one machine.

mod embedded;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Config, SinkKind};

use pulse_protocol::{DeadLetter, EventRecord};

pub use embedded::{AppliedGuard, EmbeddedStore, StoredEvent};

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
/// state; with `kind = "embedded"` it is the log as well.
pub(crate) fn open(
    config: &Config,
    state: &Arc<EmbeddedStore>,
) -> Result<Arc<dyn Sink>, SinkError> {
    match config.sink.kind {
        SinkKind::Embedded => Ok(Arc::clone(state) as Arc<dyn Sink>),
        SinkKind::Kafka => Err(SinkError::Unavailable(
            "the kafka sink is not built into this gateway yet".into(),
        )),
    }
}
