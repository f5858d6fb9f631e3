//! Answer checking: is an answer to a batch of `n` events what the protocol promises? Pure:
//! status and body bytes in, a verdict out.

use pulse_protocol::{CollectResponse, ErrorBody};

/// The reason given to a 200 whose body is not a full `CollectResponse` for the batch sent.
pub const BAD_ANSWER: &str = "bad_answer";

/// Why an answer does not count as a success: a stable reason (the gateway's JSON error code,
/// `bad_answer`, or `http_<status>` when an error body has no readable code).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// The reason code.
    pub reason: String,
}

/// Checks the answer to a batch of `events` events. A 200 must parse as a
/// [`CollectResponse`] (which carries a decision) that accepted every event and rejected none;
/// anything else is a [`Failure`] with its reason. On success, returns the accepted count.
pub fn check_answer(status: u16, body: &[u8], events: usize) -> Result<u32, Failure> {
    if status == 200 {
        return match serde_json::from_slice::<CollectResponse>(body) {
            Ok(answer) if answer.accepted as usize == events && answer.rejected.is_empty() => {
                Ok(answer.accepted)
            }
            _ => Err(Failure {
                status,
                reason: BAD_ANSWER.to_owned(),
            }),
        };
    }
    let reason = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error.code.as_str().to_owned(),
        Err(_) => format!("http_{status}"),
    };
    Err(Failure { status, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"accepted":3,"rejected":[],"decision":{"action":"meter","remaining":2,
        "limit":3,"reason":"metered","fallback":false,"version":"meter-v1:3/30d"}}"#;

    #[test]
    fn a_good_answer_passes() {
        assert_eq!(check_answer(200, GOOD.as_bytes(), 3), Ok(3));
    }

    #[test]
    fn a_200_that_is_not_a_full_answer_is_bad() {
        let bad = |body: &str, n| check_answer(200, body.as_bytes(), n).unwrap_err().reason;
        // No decision.
        assert_eq!(bad(r#"{"accepted":3,"rejected":[]}"#, 3), BAD_ANSWER);
        // Fewer accepted than sent.
        assert_eq!(bad(GOOD, 4), BAD_ANSWER);
        // An event rejected.
        let rejected = GOOD.replace(
            r#""rejected":[]"#,
            r#""rejected":[{"index":0,"reason":"missing_name"}]"#,
        );
        assert_eq!(bad(&rejected, 3), BAD_ANSWER);
        assert_eq!(bad("not json", 3), BAD_ANSWER);
    }

    #[test]
    fn error_bodies_give_their_code() {
        let body = br#"{"error":{"code":"store_unavailable","message":"retry"}}"#;
        assert_eq!(
            check_answer(503, body, 1),
            Err(Failure {
                status: 503,
                reason: "store_unavailable".into()
            })
        );
        assert_eq!(
            check_answer(502, b"<html>", 1).unwrap_err().reason,
            "http_502"
        );
    }
}
