//! The decision the gateway returns with every accepted batch.

use serde::{Deserialize, Serialize};

/// What the page should do for this reader.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Show the content with no meter (subscribers, unmetered pages).
    Allow,
    /// Show the content and the meter: `remaining` free articles are left.
    Meter,
    /// Cover the content with the paywall.
    Paywall,
}

impl Action {
    /// The snake_case name used on the wire and in `data-pulse-paywall`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Meter => "meter",
            Self::Paywall => "paywall",
        }
    }
}

/// A decision for one reader, computed from their state including the batch that asked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Decision {
    /// What the page should do.
    pub action: Action,
    /// Free articles left in the window after this page, when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// The meter's limit (free articles per window), when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Why, as a stable code: `subscriber`, `metered`, `regrant`, `exhausted`, `fallback`.
    pub reason: String,
    /// True when the scorer did not answer in time and this is the safe default.
    #[serde(default)]
    pub fallback: bool,
    /// Version of the rules that decided.
    pub version: String,
}
