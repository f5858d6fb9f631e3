//! What the tracker reads of the page: its URL, referrer and title (cut to the protocol's
//! limits), the site's meta tags, read depth, and the properties a command passes.

use super::js::get_f64;
use super::*;

pub(super) fn meta_content(selector: &str) -> Option<String> {
    let meta = call(&document(), "querySelector", &[&selector.into()]).ok()?;
    call(&meta, "getAttribute", &[&"content".into()])
        .ok()?
        .as_string()
        .map(|c| c.trim_matches(|c: char| c.is_ascii_whitespace()).to_owned())
        .filter(|c| !c.is_empty())
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

pub(super) fn page_context() -> PageContext {
    let document = document();
    let text =
        |obj: &JsValue, key: &str, max: usize| truncate(get_str(obj, key).unwrap_or_default(), max);
    PageContext {
        url: text(&get(&document, "location"), "href", MAX_URL_LEN),
        referrer: text(&document, "referrer", MAX_URL_LEN),
        title: text(&document, "title", MAX_TITLE_LEN),
    }
}

/// Percent of the document height seen so far (bottom of the viewport).
/// Of the element marked `data-pulse-article` when there is one (how far its bottom edge has
/// come into view), else of the whole document.
pub(super) fn read_depth() -> u32 {
    let window = window();
    let viewport = get_f64(&window, "innerHeight").unwrap_or(0.0);
    let article = call(
        &document(),
        "querySelector",
        &[&"[data-pulse-article]".into()],
    )
    .ok()
    .filter(|a| !absent(a));
    let (seen, height) = match article {
        Some(article) => {
            let rect = call(&article, "getBoundingClientRect", &[]).unwrap_or_default();
            let top = get_f64(&rect, "top").unwrap_or(0.0);
            (viewport - top, get_f64(&rect, "height").unwrap_or(0.0))
        }
        None => (
            get_f64(&window, "scrollY").unwrap_or(0.0) + viewport,
            get_f64(&js::html(), "scrollHeight").unwrap_or(0.0),
        ),
    };
    if height <= 0.0 {
        return 100;
    }
    (seen / height * 100.0).clamp(0.0, 100.0) as u32
}

/// A JS value as props (compact JSON object text, from `JSON.stringify`); empty when absent or
/// not an object.
pub(super) fn props_of(value: &JsValue) -> String {
    if absent(value) {
        return String::new();
    }
    let text = JSON::stringify(value).ok().map(String::from);
    match text {
        Some(text) if text.starts_with('{') => text,
        _ => {
            warn("props must be a JSON object; ignored");
            String::new()
        }
    }
}
