//! The Pulse scoring tier as a library: per-reader state over event-time windows, the meter rule,
//! and the decision the gateway returns with every batch.
//!
//! The pure core ([`ReaderState`], [`MeterRules`]) takes time as an argument. [`Scorer`] adds
//! per-reader locking and persistence through a [`StateStore`], which is its only IO boundary:
//! the gateway backs it with its embedded store.

mod event;
mod filter;
mod state;
mod templates;
mod time;
mod value;
mod window;

mod legacy_state;
mod legacy_store;
mod rules;
mod scorer;

pub use rules::{MeterRules, RulesError, WindowDays};
pub use scorer::{ScoreError, Scorer, TimedEvent};
pub use legacy_state::{DAY_MS, ReaderState, page_key};
pub use legacy_store::{MemoryStore, StateStore, StoreError};
