//! A readership with a known ground truth, for training and judging propensity models.
//!
//! Every simulated reader has a hidden [`Profile`]: how often they visit, how many pages a visit
//! takes, how deep they read, which sections they favour and how much, whether the newsletter
//! brings them, and a taste for the paper that nothing they do shows. Their propensity to
//! subscribe is a documented function of it ([`Profile::propensity`]); Pulse sees only their
//! traffic ([`Readership::visits`]: one batch per visit, the same kinds of events, URLs and
//! properties as [`crate::Traffic`]), and a label is a draw from the propensity
//! ([`Readership::labels`]). A model trained on features of the traffic can therefore be judged
//! against the truth, and no better than the truth.
//!
//! Pure and seeded: the same config gives the same readers, visits and labels, each reader's
//! visits from a generator of its own (so readers can be simulated one at a time, in any order).

use serde_json::{Map, Value, json};

use pulse_protocol::{
    Batch, BatchHeader, Event, EventId, EventType, PROTOCOL_VERSION, PageContext,
};

use crate::traffic::{Page, Rng, SEARCH, SECTIONS, SITE, SOCIAL, catalogue, hex, short_title};

const DAY_MS: u64 = 86_400_000;
/// Most pages in one visit.
const MAX_PAGES_PER_VISIT: u32 = 12;
/// The least time between two visits (the end of one and the start of the next): longer than
/// the usual 30 minutes that end a session.
pub(crate) const SESSION_GAP_MS: u64 = 31 * 60 * 1_000;
/// Most visits simulated per reader (a reader at the top rate makes about 130 a month).
pub(crate) const MAX_VISITS: usize = 5_000;

/// Settings of a simulated readership (see [`Readership`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReadershipConfig {
    /// The site key every batch carries.
    pub site_key: String,
    /// How many readers.
    pub readers: usize,
    /// Seed of the readers and their visits.
    pub seed: u64,
    /// When the period starts, ms since the epoch (default 2026-01-01T00:00:00Z).
    pub start_ms: u64,
    /// How long the period lasts, days (default 30).
    pub days: u32,
}

impl Default for ReadershipConfig {
    fn default() -> Self {
        Self {
            site_key: "demo".to_owned(),
            readers: 10_000,
            seed: 1,
            start_ms: 1_767_225_600_000,
            days: 30,
        }
    }
}

/// What a simulated reader is like. Hidden from Pulse: only the reader's traffic shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Visits per week, on average (log-normal across readers: median 1.5, from 0.1 to 30).
    pub visits_per_week: f64,
    /// Pages per visit, on average (1 to 8, median 2; the count is geometric, at most 12).
    pub pages_per_visit: f64,
    /// How far down an article they typically read, percent (20 to 95, uniform across
    /// readers; each article's depth varies around it by a standard deviation of 12).
    pub depth: f64,
    /// Their favourite sections (one to three).
    pub sections: Vec<&'static str>,
    /// The share of their articles that come from their favourite sections (0.4 to 0.9); the
    /// rest follow the site's popularity.
    pub affinity: f64,
    /// Whether the newsletter brings them (half of their visits start from it).
    pub newsletter: bool,
    /// What nothing they do shows: a normal term of the propensity's log-odds (sd 0.5).
    pub taste: f64,
}

impl Profile {
    /// The sections whose readers are likelier to pay (news, politics and money).
    pub const PAYING_SECTIONS: [&'static str; 4] = ["politics", "world", "business", "markets"];

    /// The probability of subscribing within the period, the logistic function of
    ///
    /// ```text
    ///   -4.5
    ///   + 1.1 · ln(1 + visits_per_week)        habit
    ///   + 2.0 · (depth / 100 − 0.5)            reading to the end
    ///   + 0.3 · (pages_per_visit − 2)          long visits
    ///   + 0.8 · affinity, if a favourite section is politics, world, business or markets
    ///   + 0.5, if the newsletter brings them
    ///   + taste                                unobserved
    /// ```
    ///
    /// About 9 % of readers subscribe (the mean over readers); a reader who visits daily, reads
    /// to the end and favours sport, about 21 %; one who also reads politics and came by the
    /// newsletter, about 40 %.
    pub fn propensity(&self) -> f64 {
        let paying = self
            .sections
            .iter()
            .any(|s| Self::PAYING_SECTIONS.contains(s));
        let logit = -4.5
            + 1.1 * (1.0 + self.visits_per_week).ln()
            + 2.0 * (self.depth / 100.0 - 0.5)
            + 0.3 * (self.pages_per_visit - 2.0)
            + if paying { 0.8 * self.affinity } else { 0.0 }
            + if self.newsletter { 0.5 } else { 0.0 }
            + self.taste;
        1.0 / (1.0 + (-logit).exp())
    }

    fn draw(rng: &mut Rng) -> Self {
        let visits_per_week = (1.5f64.ln() + normal(rng)).exp().clamp(0.1, 30.0);
        let pages_per_visit = (1.0 + (0.6 * normal(rng)).exp()).clamp(1.0, 8.0);
        let depth = 20.0 + 75.0 * rng.unit();
        let mut sections = Vec::with_capacity(3);
        for _ in 0..1 + rng.below(3) {
            let s = SECTIONS[rng.below(SECTIONS.len() as u64) as usize];
            if !sections.contains(&s) {
                sections.push(s);
            }
        }
        Self {
            visits_per_week,
            pages_per_visit,
            depth,
            sections,
            affinity: 0.4 + 0.5 * rng.unit(),
            newsletter: rng.percent(25),
            taste: 0.5 * normal(rng),
        }
    }
}

/// A readership over a period, each reader with a hidden [`Profile`].
#[derive(Clone, Debug)]
pub struct Readership {
    site_key: String,
    seed: u64,
    start_ms: u64,
    days: u32,
    catalogue: Vec<Page>,
    /// Indices of the articles of each section ([`SECTIONS`] order).
    by_section: Vec<Vec<usize>>,
    readers: Vec<(String, Profile)>,
}

impl Readership {
    /// A readership as configured (at least one reader, at least one day).
    pub fn new(config: &ReadershipConfig) -> Self {
        let mut rng = Rng(config.seed ^ 0x7ead_e25e_b1b0_5eed);
        let catalogue = catalogue(&mut rng);
        let by_section = SECTIONS
            .iter()
            .map(|s| {
                (0..catalogue.len())
                    .filter(|&i| catalogue[i].article && catalogue[i].section == *s)
                    .collect()
            })
            .collect();
        let readers = (0..config.readers.max(1))
            .map(|i| {
                let mut id = hex(rng.next_u128());
                id.truncate(24);
                id.push_str(&format!("{:08x}", i as u32));
                (id, Profile::draw(&mut rng))
            })
            .collect();
        Self {
            site_key: config.site_key.clone(),
            seed: config.seed,
            start_ms: config.start_ms,
            days: config.days.max(1),
            catalogue,
            by_section,
            readers,
        }
    }

    /// How many readers.
    pub fn readers(&self) -> usize {
        self.readers.len()
    }

    /// Reader `reader`'s hidden profile.
    pub fn profile(&self, reader: usize) -> &Profile {
        &self.readers[reader].1
    }

    /// Reader `reader`'s key (its anonymous id; these readers are not logged in).
    pub fn reader_key(&self, reader: usize) -> &str {
        &self.readers[reader].0
    }

    /// When the period ends, ms since the epoch.
    pub fn end_ms(&self) -> u64 {
        self.start_ms + u64::from(self.days) * DAY_MS
    }

    /// Whether each reader subscribes within the period: one draw from each reader's
    /// propensity, seeded by `seed`.
    pub fn labels(&self, seed: u64) -> Vec<bool> {
        let mut rng = Rng(seed ^ 0x1abe_15ee_d000_0001);
        self.readers
            .iter()
            .map(|(_, p)| rng.unit() < p.propensity())
            .collect()
    }

    /// Reader `reader`'s visits over the period, in time order, one batch each: visits arrive
    /// as a Poisson process at the reader's rate; a visit is a session of page views (the first
    /// from search, social, the front page or the newsletter, the next ones from the previous
    /// page), each followed by clicks, sometimes a video play or a share, and an engagement
    /// report of the reader's depth.
    pub fn visits(&self, reader: usize) -> Vec<Batch> {
        let (anonymous_id, profile) = &self.readers[reader];
        let mut rng = Rng(self
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((reader as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)));
        rng.next_u64();
        let end = self.end_ms();
        let rate_per_ms = profile.visits_per_week / (7.0 * DAY_MS as f64);
        let mut t = self.start_ms as f64;
        // A visit starts at least the session gap after the previous one ended.
        let mut free_at = self.start_ms;
        let mut out = Vec::new();
        while out.len() < MAX_VISITS {
            t += -(1.0 - rng.unit()).ln() / rate_per_ms;
            if t >= end as f64 {
                break;
            }
            let start = (t as u64).max(free_at);
            let batch = self.visit(&mut rng, anonymous_id, profile, start);
            free_at = batch.header.sent_at + SESSION_GAP_MS;
            // The last events of a visit may run past the end: they are part of the next period.
            if batch.header.sent_at < end {
                out.push(batch);
            }
        }
        out
    }

    fn visit(&self, rng: &mut Rng, anonymous_id: &str, profile: &Profile, start: u64) -> Batch {
        let pages = pages_in_visit(rng, profile);
        let mut events = Vec::new();
        let mut t = start;
        let mut previous: Option<usize> = None;
        for _ in 0..pages {
            let (index, view) = self.page_view(rng, profile, profile.newsletter, previous, &mut t);
            let context = view.page.clone();
            events.push(view);
            self.reading(rng, profile.depth, index, &context, &mut t, &mut events);
            t += page_gap(rng);
            previous = Some(index);
        }
        let sent_at = events.last().map_or(start, |e| e.ts);
        Batch {
            header: BatchHeader {
                v: PROTOCOL_VERSION,
                auth: None,
                site_key: self.site_key.clone(),
                anonymous_id: anonymous_id.to_owned(),
                user_id: None,
                session_id: hex(rng.next_u128()),
                seq: 0,
                sent_at,
                resent: false,
            },
            events,
        }
    }

    /// The next page of a visit and its page view at `*t` (which moves on past it): the first
    /// page of a visit comes from search, social, the front page or (for a reader the
    /// newsletter brings, `newsletter`) the newsletter; the next ones from `previous`.
    pub(crate) fn page_view(
        &self,
        rng: &mut Rng,
        profile: &Profile,
        newsletter: bool,
        previous: Option<usize>,
        t: &mut u64,
    ) -> (usize, Event) {
        let index = self.pick_page(rng, profile);
        let page = &self.catalogue[index];
        let (mut url, referrer) = (
            page.url.clone(),
            match previous {
                Some(p) => self.catalogue[p].url.clone(),
                None if newsletter && rng.percent(50) => String::new(),
                None => match rng.below(100) {
                    0..45 => SEARCH[rng.below(SEARCH.len() as u64) as usize].to_owned(),
                    45..65 => SOCIAL[rng.below(SOCIAL.len() as u64) as usize].to_owned(),
                    65..80 => format!("{SITE}/"),
                    _ => String::new(),
                },
            },
        );
        if previous.is_none() && referrer.is_empty() && newsletter {
            url.push_str("?utm_source=newsletter&utm_medium=email&utm_campaign=morning-briefing");
        }
        let context = PageContext {
            url,
            referrer,
            title: page.title.clone(),
        };
        let content_type = if page.article { "article" } else { "website" };
        let view = event(
            rng,
            t,
            EventType::PageView,
            None,
            &context,
            json!({
                "content_type": content_type,
                "section": page.section,
                "author": page.author,
                "word_count": page.words,
            }),
        );
        (index, view)
    }

    /// Whether page `index` is an article (else a section front).
    pub(crate) fn is_article(&self, index: usize) -> bool {
        self.catalogue[index].article
    }

    /// The reader's events on page `index` after its page view, from `*t` (which moves on):
    /// clicks, sometimes a video play or a share, and an engagement report of a depth around
    /// `depth` percent (an article) or a glance (a section front).
    pub(crate) fn reading(
        &self,
        rng: &mut Rng,
        depth: f64,
        index: usize,
        context: &PageContext,
        t: &mut u64,
        events: &mut Vec<Event>,
    ) {
        let page = &self.catalogue[index];
        for _ in 0..rng.below(4).saturating_sub(1) {
            let target = &self.catalogue[rng.below(self.catalogue.len() as u64) as usize];
            let props = json!({"tag": "a", "href": target.url, "text": short_title(&target.title)});
            events.push(event(rng, t, EventType::Click, None, context, props));
        }
        if rng.percent(10) {
            let (name, props) = if rng.percent(60) {
                (
                    "video.play",
                    json!({"video_id": format!("vid-{:06}", rng.below(1_000_000)), "position_s": 0}),
                )
            } else {
                ("share", json!({"network": "facebook"}))
            };
            events.push(event(rng, t, EventType::Custom, Some(name), context, props));
        }
        let (depth, active_ms) = if page.article {
            let depth = (depth + 12.0 * normal(rng)).clamp(5.0, 100.0).round();
            // About a quarter of a second a word read.
            let ms = f64::from(page.words) * depth / 100.0 * (200.0 + 100.0 * rng.unit());
            (depth as u64, ms as u64 + 1_000)
        } else {
            (5 + rng.below(40), 2_000 + rng.below(28_000))
        };
        let props = json!({"read_depth": depth, "active_ms": active_ms});
        events.push(event(rng, t, EventType::Engagement, None, context, props));
    }

    /// The site key of the readership's batches.
    pub(crate) fn site_key(&self) -> &str {
        &self.site_key
    }

    /// When the period starts, ms since the epoch.
    pub(crate) fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// The seed of the readership.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// A favourite section's article with the reader's affinity, else a page by popularity.
    fn pick_page(&self, rng: &mut Rng, profile: &Profile) -> usize {
        if rng.unit() < profile.affinity {
            let s = profile.sections[rng.below(profile.sections.len() as u64) as usize];
            let articles = SECTIONS
                .iter()
                .position(|x| *x == s)
                .map_or(&[][..], |i| &self.by_section[i][..]);
            if !articles.is_empty() {
                return articles[rng.below(articles.len() as u64) as usize];
            }
        }
        let u = rng.unit();
        ((u * u) * self.catalogue.len() as f64) as usize % self.catalogue.len()
    }
}

/// How many pages a visit takes: geometric with the reader's mean, at most
/// [`MAX_PAGES_PER_VISIT`].
pub(crate) fn pages_in_visit(rng: &mut Rng, profile: &Profile) -> u32 {
    let mut pages = 1;
    while pages < MAX_PAGES_PER_VISIT && rng.unit() < 1.0 - 1.0 / profile.pages_per_visit {
        pages += 1;
    }
    pages
}

/// The time from the last event on a page to the next page view, ms (30 s to 4 min).
pub(crate) fn page_gap(rng: &mut Rng) -> u64 {
    30_000 + rng.below(210_000)
}

/// An event at `*t` on the page `context`, with a fresh id; `*t` moves on 3 to 33 s.
pub(crate) fn event(
    rng: &mut Rng,
    t: &mut u64,
    kind: EventType,
    name: Option<&str>,
    context: &PageContext,
    props: Value,
) -> Event {
    let event = Event {
        id: EventId(rng.next_u128()),
        ts: *t,
        kind,
        name: name.map(str::to_owned),
        page: context.clone(),
        props: match props {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    };
    *t += 3_000 + rng.below(30_000);
    event
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.unit();
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readership(readers: usize) -> Readership {
        Readership::new(&ReadershipConfig {
            readers,
            ..ReadershipConfig::default()
        })
    }

    #[test]
    fn same_config_same_readers_visits_and_labels() {
        let (a, b) = (readership(50), readership(50));
        for r in [0, 17, 49] {
            assert_eq!(a.profile(r), b.profile(r));
            assert_eq!(a.visits(r), b.visits(r));
        }
        assert_eq!(a.labels(7), b.labels(7));
        assert_ne!(a.labels(7), a.labels(8));
    }

    /// `visits` gives the same batches as when the example models were trained on them
    /// (`examples/train/`), whatever else comes to share its page code.
    #[test]
    fn visits_of_a_seed_are_unchanged() {
        let r = readership(40);
        // FNV-1a over the JSON of every reader's visits.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for i in 0..r.readers() {
            for batch in r.visits(i) {
                for b in serde_json::to_vec(&batch).unwrap() {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        assert_eq!(hash, 0xc9cc_953a_0b0f_7e55, "{hash:#x}");
    }

    #[test]
    fn visits_are_valid_batches_in_the_period_and_in_order() {
        let r = readership(200);
        let mut total = 0;
        for i in 0..r.readers() {
            let visits = r.visits(i);
            let mut last = 0;
            for b in &visits {
                assert_eq!(b.header.reader_key(), r.reader_key(i));
                assert!(b.events.len() <= pulse_protocol::MAX_EVENTS_PER_BATCH);
                assert!(b.events.first().unwrap().ts >= last.max(1_767_225_600_000));
                assert!(b.header.sent_at < r.end_ms());
                assert!(b.events.windows(2).all(|w| w[0].ts <= w[1].ts));
                let json = serde_json::to_vec(b).unwrap();
                let parsed = pulse_protocol::parse_batch(&json, b.header.sent_at).unwrap();
                assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
                last = b.header.sent_at;
            }
            total += visits.len();
        }
        // Median 1.5 visits a week, a heavy tail: a few hundred visits a month per 100 readers.
        assert!((600..3_000).contains(&total), "{total}");
    }

    #[test]
    fn behaviour_follows_the_profile() {
        let r = readership(2_000);
        let (mut light, mut heavy) = (Vec::new(), Vec::new());
        for i in 0..r.readers() {
            let p = r.profile(i);
            let n = r.visits(i).len() as f64;
            if p.visits_per_week < 0.7 {
                light.push(n);
            } else if p.visits_per_week > 5.0 {
                heavy.push(n);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean(&heavy) > 5.0 * mean(&light),
            "{} {}",
            mean(&heavy),
            mean(&light)
        );
    }

    #[test]
    fn the_propensity_is_as_documented() {
        let r = readership(20_000);
        let p: Vec<f64> = (0..r.readers())
            .map(|i| r.profile(i).propensity())
            .collect();
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        assert!((0.08..0.10).contains(&mean), "{mean}");
        let labels = r.labels(1);
        let rate = labels.iter().filter(|&&l| l).count() as f64 / labels.len() as f64;
        assert!((rate - mean).abs() < 0.01, "{rate} {mean}");
        let daily = Profile {
            visits_per_week: 7.0,
            pages_per_visit: 2.0,
            depth: 95.0,
            sections: vec!["sport"],
            affinity: 0.5,
            newsletter: false,
            taste: 0.0,
        };
        let logit = -4.5 + 1.1 * 8f64.ln() + 2.0 * 0.45;
        assert!((daily.propensity() - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
        assert!((0.2..0.22).contains(&daily.propensity()));
        let keen = Profile {
            sections: vec!["sport", "politics"],
            newsletter: true,
            ..daily.clone()
        };
        assert!((0.39..0.41).contains(&keen.propensity()));
        let more = Profile {
            visits_per_week: 14.0,
            ..daily.clone()
        };
        assert!(more.propensity() > daily.propensity());
    }
}
