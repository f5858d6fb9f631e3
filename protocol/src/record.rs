//! The records of the event log (`pulse.events`) and the dead-letter log (`pulse.deadletter`):
//! one JSON object each, the same in the embedded store and in Kafka. An event record holds the
//! event's JSON exactly as the client sent it, after an envelope the gateway writes once per
//! batch; nothing of the event is re-serialized. Consumers read them as [`EventRecord`] and
//! [`DeadLetter`]; the scorer rebuilds its state from `EventRecord`s.
//!
//! Every record starts with its schema version, `"v"` ([`RecordSchema`]); records written
//! before there was one lack it and read as version 1.

use serde::{Deserialize, Serialize};

use crate::{Event, HeaderView, RecordSchema};

/// The version of a record that has none: written before records carried one, the same shape
/// as version 1.
pub(crate) fn legacy_version() -> u32 {
    1
}

/// One accepted event as the log holds it: the event, who sent it, and when.
///
/// On the wire: `{"v":1,"site":…,"reader":…,"anonymous_id":…,"user_id":…,"session_id":…,
/// "seq":…,"received_at":…,"time":…,"event":{…}}`, in that order, `user_id` only when known,
/// and `event` last: the event's bytes as received (valid JSON, possibly with the client's
/// whitespace and escapes).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Pulse event record"))]
pub struct EventRecord {
    /// The record's schema version (`event.v1`: 1); read as 1 when absent (a record written
    /// before records carried it).
    #[serde(default = "legacy_version")]
    pub v: u32,
    /// The site key the batch was sent with.
    pub site: String,
    /// The reader the event belongs to: the user id when known, else the anonymous id.
    pub reader: String,
    /// The anonymous id of the batch.
    pub anonymous_id: String,
    /// The user id of the batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session id of the batch.
    pub session_id: String,
    /// The batch's per-session sequence number.
    pub seq: u64,
    /// When the gateway received the batch, ms since the epoch.
    pub received_at: u64,
    /// Event time on the server's clock (client time corrected for skew), ms since the epoch.
    pub time: u64,
    /// The event as the client sent it.
    pub event: Event,
}

/// The envelope of a batch's event records, written once per batch: every record is this
/// prefix, the event's time, and the event's bytes.
#[derive(Clone, Debug)]
pub struct RecordPrefix {
    bytes: Vec<u8>,
}

impl RecordPrefix {
    /// The envelope for the events of a batch with `header`, sent for `site`, received at
    /// `received_at` (ms since the epoch).
    pub fn new(site: &str, header: &HeaderView<'_>, received_at: u64) -> Self {
        let mut b = Vec::with_capacity(192);
        b.extend_from_slice(b"{\"v\":");
        push_u64(&mut b, u64::from(RecordSchema::Event.version()));
        b.extend_from_slice(b",\"site\":");
        push_str(&mut b, site);
        b.extend_from_slice(b",\"reader\":");
        push_str(&mut b, header.reader_key());
        b.extend_from_slice(b",\"anonymous_id\":");
        push_str(&mut b, &header.anonymous_id);
        if let Some(uid) = &header.user_id {
            b.extend_from_slice(b",\"user_id\":");
            push_str(&mut b, uid);
        }
        b.extend_from_slice(b",\"session_id\":");
        push_str(&mut b, &header.session_id);
        b.extend_from_slice(b",\"seq\":");
        push_u64(&mut b, header.seq);
        b.extend_from_slice(b",\"received_at\":");
        push_u64(&mut b, received_at);
        b.extend_from_slice(b",\"time\":");
        Self { bytes: b }
    }

    /// Appends the record of one event (server time `time`, JSON `raw` as received) to `out`.
    pub fn write(&self, out: &mut Vec<u8>, time: u64, raw: &str) {
        out.reserve(self.bytes.len() + raw.len() + 32);
        out.extend_from_slice(&self.bytes);
        push_u64(out, time);
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(raw.as_bytes());
        out.push(b'}');
    }
}

/// A rejected event, or an undecodable batch from a known site, with the reason.
///
/// On the wire: `{"v":1,"site":…,"reason":…,"index":…,"received_at":…,"raw":"…"}` (`index`
/// only for an event), `raw` a JSON string of at most [`DEAD_LETTER_MAX_RAW`] bytes as stored.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Pulse dead letter"))]
pub struct DeadLetter {
    /// The record's schema version (`dead_letter.v1`: 1); read as 1 when absent (a record
    /// written before records carried it).
    #[serde(default = "legacy_version")]
    pub v: u32,
    /// The site key the request was sent with.
    pub site: String,
    /// The machine-readable reason (a [`RejectReason`](crate::RejectReason) or an
    /// [`ErrorCode`](crate::ErrorCode), as snake_case).
    pub reason: String,
    /// Position of the event in its batch, when one event was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// When the gateway received it, ms since the epoch.
    pub received_at: u64,
    /// The start of the rejected JSON (or of the decoded body, or of the body as received when
    /// it could not be decoded; bytes that are not UTF-8 become U+FFFD), cut so that it takes
    /// at most [`DEAD_LETTER_MAX_RAW`] bytes as an escaped JSON string.
    pub raw: String,
}

/// The most bytes a dead letter's `raw` takes in the log, escaped, quotes not counted. Enough
/// to see what was wrong; small enough that refused garbage cannot fill the disk.
pub const DEAD_LETTER_MAX_RAW: usize = 4096;

/// Appends the dead-letter record for `raw` (refused for `reason`; `index` of the event in its
/// batch, when one event was refused) to `out`; returns the bytes written.
pub fn write_dead_letter(
    out: &mut Vec<u8>,
    site: &str,
    reason: &str,
    index: Option<u32>,
    received_at: u64,
    raw: &[u8],
) -> usize {
    let start = out.len();
    out.extend_from_slice(b"{\"v\":");
    push_u64(out, u64::from(RecordSchema::DeadLetter.version()));
    out.extend_from_slice(b",\"site\":");
    push_str(out, site);
    out.extend_from_slice(b",\"reason\":");
    push_str(out, reason);
    if let Some(index) = index {
        out.extend_from_slice(b",\"index\":");
        push_u64(out, u64::from(index));
    }
    out.extend_from_slice(b",\"received_at\":");
    push_u64(out, received_at);
    out.extend_from_slice(b",\"raw\":\"");
    // Every input byte takes at least one byte escaped: a prefix this long is enough.
    let head = &raw[..raw.len().min(DEAD_LETTER_MAX_RAW)];
    let text = String::from_utf8_lossy(head);
    push_escaped_prefix(out, &text, DEAD_LETTER_MAX_RAW);
    out.extend_from_slice(b"\"}");
    out.len() - start
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped_prefix(out, s, usize::MAX);
    out.push(b'"');
}

/// Appends as much of `s`, escaped for a JSON string, as fits in `budget` bytes, whole
/// characters only.
fn push_escaped_prefix(out: &mut Vec<u8>, s: &str, budget: usize) {
    let plain = |b: u8| b >= 0x20 && b != b'"' && b != b'\\';
    if s.len() <= budget && s.bytes().all(plain) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut left = budget;
    for c in s.chars() {
        let mut utf8 = [0u8; 4];
        let escaped: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{8}' => b"\\b",
            '\u{c}' => b"\\f",
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as usize;
                utf8 = [HEX[n >> 4], HEX[n & 0xf], 0, 0];
                if left < 6 {
                    return;
                }
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&utf8[..2]);
                left -= 6;
                continue;
            }
            c => c.encode_utf8(&mut utf8).as_bytes(),
        };
        if escaped.len() > left {
            return;
        }
        out.extend_from_slice(escaped);
        left -= escaped.len();
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_batch;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn an_event_record_is_the_envelope_and_the_event_as_sent() {
        let event = r#"{ "id":"0000000000000000000000000000002a", "ts":1800000000000,
            "type":"page_view", "page":{"url":"https:\/\/n.example\/a"} }"#;
        let body = format!(
            r#"{{"v":1,"site_key":"demo","anonymous_id":"a-1","user_id":"u \"1\"","session_id":"s","seq":7,"sent_at":{NOW},"events":[{event}]}}"#
        );
        let batch = parse_batch(body.as_bytes(), NOW + 5).unwrap();
        let prefix = RecordPrefix::new("demo", &batch.header, NOW + 5);
        let mut out = Vec::new();
        let view = &batch.accepted[0];
        prefix.write(&mut out, view.time, view.raw);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with(&format!(",\"event\":{event}}}")), "{text}");
        let record: EventRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                record.site.as_str(),
                record.reader.as_str(),
                record.anonymous_id.as_str()
            ),
            ("demo", "u \"1\"", "a-1")
        );
        assert_eq!(record.user_id.as_deref(), Some("u \"1\""));
        assert_eq!(
            (record.seq, record.received_at, record.time),
            (7, NOW + 5, NOW + 5)
        );
        assert_eq!(record.event, view.to_event().unwrap());
    }

    #[test]
    fn records_carry_their_version_first_and_read_without_one() {
        let mut out = Vec::new();
        write_dead_letter(&mut out, "demo", "invalid_event", Some(1), 5, b"{}");
        assert!(out.starts_with(b"{\"v\":1,\"site\":"), "{out:?}");
        let body = format!(
            r#"{{"v":1,"site_key":"d","anonymous_id":"a","session_id":"s","seq":0,"sent_at":{NOW},"events":[{{"id":"0000000000000000000000000000002a","ts":{NOW},"type":"page_view","page":{{"url":"u"}}}}]}}"#
        );
        let header = parse_batch(body.as_bytes(), NOW).unwrap().header;
        let mut out = Vec::new();
        RecordPrefix::new("d", &header, NOW).write(&mut out, NOW, "{}");
        assert!(out.starts_with(b"{\"v\":1,\"site\":"), "{out:?}");
        // Written before records carried a version: read as version 1.
        let legacy: DeadLetter =
            serde_json::from_str(r#"{"site":"d","reason":"r","received_at":1,"raw":""}"#).unwrap();
        assert_eq!(legacy.v, 1);
    }

    #[test]
    fn dead_letters_keep_a_bounded_escaped_prefix() {
        let mut out = Vec::new();
        let n = write_dead_letter(
            &mut out,
            "demo",
            "malformed_json",
            None,
            5,
            &[1u8; 512 * 1024],
        );
        assert_eq!(n, out.len());
        let letter: DeadLetter = serde_json::from_slice(&out).unwrap();
        assert_eq!(letter.raw.len(), DEAD_LETTER_MAX_RAW / 6);
        assert!(n < DEAD_LETTER_MAX_RAW + 100, "{n}");
        out.clear();
        write_dead_letter(
            &mut out,
            "demo",
            "invalid_event",
            Some(3),
            5,
            b"{\"x\":\"\xff\"}",
        );
        let letter: DeadLetter = serde_json::from_slice(&out).unwrap();
        assert_eq!(letter.raw, "{\"x\":\"\u{fffd}\"}");
        assert_eq!(letter.index, Some(3));
    }

    proptest! {
        #[test]
        fn any_raw_gives_a_readable_bounded_dead_letter(raw in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let mut out = Vec::new();
            write_dead_letter(&mut out, "s", "r", Some(1), 1, &raw);
            let letter: DeadLetter = serde_json::from_slice(&out).unwrap();
            let stored = serde_json::to_string(&letter.raw).unwrap();
            prop_assert!(stored.len() <= DEAD_LETTER_MAX_RAW + 2);
            let whole = String::from_utf8_lossy(&raw);
            let kept = letter.raw.trim_end_matches(char::REPLACEMENT_CHARACTER);
            prop_assert!(whole.starts_with(kept));
        }

        #[test]
        fn numbers_are_written_as_json(n in any::<u64>()) {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            prop_assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
