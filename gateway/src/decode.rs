//! Turns a request body into JSON bytes: zstd or gzip (recognised by their magic bytes, since a
//! CORS simple request cannot set `Content-Encoding`) or plain JSON, with a hard cap on the
//! decompressed size. Pure: bytes in, bytes out.

use std::io::Read;

use pulse_protocol::ErrorCode;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Largest zstd window accepted (2^22 = 4 MiB), so a frame cannot ask for unbounded memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 22;

/// How a body is encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Encoding {
    /// A zstd frame.
    Zstd,
    /// A gzip member.
    Gzip,
    /// Plain JSON text.
    Json,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decompressed body grows past the cap; decompression stopped at the cap.
    #[error("the decompressed body is larger than {0} bytes")]
    TooLarge(usize),
    /// Neither zstd, gzip nor JSON, or a `Content-Encoding` this server does not decode.
    #[error("unsupported encoding: {0}")]
    Unsupported(String),
    /// The body claims an encoding but is corrupt.
    #[error("the {0:?} body cannot be decoded")]
    Corrupt(Encoding),
}

impl DecodeError {
    /// The error code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::DecodedTooLarge,
            Self::Unsupported(_) => ErrorCode::UnsupportedEncoding,
            Self::Corrupt(_) => ErrorCode::UndecodableBody,
        }
    }
}

/// Recognises the encoding from the body's first bytes and the `Content-Encoding` header.
pub fn sniff(body: &[u8], content_encoding: Option<&str>) -> Result<Encoding, DecodeError> {
    let sniffed = if body.starts_with(&ZSTD_MAGIC) {
        Some(Encoding::Zstd)
    } else if body.starts_with(&GZIP_MAGIC) {
        Some(Encoding::Gzip)
    } else if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Some(Encoding::Json)
    } else {
        None
    };
    let declared = match content_encoding.map(|v| v.trim().to_ascii_lowercase()) {
        None => None,
        Some(v) if v.is_empty() || v == "identity" => None,
        Some(v) if v == "zstd" => Some(Encoding::Zstd),
        Some(v) if v == "gzip" || v == "x-gzip" => Some(Encoding::Gzip),
        Some(v) => return Err(DecodeError::Unsupported(format!("Content-Encoding {v}"))),
    };
    match (declared, sniffed) {
        (Some(d), Some(s)) if d != s => Err(DecodeError::Corrupt(d)),
        (Some(d), None) => Err(DecodeError::Corrupt(d)),
        (_, Some(s)) => Ok(s),
        (None, None) => Err(DecodeError::Unsupported(
            "the body is neither zstd, gzip nor JSON".into(),
        )),
    }
}

/// Decodes a body into at most `cap` bytes of JSON text.
pub fn decode(
    body: &[u8],
    content_encoding: Option<&str>,
    cap: usize,
) -> Result<Vec<u8>, DecodeError> {
    match sniff(body, content_encoding)? {
        Encoding::Json if body.len() > cap => Err(DecodeError::TooLarge(cap)),
        Encoding::Json => Ok(body.to_vec()),
        Encoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|_| DecodeError::Corrupt(Encoding::Zstd))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|_| DecodeError::Corrupt(Encoding::Zstd))?;
            read_capped(decoder, cap, Encoding::Zstd)
        }
        Encoding::Gzip => read_capped(flate2::read::GzDecoder::new(body), cap, Encoding::Gzip),
    }
}

/// Reads at most `cap + 1` bytes: one more than allowed tells "too large" without going further.
fn read_capped(reader: impl Read, cap: usize, encoding: Encoding) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(cap.min(64 * 1024));
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt(encoding))?;
    if out.len() > cap {
        Err(DecodeError::TooLarge(cap))
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_each_encoding() {
        let json = br#"{"v":1}"#;
        assert_eq!(decode(json, None, 100).unwrap(), json);
        assert_eq!(decode(&zstd(json), None, 100).unwrap(), json);
        assert_eq!(decode(&gzip(json), None, 100).unwrap(), json);
        assert_eq!(decode(&zstd(json), Some("zstd"), 100).unwrap(), json);
    }

    #[test]
    fn cap_at_limit_minus_one_limit_and_plus_one() {
        let json = format!("{{\"k\":\"{}\"}}", "x".repeat(992)); // 1000 bytes
        assert_eq!(json.len(), 1000);
        for body in [
            json.as_bytes().to_vec(),
            zstd(json.as_bytes()),
            gzip(json.as_bytes()),
        ] {
            assert_eq!(decode(&body, None, 1000).unwrap().len(), 1000);
            assert_eq!(decode(&body, None, 1001).unwrap().len(), 1000);
            assert_eq!(decode(&body, None, 999), Err(DecodeError::TooLarge(999)));
        }
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let bomb = zstd(&vec![b' '; 64 * 1024 * 1024]);
        assert!(bomb.len() < 10_000);
        assert_eq!(decode(&bomb, None, 4096), Err(DecodeError::TooLarge(4096)));
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        assert!(matches!(
            decode(b"hello", None, 100),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"{}", Some("br"), 100),
            Err(DecodeError::Unsupported(_))
        ));
        let mut broken = zstd(b"{\"a\":1}");
        broken.truncate(6);
        assert_eq!(
            decode(&broken, None, 100),
            Err(DecodeError::Corrupt(Encoding::Zstd))
        );
        assert_eq!(
            decode(b"{}", Some("zstd"), 100),
            Err(DecodeError::Corrupt(Encoding::Zstd))
        );
        assert_eq!(
            decode(&[0x1f, 0x8b, 0, 0], None, 100),
            Err(DecodeError::Corrupt(Encoding::Gzip))
        );
    }
}
