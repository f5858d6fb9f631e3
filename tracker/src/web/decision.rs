//! A decision applied to the page: `<html>` attributes, the `pulse:decision` event, the
//! callbacks.

use js_sys::{Function, JSON, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::{CustomEvent, CustomEventInit};

use pulse_protocol::Decision;

use super::{warn_js, with};

/// Applies a decision: `<html>` attributes, the `pulse:decision` event, the callbacks. The
/// object they get carries `signed`, the gateway's signature of it, when the site signs.
pub(super) fn apply(decision: &Decision, signed: Option<&str>) {
    let Some(window) = web_sys::window() else {
        return;
    };
    if let Some(html) = window.document().and_then(|d| d.document_element()) {
        let _ = html.set_attribute("data-pulse-paywall", decision.action.as_str());
        let _ = match decision.remaining {
            Some(n) => html.set_attribute("data-pulse-remaining", &n.to_string()),
            None => html.remove_attribute("data-pulse-remaining"),
        };
        for (name, value) in [
            ("data-pulse-variant", &decision.variant),
            ("data-pulse-offer", &decision.offer),
            ("data-pulse-prompt", &decision.prompt),
        ] {
            let _ = match value {
                Some(v) => html.set_attribute(name, v),
                None => html.remove_attribute(name),
            };
        }
    }
    let text = serde_json::to_string(decision).unwrap_or_default();
    let Ok(object) = JSON::parse(&text) else {
        return;
    };
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
