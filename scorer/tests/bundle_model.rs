//! A bundle's `[model]`: the file is read beside the bundle, every input is fed by a numeric
//! feature (or the bundle is refused with every reason), the file's bytes are part of the
//! bundle's id and stored with it, and `model.score` in rules is the model's prediction for the
//! reader's feature values.

use std::path::Path;

use pulse_protocol::{Action, Event, EventId, EventType, PageContext};
use pulse_scorer::{Bundle, DAY_MS, HOUR_MS, Model, PageFacts, ReaderState, Request, decide};
use serde_json::json;

const T0: u64 = 20_000 * DAY_MS + 12 * HOUR_MS;

fn example(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path)
}

/// A logistic model over two inputs (the simplest model whose score can be checked by hand).
const LOGISTIC: &str = r#"
intercept = -2.0
[[features]]
name = "articles_30d"
coefficient = 0.5
missing = 0.0
[[features]]
name = "depth"
coefficient = 0.02
missing = 0.0
"#;

const FEATURES: &str = r#"
[bundle]
name = "model-test"

[features.metered_pages]
template = "distinct"
of = "page"
window = "30d"
filter = { type = "page_view", props = { content_type = "article" } }

[features.current_page]
template = "last"
of = "page"
filter = { type = "page_view" }

[features.articles_30d]
template = "count"
window = "30d"
filter = { type = "page_view", props = { content_type = "article" } }

[features.read_depth]
template = "avg"
of = "props.read_depth"
window = "30d"
filter = { type = "engagement" }

[features.sections]
template = "top_k"
of = "props.section"
k = 3
window = "30d"
filter = { type = "page_view" }
"#;

const RULES: &str = r#"
[[rules]]
id = "likely"
when = "model.score >= 0.5"
action = "offer"
offer = "trial"

[[rules]]
id = "meter"
action = "meter"
pages = "metered_pages"
current_page = "current_page"
limit = 3
"#;

fn compile(bundle: &str, model: &str) -> Result<Bundle, pulse_scorer::BundleError> {
    Bundle::compile_with(bundle, &mut |name| {
        if name == "m.toml" {
            Ok(model.as_bytes().to_vec())
        } else {
            Err(format!("{name}: no such file"))
        }
    })
}

fn with_model(inputs: &str) -> String {
    format!("{FEATURES}\n[model]\nfile = \"m.toml\"\n{inputs}\n{RULES}")
}

fn article(id: u128, n: u32) -> Event {
    Event {
        id: EventId(id),
        ts: 0,
        kind: EventType::PageView,
        name: None,
        page: PageContext {
            url: format!("https://news.example/politics/{n}"),
            ..Default::default()
        },
        props: json!({"content_type": "article", "section": "politics"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

fn engagement(id: u128, depth: f64) -> Event {
    Event {
        id: EventId(id),
        ts: 0,
        kind: EventType::Engagement,
        name: None,
        page: PageContext {
            url: "https://news.example/politics/1".into(),
            ..Default::default()
        },
        props: json!({"read_depth": depth})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

#[test]
fn the_example_bundle_reads_its_trained_model() {
    let b = Bundle::read(&example("bundles/reader-profile.toml")).unwrap();
    let m = b.model.as_ref().expect("a model");
    assert_eq!(m.model.feature_names().len(), 28);
    assert_eq!(m.inputs.len(), 28);
    for (input, &i) in m.model.feature_names().iter().zip(&m.inputs) {
        assert_eq!(&b.features[i].name, input, "fed by the feature of its name");
    }
    assert_eq!(b.rules.len(), 20);
    // Stored with the bundle, the model compiles again without the file.
    let again = Bundle::from_stored(&b.stored()).unwrap();
    assert_eq!(again.id, b.id);
    assert_eq!(again.model, b.model);
    // Without its folder, the bundle cannot find the model, and says so.
    let text = std::fs::read_to_string(example("bundles/reader-profile.toml")).unwrap();
    let e = Bundle::compile(&text).unwrap_err().to_string();
    assert!(e.contains("model.file"), "{e}");
}

#[test]
fn the_score_is_the_models_prediction_for_the_readers_features() {
    let b = compile(&with_model("inputs = { depth = \"read_depth\" }"), LOGISTIC).unwrap();
    let mut s = ReaderState::new(&b);
    let mut events = Vec::new();
    for n in 0..4 {
        events.push(article(n as u128 + 1, n));
    }
    events.push(engagement(100, 80.0));
    for (i, e) in events.iter().enumerate() {
        s.apply(&b, e, T0 + i as u64 * 1000);
    }
    s.finish(&b);
    let timed: Vec<(&Event, u64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e, T0 + i as u64 * 1000))
        .collect();
    let d = decide(
        &b,
        "r1",
        &s,
        T0 + 10_000,
        &PageFacts::of(&timed),
        &Request::default(),
    );
    // 4 articles, depth 80: -2 + 0.5 * 4 + 0.02 * 80 = 1.6.
    let expected = 1.0 / (1.0 + (-1.6f64).exp());
    let score = d.score.expect("the rule read the model");
    assert!((score - expected).abs() < 1e-12, "{score} vs {expected}");
    assert_eq!(d.decision.action, Action::Offer);
    assert_eq!(d.decision.rule.as_deref(), Some("likely"));
    assert_eq!(d.decision.score, Some(score));
    // The explanation names the inputs that moved the score most: 0.5 x 4 articles, then
    // 0.02 x 80 of depth.
    let model = d
        .decision
        .because
        .iter()
        .find(|b| b.starts_with("model.score"))
        .expect("the model in the explanation");
    assert!(
        model.ends_with("(articles_30d +2.00, depth +1.60)"),
        "{model}"
    );

    // A fresh reader: both inputs missing, read as the file's `missing` (0): score of -2.
    let fresh = ReaderState::new(&b);
    let d = decide(
        &b,
        "r2",
        &fresh,
        T0,
        &PageFacts::default(),
        &Request::default(),
    );
    let expected = 1.0 / (1.0 + 2f64.exp());
    assert!((d.score.unwrap() - expected).abs() < 1e-12);
    assert_eq!(d.decision.rule.as_deref(), Some("meter"));
}

#[test]
fn a_bundle_whose_model_does_not_fit_is_refused_with_every_reason() {
    // `depth` has no feature of its name and is not mapped; `articles_30d` is mapped to a
    // top-k feature (not a number); `nothing` is not an input of the model.
    let text = with_model("inputs = { articles_30d = \"sections\", nothing = \"read_depth\" }");
    let e = compile(&text, LOGISTIC).unwrap_err().to_string();
    for needle in [
        "model input `depth` has no feature `depth`",
        "model.inputs.articles_30d: model input `articles_30d` takes a number; feature `sections` (top_k)",
        "model.inputs.nothing: the model has no input `nothing`",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }

    // A model file that is not there, or not a model.
    let missing = format!("{FEATURES}\n[model]\nfile = \"gone.json\"\n{RULES}");
    let e = compile(&missing, LOGISTIC).unwrap_err().to_string();
    assert!(e.contains("model.file: gone.json: no such file"), "{e}");
    let e = compile(&with_model(""), "{\"learner\": 1}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.file: m.toml:"), "{e}");

    // Rules reading the model in a bundle without one.
    let e = Bundle::compile(&format!("{FEATURES}\n{RULES}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("the bundle has no [model]"), "{e}");

    // Unknown keys in [model].
    let e = compile(&with_model("threshold = 0.5"), LOGISTIC)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model: unknown field `threshold`"), "{e}");
}

#[test]
fn the_models_bytes_are_part_of_the_bundles_id() {
    let text = with_model("inputs = { depth = \"read_depth\" }");
    let a = compile(&text, LOGISTIC).unwrap();
    let b = compile(&text, &LOGISTIC.replace("0.5", "0.6")).unwrap();
    assert_ne!(a.id, b.id, "a retrained model is another bundle");
    assert_eq!(a.feature_set, b.feature_set, "the same state serves both");
    let again = Bundle::from_stored(&b.stored()).unwrap();
    assert_eq!(again.id, b.id);
}

#[test]
fn trained_models_score_as_the_example_bundle_feeds_them() {
    // The example bundle's model gives, for a reader's features, what the model file gives for
    // the same row read directly.
    let b = Bundle::read(&example("bundles/reader-profile.toml")).unwrap();
    let direct = Model::read(&example("train/propensity.xgb.json")).unwrap();
    let mut s = ReaderState::new(&b);
    let events: Vec<Event> = (0..6).map(|n| article(n as u128 + 1, n)).collect();
    for (i, e) in events.iter().enumerate() {
        s.apply(&b, e, T0 + i as u64 * HOUR_MS);
    }
    s.finish(&b);
    let now = T0 + 7 * HOUR_MS;
    let explained = s.explain(&b, now);
    let row: Vec<f64> = direct
        .feature_names()
        .iter()
        .map(|name| {
            explained["features"][name]["value"]
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .collect();
    let timed: Vec<(&Event, u64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e, T0 + i as u64 * HOUR_MS))
        .collect();
    let d = decide(
        &b,
        "r",
        &s,
        now,
        &PageFacts::of(&timed),
        &Request::default(),
    );
    assert!(
        row.iter().filter(|v| v.is_finite()).count() >= 20,
        "most inputs have values: {row:?}"
    );
    let score = d.score.expect("metered page: the model is read");
    assert_eq!(score, direct.predict(&row));
}

#[test]
fn the_engine_snapshots_what_a_decision_read_and_decides_for_a_server_without_events() {
    use pulse_scorer::{Engine, EngineConfig, MemoryStore};
    use std::sync::Arc;
    let events: Vec<Event> = (0..6).map(|n| article(n as u128 + 1, n)).collect();
    let timed: Vec<(&Event, u64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e, T0 + i as u64 * HOUR_MS))
        .collect();
    let now = T0 + 7 * HOUR_MS;
    for full in [false, true] {
        let b = Bundle::read(&example("bundles/reader-profile.toml")).unwrap();
        let features = b.features.len();
        let config = EngineConfig {
            full_snapshots: full,
            ..EngineConfig::default()
        };
        let (engine, _) = Engine::open(Arc::new(MemoryStore::default()), b, config).unwrap();
        let scored = engine.score("r", &timed, now, &Request::default()).unwrap();
        assert!(scored.score.is_some(), "the rules read the model");
        let snap = scored.snapshot.to_json();
        let snap = snap.as_object().unwrap();
        if full {
            assert_eq!(snap.len(), features);
        } else {
            assert!(snap.len() >= 28 && snap.len() < features, "{}", snap.len());
        }
        assert_eq!(snap["articles_30d"], 6.0);

        // A server asks for the same reader on a page: the same state decides, nothing applied.
        let page = PageFacts {
            content_type: Some("article".into()),
            section: Some("politics".into()),
            path: Some("/politics/5".into()),
            referrer: Some("direct"),
        };
        let asked = engine.decide("r", &page, now, &Request::default()).unwrap();
        assert_eq!(asked.applied, 0);
        assert_eq!(asked.score, scored.score);
        assert_eq!(asked.decision.rule, scored.decision.rule);
    }
}
