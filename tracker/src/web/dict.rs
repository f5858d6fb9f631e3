//! The site's dictionary for compact bodies: an answer names it (its hash, 8 hex digits), the
//! tracker fetches it once from `/v1/dictionary/<hash>?k=KEY` beside the collect endpoint,
//! checks it against its name, keeps it in `localStorage` (when consent allows storage; one
//! character a byte) and compresses every body against it. A gateway that does not hold it
//! answers 409 `unknown_dictionary`: the tracker drops it and sends the batch again without.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use pulse_protocol::compact::{dictionary_hash, parse_dictionary_name};
use pulse_protocol::hex_digit;
use spin::Mutex;
use wasm_bindgen::prelude::*;

use super::js::{call, get, get_str, storage, window};
use super::{load, store};

const DICT_KEY: &str = "pulse_dict";

/// The dictionary in use: its hash (its name) and its bytes.
static HELD: Mutex<Option<(u32, Vec<u8>)>> = Mutex::new(None);
/// Where the site's dictionaries are (`…/v1/dictionary/`), and the site key's parameter.
static BASE: Mutex<Option<(String, String)>> = Mutex::new(None);
/// A fetch is on its way.
static FETCHING: AtomicBool = AtomicBool::new(false);

/// Holds the dictionary `name` given in hex (as `pulse.d` hands it over and as it is kept:
/// the cheapest for the Wasm) when its bytes are what the name says, and keeps it in storage.
/// False when they are not.
fn accept(name: &[u8], hex: &[u8]) -> bool {
    let bytes: Option<Vec<u8>> = hex
        .chunks_exact(2)
        .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
        .collect();
    let Some((hash, bytes)) = parse_dictionary_name(name)
        .zip(bytes)
        .filter(|(h, b)| *h == dictionary_hash(b))
    else {
        return false;
    };
    *HELD.lock() = Some((hash, bytes));
    true
}

/// The dictionary kept by an earlier page, if any: its name, then its bytes in hex.
pub(super) fn restore() {
    let Some(text) = storage().and_then(|s| load(&s, DICT_KEY)) else {
        return;
    };
    let t = text.as_bytes();
    if !(t.len() > 8 && accept(&t[..8], &t[8..])) {
        store(DICT_KEY, None);
    }
}

/// `f` with the dictionary in use (its hash and bytes), if any.
pub(super) fn with<R>(f: impl FnOnce(Option<(u32, &[u8])>) -> R) -> R {
    let held = HELD.lock();
    f(held.as_ref().map(|(h, b)| (*h, b.as_slice())))
}

/// A gateway does not hold the dictionary in use: without one from now on.
pub(super) fn drop_held() {
    *HELD.lock() = None;
    store(DICT_KEY, None);
}

/// At `init`: the collect endpoint without its `/v1/collect` (none for an endpoint of another
/// shape: no dictionary then), and the site key's query parameter (`k=KEY`).
pub(super) fn set_base(origin: Option<&str>, key_param: &str) {
    *BASE.lock() = origin.map(|o| {
        (
            String::from(o) + "/v1/dictionary/",
            "?".to_owned() + key_param,
        )
    });
}

/// An answer named the site's newest dictionary: fetched unless held or on its way.
pub(super) fn named(answer: &JsValue) {
    let Some(name) = get_str(answer, "dictionary") else {
        return;
    };
    let Some(hash) = parse_dictionary_name(name.as_bytes()) else {
        return;
    };
    if HELD.lock().as_ref().is_some_and(|(h, _)| *h == hash) || FETCHING.swap(true, Relaxed) {
        return;
    }
    let Some((base, key)) = BASE.lock().clone() else {
        FETCHING.store(false, Relaxed);
        return;
    };
    let url = base + &name + &key;
    // `pulse.d` (the bootstrap in pulse.js) fetches it; a failed fetch leaves `FETCHING` set:
    // not tried again on this page.
    let read = Closure::once_into_js(move |hex: JsValue| {
        let hex = hex.as_string().unwrap_or_default();
        if accept(name.as_bytes(), hex.as_bytes()) {
            store(DICT_KEY, Some(&(name + &hex)));
        }
        FETCHING.store(false, Relaxed);
    });
    let _ = call(&get(&window(), "pulse"), "d", &[&url.into(), &read]);
}
