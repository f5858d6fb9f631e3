//! The embedded sink: records framed in place on the request's task, then appended to the
//! segmented log (`crate::log`), whose writer thread group-commits them.

use std::sync::Arc;

use super::{BoxFuture, Receipt, Sink, SinkBatch, SinkError};
use crate::log::{EventLog, Frames, LogError};

/// The embedded sink.
#[derive(Debug)]
pub struct EmbeddedSink {
    log: Arc<EventLog>,
    last: super::LastAppend,
}

impl EmbeddedSink {
    /// A sink appending to `log`.
    pub fn new(log: Arc<EventLog>) -> Self {
        Self {
            log,
            last: super::LastAppend::default(),
        }
    }
}

impl From<LogError> for SinkError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Closed => Self::Closed,
            other => Self::Io(other.to_string()),
        }
    }
}

impl Sink for EmbeddedSink {
    fn queue_depth(&self) -> usize {
        self.log.queued()
    }

    fn append(&self, batch: SinkBatch) -> BoxFuture<'_, Result<Receipt, SinkError>> {
        Box::pin(async move {
            let events = batch.events.len();
            if events == 0 && batch.dead_letters.is_empty() {
                return Ok(Receipt {
                    events,
                    applied: None,
                    offsets: Vec::new(),
                });
            }
            let (events_buf, event_count) = batch.events.into_frames();
            let (dead, dead_count) = batch.dead_letters.into_frames();
            let appended = self
                .log
                .append(Frames {
                    events: events_buf,
                    event_count,
                    dead,
                    dead_count,
                })
                .await
                .map_err(SinkError::from);
            self.last.record(&appended);
            let appended = appended?;
            Ok(Receipt {
                events,
                applied: appended.applied,
                offsets: Vec::new(),
            })
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        // Every acknowledged append is already synced (the writer answers after its sync);
        // the log itself is closed by its owner once nothing uses it.
        Box::pin(std::future::ready(Ok(())))
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn ready(&self) -> Result<(), String> {
        self.last.ready()
    }
}
