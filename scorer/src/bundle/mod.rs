//! The bundle: what a publisher's scoring is made of, as data. A TOML file declares the
//! settings (TTL, allowed lateness, session gap), the features (a template and its parameters
//! each), a propensity model (a file beside it, its inputs fed by features) and the rules that decide. `spec` reads the file, `compile` checks everything at once and builds
//! the [`Bundle`] the engine runs, `active` holds the one in force.
//!
//! Its id is a hash of its content; the hash of its feature set (what state depends on) names
//! every stored reader state, so a bundle that changes only the rules reuses state, and one
//! that changes features rebuilds it from the log.

mod active;
mod compile;
mod order;
mod spec;

pub use active::ActiveBundle;
pub use compile::{
    Bundle, BundleError, BundleModel, Feature, MAX_BUNDLE_BYTES, MAX_FEATURES, STATE_FORMAT,
    Settings,
};
pub use spec::Problem;
