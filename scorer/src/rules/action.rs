//! What a rule does when it matches: one of the actions the page understands, with its
//! parameters. The meter is an action too: it decides `meter` or `paywall` from the metered pages
//! of the window (see [`meter`]).

use pulse_protocol::Action;
use serde::Deserialize;

use crate::bundle::Bundle;
use crate::state::ReaderState;
use crate::templates::{Spec, State};

/// An action as a bundle writes it (inside a rule or an experiment's arm).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionTable {
    /// `allow`, `meter`, `paywall`, `register_wall`, `offer` or `prompt`.
    pub(crate) action: String,
    /// `meter`: a `distinct` feature of `page` (the metered pages of the window).
    #[serde(default)]
    pub(crate) pages: Option<String>,
    /// `meter`: a `last` feature of `page` (the page the decision is about).
    #[serde(default)]
    pub(crate) current_page: Option<String>,
    /// `meter`: free pages per window.
    #[serde(default)]
    pub(crate) limit: Option<u32>,
    /// `paywall`: which paywall to show.
    #[serde(default)]
    pub(crate) variant: Option<String>,
    /// `offer`: the offer's id.
    #[serde(default)]
    pub(crate) offer: Option<String>,
    /// `prompt`: what to prompt for.
    #[serde(default)]
    pub(crate) prompt: Option<String>,
}

/// A compiled action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// Show everything.
    Allow,
    /// The meter over feature `pages` (indices into the bundle's features).
    Meter {
        /// The `distinct` feature of metered pages.
        pages: usize,
        /// The `last` feature of the current page.
        current_page: usize,
        /// Free pages per window.
        limit: u32,
    },
    /// The paywall.
    Paywall {
        /// Which one.
        variant: Option<String>,
    },
    /// The registration wall.
    RegisterWall,
    /// An offer.
    Offer {
        /// Its id.
        offer: String,
    },
    /// A prompt.
    Prompt {
        /// What for.
        prompt: String,
    },
}

fn id_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl ActionTable {
    /// Compiles the action against the bundle's features (`find` gives a feature's index and
    /// template), listing problems relative to `path`.
    pub(crate) fn compile(
        &self,
        path: &str,
        find: &dyn Fn(&str) -> Option<(usize, String)>,
        problems: &mut Vec<String>,
    ) -> Option<Act> {
        let mut bad = |m: String| problems.push(format!("{path}: {m}"));
        let extra = |name: &str, set: bool, bad: &mut dyn FnMut(String)| {
            if set {
                bad(format!(
                    "`{name}` does not belong to action {:?}",
                    self.action
                ));
            }
        };
        let Some(action) = Action::parse(&self.action) else {
            bad(format!(
                "unknown action {:?} (allow, meter, paywall, register_wall, offer, prompt)",
                self.action
            ));
            return None;
        };
        if action != Action::Meter {
            extra("pages", self.pages.is_some(), &mut bad);
            extra("current_page", self.current_page.is_some(), &mut bad);
            extra("limit", self.limit.is_some(), &mut bad);
        }
        if action != Action::Paywall {
            extra("variant", self.variant.is_some(), &mut bad);
        }
        if action != Action::Offer {
            extra("offer", self.offer.is_some(), &mut bad);
        }
        if action != Action::Prompt {
            extra("prompt", self.prompt.is_some(), &mut bad);
        }
        let feature =
            |key: &str, name: &Option<String>, template: &str, bad: &mut dyn FnMut(String)| {
                let Some(name) = name else {
                    bad(format!("the meter needs `{key}` (a `{template}` feature)"));
                    return None;
                };
                match find(name) {
                    Some((i, t)) if t == template => Some(i),
                    Some(_) => {
                        bad(format!("`{key}` = {name:?} must be a `{template}` feature"));
                        None
                    }
                    None => {
                        bad(format!(
                            "`{key}` = {name:?} is not a feature of this bundle"
                        ));
                        None
                    }
                }
            };
        let id = |key: &str, v: &Option<String>, bad: &mut dyn FnMut(String)| match v {
            Some(v) if id_like(v) => Some(v.clone()),
            Some(v) => {
                bad(format!(
                    "`{key}` = {v:?}: letters, digits, _ - . (at most 64)"
                ));
                None
            }
            None => {
                bad(format!("action {:?} needs `{key}`", self.action));
                None
            }
        };
        Some(match action {
            Action::Allow => Act::Allow,
            Action::RegisterWall => Act::RegisterWall,
            Action::Paywall => Act::Paywall {
                variant: match &self.variant {
                    None => None,
                    v => id("variant", v, &mut bad),
                },
            },
            Action::Offer => Act::Offer {
                offer: id("offer", &self.offer, &mut bad)?,
            },
            Action::Prompt => Act::Prompt {
                prompt: id("prompt", &self.prompt, &mut bad)?,
            },
            Action::Meter => {
                let pages = feature("pages", &self.pages, "distinct", &mut bad);
                let current_page = feature("current_page", &self.current_page, "last", &mut bad);
                let Some(limit) = self.limit else {
                    bad("the meter needs `limit`".into());
                    return None;
                };
                Act::Meter {
                    pages: pages?,
                    current_page: current_page?,
                    limit,
                }
            }
        })
    }
}

/// What the meter decides, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Metered {
    pub(crate) action: Action,
    pub(crate) remaining: u32,
    pub(crate) reason: &'static str,
    /// Whether the current page is a metered page of the window.
    pub(crate) metered: bool,
}

/// The meter: a reader may open `limit` distinct metered pages per window for free. The metered
/// pages of the window are ranked by their first sight in it; the current page (the latest page
/// view) is metered when the latest metered page view is that same view. A metered page ranked
/// within the limit is `meter` (`metered`), past it `paywall` (`exhausted`); any other page is
/// `meter` while free pages remain (so the page can show the count), else `allow`
/// (`not_metered`). `remaining` is `limit` minus the metered pages of the window.
pub(crate) fn meter(
    bundle: &Bundle,
    state: &ReaderState,
    now: u64,
    pages: usize,
    current_page: usize,
    limit: u32,
) -> Metered {
    let (Some(State::Distinct(seen)), Spec::Distinct(seen_spec)) = (
        state.feature_state(bundle, pages),
        &bundle.features[pages].spec,
    ) else {
        return Metered {
            action: Action::Allow,
            remaining: limit,
            reason: "not_metered",
            metered: false,
        };
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
    Metered {
        action,
        remaining,
        reason,
        metered,
    }
}
