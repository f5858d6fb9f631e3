//! The data contract of the logs: each kind of record ([`RecordSchema`]) carries its schema
//! version as its first field, `"v"`, and in Kafka also as the header `pulse-schema`
//! (`event.v1`, …); its JSON Schema ships in `protocol/schema/<kind>.v<N>.schema.json`,
//! generated from the types of this crate ([`generate`], with the `schema` feature) and checked
//! against them by the test suite.
//!
//! Versioning rule: a change a reader of the old version can ignore (a new optional field, a
//! new value of a field documented as open, such as a reason code) keeps the version; any other
//! (a field removed, renamed, retyped or made required, a meaning changed) bumps it, and the
//! new version's schema ships beside the old one. Readers therefore ignore fields they do not
//! know and refuse a version they do not. Records written before records carried a version
//! have no `"v"` (nor header) and are version 1: [`push_versioned`] gives them one.
//!
//! The `event` object inside an event record is the collect protocol's event as the client
//! sent it: its fields are those of the protocol version (`PROTOCOL_VERSION`), no others.

/// The Kafka header naming a message's schema: `<kind>.v<version>` ([`RecordSchema::id`]).
pub const SCHEMA_HEADER: &str = "pulse-schema";

/// A kind of log record, whose shape is versioned on its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RecordSchema {
    /// An accepted event ([`EventRecord`](crate::EventRecord)): `pulse.events`.
    Event,
    /// A refused event or batch ([`DeadLetter`](crate::DeadLetter)): `pulse.deadletter`.
    DeadLetter,
    /// A decision ([`DecisionRecord`](crate::DecisionRecord)): `pulse.decisions`.
    Decision,
    /// A reader erased on request ([`ErasureRecord`](crate::ErasureRecord)): `pulse.events`,
    /// Kafka mode.
    Erasure,
}

impl RecordSchema {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::Event, Self::DeadLetter, Self::Decision, Self::Erasure];

    /// The version this crate writes (and the newest it reads).
    pub fn version(self) -> u32 {
        match self {
            Self::Event | Self::DeadLetter | Self::Decision | Self::Erasure => 1,
        }
    }

    /// The kind's name: `event`, `dead_letter`, `decision`, `erasure`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::DeadLetter => "dead_letter",
            Self::Decision => "decision",
            Self::Erasure => "erasure",
        }
    }

    /// `<name>.v<version>`: the value of the Kafka header [`SCHEMA_HEADER`], and the stem of
    /// the schema's file.
    pub fn id(self) -> &'static str {
        match self {
            Self::Event => "event.v1",
            Self::DeadLetter => "dead_letter.v1",
            Self::Decision => "decision.v1",
            Self::Erasure => "erasure.v1",
        }
    }

    /// The schema's file name under `protocol/schema/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Event => "event.v1.schema.json",
            Self::DeadLetter => "dead_letter.v1.schema.json",
            Self::Decision => "decision.v1.schema.json",
            Self::Erasure => "erasure.v1.schema.json",
        }
    }

    /// The JSON Schema of the current version, as committed under `protocol/schema/`.
    pub fn json_schema(self) -> &'static str {
        match self {
            Self::Event => include_str!("../schema/event.v1.schema.json"),
            Self::DeadLetter => include_str!("../schema/dead_letter.v1.schema.json"),
            Self::Decision => include_str!("../schema/decision.v1.schema.json"),
            Self::Erasure => include_str!("../schema/erasure.v1.schema.json"),
        }
    }

    /// The kind named `name` (`event`, `dead_letter`, `decision`), or its current id
    /// (`event.v1`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name || k.id() == name)
    }
}

/// Appends `record` (one JSON object as a log holds it) to `out` with its schema version: as it
/// is when it starts with `"v"` (as every writer writes it), else with `"v":1` put first (a
/// record written before records carried a version, which is version 1).
pub fn push_versioned(out: &mut Vec<u8>, record: &[u8]) {
    match record.strip_prefix(b"{") {
        Some(rest) if !record.starts_with(b"{\"v\":") => {
            out.extend_from_slice(b"{\"v\":1");
            if !rest.trim_ascii_start().starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        _ => out.extend_from_slice(record),
    }
}

/// The JSON Schema of `kind`'s current version, generated from the types (pretty-printed, with
/// a final newline): what `protocol/schema/` must hold.
#[cfg(feature = "schema")]
pub fn generate(kind: RecordSchema) -> String {
    use schemars::generate::SchemaSettings;

    // The schema says what the gateway writes: a field it always writes is required.
    // The descriptions are the types' doc comments, without rustdoc's link syntax.
    let generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .with_transform(schemars::transform::RecursiveTransform(
            |s: &mut schemars::Schema| {
                if let Some(serde_json::Value::String(d)) = s.get_mut("description") {
                    *d = plain_doc(d);
                }
            },
        ))
        .into_generator();
    let mut schema = match kind {
        RecordSchema::Event => generator.into_root_schema_for::<crate::EventRecord>(),
        RecordSchema::DeadLetter => generator.into_root_schema_for::<crate::DeadLetter>(),
        RecordSchema::Decision => generator.into_root_schema_for::<crate::DecisionRecord>(),
        RecordSchema::Erasure => generator.into_root_schema_for::<crate::ErasureRecord>(),
    };
    if let Some(v) = schema.pointer_mut("/properties/v") {
        // The version this schema describes, and nothing else.
        if let Some(v) = v.as_object_mut() {
            v.insert("const".into(), kind.version().into());
        }
    }
    schema.insert("$comment".into(), format!(
        "{} version {}: generated from pulse-protocol's types (PULSE_BLESS=1 cargo test -p pulse-e2e --test schema); \
         additive changes keep the version, breaking ones bump it",
        kind.name(),
        kind.version()
    ).into());
    // Serializing a `Value` cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// `doc` without rustdoc's links: "[`X`]" and "[`X`](path)" become "`X`".
#[cfg(feature = "schema")]
fn plain_doc(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start + 1..].find("`]") else {
            break;
        };
        let code = &rest[start + 1..start + 1 + len + 1];
        out.push_str(&rest[..start]);
        out.push_str(code);
        rest = &rest[start + 1 + len + 2..];
        if rest.starts_with('(')
            && let Some(end) = rest.find(')')
        {
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for crate::EventId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A random 128-bit id, unique per event, as 32 lowercase hex digits; retries resend it, so consumers dedupe by it.",
            "type": "string",
            "pattern": "^[0-9a-f]{32}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_records_get_version_one_current_ones_are_kept() {
        let mut out = Vec::new();
        push_versioned(&mut out, br#"{"site":"demo"}"#);
        assert_eq!(out, br#"{"v":1,"site":"demo"}"#);
        out.clear();
        push_versioned(&mut out, br#"{"v":1,"site":"demo"}"#);
        assert_eq!(out, br#"{"v":1,"site":"demo"}"#);
        out.clear();
        push_versioned(&mut out, b"{}");
        assert_eq!(out, br#"{"v":1}"#);
    }

    #[test]
    fn kinds_by_name_and_id() {
        for k in RecordSchema::ALL {
            assert_eq!(RecordSchema::parse(k.name()), Some(k));
            assert_eq!(RecordSchema::parse(k.id()), Some(k));
            assert_eq!(k.id(), format!("{}.v{}", k.name(), k.version()));
            assert_eq!(k.file_name(), format!("{}.schema.json", k.id()));
            let schema: serde_json::Value = serde_json::from_str(k.json_schema()).unwrap();
            assert_eq!(schema["properties"]["v"]["const"], k.version());
        }
        assert_eq!(RecordSchema::parse("events"), None);
    }

    #[cfg(feature = "schema")]
    #[test]
    fn descriptions_lose_rustdoc_links() {
        assert_eq!(
            plain_doc("a [`RejectReason`](crate::RejectReason) or [`X`], [not] `y`"),
            "a `RejectReason` or `X`, [not] `y`"
        );
    }
}
