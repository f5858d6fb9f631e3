//! Each site's preset dictionaries for compact bodies (`[dictionary]`): trained on the site's
//! recent batches, served to its trackers, and used to inflate the bodies that name them.
//!
//! - Samples: while a site's next dictionary is due, its accepted compact batches (at most
//!   `samples` of them and [`SAMPLE_BYTES`] of text), without user ids or tokens; dropped once
//!   trained on. Between trainings nothing is sampled.
//! - Training (`pulse_protocol::compact::train_dictionary`, on a blocking thread): when a site
//!   with no dictionary younger than `retrain_after_s` has sent `samples` batches (or
//!   `min_samples`, ten minutes after sampling began). Only texts at
//!   least `min_readers` different readers sent go in, so a dictionary is safe to serve to
//!   anyone: it holds what the site shows to many, never a reader's id.
//! - Versions: named by their hash (`compact::dictionary_hash`), the newest `keep` of a site
//!   kept, in `<data>/dictionaries/<site>/<hash>.bin` (embedded) and, in Kafka mode, on the
//!   control topic (`dictionary/<site>/<hash>`), so every gateway holds every version any of
//!   them trained and a body inflates wherever it lands. A name is the content's hash, so two
//!   gateways training at once make two versions, never one name with two meanings.
//! - Serving: `GET /v1/dictionary/<hash>?k=KEY`, immutable; the answer to a compact body not
//!   compressed with the newest names it (`"dictionary"`), and the tracker fetches it once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use pulse_protocol::compact::{dictionary_hash, train_dictionary};
use pulse_protocol::{BatchHeader, EventView, HeaderView, WireBatch, WireEvent};

use crate::config::DictionaryConfig;

/// Most bytes of text a site's samples hold.
pub(crate) const SAMPLE_BYTES: usize = 8 << 20;

/// One version of a site's dictionary.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) hash: u32,
    pub(crate) bytes: Arc<[u8]>,
    /// When it was trained, ms since the epoch.
    pub(crate) created_ms: u64,
}

#[derive(Debug, Default)]
struct Samples {
    batches: Vec<WireBatch>,
    bytes: usize,
    /// When the first of these was taken (ms since the epoch).
    first_ms: u64,
    /// When training last started for the site (ms since the epoch).
    tried_ms: u64,
}

/// Training that made no dictionary (too few texts enough readers sent) is tried again after
/// this long.
const RETRY_MS: u64 = 10 * 60 * 1000;
/// A site that has not sent `samples` batches this long after sampling began trains on what it
/// sent, if at least `min_samples`.
const FILL_MS: u64 = 10 * 60 * 1000;

/// A trained dictionary to share with the other gateways (Kafka mode's control topic).
pub(crate) type Publish = Box<dyn Fn(&str, &Version) + Send + Sync>;

/// The dictionaries of every site (see the module's documentation).
pub(crate) struct Dictionaries {
    config: DictionaryConfig,
    dir: Option<PathBuf>,
    /// Per site key, its versions, oldest first.
    versions: RwLock<HashMap<String, Vec<Version>>>,
    samples: Mutex<HashMap<String, Samples>>,
    training: AtomicBool,
    /// Lookups that found a dictionary (a body inflated against it, or one served).
    inflated: std::sync::atomic::AtomicU64,
    publish: std::sync::OnceLock<Publish>,
}

impl std::fmt::Debug for Dictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionaries")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn hex(hash: u32) -> String {
    format!("{hash:08x}")
}

/// A dictionary's name in a URL, a file name or a control-topic key: 8 lowercase hex digits.
pub(crate) fn parse_hash(s: &str) -> Option<u32> {
    pulse_protocol::compact::parse_dictionary_name(s.as_bytes())
}

impl Version {
    /// As a file and a control-topic record hold it: the creation time (8 bytes, little-endian),
    /// then the dictionary.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.created_ms.to_le_bytes().to_vec();
        out.extend_from_slice(&self.bytes);
        out
    }

    /// The version named `hash` from what [`Version::encode`] wrote, if its bytes are what the
    /// name says.
    pub(crate) fn decode(hash: u32, encoded: &[u8]) -> Option<Self> {
        let (created, bytes) = encoded.split_first_chunk::<8>()?;
        (!bytes.is_empty() && dictionary_hash(bytes) == hash).then(|| Self {
            hash,
            bytes: bytes.into(),
            created_ms: u64::from_le_bytes(*created),
        })
    }
}

impl Dictionaries {
    /// The dictionaries kept under `data` (none when `data` is `None`: memory only).
    pub(crate) fn open(config: &DictionaryConfig, data: Option<&Path>) -> Self {
        let dir = data.map(|d| d.join("dictionaries"));
        let mut versions: HashMap<String, Vec<Version>> = HashMap::new();
        if let Some(dir) = &dir
            && config.enabled
        {
            for (site, version) in load(dir) {
                versions.entry(site).or_default().push(version);
            }
        }
        for list in versions.values_mut() {
            list.sort_by_key(|v| v.created_ms);
        }
        Self {
            config: config.clone(),
            dir,
            versions: RwLock::new(versions),
            samples: Mutex::new(HashMap::new()),
            training: AtomicBool::new(false),
            inflated: std::sync::atomic::AtomicU64::new(0),
            publish: std::sync::OnceLock::new(),
        }
    }

    /// Shares each dictionary trained here (Kafka mode).
    pub(crate) fn set_publish(&self, publish: Publish) {
        let _ = self.publish.set(publish);
    }

    /// The bytes of `site`'s dictionary `hash`, if held.
    pub(crate) fn get(&self, site: &str, hash: u32) -> Option<Arc<[u8]>> {
        let versions = self.versions.read().ok()?;
        let v = versions.get(site)?.iter().find(|v| v.hash == hash)?;
        self.inflated.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&v.bytes))
    }

    /// The newest dictionary of `site`, as answers name it, unless it is `used`.
    pub(crate) fn newer_than(&self, site: &str, used: Option<u32>) -> Option<String> {
        if !self.config.enabled {
            return None;
        }
        let versions = self.versions.read().ok()?;
        let newest = versions.get(site)?.last()?;
        (Some(newest.hash) != used).then(|| hex(newest.hash))
    }

    /// Versions held (all sites), and compact bodies inflated against one so far.
    pub(crate) fn counts(&self) -> (usize, u64) {
        let held = self
            .versions
            .read()
            .map_or(0, |v| v.values().map(Vec::len).sum());
        (held, self.inflated.load(Ordering::Relaxed))
    }

    /// Keeps a version of `site`'s dictionary (trained here or by another gateway): written
    /// to disk, the oldest beyond `keep` dropped. False when it was held already.
    pub(crate) fn add(&self, site: &str, version: Version) -> bool {
        let Ok(mut all) = self.versions.write() else {
            return false;
        };
        let list = all.entry(site.to_owned()).or_default();
        if list.iter().any(|v| v.hash == version.hash) {
            return false;
        }
        if let Some(dir) = &self.dir
            && let Err(e) = store(dir, site, &version)
        {
            tracing::warn!(site, error = %e, "cannot keep a dictionary on disk; it is held in memory");
        }
        list.push(version);
        list.sort_by_key(|v| v.created_ms);
        while list.len() > self.config.keep {
            let old = list.remove(0);
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_file(site_dir(dir, site).join(hex(old.hash) + ".bin"));
            }
        }
        true
    }

    /// Samples an accepted batch of `site` while its next dictionary is due (none yet, or the
    /// newest older than `retrain_after_s`), and starts training it once the samples are in:
    /// `samples` batches, or `min_samples` after [`FILL_MS`]. Between trainings this costs one
    /// read of the versions' map; samples are dropped once trained on.
    pub(crate) fn sample(
        self: &Arc<Self>,
        site: &str,
        header: &HeaderView<'_>,
        events: &[EventView<'_>],
        now_ms: u64,
    ) {
        if !self.config.enabled || events.is_empty() || !self.due(site, now_ms) {
            return;
        }
        let wanted = self.samples.lock().is_ok_and(|all| {
            all.get(site).is_none_or(|s| {
                s.batches.len() < self.config.samples
                    && now_ms.saturating_sub(s.tried_ms) >= RETRY_MS
            })
        });
        if !wanted {
            return;
        }
        let mut batch = WireBatch {
            header: BatchHeader {
                v: header.v,
                site_key: header.site_key.to_string(),
                anonymous_id: header.anonymous_id.to_string(),
                // Never needed, never kept.
                user_id: None,
                auth: None,
                session_id: String::new(),
                seq: header.seq,
                sent_at: header.sent_at,
                resent: false,
            },
            events: Vec::with_capacity(events.len()),
        };
        for view in events {
            if let Ok(event) = view.to_event() {
                batch.events.push(WireEvent::from(&event));
            }
        }
        let size: usize = batch
            .events
            .iter()
            .map(|e| e.page.url.len() + e.page.title.len() + e.page.referrer.len() + e.props.len())
            .sum::<usize>()
            + 64;
        let ready = {
            let Ok(mut all) = self.samples.lock() else {
                return;
            };
            let s = all.entry(site.to_owned()).or_default();
            if s.batches.is_empty() {
                s.first_ms = now_ms;
            }
            if s.bytes + size <= SAMPLE_BYTES {
                s.batches.push(batch);
                s.bytes += size;
            }
            let n = s.batches.len();
            let ready = (n >= self.config.samples
                || s.bytes + size > SAMPLE_BYTES
                || (n >= self.config.min_samples && now_ms.saturating_sub(s.first_ms) >= FILL_MS))
                && !self.training.swap(true, Ordering::AcqRel);
            if ready {
                s.tried_ms = now_ms;
                s.bytes = 0;
                Some(std::mem::take(&mut s.batches))
            } else {
                None
            }
        };
        if let Some(samples) = ready {
            let me = Arc::clone(self);
            let site = site.to_owned();
            let run = move || {
                me.train(&site, &samples, now_ms);
                me.training.store(false, Ordering::Release);
            };
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::task::spawn_blocking(run);
            } else {
                run();
            }
        }
    }

    fn due(&self, site: &str, now_ms: u64) -> bool {
        let Ok(versions) = self.versions.read() else {
            return false;
        };
        let newest = versions
            .get(site)
            .and_then(|l| l.last())
            .map(|v| v.created_ms);
        newest.is_none_or(|t| now_ms.saturating_sub(t) >= self.config.retrain_after_s * 1000)
    }

    /// Trains `site`'s next dictionary from its samples, keeps it and shares it.
    fn train(&self, site: &str, samples: &[WireBatch], now_ms: u64) {
        let bytes = train_dictionary(samples, self.config.bytes, self.config.min_readers);
        if bytes.len() < 64 {
            // Too few texts shared by enough readers yet: sampled again after RETRY_MS.
            tracing::info!(
                site,
                samples = samples.len(),
                "too few shared texts for a dictionary yet"
            );
            return;
        }
        let version = Version {
            hash: dictionary_hash(&bytes),
            bytes: bytes.into(),
            created_ms: now_ms,
        };
        tracing::info!(site, hash = %hex(version.hash), bytes = version.bytes.len(), samples = samples.len(), "trained a dictionary");
        if self.add(site, version.clone())
            && let Some(publish) = self.publish.get()
        {
            publish(site, &version);
        }
    }
}

fn site_dir(dir: &Path, site: &str) -> PathBuf {
    // Site keys are tokens (letters, digits, `-`, `_`, `.`), never `..` alone.
    dir.join(site)
}

fn store(dir: &Path, site: &str, v: &Version) -> std::io::Result<()> {
    let dir = site_dir(dir, site);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{}.tmp", hex(v.hash)));
    std::fs::write(&tmp, v.encode())?;
    std::fs::rename(&tmp, dir.join(hex(v.hash) + ".bin"))
}

/// Every kept version: `<dir>/<site>/<hash>.bin`, each checked against its name.
fn load(dir: &Path) -> Vec<(String, Version)> {
    let mut out = Vec::new();
    let Ok(sites) = std::fs::read_dir(dir) else {
        return out;
    };
    for site in sites.flatten() {
        let name = site.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(site.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let Some(hash) = stem.as_deref().and_then(parse_hash) else {
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| Version::decode(hash, &b))
            {
                Some(version) => out.push((name.clone(), version)),
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a damaged dictionary file")
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str, created_ms: u64) -> Version {
        Version {
            hash: dictionary_hash(text.as_bytes()),
            bytes: text.as_bytes().into(),
            created_ms,
        }
    }

    #[test]
    fn the_newest_versions_are_kept_on_disk_and_a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let config = DictionaryConfig {
            keep: 2,
            ..DictionaryConfig::default()
        };
        let d = Dictionaries::open(&config, Some(dir.path()));
        let (a, b, c) = (version("aaaa", 1), version("bbbb", 2), version("cccc", 3));
        assert!(d.add("demo", a.clone()));
        assert!(!d.add("demo", a.clone()), "held already");
        assert!(d.add("demo", c.clone()));
        assert!(d.add("demo", b.clone()));
        // The oldest went, on disk too; the newest is the one answers name.
        assert!(d.get("demo", a.hash).is_none());
        assert_eq!(d.newer_than("demo", None), Some(format!("{:08x}", c.hash)));
        assert_eq!(d.newer_than("demo", Some(c.hash)), None);
        assert!(d.get("other", c.hash).is_none());
        let files = std::fs::read_dir(dir.path().join("dictionaries/demo"))
            .unwrap()
            .count();
        assert_eq!(files, 2);
        // A file whose bytes are not what its name says is not loaded.
        let damaged = dir
            .path()
            .join(format!("dictionaries/demo/{:08x}.bin", b.hash));
        std::fs::write(&damaged, b"\0\0\0\0\0\0\0\0changed").unwrap();
        let again = Dictionaries::open(&config, Some(dir.path()));
        assert_eq!(&*again.get("demo", c.hash).unwrap(), b"cccc");
        assert!(again.get("demo", b.hash).is_none());
        assert_eq!(again.counts().0, 1);
    }

    #[test]
    fn names_are_eight_lowercase_hex_digits() {
        assert_eq!(parse_hash("00ff10ab"), Some(0x00ff_10ab));
        for bad in ["00FF10AB", "00ff10a", "00ff10abc", "0xff10ab", ""] {
            assert_eq!(parse_hash(bad), None, "{bad}");
        }
    }
}
