//! Bad input found by trying the gateway as an attacker would (issue 9), each answered the way
//! `protocol/PROTOCOL.md` documents, on the real `serve` over loopback.

mod support;

use pulse_protocol::DEAD_LETTER_MAX_RAW;
use serde_json::Value;
use support::{Server, batch, code, event};

/// A tiny zstd frame that decodes to exactly 512 KiB of 0x01 (each escaped as `\u0001` in a
/// JSON string: six bytes stored per byte received).
fn bomb() -> Vec<u8> {
    let bomb = zstd::encode_all(&vec![1u8; 512 * 1024][..], 3).unwrap();
    assert!(bomb.len() < 64, "{} bytes", bomb.len());
    bomb
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn refused_garbage_stores_a_bounded_prefix_counted_against_the_site() {
    let s = Server::start(64 * 1024, 512 * 1024);
    let bomb = bomb();
    for _ in 0..200 {
        let (status, answer, _) = s.post("?k=demo", None, &bomb);
        assert_eq!((status, code(&answer)), (400, "malformed_json"), "{answer}");
    }
    let letters = s.gateway.log().unwrap().dead_letters().unwrap();
    assert_eq!(letters.len(), 200);
    for letter in &letters {
        let stored = serde_json::to_string(&letter.raw).unwrap();
        assert!(stored.len() <= DEAD_LETTER_MAX_RAW + 2, "{}", stored.len());
        assert!(letter.raw.chars().all(|c| c == '\u{1}'));
    }
    // What 200 of them take (it was 79 MB before the cap): as counted against the site, and on
    // disk (the log's blocks add a header each, and compress under load).
    let bound = 200 * (DEAD_LETTER_MAX_RAW as u64 + 300);
    let written = s.metric("pulse_gateway_dead_letter_bytes_total");
    let stored = s.metric("pulse_gateway_dead_letter_store_bytes");
    assert!(written > 0 && written < bound, "{written}");
    assert!(stored > 0 && stored < bound, "{stored}");
}

#[test]
fn dead_letters_count_against_the_site_byte_limit_by_what_they_store() {
    // 100 KB of bytes per site: a few hundred bombs' worth as sent, but only two dozen of their
    // dead letters as stored.
    let s = Server::start_with(|config, _| {
        config.rate_limits.site_bytes = pulse_gateway::Rate::new(1, 100_000);
    });
    let bomb = bomb();
    let mut refused = 0;
    for sent in 1..=100 {
        let (status, answer, _) = s.post("?k=demo", None, &bomb);
        if status == 429 {
            assert_eq!(answer["error"]["limit"], "site_bytes", "{answer}");
            refused = sent;
            break;
        }
        assert_eq!(status, 400, "{answer}");
    }
    assert!((20..=30).contains(&refused), "refused at request {refused}");
    // Nothing more was stored once refused.
    let letters = s.gateway.log().unwrap().dead_letters().unwrap();
    assert_eq!(letters.len(), refused - 1);
    assert_eq!(
        s.metric("pulse_gateway_rate_limited_total{limit=\"site_bytes\"}"),
        1
    );
}

/// A body of `n` printable bytes that does not compress, refused as malformed JSON.
fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut body = vec![b'{'];
    body.extend((1..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b'#' + (x % 90) as u8
    }));
    body
}

#[test]
fn the_dead_letter_store_keeps_under_its_cap_deleting_the_oldest() {
    let s = Server::start_with(|config, _| {
        config.dead_letters.max_bytes = 1 << 20;
        config.rate_limits.site_bytes = pulse_gateway::Rate::OFF;
    });
    for i in 0..400 {
        let (status, answer, _) = s.post("?k=demo", None, &garbage(8192, i + 1));
        assert_eq!((status, code(&answer)), (400, "malformed_json"), "{answer}");
    }
    let stored = s.metric("pulse_gateway_dead_letter_store_bytes");
    // The cap, plus at most the segment being written (an eighth of the cap).
    assert!(stored <= (1 << 20) + (1 << 17), "{stored}");
    let evicted = s.metric("pulse_gateway_dead_letters_evicted_total");
    let kept = s.metric("pulse_gateway_dead_letter_store_records");
    assert!(evicted > 0, "nothing deleted");
    assert_eq!(evicted + kept, 400);
    // What is kept is the newest, readable.
    let letters = s.gateway.log().unwrap().dead_letters().unwrap();
    assert_eq!(letters.len() as u64, kept);
}

/// A POST whose `Host` and `Origin` a DNS-rebinding page controls.
fn post_with_host(s: &Server, host: &str, origin: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST /v1/collect?k=demo HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.raw(&head, body)
}

#[test]
fn same_origin_means_the_gateways_own_origins_never_the_host_header() {
    let s = Server::start_with(|config, _| {
        config.sites[0].origins = vec![];
        config.sites[0].allow_same_origin = true;
        config.server.public_origins = vec!["https://pulse.example.com".into()];
    });
    let body = serde_json::to_vec(&batch(vec![event(1, "page_view")])).unwrap();
    // The rebinding attack: the Host says evil.example because the page's DNS said so.
    let (status, answer) = post_with_host(&s, "evil.example", "http://evil.example", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("origin_not_allowed"), "{answer}");
    assert!(!answer.contains("decision"), "{answer}");
    assert_eq!(s.gateway.log().unwrap().events_from(0).count(), 0);
    // The gateway's own listen address and its configured public origin are admitted,
    // whatever Host says.
    let own = s.url.clone();
    for origin in [own.as_str(), "https://pulse.example.com"] {
        let (status, answer) = post_with_host(&s, "anything.example", origin, &body);
        assert_eq!(status, 200, "{origin}: {answer}");
    }
    let port = own.rsplit(':').next().unwrap();
    let (status, answer) = post_with_host(&s, "x", &format!("http://localhost:{port}"), &body);
    assert_eq!(
        status, 200,
        "a loopback listener is also localhost: {answer}"
    );
}

#[test]
fn gzip_decodes_every_member_and_refuses_trailing_bytes_like_zstd() {
    let s = Server::start(64 * 1024, 512 * 1024);
    let json = serde_json::to_vec(&batch(vec![event(7, "page_view")])).unwrap();
    let (a, b) = json.split_at(json.len() / 2);
    // Two members make one batch, as two zstd frames do.
    for two in [
        [gzip(a), gzip(b)].concat(),
        [
            zstd::encode_all(a, 3).unwrap(),
            zstd::encode_all(b, 3).unwrap(),
        ]
        .concat(),
    ] {
        let (status, answer, _) = s.post("?k=demo", None, &two);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 1);
    }
    // A good member (or frame) followed by junk is refused, not accepted in part.
    for one in [gzip(&json), zstd::encode_all(&json[..], 3).unwrap()] {
        let mut junk = one;
        junk.extend_from_slice(b"this is not another member");
        let (status, answer, _) = s.post("?k=demo", None, &junk);
        assert_eq!(
            (status, code(&answer)),
            (422, "undecodable_body"),
            "{answer}"
        );
    }
}

#[test]
fn every_refusal_is_json_with_its_code() {
    // The answers above are the documented ones; a quick look that none is a bare status.
    let s = Server::start(64 * 1024, 512 * 1024);
    let (status, answer, _) = s.post("?k=demo", None, b"\x1f\x8b\x08junk");
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["code"], Value::from("undecodable_body"));
    assert!(answer["error"]["message"].is_string());
}
