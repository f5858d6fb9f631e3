//! Turns a request body into JSON bytes: zstd, gzip or the compact binary record (recognised by
//! their magic bytes, see [`Encoding::sniff`]) or plain JSON, with a hard cap on the decompressed size. Every frame or
//! member of the body is decoded, and anything after the last one is refused, for zstd and gzip
//! alike. Pure: bytes in, bytes out; each thread keeps one zstd context and reuses it.

use std::cell::RefCell;
use std::io::Read;

use pulse_protocol::{Encoding, ErrorCode, compact};
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

/// Largest zstd window accepted (2^22 = 4 MiB), so a frame cannot ask for unbounded memory.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 22;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decompressed body grows past the cap; decompression stopped at the cap.
    #[error("the decompressed body is larger than {0} bytes")]
    TooLarge(usize),
    /// Neither zstd, gzip nor JSON, or a `Content-Encoding` this server does not decode.
    #[error("unsupported encoding: {0}")]
    Unsupported(String),
    /// The body claims an encoding but is corrupt, truncated or followed by other bytes.
    #[error("the {} body cannot be decoded", .0.as_str())]
    Corrupt(Encoding),
    /// A compact body names a dictionary this server does not hold.
    #[error(
        "the body names dictionary {0:08x}, which this gateway does not hold: send it without one"
    )]
    UnknownDictionary(u32),
}

impl DecodeError {
    /// The error code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge(_) => ErrorCode::DecodedTooLarge,
            Self::Unsupported(_) => ErrorCode::UnsupportedEncoding,
            Self::Corrupt(_) => ErrorCode::UndecodableBody,
            Self::UnknownDictionary(_) => ErrorCode::UnknownDictionary,
        }
    }
}

/// Recognises the encoding from the body's first bytes and the `Content-Encoding` header
/// (which, when sent, must agree).
pub fn sniff(body: &[u8], content_encoding: Option<&str>) -> Result<Encoding, DecodeError> {
    let sniffed = Encoding::sniff(body);
    let declared = match content_encoding.map(Encoding::from_header) {
        None => None,
        Some(Ok(declared)) => declared,
        Some(Err(())) => {
            let value = content_encoding.unwrap_or_default().trim();
            let value: String = value.chars().take(40).collect();
            return Err(DecodeError::Unsupported(format!(
                "Content-Encoding {value}"
            )));
        }
    };
    match (declared, sniffed) {
        (Some(d), Some(s)) if d != s => Err(DecodeError::Corrupt(d)),
        (Some(d), None) => Err(DecodeError::Corrupt(d)),
        (_, Some(s)) => Ok(s),
        (None, None) => Err(DecodeError::Unsupported(
            "the body is neither zstd, gzip, compact nor JSON".into(),
        )),
    }
}

/// Decodes `body` into at most `cap` bytes of JSON text: a JSON body is returned as it is, a
/// compressed one is decoded into `out` (cleared first; its allocation is reused). A compact
/// body that names a dictionary gets it from `dictionary` (by its hash).
pub fn decode<'a, D: AsRef<[u8]>>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    cap: usize,
    out: &'a mut Vec<u8>,
    dictionary: impl FnOnce(u32) -> Option<D>,
) -> Result<&'a [u8], DecodeError> {
    out.clear();
    match sniff(body, content_encoding)? {
        Encoding::Json if body.len() > cap => Err(DecodeError::TooLarge(cap)),
        Encoding::Json => Ok(body),
        Encoding::Zstd => {
            decode_zstd(body, cap, out)?;
            Ok(out)
        }
        Encoding::Gzip => {
            decode_gzip(body, cap, out)?;
            Ok(out)
        }
        Encoding::Compact => {
            let json = compact::decode_body(body, cap, dictionary).map_err(|e| match e {
                compact::CompactError::TooLarge(_) => DecodeError::TooLarge(cap),
                compact::CompactError::UnknownDictionary(hash) => {
                    DecodeError::UnknownDictionary(hash)
                }
                _ => DecodeError::Corrupt(Encoding::Compact),
            })?;
            out.extend_from_slice(json.as_bytes());
            Ok(out)
        }
    }
}

/// Decodes into a fresh vector (tools and tests; servers use [`decode`]).
pub fn decode_to_vec(
    body: &[u8],
    content_encoding: Option<&str>,
    cap: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    Ok(decode(
        body,
        content_encoding,
        cap,
        &mut out,
        compact::no_dictionary,
    )?
    .to_vec())
}

thread_local! {
    /// This thread's zstd context, reused by every body it decodes (a fresh context per body
    /// costs its allocation and table setup every time).
    static ZSTD: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Every zstd frame of `body` into `out`, at most `cap` bytes; trailing bytes that are not a
/// frame, and a last frame cut short, are corrupt.
fn decode_zstd(body: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let corrupt = DecodeError::Corrupt(Encoding::Zstd);
    ZSTD.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(|_| corrupt.clone())?;
        let dctx = match &mut *slot {
            Some(dctx) => dctx,
            empty => {
                let mut dctx = DCtx::create();
                dctx.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|_| corrupt.clone())?;
                empty.insert(dctx)
            }
        };
        dctx.reset(ResetDirective::SessionOnly)
            .map_err(|_| corrupt.clone())?;
        // One byte more than allowed tells "too large" without decoding further.
        let limit = cap.saturating_add(1);
        out.reserve(limit.min(256 * 1024));
        let mut input = InBuffer::around(body);
        let mut frame_done = true;
        while input.pos() < body.len() || !frame_done {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(DecodeError::TooLarge(cap));
                }
                let more = out.len().max(16 * 1024).min(limit - out.len());
                out.reserve_exact(more);
            }
            let before = (input.pos(), out.len());
            let hint = {
                let mut output = OutBuffer::around_pos(&mut *out, before.1);
                dctx.decompress_stream(&mut output, &mut input)
                    .map_err(|_| corrupt.clone())?
            };
            frame_done = hint == 0;
            if out.len() > cap {
                return Err(DecodeError::TooLarge(cap));
            }
            if !frame_done && (input.pos(), out.len()) == before && out.len() < out.capacity() {
                // No progress with room to write: the input ends inside a frame.
                return Err(corrupt);
            }
        }
        Ok(())
    })
}

/// Every gzip member of `body` into `out`, at most `cap` bytes; bytes after the last member
/// that do not start another one are corrupt.
fn decode_gzip(body: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    flate2::read::MultiGzDecoder::new(body)
        .take(cap as u64 + 1)
        .read_to_end(out)
        .map_err(|_| DecodeError::Corrupt(Encoding::Gzip))?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge(cap));
    }
    Ok(())
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

    fn dec(body: &[u8], encoding: Option<&str>, cap: usize) -> Result<Vec<u8>, DecodeError> {
        decode_to_vec(body, encoding, cap)
    }

    #[test]
    fn decodes_each_encoding() {
        let json = br#"{"v":1}"#;
        assert_eq!(dec(json, None, 100).unwrap(), json);
        assert_eq!(dec(&zstd(json), None, 100).unwrap(), json);
        assert_eq!(dec(&gzip(json), None, 100).unwrap(), json);
        assert_eq!(dec(&zstd(json), Some("zstd"), 100).unwrap(), json);
        // The same thread's context decodes body after body.
        for _ in 0..3 {
            assert_eq!(dec(&zstd(json), None, 100).unwrap(), json);
        }
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
            assert_eq!(dec(&body, None, 1000).unwrap().len(), 1000);
            assert_eq!(dec(&body, None, 1001).unwrap().len(), 1000);
            assert_eq!(dec(&body, None, 999), Err(DecodeError::TooLarge(999)));
        }
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let bomb = zstd(&vec![b' '; 64 * 1024 * 1024]);
        assert!(bomb.len() < 10_000);
        assert_eq!(dec(&bomb, None, 4096), Err(DecodeError::TooLarge(4096)));
        let gz = gzip(&vec![b' '; 16 * 1024 * 1024]);
        assert_eq!(dec(&gz, None, 4096), Err(DecodeError::TooLarge(4096)));
    }

    #[test]
    fn every_frame_or_member_is_decoded_and_trailing_bytes_refused() {
        let (a, b) = (&br#"{"a":"#[..], &br#"1}"#[..]);
        for (two, one) in [
            ([zstd(a), zstd(b)].concat(), zstd(a)),
            ([gzip(a), gzip(b)].concat(), gzip(a)),
        ] {
            assert_eq!(dec(&two, None, 100).unwrap(), br#"{"a":1}"#);
            let mut junk = one.clone();
            junk.extend_from_slice(b"junk after the frame");
            assert!(matches!(
                dec(&junk, None, 100),
                Err(DecodeError::Corrupt(_))
            ));
            let mut cut = two.clone();
            cut.truncate(two.len() - 3);
            assert!(matches!(dec(&cut, None, 100), Err(DecodeError::Corrupt(_))));
            // Total size across frames counts against the cap.
            assert_eq!(dec(&two, None, 6), Err(DecodeError::TooLarge(6)));
        }
        // A body that decodes to exactly the cap, whatever the buffer's growth steps.
        for size in [1, 16 * 1024, 256 * 1024, 512 * 1024] {
            let data = vec![1u8; size];
            for body in [zstd(&data), gzip(&data)] {
                assert_eq!(dec(&body, None, size).unwrap().len(), size, "{size}");
                assert_eq!(
                    dec(&body, None, size - 1),
                    Err(DecodeError::TooLarge(size - 1))
                );
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        assert!(matches!(
            dec(b"hello", None, 100),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            dec(b"{}", Some("br"), 100),
            Err(DecodeError::Unsupported(_))
        ));
        let mut broken = zstd(b"{\"a\":1}");
        broken.truncate(6);
        assert_eq!(
            dec(&broken, None, 100),
            Err(DecodeError::Corrupt(Encoding::Zstd))
        );
        assert_eq!(
            dec(b"{}", Some("zstd"), 100),
            Err(DecodeError::Corrupt(Encoding::Zstd))
        );
        assert_eq!(
            dec(&[0x1f, 0x8b, 0, 0], None, 100),
            Err(DecodeError::Corrupt(Encoding::Gzip))
        );
        // After a corrupt body the thread's context decodes good ones again.
        assert!(dec(&zstd(b"{}"), None, 100).is_ok());
    }

    #[test]
    fn compact_bodies_become_the_batchs_json() {
        use pulse_protocol::compact::{encode_body, encode_record};
        let json = r#"{"v":1,"site_key":"demo","anonymous_id":"a1","session_id":"s1","seq":0,"sent_at":5,"events":[{"id":"0000000000000000000000000000002a","ts":4,"type":"page_view","page":{"url":"https://n.example/"},"props":{"x":[1.5]}}]}"#;
        let batch: pulse_protocol::Batch = serde_json::from_str(json).unwrap();
        let record = encode_record(&(&batch).into());
        let body = encode_body(&record, None);
        assert_eq!(dec(&body, None, 1000).unwrap(), json.as_bytes());
        assert_eq!(dec(&body, None, 10), Err(DecodeError::TooLarge(10)));
        // Against a dictionary: read when the server holds it, refused by name when not.
        let dict = b"https://n.example/ a dictionary";
        let named = encode_body(&record, Some((77, dict)));
        assert_eq!(
            dec(&named, None, 1000),
            Err(DecodeError::UnknownDictionary(77))
        );
        assert_eq!(DecodeError::UnknownDictionary(77).code().status(), 409);
        let mut out = Vec::new();
        let held = decode(&named, None, 1000, &mut out, |h| (h == 77).then_some(dict));
        assert_eq!(held.unwrap(), json.as_bytes());
        assert_eq!(
            dec(&body[..body.len() - 1], None, 1000),
            Err(DecodeError::Corrupt(Encoding::Compact))
        );
        assert_eq!(
            dec(&body, Some("gzip"), 1000),
            Err(DecodeError::Corrupt(Encoding::Gzip))
        );
    }
}
