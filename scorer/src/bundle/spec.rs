//! Reading a bundle file: TOML into typed settings, feature tables and the decision table,
//! collecting every problem with its path (`features.articles.window: ...`) rather than
//! stopping at the first.

use std::fmt;

use serde::Deserialize;

/// One problem found in a bundle, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a dotted path into the file (`features.articles.window`), or `bundle`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The `[bundle]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsSpec {
    /// A name for people (the id is the hash).
    pub(crate) name: String,
    /// What the bundle is for.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Days without events (by event time) after which a reader is forgotten. Default 35.
    #[serde(default = "default_ttl_days")]
    pub(crate) ttl_days: u32,
    /// How far behind a reader's latest event time an event may arrive and still be applied.
    /// Default `"1d"`.
    #[serde(default = "default_lateness")]
    pub(crate) allowed_lateness: String,
    /// The gap that ends a session. Default `"30m"`.
    #[serde(default = "default_idle")]
    pub(crate) session_idle: String,
    /// Most event ids remembered per reader for dedupe. Default 2048.
    #[serde(default = "default_dedupe")]
    pub(crate) max_dedupe_ids: u32,
}

fn default_ttl_days() -> u32 {
    35
}

fn default_lateness() -> String {
    "1d".into()
}

fn default_idle() -> String {
    "30m".into()
}

fn default_dedupe() -> u32 {
    2048
}

/// The `[model]` table: a model file and which bundle feature feeds each of its inputs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelSpec {
    /// The model file, relative to the bundle file: XGBoost JSON, LightGBM text or logistic
    /// TOML (detected from the content).
    pub(crate) file: String,
    /// Model input name → bundle feature name, for inputs whose feature is named otherwise
    /// (an input with no entry is fed by the feature of its own name).
    #[serde(default)]
    pub(crate) inputs: std::collections::BTreeMap<String, String>,
    /// What the model is for.
    #[serde(default)]
    #[allow(dead_code)]
    pub(crate) description: Option<String>,
}

/// One feature's table, split into what every feature has and the template's parameters.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FeatureSpec {
    pub(crate) name: String,
    pub(crate) template: Option<String>,
    pub(crate) window: Option<String>,
    pub(crate) filter: Option<toml::Value>,
    pub(crate) params: toml::Table,
    /// The table as written (for the feature's hash), without its description.
    pub(crate) canonical: String,
}

/// The whole file, read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BundleSpec {
    pub(crate) settings: Option<SettingsSpec>,
    pub(crate) features: Vec<FeatureSpec>,
    pub(crate) rules: Vec<crate::rules::RuleTable>,
    pub(crate) model: Option<ModelSpec>,
    /// The file's content in a canonical form (for the bundle's id).
    pub(crate) canonical: String,
}

/// Reads a bundle's text, listing every problem of form (the checks of meaning are in
/// `compile`).
pub(crate) fn read(text: &str) -> (BundleSpec, Vec<Problem>) {
    let mut problems = Vec::new();
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new("bundle file", e.message().to_owned()));
            toml::Table::new()
        }
    };
    let canonical = serde_json::to_string(&table).unwrap_or_default();
    let mut spec = BundleSpec {
        settings: None,
        features: Vec::new(),
        rules: Vec::new(),
        model: None,
        canonical,
    };
    for (key, value) in table {
        match key.as_str() {
            "bundle" => match SettingsSpec::deserialize(value) {
                Ok(s) => spec.settings = Some(s),
                Err(e) => problems.push(Problem::new("bundle", e.message().to_owned())),
            },
            "features" => match value {
                toml::Value::Table(features) => {
                    for (name, feature) in features {
                        read_feature(name, feature, &mut spec.features, &mut problems);
                    }
                }
                _ => problems.push(Problem::new("features", "a table of features")),
            },
            "rules" => match value {
                toml::Value::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let mut msgs = Vec::new();
                        if let Some(rule) = crate::rules::RuleTable::read(item, &mut msgs) {
                            spec.rules.push(rule);
                        }
                        for m in msgs {
                            problems.push(Problem::new(format!("rules[{i}]"), m));
                        }
                    }
                }
                _ => problems.push(Problem::new("rules", "a list of [[rules]] tables")),
            },
            "model" => match ModelSpec::deserialize(value) {
                Ok(m) => spec.model = Some(m),
                Err(e) => problems.push(Problem::new("model", e.message().to_owned())),
            },
            other => problems.push(Problem::new(
                other,
                "unknown section (a bundle has [bundle], [features.NAME], [model] and [[rules]])",
            )),
        }
    }
    if spec.settings.is_none() && !problems.iter().any(|p| p.path == "bundle") {
        problems.push(Problem::new(
            "bundle",
            "missing [bundle] with at least `name`",
        ));
    }
    (spec, problems)
}

fn read_feature(
    name: String,
    value: toml::Value,
    out: &mut Vec<FeatureSpec>,
    problems: &mut Vec<Problem>,
) {
    let path = format!("features.{name}");
    let toml::Value::Table(mut table) = value else {
        problems.push(Problem::new(path, "a table (template = ..., ...)"));
        return;
    };
    table.remove("description");
    let canonical = serde_json::to_string(&table).unwrap_or_default();
    let mut string = |key: &str, problems: &mut Vec<Problem>| match table.remove(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(Problem::new(format!("{path}.{key}"), "a string"));
            None
        }
    };
    let template = string("template", problems);
    let window = string("window", problems);
    if template.is_none()
        && !problems
            .iter()
            .any(|p| p.path == format!("{path}.template"))
    {
        problems.push(Problem::new(format!("{path}.template"), "missing"));
    }
    let filter = table.remove("filter");
    out.push(FeatureSpec {
        name,
        template,
        window,
        filter,
        params: table,
        canonical,
    });
}
