//! Realistic sample batches (page views, clicks, engagement, custom events with real-looking
//! URLs, titles and referrers), for tests, compression measurements and load generation.

use serde_json::{Map, Value, json};

use pulse_protocol::{
    Batch, BatchHeader, Event, EventId, EventType, PROTOCOL_VERSION, PageContext,
};

const ARTICLES: [(&str, &str); 5] = [
    (
        "https://www.dailyherald.example/politics/2025/03/14/senate-passes-budget-deal-after-marathon-session",
        "Senate passes budget deal after marathon session | The Daily Herald",
    ),
    (
        "https://www.dailyherald.example/business/markets/2025/03/14/stocks-rally-as-inflation-cools?utm_source=newsletter&utm_medium=email",
        "Stocks rally as inflation cools for a third month - Markets | The Daily Herald",
    ),
    (
        "https://www.dailyherald.example/sport/football/2025/03/13/late-goal-sends-united-into-cup-semi-final",
        "Late goal sends United into cup semi-final | Sport | The Daily Herald",
    ),
    (
        "https://www.dailyherald.example/culture/books/2025/03/12/the-best-new-novels-to-read-this-spring",
        "The best new novels to read this spring | Culture | The Daily Herald",
    ),
    (
        "https://www.dailyherald.example/science/2025/03/11/telescope-spots-water-vapour-on-distant-exoplanet",
        "Telescope spots water vapour on distant exoplanet | Science | The Daily Herald",
    ),
];

const REFERRERS: [&str; 3] = [
    "https://www.google.com/",
    "https://news.ycombinator.example/item?id=39712345",
    "https://www.dailyherald.example/",
];

/// Event `i` of a realistic reading session starting at `t0` (ms since the epoch), with the id
/// `id`: page views, clicks, custom events and engagement in turn.
pub fn sample_event(i: usize, t0: u64, id: u128) -> Event {
    let (url, title) = ARTICLES[(i / 4) % ARTICLES.len()];
    let page = PageContext {
        url: url.to_owned(),
        referrer: REFERRERS[(i / 4) % REFERRERS.len()].to_owned(),
        title: title.to_owned(),
    };
    let (kind, name, props) = match i % 4 {
        0 => (
            EventType::PageView,
            None,
            json!({"content_type": "article"}),
        ),
        1 => (
            EventType::Click,
            None,
            json!({
                "tag": "a",
                "href": ARTICLES[(i / 4 + 1) % ARTICLES.len()].0,
                "text": "Read more: the stories everyone is talking about",
            }),
        ),
        2 => (
            EventType::Custom,
            Some("video.play".to_owned()),
            json!({"video_id": format!("vid-{:06}", 4711 + i), "position_s": 0}),
        ),
        _ => (
            EventType::Engagement,
            None,
            json!({"read_depth": 40 + (i * 7) % 60, "active_ms": 15_000 + i * 1_733}),
        ),
    };
    let props: Map<String, Value> = match props {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Event {
        id: EventId(id),
        ts: t0 + i as u64 * 9_137,
        kind,
        name,
        page,
        props,
    }
}

/// A batch of `n` sample events from a fixed reader and session, `seq` 0.
pub fn sample_batch(n: usize) -> Batch {
    let t0 = 1_741_950_000_000;
    let events = (0..n)
        .map(|i| {
            // Deterministic but random-looking ids (ids do not compress, as in real traffic).
            let id = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            sample_event(i, t0, id)
        })
        .collect();
    Batch {
        header: BatchHeader {
            v: PROTOCOL_VERSION,
            site_key: "dailyherald".to_owned(),
            anonymous_id: "3f9a1c0be27d4e58a6b1f0c9d8e7a6b5".to_owned(),
            user_id: None,
            session_id: "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f".to_owned(),
            seq: 0,
            sent_at: t0 + n as u64 * 9_137,
        },
        events,
    }
}
