//! The records of one request, built once on the request's task and handed to the sink: every
//! record (an event's envelope and bytes as received, or a dead letter) in one buffer, each
//! behind room for the embedded log's frame header, which the embedded sink fills in place.
//! The Kafka sink sends the same record bytes as message values.

use pulse_protocol::{EventId, EventType, EventView, RecordPrefix, write_dead_letter};

use crate::log::{FRAME_HEADER, frame_header};

/// What a record is, for the sink's keys and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An accepted event.
    Event {
        /// Its id.
        id: EventId,
        /// Its type.
        kind: EventType,
    },
    /// A dead letter, with its reason.
    DeadLetter {
        /// The reason's code.
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Item {
    start: usize,
    len: usize,
    kind: RecordKind,
}

/// Records in one buffer.
#[derive(Debug, Default)]
pub struct Records {
    buf: Vec<u8>,
    items: Vec<Item>,
}

impl Records {
    /// Records written into `buf` (cleared first; a pooled buffer keeps its allocation).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self {
            buf,
            items: Vec::new(),
        }
    }

    fn begin(&mut self) -> usize {
        self.buf.extend_from_slice(&[0; FRAME_HEADER]);
        self.buf.len()
    }

    /// Adds the record of an accepted event: the batch's envelope, then the event as received.
    pub fn push_event(&mut self, prefix: &RecordPrefix, event: &EventView<'_>) {
        let start = self.begin();
        prefix.write(&mut self.buf, event.time, event.raw);
        self.items.push(Item {
            start,
            len: self.buf.len() - start,
            kind: RecordKind::Event {
                id: event.id,
                kind: event.kind,
            },
        });
    }

    /// Adds a dead letter for `raw`, refused for `reason`; returns the bytes it takes.
    pub fn push_dead_letter(
        &mut self,
        site: &str,
        reason: &'static str,
        index: Option<u32>,
        received_at: u64,
        raw: &[u8],
    ) -> usize {
        let start = self.begin();
        let len = write_dead_letter(&mut self.buf, site, reason, index, received_at, raw);
        self.items.push(Item {
            start,
            len,
            kind: RecordKind::DeadLetter { reason },
        });
        FRAME_HEADER + len
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Each record's bytes and kind, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], RecordKind)> {
        self.items
            .iter()
            .map(|item| (&self.buf[item.start..item.start + item.len], item.kind))
    }

    /// The buffer with every frame header filled in (length and CRC-32 of its record): what
    /// the embedded log writes as it is.
    pub(crate) fn into_frames(mut self) -> (Vec<u8>, u64) {
        for item in &self.items {
            let (head, payload) = self.buf[item.start - FRAME_HEADER..item.start + item.len]
                .split_at_mut(FRAME_HEADER);
            frame_header(head, payload);
        }
        (self.buf, self.items.len() as u64)
    }

    /// The buffer, for reuse.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}
