//! One reader interaction: its id, time, type, page context and properties.
//! Without `std`, what a client needs only ([`EventType`], [`PageContext`], [`check_fields`]).

use alloc::string::String;

use serde::{Deserialize, Serialize};
#[cfg(feature = "std")]
use serde_json::{Map, Value};

#[cfg(feature = "std")]
use crate::{EventId, MAX_PROPS_BYTES, MAX_PROPS_DEPTH};
use crate::{MAX_NAME_LEN, MAX_TITLE_LEN, MAX_URL_LEN, RejectReason};

/// What kind of interaction an event records.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The reader opened a page.
    PageView,
    /// Read depth and active time on a page, sent when the page is hidden.
    Engagement,
    /// A click on a link or button.
    Click,
    /// The reader identified (logged in); `props` holds the traits.
    Identify,
    /// A publisher-defined event; `name` says which.
    Custom,
}

impl EventType {
    /// The type named `name` on the wire.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "page_view" => Self::PageView,
            "engagement" => Self::Engagement,
            "click" => Self::Click,
            "identify" => Self::Identify,
            "custom" => Self::Custom,
            _ => return None,
        })
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PageView => "page_view",
            Self::Engagement => "engagement",
            Self::Click => "click",
            Self::Identify => "identify",
            Self::Custom => "custom",
        }
    }
}

/// The page an event happened on.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PageContext {
    /// The page URL (`location.href`), at most [`MAX_URL_LEN`] bytes.
    pub url: String,
    /// `document.referrer`, empty when none; at most [`MAX_URL_LEN`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub referrer: String,
    /// `document.title`, at most [`MAX_TITLE_LEN`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
}

/// One event of a batch.
#[cfg(feature = "std")]
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Random 128-bit id, unique per event; retries resend the same id.
    pub id: EventId,
    /// Client clock time of the event, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The kind of event.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Name of a `custom` event (required there, absent elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The page the event happened on.
    pub page: PageContext,
    /// Free-form properties (a JSON object), at most [`MAX_PROPS_BYTES`] bytes (not counting
    /// whitespace between tokens) and [`MAX_PROPS_DEPTH`] levels deep.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
}

#[cfg(feature = "std")]
impl Event {
    /// Checks the event against the protocol's limits. Time is checked separately, by the batch,
    /// because it needs the clock-skew correction.
    pub fn check(&self) -> Result<(), RejectReason> {
        let page = &self.page;
        check_fields(
            self.kind,
            self.name.as_deref(),
            &page.url,
            &page.referrer,
            &page.title,
        )?;
        check_props(depth_of_map(&self.props), props_len(&self.props))
    }

    /// A string property, if present.
    pub fn prop_str(&self, key: &str) -> Option<&str> {
        self.props.get(key).and_then(Value::as_str)
    }
}

/// The rules for an event's page fields and name, in the order they are checked (clients check
/// with them before sending, as the tracker does).
pub fn check_fields(
    kind: EventType,
    name: Option<&str>,
    url: &str,
    referrer: &str,
    title: &str,
) -> Result<(), RejectReason> {
    if url.len() > MAX_URL_LEN || referrer.len() > MAX_URL_LEN || title.len() > MAX_TITLE_LEN {
        return Err(RejectReason::FieldTooLong);
    }
    match (kind, name) {
        (EventType::Custom, None) => Err(RejectReason::MissingName),
        (EventType::Custom, Some(name)) if !valid_name(name) => Err(RejectReason::InvalidName),
        (EventType::Custom, Some(_)) | (_, None) => Ok(()),
        (_, Some(_)) => Err(RejectReason::InvalidName),
    }
}

/// The rules for `props`: its nesting (the object itself is 1) and its size in bytes, not
/// counting whitespace between tokens.
#[cfg(feature = "std")]
pub(crate) fn check_props(depth: usize, size: usize) -> Result<(), RejectReason> {
    if depth > MAX_PROPS_DEPTH {
        Err(RejectReason::PropsTooDeep)
    } else if size > MAX_PROPS_BYTES {
        Err(RejectReason::PropsTooLarge)
    } else {
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(feature = "std")]
fn depth_of_map(map: &Map<String, Value>) -> usize {
    1 + map.values().map(depth_of).max().unwrap_or(0)
}

#[cfg(feature = "std")]
fn depth_of(value: &Value) -> usize {
    match value {
        Value::Object(map) => depth_of_map(map),
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(feature = "std")]
fn props_len(map: &Map<String, Value>) -> usize {
    // Serializing into a counting sink cannot fail: `Value` always serializes.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, map) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventType) -> Event {
        Event {
            id: EventId(7),
            ts: 1_700_000_000_000,
            kind,
            name: None,
            page: PageContext {
                url: "https://news.example/a".into(),
                ..Default::default()
            },
            props: Map::new(),
        }
    }

    #[test]
    fn wire_form_is_snake_case_with_hex_id() {
        let text = serde_json::to_string(&event(EventType::PageView)).unwrap();
        assert_eq!(
            text,
            r#"{"id":"00000000000000000000000000000007","ts":1700000000000,"type":"page_view","page":{"url":"https://news.example/a"}}"#
        );
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event(EventType::PageView));
    }

    #[test]
    fn custom_needs_a_valid_name() {
        let mut e = event(EventType::Custom);
        assert_eq!(e.check(), Err(RejectReason::MissingName));
        e.name = Some("video play".into());
        assert_eq!(e.check(), Err(RejectReason::InvalidName));
        e.name = Some("video.play".into());
        assert_eq!(e.check(), Ok(()));
        let mut pv = event(EventType::PageView);
        pv.name = Some("x".into());
        assert_eq!(pv.check(), Err(RejectReason::InvalidName));
    }

    #[test]
    fn url_limit_at_bound() {
        let mut e = event(EventType::PageView);
        e.page.url = "u".repeat(MAX_URL_LEN);
        assert_eq!(e.check(), Ok(()));
        e.page.url.push('u');
        assert_eq!(e.check(), Err(RejectReason::FieldTooLong));
    }

    #[test]
    fn props_depth_and_size_at_bound() {
        let mut e = event(EventType::Custom);
        e.name = Some("n".into());
        // depth 4: {a:{b:{c:{}}}}
        e.props = json!({"a": {"b": {"c": {}}}}).as_object().unwrap().clone();
        assert_eq!(e.check(), Ok(()));
        e.props = json!({"a": {"b": {"c": {"d": 1}}}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(e.check(), Ok(()));
        e.props = json!({"a": {"b": {"c": {"d": {}}}}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(e.check(), Err(RejectReason::PropsTooDeep));
        // {"k":"…"} is 8 bytes of framing.
        let fill = |n: usize| json!({ "k": "x".repeat(n) }).as_object().unwrap().clone();
        e.props = fill(MAX_PROPS_BYTES - 8);
        assert_eq!(e.check(), Ok(()));
        e.props = fill(MAX_PROPS_BYTES - 7);
        assert_eq!(e.check(), Err(RejectReason::PropsTooLarge));
    }
}
