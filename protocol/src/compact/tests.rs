use super::*;
use crate::{BatchHeader, EventId, EventType, PageContext};

fn event(id: u128, ts: u64, kind: EventType, url: &str, props: &str) -> WireEvent {
    WireEvent {
        id: EventId(id),
        ts,
        kind,
        name: (kind == EventType::Custom).then(|| "video.play".to_owned()),
        page: PageContext {
            url: url.into(),
            referrer: "https://www.google.com/".into(),
            title: "Ünïcode \"title\"".into(),
        },
        props: props.into(),
    }
}

fn batch(user: bool) -> WireBatch {
    let t = 1_800_000_000_000;
    WireBatch {
        header: BatchHeader {
            v: 1,
            site_key: "demo".into(),
            anonymous_id: "3f9a1c0be27d4e58a6b1f0c9d8e7a6b5".into(),
            user_id: user.then(|| "user-42".into()),
            auth: user.then(|| "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln".into()),
            session_id: "not-hex_session".into(),
            seq: 7,
            sent_at: t,
            resent: false,
        },
        events: vec![
            event(
                u128::MAX,
                t - 9_000,
                EventType::PageView,
                "https://n.example/a",
                "",
            ),
            // The id after u128::MAX wraps to 0; the page and time repeat and go back.
            event(
                0,
                t - 9_000,
                EventType::Click,
                "https://n.example/a",
                r#"{"tag":"a"}"#,
            ),
            event(
                5,
                t - 12_000,
                EventType::Custom,
                "https://n.example/b",
                "{}",
            ),
            event(
                6,
                t,
                EventType::Engagement,
                "https://n.example/b",
                r#"{"read_depth":40}"#,
            ),
        ],
    }
}

fn inflate(body: &[u8], dict: &'static [u8]) -> Result<Vec<u8>, CompactError> {
    inflate_body(body, 1 << 20, |id| (id == 9).then_some(dict))
}

#[test]
fn records_round_trip() {
    for user in [false, true] {
        let b = batch(user);
        let record = encode_record(&b);
        let mut back = decode_record(&record).unwrap();
        // An empty object is not sent.
        assert_eq!(back.events[2].props, "");
        back.events[2].props = "{}".into();
        assert_eq!(back, b);
    }
}

#[test]
fn empty_tokens_round_trip() {
    let mut b = batch(false);
    b.header.site_key.clear();
    b.header.anonymous_id.clear();
    assert_eq!(decode_record(&encode_record(&b)).unwrap().header, b.header);
}

#[test]
fn restamped_records_keep_their_events() {
    let b = batch(false);
    let mut record = encode_record(&b);
    restamp_record(&mut record, 42);
    let back = decode_record(&record).unwrap();
    assert_eq!(back.header.sent_at, 42);
    assert_eq!(back.events[3].ts, b.events[3].ts);
}

#[test]
fn bodies_inflate_with_and_without_a_dictionary() {
    const DICT: &[u8] = b"https://www.google.com/ https://n.example/ {\"read_depth\":";
    let record = encode_record(&batch(true));
    for dict in [None, Some((9, DICT))] {
        let body = encode_body(&record, dict);
        assert_eq!(body[..3], COMPACT_MAGIC);
        assert_eq!(inflate(&body, DICT).unwrap(), record);
        // Any inflater reads it: the same through miniz_oxide's plain API when there is no
        // dictionary.
        if dict.is_none() {
            let plain = miniz_oxide::inflate::decompress_to_vec(&body[4..]).unwrap();
            assert_eq!(plain, record);
        }
    }
    let with = encode_body(&record, Some((9, DICT))).len();
    let without = encode_body(&record, None).len();
    assert!(with < without, "{with} >= {without}");
}

#[test]
fn long_and_repetitive_input_round_trips() {
    // Matches up to 258 bytes, overlapping copies, distances across the whole window.
    let mut data = vec![b'a'; 1000];
    data.extend((0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    data.extend_from_within(100..5_000);
    let mut body = Vec::new();
    deflate(&data, b"", &mut body);
    assert_eq!(
        miniz_oxide::inflate::decompress_to_vec(&body).unwrap(),
        data
    );
    assert!(body.len() < data.len());
}

#[test]
fn json_of_a_body_is_the_batch() {
    let b = batch(true);
    let body = encode_body(&encode_record(&b), None);
    let json = decode_body(&body, 1 << 20, no_dictionary).unwrap();
    let parsed = crate::parse_batch(json.as_bytes(), b.header.sent_at).unwrap();
    assert_eq!(parsed.accepted.len(), 4);
    assert_eq!(parsed.header.seq, 7);
}

#[test]
fn bad_bodies_say_why() {
    let record = encode_record(&batch(false));
    let body = encode_body(&record, None);
    assert_eq!(
        inflate(&encode_body(&record, Some((3, b"x"))), b""),
        Err(CompactError::UnknownDictionary(3))
    );
    // Neither 0 nor 1 and a whole hash after the magic.
    for bad in [&b"pz1\x02"[..], b"pz1\x01\x09\x00"] {
        assert_eq!(
            inflate(bad, b""),
            Err(CompactError::Malformed("dictionary"))
        );
    }
    assert_eq!(dictionary_hash(b""), 0x811c_9dc5);
    assert_ne!(dictionary_hash(b"ab"), dictionary_hash(b"ba"));
    assert_eq!(
        inflate(&body[..body.len() - 2], b""),
        Err(CompactError::Deflate)
    );
    assert_eq!(
        inflate(b"pz1", b""),
        Err(CompactError::Malformed("dictionary"))
    );
    let mut trailing = body.clone();
    trailing.push(0);
    assert_eq!(inflate(&trailing, b""), Err(CompactError::Deflate));
    assert_eq!(
        inflate_body(&body, record.len() - 1, no_dictionary),
        Err(CompactError::TooLarge(record.len() - 1))
    );
    assert_eq!(
        inflate_body(&body, record.len(), no_dictionary).map(|r| r.len()),
        Ok(record.len())
    );
    for cut in 0..record.len() {
        assert!(decode_record(&record[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = record.clone();
    extra.push(1);
    assert!(decode_record(&extra).is_err());
}

#[test]
fn ids_near_the_session_id_cost_six_or_eight_bytes_and_round_trip() {
    let mut b = batch(false);
    let session = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
    b.header.session_id = EventId(session).hex().as_str().to_owned();
    let far = encode_record(&b);
    // The first event below the session id plus 2^64, the third just above it: both a
    // tracker's first id of a page (the low 16 bits clear), six bytes each.
    b.events[0].id = EventId(session.wrapping_add(0xffff_ffff_ffff_0000));
    b.events[1].id = EventId(b.events[0].id.0.wrapping_add(1));
    b.events[2].id = EventId(session.wrapping_add(7 << 16));
    b.events[3].id = EventId(b.events[2].id.0 + 1);
    let near = encode_record(&b);
    let mut back = decode_record(&near).unwrap();
    back.events[2].props = b.events[2].props.clone();
    assert_eq!(back, b);
    assert_eq!(near.len() + 2 * 10, far.len());
    // A page's later event first in a batch: eight bytes.
    b.events[2].id = EventId(session.wrapping_add(7 << 16 | 3));
    b.events[3].id = EventId(b.events[2].id.0 + 1);
    let later = encode_record(&b);
    let mut back = decode_record(&later).unwrap();
    back.events[2].props = b.events[2].props.clone();
    assert_eq!(back, b);
    assert_eq!(later.len(), near.len() + 2);
    // Without a session id to add to, such an id is malformed: the session token (after
    // sent_at, v, seq, flags, "demo" and the anonymous id) made a one-letter text.
    let at = 8 + 1 + 1 + 1 + 5 + 17;
    assert_eq!(near[at], 0);
    let mut bad = near.clone();
    bad.splice(at..at + 17, [2, b's']);
    assert_eq!(
        decode_record(&bad),
        Err(CompactError::Malformed("no session id to add to"))
    );
}

#[test]
fn a_referrer_to_the_page_before_costs_one_byte() {
    let mut b = batch(false);
    b.events[2].page.referrer = b.events[1].page.url.clone();
    b.events[3].page = b.events[2].page.clone();
    let record = encode_record(&b);
    let mut back = decode_record(&record).unwrap();
    back.events[2].props = b.events[2].props.clone();
    assert_eq!(back, b);
    // As short as no referrer at all.
    let mut none = b.clone();
    none.events[2].page.referrer.clear();
    none.events[3].page = none.events[2].page.clone();
    assert_eq!(encode_record(&none).len(), record.len());
    // The first event has no page before to refer to: its referrer ("https://www.google.com/",
    // after its url) made that reference is malformed.
    let url = b"\x13https://n.example/a";
    let at = record.windows(url.len()).position(|w| w == url).unwrap() + url.len();
    assert_eq!(record[at], 23 + 1);
    let mut bad = record[..at].to_vec();
    bad.push(0);
    bad.extend_from_slice(&record[at + 24..]);
    assert_eq!(
        decode_record(&bad),
        Err(CompactError::Malformed("no page before"))
    );
}

/// A record as trackers before layout 2 wrote it (the `batch(true)` below, encoded by the
/// encoder of then): parked batches of a page that ran an older tracker are sent as they were.
const LAYOUT_1: &str = "00505c18a30100000107030464656d6f003f9a1c0be27d4e58a6b1f0c9d8e7a6b50001234567\
    89abcdef001122334455667707757365722d34322965794a68624763694f694a49557a49314e694a392e6579\
    4a7a645749694f694a31496e302e63326c6e04800000ffffffffffffd8d9f0c2b1341368747470733a2f2f6e\
    2e6578616d706c652f611768747470733a2f2f7777772e676f6f676c652e636f6d2f11c39c6ec3af636f6465\
    20227469746c652272000b7b22746167223a2261227d8c0300070000000000ef2e0a766964656f2e706c6179\
    1368747470733a2f2f6e2e6578616d706c652f621368747470733a2f2f6e2e6578616d706c652f6111c39c6e\
    c3af636f646520227469746c652271c0bb01117b22726561645f6465707468223a34307d";

#[test]
fn records_of_layout_1_still_read() {
    let mut b = batch(true);
    let session = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
    b.header.session_id = EventId(session).hex().as_str().to_owned();
    b.events[0].id = EventId(session.wrapping_add(0xffff_ffff_ffff_0000));
    b.events[1].id = EventId(b.events[0].id.0.wrapping_add(1));
    b.events[2].id = EventId(session.wrapping_add(7 << 16 | 3));
    b.events[3].id = EventId(b.events[2].id.0 + 1);
    b.events[2].page.referrer = b.events[1].page.url.clone();
    b.events[3].page = b.events[2].page.clone();
    let hex = LAYOUT_1.replace(' ', "");
    let old: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut back = decode_record(&old).unwrap();
    back.events[2].props = b.events[2].props.clone();
    assert_eq!(back, b);
    // The same batch in layout 2: the two ids near the session id in six and eight bytes
    // instead of eight and eight, the referrer to the page before in one byte instead of 20.
    let new = encode_record(&b);
    assert_eq!(new.len() + 2 + 19, old.len());
    let mut back = decode_record(&new).unwrap();
    back.events[2].props = b.events[2].props.clone();
    assert_eq!(back, b);
}
