//! How simulated readers respond to what a page shows them: the model behind
//! [`crate::ReaderSim`], every coefficient in [`Response`] with its default and why it is
//! plausible. The figures of `does_it_pay` (BENCH.md) are only as good as this model; it is
//! written down so that anyone can judge it, and change it (every coefficient is a field).
//!
//! # The reader
//!
//! A reader is a [`crate::Profile`] of the [`crate::Readership`]: their visit rate, pages per
//! visit, reading depth, sections, whether the newsletter brings them, and a taste nothing they do
//! shows. Its [`propensity`](crate::Profile::propensity) `p` (9 % on average) is read here as
//! **the probability that the reader subscribes within the month if they are asked to pay at
//! every chance**: a reader walled again and again subscribes with about `p` (the paywall's
//! pulls below sum to `p`; the chance of taking one of them is a little less: 0.086 at p = 0.09,
//! 0.18 at 0.2, 0.41 at 0.5), a reader never asked rarely does. What the reader is shown changes
//! two things in them, and nothing else: `p`, by a lift on its log-odds (registering, signing up
//! to the newsletter), and their visit rate (walls they leave, the newsletter).
//!
//! # A visit
//!
//! Visits arrive as a Poisson process at the reader's rate (times the changes below). A visit
//! is a number of pages drawn at its start (geometric, the reader's mean, at most 12). Each page
//! view goes out at once (with the events of the page before it, as the tracker sends them) and
//! the page's decision comes back; then, by its action:
//!
//! | shown | the reader |
//! |---|---|
//! | `allow`, `meter` | reads the page (clicks, engagement at their depth) and goes on. |
//! | `paywall` | subscribes with [`Response::paywall`] and reads on; else leaves the visit (a short engagement, the rest of the visit lost) and comes back a little less often (`wall_visits`). |
//! | `register_wall` | registers with [`Response::register`] and reads on; else leaves, as at a paywall but milder (`register_wall_visits`). |
//! | `offer` | reads on, and subscribes with [`Response::offer`]. |
//! | `prompt` | reads on, and signs up to the newsletter with [`Response::prompt`] (never, if the newsletter already brings them: they are on it). |
//!
//! On the first page of a visit a reader may also subscribe unasked ([`Response::unasked`]: the
//! site's own Subscribe button). A subscription takes 1 to 5 minutes (the checkout) and the page
//! then sends `identify` with `{"subscriber": true, "plan": "digital-monthly"}`; registering
//! sends `identify` with `{"subscriber": false, "plan": "registered"}`; signing up sends the
//! custom event `newsletter.signup` with `{"list": <the prompt>}`. These events go out with the
//! next batch (the next page view, or the end of the visit), so the decision of the next page
//! already knows. A subscriber who is walled anyway logs in (sends `identify` again) and reads.
//! The reader key stays the anonymous id throughout: a user id would start a new reader state
//! (Pulse does not stitch identities), and `subscriber` is read from `identify` events today;
//! trusted entitlements (`entitled.*`) would replace it.
//!
//! # Coefficients
//!
//! With `p` the reader's propensity after lifts, and `n` the asks (paywalls and offers) shown
//! before this one:
//!
//! - **Paywall**: `wall · variant · p · ask_fatigue^n` (0.3 · p at the first wall). Conversion per
//!   wall view is small (figures commonly quoted are a few percent at most, for engaged readers;
//!   here 2.7 % at the first wall for the average reader). With the fatigue 0.7, the pulls sum to
//!   `wall / (1 − ask_fatigue) · p = p`: most who will pay do so at the first few walls, and a
//!   reader walled forever subscribes with about `p` (the propensity keeps its meaning). Variant
//!   `premium` × 0.8 (a dearer plan; the revenue it adds is not counted here).
//! - **Offer**: `wall · offer · p · min(offer_cap, offer_floor + offer_slope · p) · ask_fatigue^n`.
//!   An offer does not block the page: most readers with a low propensity ignore it (at p → 0, 0.4
//!   of a wall's pull), keen readers take a good one more readily than a wall (equal at p = 0.3,
//!   1.4 × at p = 0.5, before the offer's own factor). Offers: `trial-1eur` × 1.5 (a €1 trial
//!   removes the price barrier), `annual-30off` × 1.3, `regional-price` × 1.3 (both cheaper),
//!   `video-pass` × 0.6 (a narrower product), any other × 1. Walls and offers share the fatigue:
//!   every ask to pay wears the next one down.
//! - **Unasked**: `unasked · p` per visit (0.005 p: a reader with 8 visits a month who is never
//!   asked subscribes with 4 % of their propensity; the voluntary support of sites without walls).
//!   With no wall at all, about 8 readers in 1,000 subscribe in the month.
//! - **Leaving a wall**: the visit ends; the visit rate is multiplied by `wall_visits` 0.95 per
//!   paywall left and `register_wall_visits` 0.97 per register wall left, never below `min_visits`
//!   0.5 of the reader's own. Ten walls left cost 40 % of later visits: readers who keep meeting a
//!   wall drift away, slowly.
//! - **Register wall**: `(register + register_slope · p) · register_fatigue^k`, `k` the register
//!   walls seen before (0.1 + 0.4 p, × 0.8 each): registration is free, so many more register than
//!   pay (about 14 % at the first register wall for the average reader), keen readers more.
//!   Registering lifts the log-odds of `p` by `registered_lift` 0.3 (a known, e-mailable reader is
//!   easier to convert; smaller than the gap observed between registered and anonymous readers,
//!   much of which is selection).
//! - **Prompt** (newsletter): `(prompt + prompt_slope · p) · prompt_fatigue^k`, `k` the prompts
//!   seen before (0.04 + 0.2 p, × 0.8 each: a few percent of the prompts shown, fewer than a free
//!   register wall, which blocks the page). Signing up lifts the log-odds by `newsletter_lift` 0.3
//!   and the visit rate by `newsletter_visits` × 1.2, and half of the reader's visits then start
//!   from the newsletter (as for readers the newsletter brings; their propensity has +0.5 for it,
//!   of which 0.3 is taken here as caused by the newsletter and the rest as selection).
//!
//! # What does not leak
//!
//! Pulse sees only events: page views, clicks, engagement, `identify` and `newsletter.signup`,
//! made by the same code as [`crate::Readership::visits`]. Nothing carries the profile or the
//! propensity; they show only through what the reader does.

/// The coefficients of the response model (see the module documentation), each with its
/// default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Response {
    /// A paywall's pull at the first ask, as a share of the propensity. Default 0.3.
    pub wall: f64,
    /// Each ask to pay shown before (paywall or offer) multiplies the next one's pull by this.
    /// Default 0.7.
    pub ask_fatigue: f64,
    /// Multipliers of paywall variants (any other variant, or none: 1). Default `premium` 0.8.
    pub variants: &'static [(&'static str, f64)],
    /// Multipliers of offers (any other: 1). Default `trial-1eur` 1.5, `annual-30off` 1.3,
    /// `regional-price` 1.3, `video-pass` 0.6.
    pub offers: &'static [(&'static str, f64)],
    /// An offer's pull relative to a wall's at propensity 0. Default 0.4.
    pub offer_floor: f64,
    /// How much that ratio grows per unit of propensity. Default 2.0.
    pub offer_slope: f64,
    /// The largest ratio. Default 2.0.
    pub offer_cap: f64,
    /// The chance, per visit and as a share of the propensity, of subscribing unasked. Default
    /// 0.005.
    pub unasked: f64,
    /// Each paywall left multiplies the reader's visit rate by this. Default 0.95.
    pub wall_visits: f64,
    /// Each register wall left multiplies the reader's visit rate by this. Default 0.97.
    pub register_wall_visits: f64,
    /// The visit rate never falls below this share of the reader's own. Default 0.5.
    pub min_visits: f64,
    /// A register wall's pull at propensity 0. Default 0.1.
    pub register: f64,
    /// How much it grows per unit of propensity. Default 0.4.
    pub register_slope: f64,
    /// Each register wall seen before multiplies it by this. Default 0.8.
    pub register_fatigue: f64,
    /// Registering adds this to the log-odds of the propensity. Default 0.3.
    pub registered_lift: f64,
    /// A prompt's pull at propensity 0. Default 0.04.
    pub prompt: f64,
    /// How much it grows per unit of propensity. Default 0.2.
    pub prompt_slope: f64,
    /// Each prompt seen before multiplies it by this. Default 0.8.
    pub prompt_fatigue: f64,
    /// Signing up to the newsletter adds this to the log-odds of the propensity. Default 0.3.
    pub newsletter_lift: f64,
    /// Signing up multiplies the visit rate by this. Default 1.2.
    pub newsletter_visits: f64,
}

impl Default for Response {
    fn default() -> Self {
        Self {
            wall: 0.3,
            ask_fatigue: 0.7,
            variants: &[("premium", 0.8)],
            offers: &[
                ("trial-1eur", 1.5),
                ("annual-30off", 1.3),
                ("regional-price", 1.3),
                ("video-pass", 0.6),
            ],
            offer_floor: 0.4,
            offer_slope: 2.0,
            offer_cap: 2.0,
            unasked: 0.005,
            wall_visits: 0.95,
            register_wall_visits: 0.97,
            min_visits: 0.5,
            register: 0.1,
            register_slope: 0.4,
            register_fatigue: 0.8,
            registered_lift: 0.3,
            prompt: 0.04,
            prompt_slope: 0.2,
            prompt_fatigue: 0.8,
            newsletter_lift: 0.3,
            newsletter_visits: 1.2,
        }
    }
}

fn factor(table: &[(&str, f64)], name: Option<&str>) -> f64 {
    name.and_then(|n| table.iter().find(|(k, _)| *k == n))
        .map_or(1.0, |(_, f)| *f)
}

impl Response {
    /// The propensity `p` after the lifts of registering and of signing up to the newsletter.
    pub fn lifted(&self, p: f64, registered: bool, newsletter: bool) -> f64 {
        let lift = if registered {
            self.registered_lift
        } else {
            0.0
        } + if newsletter {
            self.newsletter_lift
        } else {
            0.0
        };
        if lift == 0.0 {
            return p;
        }
        let p = p.clamp(1e-12, 1.0 - 1e-12);
        let logit = (p / (1.0 - p)).ln() + lift;
        1.0 / (1.0 + (-logit).exp())
    }

    /// The chance of subscribing at a paywall of `variant`, after `asks` asks to pay.
    pub fn paywall(&self, p: f64, variant: Option<&str>, asks: u32) -> f64 {
        let q = self.wall * factor(self.variants, variant) * p * self.ask_fatigue.powi(asks as i32);
        q.clamp(0.0, 1.0)
    }

    /// The chance of taking `offer`, after `asks` asks to pay.
    pub fn offer(&self, p: f64, offer: Option<&str>, asks: u32) -> f64 {
        let ratio = (self.offer_floor + self.offer_slope * p).min(self.offer_cap);
        let q =
            self.wall * factor(self.offers, offer) * p * ratio * self.ask_fatigue.powi(asks as i32);
        q.clamp(0.0, 1.0)
    }

    /// The chance of subscribing unasked in a visit.
    pub fn unasked(&self, p: f64) -> f64 {
        (self.unasked * p).clamp(0.0, 1.0)
    }

    /// The chance of registering at a register wall, after `seen` register walls.
    pub fn register(&self, p: f64, seen: u32) -> f64 {
        ((self.register + self.register_slope * p) * self.register_fatigue.powi(seen as i32))
            .clamp(0.0, 1.0)
    }

    /// The chance of signing up at a prompt, after `seen` prompts.
    pub fn prompt(&self, p: f64, seen: u32) -> f64 {
        ((self.prompt + self.prompt_slope * p) * self.prompt_fatigue.powi(seen as i32))
            .clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chance of subscribing at one of `walls` paywalls in a row.
    fn walled(r: &Response, p: f64, walls: u32) -> f64 {
        1.0 - (0..walls)
            .map(|n| 1.0 - r.paywall(p, None, n))
            .product::<f64>()
    }

    #[test]
    fn a_reader_walled_again_and_again_subscribes_with_about_the_propensity() {
        let r = Response::default();
        for p in [0.01, 0.05, 0.09] {
            let q = walled(&r, p, 100);
            assert!(q <= p && q > 0.95 * p, "{p} {q}");
        }
        assert!((0.18..0.19).contains(&walled(&r, 0.2, 100)));
        // Most of it at the first few walls.
        assert!(walled(&r, 0.09, 3) > 0.6 * 0.09);
        // A high propensity saturates a little below.
        assert!((0.4..0.5).contains(&walled(&r, 0.5, 100)));
    }

    #[test]
    fn offers_beat_walls_for_keen_readers_only() {
        let r = Response::default();
        for offer in ["annual-30off", "trial-1eur", "regional-price"] {
            assert!(
                r.offer(0.5, Some(offer), 0) > r.paywall(0.5, None, 0),
                "{offer}"
            );
            assert!(
                r.offer(0.03, Some(offer), 0) < r.paywall(0.03, None, 0),
                "{offer}"
            );
        }
        // Equal at p = 0.3 for an offer with no factor of its own.
        assert!((r.offer(0.3, Some("other"), 0) - r.paywall(0.3, None, 0)).abs() < 1e-12);
        assert!(r.offer(0.5, Some("video-pass"), 0) < r.offer(0.5, Some("annual-30off"), 0));
        assert!(r.paywall(0.2, Some("premium"), 0) < r.paywall(0.2, None, 0));
        // Every ask wears the next one down.
        assert!(r.offer(0.5, Some("trial-1eur"), 1) < r.offer(0.5, Some("trial-1eur"), 0));
        assert!(r.paywall(0.5, None, 3) < r.paywall(0.5, None, 2));
    }

    #[test]
    fn registering_and_signing_up_lift_the_propensity_modestly() {
        let r = Response::default();
        let p = 0.09;
        let both = r.lifted(p, true, true);
        assert_eq!(r.lifted(p, false, false), p);
        assert!(r.lifted(p, true, false) > p && both > r.lifted(p, true, false));
        // +0.6 on the log-odds: 9 % becomes about 15 %.
        assert!((0.14..0.16).contains(&both), "{both}");
        assert!(r.register(0.09, 0) > r.prompt(0.09, 0));
        assert!(r.register(0.5, 0) > r.register(0.05, 0));
        assert!(r.prompt(0.2, 2) < r.prompt(0.2, 0));
        assert!((r.unasked(0.09) - 0.00045).abs() < 1e-12);
    }
}
