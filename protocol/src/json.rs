//! A strict JSON scanner for the batch parser: it walks a UTF-8 text once, checking the RFC 8259
//! grammar as it goes, reads strings in place (borrowed unless they hold escapes) and never
//! nests deeper than [`MAX_JSON_DEPTH`]. Numbers must be finite as doubles and `\u` escapes must
//! pair their surrogates, so that whatever it accepts `serde_json` reads too.

use std::borrow::Cow;

use crate::MAX_JSON_DEPTH;

/// Why the text is not JSON (the batch is then malformed as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syntax {
    /// Byte offset where the problem was seen.
    pub(crate) at: usize,
    /// What was wrong.
    pub(crate) what: &'static str,
}

impl std::fmt::Display for Syntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// A number token: its text, and whether it is a plain non-negative integer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number<'a> {
    pub(crate) text: &'a str,
    pub(crate) unsigned: bool,
}

impl Number<'_> {
    /// The value, when the token is an integer that fits a `u64`.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        if self.unsigned {
            self.text.parse().ok()
        } else {
            None
        }
    }
}

/// What a skipped value held: its nesting (0 for a scalar, 1 for `{}` or `[]`, …) and the bytes
/// of whitespace between its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) depth: usize,
    pub(crate) whitespace: usize,
}

/// The scanner: a position in a text.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The text from `start` to the current position.
    pub(crate) fn since(&self, start: usize) -> &'a str {
        // Both positions lie on token boundaries, which are ASCII: always char boundaries.
        self.text.get(start..self.pos).unwrap_or_default()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn fail(&self, what: &'static str) -> Syntax {
        Syntax { at: self.pos, what }
    }

    /// Skips whitespace; returns how many bytes.
    pub(crate) fn ws(&mut self) -> usize {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Consumes `byte`, or fails.
    pub(crate) fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), Syntax> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(what))
        }
    }

    /// After a member or element: `,` (true: another follows) or `close` (false). Whitespace
    /// around is skipped; its length is added to `ws`.
    pub(crate) fn next_in(&mut self, close: u8, ws: &mut usize) -> Result<bool, Syntax> {
        *ws += self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                *ws += self.ws();
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.fail("expected `,` or the end of the object or array")),
        }
    }

    /// Opens an object or array (at `open`): consumes it and the whitespace after; returns
    /// false when it is empty (the closing byte consumed too).
    pub(crate) fn open(&mut self, open: u8, close: u8, ws: &mut usize) -> Result<bool, Syntax> {
        self.eat(open, "expected an object or array")?;
        *ws += self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// A member's key and the `:` after it (with whitespace), at a `"`.
    pub(crate) fn key(&mut self, ws: &mut usize) -> Result<Cow<'a, str>, Syntax> {
        if self.peek() != Some(b'"') {
            return Err(self.fail("expected a string key"));
        }
        let key = self.string()?;
        *ws += self.ws();
        self.eat(b':', "expected `:` after a key")?;
        *ws += self.ws();
        Ok(key)
    }

    /// A string at `"`: borrowed when it has no escapes, else decoded.
    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>, Syntax> {
        self.eat(b'"', "expected a string")?;
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let end = skip_plain(bytes, start);
        match bytes.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                // `start` follows a `"` and `end` is at one: both char boundaries.
                Ok(Cow::Borrowed(self.text.get(start..end).unwrap_or_default()))
            }
            Some(b'\\') => {
                self.pos = end;
                let mut owned = String::with_capacity(end - start + 16);
                owned.push_str(self.text.get(start..end).unwrap_or_default());
                self.escaped_rest(&mut owned)?;
                Ok(Cow::Owned(owned))
            }
            Some(_) => {
                self.pos = end;
                Err(self.fail("control character in a string"))
            }
            None => {
                self.pos = end;
                Err(self.fail("unterminated string"))
            }
        }
    }

    /// The rest of a string from an escape on, decoded into `out`, through the closing `"`.
    fn escaped_rest(&mut self, out: &mut String) -> Result<(), Syntax> {
        let bytes = self.text.as_bytes();
        loop {
            match bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                Some(_) => {
                    let end = skip_plain(bytes, self.pos);
                    match bytes.get(end) {
                        Some(b'"' | b'\\') => {
                            out.push_str(self.text.get(self.pos..end).unwrap_or_default());
                            self.pos = end;
                        }
                        Some(_) => {
                            self.pos = end;
                            return Err(self.fail("control character in a string"));
                        }
                        None => {
                            self.pos = end;
                            return Err(self.fail("unterminated string"));
                        }
                    }
                }
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    /// One escape after its `\`.
    fn escape(&mut self) -> Result<char, Syntax> {
        let Some(&b) = self.text.as_bytes().get(self.pos) else {
            return Err(self.fail("unterminated escape"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        if self.text.as_bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.fail("lone leading surrogate in an escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.fail("lone leading surrogate in an escape"));
                        }
                        let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(c).ok_or_else(|| self.fail("bad escape"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.fail("lone trailing surrogate in an escape"));
                    }
                    c => char::from_u32(c).ok_or_else(|| self.fail("bad escape"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.fail("invalid escape"));
            }
        })
    }

    fn hex4(&mut self) -> Result<u32, Syntax> {
        let digits = self
            .text
            .as_bytes()
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.fail("short \\u escape"))?;
        let mut n = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(self.fail("bad hex digit in a \\u escape")),
            };
            n = (n << 4) | u32::from(v);
        }
        self.pos += 4;
        Ok(n)
    }

    /// Skips a string at `"`, checking it, without decoding.
    fn skip_string(&mut self) -> Result<(), Syntax> {
        self.eat(b'"', "expected a string")?;
        let bytes = self.text.as_bytes();
        loop {
            let end = skip_plain(bytes, self.pos);
            self.pos = end;
            match bytes.get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape()?;
                }
                Some(_) => return Err(self.fail("control character in a string")),
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    /// A number token at `-` or a digit.
    pub(crate) fn number(&mut self) -> Result<Number<'a>, Syntax> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let digits = |pos: &mut usize| {
            let from = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        let mut pos = start;
        let negative = bytes.get(pos) == Some(&b'-');
        if negative {
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b'0') => pos += 1,
            Some(b'1'..=b'9') => {
                digits(&mut pos);
            }
            _ => {
                self.pos = pos;
                return Err(self.fail("invalid number"));
            }
        }
        let int_end = pos;
        let mut plain = true;
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            plain = false;
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.fail("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            plain = false;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            if digits(&mut pos) == 0 {
                self.pos = pos;
                return Err(self.fail("invalid number"));
            }
        }
        self.pos = pos;
        let text = self.since(start);
        // Past 18 digits an integer may not fit 64 bits; serde_json then reads it as a double,
        // and refuses one that overflows, as it does any non-finite number.
        if (!plain || int_end - start > 18) && !text.parse::<f64>().is_ok_and(f64::is_finite) {
            self.pos = start;
            return Err(self.fail("number out of range"));
        }
        Ok(Number {
            text,
            unsigned: plain && !negative,
        })
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self) -> Result<(), Syntax> {
        let rest = self.text.as_bytes().get(self.pos..).unwrap_or_default();
        for word in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return Ok(());
            }
        }
        Err(self.fail("expected a value"))
    }

    /// Skips one value (at its first byte), checking it; `depth` is the nesting of the
    /// container it is in (0 at the top). Returns its own nesting and inner whitespace.
    pub(crate) fn skip_value(&mut self, depth: usize) -> Result<Stats, Syntax> {
        match self.peek() {
            Some(b'"') => self.skip_string().map(|()| Stats::default()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| Stats::default()),
            Some(b'{') => self.skip_container(depth, b'{', b'}'),
            Some(b'[') => self.skip_container(depth, b'[', b']'),
            _ => self.literal().map(|()| Stats::default()),
        }
    }

    fn skip_container(&mut self, depth: usize, open: u8, close: u8) -> Result<Stats, Syntax> {
        if depth + 1 > MAX_JSON_DEPTH {
            return Err(self.fail("nesting deeper than 16"));
        }
        let mut ws = 0;
        let mut inner = 0;
        if self.open(open, close, &mut ws)? {
            loop {
                if open == b'{' {
                    self.skip_string()?;
                    ws += self.ws();
                    self.eat(b':', "expected `:` after a key")?;
                    ws += self.ws();
                }
                let stats = self.skip_value(depth + 1)?;
                inner = inner.max(stats.depth);
                ws += stats.whitespace;
                if !self.next_in(close, &mut ws)? {
                    break;
                }
            }
        }
        Ok(Stats {
            depth: inner + 1,
            whitespace: ws,
        })
    }
}

/// The position of the first byte at or after `from` that is `"`, `\` or a control character
/// (or the end). Eight bytes at a time: in each lane, a byte equal to `"` or `\` or below 0x20
/// sets its high bit; the lowest set bit is always a true match (borrows only run upwards).
fn skip_plain(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut lane = [0u8; 8];
        lane.copy_from_slice(chunk);
        let w = u64::from_le_bytes(lane);
        let hit = (zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn skip_all(text: &str) -> Result<Stats, Syntax> {
        let mut s = Scanner::new(text);
        s.ws();
        let stats = s.skip_value(0)?;
        s.ws();
        if s.at_end() {
            Ok(stats)
        } else {
            Err(s.fail("trailing characters"))
        }
    }

    fn reference(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok()
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        for text in [
            "0",
            "-0",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E5",
            "-",
            "1.5e-3",
            "1e400",
            "-1e309",
            "1e-400",
            "123456789012345678901234567890",
            "\"a\"",
            "\"\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud83d\"",
            "\"\\ude00\"",
            "\"\\ud83dx\"",
            "\"\\x\"",
            "\"\t\"",
            "\"a\\\"b\"",
            "[]",
            "[1,]",
            "[,1]",
            "{}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:1}",
            "true",
            "tru",
            "nul",
            "null ",
            " [ 1 , 2 ] ",
            "[1 2]",
            "{\"a\":{\"b\":[]}}",
            "\"\u{7f}\"",
            "",
            "\"unterminated",
            "[\"a\\",
            "{\"a\":\"b\"}x",
        ] {
            assert_eq!(skip_all(text).is_ok(), reference(text), "{text:?}");
        }
    }

    #[test]
    fn strings_are_borrowed_without_escapes_and_decoded_with() {
        let mut s = Scanner::new(r#""plain text here, long enough" "a\nb\u00e9\ud83d\ude00c""#);
        assert!(matches!(
            s.string(),
            Ok(Cow::Borrowed("plain text here, long enough"))
        ));
        s.ws();
        assert_eq!(s.string().unwrap(), "a\nbé😀c");
    }

    #[test]
    fn nesting_is_limited() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(
            skip_all(&nest(MAX_JSON_DEPTH)).unwrap().depth,
            MAX_JSON_DEPTH
        );
        assert!(skip_all(&nest(MAX_JSON_DEPTH + 1)).is_err());
    }

    #[test]
    fn whitespace_inside_is_counted() {
        assert_eq!(
            skip_all("{ \"a\" : [ 1 , 2 ] }").unwrap(),
            Stats {
                depth: 2,
                whitespace: 8
            }
        );
    }

    #[test]
    fn the_word_scan_finds_the_first_stop() {
        for text in [
            "",
            "a",
            "abcdefgh\"",
            "abcdefghi\\",
            "é€😀\u{1}",
            "0123456\"\"",
            "x\u{1f}",
        ] {
            let slow = text
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(text.len());
            assert_eq!(skip_plain(text.as_bytes(), 0), slow, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn the_word_scan_matches_the_byte_scan(bytes in proptest::collection::vec(any::<u8>(), 0..64), from in 0usize..8) {
            let from = from.min(bytes.len());
            let slow = bytes[from..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map_or(bytes.len(), |p| from + p);
            prop_assert_eq!(skip_plain(&bytes, from), slow);
        }

        #[test]
        fn agrees_with_serde_json(text in r#"[\[\]{}",:0-9a-z\\ .eE+\-]{0,40}"#) {
            let depth_ok = text.len() < MAX_JSON_DEPTH;
            if depth_ok {
                prop_assert_eq!(skip_all(&text).is_ok(), reference(&text), "{:?}", text);
            }
        }
    }
}
