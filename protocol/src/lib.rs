//! Pulse wire types shared by the tracker, the gateway and the scorer.
//!
//! The format is JSON (optionally zstd-compressed by the client), described field by field in
//! `protocol/PROTOCOL.md`. This crate has no IO: it builds for `wasm32-unknown-unknown` as well as
//! for the server, and holds the one definition of every limit a client must respect.
//!
//! Without its `std` feature (on by default) the crate is `no_std` (`core` + `alloc`) and holds
//! what a client needs: the limits, [`EventId`], [`EventType`], [`PageContext`],
//! [`BatchHeader`], [`WireBatch`] / [`WireEvent`] with their JSON writer ([`json_text`]) and the
//! compact encoder ([`compact`]). The browser tracker's Wasm builds it so: one `std` in its
//! graph would bring std's panic and formatting machinery back.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod batch;
pub mod compact;
#[cfg(feature = "std")]
mod decision;
#[cfg(feature = "std")]
mod decision_record;
#[cfg(feature = "std")]
mod encoding;
#[cfg(feature = "std")]
mod erasure;
mod event;
mod id;
#[cfg(feature = "std")]
mod json;
mod limits;
#[cfg(feature = "std")]
mod record;
mod reject;
#[cfg(feature = "std")]
mod schema;
#[cfg(feature = "std")]
mod view;
mod wire;

pub use batch::BatchHeader;
#[cfg(feature = "std")]
pub use batch::{Batch, BatchError};
#[cfg(feature = "std")]
pub use decision::{Action, Assignment, Decision};
#[cfg(feature = "std")]
pub use decision_record::{DecisionRecord, ShadowDecision};
#[cfg(feature = "std")]
pub use encoding::{COMPACT_MAGIC, Encoding, GZIP_MAGIC, ZSTD_MAGIC};
#[cfg(feature = "std")]
pub use erasure::ErasureRecord;
#[cfg(feature = "std")]
pub use event::Event;
pub use event::{EventType, PageContext, check_fields};
pub use id::{EventId, HexId, ParseIdError, hex_digit, is_token};
pub use limits::*;
#[cfg(feature = "std")]
pub use record::{DEAD_LETTER_MAX_RAW, DeadLetter, EventRecord, RecordPrefix, write_dead_letter};
#[cfg(feature = "std")]
pub use reject::CollectResponse;
pub use reject::{ErrorBody, ErrorCode, ErrorDetail, RateLimit, RejectReason, Rejection};
#[cfg(feature = "schema")]
pub use schema::generate as generate_schema;
#[cfg(feature = "std")]
pub use schema::{RecordSchema, SCHEMA_HEADER, push_versioned};
#[cfg(feature = "std")]
pub use view::{BatchView, EventView, HeaderView, PropValue, parse_batch};
pub use wire::{WireBatch, WireEvent, json_text};

/// The protocol version this crate writes and the newest it reads.
pub const PROTOCOL_VERSION: u32 = 1;
