//! The 128-bit event id, written on the wire as 32 lowercase hex digits; and the rule for
//! tokens (site keys, anonymous and session ids).

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::MAX_TOKEN_LEN;

/// A client-generated 128-bit random event id. Consumers dedupe by it, so a retried batch never
/// counts twice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventId(pub u128);

/// Why a string is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is exactly 32 lowercase hex digits")]
pub struct ParseIdError;

/// The value of a lowercase hex digit (the wire writes ids and dictionary names in them).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl EventId {
    /// Builds an id from 16 random bytes (big-endian).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// The id as 16 big-endian bytes, the form used in store keys.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Reads the wire form: exactly 32 lowercase hex digits.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let bytes: &[u8; 32] = text.as_bytes().try_into().ok()?;
        let mut n = 0u128;
        for &b in bytes {
            n = (n << 4) | u128::from(hex_digit(b)?);
        }
        Some(Self(n))
    }

    /// The wire form, 32 lowercase hex digits, without going through `fmt`.
    pub fn hex(self) -> HexId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 4 * (31 - i);
            *slot = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        HexId(out)
    }
}

/// An event id in its wire form (see [`EventId::hex`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HexId([u8; 32]);

impl HexId {
    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl FromStr for EventId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_hex(s).ok_or(ParseIdError)
    }
}

/// Whether `value` is a token: a site key, anonymous id or session id, 1 to [`MAX_TOKEN_LEN`]
/// characters of `[A-Za-z0-9_-]`.
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_wrong_shapes() {
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"0".repeat(31),
            &"0".repeat(33),
            &"g".repeat(32),
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(ParseIdError), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(n in any::<u128>()) {
            let id = EventId(n);
            let text = id.to_string();
            prop_assert_eq!(text.len(), 32);
            prop_assert_eq!(&text, &format!("{n:032x}"));
            prop_assert_eq!(text.parse::<EventId>(), Ok(id));
            prop_assert_eq!(EventId::from_bytes(id.to_bytes()), id);
        }
    }
}
