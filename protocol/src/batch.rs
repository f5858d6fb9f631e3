//! A batch: who sent it (site, reader, session) and the events it carries; and the server-side
//! parser that splits a batch into accepted and rejected events.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    Event, EventId, MAX_EVENT_AGE_MS, MAX_EVENTS_PER_BATCH, MAX_FUTURE_SKEW_MS, MAX_JSON_DEPTH,
    MAX_TOKEN_LEN, MAX_USER_ID_LEN, PROTOCOL_VERSION, RejectReason, Rejection,
};

/// A batch of events as a client sends it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Header fields shared by every event of the batch.
    #[serde(flatten)]
    pub header: BatchHeader,
    /// The events, 1 to [`MAX_EVENTS_PER_BATCH`].
    pub events: Vec<Event>,
}

/// Everything in a batch but its events.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BatchHeader {
    /// Protocol version; this crate writes and reads [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The site key (must equal the `k` query parameter when both are given).
    pub site_key: String,
    /// The reader's anonymous id, kept by the client across visits.
    pub anonymous_id: String,
    /// The publisher's id for a logged-in reader, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session id; a new one after 30 minutes without activity.
    pub session_id: String,
    /// Per-session sequence number of this batch, from 0. A retry resends the same number.
    pub seq: u64,
    /// Client clock time when the batch was (re)sent, milliseconds since the Unix epoch. The
    /// server corrects event times by `server_now - sent_at`.
    pub sent_at: u64,
}

impl BatchHeader {
    /// The key the reader's state lives under: the user id when known, else the anonymous id.
    pub fn reader_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.anonymous_id)
    }
}

/// Why a whole batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON, or nests deeper than [`MAX_JSON_DEPTH`].
    #[error("the body is not well-formed JSON: {0}")]
    Malformed(String),
    /// The JSON does not have the shape of a batch, or a header field is invalid.
    #[error("the batch is invalid: {0}")]
    Invalid(String),
    /// The batch declares a protocol version this server does not read.
    #[error("protocol version {0} is not supported")]
    UnsupportedVersion(u32),
    /// More than [`MAX_EVENTS_PER_BATCH`] events, or none.
    #[error("a batch holds 1 to {MAX_EVENTS_PER_BATCH} events, this one {0}")]
    EventCount(usize),
}

/// A batch split into the events the server accepts and those it rejects.
#[derive(Debug)]
pub struct ParsedBatch {
    /// The batch header, validated.
    pub header: BatchHeader,
    /// Accepted events, in batch order.
    pub accepted: Vec<Event>,
    /// Rejected events with their reason and their raw JSON (for the dead-letter store).
    pub rejected: Vec<(Rejection, String)>,
    /// Clock-skew correction: `server_now - sent_at`, in milliseconds.
    pub skew_ms: i64,
}

impl ParsedBatch {
    /// The event's time on the server's clock: its client time corrected by the batch's skew.
    pub fn event_time(&self, event: &Event) -> u64 {
        event.ts.saturating_add_signed(self.skew_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(flatten)]
    header: BatchHeader,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Parses and validates a batch received at `server_now` (ms since the epoch). Problems with the
/// batch as a whole are an `Err`; problems with single events reject just those events.
pub fn parse_batch(body: &[u8], server_now: u64) -> Result<ParsedBatch, BatchError> {
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(BatchError::Malformed(format!(
            "nesting deeper than {MAX_JSON_DEPTH}"
        )));
    }
    let raw: RawBatch<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            BatchError::Invalid(e.to_string())
        } else {
            BatchError::Malformed(e.to_string())
        }
    })?;
    let header = raw.header;
    if header.v != PROTOCOL_VERSION {
        return Err(BatchError::UnsupportedVersion(header.v));
    }
    check_token("site_key", &header.site_key)?;
    check_token("anonymous_id", &header.anonymous_id)?;
    check_token("session_id", &header.session_id)?;
    if let Some(uid) = &header.user_id
        && (uid.is_empty() || uid.len() > MAX_USER_ID_LEN || uid.chars().any(char::is_control))
    {
        return Err(BatchError::Invalid(format!(
            "user_id must be 1 to {MAX_USER_ID_LEN} bytes without control characters"
        )));
    }
    if raw.events.is_empty() || raw.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(BatchError::EventCount(raw.events.len()));
    }
    let skew_ms = clamp_i64(i128::from(server_now) - i128::from(header.sent_at));
    let mut parsed = ParsedBatch {
        header,
        accepted: Vec::with_capacity(raw.events.len()),
        rejected: Vec::new(),
        skew_ms,
    };
    let mut seen: HashSet<EventId> = HashSet::with_capacity(raw.events.len());
    for (index, raw_event) in raw.events.into_iter().enumerate() {
        let outcome = serde_json::from_str::<Event>(raw_event.get())
            .map_err(|_| (RejectReason::InvalidEvent, None))
            .and_then(|event| {
                let id = Some(event.id);
                event.check().map_err(|r| (r, id))?;
                let time = parsed.event_time(&event);
                if time > server_now.saturating_add(MAX_FUTURE_SKEW_MS)
                    || time < server_now.saturating_sub(MAX_EVENT_AGE_MS)
                {
                    return Err((RejectReason::TimestampOutOfRange, id));
                }
                if !seen.insert(event.id) {
                    return Err((RejectReason::DuplicateId, id));
                }
                Ok(event)
            });
        match outcome {
            Ok(event) => parsed.accepted.push(event),
            Err((reason, id)) => parsed.rejected.push((
                Rejection {
                    index: index as u32,
                    id: id.map(|i| i.to_string()),
                    reason,
                },
                raw_event.get().to_owned(),
            )),
        }
    }
    Ok(parsed)
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn check_token(field: &str, value: &str) -> Result<(), BatchError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BatchError::Invalid(format!(
            "{field} must be 1 to {MAX_TOKEN_LEN} characters of [A-Za-z0-9_-]"
        )))
    }
}

/// The deepest nesting of arrays and objects in a JSON text, counted without parsing it, so that
/// a hostile document is refused before a recursive parser sees it.
fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventType, PageContext};
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn header() -> BatchHeader {
        BatchHeader {
            v: 1,
            site_key: "demo".into(),
            anonymous_id: "a1".into(),
            user_id: None,
            session_id: "s1".into(),
            seq: 0,
            sent_at: NOW,
        }
    }

    fn page_view(id: u128, ts: u64) -> Event {
        Event {
            id: EventId(id),
            ts,
            kind: EventType::PageView,
            name: None,
            page: PageContext {
                url: "https://n.example/a".into(),
                ..Default::default()
            },
            props: Default::default(),
        }
    }

    fn body(batch: &Batch) -> Vec<u8> {
        serde_json::to_vec(batch).unwrap()
    }

    #[test]
    fn accepts_a_good_batch_and_corrects_skew() {
        let mut h = header();
        h.sent_at = NOW - 60_000; // client clock one minute slow
        let batch = Batch {
            header: h,
            events: vec![page_view(1, NOW - 61_000)],
        };
        let parsed = parse_batch(&body(&batch), NOW).unwrap();
        assert_eq!(parsed.accepted.len(), 1);
        assert!(parsed.rejected.is_empty());
        assert_eq!(parsed.event_time(&parsed.accepted[0]), NOW - 1000);
    }

    #[test]
    fn rejects_single_bad_events_and_keeps_the_rest() {
        let batch = Batch {
            header: header(),
            events: vec![
                page_view(1, NOW),
                page_view(1, NOW),
                page_view(2, NOW + 3_600_000),
            ],
        };
        let mut text = String::from_utf8(body(&batch)).unwrap();
        text = text.replacen(r#""events":["#, r#""events":[{"id":"zz"},"#, 1);
        let parsed = parse_batch(text.as_bytes(), NOW).unwrap();
        assert_eq!(parsed.accepted.len(), 1);
        let reasons: Vec<_> = parsed
            .rejected
            .iter()
            .map(|(r, _)| (r.index, r.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (0, RejectReason::InvalidEvent),
                (2, RejectReason::DuplicateId),
                (3, RejectReason::TimestampOutOfRange)
            ]
        );
        assert_eq!(parsed.rejected[0].1, r#"{"id":"zz"}"#);
    }

    #[test]
    fn whole_batch_errors() {
        assert!(matches!(
            parse_batch(b"{", NOW),
            Err(BatchError::Malformed(_))
        ));
        assert!(matches!(
            parse_batch(b"{\"v\":1}", NOW),
            Err(BatchError::Invalid(_))
        ));
        let mut b = Batch {
            header: header(),
            events: vec![],
        };
        assert_eq!(
            parse_batch(&body(&b), NOW).unwrap_err(),
            BatchError::EventCount(0)
        );
        b.events = (0..MAX_EVENTS_PER_BATCH as u128)
            .map(|i| page_view(i, NOW))
            .collect();
        assert!(parse_batch(&body(&b), NOW).is_ok());
        b.events.push(page_view(1000, NOW));
        assert_eq!(
            parse_batch(&body(&b), NOW).unwrap_err(),
            BatchError::EventCount(MAX_EVENTS_PER_BATCH + 1)
        );
        b.events.truncate(1);
        b.header.v = 2;
        assert_eq!(
            parse_batch(&body(&b), NOW).unwrap_err(),
            BatchError::UnsupportedVersion(2)
        );
        b.header.v = 1;
        b.header.anonymous_id = "has space".into();
        assert!(matches!(
            parse_batch(&body(&b), NOW),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn depth_limit_at_bound() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(json_depth(nest(MAX_JSON_DEPTH).as_bytes()), MAX_JSON_DEPTH);
        assert!(matches!(
            parse_batch(nest(MAX_JSON_DEPTH + 1).as_bytes(), NOW),
            Err(BatchError::Malformed(_))
        ));
        assert_eq!(json_depth(br#"{"a":"[[[[\"]]"}"#), 1);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_batch(&bytes, NOW);
        }

        #[test]
        fn round_trips(n in 1usize..20, seq in any::<u64>()) {
            let mut h = header();
            h.seq = seq;
            let batch = Batch { header: h, events: (0..n as u128).map(|i| page_view(i, NOW)).collect() };
            let parsed = parse_batch(&body(&batch), NOW).unwrap();
            prop_assert_eq!(parsed.accepted, batch.events);
            prop_assert_eq!(parsed.header, batch.header);
        }
    }
}
