//! A preset dictionary for compact bodies, trained on a site's traffic and safe to serve to
//! anyone: made only of the texts records repeat (the site key, pages, event names, property
//! members, each with the length that frames it in a record) that at least `min_readers`
//! different readers sent. No reader's id, user id, token or event id, and no text only a few
//! readers sent (a property value with an e-mail address, a page under a private path) can be
//! in it: what goes in is what the site shows to many.
//!
//! The texts sent most often go last, where a body's back references are shortest.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use crate::WireBatch;

use super::put_varint;

/// Most readers told apart per text: `min_readers` above it count as this many.
pub const MAX_MIN_READERS: usize = 16;

/// A text's different readers (hashes of their anonymous ids, up to [`MAX_MIN_READERS`]; two
/// readers whose hashes collide count as one, which only keeps a text out) and how often it
/// came. Held inline: training allocates nothing per text but the text.
#[derive(Default)]
struct Seen {
    readers: [u32; MAX_MIN_READERS],
    distinct: u8,
    count: usize,
}

/// A dictionary of at most `size` bytes from `samples` (a site's recent batches).
pub fn train_dictionary(samples: &[WireBatch], size: usize, min_readers: usize) -> Vec<u8> {
    let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
    let mut note = |text: Vec<u8>, reader: u32| {
        if text.len() < 4 {
            return;
        }
        let s = seen.entry(text).or_default();
        let known = &s.readers[..usize::from(s.distinct)];
        if usize::from(s.distinct) < MAX_MIN_READERS && !known.contains(&reader) {
            s.readers[usize::from(s.distinct)] = reader;
            s.distinct += 1;
        }
        s.count += 1;
    };
    let hasher = RandomState::new();
    for batch in samples {
        let h = &batch.header;
        let reader = hasher.hash_one(&h.anonymous_id) as u32;
        note(framed(&h.site_key), reader);
        for e in &batch.events {
            // A page as the record writes it: url, referrer and title, each after its length.
            let mut page = framed(&e.page.url);
            page.extend_from_slice(&framed(&e.page.referrer));
            page.extend_from_slice(&framed(&e.page.title));
            // The whole event after its time, as a record has it, when others send it alike
            // (a page view of an article with the article's properties).
            let mut tail = e.name.as_deref().map(framed).unwrap_or_default();
            tail.extend_from_slice(&page);
            if !e.props.is_empty() && e.props != "{}" {
                tail.extend_from_slice(&framed(&e.props));
            }
            note(tail, reader);
            note(page, reader);
            note(framed(&e.page.url), reader);
            note(framed(&e.page.title), reader);
            // Words of paths and titles, with what precedes them: pages not in the dictionary
            // are mostly made of words that are.
            for text in [e.page.url.as_str(), e.page.title.as_str()] {
                for word in words(text) {
                    note(word.as_bytes().to_vec(), reader);
                }
            }
            if let Some(name) = &e.name {
                note(framed(name), reader);
            }
            if !e.props.is_empty() && e.props != "{}" {
                note(framed(&e.props), reader);
                for (key, member) in members(&e.props) {
                    note(key.as_bytes().to_vec(), reader);
                    note(member.as_bytes().to_vec(), reader);
                }
            }
        }
    }
    let min = min_readers.clamp(1, MAX_MIN_READERS);
    let mut kept: Vec<(usize, usize, Vec<u8>)> = seen
        .into_iter()
        .filter(|(_, s)| usize::from(s.distinct) >= min)
        .map(|(text, s)| (usize::from(s.distinct), s.count, text))
        .collect();
    // Most often (then by most readers, then the text, for a stable order) first, to fill the
    // dictionary with; then written in reverse, so that they end it.
    kept.sort_by(|a, b| (b.1, b.0, &a.2).cmp(&(a.1, a.0, &b.2)));
    let mut chosen = Vec::new();
    let mut len = 0;
    for (_, _, text) in kept {
        if len + text.len() <= size {
            len += text.len();
            chosen.push(text);
        }
    }
    chosen.iter().rev().flatten().copied().collect()
}

/// The words of a text, each with the separator before it (`-word`, `/word`, ` Word`).
fn words(text: &str) -> impl Iterator<Item = &str> {
    let starts = text
        .char_indices()
        .filter(|(_, c)| matches!(c, '/' | '-' | ' ' | '_' | '.' | '?' | '&' | '='))
        .map(|(i, _)| i);
    let mut bounds: Vec<usize> = starts.collect();
    bounds.push(text.len());
    bounds
        .windows(2)
        .map(move |w| &text[w[0]..w[1]])
        .collect::<Vec<_>>()
        .into_iter()
}

/// A text as a record frames it: its length (varint), then its bytes.
fn framed(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    put_varint(&mut out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
    out
}

/// The members of a JSON object's text, each as its key with what opens it (`{"key":` or
/// `,"key":`) and as the whole member (`,"key":value`). Nothing for text that is not an object.
fn members(object: &str) -> Vec<(&str, &str)> {
    let bytes = object.as_bytes();
    if bytes.first() != Some(&b'{') {
        return Vec::new();
    }
    let (mut out, mut start, mut key_end) = (Vec::new(), 0, None);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b':' if depth == 1 && key_end.is_none() => key_end = Some(i + 1),
            b',' | b'}' | b']' if depth == 1 && b != b']' => {
                if let Some(k) = key_end.take() {
                    out.push((&object[start..k], &object[start..i]));
                }
                start = i;
                if b == b'}' {
                    depth -= 1;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchHeader, EventId, EventType, PageContext, WireEvent};

    fn batch(reader: usize, url: &str, props: &str) -> WireBatch {
        WireBatch {
            header: BatchHeader {
                v: 1,
                site_key: "news".into(),
                anonymous_id: format!("anon-{reader}"),
                user_id: Some(format!("user-{reader}@example.com")),
                auth: Some("secret-token".into()),
                session_id: format!("session-{reader}"),
                seq: 0,
                sent_at: 1_800_000_000_000,
                resent: false,
            },
            events: vec![WireEvent {
                id: EventId(0xfeed_f00d_u128 + reader as u128),
                ts: 1_800_000_000_000,
                kind: EventType::Engagement,
                name: None,
                page: PageContext {
                    url: url.into(),
                    referrer: String::new(),
                    title: "Front page".into(),
                },
                props: props.into(),
            }],
        }
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn only_what_many_readers_sent_goes_in_and_nothing_that_names_one() {
        let mut samples: Vec<WireBatch> = (0..10)
            .map(|r| {
                let props = format!(r#"{{"read_depth":{},"section":"sport"}}"#, r * 7);
                batch(r, "https://n.example/", &props)
            })
            .collect();
        samples.push(batch(
            99,
            "https://n.example/account/jane-doe",
            r#"{"email":"jane@example.com"}"#,
        ));
        let dict = train_dictionary(&samples, 4096, 5);
        for common in [
            "https://n.example/",
            "Front page",
            "news",
            r#"{"read_depth":"#,
            r#","section":"sport""#,
        ] {
            assert!(contains(&dict, common), "{common} is common");
        }
        for private in [
            "jane",
            "anon-",
            "user-",
            "session-",
            "secret-token",
            "email",
        ] {
            assert!(!contains(&dict, private), "{private} must not be served");
        }
        assert!(!dict.windows(4).any(|w| w == 0xfeed_f00d_u32.to_be_bytes()));
        // Values only a few readers sent stay out; the key they follow is in.
        assert!(!contains(&dict, r#""read_depth":7"#));
    }

    #[test]
    fn the_size_is_kept_and_the_most_shared_texts_come_last() {
        let mut samples = Vec::new();
        for r in 0..40 {
            samples.push(batch(r, "https://n.example/everyone", "{}"));
            if r < 10 {
                samples.push(batch(r, "https://n.example/some", "{}"));
            }
        }
        let dict = train_dictionary(&samples, 64, 2);
        assert!(dict.len() <= 64);
        let tail = String::from_utf8_lossy(&dict[dict.len() - 30..]).into_owned();
        assert!(tail.contains("everyone"), "{tail}");
        assert!(train_dictionary(&samples, 0, 2).is_empty());
        assert!(train_dictionary(&[], 1024, 2).is_empty());
    }

    #[test]
    fn members_of_an_object_are_split_outside_strings_and_nesting() {
        assert_eq!(
            members(r#"{"a":1,"b":"x,}y","c":{"d":[1,2]}}"#),
            vec![
                (r#"{"a":"#, r#"{"a":1"#),
                (r#","b":"#, r#","b":"x,}y""#),
                (r#","c":"#, r#","c":{"d":[1,2]}"#),
            ]
        );
        assert!(members("[1,2]").is_empty());
        assert!(members("").is_empty());
    }
}
