//! The server-side batch parser: one pass over the decoded body into borrowed views. Strings
//! stay slices of the body (decoded copies only when they hold escapes); each event keeps its
//! JSON text as received, which is what the logs store; `props` is checked for depth and size
//! while it is scanned, never re-serialized. Problems with the batch as a whole are an `Err`;
//! problems with one event reject just that event.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::event::{check_fields, check_props};
use crate::json::{Number, Scanner, Syntax};
use crate::{
    BatchError, Event, EventId, EventType, MAX_AUTH_LEN, MAX_EVENT_AGE_MS, MAX_EVENTS_PER_BATCH,
    MAX_FUTURE_SKEW_MS, MAX_USER_ID_LEN, PROTOCOL_VERSION, PageContext, RejectReason, Rejection,
    is_token,
};

/// A parsed batch: its header, its accepted events and its rejected ones, all borrowing the
/// decoded body.
#[derive(Debug)]
pub struct BatchView<'a> {
    /// The header, validated.
    pub header: HeaderView<'a>,
    /// Accepted events, in batch order.
    pub accepted: Vec<EventView<'a>>,
    /// Rejected events with their reason and their JSON as received (for the dead letters).
    pub rejected: Vec<(Rejection, &'a str)>,
    /// Clock-skew correction: `server_now - sent_at`, in milliseconds.
    pub skew_ms: i64,
}

/// Everything in a batch but its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderView<'a> {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// The site key.
    pub site_key: Cow<'a, str>,
    /// The reader's anonymous id.
    pub anonymous_id: Cow<'a, str>,
    /// The user id of a logged-in reader (trusted only when `auth` vouches for it on sites
    /// that have token keys).
    pub user_id: Option<Cow<'a, str>>,
    /// A token signed by the publisher (a JWT) vouching for the user id and entitlements.
    pub auth: Option<Cow<'a, str>>,
    /// The session id.
    pub session_id: Cow<'a, str>,
    /// Per-session sequence number of the batch.
    pub seq: u64,
    /// Client clock time when the batch was sent, ms since the epoch.
    pub sent_at: u64,
    /// Whether the client sent the batch before (a retry, or a batch an earlier page parked).
    pub resent: bool,
}

impl HeaderView<'_> {
    /// The key the reader's state lives under: the user id when known, else the anonymous id.
    pub fn reader_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or(&self.anonymous_id)
    }
}

/// One accepted event, borrowing the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView<'a> {
    /// The event's JSON exactly as received (what the logs store).
    pub raw: &'a str,
    /// The event id.
    pub id: EventId,
    /// Client clock time, ms since the epoch.
    pub ts: u64,
    /// Event time on the server's clock (`ts` corrected by the batch's skew).
    pub time: u64,
    /// The kind of event.
    pub kind: EventType,
    /// The name of a custom event.
    pub name: Option<Cow<'a, str>>,
    /// `page.url`.
    pub url: Cow<'a, str>,
    /// `page.referrer` (empty when absent).
    pub referrer: Cow<'a, str>,
    /// `page.title` (empty when absent).
    pub title: Cow<'a, str>,
    /// The `props` object as received, when present.
    pub props: Option<&'a str>,
}

impl EventView<'_> {
    /// The event as an owned [`Event`] (strings copied, `props` parsed into a map).
    pub fn to_event(&self) -> Result<Event, serde_json::Error> {
        let props = match self.props {
            Some(raw) => serde_json::from_str::<Map<String, Value>>(raw)?,
            None => Map::new(),
        };
        Ok(Event {
            id: self.id,
            ts: self.ts,
            kind: self.kind,
            name: self.name.as_deref().map(str::to_owned),
            page: PageContext {
                url: self.url.clone().into_owned(),
                referrer: self.referrer.clone().into_owned(),
                title: self.title.clone().into_owned(),
            },
            props,
        })
    }
}

impl BatchView<'_> {
    /// The event's time on the server's clock: its client time corrected by the batch's skew.
    pub fn event_time(&self, event: &EventView<'_>) -> u64 {
        event.ts.saturating_add_signed(self.skew_ms)
    }
}

/// One event as first read: a view, or why it is rejected (and its id, when it could be read).
type Slot<'a> = Result<EventView<'a>, (RejectReason, Option<EventId>, &'a str)>;

/// The header fields as they are found, in any order.
#[derive(Default)]
struct Fields<'a> {
    v: Option<u32>,
    site_key: Option<Cow<'a, str>>,
    anonymous_id: Option<Cow<'a, str>>,
    user_id: Option<Option<Cow<'a, str>>>,
    auth: Option<Option<Cow<'a, str>>>,
    session_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    sent_at: Option<u64>,
    resent: Option<bool>,
    events: Option<(Vec<Slot<'a>>, usize)>,
}

/// Parses and validates a batch received at `server_now` (ms since the epoch), in one pass.
pub fn parse_batch(body: &[u8], server_now: u64) -> Result<BatchView<'_>, BatchError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| BatchError::Malformed("the body is not UTF-8".to_owned()))?;
    let mut s = Scanner::new(text);
    let mut shape: Option<String> = None;
    let mut fields = Fields::default();
    read_top(&mut s, &mut fields, &mut shape).map_err(|e| BatchError::Malformed(e.to_string()))?;
    if let Some(problem) = shape {
        return Err(BatchError::Invalid(problem));
    }
    let missing = |name: &str| BatchError::Invalid(format!("missing field `{name}`"));
    let v = fields.v.ok_or_else(|| missing("v"))?;
    let site_key = fields.site_key.ok_or_else(|| missing("site_key"))?;
    let anonymous_id = fields.anonymous_id.ok_or_else(|| missing("anonymous_id"))?;
    let session_id = fields.session_id.ok_or_else(|| missing("session_id"))?;
    let seq = fields.seq.ok_or_else(|| missing("seq"))?;
    let sent_at = fields.sent_at.ok_or_else(|| missing("sent_at"))?;
    let (slots, count) = fields.events.ok_or_else(|| missing("events"))?;
    if v != PROTOCOL_VERSION {
        return Err(BatchError::UnsupportedVersion(v));
    }
    check_token("site_key", &site_key)?;
    check_token("anonymous_id", &anonymous_id)?;
    check_token("session_id", &session_id)?;
    let user_id = fields.user_id.flatten();
    if let Some(uid) = &user_id
        && (uid.is_empty() || uid.len() > MAX_USER_ID_LEN || uid.chars().any(char::is_control))
    {
        return Err(BatchError::Invalid(format!(
            "user_id must be 1 to {MAX_USER_ID_LEN} bytes without control characters"
        )));
    }
    let auth = fields.auth.flatten();
    if let Some(token) = &auth
        && (token.is_empty()
            || token.len() > MAX_AUTH_LEN
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=')))
    {
        return Err(BatchError::Invalid(format!(
            "auth must be a JWT of 1 to {MAX_AUTH_LEN} base64url characters and dots"
        )));
    }
    if count == 0 || count > MAX_EVENTS_PER_BATCH {
        return Err(BatchError::EventCount(count));
    }
    let skew_ms = clamp_i64(i128::from(server_now) - i128::from(sent_at));
    let mut batch = BatchView {
        header: HeaderView {
            v,
            site_key,
            anonymous_id,
            user_id,
            auth,
            session_id,
            seq,
            sent_at,
            resent: fields.resent.unwrap_or(false),
        },
        accepted: Vec::with_capacity(slots.len()),
        rejected: Vec::new(),
        skew_ms,
    };
    let (earliest, latest) = (
        server_now.saturating_sub(MAX_EVENT_AGE_MS),
        server_now.saturating_add(MAX_FUTURE_SKEW_MS),
    );
    for (index, slot) in slots.into_iter().enumerate() {
        let outcome = slot.and_then(|mut view| {
            view.time = view.ts.saturating_add_signed(skew_ms);
            if view.time > latest || view.time < earliest {
                return Err((RejectReason::TimestampOutOfRange, Some(view.id), view.raw));
            }
            // At most 100 events: a scan of those accepted beats hashing.
            if batch.accepted.iter().any(|e| e.id == view.id) {
                return Err((RejectReason::DuplicateId, Some(view.id), view.raw));
            }
            Ok(view)
        });
        match outcome {
            Ok(view) => batch.accepted.push(view),
            Err((reason, id, raw)) => batch.rejected.push((
                Rejection {
                    index: index as u32,
                    id: id.map(|i| i.to_string()),
                    reason,
                },
                raw,
            )),
        }
    }
    Ok(batch)
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn check_token(field: &str, value: &str) -> Result<(), BatchError> {
    if is_token(value) {
        Ok(())
    } else {
        Err(BatchError::Invalid(format!(
            "{field} must be 1 to {} characters of [A-Za-z0-9_-]",
            crate::MAX_TOKEN_LEN
        )))
    }
}

/// Notes the first problem with the shape of the batch; scanning goes on, so that a body that
/// is not JSON at all is told apart (malformed) from JSON of the wrong shape (invalid).
fn note(shape: &mut Option<String>, problem: impl FnOnce() -> String) {
    if shape.is_none() {
        *shape = Some(problem());
    }
}

fn read_top<'a>(
    s: &mut Scanner<'a>,
    f: &mut Fields<'a>,
    shape: &mut Option<String>,
) -> Result<(), Syntax> {
    let mut ws = 0;
    s.ws();
    if s.peek() != Some(b'{') {
        s.skip_value(0)?;
        note(shape, || "a batch is a JSON object".to_owned());
    } else if s.open(b'{', b'}', &mut ws)? {
        loop {
            let key = s.key(&mut ws)?;
            let duplicate = match key.as_ref() {
                "v" => {
                    let v = read_u64(s, shape, "v")?.and_then(|n| u32::try_from(n).ok());
                    if v.is_none() {
                        note(shape, || "`v` must be a small whole number".to_owned());
                    }
                    set(&mut f.v, v)
                }
                "site_key" => set(&mut f.site_key, read_str(s, shape, "site_key")?),
                "anonymous_id" => set(&mut f.anonymous_id, read_str(s, shape, "anonymous_id")?),
                "session_id" => set(&mut f.session_id, read_str(s, shape, "session_id")?),
                "user_id" => {
                    let uid = if s.peek() == Some(b'n') {
                        s.skip_value(1)?;
                        Some(None)
                    } else {
                        read_str(s, shape, "user_id")?.map(Some)
                    };
                    set(&mut f.user_id, uid)
                }
                "auth" => {
                    let token = if s.peek() == Some(b'n') {
                        s.skip_value(1)?;
                        Some(None)
                    } else {
                        read_str(s, shape, "auth")?.map(Some)
                    };
                    set(&mut f.auth, token)
                }
                "seq" => set(&mut f.seq, read_u64(s, shape, "seq")?),
                "sent_at" => set(&mut f.sent_at, read_u64(s, shape, "sent_at")?),
                "resent" => set(&mut f.resent, read_bool(s, shape, "resent")?),
                "events" => {
                    if s.peek() == Some(b'[') {
                        set(&mut f.events, Some(read_events(s)?))
                    } else {
                        s.skip_value(1)?;
                        note(shape, || "`events` must be an array".to_owned());
                        false
                    }
                }
                other => {
                    s.skip_value(1)?;
                    let other = other.chars().take(64).collect::<String>();
                    note(shape, || format!("unknown field `{other}`"));
                    false
                }
            };
            if duplicate {
                let key = key.chars().take(64).collect::<String>();
                note(shape, || format!("duplicate field `{key}`"));
            }
            if !s.next_in(b'}', &mut ws)? {
                break;
            }
        }
    }
    s.ws();
    if !s.at_end() {
        return Err(s.fail("trailing characters after the batch"));
    }
    Ok(())
}

/// Stores a field's value; true when it was already there (a duplicate). A value of the wrong
/// type (`None`) is noted by the reader and stored as nothing.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let duplicate = slot.is_some();
    if let Some(value) = value {
        *slot = Some(value);
    }
    duplicate
}

fn read_u64(
    s: &mut Scanner<'_>,
    shape: &mut Option<String>,
    name: &str,
) -> Result<Option<u64>, Syntax> {
    let n = match s.peek() {
        Some(b'-' | b'0'..=b'9') => s.number()?.as_u64(),
        _ => {
            s.skip_value(1)?;
            None
        }
    };
    if n.is_none() {
        note(shape, || format!("`{name}` must be a whole number"));
    }
    Ok(n)
}

fn read_bool(
    s: &mut Scanner<'_>,
    shape: &mut Option<String>,
    name: &str,
) -> Result<Option<bool>, Syntax> {
    let start = s.pos();
    let literal = matches!(s.peek(), Some(b't' | b'f'));
    s.skip_value(1)?;
    let b = match s.since(start) {
        "true" if literal => Some(true),
        "false" if literal => Some(false),
        _ => None,
    };
    if b.is_none() {
        note(shape, || format!("`{name}` must be true or false"));
    }
    Ok(b)
}

fn read_str<'a>(
    s: &mut Scanner<'a>,
    shape: &mut Option<String>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, Syntax> {
    if s.peek() == Some(b'"') {
        return s.string().map(Some);
    }
    s.skip_value(1)?;
    note(shape, || format!("`{name}` must be a string"));
    Ok(None)
}

/// The events array (at `[`): every element up to the limit read into a slot, the rest only
/// checked and counted.
fn read_events<'a>(s: &mut Scanner<'a>) -> Result<(Vec<Slot<'a>>, usize), Syntax> {
    let mut ws = 0;
    let mut slots = Vec::new();
    let mut count = 0;
    if s.open(b'[', b']', &mut ws)? {
        loop {
            count += 1;
            if count <= MAX_EVENTS_PER_BATCH {
                slots.push(read_event(s)?);
            } else {
                s.skip_value(2)?;
            }
            if !s.next_in(b']', &mut ws)? {
                break;
            }
        }
    }
    Ok((slots, count))
}

/// The event fields as they are found.
#[derive(Default)]
struct EventFields<'a> {
    id: Option<EventId>,
    ts: Option<u64>,
    kind: Option<EventType>,
    name: Option<Option<Cow<'a, str>>>,
    page: Option<Page<'a>>,
    props: Option<(&'a str, usize, usize)>,
    bad: bool,
}

/// One event (its first byte at the scanner): a view, or why it is rejected.
fn read_event<'a>(s: &mut Scanner<'a>) -> Result<Slot<'a>, Syntax> {
    let start = s.pos();
    let mut e = EventFields::default();
    let mut ws = 0;
    if s.peek() != Some(b'{') {
        s.skip_value(2)?;
        e.bad = true;
    } else if s.open(b'{', b'}', &mut ws)? {
        loop {
            let key = s.key(&mut ws)?;
            let fresh = match key.as_ref() {
                "id" => {
                    let id = string_value(s, &mut e.bad)?.and_then(|t| EventId::parse_hex(&t));
                    put(&mut e.id, id, &mut e.bad)
                }
                "ts" => {
                    let ts = number_value(s, &mut e.bad)?.and_then(|n| n.as_u64());
                    put(&mut e.ts, ts, &mut e.bad)
                }
                "type" => {
                    let kind = string_value(s, &mut e.bad)?.and_then(|t| EventType::parse(&t));
                    put(&mut e.kind, kind, &mut e.bad)
                }
                "name" => {
                    let name = if s.peek() == Some(b'n') {
                        s.skip_value(3)?;
                        Some(None)
                    } else {
                        string_value(s, &mut e.bad)?.map(Some)
                    };
                    put(&mut e.name, name, &mut e.bad)
                }
                "page" => {
                    let page = read_page(s, &mut e.bad)?;
                    put(&mut e.page, page, &mut e.bad)
                }
                "props" => {
                    let props = if s.peek() == Some(b'{') {
                        let from = s.pos();
                        let stats = s.skip_value(3)?;
                        let raw = s.since(from);
                        Some((raw, stats.depth, raw.len() - stats.whitespace))
                    } else {
                        s.skip_value(3)?;
                        None
                    };
                    put(&mut e.props, props, &mut e.bad)
                }
                _ => {
                    s.skip_value(3)?;
                    false
                }
            };
            e.bad |= !fresh;
            if !s.next_in(b'}', &mut ws)? {
                break;
            }
        }
    }
    let raw = s.since(start);
    Ok(finish_event(e, raw))
}

/// Checks an event whose fields were all read.
fn finish_event<'a>(e: EventFields<'a>, raw: &'a str) -> Slot<'a> {
    let (
        Some(id),
        Some(ts),
        Some(kind),
        Some(Page {
            url,
            referrer,
            title,
        }),
        false,
    ) = (e.id, e.ts, e.kind, e.page, e.bad)
    else {
        return Err((RejectReason::InvalidEvent, None, raw));
    };
    let name = e.name.flatten();
    let (props, depth, size) = match e.props {
        Some((raw, depth, size)) => (Some(raw), depth, size),
        None => (None, 1, 2),
    };
    check_fields(kind, name.as_deref(), &url, &referrer, &title)
        .and_then(|()| check_props(depth, size))
        .map_err(|reason| (reason, Some(id), raw))?;
    Ok(EventView {
        raw,
        id,
        ts,
        time: ts,
        kind,
        name,
        url,
        referrer,
        title,
        props,
    })
}

/// Stores a member's value; false when the member is a duplicate or its value was not of the
/// right type (`None`).
fn put<T>(slot: &mut Option<T>, value: Option<T>, bad: &mut bool) -> bool {
    let fresh = slot.is_none();
    match value {
        Some(value) => *slot = Some(value),
        None => *bad = true,
    }
    fresh
}

fn string_value<'a>(s: &mut Scanner<'a>, bad: &mut bool) -> Result<Option<Cow<'a, str>>, Syntax> {
    if s.peek() == Some(b'"') {
        return s.string().map(Some);
    }
    s.skip_value(3)?;
    *bad = true;
    Ok(None)
}

fn number_value<'a>(s: &mut Scanner<'a>, bad: &mut bool) -> Result<Option<Number<'a>>, Syntax> {
    if let Some(b'-' | b'0'..=b'9') = s.peek() {
        return s.number().map(Some);
    }
    s.skip_value(3)?;
    *bad = true;
    Ok(None)
}

/// An event's `page`.
struct Page<'a> {
    url: Cow<'a, str>,
    referrer: Cow<'a, str>,
    title: Cow<'a, str>,
}

/// `page` (at its first byte): url (required), referrer and title; nothing else.
fn read_page<'a>(s: &mut Scanner<'a>, bad: &mut bool) -> Result<Option<Page<'a>>, Syntax> {
    if s.peek() != Some(b'{') {
        s.skip_value(3)?;
        return Ok(None);
    }
    let (mut url, mut referrer, mut title) = (None, None, None);
    let mut ws = 0;
    if s.open(b'{', b'}', &mut ws)? {
        loop {
            let key = s.key(&mut ws)?;
            let fresh = match key.as_ref() {
                "url" => put(&mut url, string_value(s, bad)?, bad),
                "referrer" => put(&mut referrer, string_value(s, bad)?, bad),
                "title" => put(&mut title, string_value(s, bad)?, bad),
                _ => {
                    s.skip_value(4)?;
                    false
                }
            };
            *bad |= !fresh;
            if !s.next_in(b'}', &mut ws)? {
                break;
            }
        }
    }
    Ok(url.map(|url| Page {
        url,
        referrer: referrer.unwrap_or(Cow::Borrowed("")),
        title: title.unwrap_or(Cow::Borrowed("")),
    }))
}

mod prop;
pub use prop::PropValue;

#[cfg(test)]
mod tests;
