//! Page views: on `init` (or when a prerendered page is first shown), on single-page
//! navigation (`history.pushState` / `replaceState` to another URL, `popstate`), on a restore
//! from the back/forward cache (`pageshow` with `persisted`), and by hand (`pulse('page')`).
//! Each one first reports the engagement of the page before.

use js_sys::Function;

use super::js::{absent, call, get, window};
use super::send::send_engagement;
use super::*;

/// Listens for navigation that does not load a page.
pub(super) fn watch() {
    let window = window();
    let history = get(&window, "history");
    for method in ["pushState", "replaceState"] {
        let Ok(original) = get(&history, method).dyn_into::<Function>() else {
            continue;
        };
        let target = history.clone();
        // Leaked on purpose: the wrapper lives as long as the page.
        let wrapper = Closure::<dyn Fn(JsValue, JsValue, JsValue) -> Result<JsValue, JsValue>>::new(
            move |state, title, url| {
                let result = original.call3(&target, &state, &title, &url);
                changed();
                result
            },
        );
        set(&history, method, wrapper.as_ref());
        wrapper.forget();
    }
    let _ = on(&window, "popstate", false, |_| changed());
    let _ = on(&window, "pageshow", false, |event| {
        if get(&event, "persisted").as_bool() == Some(true) {
            with(|t| t.engagement.on_visibility(now(), true));
            page_view(None);
        }
    });
}

/// Runs `f` on the first `kind` event of `target`.
pub(super) fn once(
    target: &JsValue,
    kind: &str,
    f: impl FnOnce() + 'static,
) -> Result<(), JsValue> {
    let handler = Closure::once_into_js(f);
    let options = js_sys::Object::new();
    set(&options, "once", &JsValue::TRUE);
    call(
        target,
        "addEventListener",
        &[&kind.into(), &handler, &options],
    )
    .map(drop)
}

/// The page's URL as events carry it, without the fragment.
fn here() -> String {
    let href = get_str(&get(&window(), "location"), "href").unwrap_or_default();
    let href = href.split('#').next().unwrap_or_default().to_owned();
    with(|t| keep_query(&href, &t.query)).unwrap_or(href)
}

/// The URL changed without a page load: a page view when it is another page.
fn changed() {
    let now_at = here();
    if with(|t| t.page != now_at) == Some(true) {
        page_view(None);
    }
}

/// A page view with `props` (a `pulse('page', props)`), else with the page's `og:type` as
/// `content_type`; the engagement of the page before is sent first.
pub(super) fn page_view(props: Option<&JsValue>) {
    let page = here();
    let context = page_context();
    let before = with(|t| {
        t.page = page;
        t.page_context.replace(context)
    })
    .flatten();
    if let Some(before) = before {
        send_engagement(Some(before));
        let visible = visible();
        with(|t| t.engagement = Engagement::new(now(), visible));
    }
    let props = match props.filter(|p| !absent(p)) {
        Some(p) => props_of(p),
        None => match meta_content("meta[property=\"og:type\"]") {
            Some(content_type) => {
                let mut props = String::from("{");
                push_key(&mut props, "content_type");
                push_str(&mut props, &content_type);
                props.push('}');
                props
            }
            None => String::new(),
        },
    };
    let depth = read_depth();
    let href = get_str(&get(&window(), "location"), "href").unwrap_or_default();
    with(|t| {
        t.engagement.on_depth(depth);
        // A new campaign starts a new session.
        t.session.on_campaign(now(), campaign_of(&href), random());
    });
    push(EventType::PageView, None, props, true, None);
}
