//! Pulse wire types shared by the tracker, the gateway and the scorer.
//!
//! The format is JSON (optionally zstd-compressed by the client), described field by field in
//! `protocol/PROTOCOL.md`. This crate has no IO: it builds for `wasm32-unknown-unknown` as well as
//! for the server, and holds the one definition of every limit a client must respect.

mod batch;
pub mod compact;
mod decision;
mod decision_record;
mod encoding;
mod erasure;
mod event;
mod id;
mod json;
mod limits;
mod record;
mod reject;
mod schema;
mod view;
mod wire;

pub use batch::{Batch, BatchError, BatchHeader};
pub use decision::{Action, Assignment, Decision};
pub use decision_record::{DecisionRecord, ShadowDecision};
pub use encoding::{COMPACT_MAGIC, Encoding, GZIP_MAGIC, ZSTD_MAGIC};
pub use erasure::ErasureRecord;
pub use event::{Event, EventType, PageContext, check_fields};
pub use id::{EventId, HexId, ParseIdError, is_token};
pub use limits::*;
pub use record::{DEAD_LETTER_MAX_RAW, DeadLetter, EventRecord, RecordPrefix, write_dead_letter};
pub use reject::{
    CollectResponse, ErrorBody, ErrorCode, ErrorDetail, RateLimit, RejectReason, Rejection,
};
#[cfg(feature = "schema")]
pub use schema::generate as generate_schema;
pub use schema::{RecordSchema, SCHEMA_HEADER, push_versioned};
pub use view::{BatchView, EventView, HeaderView, parse_batch};
pub use wire::{WireBatch, WireEvent, json_text};

/// The protocol version this crate writes and the newest it reads.
pub const PROTOCOL_VERSION: u32 = 1;
