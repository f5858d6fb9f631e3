//! Static files: the tracker (`/pulse.js`, `/pulse_bg.wasm`) and the demo site. Only plain paths
//! are served (no `..`, no escapes), from the configured folders.

use std::path::{Path, PathBuf};

/// A file to send: its bytes and content type.
#[derive(Debug)]
pub(crate) struct StaticFile {
    /// The file's contents.
    pub(crate) body: Vec<u8>,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Its `Cache-Control`.
    pub(crate) cache_control: &'static str,
    /// Whether any origin may read it: the tracker's files are loaded by publishers' pages on
    /// their own origins (`fetch` of the Wasm is a CORS request), the demo site only by itself.
    pub(crate) cross_origin: bool,
}

/// Why a file was not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StaticError {
    /// No such file (or an unsafe path).
    NotFound,
    /// The tracker has not been built into `tracker_dir`.
    TrackerMissing,
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

/// Reads the file for `url_path`: the tracker's files from `tracker_dir`, the rest from `site_dir`.
pub(crate) async fn load(
    tracker_dir: &Path,
    site_dir: Option<&Path>,
    url_path: &str,
) -> Result<StaticFile, StaticError> {
    let tracker = matches!(url_path, "/pulse.js" | "/pulse_bg.wasm");
    let root = if tracker {
        tracker_dir
    } else {
        site_dir.ok_or(StaticError::NotFound)?
    };
    let path = resolve(root, url_path).ok_or(StaticError::NotFound)?;
    match tokio::fs::read(&path).await {
        Ok(body) => Ok(StaticFile {
            body,
            content_type: content_type(&path),
            // The tracker is re-validated on each load so a new build reaches pages at once.
            cache_control: if tracker {
                "no-cache"
            } else {
                "public, max-age=60"
            },
            cross_origin: tracker,
        }),
        Err(_) if tracker => Err(StaticError::TrackerMissing),
        Err(_) => Err(StaticError::NotFound),
    }
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
}
