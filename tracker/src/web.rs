//! The browser shell (wasm32 only): the IO boundary of the tracker.
//!
//! It replaces the snippet's `window.pulse` stub with a real function, runs the commands queued
//! before the script loaded, listens to the page (clicks, scrolling, visibility), reads the clock
//! (`Date.now()`) and randomness (`crypto.getRandomValues`), drives the pure [`Queue`] with timers,
//! sends batches with `fetch` (a CORS simple request: POST, no headers, zstd body, keepalive),
//! applies decisions to the DOM, and keeps the session and unsent events in `localStorage`.
//! It never throws into the page: failures are reported with `console.warn`.

use std::cell::RefCell;

use js_sys::{Array, Date, Function, JSON, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{
    Document, Element, HtmlScriptElement, RequestCredentials, RequestInit, RequestMode, Response,
    Storage, Url, VisibilityState, Window,
};

use pulse_protocol::{EventId, EventType, MAX_TITLE_LEN, MAX_URL_LEN, PageContext};

use crate::json::{push_key, push_str, push_u64, u64_string};
use crate::{Engagement, Event, Outcome, Queue, QueueConfig, Reaction, Session, Transmit, encode};

mod decision;
mod page;
use decision::{apply, call};
use page::{meta_content, page_context, props_of, read_depth, truncate};

/// `localStorage` key of the session state.
const STATE_KEY: &str = "pulse_state";
/// `localStorage` key of events parked when the page was hidden.
const QUEUE_KEY: &str = "pulse_queue";
/// Longest `text` of a click event, in characters.
const MAX_CLICK_TEXT: usize = 100;

struct Tracker {
    /// Set by `init`; nothing is sent before.
    site_key: Option<String>,
    /// `endpoint?k=key`.
    url: String,
    session: Session,
    queue: Queue,
    engagement: Engagement,
    /// The latest decision, as the JS object handed to the page.
    decision: Option<JsValue>,
    callbacks: Vec<Function>,
    /// The pending wake-up timer: its handle and due time.
    timer: Option<(i32, u64)>,
}

thread_local! {
    static TRACKER: RefCell<Option<Tracker>> = const { RefCell::new(None) };
    /// The function timers call; created once.
    static TICK: RefCell<Option<Function>> = const { RefCell::new(None) };
}

/// Runs `f` on the tracker state unless it is missing or already borrowed (a re-entrant call
/// from page code, which is then skipped rather than panicking).
fn with<R>(f: impl FnOnce(&mut Tracker) -> R) -> Option<R> {
    TRACKER.with(|cell| {
        let mut guard = cell.try_borrow_mut().ok()?;
        guard.as_mut().map(f)
    })
}

fn warn(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(&(String::from("pulse: ") + message)));
}

fn warn_js(context: &str, error: &JsValue) {
    web_sys::console::warn_2(
        &JsValue::from_str(&(String::from("pulse: ") + context)),
        error,
    );
}

fn now() -> u64 {
    Date::now() as u64
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let filled = web_sys::window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if !filled {
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes
}

fn random_u32() -> u32 {
    u32::from_le_bytes(random::<4>())
}

fn storage() -> Option<Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

fn store(key: &str, value: Option<&str>) {
    if let Some(storage) = storage() {
        // Storage may be full or disabled; the tracker works without it.
        let _ = match value {
            Some(v) => storage.set_item(key, v),
            None => storage.remove_item(key),
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
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let now = now();
    let stored = storage().and_then(|s| s.get_item(STATE_KEY).ok().flatten());
    let session = stored
        .as_deref()
        .and_then(Session::from_json)
        .unwrap_or_else(|| Session::new(now, random(), random()));
    let mut queue = Queue::new(QueueConfig::default());
    if let Some(parked) = storage().and_then(|s| s.get_item(QUEUE_KEY).ok().flatten()) {
        queue.import(now, &parked);
        store(QUEUE_KEY, None);
    }
    let visible = document.visibility_state() == VisibilityState::Visible;
    TRACKER.with(|cell| {
        *cell.borrow_mut() = Some(Tracker {
            site_key: None,
            url: String::new(),
            session,
            queue,
            engagement: Engagement::new(now, visible),
            decision: None,
            callbacks: Vec::new(),
            timer: None,
        });
    });
    // Leaked on purpose: the timer callback lives as long as the page.
    let tick = Closure::<dyn Fn()>::new(|| {
        with(|t| t.timer = None);
        pump();
    });
    TICK.with(|cell| *cell.borrow_mut() = Some(tick.as_ref().unchecked_ref::<Function>().clone()));
    tick.forget();

    // The commands the snippet queued before this script ran.
    let stub = Reflect::get(&window, &"pulse".into())?;
    let queued = if stub.is_function() {
        Reflect::get(&stub, &"q".into())?
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
    Reflect::set(pulse, &"decision".into(), decision.as_ref())?;
    decision.forget();
    // The reader's anonymous id, for the publisher's server to ask about (`POST /v1/decide`):
    // pages put it in a first-party cookie or a request header of their own.
    let reader = Closure::<dyn Fn() -> JsValue>::new(|| {
        with(|t| JsValue::from_str(&t.session.anonymous_id)).unwrap_or(JsValue::NULL)
    });
    Reflect::set(pulse, &"reader".into(), reader.as_ref())?;
    reader.forget();
    Reflect::set(&window, &"pulse".into(), pulse)?;
    dispatch.forget();

    listen(&window, &document)?;
    if !queued.is_undefined() && !queued.is_null() {
        for args in Array::from(&queued).iter() {
            let args = Array::from(&args);
            command(args.get(0), args.get(1), args.get(2));
        }
    }
    Ok(())
}

/// Adds a listener that lives as long as the page (the closure is leaked on purpose).
fn on(
    target: &web_sys::EventTarget,
    kind: &str,
    capture: bool,
    handler: impl Fn(web_sys::Event) + 'static,
) -> Result<(), JsValue> {
    let closure = Closure::<dyn Fn(web_sys::Event)>::new(handler);
    target.add_event_listener_with_callback_and_bool(
        kind,
        closure.as_ref().unchecked_ref(),
        capture,
    )?;
    closure.forget();
    Ok(())
}

fn listen(window: &Window, document: &Document) -> Result<(), JsValue> {
    on(document, "click", true, |event| {
        let target = event.target().and_then(|t| t.dyn_into::<Element>().ok());
        if let Some(Ok(Some(el))) = target.map(|t| t.closest("a, button")) {
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
        let hidden = web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| d.visibility_state() == VisibilityState::Hidden);
        if hidden {
            on_hidden();
        } else {
            with(|t| t.engagement.on_visibility(now(), true));
        }
    })?;
    on(window, "pagehide", false, |_| on_hidden())
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
                    call(&callback, &decision);
                }
            }
            Err(_) => warn("pulse('onDecision', fn) needs a function"),
        },
        other => warn(&(String::from("unknown command ") + other)),
    }
}

fn init(options: &JsValue) {
    let get = |key: &str| {
        Reflect::get(options, &key.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    let Some(key) = get("key") else {
        warn("pulse('init', {key}) needs a site key");
        return;
    };
    let endpoint = get("endpoint").unwrap_or_else(default_endpoint);
    let separator = if endpoint.contains('?') { "&" } else { "?" };
    let url = endpoint + separator + "k=" + &String::from(js_sys::encode_uri_component(&key));
    let first = with(|t| {
        if t.site_key.is_some() {
            return false;
        }
        t.site_key = Some(key);
        t.url = url;
        true
    });
    if first != Some(true) {
        warn("pulse('init') was already called");
        return;
    }
    let mut props = String::new();
    if let Some(content_type) = meta_content("meta[property=\"og:type\"]") {
        props.push('{');
        push_key(&mut props, "content_type");
        push_str(&mut props, &content_type);
        props.push('}');
    }
    let depth = read_depth();
    with(|t| t.engagement.on_depth(depth));
    push(EventType::PageView, None, props, true, None);
}

/// `<origin of the pulse.js script>/v1/collect`, else the page's own origin.
fn default_endpoint() -> String {
    let document = web_sys::window().and_then(|w| w.document());
    let scripts = document.as_ref().map(Document::scripts);
    let src = scripts.and_then(|scripts| {
        (0..scripts.length())
            .filter_map(|i| scripts.item(i)?.dyn_into::<HtmlScriptElement>().ok())
            .map(|s| s.src())
            .find(|src| {
                let path = src.split(['?', '#']).next().unwrap_or_default();
                path.ends_with("/pulse.js")
            })
    });
    let origin = src
        .and_then(|src| Url::new(&src).ok())
        .map(|url| url.origin())
        .or_else(|| web_sys::window().and_then(|w| w.location().origin().ok()))
        .unwrap_or_default();
    origin + "/v1/collect"
}

fn on_click(el: &Element) {
    let mut props = String::from("{");
    push_key(&mut props, "tag");
    push_str(&mut props, &el.tag_name().to_ascii_lowercase());
    // The resolved `href` property of links, absolute.
    if let Some(href) = Reflect::get(el, &"href".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|h| !h.is_empty())
    {
        props.push(',');
        push_key(&mut props, "href");
        push_str(&mut props, &truncate(href, MAX_URL_LEN));
    }
    let text = squash(&el.text_content().unwrap_or_default(), MAX_CLICK_TEXT);
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
    let event = Event {
        id: EventId::from_bytes(random()),
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
        t.session.touch(now, random());
        store(STATE_KEY, Some(&t.session.to_json()));
        t.queue.push(now, event, urgent)
    });
    if let Some(n @ 1..) = dropped {
        warn(&("queue full: dropped ".to_owned() + &u64_string(n as u64) + " oldest event(s)"));
    }
    schedule();
}

/// Sends every batch that is due, then re-arms the timer.
fn pump() {
    loop {
        let next = with(|t| {
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
fn schedule() {
    let Some(window) = web_sys::window() else {
        return;
    };
    with(|t| {
        t.site_key.as_ref()?;
        let deadline = t.queue.next_deadline();
        if let Some((handle, at)) = t.timer {
            if Some(at) == deadline {
                return None;
            }
            window.clear_timeout_with_handle(handle);
            t.timer = None;
        }
        let at = deadline?;
        let delay = at.saturating_sub(now()).min(i32::MAX as u64) as i32;
        let tick = TICK.with(|cell| cell.borrow().clone())?;
        let handle = window
            .set_timeout_with_callback_and_timeout_and_arguments_0(&tick, delay)
            .ok()?;
        t.timer = Some((handle, at));
        Some(())
    });
}

/// The page is being hidden (and may never come back): send the engagement and everything
/// queued at once, and park what is unacknowledged for the next page.
fn on_hidden() {
    let page = page_context();
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
        push(EventType::Engagement, None, props, false, Some(page));
    }
    let sends = with(|t| {
        let key = t.site_key.clone()?;
        let session = &mut t.session;
        let sends = t.queue.flush_all(now, || session.next_header(&key, now));
        store(STATE_KEY, Some(&session.to_json()));
        park(&t.queue);
        Some((t.url.clone(), sends))
    })
    .flatten();
    if let Some((url, sends)) = sends {
        for transmit in sends {
            send(&url, transmit);
        }
    }
}

/// Keeps the unacknowledged events in `localStorage` for the next page, or clears them.
fn park(queue: &Queue) {
    if queue.is_empty() {
        store(QUEUE_KEY, None);
    } else {
        store(QUEUE_KEY, Some(&queue.export()));
    }
}

/// Starts the request at once (so it leaves even from `pagehide`) and handles its answer later.
fn send(url: &str, transmit: Transmit) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let body = encode(&transmit.batch);
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&Uint8Array::from(body.as_slice()));
    // `keepalive` lets the request outlive the page; set directly (not in stable web-sys).
    let _ = Reflect::set(&init, &"keepalive".into(), &JsValue::TRUE);
    init.set_credentials(RequestCredentials::Omit);
    init.set_mode(RequestMode::Cors);
    let request = window.fetch_with_str_and_init(url, &init);
    let token = transmit.token;
    // A batch made only of events parked by an earlier page answers for that page: its decision
    // is not this page's, so it is not applied here.
    let here = truncate(window.location().href().unwrap_or_default(), MAX_URL_LEN);
    let for_this_page = transmit.batch.events.iter().any(|e| e.page.url == here);
    // Promise callbacks instead of futures (no executor in the Wasm). Each step's failure
    // callback is dropped uncalled when the step succeeds and vice versa: a few bytes a
    // request stay allocated.
    let failed = move |_: JsValue| on_answer(token, Outcome::network_error(), for_this_page);
    let answered = Closure::once_into_js(move |response: JsValue| {
        let Ok(response) = response.dyn_into::<Response>() else {
            return failed(JsValue::NULL);
        };
        let status = response.status();
        // Readable only when the server exposes it (`Access-Control-Expose-Headers`).
        let retry_after = response.headers().get("retry-after").ok().flatten();
        let Ok(buffer) = response.array_buffer() else {
            return failed(JsValue::NULL);
        };
        let read = Closure::once_into_js(move |buffer: JsValue| {
            let body = Uint8Array::new(&buffer).to_vec();
            let outcome = Outcome::from_http(status, retry_after.as_deref(), &body);
            on_answer(token, outcome, for_this_page);
        });
        then(&buffer, &read, &Closure::once_into_js(failed));
    });
    then(&request, &answered, &Closure::once_into_js(failed));
}

/// `promise.then(ok, err)`.
fn then(promise: &JsValue, ok: &JsValue, err: &JsValue) {
    if let Ok(f) = Reflect::get(promise, &"then".into()).and_then(|f| f.dyn_into::<Function>()) {
        let _ = f.call2(promise, ok, err);
    }
}

fn on_answer(token: u64, outcome: Outcome, for_this_page: bool) {
    let reaction = with(|t| {
        let reaction = t.queue.on_response(now(), token, outcome, random_u32());
        if storage().is_some_and(|s| s.get_item(QUEUE_KEY).ok().flatten().is_some()) {
            park(&t.queue);
        }
        reaction
    });
    match reaction {
        Some(Reaction::Accepted { body }) => on_accepted(&body, for_this_page),
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

/// Reads a 2xx answer (with the browser's `JSON.parse`): warns of rejected events and of an
/// `auth` token that vouched for nothing, and applies the decision.
fn on_accepted(body: &[u8], for_this_page: bool) {
    let Ok(answer) = std::str::from_utf8(body)
        .map_err(drop)
        .and_then(|t| JSON::parse(t).map_err(drop))
    else {
        return;
    };
    let get = |key: &str| Reflect::get(&answer, &key.into()).unwrap_or(JsValue::UNDEFINED);
    let rejected = get("rejected");
    if Array::is_array(&rejected) {
        for r in Array::from(&rejected).iter() {
            let field = |key: &str| {
                let v = Reflect::get(&r, &key.into()).unwrap_or(JsValue::UNDEFINED);
                v.as_string()
                    .or_else(|| v.as_f64().map(|n| u64_string(n as u64)))
                    .unwrap_or_default()
            };
            warn(&("event ".to_owned() + &field("index") + " rejected: " + &field("reason")));
        }
    }
    if let Some(why) = get("auth").as_string().filter(|a| a != "valid") {
        warn(
            &("the auth token vouched for nothing (".to_owned()
                + &why
                + "): counted as an anonymous reader, no entitlements"),
        );
    }
    let decision = get("decision");
    if for_this_page && decision.is_object() {
        apply(decision, get("signed").as_string().as_deref());
    }
}

/// The traits of `identify` as props, without `token` (returned apart: it goes with every
/// batch, never into the event).
fn without_token(traits: &JsValue) -> (String, Option<String>) {
    if !traits.is_object() {
        return (props_of(traits), None);
    }
    let token = Reflect::get(traits, &"token".into())
        .ok()
        .and_then(|t| t.as_string());
    let copy = Object::assign(&Object::new(), traits.unchecked_ref());
    let _ = Reflect::delete_property(&copy, &"token".into());
    (props_of(&copy), token)
}
