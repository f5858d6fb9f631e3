//! A batch as a client builds it: who sent it (site, reader, session) and the events it
//! carries. The server reads batches with [`parse_batch`](crate::parse_batch) instead.

use alloc::string::String;
#[cfg(feature = "std")]
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

#[cfg(feature = "std")]
use crate::{Event, MAX_EVENTS_PER_BATCH};

/// A batch of events as a client sends it.
#[cfg(feature = "std")]
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Header fields shared by every event of the batch.
    #[serde(flatten)]
    pub header: BatchHeader,
    /// The events, 1 to [`MAX_EVENTS_PER_BATCH`].
    pub events: Vec<Event>,
}

/// Everything in a batch but its events.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BatchHeader {
    /// Protocol version; this crate writes and reads
    /// [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub v: u32,
    /// The site key (must equal the `k` query parameter when both are given).
    pub site_key: String,
    /// The reader's anonymous id, kept by the client across visits.
    pub anonymous_id: String,
    /// The publisher's id for a logged-in reader, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// A token signed by the publisher (a JWT, at most [`MAX_AUTH_LEN`](crate::MAX_AUTH_LEN)
    /// bytes) that vouches for the user id and the reader's entitlements; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The session id; a new one after 30 minutes without activity.
    pub session_id: String,
    /// Per-session sequence number of this batch, from 0. A retry resends the same number.
    pub seq: u64,
    /// Client clock time when the batch was (re)sent, milliseconds since the Unix epoch. The
    /// server corrects event times by `server_now - sent_at`.
    pub sent_at: u64,
    /// Set on every send of the batch after its first (a retry, or a batch an earlier page
    /// parked): the gateway drops the events its reader state already holds instead of
    /// storing them again. Absent means false.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub resent: bool,
}

impl BatchHeader {
    /// The key the reader's state lives under: the user id when known, else the anonymous id.
    pub fn reader_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.anonymous_id)
    }
}

/// Why a whole batch is refused.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON, or nests deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH).
    #[error("the body is not well-formed JSON: {0}")]
    Malformed(String),
    /// The JSON does not have the shape of a batch, or a header field is invalid.
    #[error("the batch is invalid: {0}")]
    Invalid(String),
    /// The batch declares a protocol version this server does not read.
    #[error("protocol version {0} is not supported")]
    UnsupportedVersion(u32),
    /// More than [`MAX_EVENTS_PER_BATCH`] events, or none.
    #[error("a batch holds 1 to {MAX_EVENTS_PER_BATCH} events, this one {0}")]
    EventCount(usize),
}
