//! The targets and the properties they check.
//!
//! `decode`: never panics; what it gives back fits the cap; a JSON body comes back as it is; a
//! zstd or gzip body decodes to what the reference decoders (the `zstd` crate's and flate2's
//! multi-member reader, unrestricted) give.
//!
//! `parse`: never panics; the body is refused as malformed exactly when `serde_json` refuses it
//! as JSON (or it nests deeper than 16); every accepted event's JSON, as kept for the log,
//! reads back with `serde_json` as the same event the views describe; every event is either
//! accepted or rejected, once, in order; the log records built from the views read back with
//! their envelope; every rejected event's dead letter reads back, bounded.

use std::io::Read;

use pulse_protocol::{
    BatchError, DEAD_LETTER_MAX_RAW, DeadLetter, Encoding, Event, EventRecord, MAX_JSON_DEPTH,
    RecordPrefix, RejectReason, parse_batch, write_dead_letter,
};
use serde_json::Value;

/// The server clock the parser runs with (events near it are in range).
pub const NOW: u64 = 1_800_000_000_000;
/// The decode cap the decoder target runs with.
pub const DECODE_CAP: usize = 64 * 1024;

/// A fuzz target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// [`decode`].
    Decode,
    /// [`parse`].
    Parse,
}

impl Target {
    /// Both targets.
    pub const ALL: [Self; 2] = [Self::Decode, Self::Parse];

    /// `decode` or `parse`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Parse => "parse",
        }
    }

    /// The target named `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on one input (panics when a property fails).
    pub fn run(self, data: &[u8]) {
        match self {
            Self::Decode => decode(data),
            Self::Parse => parse(data),
        }
    }
}

/// The decoder target.
pub fn decode(data: &[u8]) {
    let mut out = Vec::new();
    let decoded = pulse_http::decode(
        data,
        None,
        DECODE_CAP,
        &mut out,
        pulse_protocol::compact::no_dictionary,
    )
    .map(<[u8]>::to_vec);
    let Ok(decoded) = decoded else {
        return;
    };
    assert!(decoded.len() <= DECODE_CAP, "decoded past the cap");
    match Encoding::sniff(data) {
        Some(Encoding::Json) => assert_eq!(decoded, data, "JSON is passed through"),
        Some(Encoding::Zstd) => {
            let reference = zstd::stream::decode_all(data).expect("the reference decodes it too");
            assert_eq!(decoded, reference, "zstd differs from the reference");
        }
        Some(Encoding::Gzip) => {
            let mut reference = Vec::new();
            flate2::read::MultiGzDecoder::new(data)
                .read_to_end(&mut reference)
                .expect("the reference decodes it too");
            assert_eq!(decoded, reference, "gzip differs from the reference");
        }
        Some(Encoding::Compact) => {
            let reference = pulse_protocol::compact::decode_body(
                data,
                DECODE_CAP,
                pulse_protocol::compact::no_dictionary,
            )
            .expect("the reference decodes it too");
            assert_eq!(
                decoded,
                reference.as_bytes(),
                "compact differs from the reference"
            );
        }
        None => panic!("decoded a body of no known encoding"),
    }
}

/// How deep `value` nests (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The batch parser target.
pub fn parse(data: &[u8]) {
    let parsed = parse_batch(data, NOW);
    let reference = serde_json::from_slice::<Value>(data)
        .ok()
        .filter(|v| depth(v) <= MAX_JSON_DEPTH);
    let malformed = matches!(parsed, Err(BatchError::Malformed(_)));
    assert_eq!(
        malformed,
        reference.is_none(),
        "malformed by the parser ({parsed:?}) but not by serde_json, or the other way"
    );
    let (Ok(batch), Some(reference)) = (parsed, reference) else {
        return;
    };
    // The header, as serde_json reads it.
    let header = &batch.header;
    assert_eq!(reference["site_key"].as_str(), Some(&*header.site_key));
    assert_eq!(
        reference["anonymous_id"].as_str(),
        Some(&*header.anonymous_id)
    );
    assert_eq!(reference["session_id"].as_str(), Some(&*header.session_id));
    assert_eq!(reference["seq"].as_u64(), Some(header.seq));
    assert_eq!(
        reference.get("user_id").and_then(Value::as_str),
        header.user_id.as_deref()
    );
    // Every event accepted or rejected, once, in order.
    let count = reference["events"].as_array().map_or(0, Vec::len);
    assert_eq!(batch.accepted.len() + batch.rejected.len(), count);
    let mut indexes: Vec<u32> = batch.rejected.iter().map(|(r, _)| r.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(
        indexes.len(),
        batch.rejected.len(),
        "an event rejected twice"
    );
    let prefix = RecordPrefix::new(&header.site_key, header, NOW);
    for view in &batch.accepted {
        // The event as kept for the log reads back as the event the views describe.
        let event: Event = serde_json::from_str(view.raw).expect("an accepted event reads back");
        assert_eq!(view.to_event().expect("the views convert"), event);
        match event.check() {
            // The client-side check counts props re-serialized, the server as sent: `1E2` is
            // three bytes sent and five (`100.0`) re-serialized.
            Ok(()) | Err(RejectReason::PropsTooLarge) => {}
            Err(reason) => panic!("accepted, but the event's own check says {reason:?}"),
        }
        let mut record = Vec::new();
        prefix.write(&mut record, view.time, view.raw);
        let record: EventRecord = serde_json::from_slice(&record).expect("the record reads back");
        assert_eq!(record.event, event);
        assert_eq!(
            (record.reader.as_str(), record.time),
            (header.reader_key(), view.time)
        );
    }
    for (rejection, raw) in &batch.rejected {
        let mut letter = Vec::new();
        write_dead_letter(
            &mut letter,
            &header.site_key,
            rejection.reason.as_str(),
            Some(rejection.index),
            NOW,
            raw.as_bytes(),
        );
        let letter: DeadLetter =
            serde_json::from_slice(&letter).expect("the dead letter reads back");
        let stored = serde_json::to_string(&letter.raw).unwrap_or_default();
        assert!(
            stored.len() <= DEAD_LETTER_MAX_RAW + 2,
            "a dead letter past its cap"
        );
        assert!(
            raw.starts_with(&letter.raw),
            "a dead letter is not a prefix of its event"
        );
    }
}
