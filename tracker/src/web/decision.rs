//! A decision applied to the page: `<html>` attributes, the `pulse:decision` event, the
//! callbacks.

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::{CustomEvent, CustomEventInit};

use super::{u64_string, warn_js, with};

/// Applies a decision (the answer's `decision` object): `<html>` attributes, the
/// `pulse:decision` event, the callbacks. The object they get carries `signed`, the gateway's
/// signature of it, when the site signs.
pub(super) fn apply(object: JsValue, signed: Option<&str>) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let get = |key: &str| Reflect::get(&object, &key.into()).unwrap_or(JsValue::UNDEFINED);
    if let Some(html) = window.document().and_then(|d| d.document_element()) {
        for (name, key) in [
            ("data-pulse-paywall", "action"),
            ("data-pulse-remaining", "remaining"),
            ("data-pulse-variant", "variant"),
            ("data-pulse-offer", "offer"),
            ("data-pulse-prompt", "prompt"),
        ] {
            let value = get(key);
            let text = value
                .as_string()
                .or_else(|| value.as_f64().map(|n| u64_string(n as u64)));
            let _ = match text {
                Some(v) => html.set_attribute(name, &v),
                None => html.remove_attribute(name),
            };
        }
    }
    if let Some(signed) = signed {
        let _ = Reflect::set(&object, &"signed".into(), &signed.into());
    }
    let callbacks = with(|t| {
        t.decision = Some(object.clone());
        t.callbacks.clone()
    })
    .unwrap_or_default();
    let init = CustomEventInit::new();
    init.set_detail(&object);
    match CustomEvent::new_with_event_init_dict("pulse:decision", &init) {
        Ok(event) => {
            if let Err(error) = window.dispatch_event(&event) {
                warn_js("a pulse:decision listener failed", &error);
            }
        }
        Err(error) => warn_js("could not create pulse:decision", &error),
    }
    for callback in &callbacks {
        call(callback, &object);
    }
}

pub(super) fn call(callback: &Function, decision: &JsValue) {
    if let Err(error) = callback.call1(&JsValue::NULL, decision) {
        warn_js("an onDecision callback threw", &error);
    }
}
