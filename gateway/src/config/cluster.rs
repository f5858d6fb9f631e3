//! `[cluster]`: which tier this process is when Pulse runs split on Kafka.
//!
//! - `role = "all"` (the default): gateway and scorer in one process, as on one machine.
//! - `role = "gateway"`: stateless; every batch goes to the scorer that owns its reader's
//!   partition of the events topic (found on the control topic) and its decision comes back.
//! - `role = "scorer"`: keeps the state of the partitions Kafka's consumer group gives it and
//!   answers gateways on its admin listener (`POST /internal/v1/score`, with `token`).

use serde::{Deserialize, Serialize};

/// A process's part in a split deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Gateway and scorer in one process (the embedded default, and one-process Kafka mode).
    #[default]
    All,
    /// A gateway without reader state: it routes to the scorers.
    Gateway,
    /// A scorer: owns partitions of reader state through a consumer group.
    Scorer,
}

impl Role {
    /// The name as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Gateway => "gateway",
            Self::Scorer => "scorer",
        }
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `all`, `gateway` or `scorer`. Default `all`.
    pub role: Role,
    /// The secret gateways send scorers (`Authorization: Bearer`); the same on every instance
    /// of a cluster, at least 16 characters; `env:NAME` reads it from the environment.
    /// Required unless `role = "all"`.
    pub token: String,
    /// Scorers: the address gateways reach this scorer's admin listener at (`host:port`).
    /// Default: the admin listener's bound address.
    pub advertise: Option<String>,
    /// Scorers: the Kafka consumer group that shares the partitions out. Default
    /// `pulse-scorers`.
    pub group: String,
    /// Scorers: the group's session timeout, in milliseconds: how long a scorer that stopped
    /// answering keeps its partitions. Default 6000.
    pub session_timeout_ms: u32,
    /// Scorers: the longest a rebalance waits for the group's members to rejoin, and the
    /// longest a scorer may take to restore the partitions it is given (Kafka's
    /// `max.poll.interval.ms`), in milliseconds. Default 60000.
    pub rebalance_timeout_ms: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            role: Role::All,
            token: String::new(),
            advertise: None,
            group: "pulse-scorers".to_owned(),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 60_000,
        }
    }
}

impl ClusterConfig {
    /// The token, read from the environment when it says `env:NAME`.
    pub fn secret(&self) -> Result<String, String> {
        match self.token.strip_prefix("env:") {
            Some(name) => std::env::var(name)
                .map_err(|_| format!("cluster.token names {name}, which is not set")),
            None => Ok(self.token.clone()),
        }
    }

    /// What is wrong with the section, given the sink's settings.
    pub(crate) fn problems(&self, kafka: bool, control: bool, state: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.role == Role::All {
            return problems;
        }
        let role = self.role.as_str();
        if !kafka {
            problems.push(format!(
                "cluster.role = {role:?} needs [sink] kind = \"kafka\""
            ));
        }
        if !control {
            problems.push(format!(
                "cluster.role = {role:?} needs sink.kafka.control_topic (scorers say there which partitions they own)"
            ));
        }
        if self.role == Role::Scorer && !state {
            problems.push(
                "cluster.role = \"scorer\" needs sink.kafka.state_topic (a new owner restores a partition from it)"
                    .to_owned(),
            );
        }
        match self.secret() {
            Ok(t) if t.len() >= 16 => {}
            Ok(_) => problems.push(format!(
                "cluster.role = {role:?} needs cluster.token: the same secret of at least 16 characters on every gateway and scorer"
            )),
            Err(e) => problems.push(e),
        }
        if self.group.is_empty() {
            problems.push("cluster.group may not be empty".to_owned());
        }
        if !(100..=300_000).contains(&self.session_timeout_ms) {
            problems.push(format!(
                "cluster.session_timeout_ms must be 100 to 300000, not {}",
                self.session_timeout_ms
            ));
        }
        if self.rebalance_timeout_ms < self.session_timeout_ms {
            problems.push(format!(
                "cluster.rebalance_timeout_ms ({}) must be at least cluster.session_timeout_ms ({})",
                self.rebalance_timeout_ms, self.session_timeout_ms
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_roles_need_kafka_the_topics_and_a_token() {
        let all = ClusterConfig::default();
        assert!(all.problems(false, false, false).is_empty());
        let scorer = ClusterConfig {
            role: Role::Scorer,
            ..ClusterConfig::default()
        };
        let problems = scorer.problems(false, false, false).join("\n");
        for part in [
            "kind = \"kafka\"",
            "control_topic",
            "state_topic",
            "cluster.token",
        ] {
            assert!(problems.contains(part), "{part} in {problems}");
        }
        let ok = ClusterConfig {
            role: Role::Gateway,
            token: "0123456789abcdef".into(),
            ..ClusterConfig::default()
        };
        assert!(ok.problems(true, true, false).is_empty());
    }
}
