//! Consent in the page: the state at `init` (the site's mode, Global Privacy Control, Do Not
//! Track, an opt-out remembered in `localStorage`) and `pulse('consent', {granted, storage})`.

use super::js::{call, get, storage, window};
use super::send::pump;
use super::*;

/// `localStorage` key of a remembered opt-out (a flag, no identifier).
const OPT_OUT_KEY: &str = "pulse_optout";

/// True when the browser asks not to be tracked (`navigator.globalPrivacyControl`,
/// `navigator.doNotTrack == "1"`).
fn privacy_signal() -> bool {
    let navigator = get(&window(), "navigator");
    get(&navigator, "globalPrivacyControl").as_bool() == Some(true)
        || get_str(&navigator, "doNotTrack").as_deref() == Some("1")
}

/// Sets the consent at `init` from its `consent` option.
pub(super) fn at_init(options: &JsValue) {
    let opted_out = storage().and_then(|s| load(&s, OPT_OUT_KEY)).is_some();
    let mode = get_str(options, "consent");
    let consent = Consent::at_init(mode.as_deref(), privacy_signal(), opted_out);
    apply_consent(consent);
}

/// `pulse('consent', {granted, storage?})`: the reader's answer (`storage` defaults to true).
pub(super) fn answer(options: &JsValue) {
    let Some(granted) = get(options, "granted").as_bool() else {
        warn("pulse('consent', {granted}) needs granted: true or false");
        return;
    };
    let keep = get(options, "storage").as_bool().unwrap_or(true);
    let consent = Consent::answered(granted, keep);
    // The opt-out is remembered (a flag, written whatever else storage may hold) until the
    // reader grants again.
    if let Some(s) = storage() {
        let _ = match consent {
            Consent::Refused => call(&s, "setItem", &[&OPT_OUT_KEY.into(), &"1".into()]),
            _ => call(&s, "removeItem", &[&OPT_OUT_KEY.into()]),
        };
    }
    let before = apply_consent(consent);
    // A page shown while nothing could be recorded counts once the reader allows it.
    if before == Some(Consent::Refused) && consent.may_record() {
        nav::page_view(None);
    }
    pump();
}

/// Applies a consent state (what storage holds, what is queued); returns the one before.
fn apply_consent(consent: Consent) -> Option<Consent> {
    MAY_STORE.store(consent.may_store(), Relaxed);
    if !consent.may_store() {
        store(STATE_KEY, None);
        store(QUEUE_KEY, None);
        store(DECISION_KEY, None);
    }
    with(|t| {
        let before = core::mem::replace(&mut t.consent, consent);
        if !consent.may_record() {
            t.queue = Queue::new(QueueConfig::default());
        }
        if consent.may_store() {
            store(STATE_KEY, Some(&t.session.to_json()));
        }
        before
    })
}
