//! Pulse wire types shared by the tracker, the gateway and the scorer.
//!
//! The format is JSON (optionally zstd-compressed by the client), described field by field in
//! `protocol/PROTOCOL.md`. This crate has no IO: it builds for `wasm32-unknown-unknown` as well as
//! for the server, and holds the one definition of every limit a client must respect.

mod batch;
mod decision;
mod event;
mod id;
mod limits;
mod record;
mod reject;

pub use batch::{Batch, BatchError, BatchHeader, ParsedBatch, parse_batch};
pub use decision::{Action, Assignment, Decision};
pub use event::{Event, EventType, PageContext};
pub use id::{EventId, ParseIdError};
pub use limits::*;
pub use record::{DEAD_LETTER_MAX_RAW, DeadLetter, EventRecord};
pub use reject::{CollectResponse, ErrorBody, ErrorCode, ErrorDetail, RejectReason, Rejection};

/// The protocol version this crate writes and the newest it reads.
pub const PROTOCOL_VERSION: u32 = 1;
