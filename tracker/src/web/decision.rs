//! A decision applied to the page: `<html>` attributes, the `pulse:decision` event, the
//! callbacks.

use alloc::string::String;

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;

use super::js::{call, get, html, set, window};
use super::{DECISION_KEY, push_key, push_str, store, u64_string, warn_js, with};

/// Applies a decision (the answer's `decision` object): `<html>` attributes, the
/// `pulse:decision` event, the callbacks. The object they get carries `signed`, the gateway's
/// signature of it, when the site signs.
pub(super) fn apply(object: JsValue, signed: Option<&str>) {
    let html = html();
    // The attributes, kept for the next page's snippet to set before its first paint.
    let mut cache = String::from("{");
    for (name, key) in [
        ("data-pulse-paywall", "action"),
        ("data-pulse-remaining", "remaining"),
        ("data-pulse-variant", "variant"),
        ("data-pulse-offer", "offer"),
        ("data-pulse-prompt", "prompt"),
    ] {
        let value = get(&object, key);
        let text = value
            .as_string()
            .or_else(|| value.as_f64().map(|n| u64_string(n as u64)));
        let _ = match text {
            Some(v) => {
                if cache.len() > 1 {
                    cache.push(',');
                }
                push_key(&mut cache, name);
                push_str(&mut cache, &v);
                call(&html, "setAttribute", &[&name.into(), &v.into()])
            }
            None => call(&html, "removeAttribute", &[&name.into()]),
        };
    }
    cache.push('}');
    store(DECISION_KEY, Some(&cache));
    if let Some(signed) = signed {
        set(&object, "signed", &signed.into());
    }
    let callbacks = with(|t| {
        t.decision = Some(object.clone());
        t.callbacks.clone()
    })
    .unwrap_or_default();
    let window = window();
    let init = Object::new();
    set(&init, "detail", &object);
    let event = get(&window, "CustomEvent")
        .dyn_into::<Function>()
        .and_then(|c| Reflect::construct(&c, &js_sys::Array::of2(&"pulse:decision".into(), &init)));
    match event {
        Ok(event) => {
            if let Err(error) = call(&window, "dispatchEvent", &[&event]) {
                warn_js("a pulse:decision listener failed", &error);
            }
        }
        Err(error) => warn_js("could not create pulse:decision", &error),
    }
    for callback in &callbacks {
        call_back(callback, &object);
    }
}

/// Calls an `onDecision` callback; what it throws is reported, not passed on.
pub(super) fn call_back(callback: &Function, decision: &JsValue) {
    if let Err(error) = callback.call1(&JsValue::NULL, decision) {
        warn_js("an onDecision callback threw", &error);
    }
}
