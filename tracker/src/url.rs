//! What of a URL the tracker keeps: its query parameters are dropped except those an allow list
//! names (by default the campaign's, `utm_*`), so e-mail addresses, tokens and search terms in
//! query strings never leave the page. Pure.

use alloc::borrow::ToOwned;
use alloc::string::String;

/// The query parameters kept when the site names none: the campaign's.
pub const DEFAULT_QUERY_ALLOW: &str = "utm_*";

/// Whether the allow list keeps a parameter: an entry is its name, or a prefix ending in `*`.
fn allowed(name: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == a,
    })
}

/// `url` with only the query parameters `allow` keeps, in their order; the fragment stays.
pub fn keep_query(url: &str, allow: &[String]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let Some((path, query)) = base.split_once('?') else {
        return url.to_owned();
    };
    let mut out = String::from(path);
    let mut first = true;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if allowed(name, allow) {
            out.push(if first { '?' } else { '&' });
            out.push_str(pair);
            first = false;
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// The campaign a URL was reached by: its `utm_source`, `utm_medium` and `utm_campaign`, as
/// `source/medium/campaign`; `None` without any of them.
pub fn campaign_of(url: &str) -> Option<String> {
    let base = url.split('#').next().unwrap_or_default();
    let query = base.split_once('?')?.1;
    let (mut out, mut any) = (String::new(), false);
    for (i, name) in ["utm_source", "utm_medium", "utm_campaign"]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push('/');
        }
        let value = query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
        if let Some(value) = value {
            out.push_str(value);
            any = true;
        }
    }
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Vec<String> {
        vec![DEFAULT_QUERY_ALLOW.to_owned()]
    }

    #[test]
    fn keeps_campaign_parameters_only() {
        let url = "https://n.example/a?email=x%40y.z&utm_source=news&token=t&utm_medium=email#top";
        assert_eq!(
            keep_query(url, &default()),
            "https://n.example/a?utm_source=news&utm_medium=email#top"
        );
        assert_eq!(
            keep_query("https://n.example/a?q=secret", &default()),
            "https://n.example/a"
        );
        assert_eq!(
            keep_query("https://n.example/a#x?y=1", &default()),
            "https://n.example/a#x?y=1"
        );
        assert_eq!(
            keep_query("https://n.example/a", &default()),
            "https://n.example/a"
        );
        assert_eq!(keep_query("", &default()), "");
    }

    #[test]
    fn campaigns() {
        let url = "https://n.example/a?utm_medium=email&x=1&utm_source=news&utm_campaign=am#f";
        assert_eq!(campaign_of(url).as_deref(), Some("news/email/am"));
        assert_eq!(campaign_of("/a?utm_source=t").as_deref(), Some("t//"));
        assert_eq!(campaign_of("/a?x=1"), None);
        assert_eq!(campaign_of("/a#?utm_source=t"), None);
    }

    #[test]
    fn the_site_names_its_own() {
        let allow = vec!["page".to_owned(), "ref_*".to_owned()];
        assert_eq!(
            keep_query("/s?page=2&pages=3&ref_id=9&utm_source=x&&page", &allow),
            "/s?page=2&ref_id=9&page"
        );
        assert_eq!(keep_query("/s?a=1", &[]), "/s");
    }
}
