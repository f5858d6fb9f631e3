//! Checking a bundle and building what the engine runs: settings in range, every feature's
//! template and parameters, filters, windows no longer than the TTL, features that use other
//! features (which must exist, be numeric and not form a cycle), and rules whose conditions
//! compile and name features that exist and whose actions name features of the right kind.
//! Every problem is listed at once.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use pulse_protocol::{EventType, MAX_EVENT_AGE_MS};

use super::spec::{self, FeatureSpec, Problem};
use crate::filter::{Filter, FilterSpec, type_bit};
use crate::model::{MAX_MODEL_BYTES, Model, ModelFormat};
use crate::rules::Rules;
use crate::templates::{self, CompileCx, Spec};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, parse_duration};
use crate::window::{MAX_WINDOW_DAYS, Window};

/// Most features in a bundle.
pub const MAX_FEATURES: usize = 256;
/// The version of the reader-state format; part of every feature-set hash.
pub const STATE_FORMAT: u8 = 1;

/// A bundle that could not be used, with every problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the bundle has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct BundleError(pub Vec<Problem>);

/// Engine settings of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A reader with no event for this long (by event time) is forgotten, ms.
    pub ttl_ms: u64,
    /// How far behind the reader's latest event an event may be and still apply, ms.
    pub lateness_ms: u64,
    /// The gap that ends a session, ms.
    pub session_idle_ms: u64,
    /// Most event ids remembered per reader.
    pub max_dedupe_ids: usize,
}

/// One compiled feature.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// Its name.
    pub name: String,
    /// The template's name.
    pub template: String,
    pub(crate) spec: Spec,
    pub(crate) filter: Filter,
    /// Indices of the features it is computed from.
    pub(crate) inputs: Vec<usize>,
    /// Index of its state in a reader's state, when it keeps state.
    pub(crate) state: Option<usize>,
    /// Its window, for display.
    pub window: Option<Window>,
}

/// One stateful feature as applying an event walks it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Step {
    pub(crate) feature: usize,
    pub(crate) state: usize,
    /// Its conditions' bits ([`crate::filter::Filter::mask`]), or `None` to ask the filter.
    pub(crate) mask: Option<u64>,
}

/// The largest bundle file read, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// A bundle's model: the model and the bundle feature that feeds each of its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleModel {
    /// The file it was read from, as the bundle names it.
    pub file: String,
    /// The model.
    pub model: Arc<Model>,
    /// For each model input (in the model's order), the index of the feature feeding it.
    pub inputs: Vec<usize>,
}

/// A checked bundle, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The hash of its content: 12 hex digits of SHA-256.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The hash of what reader state depends on (settings and stateful features).
    pub feature_set: u64,
    /// Engine settings.
    pub settings: Settings,
    /// The features, by name order.
    pub features: Vec<Feature>,
    /// The order to compute values in (inputs before the features that use them).
    pub(crate) order: Vec<usize>,
    /// For each event type ([`type_bit`] order), the stateful features whose filter admits it,
    /// as applying an event walks them: the feature, its state and its conditions.
    pub(crate) steps: [Vec<Step>; 5],
    /// Every distinct filter condition of the features, by interned id.
    pub(crate) conditions: Vec<crate::filter::Cond>,
    /// For each state of a reader, the feature that owns it (applies events to it). Features
    /// of one template family with the same state-relevant parameters and filter share one
    /// state (`first_seen`, `last_seen` and `recency` of page views keep one span).
    pub(crate) owners: Vec<usize>,
    /// The states (indices into `owners`) that prune every hour of event time: all but those
    /// over lifetime or sliding days, whose buckets leave their windows only when the day
    /// changes (they prune once a day).
    pub(crate) hourly: Vec<usize>,
    /// The rules that decide, in order.
    pub rules: Rules,
    /// The propensity model, when the bundle has one (`model.score` in rules).
    pub model: Option<BundleModel>,
    /// The files the bundle read beside its text (the model's), by the name it gives them:
    /// stored with the text so that the stored bundle compiles again without them.
    pub files: Vec<(String, Arc<[u8]>)>,
    /// Feature indices by name.
    pub(crate) by_name: HashMap<String, usize>,
    /// The text it was compiled from.
    pub source: Arc<str>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn type_index(kind: EventType) -> usize {
    type_bit(kind).trailing_zeros() as usize
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 64
}

/// The marker that starts a stored bundle with files (a bundle's text never starts with NUL).
const STORED_WITH_FILES: u8 = 0;

impl Bundle {
    /// Checks and compiles a bundle's text. A bundle with a `[model]` names a file: read it
    /// with [`Bundle::read`] or [`Bundle::compile_with`].
    pub fn compile(text: &str) -> Result<Self, BundleError> {
        Self::compile_with(text, &mut |name| {
            Err(format!(
                "{name}: a bundle with a model is read from its file, beside which the model is"
            ))
        })
    }

    /// Reads a bundle file and the files it names (relative to its folder), and compiles it.
    /// A file [`Bundle::stored`] wrote (an archive of the text and its files, as the gateway
    /// keeps activated bundles) is read whole.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let file_error = |e: String| {
            BundleError(vec![Problem::new(
                "bundle file",
                format!("{}: {e}", path.display()),
            )])
        };
        let bytes = read_bounded(path, MAX_BUNDLE_BYTES + MAX_MODEL_BYTES).map_err(file_error)?;
        if bytes.first() == Some(&STORED_WITH_FILES) {
            return Self::from_stored(&bytes);
        }
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(file_error(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| file_error("not UTF-8 text".into()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        Self::compile_with(&text, &mut |name| {
            read_bounded(&folder.join(name), MAX_MODEL_BYTES)
        })
    }

    /// Checks and compiles a bundle's text, reading the files it names with `load`.
    pub fn compile_with(
        text: &str,
        load: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Self, BundleError> {
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError(vec![Problem::new(
                "bundle file",
                format!("at most {MAX_BUNDLE_BYTES} bytes"),
            )]));
        }
        let (spec, mut problems) = spec::read(text);
        let settings = settings(spec.settings.as_ref(), &mut problems);
        if spec.features.len() > MAX_FEATURES {
            problems.push(Problem::new(
                "features",
                format!(
                    "at most {MAX_FEATURES} features, not {}",
                    spec.features.len()
                ),
            ));
        }
        let mut features = Vec::new();
        for f in &spec.features {
            if let Some(feature) = feature(f, &settings, &mut problems) {
                features.push(feature);
            }
        }
        let names: Vec<&str> = spec.features.iter().map(|f| f.name.as_str()).collect();
        super::order::resolve_inputs(&mut features, &names, &mut problems);
        let order = super::order::order(&features, &mut problems);
        for f in &features {
            if crate::rules::RESERVED.contains(&f.name.as_str()) {
                problems.push(Problem::new(
                    format!("features.{}", f.name),
                    "this name is reserved for rules (page, request, model, entitled, reader)",
                ));
            }
        }
        let find = |name: &str| {
            features
                .iter()
                .position(|f| f.name == name)
                .map(|i| (i, features[i].template.clone()))
        };
        let mut files = Vec::new();
        let model = spec
            .model
            .as_ref()
            .and_then(|m| model(m, &features, load, &mut files, &mut problems));
        let mut rule_problems = Vec::new();
        let rules = Rules::compile(
            &spec.rules,
            &find,
            &names,
            spec.model.is_some(),
            &mut rule_problems,
        );
        problems.extend(rule_problems.into_iter().map(|(p, m)| Problem::new(p, m)));
        for (rule, pages, limit) in rules.meters() {
            if let Spec::Distinct(d) = &features[pages].spec
                && !d.covers_rank(limit)
            {
                problems.push(Problem::new(
                    format!("rules ({rule})"),
                    format!(
                        "limit {limit} is more than the exact values `{}` keeps",
                        features[pages].name
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(BundleError(problems));
        }
        // Every distinct filter condition gets one id: an event decides each once.
        let mut conditions = Vec::new();
        for f in &mut features {
            f.filter.intern(&mut conditions);
        }
        let mut owners: Vec<usize> = Vec::new();
        let mut steps: [Vec<Step>; 5] = Default::default();
        for i in 0..features.len() {
            if !features[i].inputs.is_empty() {
                continue;
            }
            let shared = owners.iter().position(|&o| {
                features[o].filter == features[i].filter
                    && features[o].spec.same_state(&features[i].spec)
            });
            features[i].state = Some(shared.unwrap_or(owners.len()));
            if shared.is_none() {
                for (t, list) in steps.iter_mut().enumerate() {
                    if features[i].filter.types & (1 << t) != 0 {
                        list.push(Step {
                            feature: i,
                            state: owners.len(),
                            mask: features[i].filter.mask(),
                        });
                    }
                }
                owners.push(i);
            }
        }
        let hourly = (0..owners.len())
            .filter(|&si| {
                !matches!(
                    features[owners[si]].spec.window(),
                    Some(
                        Window::Lifetime
                            | Window::Sliding {
                                unit_ms: DAY_MS,
                                ..
                            }
                    )
                )
            })
            .collect();
        let mut parts: Vec<Vec<u8>> = vec![
            vec![STATE_FORMAT],
            settings.ttl_ms.to_le_bytes().to_vec(),
            settings.lateness_ms.to_le_bytes().to_vec(),
            settings.session_idle_ms.to_le_bytes().to_vec(),
            (settings.max_dedupe_ids as u64).to_le_bytes().to_vec(),
        ];
        for (f, s) in features.iter().zip(&spec.features) {
            if f.state.is_some() {
                parts.push(f.name.as_bytes().to_vec());
                parts.push(s.canonical.as_bytes().to_vec());
            }
        }
        let by_name = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let fs = sha256(&refs);
        let mut id_parts: Vec<&[u8]> = vec![spec.canonical.as_bytes()];
        for (name, bytes) in &files {
            id_parts.push(name.as_bytes());
            id_parts.push(bytes);
        }
        let id = sha256(&id_parts);
        Ok(Self {
            id: id[..6].iter().map(|b| format!("{b:02x}")).collect(),
            name: spec.settings.map(|s| s.name).unwrap_or_default(),
            feature_set: u64::from_le_bytes(fs[..8].try_into().unwrap_or_default()),
            settings,
            features,
            order,
            steps,
            conditions,
            owners,
            hourly,
            rules,
            model,
            files,
            by_name,
            source: Arc::from(text),
        })
    }

    /// The bundle as stored beside reader state: its text, and the files it read.
    pub fn stored(&self) -> Vec<u8> {
        if self.files.is_empty() {
            return self.source.as_bytes().to_vec();
        }
        let mut out = vec![STORED_WITH_FILES];
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(self.source.as_bytes());
        for (name, bytes) in &self.files {
            put(name.as_bytes());
            put(bytes);
        }
        out
    }

    /// A bundle from what [`Bundle::stored`] wrote.
    pub fn from_stored(bytes: &[u8]) -> Result<Self, BundleError> {
        let bad = || BundleError(vec![Problem::new("stored bundle", "unreadable")]);
        if bytes.first() != Some(&STORED_WITH_FILES) {
            let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
            return Self::compile(text);
        }
        let mut rest = &bytes[1..];
        let mut parts = Vec::new();
        while !rest.is_empty() {
            let len = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(bad)?;
            let len = usize::try_from(len).map_err(|_| bad())?;
            let part = rest.get(8..8usize.saturating_add(len)).ok_or_else(bad)?;
            parts.push(part);
            rest = &rest[8 + len..];
        }
        let (text, files) = parts.split_first().ok_or_else(bad)?;
        let text = std::str::from_utf8(text).map_err(|_| bad())?;
        let files: Vec<(&[u8], &[u8])> = files
            .chunks(2)
            .filter_map(|c| Some((c[0], *c.get(1)?)))
            .collect();
        Self::compile_with(text, &mut |name| {
            files
                .iter()
                .find(|(n, _)| *n == name.as_bytes())
                .map(|(_, b)| b.to_vec())
                .ok_or_else(|| format!("{name}: not stored with the bundle"))
        })
    }

    /// The stateful features that may take an event of this type.
    pub(crate) fn features_for(&self, kind: EventType) -> &[Step] {
        &self.steps[type_index(kind)]
    }

    /// The index of the feature named `name`.
    pub fn feature(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// Reads at most `limit` bytes of a file.
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > limit {
        return Err(format!("{}: larger than {limit} bytes", path.display()));
    }
    Ok(bytes)
}

/// Loads the bundle's model and maps its inputs to features: every input needs a numeric
/// feature (its own name, or the one `inputs` gives), every entry of `inputs` a model input.
fn model(
    spec: &spec::ModelSpec,
    features: &[Feature],
    load: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    files: &mut Vec<(String, Arc<[u8]>)>,
    problems: &mut Vec<Problem>,
) -> Option<BundleModel> {
    let bytes = match load(&spec.file) {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem::new("model.file", e));
            return None;
        }
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| "not UTF-8 text".to_owned())
        .and_then(|text| Model::parse(ModelFormat::detect(text), text).map_err(|e| e.to_string()));
    let model = match parsed {
        Ok(m) => m,
        Err(e) => {
            problems.push(Problem::new("model.file", format!("{}: {e}", spec.file)));
            return None;
        }
    };
    for name in spec.inputs.keys() {
        if model.feature_index(name).is_none() {
            problems.push(Problem::new(
                format!("model.inputs.{name}"),
                format!("the model has no input `{name}`"),
            ));
        }
    }
    let mut inputs = Vec::with_capacity(model.feature_names().len());
    for (input, kind) in model.feature_names().iter().zip(model.feature_kinds()) {
        let feature = spec.inputs.get(input).unwrap_or(input);
        let path = if spec.inputs.contains_key(input) {
            format!("model.inputs.{input}")
        } else {
            "model".to_owned()
        };
        match features.iter().position(|f| &f.name == feature) {
            None => problems.push(Problem::new(
                path,
                format!(
                    "model input `{input}` has no feature `{feature}` in this bundle (map it in [model.inputs])"
                ),
            )),
            Some(i) if features[i].spec.kind() != kind.value_kind() => problems.push(Problem::new(
                path,
                format!(
                    "model input `{input}` takes a number; feature `{feature}` ({}) is not one",
                    features[i].template
                ),
            )),
            Some(i) => inputs.push(i),
        }
    }
    files.push((spec.file.clone(), Arc::from(bytes)));
    Some(BundleModel {
        file: spec.file.clone(),
        model: Arc::new(model),
        inputs,
    })
}

fn settings(spec: Option<&spec::SettingsSpec>, problems: &mut Vec<Problem>) -> Settings {
    let mut s = Settings {
        ttl_ms: 35 * DAY_MS,
        lateness_ms: DAY_MS,
        session_idle_ms: 30 * MINUTE_MS,
        max_dedupe_ids: 2048,
    };
    let Some(spec) = spec else { return s };
    if spec.name.trim().is_empty() {
        problems.push(Problem::new("bundle.name", "must not be empty"));
    }
    if (1..=MAX_WINDOW_DAYS as u32).contains(&spec.ttl_days) {
        s.ttl_ms = u64::from(spec.ttl_days) * DAY_MS;
    } else {
        problems.push(Problem::new(
            "bundle.ttl_days",
            format!("between 1 and {MAX_WINDOW_DAYS}, not {}", spec.ttl_days),
        ));
    }
    match parse_duration(&spec.allowed_lateness) {
        Ok(ms) if ms <= MAX_EVENT_AGE_MS => s.lateness_ms = ms,
        Ok(_) => problems.push(Problem::new(
            "bundle.allowed_lateness",
            "at most 35d (the oldest event the gateway accepts)",
        )),
        Err(e) => problems.push(Problem::new("bundle.allowed_lateness", e)),
    }
    match parse_duration(&spec.session_idle) {
        Ok(ms) if (MINUTE_MS..=24 * HOUR_MS).contains(&ms) => s.session_idle_ms = ms,
        Ok(_) => problems.push(Problem::new("bundle.session_idle", "between 1m and 24h")),
        Err(e) => problems.push(Problem::new("bundle.session_idle", e)),
    }
    if (16..=65_536).contains(&spec.max_dedupe_ids) {
        s.max_dedupe_ids = spec.max_dedupe_ids as usize;
    } else {
        problems.push(Problem::new(
            "bundle.max_dedupe_ids",
            format!("between 16 and 65536, not {}", spec.max_dedupe_ids),
        ));
    }
    if s.lateness_ms >= s.ttl_ms {
        problems.push(Problem::new(
            "bundle.allowed_lateness",
            "must be shorter than the TTL",
        ));
    }
    s
}

fn feature(f: &FeatureSpec, settings: &Settings, problems: &mut Vec<Problem>) -> Option<Feature> {
    let path = format!("features.{}", f.name);
    if !valid_name(&f.name) {
        problems.push(Problem::new(
            &path,
            "a name is lowercase letters, digits and _, starting with a letter, at most 64",
        ));
    }
    let window = match f
        .window
        .as_deref()
        .map(|w| Window::parse(w, settings.session_idle_ms))
    {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            problems.push(Problem::new(format!("{path}.window"), e));
            None
        }
    };
    let filter = match &f.filter {
        None => Filter::any(),
        Some(v) => match FilterSpec::deserialize_from(v) {
            Ok(spec) => Filter::compile(&spec).unwrap_or_else(|es| {
                for e in es {
                    problems.push(Problem::new(format!("{path}.filter"), e));
                }
                Filter::any()
            }),
            Err(e) => {
                problems.push(Problem::new(format!("{path}.filter"), e));
                Filter::any()
            }
        },
    };
    let template = f.template.as_deref()?;
    let cx = CompileCx {
        window,
        session_idle_ms: settings.session_idle_ms,
    };
    let spec = match templates::compile(template, f.params.clone(), &cx) {
        None => {
            problems.push(Problem::new(
                format!("{path}.template"),
                format!(
                    "unknown template {template:?} (one of {})",
                    templates::names().join(", ")
                ),
            ));
            return None;
        }
        Some(Err(es)) => {
            for e in es {
                problems.push(Problem::new(&path, e));
            }
            return None;
        }
        Some(Ok(spec)) => spec,
    };
    if let Some(span) = spec.window().and_then(|w| w.span_ms())
        && span > settings.ttl_ms
    {
        problems.push(Problem::new(
            format!("{path}.window"),
            format!(
                "{} is longer than the TTL ({} days): state would be forgotten before the window ends",
                spec.window().map(|w| w.to_string()).unwrap_or_default(),
                settings.ttl_ms / DAY_MS
            ),
        ));
    }
    // Kept even when its name or window has problems, so later checks can name it.
    Some(Feature {
        name: f.name.clone(),
        template: template.to_owned(),
        inputs: Vec::new(),
        state: None,
        window: spec.window(),
        spec,
        filter,
    })
}

trait FromToml: Sized {
    fn deserialize_from(v: &toml::Value) -> Result<Self, String>;
}

impl FromToml for FilterSpec {
    fn deserialize_from(v: &toml::Value) -> Result<Self, String> {
        use serde::Deserialize;
        Self::deserialize(v.clone()).map_err(|e| e.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METER: &str = r#"
[bundle]
name = "meter"

[features.metered_pages]
template = "distinct"
of = "page"
window = "30d"
filter = { type = "page_view", props = { content_type = "article" } }

[features.last_page]
template = "last"
of = "page"
filter = { type = "page_view" }

[features.subscriber]
template = "last"
of = "props.subscriber"
filter = { type = "identify", has = ["subscriber"] }

[[rules]]
id = "subscriber"
when = "subscriber == true"
action = "allow"

[[rules]]
id = "meter"
action = "meter"
pages = "metered_pages"
current_page = "last_page"
limit = 3
"#;

    #[test]
    fn the_meter_compiles() {
        let b = Bundle::compile(METER).unwrap();
        assert_eq!(b.features.len(), 3);
        assert_eq!(b.owners.len(), 3);
        assert_eq!(b.id.len(), 12);
        assert_eq!(b.rules.ids(), vec!["subscriber", "meter"]);
        let page_views = b.features_for(EventType::PageView);
        assert_eq!(page_views.len(), 2, "{page_views:?}");
        assert_eq!(b.features_for(EventType::Identify).len(), 1);
    }

    #[test]
    fn ids_follow_content_and_feature_sets_follow_features() {
        let a = Bundle::compile(METER).unwrap();
        let comments = Bundle::compile(&format!("# a comment\n{METER}")).unwrap();
        assert_eq!(a.id, comments.id, "formatting is not content");
        let limit = Bundle::compile(&METER.replace("limit = 3", "limit = 5")).unwrap();
        assert_ne!(a.id, limit.id);
        assert_eq!(
            a.feature_set, limit.feature_set,
            "the decision is not state"
        );
        let window = Bundle::compile(&METER.replace("\"30d\"", "\"31d\"")).unwrap();
        assert_ne!(a.feature_set, window.feature_set);
    }

    #[test]
    fn every_problem_at_once() {
        let bad = r#"
[bundle]
name = "bad"
ttl_days = 10
allowed_lateness = "forever"

[features.a]
template = "countt"

[features.b]
template = "count"
window = "30d"

[features.c]
template = "distinct"
of = "pagee"
filter = { type = "page_vieww" }

[features.d]
template = "rfv"
recency = "nope"
frequency = "b"
volume = "b"

[features.Bad-Name]
template = "count"

[features.e]
template = "count"
colour = "blue"

[[rules]]
id = "meter"
action = "meter"
pages = "b"
current_page = "zz"
limit = 3

[[rules]]
id = "bad-when"
when = "nope > 3 && ("
action = "shout"

[model]
file = "m.json"
"#;
        let e = Bundle::compile(bad).unwrap_err();
        let text = e.to_string();
        for needle in [
            "bundle.allowed_lateness",
            "features.a.template: unknown template \"countt\"",
            "features.b.window: 30d is longer than the TTL",
            "features.c: of:",
            "features.c.filter: type: unknown event type",
            "features.d: uses \"nope\", which is not a feature",
            "features.Bad-Name",
            "features.e: unknown field `colour`",
            "rules[0] (meter): action: `pages` = \"b\" must be a `distinct` feature",
            "rules[0] (meter): action: `current_page` = \"zz\" is not a feature",
            "rules[1] (bad-when): when:",
            "rules[1] (bad-when): action: unknown action \"shout\"",
            "model.file: m.json: a bundle with a model is read from its file",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    #[test]
    fn features_with_the_same_state_share_it() {
        let b = Bundle::read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/bundles/reader-profile.toml"
        )))
        .unwrap();
        let state = |name: &str| b.features[b.feature(name).unwrap()].state;
        assert_eq!(state("first_seen"), state("last_seen"));
        assert_eq!(state("first_seen"), state("days_since_last_visit"));
        assert_eq!(state("sessions_30d"), state("pages_per_session_30d"));
        assert_ne!(
            state("sessions_30d"),
            state("session_length"),
            "other window"
        );
        assert_ne!(state("read_depth_avg_30d"), state("read_depth_max_7d"));
        assert_eq!(state("rfv"), None, "derived");
        assert!(b.owners.len() < b.features.len() - 3, "{}", b.owners.len());
    }

    #[test]
    fn cycles_are_refused() {
        let text = r#"
[bundle]
name = "cycle"
[features.a]
template = "rfv"
recency = "b"
frequency = "b"
volume = "b"
[features.b]
template = "rfv"
recency = "a"
frequency = "a"
volume = "a"
"#;
        let e = Bundle::compile(text).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
    }
}
