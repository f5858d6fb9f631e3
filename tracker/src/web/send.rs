//! Sending: the queue pumped into `fetch` requests, the single wake-up timer, the flush when
//! the page is hidden, and the answers (read with the browser's `JSON.parse`).

use core::sync::atomic::AtomicUsize;

use pulse_protocol::compact::encode_body;

use js_sys::{Array, Object, Uint8Array};

use super::dict;
use super::js::{absent, call, get, get_str, set, storage, window};
use super::*;

/// Most request bytes Chromium lets `keepalive` requests have in flight at once (64 KiB).
const KEEPALIVE_BUDGET: usize = 64 * 1024;

/// Bytes of this page's `keepalive` requests not yet answered.
static KEEPALIVE_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Sends every batch that is due, then re-arms the timer.
pub(super) fn pump() {
    loop {
        let next = with(|t| {
            if !t.consent.may_send() {
                return None;
            }
            let key = t.site_key.clone()?;
            let now = now();
            let session = &mut t.session;
            let transmit = t
                .queue
                .poll_transmit(now, random_u32(), || session.next_header(&key, now))?;
            store(STATE_KEY, Some(&session.to_json()));
            Some((t.url.clone(), transmit))
        })
        .flatten();
        match next {
            Some((url, transmit)) => send(&url, transmit),
            None => break,
        }
    }
    schedule();
}

/// Arms the single wake-up timer for the queue's next deadline.
pub(super) fn schedule() {
    let window = window();
    with(|t| {
        t.site_key.as_ref()?;
        let deadline = t.queue.next_deadline();
        if let Some((handle, at)) = t.timer {
            if Some(at) == deadline {
                return None;
            }
            let _ = call(&window, "clearTimeout", &[&handle.into()]);
            t.timer = None;
        }
        // Nothing is sent before consent: no timer for it either.
        let at = deadline.filter(|_| t.consent.may_send())?;
        let delay = at.saturating_sub(now()).min(i32::MAX as u64) as f64;
        let tick = TICK.try_lock()?.clone()?;
        let handle = call(&window, "setTimeout", &[&tick, &delay.into()]).ok()?;
        t.timer = Some((handle.as_f64()?, at));
        Some(())
    });
}

/// The page is being hidden (and may never come back): send the engagement and everything
/// queued at once, and park what is unacknowledged for the next page.
pub(super) fn on_hidden() {
    send_engagement(None);
    let now = now();
    let sends = with(|t| {
        if !t.consent.may_send() {
            return None;
        }
        let key = t.site_key.clone()?;
        let session = &mut t.session;
        let sends = t.queue.flush_all(now, || session.next_header(&key, now));
        store(STATE_KEY, Some(&session.to_json()));
        park(t);
        Some((t.url.clone(), sends))
    })
    .flatten();
    if let Some((url, sends)) = sends {
        for transmit in sends {
            send(&url, transmit);
        }
    }
}

/// Queues the engagement on `page` (by default the page as it is now) since it was last sent,
/// when there is any; the page counts as hidden from now on.
pub(super) fn send_engagement(page: Option<PageContext>) {
    let now = now();
    let engagement = with(|t| {
        t.engagement.on_visibility(now, false);
        t.engagement.take(now)
    })
    .flatten();
    if let Some((read_depth, active_ms)) = engagement {
        let mut props = String::from("{\"read_depth\":");
        push_u64(&mut props, u64::from(read_depth));
        props.push_str(",\"active_ms\":");
        push_u64(&mut props, active_ms);
        props.push('}');
        push(
            EventType::Engagement,
            None,
            props,
            false,
            Some(page.unwrap_or_else(page_context)),
        );
    }
}

/// Keeps the unacknowledged events in `localStorage` for the next page, or clears them.
/// Waiting events go as one more batch of this session, under the sequence number this page
/// will send them with.
pub(super) fn park(t: &Tracker) {
    if t.queue.is_empty() {
        store(QUEUE_KEY, None);
    } else {
        let key = t.site_key.as_deref().unwrap_or_default();
        let header = || t.session.peek_header(key, now());
        store(QUEUE_KEY, Some(&t.queue.export(header)));
    }
}

/// Starts the request at once (so it leaves even from `pagehide`) and handles its answer later.
fn send(url: &str, transmit: Transmit) {
    let body = dict::with(|d| encode_body(&transmit.record, d));
    if DEBUG.load(Relaxed) {
        let what = "send ".to_owned() + &u64_string(transmit.events as u64) + " event(s), bytes:";
        debug(&what, &(body.len() as f64).into());
    }
    // A CORS simple request: POST, no headers; `keepalive` lets it outlive the page, within
    // the browser's budget for such requests in flight (beyond it, fetch fails; the events are
    // parked for the next page anyway).
    let in_flight = KEEPALIVE_IN_FLIGHT.load(Relaxed);
    let held = if in_flight + body.len() <= KEEPALIVE_BUDGET {
        KEEPALIVE_IN_FLIGHT.store(in_flight + body.len(), Relaxed);
        body.len()
    } else {
        0
    };
    let release = move || {
        let in_flight = KEEPALIVE_IN_FLIGHT.load(Relaxed);
        KEEPALIVE_IN_FLIGHT.store(in_flight.saturating_sub(held), Relaxed);
    };
    let token = transmit.token;
    // A batch made only of events parked by an earlier page answers for that page: its decision
    // is not this page's, so it is not applied here.
    let href = get_str(&get(&window(), "location"), "href").unwrap_or_default();
    let here = truncate(
        with(|t| keep_query(&href, &t.query)).unwrap_or(href),
        MAX_URL_LEN,
    );
    let for_this_page = transmit.batch.events.iter().any(|e| e.page.url == here);
    // `pulse.s` (the bootstrap in pulse.js) POSTs it as a CORS simple request and calls back
    // with the status, `Retry-After` (readable when the server exposes it) and the answer
    // parsed by the browser (never copied into the Wasm); status 0: no answer.
    let answered = Closure::once_into_js(
        move |status: JsValue, retry_after: JsValue, answer: JsValue| {
            release();
            let status = status.as_f64().unwrap_or(0.0) as u16;
            let code = get_str(&get(&answer, "error"), "code");
            if code.as_deref() == Some("unknown_dictionary") {
                dict::drop_held();
            }
            let outcome = match status {
                0 => Outcome::network_error(),
                _ => Outcome::from_status(status, retry_after.as_string().as_deref(), code),
            };
            on_answer(token, outcome, for_this_page, &answer);
        },
    );
    let body = Uint8Array::from(body.as_slice());
    let args: [&JsValue; 4] = [&url.into(), &body, &(held > 0).into(), &answered];
    if call(&get(&window(), "pulse"), "s", &args).is_err() {
        release();
        on_answer(token, Outcome::network_error(), false, &JsValue::UNDEFINED);
    }
}

fn on_answer(token: u64, outcome: Outcome, for_this_page: bool, answer: &JsValue) {
    if DEBUG.load(Relaxed) && !matches!(outcome, Outcome::Accepted(_)) {
        debug(
            "no answer to keep:",
            &JsValue::from_str(&format_outcome(&outcome)),
        );
    }
    let reaction = with(|t| {
        let reaction = t.queue.on_response(now(), token, outcome, random_u32());
        if storage().is_some_and(|s| load(&s, QUEUE_KEY).is_some()) {
            park(t);
        }
        reaction
    });
    match reaction {
        Some(Reaction::Accepted { .. }) => on_accepted(answer, for_this_page),
        Some(Reaction::Dropped {
            events,
            status,
            code,
        }) => warn(
            &("batch of ".to_owned()
                + &u64_string(events as u64)
                + " event(s) refused ("
                + &u64_string(u64::from(status))
                + "): "
                + code.as_deref().unwrap_or("unknown")),
        ),
        Some(Reaction::WillRetry { .. } | Reaction::Stale) | None => {}
    }
    pump();
}

/// A failed attempt, for the debug log: `retry` or the status of a refusal.
fn format_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Permanent { status, .. } => {
            "refused ".to_owned() + &u64_string(u64::from(*status))
        }
        _ => "retry".to_owned(),
    }
}

/// `value` as text: a string as is, a number in decimal.
fn text_of(value: &JsValue) -> String {
    value
        .as_string()
        .or_else(|| value.as_f64().map(|n| u64_string(n as u64)))
        .unwrap_or_default()
}

/// Reads a 2xx answer: warns of rejected events and of an `auth` token that vouched for
/// nothing, and applies the decision.
fn on_accepted(answer: &JsValue, for_this_page: bool) {
    let answer = answer.clone();
    if !answer.is_object() {
        return;
    }
    debug("answer", &answer);
    dict::named(&answer);
    let rejected = get(&answer, "rejected");
    if Array::is_array(&rejected) {
        for r in Array::from(&rejected).iter() {
            warn(
                &("event ".to_owned()
                    + &text_of(&get(&r, "index"))
                    + " rejected: "
                    + &text_of(&get(&r, "reason"))),
            );
        }
    }
    if let Some(why) = get_str(&answer, "auth").filter(|a| a != "valid") {
        warn(
            &("the auth token vouched for nothing (".to_owned()
                + &why
                + "): counted as an anonymous reader, no entitlements"),
        );
    }
    let decision = get(&answer, "decision");
    if for_this_page && decision.is_object() {
        apply(decision, get_str(&answer, "signed").as_deref());
    }
}

/// The traits of `identify` as props, without `token` (returned apart: it goes with every
/// batch, never into the event).
pub(super) fn without_token(traits: &JsValue) -> (String, Option<String>) {
    if absent(traits) || !traits.is_object() {
        return (props_of(traits), None);
    }
    let token = get_str(traits, "token");
    let copy = Object::assign(&Object::new(), traits.unchecked_ref());
    set(&copy, "token", &JsValue::UNDEFINED);
    (props_of(&copy), token)
}
