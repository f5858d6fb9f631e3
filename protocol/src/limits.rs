//! The limits every client must respect and every server enforces. `PROTOCOL.md` lists them too.

/// Most events in one batch. A larger batch is refused whole (`too_many_events`).
pub const MAX_EVENTS_PER_BATCH: usize = 100;
/// Longest site key, anonymous id or session id, in bytes (`[A-Za-z0-9_-]` only).
pub const MAX_TOKEN_LEN: usize = 64;
/// Longest user id, in bytes of UTF-8.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest `auth` token (a JWT signed by the publisher) in a batch header, bytes.
pub const MAX_AUTH_LEN: usize = 4096;
/// Longest page URL or referrer, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Longest page title, in bytes.
pub const MAX_TITLE_LEN: usize = 512;
/// Longest custom event name, in bytes (`[A-Za-z0-9_.:-]` only).
pub const MAX_NAME_LEN: usize = 128;
/// Largest `props` object of one event, serialized as compact JSON, in bytes.
pub const MAX_PROPS_BYTES: usize = 4096;
/// Deepest nesting of `props` (the object itself is depth 1).
pub const MAX_PROPS_DEPTH: usize = 4;
/// Deepest nesting of a whole batch document; deeper input is malformed.
pub const MAX_JSON_DEPTH: usize = 16;
/// How far in the future (after clock-skew correction) an event time may lie, in milliseconds.
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;
/// How old an event may be when it arrives (late events within this bound are accepted), in
/// milliseconds: 35 days.
pub const MAX_EVENT_AGE_MS: u64 = 35 * 24 * 60 * 60 * 1000;
/// Default cap on a request body as sent (compressed), in bytes. Servers may configure another.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on a request body after decompression, in bytes. Servers may configure another.
pub const DEFAULT_MAX_DECODED_BYTES: usize = 512 * 1024;
