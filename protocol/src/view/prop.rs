//! One top-level property of a view's `props`, read from the text as received: no map is
//! built, so that a server can score a request's events straight from its body.

use std::borrow::Cow;

use super::EventView;
use crate::json::Scanner;

/// A top-level property's value as [`EventView::prop`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum PropValue<'a> {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number, as `serde_json` reads it into a map (`None` when it reads none: out of range).
    Num(Option<f64>),
    /// A string, decoded.
    Str(Cow<'a, str>),
    /// An array or an object.
    Other,
}

impl<'a> EventView<'a> {
    /// The property `key` of `props`: the last member of that name, as a map parsed from the
    /// same text keeps it (so that state built from views equals state replayed from the log);
    /// `None` when absent. `props` was checked when the batch was parsed.
    pub fn prop(&self, key: &str) -> Option<PropValue<'a>> {
        let raw = self.props?;
        let mut s = Scanner::new(raw);
        let mut ws = 0;
        let mut found = None;
        if !s.open(b'{', b'}', &mut ws).ok()? {
            return None;
        }
        loop {
            let name = s.key(&mut ws).ok()?;
            if name == key {
                found = Some(value(&mut s)?);
            } else {
                s.skip_value(1).ok()?;
            }
            if !s.next_in(b'}', &mut ws).ok()? {
                return found;
            }
        }
    }
}

/// The value at the scanner, consumed.
fn value<'a>(s: &mut Scanner<'a>) -> Option<PropValue<'a>> {
    Some(match s.peek()? {
        b'"' => PropValue::Str(s.string().ok()?),
        b'-' | b'0'..=b'9' => {
            let n = s.number().ok()?;
            // serde_json's own reading of the token: integers through u64/i64, others with its
            // float parser, exactly as `serde_json::Value::as_f64` of a parsed map gives it.
            PropValue::Num(
                serde_json::from_str::<serde_json::Value>(n.text)
                    .ok()
                    .and_then(|v| v.as_f64()),
            )
        }
        b'{' | b'[' => {
            s.skip_value(1).ok()?;
            PropValue::Other
        }
        b't' | b'f' | b'n' => {
            let start = s.pos();
            s.skip_value(1).ok()?;
            match s.since(start) {
                "true" => PropValue::Bool(true),
                "false" => PropValue::Bool(false),
                _ => PropValue::Null,
            }
        }
        _ => return None,
    })
}
