//! The decision the gateway returns with every accepted batch.

use serde::{Deserialize, Serialize};

/// What the page should do for this reader.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Show the content with no meter (subscribers, unmetered pages).
    #[default]
    Allow,
    /// Show the content and the meter: `remaining` free articles are left.
    Meter,
    /// Cover the content with the paywall (`variant` says which).
    Paywall,
    /// Cover the content until the reader registers (free account).
    RegisterWall,
    /// Show the content and an offer (`offer` names it).
    Offer,
    /// Show the content and a prompt (`prompt` names it, e.g. `newsletter`).
    Prompt,
}

impl Action {
    /// Every action.
    pub const ALL: [Self; 6] = [
        Self::Allow,
        Self::Meter,
        Self::Paywall,
        Self::RegisterWall,
        Self::Offer,
        Self::Prompt,
    ];

    /// The snake_case name used on the wire and in `data-pulse-paywall`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Meter => "meter",
            Self::Paywall => "paywall",
            Self::RegisterWall => "register_wall",
            Self::Offer => "offer",
            Self::Prompt => "prompt",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A reader's assignment in an experiment.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The experiment's name.
    pub experiment: String,
    /// The arm the reader is in (`holdout` for readers held out).
    pub arm: String,
}

/// A decision for one reader, computed from their state including the batch that asked.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Decision {
    /// What the page should do.
    pub action: Action,
    /// Free articles left in the window after this page, when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// The meter's limit (free articles per window), when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Why, as a stable code: the meter's `metered`, `exhausted` or `not_metered`; else the id
    /// of the rule that decided (the demo's `subscriber`), `no_rule`, or `fallback`.
    pub reason: String,
    /// True when the scorer did not answer in time and this is the safe default.
    #[serde(default)]
    pub fallback: bool,
    /// The id of the bundle that decided.
    pub version: String,
    /// The id of the rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For `paywall`: which one to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// For `offer`: the offer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// For `prompt`: what to prompt for (e.g. `newsletter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The model's score, when the deciding rule used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The reader's experiment arm, when a rule on the way split readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Assignment>,
    /// What mattered: the values the deciding rule read (`articles_30d = 7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
}

impl Decision {
    /// A decision with this action and reason, by bundle `version`; nothing else set.
    pub fn new(action: Action, reason: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            action,
            reason: reason.into(),
            version: version.into(),
            ..Self::default()
        }
    }
}
