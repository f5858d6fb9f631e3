//! Which events a feature counts, and which part of an event it reads: the event filter every
//! template takes (`filter = { type, name, path_prefix, props, has }`) and the [`Field`] a
//! template reads (`of = "page"`, `"props.section"`, ...). Both are parsed from the bundle once
//! and are pure afterwards.

use std::borrow::Cow;
use std::collections::BTreeMap;

use pulse_protocol::EventType;
use serde::Deserialize;

use crate::event::{Observed, Prop, PropKey, hash64};

/// The event types, in the order of their bit in a [`Filter`]'s type mask.
const TYPES: [EventType; 5] = [
    EventType::PageView,
    EventType::Engagement,
    EventType::Click,
    EventType::Identify,
    EventType::Custom,
];

/// The bit of an event type in a type mask.
pub(crate) fn type_bit(kind: EventType) -> u8 {
    match kind {
        EventType::PageView => 1,
        EventType::Engagement => 2,
        EventType::Click => 4,
        EventType::Identify => 8,
        EventType::Custom => 16,
    }
}

fn parse_type(s: &str) -> Option<EventType> {
    TYPES.into_iter().find(|t| t.as_str() == s)
}

/// One value or a list of them, as TOML lets a bundle write either.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

/// The `filter` table of a feature, as written in the bundle.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterSpec {
    /// Event types (`page_view`, `engagement`, `click`, `identify`, `custom`); default all.
    #[serde(rename = "type")]
    pub(crate) kind: Option<OneOrMany<String>>,
    /// Names of custom events; default any.
    pub(crate) name: Option<OneOrMany<String>>,
    /// The page's URL path must start with this (`/articles/`).
    pub(crate) path_prefix: Option<String>,
    /// Properties that must equal a value (a scalar) or one of several (a list).
    #[serde(default)]
    pub(crate) props: BTreeMap<String, toml::Value>,
    /// Properties that must be present.
    #[serde(default)]
    pub(crate) has: Vec<String>,
}

/// A scalar to compare a property with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
}

impl Scalar {
    fn from_toml(v: &toml::Value) -> Option<Self> {
        match v {
            toml::Value::Boolean(b) => Some(Self::Bool(*b)),
            toml::Value::Integer(i) => Some(Self::Num(*i as f64)),
            toml::Value::Float(f) => Some(Self::Num(*f)),
            toml::Value::String(s) => Some(Self::Str(s.clone())),
            _ => None,
        }
    }

    fn matches(&self, p: &Prop<'_>) -> bool {
        match (self, p) {
            (Self::Bool(a), Prop::Bool(b)) => a == b,
            (Self::Num(a), Prop::Num(b)) => a == b,
            (Self::Str(a), Prop::Str(b)) => a == b,
            _ => false,
        }
    }
}

/// One condition of a filter besides the event type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cond {
    /// The custom event's name is one of these.
    Name(Vec<String>),
    /// The URL path starts with this.
    Path(String),
    /// The property equals one of these.
    Prop(PropKey, Vec<Scalar>),
    /// The property is present.
    Has(PropKey),
}

impl Cond {
    pub(crate) fn eval<E: Observed + ?Sized>(&self, ev: &E) -> bool {
        match self {
            Self::Name(names) => ev.name().is_some_and(|n| names.iter().any(|x| x == n)),
            Self::Path(prefix) => ev.path().starts_with(prefix.as_str()),
            Self::Prop(key, values) => {
                let p = key.read(ev);
                values.iter().any(|v| v.matches(&p))
            }
            Self::Has(key) => key.read(ev).exists(),
        }
    }
}

/// A compiled event filter: a type mask and conditions. The bundle interns every condition of
/// every feature (`ids`), so that an event decides each distinct condition once however many
/// features ask.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Filter {
    /// Bits of the event types it admits ([`type_bit`]); all types when the spec names none.
    pub(crate) types: u8,
    pub(crate) conds: Vec<Cond>,
    /// The interned id of each condition (empty until the bundle interns them).
    pub(crate) ids: Vec<u16>,
}

impl Filter {
    /// A filter that admits every event.
    pub(crate) fn any() -> Self {
        Self {
            types: 0x1f,
            ..Self::default()
        }
    }

    /// Compiles a spec, or lists what is wrong with it (messages relative to the filter).
    pub(crate) fn compile(spec: &FilterSpec) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut types = 0u8;
        for t in spec
            .kind
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
        {
            match parse_type(&t) {
                Some(kind) => types |= type_bit(kind),
                None => problems.push(format!(
                    "type: unknown event type {t:?} (page_view, engagement, click, identify, custom)"
                )),
            }
        }
        if spec.kind.is_none() {
            types = 0x1f;
        }
        let mut conds = Vec::new();
        let names = spec
            .name
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
        if !names.is_empty() && spec.kind.is_none() {
            types = type_bit(EventType::Custom);
        } else if !names.is_empty() && types & type_bit(EventType::Custom) == 0 {
            problems.push("name: only custom events have names; add type = \"custom\"".into());
        }
        if !names.is_empty() {
            conds.push(Cond::Name(names));
        }
        if let Some(p) = &spec.path_prefix {
            if p.starts_with('/') {
                conds.push(Cond::Path(p.clone()));
            } else {
                problems.push(format!("path_prefix: {p:?} must start with '/'"));
            }
        }
        for (key, value) in &spec.props {
            let values = match value {
                toml::Value::Array(items) => items.iter().map(Scalar::from_toml).collect(),
                v => Scalar::from_toml(v).map(|s| vec![s]),
            };
            match values {
                Some(v) if !v.is_empty() => conds.push(Cond::Prop(PropKey::new(key), v)),
                _ => problems.push(format!(
                    "props.{key}: a string, number or boolean, or a non-empty list of them"
                )),
            }
        }
        conds.extend(spec.has.iter().map(|k| Cond::Has(PropKey::new(k))));
        if problems.is_empty() {
            Ok(Self {
                types,
                conds,
                ids: Vec::new(),
            })
        } else {
            Err(problems)
        }
    }

    /// Gives every condition its id in the bundle-wide `table` (adding new ones).
    pub(crate) fn intern(&mut self, table: &mut Vec<Cond>) {
        self.ids = self
            .conds
            .iter()
            .map(|c| {
                let at = table.iter().position(|t| t == c).unwrap_or_else(|| {
                    table.push(c.clone());
                    table.len() - 1
                });
                u16::try_from(at).unwrap_or(u16::MAX)
            })
            .collect();
    }

    /// The interned conditions as one bit each, when all of them are among the bundle's first
    /// 64 (the engine then checks them with [`crate::event::Cached::holds_all`]).
    pub(crate) fn mask(&self) -> Option<u64> {
        self.ids
            .iter()
            .try_fold(0u64, |m, &id| Some(m | 1u64.checked_shl(u32::from(id))?))
            .filter(|_| self.ids.len() == self.conds.len())
    }

    /// Whether the event passes (the engine checks types through the bundle's index, then
    /// [`Filter::conds_hold`]).
    #[cfg(test)]
    pub(crate) fn matches<E: Observed + ?Sized>(&self, ev: &E) -> bool {
        self.types & type_bit(ev.kind()) != 0 && self.conds_hold(ev)
    }

    /// Whether the event meets the conditions (its type already known to pass).
    #[inline]
    pub(crate) fn conds_hold<E: Observed + ?Sized>(&self, ev: &E) -> bool {
        self.conds
            .iter()
            .enumerate()
            .all(|(i, c)| match self.ids.get(i) {
                Some(&id) if id != u16::MAX => ev.condition(id, &|| c.eval(ev)),
                _ => c.eval(ev),
            })
    }
}

/// The part of an event a template reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    /// The page: its URL without query and fragment (keyed by [`page_key`]).
    Page,
    /// The URL path (`/articles/a.html`).
    Path,
    /// The referrer's host (`www.google.com`), empty when none.
    ReferrerHost,
    /// The custom event's name.
    Name,
    /// The event type.
    Type,
    /// A top-level property.
    Prop(PropKey),
}

/// A scalar read from an event, for `last`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Read<'e> {
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(Cow<'e, str>),
}

impl Field {
    /// Parses `page`, `path`, `referrer_host`, `name`, `type` or `props.<key>`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "page" => Self::Page,
            "path" => Self::Path,
            "referrer_host" => Self::ReferrerHost,
            "name" => Self::Name,
            "type" => Self::Type,
            _ => match s.strip_prefix("props.") {
                Some(key) if !key.is_empty() => Self::Prop(PropKey::new(key)),
                _ => {
                    return Err(format!(
                        "{s:?} is not a field (page, path, referrer_host, name, type, props.<key>)"
                    ));
                }
            },
        })
    }

    /// The field as text (numbers and booleans formatted), if the event has it.
    pub(crate) fn text<'e, E: Observed + ?Sized>(&self, ev: &'e E) -> Option<Cow<'e, str>> {
        match self {
            Self::Page => Some(Cow::Borrowed(ev.page())),
            Self::Path => Some(Cow::Borrowed(ev.path())),
            Self::ReferrerHost => ev.referrer_host().map(Cow::Borrowed),
            Self::Name => ev.name().map(Cow::Borrowed),
            Self::Type => Some(Cow::Borrowed(ev.kind().as_str())),
            Self::Prop(key) => match key.read(ev) {
                Prop::Str(s) => Some(s),
                Prop::Num(n) => Some(Cow::Owned(format_num(n))),
                Prop::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
                Prop::Missing | Prop::Null | Prop::Other => None,
            },
        }
    }

    /// A stable 64-bit key of the field's value ([`crate::event::page_key`] for pages).
    pub(crate) fn key<E: Observed + ?Sized>(&self, ev: &E) -> Option<u64> {
        match self {
            Self::Page => Some(ev.page_key()),
            _ => self.text(ev).map(|t| hash64(t.as_bytes())),
        }
    }

    /// The field as a number, if it is one.
    pub(crate) fn num<E: Observed + ?Sized>(&self, ev: &E) -> Option<f64> {
        match self {
            Self::Prop(key) => key.read(ev).as_num(),
            _ => None,
        }
    }

    /// The field as a scalar.
    pub(crate) fn read<'e, E: Observed + ?Sized>(&self, ev: &'e E) -> Option<Read<'e>> {
        match self {
            Self::Prop(key) => match key.read(ev) {
                Prop::Bool(b) => Some(Read::Bool(b)),
                Prop::Num(n) if n.is_finite() => Some(Read::Num(n)),
                Prop::Str(s) => Some(Read::Str(s)),
                _ => None,
            },
            _ => self.text(ev).map(Read::Str),
        }
    }
}

fn format_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::{Event, EventId, PageContext};
    use serde_json::json;

    fn ev(kind: EventType, name: Option<&str>, url: &str, props: serde_json::Value) -> Event {
        Event {
            id: EventId(1),
            ts: 0,
            kind,
            name: name.map(str::to_owned),
            page: PageContext {
                url: url.into(),
                referrer: "https://www.google.com/search?q=x".into(),
                ..Default::default()
            },
            props: props.as_object().cloned().unwrap_or_default(),
        }
    }

    fn filter(toml_text: &str) -> Result<Filter, Vec<String>> {
        let spec: FilterSpec = toml::from_str(toml_text).unwrap();
        Filter::compile(&spec)
    }

    #[test]
    fn filters_by_type_name_path_and_props() {
        let article = ev(
            EventType::PageView,
            None,
            "https://n.example/articles/a?x",
            json!({"content_type": "article", "section": "sport", "words": 800}),
        );
        let f = filter("type = \"page_view\"\nprops = { content_type = \"article\" }").unwrap();
        assert!(f.matches(&article));
        let f =
            filter("path_prefix = \"/articles/\"\nprops = { section = [\"sport\", \"culture\"] }")
                .unwrap();
        assert!(f.matches(&article));
        let f = filter("path_prefix = \"/opinion/\"").unwrap();
        assert!(!f.matches(&article));
        let f = filter("has = [\"words\"]\nprops = { words = 800 }").unwrap();
        assert!(f.matches(&article));
        let f = filter("has = [\"author\"]").unwrap();
        assert!(!f.matches(&article));
        let play = ev(
            EventType::Custom,
            Some("video.play"),
            "https://n.example/v",
            json!({}),
        );
        let f = filter("name = \"video.play\"").unwrap();
        assert!(f.matches(&play) && !f.matches(&article));
        assert!(Filter::any().matches(&play));
    }

    #[test]
    fn every_problem_is_listed() {
        let problems = filter(
            "type = [\"page_view\", \"pageview\"]\nname = \"x\"\npath_prefix = \"articles\"\nprops = { a = [] }",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn fields_read_what_they_name() {
        let e = ev(
            EventType::PageView,
            None,
            "https://n.example/a/b/?utm=1",
            json!({"section": "sport", "depth": 40, "paid": true}),
        );
        assert_eq!(
            Field::parse("page").unwrap().text(&e).unwrap(),
            "https://n.example/a/b"
        );
        assert_eq!(Field::parse("path").unwrap().text(&e).unwrap(), "/a/b/");
        assert_eq!(
            Field::parse("referrer_host").unwrap().text(&e).unwrap(),
            "www.google.com"
        );
        assert_eq!(Field::parse("props.depth").unwrap().num(&e), Some(40.0));
        assert_eq!(Field::parse("props.depth").unwrap().text(&e).unwrap(), "40");
        assert_eq!(
            Field::parse("props.paid").unwrap().read(&e),
            Some(Read::Bool(true))
        );
        assert_eq!(Field::parse("props.none").unwrap().read(&e), None);
        assert!(Field::parse("section").is_err());
        assert_eq!(
            Field::Page.key(&e),
            Some(crate::event::page_key("https://n.example/a/b"))
        );
    }
}
