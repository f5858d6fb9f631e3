//! Reaching the page's objects through `Reflect`: one import reads every property and one calls
//! every method, where each typed `web-sys` binding costs an import, a wrapper and JavaScript
//! glue of its own (they were a third of the tracker's size).

use alloc::string::String;

use js_sys::{Array, Function, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// `obj[key]`, `undefined` when it cannot be read.
pub(super) fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key]` when it is a string.
pub(super) fn get_str(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).as_string()
}

/// `obj[key]` when it is a number.
pub(super) fn get_f64(obj: &JsValue, key: &str) -> Option<f64> {
    get(obj, key).as_f64()
}

/// `obj[key] = value`, ignoring failures (a frozen object).
pub(super) fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `obj[method](...args)`.
pub(super) fn call(obj: &JsValue, method: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = get(obj, method).dyn_into()?;
    let list = Array::new();
    for a in args {
        list.push(a);
    }
    Reflect::apply(&f, obj, &list)
}

#[wasm_bindgen]
extern "C" {
    /// `globalThis` (one import, where `js_sys::global()` tries four and a fallback).
    #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
    static GLOBAL_THIS: JsValue;
}

/// The global object (`window` on a page).
pub(super) fn window() -> JsValue {
    GLOBAL_THIS.with(JsValue::clone)
}

/// `window.document`.
pub(super) fn document() -> JsValue {
    get(&window(), "document")
}

/// `document.documentElement` (`<html>`).
pub(super) fn html() -> JsValue {
    get(&document(), "documentElement")
}

/// True when nothing is there (`undefined` or `null`).
pub(super) fn absent(v: &JsValue) -> bool {
    v.is_undefined() || v.is_null()
}

/// `localStorage`, when the page may use it (reading it throws when storage is blocked).
pub(super) fn storage() -> Option<JsValue> {
    Some(get(&window(), "localStorage")).filter(|s| !absent(s))
}

/// `console.warn(...args)`.
pub(super) fn console_warn(args: &[&JsValue]) {
    let _ = call(&get(&window(), "console"), "warn", args);
}

/// True when the page is visible (`document.visibilityState == "visible"`).
pub(super) fn visible() -> bool {
    get_str(&document(), "visibilityState").as_deref() == Some("visible")
}
