//! Blocks: what the log writer writes to a log at once (the records of one group commit). A
//! block is `[magic][records: u32 LE][length of its records: u32 LE][length stored: u32
//! LE][CRC-32 of the stored bytes: u32 LE][stored bytes]`; the records are frames `[length: u32
//! LE][CRC-32 of the record: u32 LE][record]`, framed by the request that made them. Blocks
//! from 64 KiB of records up (a group commit under load) are stored as one zstd frame (magic
//! `PLB1`): that is when the disk, not the processor, is what the log waits on, and zstd's
//! fixed cost per frame is spread over many records. Smaller ones are stored as they are
//! (magic `PLB0`).

use std::io::{self, Read};

use zstd::bulk::{Compressor, Decompressor};

/// Bytes of a block's header.
pub(crate) const BLOCK_HEADER: usize = 20;
/// Bytes before each record inside a block: its length and its CRC-32.
pub(crate) const FRAME_HEADER: usize = 8;
const MAGIC_RAW: [u8; 4] = *b"PLB0";
const MAGIC_ZSTD: [u8; 4] = *b"PLB1";
/// Blocks of at least this many bytes of records are compressed.
const COMPRESS_FROM: usize = 64 * 1024;
/// zstd's fastest levels compress these JSON records several times over at a fraction of a
/// core; the writer compresses on its own thread.
const LEVEL: i32 = 1;
/// The largest block, before compression (the writer's groups are far smaller).
const MAX_RAW: u32 = 256 << 20;

/// Writes the frame header for `record` into `header` (its 8 bytes).
pub(crate) fn frame_header(header: &mut [u8], record: &[u8]) {
    let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(record).to_le_bytes());
}

fn corrupt(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut four = [0u8; 4];
    four.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(four)
}

/// Makes blocks, reusing its compression context and buffers.
pub(crate) struct Packer {
    compressor: Compressor<'static>,
    raw: Vec<u8>,
    packed: Vec<u8>,
    header: [u8; BLOCK_HEADER],
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").finish_non_exhaustive()
    }
}

impl Packer {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            compressor: Compressor::new(LEVEL)?,
            raw: Vec::new(),
            packed: Vec::new(),
            header: [0; BLOCK_HEADER],
        })
    }

    /// The block holding `parts` (whole frames, `records` of them, in order): its header and
    /// its stored bytes, to be written one after the other.
    pub(crate) fn pack(&mut self, parts: &[&[u8]], records: u64) -> io::Result<[&[u8]; 2]> {
        self.raw.clear();
        for part in parts {
            self.raw.extend_from_slice(part);
        }
        let raw_len = u32::try_from(self.raw.len())
            .ok()
            .filter(|n| *n <= MAX_RAW)
            .ok_or_else(|| corrupt("a block too large"))?;
        let records = u32::try_from(records).map_err(|_| corrupt("too many records"))?;
        let compress = self.raw.len() >= COMPRESS_FROM;
        if compress {
            self.packed.clear();
            self.packed
                .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
            self.compressor
                .compress_to_buffer(&self.raw, &mut self.packed)?;
        } else {
            std::mem::swap(&mut self.raw, &mut self.packed);
        }
        let packed_len =
            u32::try_from(self.packed.len()).map_err(|_| corrupt("a block too large"))?;
        let h = &mut self.header;
        h[..4].copy_from_slice(if compress { &MAGIC_ZSTD } else { &MAGIC_RAW });
        h[4..8].copy_from_slice(&records.to_le_bytes());
        h[8..12].copy_from_slice(&raw_len.to_le_bytes());
        h[12..16].copy_from_slice(&packed_len.to_le_bytes());
        h[16..20].copy_from_slice(&crc32fast::hash(&self.packed).to_le_bytes());
        Ok([&self.header, &self.packed])
    }
}

/// A block's header, read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockInfo {
    /// Records in it.
    pub(crate) records: u64,
    /// Its length before compression.
    pub(crate) raw_len: usize,
    /// Its length in the file, header included.
    pub(crate) stored: u64,
    /// Whether its records are compressed.
    compressed: bool,
}

/// Reads one block (header and compressed bytes, checked against the CRC) into `packed`;
/// `Ok(None)` at a clean end, `Err` on a torn or corrupt block.
pub(crate) fn read_block(
    reader: &mut impl Read,
    packed: &mut Vec<u8>,
) -> io::Result<Option<BlockInfo>> {
    let mut header = [0u8; BLOCK_HEADER];
    let mut got = 0;
    while got < BLOCK_HEADER {
        match reader.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "torn block header",
                ));
            }
            n => got += n,
        }
    }
    let compressed = match [header[0], header[1], header[2], header[3]] {
        MAGIC_ZSTD => true,
        MAGIC_RAW => false,
        _ => return Err(corrupt("not a block")),
    };
    let (records, raw_len, len, crc) = (
        u32_at(&header, 4),
        u32_at(&header, 8),
        u32_at(&header, 12),
        u32_at(&header, 16),
    );
    if raw_len > MAX_RAW || len > MAX_RAW {
        return Err(corrupt("a block too large"));
    }
    packed.clear();
    packed.resize(len as usize, 0);
    reader.read_exact(packed)?;
    if crc32fast::hash(packed) != crc {
        return Err(corrupt("block checksum mismatch"));
    }
    if !compressed && raw_len != len {
        return Err(corrupt("a stored block of two lengths"));
    }
    Ok(Some(BlockInfo {
        records: u64::from(records),
        raw_len: raw_len as usize,
        stored: (BLOCK_HEADER + packed.len()) as u64,
        compressed,
    }))
}

/// The frames of a block read by [`read_block`], into `raw` (decompressed, or taken as they
/// are).
pub(crate) fn unpack(
    decompressor: &mut Decompressor<'static>,
    packed: &mut Vec<u8>,
    info: BlockInfo,
    raw: &mut Vec<u8>,
) -> io::Result<()> {
    if !info.compressed {
        std::mem::swap(packed, raw);
        return Ok(());
    }
    raw.clear();
    raw.reserve(info.raw_len);
    let n = decompressor.decompress_to_buffer(packed, raw)?;
    if n != info.raw_len {
        return Err(corrupt("a block of another length than its header says"));
    }
    Ok(())
}

/// The record of the frame at `*pos` of `raw` (moving past it); `Ok(None)` at the end.
pub(crate) fn next_frame<'a>(raw: &'a [u8], pos: &mut usize) -> io::Result<Option<&'a [u8]>> {
    if *pos >= raw.len() {
        return Ok(None);
    }
    let header = raw
        .get(*pos..*pos + FRAME_HEADER)
        .ok_or_else(|| corrupt("torn frame header"))?;
    let (len, crc) = (u32_at(header, 0) as usize, u32_at(header, 4));
    let start = *pos + FRAME_HEADER;
    let record = raw
        .get(start..start + len)
        .ok_or_else(|| corrupt("torn frame"))?;
    if len == 0 || crc32fast::hash(record) != crc {
        return Err(corrupt("frame checksum mismatch"));
    }
    *pos = start + len;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let at = out.len();
            out.extend_from_slice(&[0; FRAME_HEADER]);
            out.extend_from_slice(r);
            let (head, record) = out[at..].split_at_mut(FRAME_HEADER);
            frame_header(head, record);
        }
        out
    }

    fn round_trip(records: &[Vec<u8>]) -> (Vec<Vec<u8>>, bool) {
        let mut packer = Packer::new().unwrap();
        let all = frames(records);
        let (a, b) = all.split_at(all.len() / 2);
        let block = packer.pack(&[a, b], records.len() as u64).unwrap().concat();
        let mut packed = Vec::new();
        let info = read_block(&mut &block[..], &mut packed).unwrap().unwrap();
        assert_eq!(info.records, records.len() as u64);
        assert_eq!(info.stored, block.len() as u64);
        let mut raw = Vec::new();
        unpack(
            &mut Decompressor::new().unwrap(),
            &mut packed,
            info,
            &mut raw,
        )
        .unwrap();
        let mut at = 0;
        let mut back = Vec::new();
        while let Some(record) = next_frame(&raw, &mut at).unwrap() {
            back.push(record.to_vec());
        }
        (back, info.compressed)
    }

    #[test]
    fn small_blocks_are_stored_as_they_are_and_large_ones_compressed() {
        let small: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'a' + i; 100]).collect();
        assert_eq!(round_trip(&small), (small.clone(), false));
        let large: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("{{\"record\":{i},\"pad\":\"{}\"}}", "x".repeat(400)).into_bytes())
            .collect();
        assert_eq!(round_trip(&large), (large.clone(), true));
    }

    #[test]
    fn damage_is_detected() {
        let mut packer = Packer::new().unwrap();
        let all = frames(&[b"one record".to_vec()]);
        let mut block = packer.pack(&[&all], 1).unwrap().concat();
        let last = block.len() - 1;
        block[last] ^= 1;
        assert!(read_block(&mut &block[..], &mut Vec::new()).is_err());
        assert!(read_block(&mut &block[..10], &mut Vec::new()).is_err());
        assert!(read_block(&mut &[0u8; 40][..], &mut Vec::new()).is_err());
        assert!(read_block(&mut &[][..], &mut Vec::new()).unwrap().is_none());
    }
}
