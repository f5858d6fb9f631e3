//! The decision log: every decision answered to a page, with the bundle and rule that made it,
//! the model's score, the experiment arm and the probability of that assignment, and the
//! feature values it read (the training set of the next model, and what experiments are
//! estimated from). One JSON object per decision (`record`; `protocol/PROTOCOL.md`, "The
//! logs"), appended after the decision is made and never waited on: embedded, to the segment
//! log `<data>/log/decisions/` by the log writer (`crate::log`); with Kafka, to
//! `decisions_topic` by a producer of its own (`kafka`). Either way the queue is bounded by
//! bytes; a decision that does not fit is dropped and counted.
//!
//! Here too the shadow bundle's decisions are compared with the active one's: every pair of
//! actions is counted, and differences are logged (tracing) at most `shadow_log_per_second`.
//!
//! IO boundary: the log writer's thread and librdkafka's; `record` only copies into a queue.

mod kafka;
mod record;
mod sample;

use std::sync::Arc;

use crate::config::{Config, SinkKind};
use crate::decide::Decided;
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::pool::BufPool;
use crate::sink::SinkError;

use kafka::KafkaDecisions;
use record::Entry;
use sample::PerSecond;

/// Where decisions go.
#[derive(Debug)]
enum Target {
    /// Not logged (`decision_log.enabled = false`).
    Off,
    /// The embedded decision log.
    Embedded(Arc<EventLog>),
    /// The Kafka topic.
    Kafka(KafkaDecisions),
}

/// The decision log, as the ingest path uses it.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    target: Target,
    metrics: Arc<Metrics>,
    differences: PerSecond,
    pool: Arc<BufPool>,
}

impl DecisionLog {
    /// The decision log the configuration names: the embedded one (in `log`, when it keeps
    /// decisions), the Kafka topic, or none.
    pub(crate) fn open(
        config: &Config,
        log: Option<Arc<EventLog>>,
        metrics: Arc<Metrics>,
        pool: Arc<BufPool>,
    ) -> Result<Self, SinkError> {
        let target = match (config.decision_log.enabled, config.sink.kind, log) {
            (false, _, _) => Target::Off,
            // A split tier's scorers log each decision with the features it read.
            _ if config.cluster.role == crate::config::Role::Gateway => Target::Off,
            (true, SinkKind::Embedded, Some(log)) if log.logs_decisions() => Target::Embedded(log),
            (true, SinkKind::Embedded, _) => Target::Off,
            (true, SinkKind::Kafka, _) => Target::Kafka(KafkaDecisions::new(
                &config.sink.kafka,
                &config.decision_log,
                Arc::clone(&metrics),
            )?),
        };
        let (kind, place) = match &target {
            Target::Off => ("off", String::new()),
            Target::Embedded(_) => (
                "embedded",
                config
                    .server
                    .data
                    .join("log/decisions")
                    .display()
                    .to_string(),
            ),
            Target::Kafka(_) => ("kafka", config.sink.kafka.decisions_topic.clone()),
        };
        tracing::info!(decision_log = kind, to = %place, "decision log");
        Ok(Self {
            target,
            metrics,
            differences: PerSecond::new(config.scorer.shadow_log_per_second),
            pool,
        })
    }

    /// Counts the decision answered for `reader` of `site` at `now` (and the shadow's beside
    /// it) and logs it, without waiting.
    pub(crate) fn record(&self, site: &str, reader: &str, now: u64, decided: &Decided) {
        let decision = &decided.decision;
        self.metrics
            .decision(decision.action, decision.rule.as_deref());
        let scored = decided.scored.as_ref();
        let shadow = scored.and_then(|s| s.shadow.as_ref());
        if let Some(s) = shadow {
            self.metrics.shadow_pair(decision.action, s.action);
            if s.action != decision.action && self.differences.allow(now) {
                tracing::info!(
                    site,
                    reader,
                    active = decision.action.as_str(),
                    active_rule = decision.rule.as_deref().unwrap_or(&decision.reason),
                    shadow = s.action.as_str(),
                    shadow_rule = s.rule.as_deref().unwrap_or(&s.reason),
                    shadow_bundle = %s.version,
                    "the shadow bundle decides otherwise"
                );
            }
        }
        if matches!(self.target, Target::Off) {
            return;
        }
        let mut buf = self.pool.take();
        record::write(
            &mut buf,
            &Entry {
                time: now,
                site,
                reader,
                decision,
                score: scored.and_then(|s| s.score),
                probability: scored.and_then(|s| s.probability),
                snapshot: scored.map(|s| &s.snapshot),
                shadow,
            },
        );
        let taken = match &self.target {
            Target::Off => true,
            Target::Embedded(log) => log.log_decision(&buf),
            Target::Kafka(kafka) => kafka.log(reader, site, &buf, now),
        };
        if !taken {
            self.metrics.decisions_dropped(1);
        }
        self.pool.put(buf);
    }

    /// Delivers what the Kafka producer still holds, for at most its delivery timeout
    /// (blocking; on shutdown). The embedded log is written and synced by the log's close.
    pub(crate) fn close(&self) {
        if let Target::Kafka(kafka) = &self.target {
            let left = kafka.flush();
            if left > 0 {
                tracing::warn!(decisions = left, "decisions left undelivered at shutdown");
            }
        }
    }
}
