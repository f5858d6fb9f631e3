//! What the engine reads of an event: the [`Observed`] view. The gateway hands the engine its
//! parsed events through it (owned [`pulse_protocol::Event`]s or borrowed views of the request
//! body); the engine never needs an owned copy.

use std::borrow::Cow;

use pulse_protocol::{Event, EventType};
use serde_json::Value as Json;

/// One property of an event as templates and filters see it.
#[derive(Clone, Debug, PartialEq)]
pub enum Prop<'a> {
    /// The event has no such property.
    Missing,
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array or an object (present, but neither a scalar nor comparable).
    Other,
}

impl Prop<'_> {
    /// Whether the property is present (anything but [`Prop::Missing`]).
    pub fn exists(&self) -> bool {
        !matches!(self, Self::Missing)
    }

    /// The value as a number, when it is one.
    pub fn as_num(&self) -> Option<f64> {
        match self {
            Self::Num(n) if n.is_finite() => Some(*n),
            _ => None,
        }
    }
}

/// An event as the engine reads it. Its time is passed beside it: the event's timestamp
/// corrected for the sending client's clock skew (`EventRecord::time`).
pub trait Observed {
    /// The event's 128-bit id (dedupe key).
    fn id(&self) -> u128;
    /// Its type.
    fn kind(&self) -> EventType;
    /// The name of a custom event.
    fn name(&self) -> Option<&str>;
    /// The page URL.
    fn url(&self) -> &str;
    /// The referrer URL, empty when none.
    fn referrer(&self) -> &str;
    /// A top-level property.
    fn prop(&self, key: &str) -> Prop<'_>;
}

impl Observed for Event {
    fn id(&self) -> u128 {
        self.id.0
    }

    fn kind(&self) -> EventType {
        self.kind
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn url(&self) -> &str {
        &self.page.url
    }

    fn referrer(&self) -> &str {
        &self.page.referrer
    }

    fn prop(&self, key: &str) -> Prop<'_> {
        match self.props.get(key) {
            None => Prop::Missing,
            Some(Json::Null) => Prop::Null,
            Some(Json::Bool(b)) => Prop::Bool(*b),
            Some(Json::Number(n)) => n.as_f64().map_or(Prop::Other, Prop::Num),
            Some(Json::String(s)) => Prop::Str(Cow::Borrowed(s)),
            Some(Json::Array(_) | Json::Object(_)) => Prop::Other,
        }
    }
}

impl<T: Observed + ?Sized> Observed for &T {
    fn id(&self) -> u128 {
        (**self).id()
    }
    fn kind(&self) -> EventType {
        (**self).kind()
    }
    fn name(&self) -> Option<&str> {
        (**self).name()
    }
    fn url(&self) -> &str {
        (**self).url()
    }
    fn referrer(&self) -> &str {
        (**self).referrer()
    }
    fn prop(&self, key: &str) -> Prop<'_> {
        (**self).prop(key)
    }
}

/// The path of a URL: without scheme and host, query and fragment (`/articles/a.html`).
pub fn url_path(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[after_scheme + i..],
        None => "/",
    }
}

/// A stable 64-bit key of a page: its URL without query and fragment, and without a trailing
/// slash (FNV-1a), so that a reload or a tracking parameter is the same page.
pub fn page_key(url: &str) -> u64 {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    fnv1a(url[..end].trim_end_matches('/').as_bytes())
}

/// FNV-1a, 64 bits: the stable hash of values kept in state (it is part of the state format).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_page_keys() {
        assert_eq!(url_path("https://n.example/a/b.html?x=1#y"), "/a/b.html");
        assert_eq!(url_path("https://n.example"), "/");
        assert_eq!(url_path("/relative/p"), "/relative/p");
        assert_eq!(
            page_key("https://n.example/a/"),
            page_key("https://n.example/a?utm=1")
        );
        assert_ne!(
            page_key("https://n.example/a"),
            page_key("https://n.example/b")
        );
        // The state format depends on it: FNV-1a of "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
