//! The decision log's record (`pulse.decisions`, `<data>/log/decisions/`): one JSON object per
//! decision the gateway answered. The gateway writes it field by field (no intermediate tree);
//! this type is how consumers read it, and what its JSON Schema is generated from.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Action;
use crate::record::legacy_version;

/// One decision as the decision log holds it.
///
/// On the wire: `{"v":1,"time":…,"site":…,"reader":…,"bundle":…,"rule":…,"action":…,…,
/// "features":{…}}`, in the order of the fields below, optional fields only when set.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Pulse decision record"))]
pub struct DecisionRecord {
    /// The record's schema version (`decision.v1`: 1); read as 1 when absent (a record
    /// written before records carried it).
    #[serde(default = "legacy_version")]
    pub v: u32,
    /// When the batch that asked was received, ms since the epoch.
    pub time: u64,
    /// The site key.
    pub site: String,
    /// Whose state decided: the user id vouched for, else the anonymous id.
    pub reader: String,
    /// The id of the bundle that decided (`version` in the answer).
    pub bundle: String,
    /// The rule that decided, or the reason when none did (`no_rule`, `fallback`).
    pub rule: String,
    /// What the page was told to do.
    pub action: Action,
    /// Free articles left in the window, when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// The meter's limit, when metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// For `paywall`: which one was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// For `offer`: the offer's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// For `prompt`: what was prompted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The model's score, when a rule on the way read it (`null`: the model gave no number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The experiment the reader was assigned in, when a rule on the way split readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The reader's arm in `experiment` (`holdout` for readers held out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// The probability of that assignment, for inverse-probability weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// True when the scorer did not answer in time and the safe default was given.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fallback: bool,
    /// The short explanation the page got (`articles_30d = 7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
    /// The feature values the decision read, by feature name (every feature with `[scorer]
    /// full_snapshots`), as `gateway reader` shows them; empty on a fallback.
    pub features: Map<String, Value>,
    /// The shadow bundle's decision for the same batch, when a shadow bundle is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDecision>,
}

/// The shadow bundle's decision beside the active one (the page never sees it).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShadowDecision {
    /// The shadow bundle's id.
    pub bundle: String,
    /// Its deciding rule, or the reason when none did.
    pub rule: String,
    /// Its action.
    pub action: Action,
}

fn is_false(b: &bool) -> bool {
    !*b
}
