//! Batches as clients hold them: the protocol's fields with each event's `props` kept as the JSON
//! text the page gave (`JSON.stringify` in a browser), so a client needs no JSON values, general
//! serializer or float formatting. Written as the protocol's JSON by hand
//! ([`WireBatch::to_json`]), and in the compact binary form by [`crate::compact`].

use alloc::string::String;
use alloc::vec::Vec;

use self::json_text::{depth, push_key, push_str, push_u64};
#[cfg(feature = "std")]
use crate::{Batch, Event};
use crate::{
    BatchHeader, EventId, EventType, MAX_PROPS_BYTES, MAX_PROPS_DEPTH, PageContext, RejectReason,
    check_fields,
};

/// One event as a client queues and sends it: the protocol's fields, `props` as JSON text.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WireEvent {
    /// Random 128-bit id; retries resend the same id.
    pub id: EventId,
    /// Client clock time, ms since the Unix epoch.
    pub ts: u64,
    /// The kind of event.
    pub kind: EventType,
    /// Name of a `custom` event.
    pub name: Option<String>,
    /// The page it happened on.
    pub page: PageContext,
    /// The properties as compact JSON object text; empty when there are none.
    pub props: String,
}

/// A batch of [`WireEvent`]s.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WireBatch {
    /// Header fields shared by every event.
    pub header: BatchHeader,
    /// The events.
    pub events: Vec<WireEvent>,
}

impl WireEvent {
    /// Checks the event against the protocol's limits (the gateway's rules, so it is never sent
    /// to be rejected). `props` must be compact JSON (as `JSON.stringify` writes it).
    pub fn check(&self) -> Result<(), RejectReason> {
        let page = &self.page;
        check_fields(
            self.kind,
            self.name.as_deref(),
            &page.url,
            &page.referrer,
            &page.title,
        )?;
        if depth(&self.props) > MAX_PROPS_DEPTH {
            Err(RejectReason::PropsTooDeep)
        } else if self.props.len() > MAX_PROPS_BYTES {
            Err(RejectReason::PropsTooLarge)
        } else {
            Ok(())
        }
    }

    /// Appends the event as protocol JSON.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"id\":");
        push_str(out, self.id.hex().as_str());
        out.push_str(",\"ts\":");
        push_u64(out, self.ts);
        out.push_str(",\"type\":");
        push_str(out, self.kind.as_str());
        if let Some(name) = &self.name {
            out.push_str(",\"name\":");
            push_str(out, name);
        }
        out.push_str(",\"page\":{\"url\":");
        push_str(out, &self.page.url);
        for (key, value) in [
            ("referrer", &self.page.referrer),
            ("title", &self.page.title),
        ] {
            if !value.is_empty() {
                out.push(',');
                push_key(out, key);
                push_str(out, value);
            }
        }
        out.push('}');
        if !self.props.is_empty() && self.props != "{}" {
            out.push_str(",\"props\":");
            out.push_str(&self.props);
        }
        out.push('}');
    }
}

impl WireBatch {
    /// The batch as protocol JSON (compact).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + 400 * self.events.len());
        self.write_json(&mut out);
        out
    }

    /// Appends the batch as protocol JSON.
    pub fn write_json(&self, out: &mut String) {
        let h = &self.header;
        out.push_str("{\"v\":");
        push_u64(out, u64::from(h.v));
        for (key, value) in [
            ("site_key", Some(&h.site_key)),
            ("anonymous_id", Some(&h.anonymous_id)),
            ("user_id", h.user_id.as_ref()),
            ("auth", h.auth.as_ref()),
            ("session_id", Some(&h.session_id)),
        ] {
            if let Some(value) = value {
                out.push(',');
                push_key(out, key);
                push_str(out, value);
            }
        }
        out.push_str(",\"seq\":");
        push_u64(out, h.seq);
        out.push_str(",\"sent_at\":");
        push_u64(out, h.sent_at);
        if h.resent {
            out.push_str(",\"resent\":true");
        }
        out.push_str(",\"events\":");
        out.push('[');
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            event.write_json(out);
        }
        out.push_str("]}");
    }
}

#[cfg(feature = "std")]
impl From<&Event> for WireEvent {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id,
            ts: e.ts,
            kind: e.kind,
            name: e.name.clone(),
            page: e.page.clone(),
            props: if e.props.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&e.props).unwrap_or_default()
            },
        }
    }
}

#[cfg(feature = "std")]
impl From<&Batch> for WireBatch {
    fn from(b: &Batch) -> Self {
        Self {
            header: b.header.clone(),
            events: b.events.iter().map(WireEvent::from).collect(),
        }
    }
}

/// Writing JSON text by hand: strings, unsigned integers, keys, and 128-bit hex.
pub mod json_text {
    use alloc::string::String;

    /// Appends `"key":` (a key without characters to escape).
    pub fn push_key(out: &mut String, key: &str) {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
    }

    /// Appends `s` as a JSON string literal.
    pub fn push_str(out: &mut String, s: &str) {
        out.push('"');
        // Runs without a character to escape go at once (most strings are one run).
        let mut run = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            out.push_str(s.get(run..i).unwrap_or_default());
            run = i + 1;
            if escape.is_empty() {
                out.push_str("\\u00");
                out.push(hex_digit(u32::from(b) >> 4));
                out.push(hex_digit(u32::from(b) & 0xf));
            } else {
                out.push_str(escape);
            }
        }
        out.push_str(s.get(run..).unwrap_or_default());
        out.push('"');
    }

    /// Appends `n` in decimal (no `fmt` machinery).
    pub fn push_u64(out: &mut String, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            out.push(char::from(d));
        }
    }

    fn hex_digit(n: u32) -> char {
        char::from(b"0123456789abcdef"[(n & 0xf) as usize])
    }

    /// Lowercase hex of a 128-bit number: 32 digits.
    pub fn hex128(n: u128) -> String {
        (0..32)
            .rev()
            .map(|i| hex_digit((n >> (4 * i)) as u32))
            .collect()
    }

    /// Nesting depth of a JSON text (an object alone is 1), counting brackets outside strings.
    pub fn depth(text: &str) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for b in text.bytes() {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::json_text::*;
    use super::*;

    fn sample(n: usize) -> Batch {
        let text = format!(
            r#"{{"v":1,"site_key":"demo","anonymous_id":"{a}","session_id":"{a}","seq":3,"sent_at":1700000000000,"events":[{events}]}}"#,
            a = "ab".repeat(16),
            events = (0..n)
                .map(|i| format!(
                    r#"{{"id":"{:032x}","ts":{},"type":"click","page":{{"url":"https://n.example/a?q=\"x\"","title":"ünï"}},"props":{{"k":[1,2.5,{{"z":null}}],"s":"t\n"}}}}"#,
                    i + 1,
                    1_699_999_999_000u64 + i as u64
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn json_is_what_serde_writes() {
        for n in [1, 3] {
            let batch = sample(n);
            let wire = WireBatch::from(&batch);
            assert_eq!(wire.to_json(), serde_json::to_string(&batch).unwrap());
        }
    }

    #[test]
    fn strings_numbers_hex_and_depth() {
        for s in ["", "plain", "q\"b\\s/", "ctl\n\t\u{1}", "ünï 🎉"] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
        for n in [0, 7, 10, 1_741_950_000_000, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        assert_eq!(hex128(0xabc), format!("{:032x}", 0xabc));
        assert_eq!(depth(r#"{"a":{"b":[1,{"c":"}}}]"}]}}"#), 4);
        assert_eq!(depth("{}"), 1);
    }

    #[test]
    fn checks_props_like_the_gateway() {
        let mut e = WireEvent::from(&sample(1).events[0]);
        assert_eq!(e.check(), Ok(()));
        e.props = r#"{"a":{"b":{"c":{"d":{}}}}}"#.into();
        assert_eq!(e.check(), Err(RejectReason::PropsTooDeep));
        e.props = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_PROPS_BYTES));
        assert_eq!(e.check(), Err(RejectReason::PropsTooLarge));
    }
}
