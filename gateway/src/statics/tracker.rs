//! The tracker's files: the copy embedded in the binary (`gateway/build.rs`), or, when
//! `server.tracker_dir` is set, the files in that folder, prepared again whenever they change
//! (so `scripts/build-tracker.sh` reaches pages without a restart). Either way each file is
//! served under its stable name (`/pulse.js`, `/pulse_bg.wasm`, what tags and old pages name)
//! and under its content-hashed name (`/pulse.<hash>.js`, `/pulse_bg.<hash>.wasm`, immutable).
//! The IO boundary is [`Tracker::files`], which reads the folder; the rest is lookups.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::StaticError;
use super::prepare::{self, Prepared};

/// The tracker's files as the build embedded them.
struct Embedded {
    js: &'static [u8],
    js_gzip: &'static [u8],
    wasm: &'static [u8],
    wasm_gzip: &'static [u8],
    js_hash: &'static str,
    wasm_hash: &'static str,
}

/// Written by `gateway/build.rs`: `Some(Embedded { .. })`, or `None` when the build found no
/// tracker.
const EMBEDDED: Option<Embedded> = include!(concat!(env!("OUT_DIR"), "/tracker.rs"));

/// The gzip level for files read from `tracker_dir`: prepared while a request waits, so not the
/// slowest (the embedded copy has the best, paid at build time).
const DIR_GZIP_LEVEL: u32 = 6;

/// One file of the tracker, in both encodings.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Its bytes.
    pub(crate) plain: Bytes,
    /// Its bytes, gzipped.
    pub(crate) gzip: Bytes,
    /// The content hash of `plain` (16 hex digits), also its entity tag.
    pub(crate) hash: String,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
}

/// The script and the Wasm, with their hashed paths.
#[derive(Debug)]
pub(crate) struct Files {
    js: Asset,
    wasm: Asset,
    js_path: String,
    wasm_path: String,
}

impl Files {
    fn new(js: Asset, wasm: Asset) -> Self {
        Self {
            js_path: format!("/{}", prepare::js_name(&js.hash)),
            wasm_path: format!("/{}", prepare::wasm_name(&wasm.hash)),
            js,
            wasm,
        }
    }

    fn embedded(e: &Embedded) -> Self {
        Self::new(
            Asset {
                plain: Bytes::from_static(e.js),
                gzip: Bytes::from_static(e.js_gzip),
                hash: e.js_hash.to_owned(),
                content_type: JS,
            },
            Asset {
                plain: Bytes::from_static(e.wasm),
                gzip: Bytes::from_static(e.wasm_gzip),
                hash: e.wasm_hash.to_owned(),
                content_type: WASM,
            },
        )
    }

    pub(crate) fn prepared(p: Prepared) -> Self {
        Self::new(
            Asset {
                plain: p.js.into(),
                gzip: p.js_gzip.into(),
                hash: p.js_hash,
                content_type: JS,
            },
            Asset {
                plain: p.wasm.into(),
                gzip: p.wasm_gzip.into(),
                hash: p.wasm_hash,
                content_type: WASM,
            },
        )
    }

    /// The file at `path`, and whether the name is content-hashed (immutable).
    pub(crate) fn find(&self, path: &str) -> Option<(&Asset, bool)> {
        match path {
            "/pulse.js" => Some((&self.js, false)),
            "/pulse_bg.wasm" => Some((&self.wasm, false)),
            p if p == self.js_path => Some((&self.js, true)),
            p if p == self.wasm_path => Some((&self.wasm, true)),
            _ => None,
        }
    }

    /// `/pulse.<hash>.js`.
    pub(crate) fn js_path(&self) -> &str {
        &self.js_path
    }

    /// `/pulse_bg.<hash>.wasm`.
    pub(crate) fn wasm_path(&self) -> &str {
        &self.wasm_path
    }
}

const JS: &str = "text/javascript; charset=utf-8";
const WASM: &str = "application/wasm";

/// The length and modification time of both files: what says the folder changed.
type Stamp = [(u64, Option<SystemTime>); 2];

/// Where the tracker is served from.
#[derive(Debug)]
pub(crate) enum Tracker {
    /// The copy embedded at build time; none when the build had no tracker.
    Embedded(Option<Arc<Files>>),
    /// `server.tracker_dir`, prepared again when its files change.
    Dir {
        /// The folder holding `pulse.js` and `pulse_bg.wasm`.
        dir: PathBuf,
        /// The last preparation and the stamp of the files it was made from.
        cached: Mutex<Option<(Stamp, Arc<Files>)>>,
    },
}

impl Tracker {
    /// The folder `tracker_dir` when set, else the embedded copy; says which in the log.
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        if let Some(dir) = dir {
            tracing::info!(dir = %dir.display(), "tracker served from tracker_dir");
            return Self::Dir {
                dir: dir.to_owned(),
                cached: Mutex::new(None),
            };
        }
        let files = EMBEDDED.as_ref().map(|e| Arc::new(Files::embedded(e)));
        match &files {
            Some(f) => tracing::info!(
                script = f.js_path(),
                wasm = f.wasm_path(),
                "tracker embedded in this build, also served at"
            ),
            None => tracing::warn!(
                "this gateway was built without the tracker: /pulse.js answers 404; run scripts/build-tracker.sh and build the gateway again, or set server.tracker_dir"
            ),
        }
        Self::Embedded(files)
    }

    /// Whether `path` names a tracker file: the stable names, or a hashed one (of this build
    /// or of another; the other answers 404).
    pub(crate) fn serves(path: &str) -> bool {
        let hashed = |prefix: &str, suffix: &str| {
            path.strip_prefix(prefix)
                .and_then(|p| p.strip_suffix(suffix))
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        matches!(path, "/pulse.js" | "/pulse_bg.wasm")
            || hashed("/pulse.", ".js")
            || hashed("/pulse_bg.", ".wasm")
    }

    /// The `Cache-Control` of the stable names. Embedded: five minutes, then revalidated with
    /// the ETag (a new gateway reaches pages within that). From `tracker_dir`: revalidated on
    /// every load, so a new build reaches pages at once.
    pub(crate) fn stable_cache_control(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "public, max-age=300",
            Self::Dir { .. } => "no-cache",
        }
    }

    /// The files to serve.
    pub(crate) async fn files(&self) -> Result<Arc<Files>, StaticError> {
        let (dir, cached) = match self {
            Self::Embedded(files) => return files.clone().ok_or(StaticError::TrackerNotEmbedded),
            Self::Dir { dir, cached } => (dir, cached),
        };
        let (js_path, wasm_path) = (dir.join("pulse.js"), dir.join("pulse_bg.wasm"));
        let stamp_of = |m: std::fs::Metadata| (m.len(), m.modified().ok());
        let stamp: Stamp = match (
            tokio::fs::metadata(&js_path).await,
            tokio::fs::metadata(&wasm_path).await,
        ) {
            (Ok(js), Ok(wasm)) => [stamp_of(js), stamp_of(wasm)],
            _ => return Err(StaticError::TrackerMissing),
        };
        if let Some((seen, files)) = lock(cached).as_ref()
            && *seen == stamp
        {
            return Ok(Arc::clone(files));
        }
        let (Ok(js), Ok(wasm)) = (
            tokio::fs::read(&js_path).await,
            tokio::fs::read(&wasm_path).await,
        ) else {
            return Err(StaticError::TrackerMissing);
        };
        let prepared =
            tokio::task::spawn_blocking(move || prepare::prepare(&js, wasm, DIR_GZIP_LEVEL))
                .await
                .map_err(|_| StaticError::TrackerMissing)?
                .map_err(|_| StaticError::TrackerMissing)?;
        let files = Arc::new(Files::prepared(prepared));
        tracing::info!(
            dir = %dir.display(),
            script = files.js_path(),
            wasm = files.wasm_path(),
            "tracker read from tracker_dir, also served at"
        );
        *lock(cached) = Some((stamp, Arc::clone(&files)));
        Ok(files)
    }
}

/// The cache, even if a thread panicked holding it (it holds a finished value or none).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        let js = b"x;\nvar wasmFile = 'pulse_bg.wasm';\n";
        Files::prepared(prepare::prepare(js, b"\0asm".to_vec(), 1).unwrap())
    }

    #[test]
    fn stable_and_hashed_names_find_the_same_files() {
        let f = files();
        let (js, immutable) = f.find("/pulse.js").unwrap();
        assert!(!immutable);
        assert_eq!(js.content_type, JS);
        let (hashed, immutable) = f.find(f.js_path()).unwrap();
        assert!(immutable);
        assert_eq!(hashed.plain, js.plain);
        let (wasm, immutable) = f.find("/pulse_bg.wasm").unwrap();
        assert!(!immutable);
        assert_eq!(wasm.content_type, WASM);
        assert!(f.find(f.wasm_path()).unwrap().1);
        // The script names the hashed Wasm.
        let text = String::from_utf8(js.plain.to_vec()).unwrap();
        assert!(
            text.contains(f.wasm_path().trim_start_matches('/')),
            "{text}"
        );
        // Another build's hashed names are tracker paths, not this build's files.
        let old = "/pulse_bg.0123456789abcdef.wasm";
        assert!(Tracker::serves(old));
        assert!(f.find(old).is_none());
        assert!(Tracker::serves(f.js_path()) && Tracker::serves(f.wasm_path()));
        for other in [
            "/pulse.min.js",
            "/pulse_bg.wasm.map",
            "/index.html",
            "/pulse.x.wasm",
        ] {
            assert!(!Tracker::serves(other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_folder_is_prepared_again_when_its_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::new(Some(dir.path()));
        assert_eq!(tracker.stable_cache_control(), "no-cache");
        assert_eq!(
            tracker.files().await.err(),
            Some(StaticError::TrackerMissing)
        );
        std::fs::write(
            dir.path().join("pulse.js"),
            "var wasmFile = 'pulse_bg.wasm';",
        )
        .unwrap();
        std::fs::write(dir.path().join("pulse_bg.wasm"), b"\0asm one").unwrap();
        let first = tracker.files().await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &tracker.files().await.unwrap()),
            "cached"
        );
        std::fs::write(dir.path().join("pulse_bg.wasm"), b"\0asm two, longer").unwrap();
        let second = tracker.files().await.unwrap();
        assert_ne!(first.wasm_path(), second.wasm_path());
        assert_eq!(
            &second.find("/pulse_bg.wasm").unwrap().0.plain[..],
            b"\0asm two, longer"
        );
    }
}
