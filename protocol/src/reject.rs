//! Machine-readable reasons: per rejected event, and per refused request; and the answer bodies.

use alloc::string::String;
#[cfg(feature = "std")]
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

#[cfg(feature = "std")]
use crate::Decision;

/// Why one event of an otherwise good batch was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The event is not an object of the event shape (bad id, unknown type or field, wrong types).
    InvalidEvent,
    /// A URL, referrer or title is longer than its limit.
    FieldTooLong,
    /// A `custom` event without a name.
    MissingName,
    /// A name on a non-custom event, or a custom name with characters outside `[A-Za-z0-9_.:-]`.
    InvalidName,
    /// `props` is larger than its limit.
    PropsTooLarge,
    /// `props` nests deeper than its limit.
    PropsTooDeep,
    /// The corrected event time is too far in the future or too old.
    TimestampOutOfRange,
    /// Another event of the same batch has this id.
    DuplicateId,
}

impl RejectReason {
    /// Every reason, for metrics.
    pub const ALL: [Self; 8] = [
        Self::InvalidEvent,
        Self::FieldTooLong,
        Self::MissingName,
        Self::InvalidName,
        Self::PropsTooLarge,
        Self::PropsTooDeep,
        Self::TimestampOutOfRange,
        Self::DuplicateId,
    ];

    /// The snake_case code used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::FieldTooLong => "field_too_long",
            Self::MissingName => "missing_name",
            Self::InvalidName => "invalid_name",
            Self::PropsTooLarge => "props_too_large",
            Self::PropsTooDeep => "props_too_deep",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::DuplicateId => "duplicate_id",
        }
    }
}

/// One rejected event in an answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Rejection {
    /// Position of the event in the batch, from 0.
    pub index: u32,
    /// The event's id, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was rejected.
    pub reason: RejectReason,
}

/// Why a whole request was refused. Each code has one HTTP status.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not well-formed JSON.
    MalformedJson,
    /// 400: the JSON is not a valid batch.
    InvalidBatch,
    /// 400: the protocol version is not supported.
    UnsupportedVersion,
    /// 400: the batch's `site_key` differs from the `k` query parameter.
    SiteKeyMismatch,
    /// 413: more events than a batch may hold, or none (400 for none).
    TooManyEvents,
    /// 400: a batch with no events.
    EmptyBatch,
    /// 401: no site key was given.
    MissingSiteKey,
    /// 401: the site key is not configured.
    UnknownSiteKey,
    /// 403: the request's `Origin` is not allowed for the site.
    OriginNotAllowed,
    /// 413: the body as sent is larger than allowed.
    BodyTooLarge,
    /// 413: the body grows past its decompressed cap; decompression stopped there.
    DecodedTooLarge,
    /// 415: the body is neither zstd nor JSON (or a declared encoding is not supported).
    UnsupportedEncoding,
    /// 422: the body claims an encoding but cannot be decoded.
    UndecodableBody,
    /// 409: a compact body names a dictionary this gateway does not hold (an old one, or one
    /// never served); the client drops it and sends the same batch again without one.
    UnknownDictionary,
    /// 404: no such path.
    NotFound,
    /// 405: the method is not allowed on this path.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 429: a rate limit was exceeded; `limit` names which one and `Retry-After` says when.
    RateLimited,
    /// 401: the admin API was called without the right bearer token.
    Unauthorized,
    /// 400: a configuration change was refused (the old one stays).
    InvalidConfig,
    /// 400: a request to an API other than collect is not of the expected shape.
    InvalidRequest,
    /// 503: the store could not make the events durable in time; retry later.
    StoreUnavailable,
    /// 500: an unexpected server error.
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics.
    pub const ALL: [Self; 23] = [
        Self::MalformedJson,
        Self::InvalidBatch,
        Self::UnsupportedVersion,
        Self::SiteKeyMismatch,
        Self::TooManyEvents,
        Self::EmptyBatch,
        Self::MissingSiteKey,
        Self::UnknownSiteKey,
        Self::OriginNotAllowed,
        Self::BodyTooLarge,
        Self::DecodedTooLarge,
        Self::UnsupportedEncoding,
        Self::UndecodableBody,
        Self::UnknownDictionary,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::RateLimited,
        Self::Unauthorized,
        Self::InvalidConfig,
        Self::InvalidRequest,
        Self::StoreUnavailable,
        Self::Internal,
    ];

    /// The HTTP status code for this error.
    pub fn status(self) -> u16 {
        match self {
            Self::MalformedJson
            | Self::InvalidBatch
            | Self::UnsupportedVersion
            | Self::SiteKeyMismatch
            | Self::EmptyBatch
            | Self::InvalidConfig
            | Self::InvalidRequest => 400,
            Self::MissingSiteKey | Self::UnknownSiteKey | Self::Unauthorized => 401,
            Self::OriginNotAllowed => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::UnknownDictionary => 409,
            Self::TooManyEvents | Self::BodyTooLarge | Self::DecodedTooLarge => 413,
            Self::UnsupportedEncoding => 415,
            Self::UndecodableBody => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::StoreUnavailable => 503,
        }
    }

    /// True when the client should retry the same batch later (it will be accepted then).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::StoreUnavailable | Self::Internal | Self::RequestTimeout | Self::RateLimited
        )
    }

    /// The snake_case code used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidBatch => "invalid_batch",
            Self::UnsupportedVersion => "unsupported_version",
            Self::SiteKeyMismatch => "site_key_mismatch",
            Self::TooManyEvents => "too_many_events",
            Self::EmptyBatch => "empty_batch",
            Self::MissingSiteKey => "missing_site_key",
            Self::UnknownSiteKey => "unknown_site_key",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::DecodedTooLarge => "decoded_too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::UndecodableBody => "undecodable_body",
            Self::UnknownDictionary => "unknown_dictionary",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::InvalidConfig => "invalid_config",
            Self::InvalidRequest => "invalid_request",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal",
        }
    }
}

/// The rate limits, as named in a `rate_limited` answer (and in the gateway's configuration
/// and metrics).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimit {
    /// Requests per second from one client address.
    IpRequests,
    /// Events per second for one site.
    SiteEvents,
    /// Body bytes per second for one site (and the bytes its dead letters take in the store).
    SiteBytes,
    /// Requests per second to the whole gateway.
    GlobalRequests,
}

impl RateLimit {
    /// Every limit.
    pub const ALL: [Self; 4] = [
        Self::IpRequests,
        Self::SiteEvents,
        Self::SiteBytes,
        Self::GlobalRequests,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IpRequests => "ip_requests",
            Self::SiteEvents => "site_events",
            Self::SiteBytes => "site_bytes",
            Self::GlobalRequests => "global_requests",
        }
    }
}

/// The body of every refused request: `{"error":{"code":…,"message":…}}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The code and a human-readable, safe message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation; never contains internal details.
    pub message: String,
    /// For `rate_limited`: which limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<RateLimit>,
}

impl ErrorBody {
    /// An error body with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                limit: None,
            },
        }
    }
}

/// The answer to an accepted batch (HTTP 200).
#[cfg(feature = "std")]
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct CollectResponse {
    /// How many events were accepted and are durable.
    pub accepted: u32,
    /// The events that were rejected, each with its reason.
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    /// The decision for the reader, counting this batch.
    pub decision: Decision,
    /// The decision signed by the gateway (a JWT, `EdDSA`), for the publisher's own server to
    /// enforce; absent when the site does not sign decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
    /// What became of the batch's `auth` token, on sites that have token keys: `valid`, or why
    /// it vouched for nothing (`token_expired`, `token_signature`, ..., `token_missing` when a
    /// user id came without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The site's current dictionary for compact bodies (8 hex digits: its hash), when the
    /// batch was not compressed with it: fetch it from `/v1/dictionary/<hash>?k=KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<String>,
}
