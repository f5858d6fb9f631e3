//! The decision for a reader's current page, computed from the features when deciding (so a
//! change of the meter's limit applies to the next decision without touching state, and state
//! depends only on the log).
//!
//! The meter: a reader may open `limit` distinct metered pages per window for free. The
//! metered pages of the window are the `pages` feature (`distinct` of `page`), ranked by their
//! first sight in the window; the current page is the latest page view (`current_page`, a `last`
//! of `page`); it is metered when the latest metered page view is that same view.
//! - a subscriber (the `subscriber` feature is `true`): `allow`, reason `subscriber`;
//! - a metered page ranked within the limit: `meter`, reason `metered`;
//! - a metered page past it: `paywall`, reason `exhausted`;
//! - any other page: `meter` while free pages remain (so the page can show the count), else
//!   `allow`, reason `not_metered`.
//!
//! `remaining` is `limit` minus the metered pages of the window (at least 0).

use pulse_protocol::{Action, Decision};

use crate::bundle::{Bundle, DecisionSpec};
use crate::state::ReaderState;
use crate::templates::{Spec, State};
use crate::value::Value;

/// The decision for the reader at `now`.
pub fn decide(bundle: &Bundle, state: &ReaderState, now: u64) -> Decision {
    let made = |action, remaining, limit, reason: &str| Decision {
        action,
        remaining,
        limit,
        reason: reason.to_owned(),
        fallback: false,
        version: bundle.id.clone(),
    };
    let DecisionSpec::Meter {
        pages,
        current_page,
        limit,
        subscriber,
    } = bundle.decision
    else {
        return made(Action::Allow, None, None, "no_rule");
    };
    if subscriber.is_some_and(|s| state.value(bundle, s, now) == Value::Bool(true)) {
        return made(Action::Allow, None, None, "subscriber");
    }
    let (Some(State::Distinct(seen)), Spec::Distinct(seen_spec)) = (
        state.feature_state(bundle, pages),
        &bundle.features[pages].spec,
    ) else {
        return made(Action::Allow, None, None, "no_rule");
    };
    let current = match (
        state.feature_state(bundle, current_page),
        &bundle.features[current_page].spec,
    ) {
        (Some(State::Last(last)), Spec::Last(last_spec)) => last.at_key(last_spec, now),
        _ => None,
    };
    let live = !state.expired(bundle, now);
    let count = if live {
        seen.count_up_to(seen_spec, now, u64::from(limit))
    } else {
        0
    };
    let remaining = limit.saturating_sub(u32::try_from(count).unwrap_or(u32::MAX));
    // The current page is metered when the latest metered view is the current view, and that
    // view is inside the window (an old view is about no window).
    let metered = live
        && current.is_some()
        && current == seen.latest()
        && current.is_some_and(|(t, _)| seen_spec.contains(t, now));
    let (action, reason) = if metered {
        let key = current.map(|(_, k)| k).unwrap_or_default();
        match seen.rank_of(seen_spec, key, now) {
            Some(rank) if rank <= u64::from(limit) => (Action::Meter, "metered"),
            _ => (Action::Paywall, "exhausted"),
        }
    } else if remaining > 0 {
        (Action::Meter, "metered")
    } else {
        (Action::Allow, "not_metered")
    };
    made(action, Some(remaining), Some(limit), reason)
}
