//! The data contract of the logs (`protocol/schema/`):
//!
//! - the committed JSON Schemas are the ones generated from `pulse-protocol`'s types (run with
//!   `PULSE_BLESS=1` to rewrite them after changing the types, and bump the version when the
//!   change is not additive: see `protocol/README.md`);
//! - records a real gateway writes (with the reader-profile bundle, an experiment and a shadow
//!   bundle, so every optional field of a decision appears), exported online through
//!   `GET /admin/export` and printed by `gateway dump`, each carry `"v"` and match their
//!   schema; `gateway schema NAME` prints the committed file.
//!
//! Records are checked by a small validator of the JSON Schema keywords the generated files use
//! (it fails on any other keyword, so the check cannot silently weaken). It is stricter than
//! the published schemas on one point: a field a record holds that its schema does not describe
//! fails here (the published schemas let readers meet fields added later, per the versioning
//! rule), so a writer cannot start writing a field without its schema saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use pulse_e2e::{
    GatewayProcess, agent, demo_config_with_bundle, gateway_bin, page_view_batch, workspace_root,
};
use pulse_gateway::now_ms;
use pulse_protocol::{Event, EventId, EventType, PageContext, RecordSchema, generate_schema};
use serde_json::{Value, json};

fn schema_path(kind: RecordSchema) -> PathBuf {
    workspace_root()
        .join("protocol/schema")
        .join(kind.file_name())
}

#[test]
fn committed_schemas_are_generated_from_the_types() {
    let bless = std::env::var_os("PULSE_BLESS").is_some_and(|v| v == "1");
    for kind in RecordSchema::ALL {
        let generated = generate_schema(kind);
        let path = schema_path(kind);
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let parse = |t: &str| serde_json::from_str::<Value>(t).ok();
        assert!(
            parse(&committed).is_some() && parse(&committed) == parse(&generated),
            "{} differs from the schema generated from pulse-protocol's types.\n\
             Regenerate it: PULSE_BLESS=1 cargo test -p pulse-e2e --test schema\n\
             (and bump the record's version in protocol/src/schema.rs if the change is not \
             additive: see protocol/README.md). Generated:\n{generated}",
            path.display()
        );
        assert_eq!(kind.json_schema(), committed, "the binary embeds the file");
    }
}

/// What the validator found wrong, one line each (a JSON pointer to the place, and why).
fn check(root: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    for (keyword, arg) in schema {
        match keyword.as_str() {
            "$schema" | "$comment" | "$defs" | "title" | "description" | "default" | "examples" => {
            }
            "$ref" => {
                let target = arg
                    .as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|p| root.pointer(p))
                    .unwrap_or_else(|| panic!("{at}: unresolved $ref {arg}"));
                check(root, target, value, at, errors);
            }
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{at}: type {arg}"),
                };
                let is = |t: &str| match t {
                    "object" => value.is_object(),
                    "array" => value.is_array(),
                    "string" => value.is_string(),
                    "integer" => value.is_i64() || value.is_u64(),
                    "number" => value.is_number(),
                    "boolean" => value.is_boolean(),
                    "null" => value.is_null(),
                    other => panic!("{at}: unknown type {other}"),
                };
                if !types.iter().any(|t| is(t)) {
                    errors.push(format!("{at}: {value} is not of type {arg}"));
                }
            }
            "format" => {
                let max = match arg.as_str() {
                    Some("uint64") => Some(u64::MAX),
                    Some("uint32") => Some(u64::from(u32::MAX)),
                    Some("double") => None,
                    _ => panic!("{at}: format {arg} is not known to this validator"),
                };
                if let (Some(max), Some(n)) = (max, value.as_f64())
                    && value.as_u64().is_none_or(|n| n > max)
                {
                    errors.push(format!("{at}: {n} is not a {arg}"));
                }
            }
            "minimum" | "maximum" => {
                let (Some(n), Some(bound)) = (value.as_f64(), arg.as_f64()) else {
                    continue;
                };
                if (keyword == "minimum" && n < bound) || (keyword == "maximum" && n > bound) {
                    errors.push(format!("{at}: {n} breaks {keyword} {bound}"));
                }
            }
            "pattern" => {
                assert_eq!(
                    arg, "^[0-9a-f]{32}$",
                    "{at}: pattern not known to this validator"
                );
                let ok = value.as_str().is_none_or(|s| {
                    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
                if !ok {
                    errors.push(format!("{at}: {value} does not match {arg}"));
                }
            }
            "const" if value != arg => errors.push(format!("{at}: {value} is not {arg}")),
            "const" => {}
            "enum" => {
                if !arg.as_array().is_some_and(|a| a.contains(value)) {
                    errors.push(format!("{at}: {value} is not one of {arg}"));
                }
            }
            "oneOf" | "anyOf" => {
                let matching = arg
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| {
                        let mut e = Vec::new();
                        check(root, s, value, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if matching == 0 || (keyword == "oneOf" && matching > 1) {
                    errors.push(format!("{at}: {value} matches {matching} of {keyword}"));
                }
            }
            "required" => {
                for name in arg
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if value.as_object().is_some_and(|o| !o.contains_key(name)) {
                        errors.push(format!("{at}: required field {name:?} missing"));
                    }
                }
            }
            "properties" => {
                let Some(object) = value.as_object() else {
                    continue;
                };
                for (name, v) in object {
                    match arg.get(name) {
                        Some(s) => check(root, s, v, &format!("{at}/{name}"), errors),
                        // Stricter than the schema (see the top of the file), unless the
                        // schema itself says what else may come.
                        None if !schema.contains_key("additionalProperties") => errors
                            .push(format!("{at}/{name}: a field the schema does not describe")),
                        None => {}
                    }
                }
            }
            "additionalProperties" => {
                let (Some(object), known) = (value.as_object(), schema.get("properties")) else {
                    continue;
                };
                for (name, v) in object {
                    if known.and_then(|k| k.get(name)).is_none() {
                        check(root, arg, v, &format!("{at}/{name}"), errors);
                    }
                }
            }
            "items" => {
                for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                    check(root, arg, v, &format!("{at}/{i}"), errors);
                }
            }
            other => panic!("{at}: keyword {other:?} is not known to this validator: teach it"),
        }
    }
}

/// Every record of `lines` against `kind`'s committed schema; panics with what is wrong.
fn validate(kind: RecordSchema, lines: &[Value]) {
    let schema: Value = serde_json::from_str(kind.json_schema()).unwrap();
    assert!(!lines.is_empty(), "no {} record to check", kind.name());
    for record in lines {
        let mut errors = Vec::new();
        check(&schema, &schema, record, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{} record does not match {}:\n{}\n{record}",
            kind.name(),
            kind.file_name(),
            errors.join("\n")
        );
        assert_eq!(record["v"], kind.version(), "{record}");
    }
}

#[test]
fn the_validator_catches_what_it_should() {
    let schema: Value = serde_json::from_str(RecordSchema::DeadLetter.json_schema()).unwrap();
    let errors = |record: Value| {
        let mut e = Vec::new();
        check(&schema, &schema, &record, "", &mut e);
        e
    };
    let good = json!({"v": 1, "site": "demo", "reason": "missing_name", "index": 2,
        "received_at": 5, "raw": "{}"});
    assert_eq!(errors(good.clone()), Vec::<String>::new());
    for (bad, why) in [
        (json!({"v": 2}), "is not 1"),
        (json!({"index": -1}), "breaks minimum"),
        (json!({"raw": 7}), "is not of type"),
        (json!({"extra": true}), "does not describe"),
    ] {
        let mut record = good.clone();
        for (k, v) in bad.as_object().unwrap() {
            record[k] = v.clone();
        }
        let e = errors(record);
        assert!(e.iter().any(|e| e.contains(why)), "{why}: {e:?}");
    }
    let mut missing = good;
    missing.as_object_mut().unwrap().remove("reason");
    assert!(
        errors(missing)
            .iter()
            .any(|e| e.contains("\"reason\" missing"))
    );
}

fn export(gw: &GatewayProcess, token: &str, log: &str) -> Vec<Value> {
    let mut resp = agent()
        .get(format!("{}/admin/export?log={log}", gw.admin_url))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "export {log}");
    let text = resp.body_mut().read_to_string().unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn gateway(config: &Path, data: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(gateway_bin())
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gateway {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn event(id: u128, kind: EventType, name: Option<&str>, props: Value) -> Event {
    Event {
        id: EventId(id),
        ts: now_ms(),
        kind,
        name: name.map(str::to_owned),
        page: PageContext {
            url: "https://news.example/politics/budget?utm_source=x".into(),
            referrer: "https://www.google.com/".into(),
            title: "Budget \"day\"".into(),
        },
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

#[test]
fn records_of_a_running_gateway_match_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config_with_bundle(dir.path(), "reader-profile");
    // A shadow bundle (the same features) puts `shadow` into every decision record.
    let profile = workspace_root().join("examples/bundles/reader-profile.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[scorer]\n",
        &format!("[scorer]\nshadow = {:?}\n", profile.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    let token = gw.admin_token();

    let mut id = 7u128 << 64;
    for i in 0..40u64 {
        id += 10;
        let mut batch = page_view_batch(&format!("schema-{i}"), 0, id, 2, now_ms());
        batch.events.extend([
            event(
                id + 2,
                EventType::Engagement,
                None,
                json!({"read_depth": 80, "active_ms": 4200}),
            ),
            event(
                id + 3,
                EventType::Click,
                None,
                json!({"tag": "a", "href": "/x", "text": "more"}),
            ),
            event(
                id + 4,
                EventType::Custom,
                Some("subscribe"),
                json!({"plan": {"name": "digital"}}),
            ),
            // Refused (a name on a page view): a dead letter with its index.
            event(id + 5, EventType::PageView, Some("nope"), json!({})),
        ]);
        let resp = pulse_e2e::send_batch(&gw.url, &batch);
        assert_eq!(resp.status().as_u16(), 200);
    }
    // An unreadable batch from a known site: a dead letter without an index.
    let resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .header("content-type", "application/json")
        .send("{\"v\":1, oops")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Online, while the gateway runs (decisions reach their log within a second or two).
    let events = export(&gw, &token, "events");
    let dead = export(&gw, &token, "dead_letters");
    assert_eq!(events.len(), 40 * 5);
    assert_eq!(dead.len(), 41);
    validate(RecordSchema::Event, &events);
    validate(RecordSchema::DeadLetter, &dead);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let decisions = loop {
        let d = export(&gw, &token, "decisions");
        if d.len() == 40 || std::time::Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(decisions.len(), 40);
    validate(RecordSchema::Decision, &decisions);
    for field in ["experiment", "arm", "probability", "shadow", "score"] {
        assert!(
            decisions.iter().any(|d| d.get(field).is_some()),
            "no decision has {field}: the test should exercise it"
        );
    }

    // `gateway dump` prints the same records, versioned.
    let lines = |out: Vec<u8>| -> Vec<Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    validate(
        RecordSchema::Event,
        &lines(gateway(&config, &data, &["dump"])),
    );
    validate(
        RecordSchema::DeadLetter,
        &lines(gateway(&config, &data, &["dump", "--dead-letters"])),
    );
    validate(
        RecordSchema::Decision,
        &lines(gateway(&config, &data, &["dump", "--decisions"])),
    );
    gw.stop();

    // `gateway schema NAME` prints the committed schema; an unknown name fails.
    for kind in RecordSchema::ALL {
        for name in [kind.name(), kind.id()] {
            let out = Command::new(gateway_bin())
                .args(["schema", name])
                .output()
                .unwrap();
            assert!(out.status.success(), "gateway schema {name}");
            assert_eq!(out.stdout, std::fs::read(schema_path(kind)).unwrap());
        }
    }
    let out = Command::new(gateway_bin())
        .args(["schema", "events"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
