//! Just enough JSON for the tracker, without a general serializer (serde_json alone would be
//! most of `pulse_bg.wasm`): a pull reader of objects, arrays, strings and unsigned integers
//! (the stored session, error bodies). Writing is `pulse_protocol::json_text`.

use alloc::string::String;

use pulse_protocol::json_text::push_u64;

/// `n` in decimal.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn u64_string(n: u64) -> String {
    let mut out = String::new();
    push_u64(&mut out, n);
    out
}

/// Four hex digits of a `\\u` escape.
fn hex4(chars: &mut impl Iterator<Item = (usize, char)>) -> Option<u32> {
    (0..4).try_fold(0, |n, _| Some(n * 16 + chars.next()?.1.to_digit(16)?))
}

/// Deepest nesting [`Reader::skip`] follows; deeper text is refused.
const MAX_DEPTH: usize = 32;

/// A pull reader over one JSON text. Every method returns `None` on text it does not expect.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn ws(&mut self) {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// True at the end of the text (whitespace aside).
    pub(crate) fn done(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Calls `field` with each key of an object; `field` must read the value.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<()> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            field(self, &key)?;
            if self.eat(b'}') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// Skips an array.
    fn list(&mut self, depth: usize) -> Option<()> {
        self.expect(b'[')?;
        if self.eat(b']') {
            return Some(());
        }
        loop {
            self.skip_at(depth + 1)?;
            if self.eat(b']') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// A non-negative integer.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.ws();
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(&b) = bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.at += 1;
        }
        (self.at > start).then_some(n)
    }

    /// A string, unescaped.
    pub(crate) fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        let mut chars = self.text.get(self.at..)?.char_indices();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => {
                    self.at += i + 1;
                    return Some(out);
                }
                '\\' => {
                    let (_, e) = chars.next()?;
                    out.push(match e {
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let first = hex4(&mut chars)?;
                            let code = if (0xd800..0xdc00).contains(&first) {
                                let (_, slash) = chars.next()?;
                                let (_, u) = chars.next()?;
                                if (slash, u) != ('\\', 'u') {
                                    return None;
                                }
                                let second = hex4(&mut chars)?.checked_sub(0xdc00)?;
                                if second >= 0x400 {
                                    return None;
                                }
                                0x10000 + ((first - 0xd800) << 10) + second
                            } else {
                                first
                            };
                            char::from_u32(code)?
                        }
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }

    /// Skips one value of any kind.
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip_at(depth + 1)),
            b'[' => self.list(depth),
            b'"' => self.string().map(drop),
            _ => {
                let bytes = self.text.as_bytes();
                let start = self.at;
                while bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::json_text::push_str;

    #[test]
    fn strings_round_trip_with_escapes() {
        for s in ["", "plain", "q\"b\\s/", "ctl\n\t\u{1}", "ünï 🎉"] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(Reader::new(&out).string().as_deref(), Some(s));
        }
        let escaped = r#""\u00e9\ud83c\udf89\/""#;
        assert_eq!(Reader::new(escaped).string().as_deref(), Some("é🎉/"));
        assert_eq!(Reader::new(r#""\ud83c""#).string(), None);
        assert_eq!(Reader::new("\"open").string(), None);
    }

    #[test]
    fn numbers() {
        for n in [0, 7, 10, 1_741_950_000_000, u64::MAX] {
            assert_eq!(u64_string(n), n.to_string());
            assert_eq!(Reader::new(&u64_string(n)).u64(), Some(n));
        }
        assert_eq!(Reader::new("18446744073709551616").u64(), None);
    }

    #[test]
    fn objects_and_skipped_values() {
        let text = r#" {"a": [1, 2.5e3, -1, true, null], "b": {"x": "y"}, "c": 3} "#;
        let mut r = Reader::new(text);
        let mut c = None;
        r.object(|r, key| {
            match key {
                "c" => c = r.u64(),
                _ => r.skip()?,
            }
            Some(())
        })
        .unwrap();
        assert!(r.done());
        assert_eq!(c, Some(3));
        assert_eq!(Reader::new("{\"a\":}").skip(), None);
        assert_eq!(Reader::new(&"[".repeat(100)).skip(), None);
    }
}
