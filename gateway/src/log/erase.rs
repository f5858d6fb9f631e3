//! Erasing a reader from the logs (a data subject's request): every record of theirs is
//! replaced, in place, by [`ERASED`], so that positions stay as they were and nothing of theirs
//! can be read back. The writer closes the segments it appends to; each whole segment is
//! copied with those records replaced, off the writer's thread (batches are appended
//! meanwhile), synced, and renamed over the old one by the writer (or dropped, should
//! retention have deleted the segment meanwhile); readers that had the old file open finish
//! with it.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zstd::bulk::Decompressor;

use super::block::{FRAME_HEADER, Packer, frame_header, next_frame, read_block, unpack};
use super::writer::{LogKind, Work};
use super::{Erased, EventLog, LogError};

impl EventLog {
    /// Erases every record of `reader` from the logs (their events, the dead letters that
    /// mention their key, their decisions), after the batches queued before: the writer
    /// closes the segments it appends to, the whole segments are rewritten here, off the
    /// writer's thread (appends go on meanwhile), and the writer puts the copies in place.
    pub async fn erase(&self, reader: &str) -> Result<Erased, LogError> {
        let sealed = self.ask(|reply| Work::Seal { reply }).await?;
        let reader = reader.to_owned();
        let rewritten = tokio::task::spawn_blocking(move || -> Result<_, LogError> {
            let mut packer = Packer::new()?;
            let theirs = |r: &[u8]| is_theirs(r, &reader);
            let named = |r: &[u8]| mentions(r, &reader);
            let mut copies = Vec::new();
            let mut erased = Erased::default();
            for (kind, first, path) in sealed {
                let matches: &dyn Fn(&[u8]) -> bool = match kind {
                    LogKind::DeadLetters => &named,
                    LogKind::Events | LogKind::Decisions => &theirs,
                };
                if let Some((n, fresh, bytes)) = rewrite(&path, &mut packer, matches)? {
                    match kind {
                        LogKind::Events => erased.events += n,
                        LogKind::DeadLetters => erased.dead_letters += n,
                        LogKind::Decisions => erased.decisions += n,
                    }
                    copies.push((kind, first, fresh, bytes));
                }
            }
            Ok((copies, erased))
        })
        .await
        .map_err(|_| LogError::Closed)??;
        let (copies, erased) = rewritten;
        self.ask(|reply| Work::Install { copies, reply }).await?;
        tracing::info!(?erased, "a reader's records erased from the logs");
        Ok(erased)
    }
}

/// What an erased record becomes; readers of the logs skip it.
pub(crate) const ERASED: &[u8] = b"{\"v\":1,\"erased\":true}";

/// The fields that say whose a record is (events and decisions carry them at the top).
#[derive(Deserialize)]
struct Whose<'a> {
    #[serde(borrow, default)]
    reader: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    anonymous_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

/// Whether an event or decision record is the reader's: their key is its reader key, its
/// anonymous id or its user id.
pub(crate) fn is_theirs(record: &[u8], reader: &str) -> bool {
    serde_json::from_slice::<Whose<'_>>(record).is_ok_and(|w| {
        [w.reader, w.anonymous_id, w.user_id]
            .iter()
            .flatten()
            .any(|k| k == reader)
    })
}

/// Whether a dead letter holds the reader's key anywhere in what was received (a dead letter
/// is what could not be read as an event, so it is searched as text: erasing one too many
/// dead letters is the safe side).
pub(crate) fn mentions(record: &[u8], reader: &str) -> bool {
    let quoted = serde_json::to_string(reader).unwrap_or_default();
    // Inside the dead letter's `raw` string the key's quotes are escaped.
    let escaped = serde_json::to_string(&quoted).unwrap_or_default();
    let needle = escaped.trim_matches('"');
    let has = |needle: &[u8]| record.windows(needle.len()).any(|w| w == needle);
    has(needle.as_bytes()) || has(quoted.as_bytes())
}

/// Writes a copy of the segment at `path` beside it with the records `matches` picks erased,
/// block by block, and syncs it; `None` when it holds none, else how many were erased, the
/// copy and its size (the log writer puts it in place: `SegmentLog::install`).
pub(crate) fn rewrite(
    path: &Path,
    packer: &mut Packer,
    matches: &dyn Fn(&[u8]) -> bool,
) -> io::Result<Option<(u64, PathBuf, u64)>> {
    let file = match File::open(path) {
        // Deleted by retention since it was named: nothing of theirs left there.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        file => file?,
    };
    let mut reader = BufReader::new(file);
    let mut decompressor = Decompressor::new()?;
    let (mut packed, mut raw) = (Vec::new(), Vec::new());
    // Every block's frames, some replaced: (frames, records).
    let mut blocks: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut erased = 0u64;
    while let Some(info) = read_block(&mut reader, &mut packed)? {
        unpack(&mut decompressor, &mut packed, info, &mut raw)?;
        let mut frames = Vec::with_capacity(raw.len());
        let mut at = 0;
        while let Some(record) = next_frame(&raw, &mut at)? {
            let keep = record == ERASED || !matches(record);
            let record = if keep { record } else { ERASED };
            erased += u64::from(!keep);
            let start = frames.len();
            frames.resize(start + FRAME_HEADER, 0);
            frame_header(&mut frames[start..], record);
            frames.extend_from_slice(record);
        }
        blocks.push((frames, info.records));
    }
    if erased == 0 {
        return Ok(None);
    }
    let fresh = path.with_extension("erasing");
    let mut out = File::create(&fresh)?;
    let mut bytes = 0u64;
    for (frames, records) in &blocks {
        for part in packer.pack(&[frames], *records)? {
            out.write_all(part)?;
            bytes += part.len() as u64;
        }
    }
    out.sync_all()?;
    Ok(Some((erased, fresh, bytes)))
}
