//! The gateway's control side: what operators change while it runs (the sites and their
//! origins, the rate limits, the scorer's bundle) and the one way to change it, [`Control::reload`]:
//! read the config file, check it whole, apply all of it. SIGHUP calls it; so does the admin
//! API, after writing a change of limits to the file (checked by reading it back first).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pulse_http::Bound;
use pulse_protocol::RateLimit;

use crate::admit::{OwnOrigins, Sites};
use crate::config::{Config, ConfigError, Rate, RateLimits};
use crate::decide::{BundleChange, Decider};
use crate::ratelimit::RateLimiter;
use pulse_scorer::Bundle;

/// Why a change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change (or the file it would make) does not check: every problem.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The config file could not be read or written.
    #[error("the config file: {0}")]
    File(String),
    /// The gateway runs without a config file: there is nothing to reload.
    #[error("the gateway runs without a config file")]
    NoFile,
}

impl From<ConfigError> for ChangeError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(problems) => Self::Invalid(problems),
            ConfigError::Parse { message, .. } => Self::Invalid(vec![message]),
            ConfigError::Read { path, source } => {
                Self::File(format!("{}: {source}", path.display()))
            }
        }
    }
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The rate limits now in force.
    pub limits: RateLimits,
    /// Sites now configured.
    pub sites: usize,
    /// What became of the bundle.
    pub bundle: BundleChange,
}

/// What activating a bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    /// The bundle's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// In force at once, or being rebuilt first.
    pub change: BundleChange,
    /// Where it is kept (the archive `[scorer] bundle` now names).
    pub archive: PathBuf,
    /// Whether the config file was changed to name it (none without a config file).
    pub persisted: bool,
}

/// The control side.
#[derive(Debug)]
pub struct Control {
    path: Option<PathBuf>,
    /// Where activated bundles are kept: `<data>/bundles/`.
    bundles: PathBuf,
    public_origins: Vec<String>,
    /// `limits.max_body_bytes`, which the byte limit's burst must cover.
    max_body_bytes: usize,
    sites: RwLock<Arc<Sites>>,
    /// The rate limits, read by every request.
    pub limiter: Arc<RateLimiter>,
    decider: Arc<Decider>,
    /// The sites' dictionaries for compact bodies (shared through the control topic).
    pub(crate) dictionaries: Arc<crate::dictionary::Dictionaries>,
}

impl Control {
    /// The control side of a gateway started with `config`.
    pub(crate) fn new(config: &Config, decider: Arc<Decider>) -> Self {
        let own = OwnOrigins::new(&config.server.public_origins, None);
        Self {
            path: config.path.clone(),
            bundles: config.server.data.join("bundles"),
            dictionaries: Arc::new(crate::dictionary::Dictionaries::open(
                &config.dictionary,
                Some(&config.server.data),
            )),
            public_origins: config.server.public_origins.clone(),
            max_body_bytes: config.limits.max_body_bytes,
            sites: RwLock::new(Arc::new(Sites::new(&config.sites, own))),
            limiter: Arc::new(RateLimiter::new(
                &config.rate_limits,
                config.limits.max_body_bytes,
            )),
            decider,
        }
    }

    /// The sites in force.
    pub fn sites(&self) -> Arc<Sites> {
        match self.sites.read() {
            Ok(sites) => Arc::clone(&sites),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set_sites(&self, fresh: Sites) {
        let fresh = Arc::new(fresh);
        match self.sites.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// The listeners are bound: their addresses become the gateway's own origins too.
    pub(crate) fn listening(&self, bound: &Bound) {
        let own = OwnOrigins::new(&self.public_origins, Some(bound));
        tracing::info!(origins = ?own.list(), "the gateway's own origins (allow_same_origin)");
        self.set_sites(self.sites().with_own(own));
    }

    /// Re-reads the config file and applies what can change while running: the rate limits,
    /// the sites (keys and origins), the bundle and the shadow bundle. A file or bundle that does not check
    /// changes nothing. `[server]`, `[limits]`, `[transport]`, `[sink]` and `[dead_letters]` need a
    /// restart. The one reload: SIGHUP and the admin API both call it.
    pub fn reload(&self) -> Result<Applied, ChangeError> {
        let path = self.path.as_deref().ok_or(ChangeError::NoFile)?;
        let fresh = Config::load(path)?;
        self.apply(&fresh)
    }

    /// Applies the reloadable parts of `fresh` (already checked), all or nothing.
    fn apply(&self, fresh: &Config) -> Result<Applied, ChangeError> {
        // The only steps that can fail go first.
        let (bundle, shadow) = fresh.scorer.load_bundles()?;
        let bundle = match self.decider.engine().bundle() {
            Ok(active) if active.id == bundle.id => BundleChange::Active {
                replaced: active.id.clone(),
            },
            _ => self
                .decider
                .set_bundle(bundle)
                .map_err(|e| ChangeError::Invalid(vec![format!("scorer.bundle: {e}")]))?,
        };
        // The shadow has the bundle's features (checked above): this cannot fail now.
        self.decider
            .set_shadow(shadow)
            .map_err(|e| ChangeError::Invalid(vec![format!("scorer.shadow: {e}")]))?;
        let own = self.sites().own().clone();
        self.set_sites(Sites::new(&fresh.sites, own));
        self.limiter.replace(&fresh.rate_limits);
        let applied = Applied {
            limits: fresh.rate_limits.clone(),
            sites: fresh.sites.len(),
            bundle,
        };
        tracing::info!(
            limits = ?applied.limits,
            sites = applied.sites,
            bundle = ?applied.bundle,
            "configuration applied"
        );
        Ok(applied)
    }

    /// Activates a bundle sent whole (its text and the files it names, as `Bundle::stored`
    /// writes them): checked (every problem listed, nothing changed on refusal), kept as an
    /// archive under `<data>/bundles/`, named by `[scorer] bundle` in the config file (so that a
    /// restart or a reload keeps it), and put in force: at once when it keeps the features,
    /// else after its state is rebuilt from the log. The bundle it replaces is remembered for
    /// [`Control::rollback_bundle`].
    pub fn activate_bundle(&self, bundle: Bundle) -> Result<Activated, ChangeError> {
        let active = self
            .decider
            .engine()
            .bundle()
            .map_err(|e| ChangeError::File(e.to_string()))?;
        let mut history = self.history()?;
        if history.is_empty() && active.id != bundle.id {
            // The bundle of the config file goes first, so that a rollback can return to it.
            let archive = self.archive(&active)?;
            history.push((active.id.clone(), archive));
        }
        let archive = self.archive(&bundle)?;
        let (id, name) = (bundle.id.clone(), bundle.name.clone());
        let change = if active.id == bundle.id {
            BundleChange::Active {
                replaced: active.id.clone(),
            }
        } else {
            self.decider
                .set_bundle(bundle)
                .map_err(|e| ChangeError::Invalid(vec![format!("scorer.bundle: {e}")]))?
        };
        if history.last().map(|(i, _)| i) != Some(&id) {
            history.push((id.clone(), archive.clone()));
        }
        self.save_history(&history)?;
        let persisted = match self.path.as_deref() {
            Some(path) => {
                write_bundle_path(path, &archive)?;
                true
            }
            None => false,
        };
        tracing::info!(bundle = %id, name = %name, change = ?change, "bundle activated");
        Ok(Activated {
            id,
            name,
            change,
            archive,
            persisted,
        })
    }

    /// Activates the bundle that was active before the current one (as activations recorded
    /// it); refused when there is none.
    pub fn rollback_bundle(&self) -> Result<Activated, ChangeError> {
        let mut history = self.history()?;
        if history.len() < 2 {
            return Err(ChangeError::Invalid(vec![
                "no earlier bundle to roll back to (activate one first)".into(),
            ]));
        }
        history.pop();
        let (_, previous) = history.last().cloned().unwrap_or_default();
        let bundle = Bundle::read(&previous)
            .map_err(|e| ChangeError::Invalid(e.0.iter().map(ToString::to_string).collect()))?;
        // The earlier entry is the new current one.
        self.save_history(&history)?;
        self.activate_bundle(bundle)
    }

    /// Forgets a reader's state (an erasure made on another gateway); whether there was any.
    pub(crate) fn erase_reader(&self, reader: &str) -> Result<bool, String> {
        self.decider
            .engine()
            .erase(reader)
            .map_err(|e| e.to_string())
    }

    /// The id of the bundle in force (none when the scorer is unavailable).
    pub fn active_bundle_id(&self) -> Option<String> {
        self.decider.engine().bundle().ok().map(|b| b.id.clone())
    }

    /// Activated bundles, oldest first: id and archive.
    pub fn history(&self) -> Result<Vec<(String, PathBuf)>, ChangeError> {
        let file = self.bundles.join("history");
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|l| {
                    let (id, path) = l.split_once(' ')?;
                    Some((id.to_owned(), PathBuf::from(path)))
                })
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ChangeError::File(format!("{}: {e}", file.display()))),
        }
    }

    fn save_history(&self, history: &[(String, PathBuf)]) -> Result<(), ChangeError> {
        // The last 100 activations are enough to roll back through.
        let start = history.len().saturating_sub(100);
        let text: String = history[start..]
            .iter()
            .map(|(id, p)| format!("{id} {}\n", p.display()))
            .collect();
        replace_file(&self.bundles.join("history"), text.as_bytes())
    }

    /// Writes `bundle` (text and files) to `<data>/bundles/<id>.bundle`; returns the path.
    fn archive(&self, bundle: &Bundle) -> Result<PathBuf, ChangeError> {
        let file =
            |e: std::io::Error| ChangeError::File(format!("{}: {e}", self.bundles.display()));
        std::fs::create_dir_all(&self.bundles).map_err(file)?;
        let path = self.bundles.join(format!("{}.bundle", bundle.id));
        let stored = bundle.stored();
        let mut bytes = stored;
        if bytes.first() != Some(&0) {
            // A bundle without files is its text; archive it in the same form as the others.
            let text = std::mem::take(&mut bytes);
            bytes.push(0);
            bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&text);
        }
        replace_file(&path, &bytes)?;
        Ok(path)
    }

    /// Changes the rate limits by `patch` (a JSON object, whole or partial `[rate_limits]`):
    /// merged onto the limits in force and checked; then, with a config file, written to it
    /// (checked by reading the new text back before it replaces the file) and the file
    /// reloaded; without one, applied as they are. Returns the limits in force and whether the
    /// file was written.
    pub fn change_limits(&self, patch: &[u8]) -> Result<(RateLimits, bool), ChangeError> {
        let limits = merge_limits(&self.limiter.limits(), patch)?;
        let Some(path) = self.path.as_deref() else {
            let problems = limits.problems(self.max_body_bytes);
            if !problems.is_empty() {
                return Err(ChangeError::Invalid(problems));
            }
            self.limiter.replace(&limits);
            tracing::info!(?limits, "rate limits changed (no config file to write)");
            return Ok((limits, false));
        };
        write_back(path, &limits)?;
        let applied = self.reload()?;
        Ok((applied.limits, true))
    }
}

/// Sets `[scorer] bundle` of the TOML file at `path` to `bundle`, keeping everything else
/// (comments included); the new text must check as a configuration first.
pub(crate) fn write_bundle_path(path: &Path, bundle: &Path) -> Result<(), ChangeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ChangeError::File(format!("{}: {e}", path.display())))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ChangeError::Invalid(vec![e.to_string()]))?;
    let value = toml_edit::value(bundle.to_string_lossy().into_owned());
    match doc.get_mut("scorer").and_then(|item| item.as_table_mut()) {
        Some(table) => table["bundle"] = value,
        None => {
            let mut table = toml_edit::Table::new();
            table["bundle"] = value;
            doc["scorer"] = toml_edit::Item::Table(table);
        }
    }
    let fresh = doc.to_string();
    Config::parse(&fresh)?;
    replace_file(path, fresh.as_bytes())
}

/// Replaces the file at `path` with `text`: written to a temporary file, synced and renamed,
/// so that a crash leaves one file or the other.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ChangeError> {
    let file = |e: std::io::Error| ChangeError::File(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.to_string_lossy()));
    // The file keeps its permissions (a 0600 config with secrets stays 0600); they are set
    // before a byte is written.
    let kept = std::fs::metadata(path).ok().map(|m| m.permissions());
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        if let Some(permissions) = kept.clone() {
            f.set_permissions(permissions)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(file)
}

/// Merges `patch` (a JSON object, whole or partial `[rate_limits]`) onto `current`. Numbers
/// out of range of their field (a rate is at most 2^32 − 1) are refused here.
pub fn merge_limits(current: &RateLimits, patch: &[u8]) -> Result<RateLimits, ChangeError> {
    let patch: serde_json::Value = serde_json::from_slice(patch)
        .map_err(|e| ChangeError::Invalid(vec![format!("the body is not JSON: {e}")]))?;
    if !patch.is_object() {
        return Err(ChangeError::Invalid(vec![
            "the body must be a JSON object of rate limits".to_owned(),
        ]));
    }
    let mut merged =
        serde_json::to_value(current).map_err(|e| ChangeError::Invalid(vec![e.to_string()]))?;
    merge_json(&mut merged, patch);
    serde_json::from_value(merged).map_err(|e| ChangeError::Invalid(vec![e.to_string()]))
}

fn merge_json(into: &mut serde_json::Value, patch: serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(into), serde_json::Value::Object(patch)) => {
            for (k, v) in patch {
                match into.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Replaces the `[rate_limits]` table of the TOML file at `path` with `limits`, keeping
/// everything else (comments included). The new text must check as a whole configuration and
/// read back as exactly `limits` before it replaces the file; it is written to a temporary file,
/// synced and renamed, so a crash leaves one file or the other.
pub fn write_back(path: &Path, limits: &RateLimits) -> Result<(), ChangeError> {
    let file = |e: std::io::Error| ChangeError::File(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(file)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ChangeError::Invalid(vec![e.to_string()]))?;
    let int = |n: u64, name: &str| {
        i64::try_from(n).map_err(|_| {
            ChangeError::Invalid(vec![format!(
                "rate_limits.{name} = {n} does not fit the file"
            )])
        })
    };
    let mut table = toml_edit::Table::new();
    for limit in RateLimit::ALL {
        let Rate { per_second, burst } = limits.rate(limit);
        let mut t = toml_edit::InlineTable::new();
        t.insert("per_second", i64::from(per_second).into());
        t.insert("burst", i64::from(burst).into());
        table[limit.as_str()] = toml_edit::value(t);
    }
    table["max_keys"] = toml_edit::value(int(limits.max_keys as u64, "max_keys")?);
    match doc
        .get_mut("rate_limits")
        .and_then(|item| item.as_table_mut())
    {
        Some(existing) => {
            // Keep the table's position and its comments; replace the values.
            for (key, value) in table.iter() {
                existing[key] = value.clone();
            }
        }
        None => doc["rate_limits"] = toml_edit::Item::Table(table),
    }
    let fresh = doc.to_string();
    // Read back what would be written: it must be a good configuration holding these limits.
    let back = Config::parse(&fresh)?;
    if back.rate_limits != *limits {
        return Err(ChangeError::Invalid(vec![format!(
            "the file would hold {:?}, not the limits asked for",
            back.rate_limits
        )]));
    }
    replace_file(path, fresh.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_changes_merge_and_bad_ones_are_refused() {
        let current = RateLimits::default();
        let merged = merge_limits(&current, br#"{"ip_requests":{"per_second":7}}"#).unwrap();
        assert_eq!(merged.ip_requests, Rate::new(7, current.ip_requests.burst));
        assert_eq!(merged.site_events, current.site_events);
        for bad in [
            &b"[1]"[..],
            b"nope",
            br#"{"ip_requests":{"per_sec":1}}"#,
            br#"{"x":1}"#,
            br#"{"ip_requests":{"per_second":4294967296}}"#,
            br#"{"ip_requests":{"per_second":-1}}"#,
            br#"{"max_keys":1.5}"#,
        ] {
            assert!(
                merge_limits(&current, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn write_back_keeps_the_rest_of_the_file_and_refuses_what_would_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pulse.toml");
        let text = "# top comment\n[server]\nlisten = \"127.0.0.1:1\"\n\n[rate_limits]\n# keep me\nmax_keys = 5\n\n[[sites]]\nkey = \"a\"\n";
        std::fs::write(&path, text).unwrap();
        let limits = RateLimits {
            ip_requests: Rate::new(9, 99),
            ..RateLimits::default()
        };
        write_back(&path, &limits).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains("# top comment") && written.contains("# keep me"),
            "{written}"
        );
        let config = Config::parse(&written).unwrap();
        assert_eq!(config.rate_limits, limits);
        assert_eq!(config.sites[0].key, "a");
        // Numbers the file cannot hold, or limits that do not check, leave it alone.
        for bad in [
            RateLimits {
                max_keys: usize::MAX,
                ..limits.clone()
            },
            RateLimits {
                ip_requests: Rate::new(10, 5),
                ..limits.clone()
            },
        ] {
            assert!(write_back(&path, &bad).is_err(), "{bad:?}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
        }
        // The file keeps its permissions.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            write_back(&path, &RateLimits::default()).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        // A file without the table gets one.
        std::fs::write(&path, "[server]\n").unwrap();
        write_back(&path, &limits).unwrap();
        let config = Config::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(config.rate_limits, limits);
    }
}
