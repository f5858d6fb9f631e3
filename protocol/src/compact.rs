//! The compact body: a batch as a small binary record, compressed with raw DEFLATE (RFC 1951),
//! optionally against a preset dictionary. About half of what gzip'd JSON costs per event (see
//! BENCH.md, "Bytes on the wire"), and encoded with little code in the browser.
//!
//! ```text
//! body    = "pz1" 0 deflate(record)                 no dictionary
//!         | "pz1" 1 hash:u32le deflate(record)      against the dictionary whose hash that is
//! record  = sent_at:u64le v seq flags:u8 site_key:str anonymous_id:tok session_id:tok
//!           [user_id:str (flags & 1)] [auth:str (flags & 2)] n events{n}
//! flags   = 1 has a user id | 2 has auth | 4 resent (sent before: a retry or a parked batch)
//!           | 8 layout 2 (below; what encoders write since it came, readers read both)
//! event   = head:u8 [id] ts [name:str (head & 8)]
//!           [url:str referrer:ref title:str (unless head & 16)] [props:str (head & 32)]
//! head    = kind (0 page_view, 1 engagement, 2 click, 3 identify, 4 custom)
//!           | 8 has a name | 16 same page as the event before | 32 has props
//!           | 64 id is the id before plus one
//!           | 128 id is the session id plus the u64 that follows
//! id      = nothing (head & 64) | u64le (head & 128) | 16 bytes, big-endian
//! ts      = the first event's time; later ones the zigzag difference to the one before
//! ref     = str
//! str     = len bytes (UTF-8)
//! tok     = 0 + 16 bytes (32 lowercase hex digits) | len+1 bytes (any other text)
//! integers (v, seq, n, len, ts) are LEB128 varints
//!
//! layout 2 (flags & 8) differs in ids and referrers, the bytes a page change costs:
//! id      = nothing (head & 64 only) | offset:u48le (head & 128 only: the session id plus
//!           offset << 16, a tracker's first id of a page) | u64le (head & 192: the session
//!           id plus it) | 16 bytes, big-endian (neither)
//! ref     = 0 (the url of the event before's page) | len+1 bytes
//! ```
//!
//! `sent_at` sits first, at a fixed place, so a client restamps a retry without re-encoding.
//! `props` is the event's properties as JSON object text, as the client got it. Pure: bytes in,
//! bytes out; the gateway turns a compact body into the batch's JSON ([`decode_body`]).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{BatchHeader, EventId, EventType, PageContext, WireBatch, WireEvent};

mod deflate;
#[cfg(feature = "std")]
mod train;
pub use deflate::deflate;
#[cfg(feature = "std")]
pub use train::{MAX_MIN_READERS, train_dictionary};

/// The record's flag of layout 2 (module docs): six-byte ids of a page's first event,
/// one-byte referrers to the page before.
const LAYOUT_2: u8 = 8;

/// The first bytes of a compact body.
pub const COMPACT_MAGIC: [u8; 3] = *b"pz1";

/// Why a compact body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The body names a dictionary this server does not hold (by its hash).
    #[error("unknown dictionary {0:08x}")]
    UnknownDictionary(u32),
    /// The DEFLATE stream is corrupt or cut short.
    #[error("the compressed stream is corrupt or cut short")]
    Deflate,
    /// The record inflates to more than the cap.
    #[error("the record is larger than {0} bytes")]
    TooLarge(usize),
    /// The record is cut short or does not have the record's shape.
    #[error("the record is malformed: {0}")]
    Malformed(&'static str),
}

const KINDS: [EventType; 5] = [
    EventType::PageView,
    EventType::Engagement,
    EventType::Click,
    EventType::Identify,
    EventType::Custom,
];

fn kind_code(kind: EventType) -> u8 {
    match kind {
        EventType::PageView => 0,
        EventType::Engagement => 1,
        EventType::Click => 2,
        EventType::Identify => 3,
        EventType::Custom => 4,
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_token(out: &mut Vec<u8>, s: &str) {
    match EventId::parse_hex(s) {
        Some(id) => {
            out.push(0);
            out.extend_from_slice(&id.to_bytes());
        }
        None => put_token_text(out, s),
    }
}

/// A text after its length plus one (a zero byte means something else to the reader).
fn put_token_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64 + 1);
    out.extend_from_slice(s.as_bytes());
}

/// The record of a batch (uncompressed).
pub fn encode_record(batch: &WireBatch) -> Vec<u8> {
    let h = &batch.header;
    let mut out = Vec::with_capacity(64 + 200 * batch.events.len());
    out.extend_from_slice(&h.sent_at.to_le_bytes());
    put_varint(&mut out, u64::from(h.v));
    put_varint(&mut out, h.seq);
    out.push(
        u8::from(h.user_id.is_some())
            | u8::from(h.auth.is_some()) << 1
            | u8::from(h.resent) << 2
            | LAYOUT_2,
    );
    put_str(&mut out, &h.site_key);
    put_token(&mut out, &h.anonymous_id);
    put_token(&mut out, &h.session_id);
    for s in [&h.user_id, &h.auth].into_iter().flatten() {
        put_str(&mut out, s);
    }
    put_varint(&mut out, batch.events.len() as u64);
    // A tracker numbers a page's events from the session id plus a random 48-bit offset: such
    // an id costs 8 bytes, not 16.
    let session = EventId::parse_hex(&h.session_id).map(|s| s.0);
    let mut before: Option<&WireEvent> = None;
    for e in &batch.events {
        let same_page = before.is_some_and(|b| b.page == e.page);
        let next_id = before.is_some_and(|b| b.id.0.wrapping_add(1) == e.id.0);
        let offset = session
            .map(|s| e.id.0.wrapping_sub(s))
            .filter(|d| *d >> 64 == 0 && !next_id);
        let has_props = !e.props.is_empty() && e.props != "{}";
        // A tracker's first id of a page is the session id plus 48 random bits above the low
        // 16: six bytes.
        let short = offset.filter(|d| d & 0xffff == 0);
        out.push(
            kind_code(e.kind)
                | u8::from(e.name.is_some()) << 3
                | u8::from(same_page) << 4
                | u8::from(has_props) << 5
                | u8::from(next_id || offset.is_some() && short.is_none()) << 6
                | u8::from(offset.is_some()) << 7,
        );
        match offset {
            Some(d) if short.is_some() => out.extend_from_slice(&(d as u64).to_le_bytes()[2..]),
            Some(d) => out.extend_from_slice(&(d as u64).to_le_bytes()),
            None if !next_id => out.extend_from_slice(&e.id.to_bytes()),
            None => {}
        }
        match before {
            None => put_varint(&mut out, e.ts),
            Some(b) => {
                let d = e.ts.wrapping_sub(b.ts) as i64;
                put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
            }
        }
        if let Some(name) = &e.name {
            put_str(&mut out, name);
        }
        if !same_page {
            put_str(&mut out, &e.page.url);
            // Mostly the page before: one byte then.
            match before {
                Some(b) if b.page.url == e.page.referrer => out.push(0),
                _ => put_token_text(&mut out, &e.page.referrer),
            }
            put_str(&mut out, &e.page.title);
        }
        if has_props {
            put_str(&mut out, &e.props);
        }
        before = Some(e);
    }
    out
}

/// Sets the `sent_at` of an encoded record (a retry's new send time).
pub fn restamp_record(record: &mut [u8], sent_at: u64) {
    if let Some(head) = record.get_mut(..8) {
        head.copy_from_slice(&sent_at.to_le_bytes());
    }
}

/// Marks an encoded record as resent (its flags' bit 4): a batch sent before, sent again as
/// it was encoded (a parked batch of an earlier page). A record too short changes nothing.
pub fn mark_resent(record: &mut [u8]) {
    // The flags follow sent_at (8 bytes) and two varints (v, seq).
    let mut at = 8;
    for _ in 0..2 {
        while record.get(at).is_some_and(|b| b & 0x80 != 0) {
            at += 1;
        }
        at += 1;
    }
    if let Some(flags) = record.get_mut(at) {
        *flags |= 4;
    }
}

/// The body of a record: [`COMPACT_MAGIC`], then `0` and the record compressed, or `1`, the
/// dictionary's hash ([`dictionary_hash`]) and the record compressed against the dictionary.
pub fn encode_body(record: &[u8], dictionary: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut body = COMPACT_MAGIC.to_vec();
    match dictionary {
        Some((hash, bytes)) => {
            body.push(1);
            body.extend_from_slice(&hash.to_le_bytes());
            deflate(record, bytes, &mut body);
        }
        None => {
            body.push(0);
            deflate(record, &[], &mut body);
        }
    }
    body
}

/// A dictionary's name in a URL, an answer or the tracker's storage: its hash as 8 lowercase
/// hex digits.
pub fn parse_dictionary_name(name: &[u8]) -> Option<u32> {
    if name.len() != 8 {
        return None;
    }
    name.iter().try_fold(0u32, |hash, &b| {
        Some(hash << 4 | u32::from(crate::hex_digit(b)?))
    })
}

/// What names a dictionary in a body (FNV-1a, 32 bits, of its bytes): a gateway holds every
/// dictionary it served by this, so no two gateways can give one name two meanings.
pub fn dictionary_hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Reads records.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CompactError> {
        if self.0.len() < n {
            return Err(CompactError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, CompactError> {
        Ok(self.bytes(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, CompactError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(CompactError::Malformed("varint too long"))
    }

    fn str(&mut self) -> Result<String, CompactError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CompactError::Malformed("length"))?;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CompactError::Malformed("not UTF-8"))
    }

    fn token(&mut self) -> Result<String, CompactError> {
        match self.varint()? {
            0 => Ok(self.id()?.hex().as_str().to_owned()),
            n => {
                let len = usize::try_from(n - 1).map_err(|_| CompactError::Malformed("length"))?;
                String::from_utf8(self.bytes(len)?.to_vec())
                    .map_err(|_| CompactError::Malformed("not UTF-8"))
            }
        }
    }

    fn id(&mut self) -> Result<EventId, CompactError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.bytes(16)?);
        Ok(EventId::from_bytes(id))
    }
}

/// Reads a record written by [`encode_record`].
pub fn decode_record(record: &[u8]) -> Result<WireBatch, CompactError> {
    let mut c = Cursor(record);
    let mut sent_at = [0u8; 8];
    sent_at.copy_from_slice(c.bytes(8)?);
    let v = u32::try_from(c.varint()?).map_err(|_| CompactError::Malformed("version"))?;
    let seq = c.varint()?;
    let flags = c.byte()?;
    let layout_2 = flags & LAYOUT_2 != 0;
    let site_key = c.str()?;
    let anonymous_id = c.token()?;
    let session_id = c.token()?;
    let user_id = if flags & 1 != 0 { Some(c.str()?) } else { None };
    let auth = if flags & 2 != 0 { Some(c.str()?) } else { None };
    let session = EventId::parse_hex(&session_id).map(|s| s.0);
    let n = c.varint()?;
    // Every event takes at least two bytes: a count beyond that is a lie, not an allocation.
    if n > record.len() as u64 / 2 {
        return Err(CompactError::Malformed("event count"));
    }
    let mut events: Vec<WireEvent> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let head = c.byte()?;
        let kind = *KINDS
            .get(usize::from(head & 7))
            .ok_or(CompactError::Malformed("event type"))?;
        let before = events.last();
        // The bytes of an offset from the session id that follow: the offset's high 6 of 8
        // (layout 2, a page's first id) or all 8.
        let offset_len = match head & 192 {
            192 if layout_2 => 8,
            128 if layout_2 => 6,
            128 => 8,
            _ => 0,
        };
        let id = match before {
            _ if offset_len > 0 => {
                let s = session.ok_or(CompactError::Malformed("no session id to add to"))?;
                let mut d = [0u8; 8];
                d[8 - offset_len..].copy_from_slice(c.bytes(offset_len)?);
                EventId(s.wrapping_add(u128::from(u64::from_le_bytes(d))))
            }
            Some(b) if head & 64 != 0 => EventId(b.id.0.wrapping_add(1)),
            _ if head & 64 != 0 => return Err(CompactError::Malformed("no id before")),
            _ => c.id()?,
        };
        let ts = match before {
            None => c.varint()?,
            Some(b) => {
                let z = c.varint()?;
                let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
                b.ts.wrapping_add(d as u64)
            }
        };
        let name = if head & 8 != 0 { Some(c.str()?) } else { None };
        let page = match before {
            Some(b) if head & 16 != 0 => b.page.clone(),
            _ if head & 16 != 0 => return Err(CompactError::Malformed("no page before")),
            _ => {
                let url = c.str()?;
                let referrer = if !layout_2 {
                    c.str()?
                } else if c.0.first() == Some(&0) {
                    c.byte()?;
                    let b = before.ok_or(CompactError::Malformed("no page before"))?;
                    b.page.url.clone()
                } else {
                    c.token()?
                };
                PageContext {
                    url,
                    referrer,
                    title: c.str()?,
                }
            }
        };
        let props = if head & 32 != 0 {
            c.str()?
        } else {
            String::new()
        };
        events.push(WireEvent {
            id,
            ts,
            kind,
            name,
            page,
            props,
        });
    }
    if !c.0.is_empty() {
        return Err(CompactError::Malformed("bytes after the last event"));
    }
    Ok(WireBatch {
        header: BatchHeader {
            v,
            site_key,
            anonymous_id,
            user_id,
            auth,
            session_id,
            seq,
            sent_at: u64::from_le_bytes(sent_at),
            resent: flags & 4 != 0,
        },
        events,
    })
}

/// Which dictionary a compact body names: `Some(None)` for none, `None` when `body` is not a
/// compact body.
pub fn body_dictionary(body: &[u8]) -> Option<Option<u32>> {
    match body.strip_prefix(&COMPACT_MAGIC)? {
        [0, ..] => Some(None),
        [1, a, b, c, d, ..] => Some(Some(u32::from_le_bytes([*a, *b, *c, *d]))),
        _ => None,
    }
}

/// For a reader of bodies that holds no dictionary: every body naming one is refused.
pub fn no_dictionary(_hash: u32) -> Option<&'static [u8]> {
    None
}

/// Inflates a compact body's record: at most `cap` bytes, against the dictionary it names
/// (`dictionary` answers which bytes a hash stands for, once, when the body names one).
#[cfg(feature = "std")]
pub fn inflate_body<D: AsRef<[u8]>>(
    body: &[u8],
    cap: usize,
    dictionary: impl FnOnce(u32) -> Option<D>,
) -> Result<Vec<u8>, CompactError> {
    use miniz_oxide::inflate::core::DecompressorOxide;

    let rest = body
        .strip_prefix(&COMPACT_MAGIC)
        .ok_or(CompactError::Malformed("no magic"))?;
    let (held, stream) = match rest {
        [0, stream @ ..] => (None, stream),
        [1, a, b, c, d, stream @ ..] => {
            let hash = u32::from_le_bytes([*a, *b, *c, *d]);
            let dict = dictionary(hash).ok_or(CompactError::UnknownDictionary(hash))?;
            (Some(dict), stream)
        }
        _ => return Err(CompactError::Malformed("dictionary")),
    };
    let dict = held.as_ref().map_or(&[][..], AsRef::as_ref);
    // The dictionary first: back references reach into it as into earlier output. The buffer
    // grows as the record needs it, up to one byte more than the cap (which tells a record at
    // the cap from one beyond it): a small body costs a small buffer.
    let limit = dict.len() + cap + 1;
    let mut out = dict.to_vec();
    out.resize((dict.len() + 4096).min(limit), 0);
    // One decompressor a thread, reset for each body: building one zeroes its tables, which
    // cost as much as inflating a small record.
    thread_local! {
        static STATE: std::cell::RefCell<Box<DecompressorOxide>> = std::cell::RefCell::default();
    }
    STATE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut state) => {
            state.init();
            inflate_into(&mut state, stream, &mut out, dict.len(), limit, cap)
        }
        Err(_) => inflate_into(
            &mut DecompressorOxide::new(),
            stream,
            &mut out,
            dict.len(),
            limit,
            cap,
        ),
    })?;
    out.drain(..dict.len());
    Ok(out)
}

/// Inflates `stream` into `out` after its first `start` bytes (the dictionary), growing it up
/// to `limit` bytes; leaves `out` holding exactly the dictionary and the record.
#[cfg(feature = "std")]
fn inflate_into(
    state: &mut miniz_oxide::inflate::core::DecompressorOxide,
    stream: &[u8],
    out: &mut Vec<u8>,
    start: usize,
    limit: usize,
    cap: usize,
) -> Result<(), CompactError> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{decompress, inflate_flags};

    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (mut at, mut input) = (start, stream);
    loop {
        let (status, read, written) = decompress(state, input, out, at, flags);
        input = &input[read..];
        at += written;
        match status {
            TINFLStatus::Done if !input.is_empty() => return Err(CompactError::Deflate),
            TINFLStatus::Done if at - start > cap => return Err(CompactError::TooLarge(cap)),
            TINFLStatus::Done => break,
            TINFLStatus::HasMoreOutput if out.len() >= limit => {
                return Err(CompactError::TooLarge(cap));
            }
            TINFLStatus::HasMoreOutput => out.resize((out.len() * 2).min(limit), 0),
            _ => return Err(CompactError::Deflate),
        }
    }
    out.truncate(at);
    Ok(())
}

/// A compact body as the batch's JSON text, at most `cap` bytes of record.
#[cfg(feature = "std")]
pub fn decode_body<D: AsRef<[u8]>>(
    body: &[u8],
    cap: usize,
    dictionary: impl FnOnce(u32) -> Option<D>,
) -> Result<String, CompactError> {
    let record = inflate_body(body, cap, dictionary)?;
    let json = decode_record(&record)?.to_json();
    if json.len() > cap {
        return Err(CompactError::TooLarge(cap));
    }
    Ok(json)
}

#[cfg(test)]
mod tests;
