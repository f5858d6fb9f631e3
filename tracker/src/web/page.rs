//! What the tracker reads of the page: its URL, referrer and title (cut to the protocol's
//! limits), the site's meta tags, read depth, and the properties a command passes.

use super::*;

pub(super) fn meta_content(selector: &str) -> Option<String> {
    let document = web_sys::window()?.document()?;
    let meta = document.query_selector(selector).ok()??;
    meta.get_attribute("content")
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
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return PageContext::default();
    };
    let url = document
        .location()
        .and_then(|l| l.href().ok())
        .unwrap_or_default();
    PageContext {
        url: truncate(url, MAX_URL_LEN),
        referrer: truncate(document.referrer(), MAX_URL_LEN),
        title: truncate(document.title(), MAX_TITLE_LEN),
    }
}

/// Percent of the document height seen so far (bottom of the viewport).
pub(super) fn read_depth() -> u32 {
    let Some(window) = web_sys::window() else {
        return 0;
    };
    let height = window
        .document()
        .and_then(|d| d.document_element())
        .map_or(0, |e| e.scroll_height());
    let viewport = window
        .inner_height()
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let seen = window.scroll_y().unwrap_or(0.0) + viewport;
    if height <= 0 {
        return 100;
    }
    (seen / f64::from(height) * 100.0).clamp(0.0, 100.0) as u32
}

/// A JS value as props (compact JSON object text, from `JSON.stringify`); empty when absent or
/// not an object.
pub(super) fn props_of(value: &JsValue) -> String {
    if value.is_undefined() || value.is_null() {
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
