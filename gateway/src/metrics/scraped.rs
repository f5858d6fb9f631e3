//! The gateway's own series read at scrape time: open connections, the sink's queue, tracked
//! limiter keys, the event log's size, live gateways, and the process.

use prometheus_client::metrics::MetricType;

use super::Snapshot;

/// What the gateway reads for one scrape.
#[derive(Debug, Default)]
pub(crate) struct Scraped {
    /// Open connections by listener kind.
    pub(crate) connections: Vec<(&'static str, usize)>,
    /// The sink's queue (see `Sink::queue_depth`).
    pub(crate) sink_queue: usize,
    /// Client addresses the per-address rate limit tracks.
    pub(crate) tracked_addresses: usize,
    /// Bytes of the embedded event log on disk (none in Kafka mode).
    pub(crate) event_log_bytes: Option<u64>,
    /// Gateways seen alive on the control topic (Kafka mode with a control topic).
    pub(crate) live_gateways: Option<u32>,
    /// A split tier (`cluster.role` gateway or scorer): the live scorers and the partitions
    /// with a live claimant, as this instance sees them.
    pub(crate) tier: Option<(usize, usize)>,
    /// A scorer: its partitions by state (`restoring`, `catching_up`, `ready`).
    pub(crate) owned: Vec<(&'static str, usize)>,
    /// Gaps in sessions' batch numbers, where this instance counts them.
    pub(crate) seq: Option<crate::gaps::SeqCounts>,
    /// Dictionaries held (all sites), and lookups that found one.
    pub(crate) dictionaries: (usize, u64),
}

/// Adds the gateway's scraped series and the process's.
pub(crate) fn gateway_series(out: &mut Snapshot, s: &Scraped) {
    out.labelled(
        "pulse_gateway_open_connections",
        "Connections open now, by listener (tcp: cleartext and TLS; quic; admin).",
        MetricType::Gauge,
        s.connections
            .iter()
            .map(|(kind, n)| (vec![("listener", (*kind).to_owned())], *n as f64))
            .collect(),
    );
    out.gauge(
        "pulse_gateway_sink_queue_depth",
        "What waits in the sink: batches queued for the log writer (embedded), messages not yet acknowledged by the brokers (Kafka).",
        s.sink_queue as f64,
    );
    out.gauge(
        "pulse_gateway_rate_limiter_tracked_keys",
        "Client addresses the per-address rate limit tracks now.",
        s.tracked_addresses as f64,
    );
    if let Some(bytes) = s.event_log_bytes {
        out.gauge(
            "pulse_gateway_event_log_bytes",
            "Bytes the embedded event log takes on disk.",
            bytes as f64,
        );
    }
    if let Some(n) = s.live_gateways {
        out.gauge(
            "pulse_gateway_live_gateways",
            "Gateways seen alive on the control topic (this one included); each enforces its share of the rate limits.",
            f64::from(n),
        );
    }
    if let Some((scorers, claimed)) = s.tier {
        out.gauge(
            "pulse_tier_live_scorers",
            "Scorers heard on the control topic within the last seconds (split tier).",
            scorers as f64,
        );
        out.gauge(
            "pulse_tier_claimed_partitions",
            "Partitions of the events topic a live scorer answers for; fewer than scorer.partitions while partitions move.",
            claimed as f64,
        );
    }
    out.gauge(
        "pulse_gateway_dictionaries",
        "Dictionaries for compact bodies held, all sites and versions together.",
        s.dictionaries.0 as f64,
    );
    out.counter(
        "pulse_gateway_dictionary_lookups",
        "Compact bodies inflated against a site's dictionary, and dictionaries served.",
        s.dictionaries.1 as f64,
    );
    if let Some(seq) = s.seq {
        out.counter(
            "pulse_gateway_session_batches_lost",
            "Batches missing from their session's numbers: never arrived while 64 later ones did, or before the session went idle for an hour (lost minus late is what never came).",
            seq.lost as f64,
        );
        out.counter(
            "pulse_gateway_session_batches_late",
            "Batches that arrived after their number was counted lost.",
            seq.late as f64,
        );
        out.counter(
            "pulse_gateway_session_batches_untracked",
            "Batches of sessions whose numbers were not tracked (the table of 229,376 sessions was full, or a number past 2^32).",
            seq.untracked as f64,
        );
        out.gauge(
            "pulse_gateway_tracked_sessions",
            "Sessions whose batch numbers are tracked now (idle for an hour: forgotten).",
            seq.sessions as f64,
        );
    }
    if !s.owned.is_empty() {
        out.labelled(
            "pulse_tier_owned_partitions",
            "Partitions the group gave this scorer, by state: restoring (from the changelog), catching_up (from the events topic), ready.",
            MetricType::Gauge,
            s.owned
                .iter()
                .map(|(state, n)| (vec![("state", (*state).to_owned())], *n as f64))
                .collect(),
        );
    }
    super::process::process_series(out);
}
