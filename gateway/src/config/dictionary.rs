//! `[dictionary]`: the preset dictionaries of compact bodies, trained on each site's traffic.

use serde::{Deserialize, Serialize};

/// Largest dictionary: DEFLATE reaches back 32 KiB at most.
pub const MAX_DICTIONARY_BYTES: usize = 32 * 1024;

/// `[dictionary]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DictionaryConfig {
    /// Train a dictionary for each site, serve it at `/v1/dictionary/<hash>?k=KEY` and name it
    /// in answers, so trackers compress against it (about half the bytes of a small batch).
    /// Default true.
    pub enabled: bool,
    /// Largest dictionary, bytes (at most 32768). Default 16384 (about 4 KB gzipped to
    /// download, once per reader and version).
    pub bytes: usize,
    /// A text (a page, a property, a word of a title) goes into a dictionary only when this
    /// many different readers sent it, so no dictionary holds what only a few readers sent
    /// (readers' ids, user ids and event ids never go in). 1 to 16; default 5.
    pub min_readers: usize,
    /// Batches of a site a training reads (taken while a dictionary is due; at most 8 MiB of
    /// their texts). Default 1000 (300 to 3,000 train as well: BENCH.md section 3).
    pub samples: usize,
    /// No dictionary before a site has sent this many batches (used after ten minutes of
    /// sampling when `samples` have not come). Default 300.
    pub min_samples: usize,
    /// A site's dictionary is trained again once its newest is this old, in seconds. Default
    /// 604800 (a week: each new version costs every reader one download).
    pub retrain_after_s: u64,
    /// Versions kept per site; a body naming an older one is answered 409
    /// `unknown_dictionary` (the tracker sends it again without). Default 8.
    pub keep: usize,
}

impl Default for DictionaryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes: 16 * 1024,
            min_readers: 5,
            samples: 1000,
            min_samples: 300,
            retrain_after_s: 7 * 24 * 3600,
            keep: 8,
        }
    }
}

impl DictionaryConfig {
    /// What does not make sense, for the config's error list.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(256..=MAX_DICTIONARY_BYTES).contains(&self.bytes) {
            out.push(format!(
                "dictionary.bytes is between 256 and {MAX_DICTIONARY_BYTES}, not {}",
                self.bytes
            ));
        }
        let most = pulse_protocol::compact::MAX_MIN_READERS;
        if !(1..=most).contains(&self.min_readers) {
            out.push(format!(
                "dictionary.min_readers is between 1 and {most}, not {}",
                self.min_readers
            ));
        }
        if self.keep == 0 || self.keep > 64 {
            out.push(format!(
                "dictionary.keep is between 1 and 64, not {}",
                self.keep
            ));
        }
        if self.samples == 0 || self.min_samples > self.samples {
            out.push(format!(
                "dictionary.samples ({}) is at least 1 and at least min_samples ({})",
                self.samples, self.min_samples
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_and_nonsense_is_named() {
        assert!(DictionaryConfig::default().problems().is_empty());
        let bad = DictionaryConfig {
            bytes: 40_000,
            min_readers: 0,
            keep: 0,
            samples: 10,
            min_samples: 20,
            ..DictionaryConfig::default()
        };
        let problems = bad.problems().join("\n");
        for field in ["bytes", "min_readers", "keep", "samples"] {
            assert!(
                problems.contains(&format!("dictionary.{field}")),
                "{problems}"
            );
        }
    }
}
