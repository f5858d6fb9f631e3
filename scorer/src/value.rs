//! The value of a feature, as rules, decisions and operators see it.

use serde_json::{Value as Json, json};

/// A feature's value at a moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value (no matching event in the window, or a property that was never sent).
    Missing,
    /// A boolean.
    Bool(bool),
    /// A number (counts, sums, times in ms since the epoch, scores).
    Num(f64),
    /// A string.
    Str(String),
    /// Values with their counts, the most frequent first (top-k).
    Top(Vec<(String, u64)>),
}

impl Value {
    /// The value as a number: numbers, and booleans as 0/1.
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Self::Num(n) => Some(*n),
            Self::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    /// The value as JSON (for the admin API and `gateway reader`).
    pub fn to_json(&self) -> Json {
        match self {
            Self::Missing => Json::Null,
            Self::Bool(b) => json!(b),
            Self::Num(n) => json!(n),
            Self::Str(s) => json!(s),
            Self::Top(items) => Json::Array(
                items
                    .iter()
                    .map(|(v, n)| json!({"value": v, "count": n}))
                    .collect(),
            ),
        }
    }
}
