//! The fuzz targets in the test suite: the committed corpus and every input that once failed
//! (`fuzz/regressions/`) replayed, then a short mutational run of each target with a fixed seed,
//! and structured inputs from proptest. Longer runs: `pulse-fuzz run <target>`.

use std::path::Path;

use proptest::prelude::*;
use pulse_fuzz::{Corpus, Fuzzer, Target};
use serde_json::json;

/// Mutants per target in the suite (a few seconds in a debug build).
const ITERATIONS: u64 = 20_000;

fn corpus(target: Target) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Corpus::load(&root.join("corpus").join(target.name()))
        .unwrap()
        .inputs;
    assert!(!inputs.is_empty(), "no corpus for {}", target.name());
    inputs.extend(
        Corpus::load(&root.join("regressions").join(target.name()))
            .unwrap()
            .inputs,
    );
    inputs
}

fn fuzz(target: Target) {
    let corpus = corpus(target);
    let mut fuzzer = Fuzzer::new(target, 0x5eed);
    if let Err((input, message)) = fuzzer.run(&corpus, ITERATIONS) {
        panic!(
            "{}: {message}\ninput ({} bytes): {:?}",
            target.name(),
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(600)])
        );
    }
}

#[test]
fn the_decoder_holds_on_its_corpus_and_mutants() {
    fuzz(Target::Decode);
}

#[test]
fn the_batch_parser_holds_on_its_corpus_and_mutants() {
    fuzz(Target::Parse);
}

#[test]
fn the_committed_corpus_is_what_the_generator_makes() {
    // `pulse-fuzz corpus` rewrites it; the files must not drift from the generator silently.
    for target in Target::ALL {
        let generated = pulse_fuzz::generate(target, 4).inputs;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let committed = Corpus::load(&root.join("corpus").join(target.name()))
            .unwrap()
            .inputs;
        assert_eq!(generated.len(), committed.len(), "{}", target.name());
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn structured_batches_hold(
        props in json_value(),
        url in "\\PC{0,40}",
        name in proptest::option::of("[a-z.:_ -]{0,10}"),
        kind in prop_oneof![Just("page_view"), Just("custom"), Just("click"), Just("nope")],
        user in proptest::option::of("\\PC{0,10}"),
        spaces in "[ \\n\\t]{0,3}",
    ) {
        let mut event = json!({
            "id": "0000000000000000000000000000002a", "ts": pulse_fuzz::NOW, "type": kind,
            "page": {"url": url}, "props": props,
        });
        if let Some(name) = name {
            event["name"] = json!(name);
        }
        let mut batch = json!({
            "v": 1, "site_key": "demo", "anonymous_id": "a", "session_id": "s", "seq": 1,
            "sent_at": pulse_fuzz::NOW, "events": [event],
        });
        if let Some(user) = user {
            batch["user_id"] = json!(user);
        }
        let text = serde_json::to_string_pretty(&batch).unwrap().replace('\n', &format!("\n{spaces}"));
        for body in [text.clone().into_bytes(), serde_json::to_vec(&batch).unwrap()] {
            pulse_fuzz::parse(&body);
            pulse_fuzz::decode(&zstd::encode_all(&body[..], 1).unwrap());
        }
    }
}
