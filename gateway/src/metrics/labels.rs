//! The labels of the registered series and the values they take.

use prometheus_client::encoding::EncodeLabelSet;

/// The statuses a request is counted under; any other is `other`. 499 is a client that closed
/// the connection or reset the stream before its body arrived.
const STATUSES: [(u16, &str); 17] = [
    (200, "200"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (431, "431"),
    (499, "499"),
    (500, "500"),
    (503, "503"),
];

/// What a batch's token can become, in `pulse_gateway_auth_total{result}`.
pub const AUTH_RESULTS: [&str; 11] = [
    "valid",
    "token_missing",
    "token_too_large",
    "token_malformed",
    "token_algorithm",
    "token_unknown_key",
    "token_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_audience",
    "token_claims",
];

/// Which part of the gateway answered a request: the `handler` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handler {
    /// `POST /v1/collect`: the tracker's batches.
    Collect,
    /// `POST /v1/decide`: publishers' servers asking for a decision.
    Decide,
    /// The Segment-compatible door (`/v1/batch`, `/v1/track`, ...).
    Segment,
    /// The tracker's files and the demo site.
    Static,
    /// `/healthz` and `/readyz`.
    Probe,
    /// `GET /metrics`.
    Metrics,
    /// The operations page.
    Ops,
    /// The admin API.
    Admin,
}

impl Handler {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collect => "collect",
            Self::Decide => "decide",
            Self::Segment => "segment",
            Self::Static => "static",
            Self::Probe => "probe",
            Self::Metrics => "metrics",
            Self::Ops => "ops",
            Self::Admin => "admin",
        }
    }

    /// The handler of a public listener's request for `path`.
    pub fn public(path: &str) -> Self {
        match path {
            "/v1/collect" => Self::Collect,
            "/v1/decide" => Self::Decide,
            "/healthz" | "/readyz" => Self::Probe,
            p if crate::segment::path_type(p).is_some() => Self::Segment,
            _ => Self::Static,
        }
    }

    /// The handler of an admin listener's request for `path`.
    pub fn admin(path: &str) -> Self {
        match path {
            "/metrics" => Self::Metrics,
            "/healthz" | "/readyz" => Self::Probe,
            p if p == "/ops" || p.starts_with("/ops/") => Self::Ops,
            _ => Self::Admin,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) handler: &'static str,
    pub(super) protocol: &'static str,
    pub(super) status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct HandlerLabel {
    pub(super) handler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LimitLabel {
    pub(super) limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabels {
    pub(super) action: &'static str,
    /// The rule that decided (`none` when no rule did: the default or a fallback).
    pub(super) rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ShadowLabels {
    pub(super) active: &'static str,
    pub(super) shadow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabel {
    pub(super) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
}

pub(super) fn status_label(status: u16) -> &'static str {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("other", |(_, l)| l)
}
