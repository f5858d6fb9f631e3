//! The decision log in Kafka: records go to `decisions_topic` keyed by reader, through a
//! producer of their own (so that decisions can never fill the queue the events need), never
//! waited on: the message is handed to librdkafka and the request goes on. Its queue holds at
//! most `decision_log.queue_bytes`; a decision that does not fit is dropped and counted, and
//! so is one whose delivery fails (librdkafka reports it on the producer's own thread).
//!
//! IO boundary: librdkafka's threads; `log` only enqueues.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::config::{DecisionLogConfig, KafkaConfig};
use crate::metrics::Metrics;
use crate::sink::SinkError;

/// How long the decisions producer waits to fill a Kafka batch: nobody waits for it.
const LINGER_MS: &str = "100";

/// Counts deliveries and routes librdkafka's logs into the gateway's.
#[derive(Debug)]
pub(crate) struct Deliveries {
    metrics: Arc<Metrics>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::sink::KafkaLog.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::sink::KafkaLog.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.metrics.decisions_logged(1),
            Err((e, _)) => {
                tracing::debug!(error = %e, "a decision was not delivered");
                self.metrics.decisions_dropped(1);
            }
        }
    }
}

/// The decisions producer.
pub(crate) struct KafkaDecisions {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for KafkaDecisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDecisions")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaDecisions {
    /// A producer with the sink's settings (brokers, properties, idempotence), its own queue of
    /// `log.queue_bytes` and a longer linger.
    pub(crate) fn new(
        kafka: &KafkaConfig,
        log: &DecisionLogConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let mut client: ClientConfig = crate::sink::client_config(kafka)?;
        client
            .set(
                "queue.buffering.max.kbytes",
                (log.queue_bytes / 1024).max(1).to_string(),
            )
            .set("linger.ms", LINGER_MS);
        let producer = client
            .create_with_context(Deliveries { metrics })
            .map_err(|e| {
                SinkError::Unavailable(format!("cannot create the decisions producer: {e}"))
            })?;
        Ok(Self {
            producer,
            topic: kafka.decisions_topic.clone(),
            delivery_timeout: kafka.delivery_timeout_ms.get(),
        })
    }

    /// Hands one record to librdkafka; false when its queue is full or it refuses the message.
    pub(crate) fn log(&self, reader: &str, site: &str, record: &[u8], time: u64) -> bool {
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: pulse_protocol::SCHEMA_HEADER,
                value: Some(pulse_protocol::RecordSchema::Decision.id()),
            })
            .insert(Header {
                key: "pulse-site",
                value: Some(site),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
        let mut message = BaseRecord::to(&self.topic)
            .key(reader)
            .payload(record)
            .headers(headers);
        if let Ok(ms) = i64::try_from(time) {
            message = message.timestamp(ms);
        }
        self.producer.send(message).is_ok()
    }

    /// Waits (blocking) for queued decisions to be delivered, for at most the delivery timeout;
    /// returns how many are left.
    pub(crate) fn flush(&self) -> i32 {
        let _ = self.producer.flush(self.delivery_timeout);
        self.producer.in_flight_count()
    }
}
