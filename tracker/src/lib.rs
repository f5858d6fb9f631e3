//! The Pulse browser tracker.
//!
//! A pure core that builds and tests natively: [`Queue`] (batching by count, bytes and time,
//! retry, bounds, the parked copy), [`Session`] (anonymous id, session rotation, batch sequence
//! numbers), [`Engagement`] (read depth and active time), [`Consent`], URL stripping
//! ([`keep_query`]), [`Event`] and [`Batch`] (properties kept as JSON text) and [`encode`] (the
//! compact request body). Time and randomness are arguments throughout.
//! On `wasm32` a thin shell (`web.rs`, reaching the page through `Reflect`) drives the core from
//! the page: it owns every clock read, timer, `fetch`, `localStorage` access and DOM change.
//!
//! A load generator builds a [`pulse_protocol::Batch`] (or takes one from the `pulse-sim`
//! crate's simulated readership) and POSTs `encode_batch(&batch)` to `/v1/collect?k=KEY`.
//!
//! The Wasm build holds no general JSON serializer and no formatting machinery: JSON is written
//! by hand (`pulse_protocol::json_text`) and read by the browser (`JSON.parse`; `json.rs` reads
//! it natively), messages are concatenated.

mod consent;
mod encode;
mod engagement;
mod json;
mod queue;
mod session;
mod url;
#[cfg(target_arch = "wasm32")]
mod web;

pub use consent::Consent;
pub use encode::encode;
#[cfg(not(target_arch = "wasm32"))]
pub use encode::{batch_json, encode_batch};
pub use engagement::{ACTIVE_GAP_MS, Engagement};
pub use pulse_protocol::{WireBatch as Batch, WireEvent as Event};
pub use queue::{Outcome, Queue, QueueConfig, Reaction, Transmit};
pub use session::{SESSION_IDLE_MS, Session, hex_id};
pub use url::{DEFAULT_QUERY_ALLOW, campaign_of, keep_query};

/// The Wasm's allocator: a small free list instead of std's dlmalloc (about 8 KB of code).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());
