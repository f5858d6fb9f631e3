//! What a rule's condition can read, resolved when it reads it: a feature's value is computed
//! the first time a condition names it in this decision (never for features no rule reads).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::value::{CowVal, Val};
use pulse_protocol::EventType;

use crate::bundle::Bundle;
use crate::event::{Observed, host_of, url_path};
use crate::state::ReaderState;
use crate::value::Value;

/// What a decision knows of the page: from the batch's latest page view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageFacts {
    /// Its `content_type` property (`og:type`).
    pub content_type: Option<String>,
    /// Its `section` property.
    pub section: Option<String>,
    /// Its URL path.
    pub path: Option<String>,
    /// Where the reader came from: `search`, `social`, `internal`, `direct` or `other`.
    pub referrer: Option<&'static str>,
}

const SEARCH: [&str; 8] = [
    "google.",
    "bing.",
    "duckduckgo.",
    "yahoo.",
    "baidu.",
    "yandex.",
    "ecosia.",
    "qwant.",
];
const SOCIAL: [&str; 10] = [
    "facebook.",
    "t.co",
    "twitter.",
    "x.com",
    "linkedin.",
    "reddit.",
    "instagram.",
    "news.ycombinator",
    "bsky.",
    "threads.",
];

/// The class of a referrer for a page on `page_host`.
pub(crate) fn referrer_class(referrer: &str, page_host: Option<&str>) -> &'static str {
    let Some(host) = host_of(referrer) else {
        return "direct";
    };
    let bare = host.strip_prefix("www.").unwrap_or(host);
    if page_host.is_some_and(|p| p.strip_prefix("www.").unwrap_or(p) == bare) {
        "internal"
    } else if SEARCH.iter().any(|s| has_label(bare, s)) {
        "search"
    } else if SOCIAL.iter().any(|s| has_label(bare, s)) {
        "social"
    } else {
        "other"
    }
}

/// Whether `host` starts with `part` or has it right after a dot (`news.google.com` has
/// `google.`), without building `.part`.
fn has_label(host: &str, part: &str) -> bool {
    host.match_indices(part)
        .any(|(i, _)| i == 0 || host.as_bytes()[i - 1] == b'.')
}

/// The first `n` characters of `s`.
fn chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

impl PageFacts {
    /// The facts of the latest page view among `events` (by event time), if any.
    pub fn of<E: Observed + ?Sized>(events: &[(&E, u64)]) -> Self {
        let Some((ev, _)) = events
            .iter()
            .filter(|(e, _)| e.kind() == EventType::PageView)
            .max_by_key(|(_, t)| *t)
        else {
            return Self::default();
        };
        let text = |key: &str| match ev.prop(key) {
            crate::event::Prop::Str(s) => Some(chars(&s, 128).to_owned()),
            _ => None,
        };
        Self {
            content_type: text("content_type"),
            section: text("section"),
            path: Some(chars(url_path(ev.url()), 256).to_owned()),
            referrer: Some(referrer_class(ev.referrer(), host_of(ev.url()))),
        }
    }
}

/// What the gateway knows of the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// `mobile`, `tablet` or `desktop`, from the User-Agent.
    pub device: Option<String>,
    /// The country, from the header the operator names (e.g. a CDN's `CF-IPCountry`).
    pub country: Option<String>,
    /// Entitlements a token signed by the publisher vouches for (`entitled.NAME`): booleans,
    /// numbers or strings. Empty without a valid token.
    pub entitled: Vec<(String, serde_json::Value)>,
}

impl Request {
    /// The device class of a User-Agent.
    pub fn device_of(user_agent: &str) -> &'static str {
        if user_agent.contains("iPad") || user_agent.contains("Tablet") {
            "tablet"
        } else if user_agent.contains("Mobi") || user_agent.contains("Android") {
            "mobile"
        } else {
            "desktop"
        }
    }
}

/// Resolves a condition's variables for one decision. Every variable is built once, the first
/// time a condition reads it, and lent to the evaluator after that (no copies per access).
pub(crate) struct Resolver<'a> {
    bundle: &'a Bundle,
    state: &'a ReaderState,
    now: u64,
    page: &'a PageFacts,
    metered: bool,
    request: &'a Request,
    score: OnceLock<Option<f64>>,
    row: OnceLock<Vec<f64>>,
    values: Vec<OnceLock<Value>>,
    vals: Vec<OnceLock<Box<dyn Val>>>,
    page_val: OnceLock<Box<dyn Val>>,
    request_val: OnceLock<Box<dyn Val>>,
    model_val: OnceLock<Box<dyn Val>>,
    entitled_val: OnceLock<Box<dyn Val>>,
}

fn map(entries: Vec<(&str, cel::Value)>) -> cel::Value {
    let map: HashMap<String, cel::Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    cel::Value::from(map)
}

fn opt(s: &Option<String>) -> cel::Value {
    s.as_ref().map_or(cel::Value::Null, |s| {
        cel::Value::String(Arc::new(s.clone()))
    })
}

fn json_to_cel(v: &serde_json::Value) -> cel::Value {
    match v {
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_f64().map_or(cel::Value::Null, cel::Value::Float),
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        _ => cel::Value::Null,
    }
}

fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Missing => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Num(n) => cel::Value::Float(*n),
        Value::Str(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Top(items) => cel::Value::List(Arc::new(
            items
                .iter()
                .map(|(s, _)| cel::Value::String(Arc::new(s.clone())))
                .collect(),
        )),
    }
}

fn boxed(v: cel::Value) -> Box<dyn Val> {
    let converted: Result<Box<dyn Val>, _> = v.try_into();
    converted.unwrap_or_else(|_| Box::new(cel::common::types::CelNull))
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(
        bundle: &'a Bundle,
        state: &'a ReaderState,
        now: u64,
        page: &'a PageFacts,
        metered: bool,
        request: &'a Request,
    ) -> Self {
        Self {
            bundle,
            state,
            now,
            page,
            metered,
            request,
            score: OnceLock::new(),
            row: OnceLock::new(),
            values: (0..bundle.features.len())
                .map(|_| OnceLock::new())
                .collect(),
            vals: (0..bundle.features.len())
                .map(|_| OnceLock::new())
                .collect(),
            page_val: OnceLock::new(),
            request_val: OnceLock::new(),
            model_val: OnceLock::new(),
            entitled_val: OnceLock::new(),
        }
    }

    pub(crate) fn value(&self, i: usize) -> &Value {
        self.values[i].get_or_init(|| self.state.value(self.bundle, i, self.now))
    }

    /// The model's score for this reader, computed the first time it is read (`None` without
    /// a model). Inputs are the features' values; a missing value or a non-number is missing.
    pub(crate) fn score(&self) -> Option<f64> {
        *self.score.get_or_init(|| {
            let m = self.bundle.model.as_ref()?;
            Some(m.model.predict(self.row(m)))
        })
    }

    /// The model's inputs for this reader, in the model's order (built once).
    fn row(&self, m: &crate::bundle::BundleModel) -> &[f64] {
        self.row.get_or_init(|| {
            m.inputs
                .iter()
                .map(|&i| match self.value(i) {
                    Value::Num(n) => *n,
                    Value::Bool(b) => f64::from(u8::from(*b)),
                    _ => f64::NAN,
                })
                .collect()
        })
    }

    /// The `n` inputs that moved the model's score most for this reader, as the explanation
    /// shows them (`articles_30d +0.84`: on the margin's scale, log-odds for a probability).
    pub(crate) fn top_inputs(&self, n: usize) -> Vec<String> {
        let Some(m) = self.bundle.model.as_ref() else {
            return Vec::new();
        };
        m.model
            .top_contributions(self.row(m), n)
            .into_iter()
            .map(|(input, c)| format!("{} {c:+.2}", m.model.feature_names()[input]))
            .collect()
    }

    /// The features whose values this decision computed, with their values (moved out: the
    /// resolver is done).
    pub(crate) fn into_read_values(self) -> Vec<(u16, Value)> {
        self.values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as u16, v.into_inner()?)))
            .collect()
    }

    /// Whether the model's score has been computed in this decision.
    pub(crate) fn scored(&self) -> Option<f64> {
        self.score.get().copied().flatten()
    }

    /// Feature `i`'s value as the explanation shows it.
    pub(crate) fn describe(&self, i: usize) -> String {
        match self.value(i) {
            Value::Missing => "missing".into(),
            Value::Bool(b) => b.to_string(),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Value::Num(n) => format!("{n:.4}"),
            Value::Str(s) => format!("{s:?}"),
            Value::Top(items) => format!("{:?}", items.iter().map(|(s, _)| s).collect::<Vec<_>>()),
        }
    }

    fn page(&self) -> Box<dyn Val> {
        let p = self.page;
        boxed(map(vec![
            ("content_type", opt(&p.content_type)),
            ("section", opt(&p.section)),
            ("path", opt(&p.path)),
            (
                "referrer",
                p.referrer.map_or(cel::Value::Null, cel::Value::from),
            ),
            ("metered", cel::Value::Bool(self.metered)),
        ]))
    }

    fn request(&self) -> Box<dyn Val> {
        boxed(map(vec![
            ("device", opt(&self.request.device)),
            ("country", opt(&self.request.country)),
        ]))
    }

    fn model(&self) -> Box<dyn Val> {
        boxed(map(vec![(
            "score",
            self.score().map_or(cel::Value::Null, cel::Value::Float),
        )]))
    }

    fn entitled(&self) -> Box<dyn Val> {
        boxed(map(self
            .request
            .entitled
            .iter()
            .map(|(k, v)| (k.as_str(), json_to_cel(v)))
            .collect()))
    }
}

fn text(s: &Option<String>) -> Option<CowVal<'static, 'static>> {
    Some(CowVal::Owned(boxed(opt(s))))
}

impl Resolver<'_> {
    /// `page.x`, `request.x`, `model.score` and `entitled.x`, read without building their map
    /// (the evaluator asks for the whole qualified name first).
    fn qualified(&self, variable: &str) -> Option<CowVal<'static, 'static>> {
        let (head, field) = variable.split_once('.')?;
        match (head, field) {
            ("page", "content_type") => text(&self.page.content_type),
            ("page", "section") => text(&self.page.section),
            ("page", "path") => text(&self.page.path),
            ("page", "referrer") => Some(CowVal::Owned(boxed(
                self.page
                    .referrer
                    .map_or(cel::Value::Null, cel::Value::from),
            ))),
            ("page", "metered") => Some(CowVal::Owned(boxed(cel::Value::Bool(self.metered)))),
            ("request", "device") => text(&self.request.device),
            ("request", "country") => text(&self.request.country),
            ("model", "score") => Some(CowVal::Owned(boxed(
                self.score().map_or(cel::Value::Null, cel::Value::Float),
            ))),
            // An entitlement the token does not grant reads as null: not entitled (no error).
            ("entitled", name) => Some(CowVal::Owned(boxed(
                self.request
                    .entitled
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(cel::Value::Null, |(_, v)| json_to_cel(v)),
            ))),
            _ => None,
        }
    }
}

impl Resolver<'_> {
    /// A variable for the native evaluator (an entitlement not granted is null, as in CEL
    /// here).
    pub(crate) fn native(
        &self,
        var: &super::fast::Var,
    ) -> Result<super::fast::V<'_>, super::fast::Fail> {
        use super::fast::{V, Var, from_value};
        fn text(s: &Option<String>) -> V<'_> {
            s.as_deref().map_or(V::Null, V::Str)
        }
        Ok(match var {
            Var::Feature(i) => from_value(self.value(*i)),
            Var::Page(field) => match *field {
                "content_type" => text(&self.page.content_type),
                "section" => text(&self.page.section),
                "path" => text(&self.page.path),
                "referrer" => self.page.referrer.map_or(V::Null, V::Str),
                _ => V::Bool(self.metered),
            },
            Var::Request(field) => match *field {
                "device" => text(&self.request.device),
                _ => text(&self.request.country),
            },
            Var::ModelScore => self.score().map_or(V::Null, V::Num),
            Var::Entitled(name) => match self.request.entitled.iter().find(|(k, _)| k == name) {
                None => V::Null,
                Some((_, serde_json::Value::Bool(b))) => V::Bool(*b),
                Some((_, serde_json::Value::Number(n))) => n.as_f64().map_or(V::Null, V::Num),
                Some((_, serde_json::Value::String(s))) => V::Str(s),
                Some(_) => V::Null,
            },
        })
    }
}

impl cel::context::VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if variable.contains('.') {
            return self.qualified(variable);
        }
        let lent = match variable {
            "page" => self.page_val.get_or_init(|| self.page()),
            "request" => self.request_val.get_or_init(|| self.request()),
            "model" => self.model_val.get_or_init(|| self.model()),
            "entitled" => self.entitled_val.get_or_init(|| self.entitled()),
            name => {
                let i = self.bundle.feature(name)?;
                self.vals[i].get_or_init(|| boxed(to_cel(self.value(i))))
            }
        };
        Some(CowVal::Borrowed(lent.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_classes() {
        let page = Some("www.news.example");
        assert_eq!(referrer_class("", page), "direct");
        assert_eq!(referrer_class("https://news.example/a", page), "internal");
        assert_eq!(
            referrer_class("https://www.google.co.uk/search?q=x", page),
            "search"
        );
        assert_eq!(referrer_class("https://t.co/xyz", page), "social");
        assert_eq!(referrer_class("https://m.facebook.com/", page), "social");
        assert_eq!(referrer_class("https://blog.example/", page), "other");
        assert_eq!(
            Request::device_of("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148"),
            "mobile"
        );
        assert_eq!(
            Request::device_of("Mozilla/5.0 (iPad; CPU OS 17_0)"),
            "tablet"
        );
        assert_eq!(
            Request::device_of("Mozilla/5.0 (X11; Linux x86_64)"),
            "desktop"
        );
    }
}
