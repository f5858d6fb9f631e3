use super::*;
use crate::log::block::{FRAME_HEADER, frame_header};

fn frames(records: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let at = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        out.extend_from_slice(r);
        let (head, payload) = out[at..].split_at_mut(FRAME_HEADER);
        frame_header(head, payload);
    }
    out
}

/// Bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn all(dir: &Path, from: u64) -> Vec<(u64, Vec<u8>)> {
    read_from(dir, from)
        .unwrap()
        .collect::<io::Result<_>>()
        .unwrap()
}

#[test]
fn appends_are_read_back_in_order_across_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 100).unwrap();
    let a = frames(&[b"one", b"two"]);
    let b = frames(&[&noise(200, 1)]);
    let c = frames(&[b"four"]);
    log.append(&[(&a, 2), (&b, 1)], None).unwrap();
    log.append(&[(&c, 1)], None).unwrap();
    log.sync().unwrap();
    assert_eq!(log.next(), 4);
    assert_eq!(list(dir.path()).unwrap().len(), 3, "rolled past 100 bytes");
    let read = all(dir.path(), 0);
    assert_eq!(
        read.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(read[0].1, b"one");
    assert_eq!(read[2].1, noise(200, 1));
    assert_eq!(read[3].1, b"four");
    assert_eq!(all(dir.path(), 2).len(), 2);
    assert_eq!(all(dir.path(), 9).len(), 0);
    drop(log);
    let log = SegmentLog::open(dir.path(), 64).unwrap();
    assert_eq!(log.next(), 4);
    assert_eq!(log.records(), 4);
}

#[test]
fn a_torn_tail_is_cut_off_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    let good = frames(&[b"kept", b"kept too"]);
    log.append(&[(&good, 2)], None).unwrap();
    log.sync().unwrap();
    drop(log);
    let path = segment_path(dir.path(), 0);
    // A crash mid-write: half a block, then a zero-filled tail.
    let mut packer = Packer::new().unwrap();
    let never = frames(&[b"never acknowledged"]);
    let [head, body] = packer.pack(&[&never], 1).unwrap();
    let mut torn = [head, body].concat();
    torn.truncate(torn.len() - 4);
    torn.extend_from_slice(&[0; 16]);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&torn).unwrap();
    drop(file);
    assert_eq!(
        all(dir.path(), 0).len(),
        2,
        "readers stop at the torn frame"
    );
    let mut log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    let whole = fs::metadata(&path).unwrap().len();
    assert!(
        whole > 0 && whole < (good.len() + torn.len()) as u64,
        "{whole}"
    );
    assert_eq!(log.next(), 2);
    log.append(&[(&frames(&[b"after"]), 1)], None).unwrap();
    log.sync().unwrap();
    let read = all(dir.path(), 0);
    assert_eq!(read.len(), 3);
    assert_eq!(read[2], (2, b"after".to_vec()));
}

#[test]
fn eviction_keeps_under_the_cap_and_within_the_age_never_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 100).unwrap();
    let record = frames(&[&noise(92, 2)]); // 100 bytes framed: one per segment
    for _ in 0..5 {
        log.append(&[(&record, 1)], None).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(log.records(), 5);
    let each = log.bytes() / 5;
    assert!(each > 100, "stored with its headers: {each}");
    let now = SystemTime::now();
    let none = log
        .evict(
            Some(10 * each),
            Some(Duration::from_secs(60)),
            now,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(none, Evicted::default());
    let by_size = log.evict(Some(each * 5 / 2), None, now, u64::MAX).unwrap();
    assert_eq!(
        (by_size.segments, by_size.records, by_size.bytes),
        (3, 3, 3 * each)
    );
    assert_eq!(
        all(dir.path(), 0)
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    // An hour later everything is past a minute's retention, but the segment appended to
    // stays until it rolls.
    let later = now + Duration::from_secs(3600);
    let by_age = log
        .evict(None, Some(Duration::from_secs(60)), later, u64::MAX)
        .unwrap();
    assert_eq!(by_age.records, 1);
    assert_eq!(log.records(), 1);
    log.roll_if_older(Duration::from_secs(60), later).unwrap();
    assert_eq!(
        log.evict(None, Some(Duration::from_secs(60)), later, u64::MAX)
            .unwrap()
            .records,
        1
    );
    assert_eq!((log.records(), log.next()), (0, 5));
    assert!(all(dir.path(), 0).is_empty());
    drop(log);
    assert_eq!(SegmentLog::open(dir.path(), 100).unwrap().next(), 5);
}

#[test]
fn a_batch_never_straddles_segments_and_age_rolls_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 1000).unwrap();
    let big = frames(&[&noise(700, 3)]);
    log.append(&[(&big, 1), (&big, 1)], None).unwrap();
    assert_eq!(list(dir.path()).unwrap().len(), 2);
    log.append(&[(&frames(&[b"x"]), 1)], Some(Duration::ZERO))
        .unwrap();
    assert_eq!(
        list(dir.path()).unwrap().len(),
        3,
        "past its age, the segment rolled"
    );
}

#[test]
fn erasing_replaces_records_in_place_in_raw_and_compressed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    let theirs = |i: usize| format!("{{\"reader\":\"ann\",\"n\":{i}}}").into_bytes();
    let others = |i: usize| format!("{{\"reader\":\"bob\",\"n\":{i}}}").into_bytes();
    // A small block (stored raw), then one past 64 KiB (compressed).
    let small: Vec<Vec<u8>> = (0..4)
        .map(|i| if i % 2 == 0 { theirs(i) } else { others(i) })
        .collect();
    let large: Vec<Vec<u8>> = (0..4000)
        .map(|i| if i % 3 == 0 { theirs(i) } else { others(i) })
        .collect();
    for block in [&small, &large] {
        let refs: Vec<&[u8]> = block.iter().map(Vec::as_slice).collect();
        log.append(&[(&frames(&refs), block.len() as u64)], None)
            .unwrap();
    }
    log.sync().unwrap();
    let before = all(dir.path(), 0);
    let is_ann = |r: &[u8]| crate::log::erase::is_theirs(r, "ann");
    let erased = log.erase(&is_ann).unwrap();
    assert_eq!(erased, 2 + 1334);
    let after = all(dir.path(), 0);
    assert_eq!(after.len(), before.len() - erased as usize);
    let kept: Vec<_> = before.into_iter().filter(|(_, r)| !is_ann(r)).collect();
    assert_eq!(after, kept, "the others, at their positions");
    // Erasing again finds nothing; appending goes on at the next position.
    assert_eq!(log.erase(&is_ann).unwrap(), 0);
    let next = log.next();
    log.append(&[(&frames(&[b"{\"reader\":\"cy\"}"]), 1)], None)
        .unwrap();
    log.sync().unwrap();
    assert_eq!(all(dir.path(), next).len(), 1);
    drop(log);
    let log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.next(), next + 1, "positions survive a reopen");
}

#[test]
fn an_erasure_copy_of_a_segment_deleted_meanwhile_is_dropped_and_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    let a = frames(&[b"{\"reader\":\"ann\"}", b"{\"reader\":\"bob\"}"]);
    log.append(&[(&a, 2)], None).unwrap();
    log.sync().unwrap();
    let sealed = log.seal().unwrap();
    assert_eq!(
        sealed.len(),
        1,
        "the segment appended to is closed and named"
    );
    // Appends go on in a new segment while the copy is made.
    let b = frames(&[b"{\"reader\":\"ann\"}"]);
    log.append(&[(&b, 1)], None).unwrap();
    log.sync().unwrap();
    let is_ann = |r: &[u8]| crate::log::erase::is_theirs(r, "ann");
    let mut packer = Packer::new().unwrap();
    let (first, path) = &sealed[0];
    let (n, fresh, bytes) = crate::log::erase::rewrite(path, &mut packer, &is_ann)
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        !log.install(first + 100, &fresh, bytes).unwrap(),
        "no such segment"
    );
    assert!(!fresh.exists(), "its copy is removed");
    let (_, fresh, bytes) = crate::log::erase::rewrite(path, &mut packer, &is_ann)
        .unwrap()
        .unwrap();
    assert!(log.install(*first, &fresh, bytes).unwrap());
    log.sync().unwrap();
    let read: Vec<Vec<u8>> = all(dir.path(), 0).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        read,
        [
            b"{\"reader\":\"bob\"}".to_vec(),
            b"{\"reader\":\"ann\"}".to_vec()
        ],
        "the erased record is skipped; the one appended after the seal is a later erasure's"
    );
    // A copy left by a stop in the middle is removed at the next open.
    fs::write(dir.path().join("00000000000000000000.erasing"), b"x").unwrap();
    drop(log);
    let _log = SegmentLog::open(dir.path(), 1 << 20).unwrap();
    assert!(!dir.path().join("00000000000000000000.erasing").exists());
}
