//! The batching and retry state machine of the tracker, sans IO.
//!
//! Events are pushed with [`Queue::push`]; the shell asks [`Queue::poll_transmit`] for a batch to
//! send, reports the answer with [`Queue::on_response`], and sleeps until
//! [`Queue::next_deadline`]. Every method takes the time (`now_ms`, milliseconds since the Unix
//! epoch) and, where jitter is needed, a random `u32`; none reads a clock or does IO.
//!
//! Policy: urgent events (page views, identify) make the queue due at once; others after
//! [`QueueConfig::max_delay_ms`] or when [`QueueConfig::max_batch_events`] are waiting. At most
//! one request is in flight, except after [`Queue::flush_all`] (page hidden), which sends
//! everything at once. Retryable failures resend the same batch (same event ids, same `seq`, a
//! fresh `sent_at`) after an exponential backoff with jitter, or after `Retry-After` when that is
//! longer; permanent failures drop the batch. At most [`QueueConfig::max_queued_events`] events
//! are kept: beyond that the oldest that is not in flight is dropped and counted.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pulse_protocol::BatchHeader;

use pulse_protocol::compact::{encode_record, mark_resent, restamp_record};

use crate::json::Reader;
use crate::{Batch, Event};

/// The bytes of an event's text, as a batch's size counts them.
fn text_len(e: &Event) -> usize {
    let page = &e.page;
    page.url.len()
        + page.referrer.len()
        + page.title.len()
        + e.props.len()
        + e.name.as_ref().map_or(0, String::len)
}

/// The first byte of a parked queue's text.
const PARKED_FORMAT: u8 = 1;

/// The header a parked batch is held under here (its own is in its record).
fn loose_header() -> BatchHeader {
    BatchHeader {
        v: 0,
        site_key: String::new(),
        anonymous_id: String::new(),
        user_id: None,
        auth: None,
        session_id: String::new(),
        seq: 0,
        sent_at: 0,
        resent: false,
    }
}

/// Tuning of the queue; [`QueueConfig::default`] is the tracker's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Longest a non-urgent event waits before its batch is due, in ms. Default 2000.
    pub max_delay_ms: u64,
    /// Events per batch; this many waiting events make a batch due at once. Default 50.
    pub max_batch_events: usize,
    /// Most bytes of events' text (URLs, title, name, props) per batch, and as many waiting
    /// make a batch due at once: a batch's body stays under the gateway's 64 KiB and the
    /// browser's 64 KiB for `keepalive` requests, however little it compresses. A larger event
    /// goes alone. Default 32768.
    pub max_batch_bytes: usize,
    /// Most events kept (waiting, in flight or awaiting a retry). Default 500.
    pub max_queued_events: usize,
    /// First retry delay before jitter, in ms; doubles on each failure. Default 1000.
    pub backoff_base_ms: u64,
    /// Longest backoff before jitter, in ms. Default 60000.
    pub backoff_cap_ms: u64,
    /// Longest `Retry-After` honoured, in ms (larger values are clamped). Default 600000.
    pub max_retry_after_ms: u64,
    /// A request unanswered for this long counts as a retryable failure, in ms. Default 30000.
    pub request_timeout_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_delay_ms: 2_000,
            max_batch_events: 50,
            max_batch_bytes: 32 * 1024,
            max_queued_events: 500,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 60_000,
            max_retry_after_ms: 600_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// A batch to send now. The shell compresses its record (`compact::encode_body`), POSTs it and
/// reports the answer with the same `token`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// Identifies this send attempt in [`Queue::on_response`].
    pub token: u64,
    /// The batch, with `sent_at` stamped to the time of this attempt; a batch parked by an
    /// earlier page has its header only (its events are in `record`).
    pub batch: Batch,
    /// The batch's compact record (`pulse_protocol::compact`), stamped likewise.
    pub record: Vec<u8>,
    /// How many events it carries.
    pub events: usize,
}

/// What came back for a request, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: the events are durable. The answer's body (JSON; the shell reads it with the
    /// browser's `JSON.parse`).
    Accepted(Vec<u8>),
    /// Network error, timeout, 408, 429 or 5xx: send the same batch again later.
    Retry {
        /// The server's `Retry-After`, in ms, when it gave one.
        retry_after_ms: Option<u64>,
    },
    /// Any other status: the batch will never be accepted; drop it.
    Permanent {
        /// The HTTP status.
        status: u16,
        /// The machine-readable error code from the body, when it had one.
        code: Option<String>,
    },
}

impl Outcome {
    /// The request failed before any answer (network error, CORS, abort).
    pub fn network_error() -> Self {
        Self::Retry {
            retry_after_ms: None,
        }
    }

    /// Classifies an HTTP answer from its status, `Retry-After` header (seconds) and body.
    pub fn from_http(status: u16, retry_after: Option<&str>, body: &[u8]) -> Self {
        match Self::from_status(status, retry_after, error_code(body)) {
            Self::Accepted(_) => Self::Accepted(body.to_vec()),
            other => other,
        }
    }

    /// Classifies an HTTP answer whose body the caller read (the browser shell, with
    /// `JSON.parse`): its status, `Retry-After` header (seconds) and error code. An accepted
    /// answer carries no body here.
    pub fn from_status(status: u16, retry_after: Option<&str>, code: Option<String>) -> Self {
        match status {
            200..=299 => Self::Accepted(Vec::new()),
            408 | 429 | 500..=599 => Self::Retry {
                retry_after_ms: retry_after
                    .map(|s| s.trim_ascii())
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .map(|s| {
                        s.bytes().fold(0u64, |n, b| {
                            n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
                        })
                    })
                    .map(|secs| secs.saturating_mul(1000)),
            },
            // The body named a dictionary that gateway does not hold: the shell drops it,
            // and the same batch goes again at once, without.
            409 if code.as_deref() == Some("unknown_dictionary") => Self::Retry {
                retry_after_ms: Some(0),
            },
            _ => Self::Permanent { status, code },
        }
    }
}

/// The `error.code` of an error body (`{"error":{"code":...}}`).
fn error_code(body: &[u8]) -> Option<String> {
    let mut code = None;
    let mut r = Reader::new(core::str::from_utf8(body).ok()?);
    r.object(|r, key| match key {
        "error" => r.object(|r, key| {
            if key == "code" {
                code = Some(r.string()?);
            } else {
                r.skip()?;
            }
            Some(())
        }),
        _ => r.skip(),
    })?;
    code
}

/// What the queue did with an answer, for the shell to act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Reaction {
    /// The batch is done.
    Accepted {
        /// The answer's body: the decision, rejected events, `signed`, `auth` (see the
        /// protocol's `CollectResponse`).
        body: Vec<u8>,
    },
    /// The batch will be resent at `at_ms`.
    WillRetry {
        /// When the batch becomes due again, ms since the epoch.
        at_ms: u64,
        /// How many attempts have failed so far.
        failures: u32,
    },
    /// The batch was refused for good and dropped.
    Dropped {
        /// How many events were dropped.
        events: usize,
        /// The HTTP status.
        status: u16,
        /// The machine-readable error code, for `console.warn`.
        code: Option<String>,
    },
    /// The token is not (or no longer) in flight: a late answer to a timed-out attempt.
    Stale,
}

#[derive(Clone, Debug)]
struct OutBatch {
    /// The batch formed on this page; for one parked by an earlier page, a header of version 0
    /// and no events: those stay in `parked`, never decoded here.
    batch: Batch,
    /// A parked batch's record and how many events it holds.
    parked: Option<(Vec<u8>, usize)>,
    failures: u32,
    not_before: u64,
    in_flight: Option<InFlight>,
    /// Sent at least once (every later send says so: `resent`).
    sent: bool,
}

impl OutBatch {
    fn count(&self) -> usize {
        self.parked
            .as_ref()
            .map_or(self.batch.events.len(), |p| p.1)
    }
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    token: u64,
    since: u64,
}

/// The batching and retry state machine. See the module docs for the policy.
#[derive(Debug)]
pub struct Queue {
    config: QueueConfig,
    /// Events not yet in a batch, oldest first.
    pending: Vec<Event>,
    /// When `pending` is due; `None` when it is empty.
    due_at: Option<u64>,
    /// Batches formed and not yet acknowledged, oldest first.
    outbox: Vec<OutBatch>,
    next_token: u64,
    dropped_total: u64,
}

impl Queue {
    /// An empty queue with this policy.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            pending: Vec::new(),
            due_at: None,
            outbox: Vec::new(),
            next_token: 0,
            dropped_total: 0,
        }
    }

    /// Queued events: waiting, in flight and awaiting a retry.
    pub fn len(&self) -> usize {
        self.pending.len() + self.outbox.iter().map(OutBatch::count).sum::<usize>()
    }

    /// True when no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Queues an event at `now_ms`. An urgent event makes the queue due at once (events pushed
    /// before the shell next polls still join the same batch). Returns how many events were
    /// dropped to stay within [`QueueConfig::max_queued_events`].
    pub fn push(&mut self, now_ms: u64, event: Event, urgent: bool) -> usize {
        self.pending.push(event);
        let full = self.pending.len() >= self.config.max_batch_events
            || self.pending.iter().map(text_len).sum::<usize>() >= self.config.max_batch_bytes;
        let delay = if urgent || full {
            0
        } else {
            self.config.max_delay_ms
        };
        self.make_due(now_ms.saturating_add(delay));
        self.enforce_bound()
    }

    /// The next batch to send, if one is due and nothing is in flight. `jitter` is a random
    /// number for the backoff of a request that timed out; `header` builds the header of a new
    /// batch (it takes the session's next sequence number, so it is called only when a batch is
    /// formed).
    pub fn poll_transmit(
        &mut self,
        now_ms: u64,
        jitter: u32,
        header: impl FnOnce() -> BatchHeader,
    ) -> Option<Transmit> {
        self.expire_timeouts(now_ms, jitter);
        if self.outbox.iter().any(|o| o.in_flight.is_some()) {
            return None;
        }
        if !self.outbox.is_empty() {
            let index = self.outbox.iter().position(|o| o.not_before <= now_ms)?;
            return Some(self.send(index, now_ms));
        }
        if self.due_at.is_some_and(|due| due <= now_ms) {
            self.form_batch(now_ms, header());
            return Some(self.send(self.outbox.len() - 1, now_ms));
        }
        None
    }

    /// Sends everything at once, ignoring delays, backoff and the one-in-flight rule: for when
    /// the page is being hidden and may not come back. `header` is called once per new batch.
    pub fn flush_all(
        &mut self,
        now_ms: u64,
        mut header: impl FnMut() -> BatchHeader,
    ) -> Vec<Transmit> {
        while !self.pending.is_empty() {
            self.form_batch(now_ms, header());
        }
        (0..self.outbox.len())
            .filter(|&i| self.outbox[i].in_flight.is_none())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|i| self.send(i, now_ms))
            .collect()
    }

    /// Applies the answer to the attempt `token`. `jitter` is a random number spreading the
    /// backoff of a retry.
    pub fn on_response(
        &mut self,
        now_ms: u64,
        token: u64,
        outcome: Outcome,
        jitter: u32,
    ) -> Reaction {
        let Some(index) = self
            .outbox
            .iter()
            .position(|o| o.in_flight.is_some_and(|f| f.token == token))
        else {
            return Reaction::Stale;
        };
        match outcome {
            Outcome::Accepted(body) => {
                self.outbox.remove(index);
                Reaction::Accepted { body }
            }
            Outcome::Retry { retry_after_ms } => {
                self.schedule_retry(index, now_ms, retry_after_ms, jitter)
            }
            Outcome::Permanent { status, code } => {
                // `index` came from `position` above.
                let events = self.outbox.remove(index).count();
                Reaction::Dropped {
                    events,
                    status,
                    code,
                }
            }
        }
    }

    /// Makes every batch awaiting a retry due at `now_ms` (the browser is back online: no
    /// reason to wait out the backoff).
    pub fn retry_now(&mut self, now_ms: u64) {
        for o in self.outbox.iter_mut().filter(|o| o.in_flight.is_none()) {
            o.not_before = o.not_before.min(now_ms);
        }
    }

    /// When the shell should call [`Queue::poll_transmit`] next (ms since the epoch), or `None`
    /// when only an answer or a new event can make anything due.
    pub fn next_deadline(&self) -> Option<u64> {
        let in_flight = self
            .outbox
            .iter()
            .filter_map(|o| o.in_flight)
            .map(|f| f.since.saturating_add(self.config.request_timeout_ms))
            .min();
        if in_flight.is_some() {
            return in_flight;
        }
        if !self.outbox.is_empty() {
            return self.outbox.iter().map(|o| o.not_before).min();
        }
        self.due_at
    }

    /// Every unacknowledged event (waiting, awaiting a retry, or in flight: a request sent as
    /// the page unloads may never be answered), to park in `localStorage`; the waiting ones go
    /// as one more batch, its header from `header` (called only when some wait). Resending an
    /// event that did arrive is harmless: the server dedupes by event id.
    ///
    /// The text holds one character per byte (U+0000 to U+00FF): a format byte (1), then for
    /// each batch its length, its number of events and its compact record
    /// (`pulse_protocol::compact`), which the next page sends as it is (restamped).
    pub fn export(&self, header: impl FnOnce() -> BatchHeader) -> String {
        let mut bytes = vec![PARKED_FORMAT];
        let mut put = |record: &[u8], events: usize| {
            for mut n in [record.len(), events] {
                while n >= 0x80 {
                    bytes.push(n as u8 | 0x80);
                    n >>= 7;
                }
                bytes.push(n as u8);
            }
            bytes.extend_from_slice(record);
        };
        for o in &self.outbox {
            match &o.parked {
                Some((record, events)) => put(record, *events),
                None => put(&encode_record(&o.batch), o.count()),
            }
        }
        if !self.pending.is_empty() {
            let batch = Batch {
                header: header(),
                events: self.pending.clone(),
            };
            put(&encode_record(&batch), batch.events.len());
        }
        bytes.into_iter().map(char::from).collect()
    }

    /// Queues the batches parked by [`Queue::export`] on an earlier page; they are due at once
    /// and keep their header and `seq`. Returns how many events were dropped to stay within the
    /// bound, or `None` (and changes nothing) when the text is not a parked queue.
    pub fn import(&mut self, now_ms: u64, text: &str) -> Option<usize> {
        let bytes: Vec<u8> = text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<_>>()?;
        let (&format, mut rest) = bytes.split_first()?;
        if format != PARKED_FORMAT {
            return None;
        }
        let varint = |rest: &mut &[u8]| -> Option<usize> {
            let (mut n, mut shift) = (0usize, 0);
            loop {
                let (&b, tail) = rest.split_first()?;
                *rest = tail;
                n |= usize::from(b & 0x7f).checked_shl(shift)?;
                shift += 7;
                if b < 0x80 {
                    return Some(n);
                }
            }
        };
        let mut parked = Vec::new();
        while !rest.is_empty() {
            let len = varint(&mut rest)?;
            let events = varint(&mut rest)?;
            let record = rest.get(..len)?;
            rest = rest.get(len..)?;
            // A record too short for its sent_at is no record.
            if record.len() < 8 {
                return None;
            }
            if events > 0 {
                parked.push((record.to_vec(), events));
            }
        }
        for p in parked {
            self.outbox.push(OutBatch {
                batch: Batch {
                    header: loose_header(),
                    events: Vec::new(),
                },
                parked: Some(p),
                failures: 0,
                not_before: now_ms,
                in_flight: None,
                sent: false,
            });
        }
        Some(self.enforce_bound())
    }

    fn make_due(&mut self, at: u64) {
        self.due_at = Some(self.due_at.map_or(at, |due| due.min(at)));
    }

    fn form_batch(&mut self, now_ms: u64, header: BatchHeader) {
        let mut bytes = 0;
        let take = self
            .pending
            .iter()
            .take(self.config.max_batch_events)
            .take_while(|e| {
                bytes += text_len(e);
                bytes <= self.config.max_batch_bytes
            })
            .count()
            .max(1);
        let events: Vec<Event> = self.pending.drain(..take).collect();
        if self.pending.is_empty() {
            self.due_at = None;
        }
        self.outbox.push(OutBatch {
            batch: Batch { header, events },
            parked: None,
            failures: 0,
            not_before: now_ms,
            in_flight: None,
            sent: false,
        });
    }

    fn send(&mut self, index: usize, now_ms: u64) -> Transmit {
        let token = self.next_token;
        self.next_token += 1;
        let out = &mut self.outbox[index];
        out.in_flight = Some(InFlight {
            token,
            since: now_ms,
        });
        out.batch.header.sent_at = now_ms;
        // A retry, or a batch an earlier page parked (it may have been delivered as the page
        // went): the gateway then drops the events it already holds.
        out.batch.header.resent = out.sent;
        out.sent = true;
        let record = match &mut out.parked {
            Some((record, _)) => {
                restamp_record(record, now_ms);
                mark_resent(record);
                record.clone()
            }
            None => encode_record(&out.batch),
        };
        Transmit {
            token,
            batch: out.batch.clone(),
            record,
            events: out.count(),
        }
    }

    fn expire_timeouts(&mut self, now_ms: u64, jitter: u32) {
        let timeout = self.config.request_timeout_ms;
        for index in 0..self.outbox.len() {
            let expired = self.outbox[index]
                .in_flight
                .is_some_and(|f| now_ms >= f.since.saturating_add(timeout));
            if expired {
                self.schedule_retry(index, now_ms, None, jitter);
            }
        }
    }

    fn schedule_retry(
        &mut self,
        index: usize,
        now_ms: u64,
        retry_after_ms: Option<u64>,
        jitter: u32,
    ) -> Reaction {
        let config = &self.config;
        let out = &mut self.outbox[index];
        out.failures = out.failures.saturating_add(1);
        let exp = out.failures.saturating_sub(1).min(32);
        let backoff = config
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(config.backoff_cap_ms);
        // Equal jitter: half fixed, half random, so retries of many pages spread out.
        let half = backoff / 2;
        // `half * jitter / 2^32 < half`, so the cast back to u64 cannot truncate.
        let delay = half + ((u128::from(half) * u128::from(jitter)) >> 32) as u64;
        let delay = delay.max(retry_after_ms.unwrap_or(0).min(config.max_retry_after_ms));
        out.in_flight = None;
        out.not_before = now_ms.saturating_add(delay);
        Reaction::WillRetry {
            at_ms: out.not_before,
            failures: out.failures,
        }
    }

    /// Drops the oldest events that are not in flight until the bound holds.
    fn enforce_bound(&mut self) -> usize {
        let mut dropped = 0;
        while self.len() > self.config.max_queued_events {
            if let Some(index) = self.outbox.iter().position(|o| o.in_flight.is_none()) {
                // A parked batch goes whole: its events are never decoded here.
                let out = &mut self.outbox[index];
                let gone = match out.parked {
                    Some((_, n)) => n,
                    None => {
                        out.batch.events.remove(0);
                        1
                    }
                };
                if out.count() == 0 || out.parked.is_some() {
                    self.outbox.remove(index);
                }
                dropped += gone - 1;
            } else if self.pending.is_empty() {
                break;
            } else {
                self.pending.remove(0);
            }
            dropped += 1;
        }
        if self.pending.is_empty() {
            self.due_at = None;
        }
        self.dropped_total += dropped as u64;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::{EventId, EventType, PageContext};

    const T0: u64 = 1_700_000_000_000;

    fn event(n: u128, kind: EventType) -> Event {
        Event {
            id: EventId(n),
            ts: T0,
            kind,
            name: None,
            page: PageContext {
                url: "https://news.example/a".into(),
                ..Default::default()
            },
            props: Default::default(),
        }
    }

    fn click(n: u128) -> Event {
        event(n, EventType::Click)
    }

    /// Hands out headers with increasing seq, like the session does.
    struct Headers(u64);
    impl Headers {
        fn next(&mut self) -> BatchHeader {
            let seq = self.0;
            self.0 += 1;
            BatchHeader {
                v: 1,
                site_key: "demo".into(),
                anonymous_id: "a".repeat(32),
                user_id: None,
                auth: None,
                session_id: "s".repeat(32),
                seq,
                sent_at: 0,
                resent: false,
            }
        }
    }

    fn ids(t: &Transmit) -> Vec<u128> {
        t.batch.events.iter().map(|e| e.id.0).collect()
    }

    fn ok_answer() -> Outcome {
        Outcome::from_http(
            200,
            None,
            br#"{"accepted":1,"rejected":[],"decision":{"action":"meter","remaining":2,"limit":3,"reason":"metered","fallback":false,"version":"v1"}}"#,
        )
    }

    #[test]
    fn non_urgent_events_wait_for_max_delay() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, click(1), false);
        q.push(T0 + 500, click(2), false);
        assert_eq!(q.next_deadline(), Some(T0 + 2_000));
        assert_eq!(q.poll_transmit(T0 + 1_999, 0, || h.next()), None);
        let t = q.poll_transmit(T0 + 2_000, 0, || h.next()).unwrap();
        assert_eq!(ids(&t), [1, 2]);
        assert_eq!(t.batch.header.seq, 0);
        assert_eq!(t.batch.header.sent_at, T0 + 2_000);
    }

    #[test]
    fn batch_is_due_at_max_batch_events() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        for i in 0..49 {
            q.push(T0, click(i), false);
        }
        assert_eq!(q.poll_transmit(T0 + 1, 0, || h.next()), None);
        q.push(T0 + 1, click(49), false);
        assert_eq!(q.next_deadline(), Some(T0 + 1));
        let t = q.poll_transmit(T0 + 1, 0, || h.next()).unwrap();
        assert_eq!(t.batch.events.len(), 50);
    }

    #[test]
    fn batches_stay_within_max_batch_bytes() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        let big = |n: u128| {
            let mut e = click(n);
            e.props = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3_000));
            e
        };
        // Ten 3 KB events fit a batch's 32 KiB; the eleventh makes it due at once.
        for i in 0..10 {
            q.push(T0, big(i), false);
        }
        assert_eq!(q.next_deadline(), Some(T0 + 2_000));
        q.push(T0, big(10), false);
        assert_eq!(q.next_deadline(), Some(T0));
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        assert_eq!(t.batch.events.len(), 10);
        // An event larger than a batch goes alone.
        let mut q = Queue::new(QueueConfig {
            max_batch_bytes: 100,
            ..QueueConfig::default()
        });
        q.push(T0, big(1), true);
        q.push(T0, click(2), true);
        assert_eq!(ids(&q.poll_transmit(T0, 0, || h.next()).unwrap()), [1]);
        let all = q.flush_all(T0, || h.next());
        assert_eq!(all.iter().map(ids).collect::<Vec<_>>(), [vec![2]]);
    }

    #[test]
    fn urgent_event_is_due_at_once_and_same_tick_events_join() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        q.push(T0, click(2), false);
        assert_eq!(q.next_deadline(), Some(T0));
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        assert_eq!(ids(&t), [1, 2]);
        assert!(q.pending.is_empty());
    }

    #[test]
    fn one_request_in_flight() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        let t1 = q.poll_transmit(T0, 0, || h.next()).unwrap();
        q.push(T0 + 1, event(2, EventType::Identify), true);
        assert_eq!(q.poll_transmit(T0 + 1, 0, || h.next()), None);
        // Only the timeout of the request in flight can wake the shell now.
        assert_eq!(q.next_deadline(), Some(T0 + 30_000));
        let r = q.on_response(T0 + 50, t1.token, ok_answer(), 0);
        let Reaction::Accepted { body } = r else {
            panic!("{r:?}")
        };
        assert!(body.starts_with(br#"{"accepted":1"#));
        let t2 = q.poll_transmit(T0 + 50, 0, || h.next()).unwrap();
        assert_eq!((ids(&t2), t2.batch.header.seq), (vec![2], 1));
        assert_eq!(
            q.on_response(T0 + 60, t1.token, ok_answer(), 0),
            Reaction::Stale
        );
    }

    #[test]
    fn retry_resends_same_batch_with_backoff_and_fresh_sent_at() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        // Backoff before jitter: 1 s, 2 s, 4 s ... capped at 60 s; jitter 0 gives half of it.
        let mut now = T0;
        let mut token = t.token;
        for (failure, expect) in [(1, 500), (2, 1_000), (3, 2_000), (7, 30_000), (9, 30_000)] {
            loop {
                let r = q.on_response(now, token, Outcome::network_error(), 0);
                let Reaction::WillRetry { at_ms, failures } = r else {
                    panic!("{r:?}")
                };
                if failures == failure {
                    assert_eq!(at_ms - now, expect, "failure {failure}");
                }
                assert_eq!(q.poll_transmit(at_ms - 1, 0, || h.next()), None);
                now = at_ms;
                let again = q.poll_transmit(now, 0, || h.next()).unwrap();
                assert_eq!((ids(&again), again.batch.header.seq), (vec![1], 0));
                assert_eq!(again.batch.header.sent_at, now);
                token = again.token;
                if failures == failure {
                    break;
                }
            }
        }
        // Full jitter range: u32::MAX gives (almost) the whole backoff.
        let r = q.on_response(now, token, Outcome::network_error(), u32::MAX);
        let Reaction::WillRetry { at_ms, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(at_ms - now, 59_999);
    }

    #[test]
    fn retry_after_and_status_classes() {
        assert_eq!(
            Outcome::from_http(503, Some("7"), b""),
            Outcome::Retry {
                retry_after_ms: Some(7_000)
            }
        );
        for status in [408, 429, 500, 502] {
            assert!(matches!(
                Outcome::from_http(status, None, b""),
                Outcome::Retry { .. }
            ));
        }
        assert_eq!(
            Outcome::from_http(
                401,
                None,
                br#"{"error":{"code":"unknown_site_key","message":"no"}}"#
            ),
            Outcome::Permanent {
                status: 401,
                code: Some("unknown_site_key".into())
            }
        );
        assert_eq!(
            Outcome::from_http(400, None, b"garbage"),
            Outcome::Permanent {
                status: 400,
                code: None
            }
        );
        assert_eq!(
            Outcome::from_http(204, None, b""),
            Outcome::Accepted(Vec::new())
        );

        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        let r = q.on_response(T0, t.token, Outcome::from_http(503, Some("7"), b""), 0);
        assert_eq!(
            r,
            Reaction::WillRetry {
                at_ms: T0 + 7_000,
                failures: 1
            }
        );
        // A huge Retry-After is clamped.
        let t = q.poll_transmit(T0 + 7_000, 0, || h.next()).unwrap();
        let r = q.on_response(
            T0 + 7_000,
            t.token,
            Outcome::from_http(429, Some("999999"), b""),
            0,
        );
        assert_eq!(
            r,
            Reaction::WillRetry {
                at_ms: T0 + 7_000 + 600_000,
                failures: 2
            }
        );
    }

    #[test]
    fn an_unknown_dictionary_is_retried_at_once_any_other_409_is_not() {
        let code = |c: &str| Some(c.to_owned());
        assert_eq!(
            Outcome::from_status(409, None, code("unknown_dictionary")),
            Outcome::Retry {
                retry_after_ms: Some(0)
            }
        );
        assert!(matches!(
            Outcome::from_status(409, None, code("other")),
            Outcome::Permanent { status: 409, .. }
        ));
    }

    #[test]
    fn permanent_failure_drops_the_batch() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        q.push(T0, click(2), false);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        let outcome = Outcome::from_http(
            403,
            None,
            br#"{"error":{"code":"origin_not_allowed","message":"x"}}"#,
        );
        assert_eq!(
            q.on_response(T0 + 5, t.token, outcome, 0),
            Reaction::Dropped {
                events: 2,
                status: 403,
                code: Some("origin_not_allowed".into())
            }
        );
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn back_online_the_retry_is_due_at_once() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        q.on_response(T0, t.token, Outcome::network_error(), 0);
        assert_eq!(q.next_deadline(), Some(T0 + 500));
        q.retry_now(T0 + 100);
        assert_eq!(q.next_deadline(), Some(T0 + 100));
        assert_eq!(
            ids(&q.poll_transmit(T0 + 100, 0, || h.next()).unwrap()),
            [1]
        );
    }

    #[test]
    fn timeout_counts_as_retryable_failure() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(1, EventType::PageView), true);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        assert_eq!(q.poll_transmit(T0 + 29_999, 0, || h.next()), None);
        // At the timeout the attempt fails; the retry waits for its backoff (500 ms here).
        assert_eq!(q.poll_transmit(T0 + 30_000, 0, || h.next()), None);
        assert_eq!(q.next_deadline(), Some(T0 + 30_500));
        let again = q.poll_transmit(T0 + 30_500, 0, || h.next()).unwrap();
        assert_eq!(ids(&again), [1]);
        assert_eq!(
            q.on_response(T0 + 30_501, t.token, ok_answer(), 0),
            Reaction::Stale
        );
    }

    fn bound_case(pushes: u128) -> (Queue, usize) {
        let mut q = Queue::new(QueueConfig::default());
        let dropped = (0..pushes).map(|i| q.push(T0, click(i), false)).sum();
        (q, dropped)
    }

    #[test]
    fn queue_bound_at_limit_minus_one_limit_and_plus_one() {
        let (q, dropped) = bound_case(499);
        assert_eq!((q.len(), dropped, q.dropped_total()), (499, 0, 0));
        let (q, dropped) = bound_case(500);
        assert_eq!((q.len(), dropped, q.dropped_total()), (500, 0, 0));
        let (mut q, dropped) = bound_case(501);
        assert_eq!((q.len(), dropped, q.dropped_total()), (500, 1, 1));
        // The oldest (id 0) went.
        let mut h = Headers(0);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        assert_eq!(t.batch.events[0].id, EventId(1));
    }

    #[test]
    fn bound_never_drops_events_in_flight() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        for i in 0..50 {
            q.push(T0, click(i), false);
        }
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        for i in 50..551 {
            q.push(T0, click(i), false);
        }
        assert_eq!((q.len(), q.dropped_total()), (500, 51));
        assert_eq!(q.pending.first().map(|e| e.id), Some(EventId(101)));
        assert!(matches!(
            q.on_response(T0, t.token, ok_answer(), 0),
            Reaction::Accepted { .. }
        ));
    }

    #[test]
    fn flush_all_sends_everything_at_once() {
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(0);
        q.push(T0, event(0, EventType::PageView), true);
        let first = q.poll_transmit(T0, 0, || h.next()).unwrap();
        // A failed batch waiting for its retry, then 120 more events.
        q.on_response(T0, first.token, Outcome::network_error(), 0);
        for i in 1..=120 {
            q.push(T0 + 1, click(i), false);
        }
        let sent = q.flush_all(T0 + 2, || h.next());
        let sizes: Vec<usize> = sent.iter().map(|t| t.batch.events.len()).collect();
        assert_eq!(sizes, [1, 50, 50, 20]);
        let seqs: Vec<u64> = sent.iter().map(|t| t.batch.header.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert!(sent.iter().all(|t| t.batch.header.sent_at == T0 + 2));
        // Nothing more to send until answers come; a second flush sends nothing again.
        assert!(q.flush_all(T0 + 3, || h.next()).is_empty());
        for t in &sent {
            assert!(matches!(
                q.on_response(T0 + 4, t.token, ok_answer(), 0),
                Reaction::Accepted { .. }
            ));
        }
        assert!(q.is_empty());
    }

    #[test]
    fn export_import_keeps_batches_and_events() {
        use pulse_protocol::compact::decode_record;
        let mut q = Queue::new(QueueConfig::default());
        let mut h = Headers(5);
        q.push(T0, event(1, EventType::PageView), true);
        let t = q.poll_transmit(T0, 0, || h.next()).unwrap();
        q.push(T0 + 1, click(2), false);
        let parked = q.export(|| h.next());

        let mut next = Queue::new(QueueConfig::default());
        assert_eq!(next.import(T0 + 10_000, &parked), Some(0));
        assert_eq!(next.len(), 2);
        let mut h2 = Headers(9);
        let read = |t: &Transmit| {
            let b = decode_record(&t.record).unwrap();
            let ids: Vec<u128> = b.events.iter().map(|e| e.id.0).collect();
            (ids, b.header.seq, b.header.sent_at, t.events)
        };
        let a = next.poll_transmit(T0 + 10_000, 0, || h2.next()).unwrap();
        assert_eq!(read(&a), (vec![1], t.batch.header.seq, T0 + 10_000, 1));
        // Its answer is for the page that parked it.
        assert!(a.batch.events.is_empty());
        next.on_response(T0 + 10_001, a.token, ok_answer(), 0);
        let b = next.poll_transmit(T0 + 10_001, 0, || h2.next()).unwrap();
        assert_eq!(read(&b), (vec![2], 6, T0 + 10_001, 1));
        // A retry of a parked batch is restamped.
        next.on_response(T0 + 10_002, b.token, Outcome::network_error(), 0);
        let again = next.poll_transmit(T0 + 20_000, 0, || h2.next()).unwrap();
        assert_eq!(read(&again).2, T0 + 20_000);
        // Parked batches beyond the bound go whole.
        let mut small = Queue::new(QueueConfig {
            max_queued_events: 1,
            ..QueueConfig::default()
        });
        let mut two = Queue::new(QueueConfig::default());
        two.push(T0, click(7), false);
        two.push(T0, click(8), false);
        assert_eq!(small.import(T0, &two.export(|| h.next())), Some(2));
        assert!(small.is_empty());

        // Text that is not a parked queue (an older tracker's JSON, a record cut short).
        assert_eq!(next.import(T0, "{nope"), None);
        assert_eq!(next.import(T0, &parked[..parked.len() - 1]), None);
        assert_eq!(next.import(T0, "\u{1}\u{5}ab"), None);
        assert_eq!(
            Queue::new(QueueConfig::default()).import(T0, "\u{1}"),
            Some(0)
        );
    }
}
