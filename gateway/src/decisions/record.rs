//! The decision log's record: one JSON object per decision, its fields in a fixed order (see
//! `protocol/PROTOCOL.md`, "The logs"), written straight into a buffer from the decision and
//! its feature snapshot (no intermediate JSON tree).

use pulse_protocol::{Decision, RecordSchema};
use pulse_scorer::Snapshot;

/// What one record is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// When the batch that asked was received, ms since the epoch.
    pub(crate) time: u64,
    /// The site key.
    pub(crate) site: &'a str,
    /// The reader key (user id, else anonymous id).
    pub(crate) reader: &'a str,
    /// The decision the page got.
    pub(crate) decision: &'a Decision,
    /// The model's score, when a rule on the way read it.
    pub(crate) score: Option<f64>,
    /// The probability of the reader's experiment arm.
    pub(crate) probability: Option<f64>,
    /// The feature values the decision read (none on a fallback).
    pub(crate) snapshot: Option<&'a Snapshot>,
    /// The shadow bundle's decision, when one is set.
    pub(crate) shadow: Option<&'a Decision>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, n: f64) {
    // Not finite: null (serde_json writes it so).
    let _ = serde_json::to_writer(&mut *out, &n);
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b',');
    string(out, name);
    out.push(b':');
    string(out, value);
}

fn field_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    out.push(b',');
    string(out, name);
    out.push(b':');
    out.extend_from_slice(value.to_string().as_bytes());
}

/// The rule that decided, or the reason when none did (`no_rule`, `fallback`).
fn rule(d: &Decision) -> &str {
    d.rule.as_deref().unwrap_or(&d.reason)
}

/// Appends the record of `e` to `out`.
pub(crate) fn write(out: &mut Vec<u8>, e: &Entry<'_>) {
    let d = e.decision;
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(RecordSchema::Decision.version().to_string().as_bytes());
    field_u64(out, "time", e.time);
    field_str(out, "site", e.site);
    field_str(out, "reader", e.reader);
    field_str(out, "bundle", &d.version);
    field_str(out, "rule", rule(d));
    field_str(out, "action", d.action.as_str());
    if let Some(n) = d.remaining {
        field_u64(out, "remaining", u64::from(n));
    }
    if let Some(n) = d.limit {
        field_u64(out, "limit", u64::from(n));
    }
    for (name, value) in [
        ("variant", &d.variant),
        ("offer", &d.offer),
        ("prompt", &d.prompt),
    ] {
        if let Some(v) = value {
            field_str(out, name, v);
        }
    }
    if let Some(score) = e.score.or(d.score) {
        out.extend_from_slice(b",\"score\":");
        number(out, score);
    }
    if let Some(a) = &d.experiment {
        field_str(out, "experiment", &a.experiment);
        field_str(out, "arm", &a.arm);
        if let Some(p) = e.probability {
            out.extend_from_slice(b",\"probability\":");
            number(out, p);
        }
    }
    if d.fallback {
        out.extend_from_slice(b",\"fallback\":true");
    }
    if !d.because.is_empty() {
        out.extend_from_slice(b",\"because\":[");
        for (i, b) in d.because.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, b);
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"features\":{");
    if let Some(snapshot) = e.snapshot {
        let mut first = true;
        for (i, value) in &snapshot.values {
            let Some(feature) = snapshot.bundle.features.get(usize::from(*i)) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            string(out, &feature.name);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, &value.to_json());
        }
    }
    out.push(b'}');
    if let Some(s) = e.shadow {
        out.extend_from_slice(b",\"shadow\":{\"bundle\":");
        string(out, &s.version);
        field_str(out, "rule", rule(s));
        field_str(out, "action", s.action.as_str());
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pulse_protocol::{Action, Assignment};
    use pulse_scorer::{Bundle, Value};

    use super::*;

    #[test]
    fn fields_in_order_optional_ones_only_when_present() {
        let bundle = Arc::new(Bundle::compile(crate::config::BUILTIN_BUNDLE).unwrap());
        let metered = bundle
            .features
            .iter()
            .position(|f| f.name == "metered_pages")
            .unwrap() as u16;
        let decision = Decision {
            remaining: Some(2),
            limit: Some(3),
            rule: Some("meter".into()),
            score: Some(0.25),
            experiment: Some(Assignment {
                experiment: "exp".into(),
                arm: "five".into(),
            }),
            because: vec!["metered_pages = 1 \"x\"".into()],
            ..Decision::new(Action::Meter, "metered", "abc123")
        };
        let snapshot = Snapshot {
            bundle: Arc::clone(&bundle),
            values: vec![(metered, Value::Num(1.0)), (9999, Value::Missing)],
        };
        let shadow = Decision {
            rule: Some("wall".into()),
            ..Decision::new(Action::Paywall, "wall", "def456")
        };
        let mut out = Vec::new();
        write(
            &mut out,
            &Entry {
                time: 7,
                site: "demo",
                reader: "r\n1",
                decision: &decision,
                score: None,
                probability: Some(0.45),
                snapshot: Some(&snapshot),
                shadow: Some(&shadow),
            },
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"time":7,"site":"demo","reader":"r\n1","bundle":"abc123","rule":"meter","action":"meter","remaining":2,"limit":3,"score":0.25,"experiment":"exp","arm":"five","probability":0.45,"because":["metered_pages = 1 \"x\""],"features":{"metered_pages":1.0},"shadow":{"bundle":"def456","rule":"wall","action":"paywall"}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["features"]["metered_pages"], 1.0);
        // What consumers read it as: every field written is one of the record's.
        let record: pulse_protocol::DecisionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&record).unwrap(), text);

        // A fallback: no rule, no snapshot.
        let fallback = Decision {
            fallback: true,
            ..Decision::new(Action::Allow, "fallback", "abc123")
        };
        let mut out = Vec::new();
        write(
            &mut out,
            &Entry {
                time: 8,
                site: "demo",
                reader: "r",
                decision: &fallback,
                score: Some(f64::NAN),
                probability: None,
                snapshot: None,
                shadow: None,
            },
        );
        let text = String::from_utf8(out).unwrap();
        let record: pulse_protocol::DecisionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!((record.v, record.score, record.fallback), (1, None, true));
        assert_eq!(
            text,
            r#"{"v":1,"time":8,"site":"demo","reader":"r","bundle":"abc123","rule":"fallback","action":"allow","score":null,"fallback":true,"features":{}}"#
        );
    }
}
