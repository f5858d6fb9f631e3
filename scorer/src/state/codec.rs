//! The binary codec of reader state: LEB128 varints, little-endian floats, fixed 8-byte hashes,
//! length-prefixed bytes. Small and explicit, so the format is documented by the code
//! and stays stable (every template writes its own fields in order through these calls).

/// Why bytes could not be read back as state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("state ends early")]
    Truncated,
    /// A value is out of its range (a varint over 64 bits, a bad tag, bad UTF-8, a length over
    /// its bound).
    #[error("invalid state: {0}")]
    Invalid(&'static str),
}

/// Appends values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The bytes written so far.
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    /// An unsigned varint.
    pub(crate) fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A float, 8 bytes little-endian.
    pub(crate) fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A fixed 8-byte value (hashes, which do not shrink as varints).
    pub(crate) fn fixed64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// One byte.
    pub(crate) fn byte(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Length-prefixed bytes.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A length-prefixed UTF-8 string.
    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads values back, in the order they were written.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// An unsigned varint.
    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(CodecError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Invalid("varint over 64 bits"))
    }

    /// A length, at most `max`.
    pub(crate) fn len(&mut self, max: usize) -> Result<usize, CodecError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or(CodecError::Invalid("length over its bound"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A float.
    pub(crate) fn f64(&mut self) -> Result<f64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// A fixed 8-byte value.
    pub(crate) fn fixed64(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// One byte.
    pub(crate) fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    /// Length-prefixed bytes, at most `max` long.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], CodecError> {
        let n = self.len(max)?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string, at most `max` bytes.
    pub(crate) fn str(&mut self, max: usize) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(max)?).map_err(|_| CodecError::Invalid("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(a: u64, c: f64, s in ".{0,40}", h: u64) {
            let mut w = Writer::default();
            w.u64(a);
            w.f64(c);
            w.str(&s);
            w.fixed64(h);
            let mut r = Reader::new(&w.buf);
            prop_assert_eq!(r.u64().unwrap(), a);
            prop_assert_eq!(r.f64().unwrap().to_bits(), c.to_bits());
            prop_assert_eq!(r.str(1000).unwrap(), s.as_str());
            prop_assert_eq!(r.fixed64().unwrap(), h);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.u64();
            let _ = r.str(16);
            let _ = r.f64();
            let _ = r.bytes(8);
        }
    }

    #[test]
    fn bounds_and_truncation() {
        let mut w = Writer::default();
        w.str("hello");
        assert_eq!(
            Reader::new(&w.buf).str(4),
            Err(CodecError::Invalid("length over its bound"))
        );
        assert_eq!(Reader::new(&w.buf[..3]).str(10), Err(CodecError::Truncated));
        assert_eq!(
            Reader::new(&[0xff; 11]).u64(),
            Err(CodecError::Invalid("varint over 64 bits"))
        );
    }
}
