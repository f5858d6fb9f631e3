//! The browser shell (wasm32 only): the IO boundary of the tracker.
//!
//! It replaces the snippet's `window.pulse` stub with a real function, runs the commands queued
//! before the script loaded, listens to the page (clicks, forms, scrolling, visibility,
//! navigation, connectivity), reads the clock
//! (`Date.now()`) and randomness (`crypto.getRandomValues`), drives the pure [`Queue`] with timers,
//! sends batches with `fetch` (a CORS simple request: POST, no headers, keepalive), applies
//! decisions to the DOM, and keeps the session and unsent events in `localStorage`. It never
//! throws into the page: failures are reported with `console.warn`. The page's objects are
//! reached through `Reflect` (`js.rs`), not typed `web-sys` bindings, to keep the Wasm small.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use spin::Mutex;

use js_sys::{Array, Date, Function, JSON, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use pulse_protocol::json_text::{push_key, push_str, push_u64};
use pulse_protocol::{EventId, EventType, MAX_TITLE_LEN, MAX_URL_LEN, PageContext};

use crate::Consent;
use crate::json::u64_string;
use crate::url::{DEFAULT_QUERY_ALLOW, campaign_of, keep_query};
use crate::{Engagement, Event, Outcome, Queue, QueueConfig, Reaction, Session, Transmit};

mod consent;
mod decision;
mod dict;
mod js;
mod nav;
mod page;
mod send;
use decision::{apply, call_back};
use js::{absent, call, console_warn, document, get, get_str, set, visible, window};
use page::{meta_content, page_context, props_of, read_depth, truncate};
use send::{on_hidden, pump, schedule, without_token};

/// `localStorage` key of the session state.
const STATE_KEY: &str = "pulse_state";
/// `localStorage` key of the unacknowledged events, parked for the next page.
const QUEUE_KEY: &str = "pulse_queue";
/// `localStorage` key of the last decision's `<html>` attributes, which the snippet sets
/// before the page's first paint (README.md).
const DECISION_KEY: &str = "pulse_decision";
/// Longest `text` of a click event, in characters.
const MAX_CLICK_TEXT: usize = 100;

struct Tracker {
    /// Set by `init`; nothing is sent before.
    site_key: Option<String>,
    /// The URL `pulse.js` was loaded from (`pulse.src`, left by its bootstrap).
    script: Option<String>,
    /// `endpoint?k=key`.
    url: String,
    session: Session,
    queue: Queue,
    engagement: Engagement,
    /// The latest decision, as the JS object handed to the page.
    decision: Option<JsValue>,
    callbacks: Vec<Function>,
    /// The pending wake-up timer: its handle and due time.
    timer: Option<(f64, u64)>,
    /// The next event's id: random at each page load, then one more per event (unique as
    /// random ids are, and a run of them costs one id on the wire).
    next_id: u128,
    /// The page the last page view was for: its URL as sent, without the fragment, and its
    /// context then (the page its engagement is reported for).
    page: String,
    page_context: Option<PageContext>,
    /// Query parameters kept in URLs (`init`'s `query`, default `utm_*`).
    query: Vec<String>,
    /// What the reader allowed (`init`'s `consent`, `pulse('consent')`, privacy signals).
    consent: Consent,
}

// Statics rather than `thread_local!` (std only): the Wasm runs on one thread, without the
// `atomics` feature, where these locks and atomics are plain loads and stores. A lock is only
// tried (`try_lock`) where it may be held already.
static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);
/// The function timers call; created once.
static TICK: Mutex<Option<Function>> = Mutex::new(None);
/// Whether the reader's consent lets the tracker keep the session and unsent events in
/// storage (read where the tracker's state is borrowed already).
static MAY_STORE: AtomicBool = AtomicBool::new(true);
/// `pulse('debug', true)`: log what is recorded, sent and received.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Runs `f` on the tracker state unless it is missing or already borrowed (a re-entrant call
/// from page code, which is then skipped rather than panicking).
fn with<R>(f: impl FnOnce(&mut Tracker) -> R) -> Option<R> {
    TRACKER.try_lock()?.as_mut().map(f)
}

fn warn(message: &str) {
    console_warn(&[&JsValue::from_str(&(String::from("pulse: ") + message))]);
}

/// `console.log` of `message` and `detail` when debugging is on.
fn debug(message: &str, detail: &JsValue) {
    if DEBUG.load(Relaxed) {
        let message = JsValue::from_str(&(String::from("pulse: ") + message));
        let _ = call(&get(&window(), "console"), "log", &[&message, detail]);
    }
}

fn warn_js(context: &str, error: &JsValue) {
    console_warn(&[
        &JsValue::from_str(&(String::from("pulse: ") + context)),
        error,
    ]);
}

fn now() -> u64 {
    Date::now() as u64
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let array = Uint8Array::new_with_length(N as u32);
    let filled = call(&get(&window(), "crypto"), "getRandomValues", &[&array]).is_ok();
    if filled {
        // Byte by byte rather than `copy_to`, whose length assertion alone kept `core::fmt`'s
        // integer formatting in the Wasm (a `Debug` vtable no table pass can drop).
        for (i, b) in (0..).zip(&mut bytes) {
            *b = array.get_index(i);
        }
    } else {
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}

fn random_u32() -> u32 {
    u32::from_le_bytes(random::<4>())
}

/// `storage.getItem(key)`.
fn load(storage: &JsValue, key: &str) -> Option<String> {
    call(storage, "getItem", &[&key.into()]).ok()?.as_string()
}

/// Writes (when consent allows storage) or removes a `localStorage` item.
fn store(key: &str, value: Option<&str>) {
    if value.is_some() && !MAY_STORE.load(Relaxed) {
        return;
    }
    if let Some(storage) = js::storage() {
        // Storage may be full or disabled; the tracker works without it.
        let _ = match value {
            Some(v) => call(&storage, "setItem", &[&key.into(), &v.into()]),
            None => call(&storage, "removeItem", &[&key.into()]),
        };
    }
}

/// Entry point, run once when `pulse_bg.wasm` is instantiated.
#[wasm_bindgen(start)]
fn start() {
    if let Err(error) = install() {
        warn_js("could not start", &error);
    }
}

fn install() -> Result<(), JsValue> {
    let window = window();
    let now = now();
    let storage = js::storage();
    let stored = storage.as_ref().and_then(|s| load(s, STATE_KEY));
    let session = stored
        .and_then(|text| {
            // Read by the browser (`JSON.parse`); the fields are checked by `Session::restore`.
            let o = call(&get(&window, "JSON"), "parse", &[&text.into()]).ok()?;
            let number = |key| js::get_f64(&o, key).map(|n| n as u64);
            let mut session = Session::restore(
                get_str(&o, "anonymous_id")?,
                get_str(&o, "session_id")?,
                get_str(&o, "user_id"),
                get_str(&o, "auth"),
                number("last_activity_ms")?,
                number("next_seq")?,
            )?;
            session.campaign = get_str(&o, "campaign");
            Some(session)
        })
        .unwrap_or_else(|| Session::new(now, random(), random()));
    dict::restore();
    let mut queue = Queue::new(QueueConfig::default());
    if let Some(parked) = storage.as_ref().and_then(|s| load(s, QUEUE_KEY)) {
        queue.import(now, &parked);
        store(QUEUE_KEY, None);
    }
    let visible = visible();
    let next_id = session.first_event_id(random());
    // Set once, before anything else can hold it.
    *TRACKER.lock() = Some(Tracker {
        site_key: None,
        script: get_str(&get(&window, "pulse"), "src"),
        url: String::new(),
        session,
        queue,
        engagement: Engagement::new(now, visible),
        decision: None,
        callbacks: Vec::new(),
        timer: None,
        next_id,
        query: vec![DEFAULT_QUERY_ALLOW.to_owned()],
        consent: Consent::Granted,
        page: String::new(),
        page_context: None,
    });
    // Leaked on purpose: the timer callback lives as long as the page.
    let tick = Closure::<dyn Fn()>::new(|| {
        with(|t| t.timer = None);
        pump();
    });
    *TICK.lock() = Some(tick.as_ref().unchecked_ref::<Function>().clone());
    tick.forget();

    // The commands the snippet queued before this script ran.
    let stub = get(&window, "pulse");
    let queued = if stub.is_function() {
        get(&stub, "q")
    } else {
        JsValue::UNDEFINED
    };

    // Leaked on purpose: `window.pulse` lives as long as the page.
    let dispatch = Closure::<dyn Fn(JsValue, JsValue, JsValue)>::new(command);
    let pulse: &Function = dispatch.as_ref().unchecked_ref();
    let decision = Closure::<dyn Fn() -> JsValue>::new(|| {
        with(|t| t.decision.clone())
            .flatten()
            .unwrap_or(JsValue::NULL)
    });
    set(pulse, "decision", decision.as_ref());
    decision.forget();
    // The reader's anonymous id, for the publisher's server to ask about (`POST /v1/decide`):
    // pages put it in a first-party cookie or a request header of their own.
    let reader = Closure::<dyn Fn() -> JsValue>::new(|| {
        with(|t| JsValue::from_str(&t.session.anonymous_id)).unwrap_or(JsValue::NULL)
    });
    set(pulse, "reader", reader.as_ref());
    reader.forget();
    // The bootstrap's helpers (pulse.js): sending a batch, fetching a dictionary.
    for helper in ["s", "d"] {
        set(pulse, helper, &get(&stub, helper));
    }
    set(&window, "pulse", pulse);
    dispatch.forget();

    listen(&window, &document())?;
    if !absent(&queued) {
        for args in Array::from(&queued).iter() {
            let args = Array::from(&args);
            command(args.get(0), args.get(1), args.get(2));
        }
    }
    Ok(())
}

/// Adds a listener that lives as long as the page (the closure is leaked on purpose).
/// A plain function, not a closure: every listener then shares one closure type, and each
/// closure type costs its own glue in the Wasm and in `pulse.js`.
fn on(target: &JsValue, kind: &str, capture: bool, handler: fn(JsValue)) -> Result<(), JsValue> {
    let closure = Closure::<dyn Fn(JsValue)>::new(handler);
    call(
        target,
        "addEventListener",
        &[&kind.into(), closure.as_ref(), &capture.into()],
    )?;
    closure.forget();
    Ok(())
}

fn listen(window: &JsValue, document: &JsValue) -> Result<(), JsValue> {
    on(document, "click", true, |event| {
        let target = get(&event, "target");
        if let Ok(el) = call(
            &target,
            "closest",
            &[&"a, button, [data-pulse-click]".into()],
        ) && !absent(&el)
        {
            on_click(&el);
        }
    })?;
    for kind in [
        "scroll",
        "keydown",
        "pointerdown",
        "pointermove",
        "touchstart",
    ] {
        on(window, kind, true, |_| {
            let depth = read_depth();
            with(|t| {
                t.engagement.on_activity(now());
                t.engagement.on_depth(depth);
            });
        })?;
    }
    on(document, "visibilitychange", false, |_| {
        if !visible() {
            on_hidden();
        } else {
            with(|t| t.engagement.on_visibility(now(), true));
        }
    })?;
    on(document, "submit", true, |event| {
        on_submit(&get(&event, "target"))
    })?;
    // Back online: what waits for a retry goes now, not after its backoff.
    on(window, "online", false, |_| {
        with(|t| t.queue.retry_now(now()));
        pump();
    })?;
    on(window, "pagehide", false, |_| on_hidden())
}

/// A form sent: a `custom` event `form_submit` with the form's `id` or `name` and its `action`
/// (stripped like every URL); never a field's value.
fn on_submit(form: &JsValue) {
    let mut props = String::from("{");
    push_key(&mut props, "form");
    let name = get_str(form, "id")
        .filter(|id| !id.is_empty())
        .or_else(|| {
            call(form, "getAttribute", &[&"name".into()])
                .ok()?
                .as_string()
        })
        .unwrap_or_default();
    push_str(&mut props, &name);
    if let Some(action) = get_str(form, "action") {
        props.push(',');
        push_key(&mut props, "action");
        let action = with(|t| keep_query(&action, &t.query)).unwrap_or_default();
        push_str(&mut props, &truncate(action, MAX_URL_LEN));
    }
    props.push('}');
    with(|t| t.engagement.on_activity(now()));
    push(
        EventType::Custom,
        Some("form_submit".into()),
        props,
        false,
        None,
    );
}

/// Dispatches one `pulse(...)` command; never throws.
fn command(name: JsValue, a: JsValue, b: JsValue) {
    let Some(name) = name.as_string() else {
        warn("the first argument of pulse() must be a command name");
        return;
    };
    match name.as_str() {
        "init" => init(&a),
        "track" => match a.as_string() {
            Some(event_name) => push(
                EventType::Custom,
                Some(event_name),
                props_of(&b),
                false,
                None,
            ),
            None => warn("pulse('track', name, props) needs a name"),
        },
        "identify" => {
            // A number is named as JavaScript writes it (`42`).
            let user_id = a.as_string().or_else(|| {
                a.as_f64()
                    .and_then(|_| JSON::stringify(&a).ok())
                    .map(String::from)
            });
            // A signed token among the traits vouches for the user id and entitlements: it
            // goes with every batch, never into the event's properties.
            let (traits, token) = without_token(&b);
            let ok = user_id.is_some_and(|id| {
                with(|t| {
                    let ok = t.session.identify(&id)
                        && token.as_deref().is_none_or(|tok| t.session.set_auth(tok));
                    store(STATE_KEY, Some(&t.session.to_json()));
                    ok
                })
                .unwrap_or(false)
            });
            if ok {
                push(EventType::Identify, None, traits, true, None);
            } else {
                warn(
                    "pulse('identify', userId, {token}) needs a user id of 1 to 256 bytes (and a token that is a JWT)",
                );
            }
        }
        "auth" => match a.as_string() {
            Some(token) => {
                let ok = with(|t| {
                    let ok = t.session.set_auth(&token);
                    store(STATE_KEY, Some(&t.session.to_json()));
                    ok
                })
                .unwrap_or(false);
                if !ok {
                    warn("pulse('auth', token) needs a JWT of at most 4096 bytes");
                }
            }
            None => warn("pulse('auth', token) needs a token"),
        },
        "page" => nav::page_view(Some(&a)),
        "consent" => consent::answer(&a),
        "debug" => DEBUG.store(a.as_bool().unwrap_or(true), Relaxed),
        "reset" => {
            with(|t| {
                t.session.reset(now(), random());
                store(STATE_KEY, Some(&t.session.to_json()));
            });
        }
        "onDecision" => match a.dyn_into::<Function>() {
            Ok(callback) => {
                let current = with(|t| {
                    t.callbacks.push(callback.clone());
                    t.decision.clone()
                })
                .flatten();
                if let Some(decision) = current {
                    call_back(&callback, &decision);
                }
            }
            Err(_) => warn("pulse('onDecision', fn) needs a function"),
        },
        other => warn(&(String::from("unknown command ") + other)),
    }
}

fn init(options: &JsValue) {
    let text = |key: &str| get_str(options, key);
    let Some(key) = text("key") else {
        warn("pulse('init', {key}) needs a site key");
        return;
    };
    let endpoint = text("endpoint")
        .or_else(|| with(|t| default_endpoint(t.script.as_deref())).flatten())
        .unwrap_or_default();
    let separator = if endpoint.contains('?') { "&" } else { "?" };
    let key_param = "k=".to_owned() + &String::from(js_sys::encode_uri_component(&key));
    dict::set_base(endpoint.strip_suffix("/v1/collect"), &key_param);
    let url = endpoint + separator + &key_param;
    let query = get(options, "query");
    let query = Array::is_array(&query).then(|| {
        Array::from(&query)
            .iter()
            .filter_map(|q| q.as_string())
            .collect::<Vec<_>>()
    });
    let first = with(|t| {
        if t.site_key.is_some() {
            return false;
        }
        t.site_key = Some(key);
        t.url = url;
        if let Some(query) = query {
            t.query = query;
        }
        true
    });
    if first == Some(true) {
        consent::at_init(options);
    }
    if first != Some(true) {
        warn("pulse('init') was already called");
        return;
    }
    nav::watch();
    // A prerendered page counts when the reader is shown it.
    if get(&document(), "prerendering").as_bool() == Some(true) {
        let _ = nav::once(&document(), "prerenderingchange", || nav::page_view(None));
    } else {
        nav::page_view(None);
    }
}

/// `<origin of the pulse.js script>/v1/collect` (whatever the script's name), else the page's own
/// origin's.
fn default_endpoint(script: Option<&str>) -> Option<String> {
    let origin = script
        .and_then(origin_of)
        .or_else(|| get_str(&get(&window(), "location"), "origin"))?;
    Some(origin + "/v1/collect")
}

/// `scheme://host[:port]` of an absolute URL (what `new URL(url).origin` gives for http(s)).
fn origin_of(url: &str) -> Option<String> {
    let rest = url.bytes().position(|b| b == b':')? + 3;
    if url.get(rest - 3..rest) != Some("://") {
        return None;
    }
    let end = url
        .bytes()
        .skip(rest)
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(url.len(), |i| rest + i);
    url.get(..end).map(str::to_owned)
}

fn on_click(el: &JsValue) {
    let mut props = String::from("{");
    push_key(&mut props, "tag");
    let tag = get_str(el, "tagName").unwrap_or_default();
    push_str(&mut props, &tag.to_ascii_lowercase());
    // The resolved `href` property of links, absolute; outbound when on another origin.
    if let Some(href) = get_str(el, "href").filter(|h| !h.is_empty()) {
        let here = get_str(&get(&window(), "location"), "origin");
        if origin_of(&href).is_some_and(|o| Some(o) != here) {
            props.push_str(",\"outbound\":true");
        }
        props.push(',');
        push_key(&mut props, "href");
        let href = with(|t| keep_query(&href, &t.query)).unwrap_or_default();
        push_str(&mut props, &truncate(href, MAX_URL_LEN));
    }
    // The site's own name for what was clicked.
    if let Ok(name) = call(el, "getAttribute", &[&"data-pulse-click".into()])
        && let Some(name) = name.as_string()
    {
        props.push(',');
        push_key(&mut props, "name");
        push_str(&mut props, &name);
    }
    let text = squash(
        &get_str(el, "textContent").unwrap_or_default(),
        MAX_CLICK_TEXT,
    );
    props.push(',');
    push_key(&mut props, "text");
    push_str(&mut props, &text);
    props.push('}');
    with(|t| t.engagement.on_activity(now()));
    push(EventType::Click, None, props, false, None);
}

/// The first `max` characters of `text` with each run of whitespace made one space, and none at
/// either end.
fn squash(text: &str, max: usize) -> String {
    let (mut out, mut n, mut space) = (String::new(), 0, false);
    for c in text.chars() {
        if c.is_whitespace() {
            space = n > 0;
            continue;
        }
        if n + usize::from(space) >= max {
            break;
        }
        if space {
            out.push(' ');
            n += 1;
            space = false;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// Queues an event on the current page and schedules its sending.
fn push(
    kind: EventType,
    name: Option<String>,
    props: String,
    urgent: bool,
    page: Option<PageContext>,
) {
    let page = page.unwrap_or_else(page_context);
    let now = now();
    let props_text = if DEBUG.load(Relaxed) {
        props.clone()
    } else {
        String::new()
    };
    let mut event = Event {
        id: EventId(0),
        ts: now,
        kind,
        name,
        page,
        props,
    };
    if let Err(reason) = event.check() {
        warn(&(String::from(kind.as_str()) + " event not sent: " + reason.as_str()));
        return;
    }
    let dropped = with(|t| {
        if !t.consent.may_record() {
            return None;
        }
        let page = &mut event.page;
        page.url = keep_query(&page.url, &t.query);
        page.referrer = keep_query(&page.referrer, &t.query);
        event.id = EventId(t.next_id);
        t.next_id = t.next_id.wrapping_add(1);
        t.session.touch(now, random());
        store(STATE_KEY, Some(&t.session.to_json()));
        let dropped = t.queue.push(now, event, urgent);
        // Kept at once, so a page that crashes or is killed loses nothing it recorded.
        send::park(t);
        Some(dropped)
    })
    .flatten();
    if dropped.is_some() {
        debug(
            &(String::from("record ") + kind.as_str()),
            &JsValue::from_str(&props_text),
        );
    }
    if let Some(n @ 1..) = dropped {
        warn(&("queue full: dropped ".to_owned() + &u64_string(n as u64) + " oldest event(s)"));
    }
    schedule();
}
