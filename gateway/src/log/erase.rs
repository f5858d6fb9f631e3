//! Erasing a reader from the logs (a data subject's request): every record of theirs is
//! replaced, in place, by [`ERASED`], so that positions stay as they were and nothing of theirs
//! can be read back. A segment is rewritten whole into a new file, synced, and renamed over
//! the old one; readers that had the old file open finish with it.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::Path;

use serde::Deserialize;
use zstd::bulk::Decompressor;

use tokio::sync::oneshot;

use super::block::{FRAME_HEADER, Packer, frame_header, next_frame, read_block, unpack};
use super::writer::Work;
use super::{Erased, EventLog, LogError};

impl EventLog {
    /// Erases every record of `reader` from the logs (their events, the dead letters that
    /// mention their key, their decisions), after the batches queued before; see `erase`.
    pub async fn erase(&self, reader: &str) -> Result<Erased, LogError> {
        let tx = self
            .tx
            .read()
            .ok()
            .and_then(|tx| tx.clone())
            .ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Work::Erase {
            reader: reader.to_owned(),
            reply,
        })
        .await
        .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
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

/// Rewrites the segment at `path` with the records `matches` picks erased, block by block;
/// `None` when it holds none (the file is left alone), else how many were erased and the
/// segment's new size.
pub(crate) fn rewrite(
    path: &Path,
    packer: &mut Packer,
    matches: &dyn Fn(&[u8]) -> bool,
) -> io::Result<Option<(u64, u64)>> {
    let mut reader = BufReader::new(File::open(path)?);
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
    fs::rename(&fresh, path)?;
    Ok(Some((erased, bytes)))
}
