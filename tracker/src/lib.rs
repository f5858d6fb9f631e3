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
//!
//! On `wasm32` the crate is `no_std` (`core` + `alloc`, as are its dependencies there), with a
//! panic handler that traps: std's panic machinery (hooks, payloads, its message formatted)
//! stays out of the Wasm. Core's panic paths still take the addresses of their messages'
//! `Display` functions; `scripts/wasm-table-gc.js` drops those (see its head).

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

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

/// A panic in the Wasm traps (an `unreachable` instruction): the page's call into the tracker
/// throws a `RuntimeError`, as it did with std's `panic = "abort"`, without formatting a message
/// nobody reads.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
