//! The records of the durable log (`pulse.events`) and the dead-letter log (`pulse.deadletter`).
//! Every consumer of the log reads these; the scorer rebuilds its state from `EventRecord`s.

use serde::{Deserialize, Serialize};

use crate::{Event, RejectReason};

/// One accepted event as the log holds it: the event, who sent it, and when.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    /// The site key the batch was sent with.
    pub site: String,
    /// The reader the event belongs to: the user id when known, else the anonymous id.
    pub reader: String,
    /// The anonymous id of the batch.
    pub anonymous_id: String,
    /// The user id of the batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session id of the batch.
    pub session_id: String,
    /// The batch's per-session sequence number.
    pub seq: u64,
    /// Event time on the server's clock (client time corrected for skew), ms since the epoch.
    pub time: u64,
    /// When the gateway received the batch, ms since the epoch.
    pub received_at: u64,
    /// The event as the client sent it.
    pub event: Event,
}

/// A rejected event, or an undecodable batch from a known site, with the reason.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The site key the request was sent with.
    pub site: String,
    /// The machine-readable reason (a [`RejectReason`] or an `ErrorCode` as snake_case).
    pub reason: String,
    /// Position of the event in its batch, when one event was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// When the gateway received it, ms since the epoch.
    pub received_at: u64,
    /// The rejected JSON (or the decoded body), truncated to [`DEAD_LETTER_MAX_RAW`] bytes.
    pub raw: String,
}

/// The most bytes of raw input a dead letter keeps.
pub const DEAD_LETTER_MAX_RAW: usize = 64 * 1024;

impl DeadLetter {
    /// A dead letter for one rejected event.
    pub fn event(
        site: &str,
        reason: RejectReason,
        index: u32,
        received_at: u64,
        raw: &str,
    ) -> Self {
        Self {
            site: site.to_owned(),
            reason: reason.as_str().to_owned(),
            index: Some(index),
            received_at,
            raw: truncate(raw, DEAD_LETTER_MAX_RAW).to_owned(),
        }
    }

    /// A dead letter for a whole batch that was refused.
    pub fn batch(site: &str, reason: &str, received_at: u64, raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&raw[..raw.len().min(DEAD_LETTER_MAX_RAW)]);
        Self {
            site: site.to_owned(),
            reason: reason.to_owned(),
            index: None,
            received_at,
            raw: truncate(&text, DEAD_LETTER_MAX_RAW).to_owned(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
