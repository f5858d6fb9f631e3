//! A log in segment files: `<folder>/<position of its first record, 20 digits>.log`, each a
//! sequence of blocks (see `block`: the records of one append, compressed). Appends go to the
//! newest segment, which rolls over to a new file past a size (or an age); whole old segments
//! are deleted for retention. A crash can only tear what was written after the last sync: on
//! open, the newest segment is cut back to its last whole block.
//!
//! Positions are implicit: a segment's first record is at the position in its name, each
//! record after it one further. IO: files only; the caller decides when to sync.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zstd::bulk::Decompressor;

use super::block::{Packer, next_frame, read_block, unpack};

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    first: u64,
    records: u64,
    bytes: u64,
    /// When it was last written to (its newest record is no older).
    written: SystemTime,
}

/// What was deleted for retention.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) segments: u64,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// A segmented log open for appending.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// Oldest first; the last is the one appended to.
    segments: VecDeque<Segment>,
    active: File,
    opened_at: SystemTime,
    segment_bytes: u64,
    /// A new segment file was created since the last sync: its directory entry must be synced.
    dir_dirty: bool,
    /// Something was written since the last sync.
    unsynced: bool,
    packer: Packer,
}

pub(crate) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// The segments of `dir`, by their first position.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort_unstable_by_key(|(first, _)| *first);
    Ok(found)
}

/// Counts the records of a segment's whole blocks and where the last one ends.
fn scan(path: &Path) -> io::Result<(u64, u64)> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let (mut records, mut end) = (0u64, 0u64);
    let mut packed = Vec::new();
    while let Ok(Some(block)) = read_block(&mut reader, &mut packed) {
        records += block.records;
        end += block.stored;
    }
    Ok((records, end))
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`; new segments roll past `segment_bytes`. The
    /// newest segment is cut back to its last whole frame.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        // Copies of an erasure that a stop cut short (the erasure was not answered).
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "erasing") {
                fs::remove_file(&path)?;
            }
        }
        let found = list(dir)?;
        let mut segments = VecDeque::with_capacity(found.len() + 1);
        for (i, (first, path)) in found.iter().enumerate() {
            let meta = fs::metadata(path)?;
            let written = meta.modified().unwrap_or_else(|_| SystemTime::now());
            let (records, bytes) = match found.get(i + 1) {
                // Older segments are whole (they were synced before the next one began).
                Some((next, _)) => (next.saturating_sub(*first), meta.len()),
                None => {
                    let (records, end) = scan(path)?;
                    if end < meta.len() {
                        tracing::warn!(
                            segment = %path.display(),
                            dropped_bytes = meta.len() - end,
                            "cutting a torn tail off the log (written but never acknowledged)"
                        );
                        OpenOptions::new().write(true).open(path)?.set_len(end)?;
                    }
                    (records, end)
                }
            };
            segments.push_back(Segment {
                first: *first,
                records,
                bytes,
                written,
            });
        }
        let mut dir_dirty = false;
        if segments.is_empty() {
            File::create(segment_path(dir, 0))?;
            segments.push_back(Segment {
                first: 0,
                records: 0,
                bytes: 0,
                written: SystemTime::now(),
            });
            dir_dirty = true;
        }
        let last = segments.back().map_or(0, |s| s.first);
        let mut active = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, last))?;
        active.seek(SeekFrom::End(0))?;
        let mut log = Self {
            dir: dir.to_owned(),
            segments,
            active,
            opened_at: SystemTime::now(),
            segment_bytes: segment_bytes.max(1),
            dir_dirty,
            unsynced: false,
            packer: Packer::new()?,
        };
        if log.dir_dirty {
            log.sync()?;
        }
        Ok(log)
    }

    /// The position the next record gets.
    pub(crate) fn next(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.first + s.records)
    }

    /// Bytes in every segment.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Records in every segment.
    pub(crate) fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Appends batches of framed records, each `(frames, records)`, as one block per segment
    /// (a batch never straddles two). Not durable until [`sync`](Self::sync). On error the log
    /// is cut back to where it was (or the error says it could not be).
    pub(crate) fn append(
        &mut self,
        batches: &[(&[u8], u64)],
        max_age: Option<Duration>,
    ) -> io::Result<()> {
        let mark = self.mark();
        let result = self.append_inner(batches, max_age);
        if let Err(e) = result {
            self.rewind(mark).map_err(|undo| {
                io::Error::other(format!("{e}; and cutting back failed: {undo}"))
            })?;
            return Err(e);
        }
        Ok(())
    }

    fn append_inner(
        &mut self,
        batches: &[(&[u8], u64)],
        max_age: Option<Duration>,
    ) -> io::Result<()> {
        let mut pending: Vec<IoSlice<'_>> = Vec::with_capacity(batches.len());
        let mut pending_bytes = 0u64;
        let mut pending_records = 0u64;
        for (frames, records) in batches {
            if frames.is_empty() {
                continue;
            }
            let active_bytes = self.segments.back().map_or(0, |s| s.bytes) + pending_bytes;
            let too_big =
                active_bytes > 0 && active_bytes + frames.len() as u64 > self.segment_bytes;
            let too_old = max_age.is_some_and(|age| {
                active_bytes > 0 && self.opened_at.elapsed().unwrap_or_default() > age
            });
            if too_big || too_old {
                self.write_pending(&mut pending, pending_bytes, pending_records)?;
                (pending_bytes, pending_records) = (0, 0);
                self.roll()?;
            }
            pending.push(IoSlice::new(frames));
            pending_bytes += frames.len() as u64;
            pending_records += records;
        }
        self.write_pending(&mut pending, pending_bytes, pending_records)
    }

    fn write_pending(
        &mut self,
        slices: &mut Vec<IoSlice<'_>>,
        bytes: u64,
        records: u64,
    ) -> io::Result<()> {
        if bytes == 0 {
            slices.clear();
            return Ok(());
        }
        let parts: Vec<&[u8]> = slices.iter().map(|s| &**s).collect();
        let block = self.packer.pack(&parts, records)?;
        let stored = (block[0].len() + block[1].len()) as u64;
        let mut two = [IoSlice::new(block[0]), IoSlice::new(block[1])];
        let mut rest: &mut [IoSlice<'_>] = &mut two;
        while !rest.is_empty() {
            let n = self.active.write_vectored(rest)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the log file took nothing",
                ));
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        slices.clear();
        self.unsynced = true;
        if let Some(active) = self.segments.back_mut() {
            active.bytes += stored;
            active.records += records;
            active.written = SystemTime::now();
        }
        Ok(())
    }

    /// Closes the segment appended to (when it holds records) and returns every whole segment
    /// that holds records, `(first position, path)`: what an erasure rewrites, away from the
    /// writer, while appends go on in a new segment.
    pub(crate) fn seal(&mut self) -> io::Result<Vec<(u64, PathBuf)>> {
        if self.segments.back().is_some_and(|s| s.records > 0) {
            self.roll()?;
            self.sync()?;
        }
        let active = self.segments.back().map(|s| s.first);
        Ok(self
            .segments
            .iter()
            .filter(|s| s.records > 0 && Some(s.first) != active)
            .map(|s| (s.first, segment_path(&self.dir, s.first)))
            .collect())
    }

    /// Puts the rewritten copy `fresh` (of `bytes`) in place of the segment starting at
    /// `first`, unless retention deleted that segment meanwhile (then the copy goes). The
    /// directory is synced by the next [`sync`](Self::sync).
    pub(crate) fn install(&mut self, first: u64, fresh: &Path, bytes: u64) -> io::Result<bool> {
        match self.segments.iter_mut().find(|s| s.first == first) {
            Some(segment) => {
                fs::rename(fresh, segment_path(&self.dir, first))?;
                segment.bytes = bytes;
                self.dir_dirty = true;
                Ok(true)
            }
            None => {
                fs::remove_file(fresh)?;
                Ok(false)
            }
        }
    }

    /// Erases in place every record `matches` picks (see `erase`), all on this thread.
    #[cfg(test)]
    pub(crate) fn erase(&mut self, matches: &dyn Fn(&[u8]) -> bool) -> io::Result<u64> {
        let mut packer = Packer::new()?;
        let mut erased = 0;
        for (first, path) in self.seal()? {
            if let Some((n, fresh, bytes)) = super::erase::rewrite(&path, &mut packer, matches)? {
                self.install(first, &fresh, bytes)?;
                erased += n;
            }
        }
        self.sync()?;
        Ok(erased)
    }

    /// Syncs the newest segment and closes it, then starts a new one at the next position.
    fn roll(&mut self) -> io::Result<()> {
        self.active.sync_data()?;
        let first = self.next();
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(&self.dir, first))?;
        self.active = file;
        self.opened_at = SystemTime::now();
        self.segments.push_back(Segment {
            first,
            records: 0,
            bytes: 0,
            written: SystemTime::now(),
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// Starts a new segment when the one appended to holds records written more than `age`
    /// ago, so that retention can delete them even if nothing more is appended.
    pub(crate) fn roll_if_older(&mut self, age: Duration, now: SystemTime) -> io::Result<()> {
        let stale = self.segments.back().is_some_and(|s| {
            s.records > 0 && now.duration_since(s.written).unwrap_or_default() > age
        });
        if stale {
            self.roll()?;
        }
        Ok(())
    }

    /// Makes everything appended durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.active.sync_data()?;
            self.unsynced = false;
        }
        if self.dir_dirty {
            File::open(&self.dir)?.sync_all()?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn mark(&self) -> (usize, u64, u64) {
        let active = self.segments.back();
        (
            self.segments.len(),
            active.map_or(0, |s| s.bytes),
            active.map_or(0, |s| s.records),
        )
    }

    /// Cuts the log back to `mark` (segments created since are deleted).
    fn rewind(&mut self, (count, bytes, records): (usize, u64, u64)) -> io::Result<()> {
        while self.segments.len() > count {
            if let Some(extra) = self.segments.pop_back() {
                fs::remove_file(segment_path(&self.dir, extra.first))?;
            }
        }
        let Some(active) = self.segments.back_mut() else {
            return Ok(());
        };
        let path = segment_path(&self.dir, active.first);
        let file = OpenOptions::new().append(true).open(&path)?;
        file.set_len(bytes)?;
        active.bytes = bytes;
        active.records = records;
        self.active = file;
        Ok(())
    }

    /// Deletes the oldest segments while the log holds more than `max_bytes`, and those whose
    /// newest record is older than `max_age` at `now`; never the one appended to, nor one that
    /// holds a position at or after `keep_from`.
    pub(crate) fn evict(
        &mut self,
        max_bytes: Option<u64>,
        max_age: Option<Duration>,
        now: SystemTime,
        keep_from: u64,
    ) -> io::Result<Evicted> {
        let mut evicted = Evicted::default();
        let mut total = self.bytes();
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            // The oldest segment ends where the next one starts.
            if self
                .segments
                .get(1)
                .is_none_or(|next| next.first > keep_from)
            {
                break;
            }
            let over = max_bytes.is_some_and(|max| total > max);
            let old = max_age
                .is_some_and(|age| now.duration_since(oldest.written).unwrap_or_default() > age);
            if !(over || old) {
                break;
            }
            fs::remove_file(segment_path(&self.dir, oldest.first))?;
            evicted.segments += 1;
            evicted.records += oldest.records;
            evicted.bytes += oldest.bytes;
            total -= oldest.bytes;
            self.segments.pop_front();
        }
        if evicted.segments > 0 {
            self.dir_dirty = true;
        }
        Ok(evicted)
    }
}

/// Reads the records of the log in `dir` from position `from` on, in order, stopping at the
/// first torn or corrupt block of the newest segment (which only a crash during an
/// unacknowledged write leaves).
pub(crate) fn read_from(dir: &Path, from: u64) -> io::Result<Reader> {
    let mut segments: VecDeque<(u64, PathBuf)> = list(dir)?.into();
    // Skip whole segments that end before `from`.
    while segments.len() > 1 && segments.get(1).is_some_and(|(next, _)| *next <= from) {
        segments.pop_front();
    }
    Ok(Reader {
        segments,
        current: None,
        from,
        decompressor: Decompressor::new()?,
        packed: Vec::new(),
        raw: Vec::new(),
        at: 0,
        done: false,
    })
}

/// An iterator over `(position, record)`.
pub(crate) struct Reader {
    segments: VecDeque<(u64, PathBuf)>,
    /// The segment being read and the position of the next record.
    current: Option<(BufReader<File>, u64)>,
    from: u64,
    decompressor: Decompressor<'static>,
    packed: Vec<u8>,
    /// The current block's frames, and where the next one starts.
    raw: Vec<u8>,
    at: usize,
    done: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("segments", &self.segments)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// The next record of the current segment; `Ok(None)` at its end.
    fn next_in_segment(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            let Some((file, position)) = self.current.as_mut() else {
                return Ok(None);
            };
            if let Some(record) = next_frame(&self.raw, &mut self.at)? {
                let at = *position;
                *position += 1;
                if at >= self.from {
                    return Ok(Some((at, record.to_vec())));
                }
                continue;
            }
            match read_block(file, &mut self.packed)? {
                // A whole block before `from`: skip it without decompressing.
                Some(block) if *position + block.records <= self.from => {
                    *position += block.records;
                    self.raw.clear();
                    self.at = 0;
                }
                Some(block) => {
                    unpack(
                        &mut self.decompressor,
                        &mut self.packed,
                        block,
                        &mut self.raw,
                    )?;
                    self.at = 0;
                }
                None => return Ok(None),
            }
        }
    }
}

impl Iterator for Reader {
    type Item = io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.current.is_none() {
                let (first, path) = self.segments.pop_front()?;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some((BufReader::with_capacity(256 * 1024, file), first));
                        self.raw.clear();
                        self.at = 0;
                    }
                    // Deleted by retention since it was listed (a reader beside a running
                    // gateway): its records are gone, the next segment follows.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            match self.next_in_segment() {
                // Erased for its reader (see `erase`): the position stays, the record is gone.
                Ok(Some((_, record))) if record == super::erase::ERASED => {}
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => self.current = None,
                Err(e) if self.segments.is_empty() => {
                    // A torn tail of the newest segment (the gateway cuts it off when it next
                    // opens the log): nothing acknowledged is in it.
                    tracing::debug!(error = %e, "the log ends in a torn block");
                    self.done = true;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
