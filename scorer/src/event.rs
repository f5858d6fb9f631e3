//! What the engine reads of an event: the [`Observed`] view. The gateway hands the engine its
//! parsed events through it (owned [`pulse_protocol::Event`]s or borrowed views of the request
//! body); the engine never needs an owned copy.

use std::borrow::Cow;
use std::cell::Cell;

use pulse_protocol::{Event, EventType};
use serde_json::Value as Json;

/// One property of an event as templates and filters see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Prop<'a> {
    /// The event has no such property.
    #[default]
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

    /// The page: the URL without query, fragment and trailing slash.
    fn page(&self) -> &str {
        page_of(self.url())
    }
    /// [`page_key`] of the page.
    fn page_key(&self) -> u64 {
        hash64(self.page().as_bytes())
    }
    /// The URL's path.
    fn path(&self) -> &str {
        url_path(self.url())
    }
    /// The referrer's host, if any.
    fn referrer_host(&self) -> Option<&str> {
        host_of(self.referrer())
    }
    /// A top-level property named by the bundle ([`PropKey`]: the name with its hash); an
    /// implementation may remember it for the rest of the event.
    fn prop_hashed(&self, key: &str, _hash: u64) -> Prop<'_> {
        self.prop(key)
    }
    /// The truth of filter condition `id` (interned by the bundle), computed by `eval`; an
    /// implementation may remember it for the rest of the event.
    fn condition(&self, _id: u16, eval: &dyn Fn() -> bool) -> bool {
        eval()
    }
}

/// A property name as a bundle holds it, hashed once when the bundle compiles, so that an
/// event can remember each property it was asked for by that hash (a property that several
/// features and conditions read is looked up in the event once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PropKey {
    pub(crate) name: String,
    hash: u64,
}

impl PropKey {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            hash: hash64(name.as_bytes()),
        }
    }

    /// The property in `ev`.
    pub(crate) fn read<'e, E: Observed + ?Sized>(&self, ev: &'e E) -> Prop<'e> {
        ev.prop_hashed(&self.name, self.hash)
    }
}

/// Properties an event remembers (by the hash of their names); more are looked up each time.
const REMEMBERED_PROPS: usize = 8;

/// A property as a wrapped event remembers it: a [`Prop`] whose text is borrowed from the
/// event (text a view had to unescape into a copy is looked up again instead), so remembering
/// copies a few words and frees nothing.
#[derive(Clone, Copy, Debug, Default)]
enum Seen<'e> {
    #[default]
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    Str(&'e str),
    Other,
}

impl<'e> Seen<'e> {
    fn of(p: &Prop<'e>) -> Option<Self> {
        Some(match p {
            Prop::Missing => Self::Missing,
            Prop::Null => Self::Null,
            Prop::Bool(b) => Self::Bool(*b),
            Prop::Num(n) => Self::Num(*n),
            Prop::Str(Cow::Borrowed(s)) => Self::Str(s),
            Prop::Str(Cow::Owned(_)) => return None,
            Prop::Other => Self::Other,
        })
    }

    fn prop(self) -> Prop<'e> {
        match self {
            Self::Missing => Prop::Missing,
            Self::Null => Prop::Null,
            Self::Bool(b) => Prop::Bool(b),
            Self::Num(n) => Prop::Num(n),
            Self::Str(s) => Prop::Str(Cow::Borrowed(s)),
            Self::Other => Prop::Other,
        }
    }
}

/// An event with what several features read of it computed once: the page and its key, the
/// path, the properties named by the bundle (the first [`REMEMBERED_PROPS`] asked for), and
/// the filter conditions already decided (the first 64 of the bundle's). The engine wraps each
/// event in one before handing it to the features.
pub(crate) struct Cached<'e, E: ?Sized> {
    ev: &'e E,
    page: Cell<Option<&'e str>>,
    page_key: Cell<Option<u64>>,
    path: Cell<Option<&'e str>>,
    known: Cell<u64>,
    truth: Cell<u64>,
    props: [Cell<(u64, Seen<'e>)>; REMEMBERED_PROPS],
    remembered: Cell<usize>,
}

impl<'e, E: Observed + ?Sized> Cached<'e, E> {
    pub(crate) fn new(ev: &'e E) -> Self {
        Self {
            ev,
            page: Cell::new(None),
            page_key: Cell::new(None),
            path: Cell::new(None),
            known: Cell::new(0),
            truth: Cell::new(0),
            props: Default::default(),
            remembered: Cell::new(0),
        }
    }
}

impl<E: Observed + ?Sized> Cached<'_, E> {
    /// Whether every condition of `mask` (bits of interned ids in `table`) holds, each decided
    /// once per event ([`Observed::condition`]), in id order, until one fails.
    pub(crate) fn holds_all(&self, mask: u64, table: &[crate::filter::Cond]) -> bool {
        if mask & self.known.get() & !self.truth.get() != 0 {
            return false;
        }
        let mut left = mask;
        while left != 0 {
            let id = left.trailing_zeros();
            left &= left - 1;
            let holds = self.condition(id as u16, &|| {
                table.get(id as usize).is_some_and(|c| c.eval(self))
            });
            if !holds {
                return false;
            }
        }
        true
    }
}

impl<E: Observed + ?Sized> Observed for Cached<'_, E> {
    fn id(&self) -> u128 {
        self.ev.id()
    }
    fn kind(&self) -> EventType {
        self.ev.kind()
    }
    fn name(&self) -> Option<&str> {
        self.ev.name()
    }
    fn url(&self) -> &str {
        self.ev.url()
    }
    fn referrer(&self) -> &str {
        self.ev.referrer()
    }
    fn prop(&self, key: &str) -> Prop<'_> {
        self.ev.prop(key)
    }
    fn prop_hashed(&self, key: &str, hash: u64) -> Prop<'_> {
        let n = self.remembered.get().min(REMEMBERED_PROPS);
        if let Some((_, seen)) = self.props[..n]
            .iter()
            .map(Cell::get)
            .find(|(h, _)| *h == hash)
        {
            return seen.prop();
        }
        let p = self.ev.prop_hashed(key, hash);
        if n < REMEMBERED_PROPS
            && let Some(seen) = Seen::of(&p)
        {
            self.props[n].set((hash, seen));
            self.remembered.set(n + 1);
        }
        p
    }
    fn page(&self) -> &str {
        if let Some(p) = self.page.get() {
            return p;
        }
        let p = self.ev.page();
        self.page.set(Some(p));
        p
    }
    fn page_key(&self) -> u64 {
        if let Some(k) = self.page_key.get() {
            return k;
        }
        let k = hash64(self.page().as_bytes());
        self.page_key.set(Some(k));
        k
    }
    fn path(&self) -> &str {
        if let Some(p) = self.path.get() {
            return p;
        }
        let p = self.ev.path();
        self.path.set(Some(p));
        p
    }
    fn referrer_host(&self) -> Option<&str> {
        self.ev.referrer_host()
    }
    fn condition(&self, id: u16, eval: &dyn Fn() -> bool) -> bool {
        let Some(bit) = 1u64.checked_shl(u32::from(id)) else {
            return eval();
        };
        if self.known.get() & bit != 0 {
            return self.truth.get() & bit != 0;
        }
        let t = eval();
        self.known.set(self.known.get() | bit);
        if t {
            self.truth.set(self.truth.get() | bit);
        }
        t
    }
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

/// A request's event as parsed, borrowing its body: what the gateway scores without copying.
impl Observed for pulse_protocol::EventView<'_> {
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
        &self.url
    }

    fn referrer(&self) -> &str {
        &self.referrer
    }

    fn prop(&self, key: &str) -> Prop<'_> {
        use pulse_protocol::PropValue;
        match pulse_protocol::EventView::prop(self, key) {
            None => Prop::Missing,
            Some(PropValue::Null) => Prop::Null,
            Some(PropValue::Bool(b)) => Prop::Bool(b),
            Some(PropValue::Num(n)) => n.map_or(Prop::Other, Prop::Num),
            Some(PropValue::Str(s)) => Prop::Str(s),
            Some(PropValue::Other) => Prop::Other,
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
    fn prop_hashed(&self, key: &str, hash: u64) -> Prop<'_> {
        (**self).prop_hashed(key, hash)
    }
}

/// The URL without its query and fragment.
fn strip_query(url: &str) -> &str {
    match memchr::memchr2(b'?', b'#', url.as_bytes()) {
        Some(end) => &url[..end],
        None => url,
    }
}

/// The page of a URL: without query, fragment and trailing slashes.
pub(crate) fn page_of(url: &str) -> &str {
    strip_query(url).trim_end_matches('/')
}

/// Where the authority of a URL starts: after `scheme://`, else 0.
fn after_scheme(url: &str) -> usize {
    let bytes = url.as_bytes();
    // A scheme is short and ends at the first ':'.
    match bytes.iter().take(32).position(|b| *b == b':') {
        Some(i) if bytes.get(i + 1..i + 3) == Some(b"//") => i + 3,
        _ => 0,
    }
}

/// The path of a URL: without scheme and host, query and fragment (`/articles/a.html`).
pub fn url_path(url: &str) -> &str {
    let url = strip_query(url);
    let start = after_scheme(url);
    if start == 0 && url.starts_with('/') {
        return url;
    }
    match memchr::memchr(b'/', &url.as_bytes()[start..]) {
        Some(i) => &url[start + i..],
        None => "/",
    }
}

/// The host of a URL (`www.google.com`), if it has one.
pub(crate) fn host_of(url: &str) -> Option<&str> {
    let start = after_scheme(url);
    let rest = &url[start..];
    let end = memchr::memchr3(b'/', b'?', b'#', rest.as_bytes()).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// A stable 64-bit key of a page: its URL without query and fragment, and without a trailing
/// slash ([`hash64`]), so that a reload or a tracking parameter is the same page.
pub fn page_key(url: &str) -> u64 {
    hash64(page_of(url).as_bytes())
}

/// The stable 64-bit hash of values kept in state (it is part of the state format): eight bytes
/// at a time (little-endian, the tail zero-padded), multiply-rotate mixing with the length folded
/// in, then splitmix64's finalizer. Several times faster than a byte-at-a-time hash on URLs.
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: [u8; 8]| (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    let mut h = bytes.len() as u64 ^ 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, w);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, w);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_event_reads_each_property_as_the_event_has_it() {
        let mut ev = crate::templates::testing::view(1, "/a");
        for i in 0..12 {
            ev.props.insert(format!("p{i}"), Json::from(i));
        }
        ev.props.insert("s".into(), Json::from("text"));
        let cached = Cached::new(&ev);
        // More keys than it remembers, each asked for twice, and one the event lacks.
        let keys: Vec<PropKey> = (0..12)
            .map(|i| PropKey::new(&format!("p{i}")))
            .chain([PropKey::new("s"), PropKey::new("absent")])
            .collect();
        for _ in 0..2 {
            for k in &keys {
                assert_eq!(k.read(&cached), ev.prop(&k.name), "{}", k.name);
            }
        }
        assert_eq!(PropKey::new("s").read(&cached), Prop::Str("text".into()));
        assert_eq!(PropKey::new("absent").read(&cached), Prop::Missing);
    }

    #[test]
    fn paths_and_page_keys() {
        assert_eq!(url_path("https://n.example/a/b.html?x=1#y"), "/a/b.html");
        assert_eq!(url_path("https://n.example"), "/");
        assert_eq!(url_path("/relative/p"), "/relative/p");
        assert_eq!(url_path("https://n.example?x=/y"), "/");
        assert_eq!(
            host_of("https://www.google.com/search?q=1"),
            Some("www.google.com")
        );
        assert_eq!(host_of(""), None);
        assert_eq!(
            page_key("https://n.example/a/"),
            page_key("https://n.example/a?utm=1")
        );
        assert_ne!(
            page_key("https://n.example/a"),
            page_key("https://n.example/b")
        );
        // The state format depends on it: pinned values.
        assert_eq!(hash64(b""), hash64(b""));
        assert_ne!(hash64(b"a"), hash64(b"a\0"), "the length counts");
        assert_eq!(hash64(b"https://n.example/a"), 0xba01_36c8_e3d6_0c1b);
    }
}
