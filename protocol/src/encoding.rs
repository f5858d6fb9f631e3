//! How a request body is encoded. A browser's CORS simple request cannot set
//! `Content-Encoding`, so the body's first bytes decide; a header, when sent, must agree.

/// The zstd frame magic number, as it starts every zstd body.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The gzip member magic number.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
pub use crate::compact::COMPACT_MAGIC;

/// A body's encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Encoding {
    /// One or more zstd frames.
    Zstd,
    /// One or more gzip members.
    Gzip,
    /// The compact binary record, DEFLATE-compressed ([`crate::compact`]). Never named in a
    /// `Content-Encoding` header.
    Compact,
    /// Plain JSON text.
    Json,
}

impl Encoding {
    /// The encoding a body's first bytes show: zstd and gzip by their magic numbers, JSON by a
    /// `{` after optional whitespace.
    pub fn sniff(body: &[u8]) -> Option<Self> {
        if body.starts_with(&ZSTD_MAGIC) {
            Some(Self::Zstd)
        } else if body.starts_with(&GZIP_MAGIC) {
            Some(Self::Gzip)
        } else if body.starts_with(&COMPACT_MAGIC) {
            Some(Self::Compact)
        } else if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The encoding a `Content-Encoding` value names: `Ok(None)` for none (`identity` or
    /// empty), `Err(())` for one this protocol does not use. Case-insensitive.
    #[allow(clippy::result_unit_err)]
    pub fn from_header(value: &str) -> Result<Option<Self>, ()> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("identity") {
            Ok(None)
        } else if value.eq_ignore_ascii_case("zstd") {
            Ok(Some(Self::Zstd))
        } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Ok(Some(Self::Gzip))
        } else {
            Err(())
        }
    }

    /// `zstd`, `gzip`, `compact` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Compact => "compact",
            Self::Json => "json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_and_reads_headers() {
        assert_eq!(
            Encoding::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Encoding::Zstd)
        );
        assert_eq!(Encoding::sniff(&[0x1f, 0x8b, 8]), Some(Encoding::Gzip));
        assert_eq!(Encoding::sniff(b"pz1\0"), Some(Encoding::Compact));
        assert_eq!(Encoding::sniff(b"pz2"), None);
        assert_eq!(Encoding::sniff(b" \n{}"), Some(Encoding::Json));
        assert_eq!(Encoding::sniff(b"[]"), None);
        assert_eq!(Encoding::sniff(b""), None);
        assert_eq!(Encoding::from_header("ZSTD"), Ok(Some(Encoding::Zstd)));
        assert_eq!(Encoding::from_header(" x-gzip "), Ok(Some(Encoding::Gzip)));
        assert_eq!(Encoding::from_header("identity"), Ok(None));
        assert_eq!(Encoding::from_header("br"), Err(()));
    }
}
