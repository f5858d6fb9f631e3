//! The Pulse scoring tier as a library: features defined as data and maintained incrementally
//! over event time, compact reader state, and the decision the gateway returns with every batch.
//!
//! - [`bundle`](Bundle): a TOML file of settings, features (each a template and parameters) and
//!   the decision; checked whole ([`BundleError`] lists every problem), identified by a hash of
//!   its content.
//! - templates: one file each (`templates/`), the same shape: spec → state → apply → value.
//! - windows by event time (`window/`): lifetime, sliding days and hours over buckets, session.
//! - state (`state/`): one reader's [`ReaderState`] (watermark, dedupe, features), its binary
//!   codec, and the [`StateStore`] trait.
//! - [`Model`] (`model/`): propensity models read from the trainers' own files (XGBoost JSON,
//!   LightGBM text) and logistic regression from a TOML file of coefficients, evaluated natively
//!   with the trainer's own split and missing-value rules; inputs named and kinded for bundles;
//!   each score explained by the inputs that mattered most ([`Model::top_contributions`]).
//! - rules (`rules/`): ordered CEL conditions over features, the page, the request, the model's
//!   score and entitlements, each with an action (or an experiment over actions); [`decide`].
//! - [`Engine`]: the only IO: a byte-bounded cache of readers by partition, write-behind to the
//!   store with the log position it covers, TTL by event time, rebuilds for new feature sets.
//! - [`Batcher`]: replaying a log as live traffic applied it.
//! - [`huge_pages`]: the heap, and so the reader-state cache, in transparent huge pages (a
//!   process executes itself again with glibc's tunable set).
//!
//! Time is an argument everywhere but in the engine's write-behind thread.

mod backtest;
mod bundle;
mod engine;
mod event;
mod filter;
mod memory;
mod model;
mod replay;
mod rules;
mod state;
mod templates;
mod time;
mod value;
mod window;

pub use backtest::{LogEntry, Tally, backtest};
pub use bundle::{
    ActiveBundle, Bundle, BundleError, BundleModel, Feature, MAX_BUNDLE_BYTES, MAX_FEATURES,
    Problem, STATE_FORMAT, Settings,
};
pub use engine::meta::MIRRORED as MIRRORED_META;
pub use engine::{
    CacheView, Engine, EngineConfig, EngineError, FjallStore, Positions, Progress, Rebuild,
    SWEEP_SLACK_MS, Scored, Snapshot, Startup, Stats, murmur2, partition_of,
};
pub use event::{Observed, Prop, hash64, page_key, url_path};
pub use memory::{HugePages, huge_pages};
pub use model::{
    InputKind, MAX_INPUTS, MAX_MODEL_BYTES, MAX_NODES, MAX_TREES, Model, ModelError, ModelFormat,
    Output,
};
pub use replay::Batcher;
pub use rules::{Decided, MAX_RULES, PageFacts, RESERVED, Request, Rules, decide};
pub use state::{
    CodecError, Dedupe, MemoryStore, Outcome, ReaderState, Seen, StateError, StateStore,
    StoreError, StoreMirror, Write,
};
pub use templates::Kind;
pub use time::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, parse_duration};
pub use value::Value;
pub use window::Window;
