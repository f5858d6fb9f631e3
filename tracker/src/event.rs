//! The tracker's own events and batches: the protocol's shapes, with properties kept as the JSON
//! text the page gave (`JSON.stringify`), so the Wasm needs no JSON values, serializer or float
//! formatting. Written as the protocol's JSON by hand ([`Batch::to_json`]) and read back from
//! `localStorage` ([`Batch::read`], [`Event::read`]).

use pulse_protocol::{
    BatchHeader, EventId, EventType, MAX_PROPS_BYTES, MAX_PROPS_DEPTH, PageContext, RejectReason,
    check_fields,
};

use crate::json::{Reader, depth, hex128, push_key, push_str, push_u64};

/// One event, as the tracker queues and sends it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
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

/// A batch of events as the tracker sends it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Batch {
    /// Header fields shared by every event.
    pub header: BatchHeader,
    /// The events.
    pub events: Vec<Event>,
}

impl Event {
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
        push_str(out, &hex128(self.id.0));
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

    /// Reads an event written by [`Event::write_json`] (or any protocol-shaped event).
    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Self> {
        let (mut id, mut ts, mut kind, mut name) = (None, None, None, None);
        let (mut page, mut props) = (PageContext::default(), String::new());
        r.object(|r, key| {
            match key {
                "id" => id = EventId::parse_hex(&r.string()?),
                "ts" => ts = r.u64(),
                "type" => kind = EventType::parse(&r.string()?),
                "name" => name = Some(r.string()?),
                "props" => props = r.raw()?.to_owned(),
                "page" => r.object(|r, key| {
                    let value = r.string()?;
                    match key {
                        "url" => page.url = value,
                        "referrer" => page.referrer = value,
                        "title" => page.title = value,
                        _ => return None,
                    }
                    Some(())
                })?,
                _ => return None,
            }
            Some(())
        })?;
        Some(Self {
            id: id?,
            ts: ts?,
            kind: kind?,
            name,
            page,
            props,
        })
    }
}

impl Batch {
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

    /// Reads a batch written by [`Batch::write_json`].
    pub(crate) fn read(r: &mut Reader<'_>) -> Option<Self> {
        let mut h = BatchHeader {
            v: 0,
            site_key: String::new(),
            anonymous_id: String::new(),
            user_id: None,
            auth: None,
            session_id: String::new(),
            seq: 0,
            sent_at: 0,
        };
        let mut events = Vec::new();
        r.object(|r, key| {
            match key {
                "v" => h.v = u32::try_from(r.u64()?).ok()?,
                "site_key" => h.site_key = r.string()?,
                "anonymous_id" => h.anonymous_id = r.string()?,
                "user_id" => h.user_id = Some(r.string()?),
                "auth" => h.auth = Some(r.string()?),
                "session_id" => h.session_id = r.string()?,
                "seq" => h.seq = r.u64()?,
                "sent_at" => h.sent_at = r.u64()?,
                "events" => r.array(|r| {
                    events.push(Event::read(r)?);
                    Some(())
                })?,
                _ => return None,
            }
            Some(())
        })?;
        Some(Self { header: h, events })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl From<&pulse_protocol::Event> for Event {
    fn from(e: &pulse_protocol::Event) -> Self {
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

#[cfg(not(target_arch = "wasm32"))]
impl From<&pulse_protocol::Batch> for Batch {
    fn from(b: &pulse_protocol::Batch) -> Self {
        Self {
            header: b.header.clone(),
            events: b.events.iter().map(Event::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_sim::sample_batch;

    #[test]
    fn json_is_the_protocols_and_reads_back() {
        for n in [1, 10, 50] {
            let batch = sample_batch(n);
            let ours = Batch::from(&batch);
            let text = ours.to_json();
            // Byte for byte what serde_json writes for the protocol's types.
            assert_eq!(text, serde_json::to_string(&batch).unwrap());
            let back = Batch::read(&mut Reader::new(&text)).unwrap();
            assert_eq!(back, ours);
            let parsed =
                pulse_protocol::parse_batch(text.as_bytes(), batch.header.sent_at).unwrap();
            assert_eq!(parsed.accepted.len(), n);
        }
    }

    #[test]
    fn checks_props_like_the_gateway() {
        let mut e = Event::from(&sample_batch(1).events[0]);
        assert_eq!(e.check(), Ok(()));
        e.props = r#"{"a":{"b":{"c":{"d":{}}}}}"#.into();
        assert_eq!(e.check(), Err(RejectReason::PropsTooDeep));
        e.props = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_PROPS_BYTES));
        assert_eq!(e.check(), Err(RejectReason::PropsTooLarge));
    }
}
