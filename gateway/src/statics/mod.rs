//! Static files: the tracker (`tracker.rs`: embedded, or from `server.tracker_dir`) and the
//! demo site. The tracker is sent gzipped to clients that take it, with an entity tag, under
//! stable and content-hashed names; the site's files are read from `site_dir` per request, and
//! only plain paths are served there (no `..`, no escapes). Choosing the answer is pure
//! ([`answer_tracker`]); reading files is in [`load`] and `tracker.rs`.

mod prepare;
mod tracker;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use tracker::Files;
pub(crate) use tracker::Tracker;

/// The `Cache-Control` of the content-hashed names: their bytes never change.
pub(crate) const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What was asked: the path and the request's negotiation headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The URL path.
    pub(crate) path: &'a str,
    /// The request's `Accept-Encoding`.
    pub(crate) accept_encoding: Option<&'a str>,
    /// The request's `If-None-Match`.
    pub(crate) if_none_match: Option<&'a str>,
}

/// A file to send: its bytes and headers.
#[derive(Debug)]
pub(crate) struct StaticFile {
    /// The client's copy is current: answer 304 with the headers and no body.
    pub(crate) not_modified: bool,
    /// The bytes to send (gzipped when `gzip`).
    pub(crate) body: Bytes,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Its `Cache-Control`.
    pub(crate) cache_control: &'static str,
    /// Its `ETag`, quoted.
    pub(crate) etag: Option<String>,
    /// `Content-Encoding: gzip`.
    pub(crate) gzip: bool,
    /// The tracker's: any origin may read it (publishers' pages on their own origins load it;
    /// the Wasm `fetch` is a CORS request), and it varies with `Accept-Encoding`. The demo site
    /// is read by itself only.
    pub(crate) tracker: bool,
}

/// Why a file was not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StaticError {
    /// No such file (or an unsafe path, or another build's hashed name).
    NotFound,
    /// `tracker_dir` is set and does not hold a built tracker.
    TrackerMissing,
    /// `tracker_dir` is not set and this binary was built without the tracker.
    TrackerNotEmbedded,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Maps a URL path onto a file under `root`, refusing anything but plain segments.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.trim_start_matches('/');
    let safe = rel.split('/').all(|seg| {
        !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if !safe {
        return None;
    }
    let mut path = root.join(rel);
    if rel.is_empty() || rel.ends_with('/') {
        path.push("index.html");
    }
    Some(path)
}

/// The file for `ask`: the tracker's from `tracker`, the rest from `site_dir`.
pub(crate) async fn load(
    tracker: &Tracker,
    site_dir: Option<&Path>,
    ask: Ask<'_>,
) -> Result<StaticFile, StaticError> {
    if Tracker::serves(ask.path) {
        let files = tracker.files().await?;
        return answer_tracker(&files, tracker.stable_cache_control(), ask)
            .ok_or(StaticError::NotFound);
    }
    let root = site_dir.ok_or(StaticError::NotFound)?;
    let path = resolve(root, ask.path).ok_or(StaticError::NotFound)?;
    let body = tokio::fs::read(&path)
        .await
        .map_err(|_| StaticError::NotFound)?;
    Ok(StaticFile {
        not_modified: false,
        body: body.into(),
        content_type: content_type(&path),
        cache_control: "public, max-age=60",
        etag: None,
        gzip: false,
        tracker: false,
    })
}

/// The answer for a tracker file: gzip when the client takes it, 304 when its `If-None-Match`
/// holds this file's tag (in either encoding); none for another build's hashed name.
fn answer_tracker(files: &Files, stable: &'static str, ask: Ask<'_>) -> Option<StaticFile> {
    let (asset, immutable) = files.find(ask.path)?;
    let gzip = accepts_gzip(ask.accept_encoding);
    // A strong tag per encoding (the bytes differ), both from the hash of the plain bytes.
    let tag = |gz: bool| format!("\"{}{}\"", asset.hash, if gz { "-gzip" } else { "" });
    let not_modified = ask
        .if_none_match
        .is_some_and(|h| etag_matches(h, &[&tag(false), &tag(true)]));
    Some(StaticFile {
        not_modified,
        body: match (not_modified, gzip) {
            (true, _) => Bytes::new(),
            (false, true) => asset.gzip.clone(),
            (false, false) => asset.plain.clone(),
        },
        content_type: asset.content_type,
        cache_control: if immutable { IMMUTABLE } else { stable },
        etag: Some(tag(gzip)),
        gzip,
        tracker: true,
    })
}

/// Whether an `Accept-Encoding` value takes gzip: named (or `x-gzip`) with a non-zero
/// quality, or `*` with one when gzip is not named. Without the header, no (RFC 9110 allows
/// any coding then, but some clients omit it and cannot decode).
fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else { return false };
    let mut star = false;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return quality > 0.0;
        }
        if coding == "*" {
            star = quality > 0.0;
        }
    }
    star
}

/// Whether an `If-None-Match` value names one of `tags` (weakly compared, as RFC 9110 asks for
/// `If-None-Match`), or is `*`.
fn etag_matches(header: &str, tags: &[&str]) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*" || {
            let t = t.strip_prefix("W/").unwrap_or(t);
            tags.contains(&t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsafe_paths() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/index.html")));
        assert_eq!(
            resolve(root, "/articles/a-1.html"),
            Some(PathBuf::from("/srv/articles/a-1.html"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/.git/config",
            "/a%2e%2e/b",
            "/a\\b",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    fn ask<'a>(path: &'a str, ae: Option<&'a str>, inm: Option<&'a str>) -> Ask<'a> {
        Ask {
            path,
            accept_encoding: ae,
            if_none_match: inm,
        }
    }

    fn files() -> Files {
        let js = b"glue();\nvar wasmFile = 'pulse_bg.wasm';\n";
        let p = prepare::prepare(js, b"\0asm\x01\0\0\0".repeat(40), 6).unwrap();
        Files::prepared(p)
    }

    #[test]
    fn gzip_only_to_clients_that_take_it() {
        for (header, gzip) in [
            (None, false),
            (Some("gzip"), true),
            (Some("gzip, deflate, br, zstd"), true),
            (Some("br;q=1.0, GZIP;q=0.5"), true),
            (Some("x-gzip"), true),
            (Some("identity"), false),
            (Some("br"), false),
            (Some("gzip;q=0"), false),
            (Some("gzip; q=0.000"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some(""), false),
        ] {
            assert_eq!(accepts_gzip(header), gzip, "{header:?}");
        }
    }

    #[test]
    fn the_stable_name_is_short_lived_and_revalidated_the_hashed_immutable() {
        let f = files();
        let stable = "public, max-age=300";
        let plain = answer_tracker(&f, stable, ask("/pulse.js", None, None)).unwrap();
        assert!(!plain.not_modified && !plain.gzip && plain.tracker);
        assert_eq!(plain.cache_control, stable);
        assert_eq!(plain.content_type, "text/javascript; charset=utf-8");
        let tag = plain.etag.clone().unwrap();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");

        let packed = answer_tracker(&f, stable, ask("/pulse.js", Some("gzip, br"), None)).unwrap();
        assert!(packed.gzip);
        assert_ne!(packed.etag.as_ref(), Some(&tag), "one tag per encoding");
        assert!(packed.body.len() < f.find("/pulse.js").unwrap().0.plain.len() + 30);

        let hashed = answer_tracker(&f, stable, ask(f.wasm_path(), None, None)).unwrap();
        assert_eq!(hashed.cache_control, IMMUTABLE);
        assert_eq!(hashed.content_type, "application/wasm");
        assert_eq!(hashed.body, b"\0asm\x01\0\0\0".repeat(40));
        assert!(
            answer_tracker(
                &f,
                stable,
                ask("/pulse_bg.0123456789abcdef.wasm", None, None)
            )
            .is_none()
        );

        // Revalidation: the tag of either encoding, weak or strong, in a list, or `*`.
        for inm in [
            tag.clone(),
            packed.etag.clone().unwrap(),
            format!("W/{tag}"),
            format!("\"other\", {tag}"),
            "*".to_owned(),
        ] {
            let again =
                answer_tracker(&f, stable, ask("/pulse.js", Some("gzip"), Some(&inm))).unwrap();
            assert!(again.not_modified, "{inm}");
            assert!(again.body.is_empty());
            assert_eq!(again.etag, packed.etag);
            assert_eq!(again.cache_control, stable);
        }
        let stale = answer_tracker(&f, stable, ask("/pulse.js", None, Some("\"0000\""))).unwrap();
        assert!(!stale.not_modified);
        assert_eq!(stale.body, plain.body);
    }
}
