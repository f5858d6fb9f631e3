//! The meter rule's settings, read from `pulse.toml` (`[meter]`) and swappable at runtime.

use serde::{Deserialize, Serialize};

/// Why meter settings are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The window is outside 1..=365 days.
    #[error("window_days must be between 1 and 365, not {0}")]
    WindowDays(u32),
}

/// A rolling window length in whole days, 1 to 365.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct WindowDays(u32);

impl WindowDays {
    /// The number of days.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for WindowDays {
    type Error = RulesError;

    fn try_from(days: u32) -> Result<Self, Self::Error> {
        if (1..=365).contains(&days) {
            Ok(Self(days))
        } else {
            Err(RulesError::WindowDays(days))
        }
    }
}

impl From<WindowDays> for u32 {
    fn from(days: WindowDays) -> Self {
        days.0
    }
}

/// The meter: how many metered pages a reader may open for free in a rolling window.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterRules {
    /// Free metered pages per window (0 walls every metered page). Default 3.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Length of the rolling window in days, by event time, 1 to 365. Default 30.
    #[serde(default = "default_window")]
    pub window_days: WindowDays,
    /// The page-view `content_type` property that makes a page metered. Default `"article"`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_limit() -> u32 {
    3
}

fn default_window() -> WindowDays {
    WindowDays(30)
}

fn default_content_type() -> String {
    "article".to_owned()
}

impl Default for MeterRules {
    fn default() -> Self {
        Self {
            limit: default_limit(),
            window_days: default_window(),
            content_type: default_content_type(),
        }
    }
}

impl MeterRules {
    /// The version string reported in decisions made with these rules.
    pub fn version(&self) -> String {
        format!("meter-v1:{}/{}d", self.limit, self.window_days.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_days_bounds() {
        assert_eq!(WindowDays::try_from(0), Err(RulesError::WindowDays(0)));
        assert!(WindowDays::try_from(1).is_ok());
        assert!(WindowDays::try_from(365).is_ok());
        assert_eq!(WindowDays::try_from(366), Err(RulesError::WindowDays(366)));
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let rules: MeterRules = serde_json::from_str("{}").unwrap();
        assert_eq!(rules, MeterRules::default());
        assert!(serde_json::from_str::<MeterRules>(r#"{"limt":3}"#).is_err());
        assert!(serde_json::from_str::<MeterRules>(r#"{"window_days":0}"#).is_err());
    }
}
