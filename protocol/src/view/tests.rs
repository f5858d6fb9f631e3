use super::*;
use crate::{Batch, BatchHeader, MAX_JSON_DEPTH, MAX_PROPS_BYTES};
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

fn header() -> BatchHeader {
    BatchHeader {
        v: 1,
        site_key: "demo".into(),
        anonymous_id: "a1".into(),
        user_id: None,
        auth: None,
        session_id: "s1".into(),
        seq: 0,
        sent_at: NOW,
        resent: false,
    }
}

fn page_view(id: u128, ts: u64) -> Event {
    Event {
        id: EventId(id),
        ts,
        kind: EventType::PageView,
        name: None,
        page: PageContext {
            url: "https://n.example/a".into(),
            ..Default::default()
        },
        props: Default::default(),
    }
}

fn body(batch: &Batch) -> Vec<u8> {
    serde_json::to_vec(batch).unwrap()
}

fn reasons(parsed: &BatchView<'_>) -> Vec<(u32, RejectReason)> {
    parsed
        .rejected
        .iter()
        .map(|(r, _)| (r.index, r.reason))
        .collect()
}

#[test]
fn accepts_a_good_batch_and_corrects_skew() {
    let mut h = header();
    h.sent_at = NOW - 60_000; // client clock one minute slow
    let batch = Batch {
        header: h,
        events: vec![page_view(1, NOW - 61_000)],
    };
    let json = body(&batch);
    let parsed = parse_batch(&json, NOW).unwrap();
    assert_eq!(parsed.accepted.len(), 1);
    assert!(parsed.rejected.is_empty());
    assert_eq!(parsed.accepted[0].time, NOW - 1000);
    assert_eq!(parsed.event_time(&parsed.accepted[0]), NOW - 1000);
    assert_eq!(parsed.header.reader_key(), "a1");
}

#[test]
fn rejects_single_bad_events_and_keeps_the_rest() {
    let batch = Batch {
        header: header(),
        events: vec![
            page_view(1, NOW),
            page_view(1, NOW),
            page_view(2, NOW + 3_600_000),
        ],
    };
    let mut text = String::from_utf8(body(&batch)).unwrap();
    text = text.replacen(r#""events":["#, r#""events":[{"id":"zz"},"#, 1);
    let parsed = parse_batch(text.as_bytes(), NOW).unwrap();
    assert_eq!(parsed.accepted.len(), 1);
    assert_eq!(
        reasons(&parsed),
        vec![
            (0, RejectReason::InvalidEvent),
            (2, RejectReason::DuplicateId),
            (3, RejectReason::TimestampOutOfRange)
        ]
    );
    assert_eq!(parsed.rejected[0].1, r#"{"id":"zz"}"#);
    assert_eq!(parsed.rejected[0].0.id, None);
    assert_eq!(
        parsed.rejected[1].0.id.as_deref(),
        Some(&*EventId(1).to_string())
    );
}

#[test]
fn whole_batch_errors() {
    assert!(matches!(
        parse_batch(b"{", NOW),
        Err(BatchError::Malformed(_))
    ));
    assert!(matches!(
        parse_batch(b"{\"v\":1}", NOW),
        Err(BatchError::Invalid(_))
    ));
    assert!(matches!(
        parse_batch(b"[1,2]", NOW),
        Err(BatchError::Invalid(_))
    ));
    assert!(matches!(
        parse_batch(b"\xff{}", NOW),
        Err(BatchError::Malformed(_))
    ));
    // A shape problem early does not hide that the rest is not JSON.
    assert!(matches!(
        parse_batch(b"{\"x\":1, oops", NOW),
        Err(BatchError::Malformed(_))
    ));
    let mut b = Batch {
        header: header(),
        events: vec![],
    };
    assert_eq!(
        parse_batch(&body(&b), NOW).unwrap_err(),
        BatchError::EventCount(0)
    );
    b.events = (0..MAX_EVENTS_PER_BATCH as u128)
        .map(|i| page_view(i, NOW))
        .collect();
    assert!(parse_batch(&body(&b), NOW).is_ok());
    b.events.push(page_view(1000, NOW));
    assert_eq!(
        parse_batch(&body(&b), NOW).unwrap_err(),
        BatchError::EventCount(MAX_EVENTS_PER_BATCH + 1)
    );
    b.events.truncate(1);
    b.header.v = 2;
    assert_eq!(
        parse_batch(&body(&b), NOW).unwrap_err(),
        BatchError::UnsupportedVersion(2)
    );
    b.header.v = 1;
    b.header.anonymous_id = "has space".into();
    assert!(matches!(
        parse_batch(&body(&b), NOW),
        Err(BatchError::Invalid(_))
    ));
}

#[test]
fn header_fields_once_each_and_of_their_type() {
    let good = body(&Batch {
        header: header(),
        events: vec![page_view(1, NOW)],
    });
    let text = String::from_utf8(good).unwrap();
    for bad in [
        text.replacen(r#""seq":0"#, r#""seq":0,"seq":1"#, 1),
        text.replacen(r#""seq":0"#, r#""seq":"0""#, 1),
        text.replacen(r#""seq":0"#, r#""seq":-1"#, 1),
        text.replacen(r#""seq":0"#, r#""seq":1.5"#, 1),
        text.replacen(r#""seq":0"#, r#""seq":0,"extra":true"#, 1),
        text.replacen(r#""v":1"#, r#""v":4294967296"#, 1),
        text.replacen(r#""site_key":"demo""#, r#""site_key":null"#, 1),
        text.replacen(r#""events":["#, r#""events":{"a":["#, 1) + "}",
    ] {
        let got = parse_batch(bad.as_bytes(), NOW);
        assert!(matches!(got, Err(BatchError::Invalid(_))), "{bad}: {got:?}");
    }
    let null_user = text.replacen(r#""seq":0"#, r#""seq":0,"user_id":null"#, 1);
    assert!(parse_batch(null_user.as_bytes(), NOW).is_ok());
}

#[test]
fn depth_limit_at_bound() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(matches!(
        parse_batch(nest(MAX_JSON_DEPTH).as_bytes(), NOW),
        Err(BatchError::Invalid(_))
    ));
    assert!(matches!(
        parse_batch(nest(MAX_JSON_DEPTH + 1).as_bytes(), NOW),
        Err(BatchError::Malformed(_))
    ));
}

fn one_event(event: Value) -> Vec<u8> {
    let mut batch = serde_json::to_value(Batch {
        header: header(),
        events: vec![],
    })
    .unwrap();
    batch["events"] = json!([event]);
    serde_json::to_vec(&batch).unwrap()
}

fn outcome(event: Value) -> Result<Event, RejectReason> {
    let json = one_event(event);
    let parsed = parse_batch(&json, NOW).unwrap();
    match parsed.accepted.first() {
        Some(view) => Ok(view.to_event().unwrap()),
        None => Err(parsed.rejected[0].0.reason),
    }
}

#[test]
fn events_of_the_wrong_shape_are_invalid() {
    let id = format!("{:032x}", 7);
    let ok = json!({"id": id, "ts": NOW, "type": "page_view", "page": {"url": "u"}});
    assert!(outcome(ok.clone()).is_ok());
    let mut cases = Vec::new();
    for (key, value) in [
        ("id", json!("ABC")),
        ("id", json!(7)),
        ("ts", json!(-1)),
        ("ts", json!(1.5)),
        ("ts", json!("1")),
        ("type", json!("scroll")),
        ("name", json!(5)),
        ("page", json!({"url": "u", "x": 1})),
        ("page", json!({"title": "t"})),
        ("page", json!("u")),
        ("props", json!([])),
        ("props", Value::Null),
        ("extra", json!(1)),
    ] {
        let mut e = ok.clone();
        e[key] = value;
        cases.push(e);
    }
    cases.push(json!("not an object"));
    cases.push(json!({"ts": NOW, "type": "page_view", "page": {"url": "u"}}));
    for case in cases {
        assert_eq!(
            outcome(case.clone()),
            Err(RejectReason::InvalidEvent),
            "{case}"
        );
    }
    // A repeated member is refused as serde's derive refuses it.
    let json = String::from_utf8(one_event(ok)).unwrap();
    let twice = json.replacen(
        r#""type":"page_view""#,
        r#""type":"page_view","type":"click""#,
        1,
    );
    let parsed = parse_batch(twice.as_bytes(), NOW).unwrap();
    assert_eq!(reasons(&parsed), vec![(0, RejectReason::InvalidEvent)]);
}

#[test]
fn props_size_is_counted_without_whitespace_and_depth_at_bound() {
    let id = format!("{:032x}", 7);
    let with_props = |props: &str| {
        format!(
            r#"{{"v":1,"site_key":"demo","anonymous_id":"a","session_id":"s","seq":0,"sent_at":{NOW},"events":[{{"id":"{id}","ts":{NOW},"type":"click","page":{{"url":"u"}},"props":{props}}}]}}"#
        )
    };
    let fill = |n: usize| format!(r#"{{"k":"{}"}}"#, "x".repeat(n)); // 8 bytes of framing
    let spaced = |n: usize| format!(r#"{{ "k" :  "{}" }}"#, "x".repeat(n));
    for (props, accepted) in [
        (fill(MAX_PROPS_BYTES - 8), true),
        (fill(MAX_PROPS_BYTES - 7), false),
        (spaced(MAX_PROPS_BYTES - 8), true),
        (spaced(MAX_PROPS_BYTES - 7), false),
        (r#"{"a":{"b":{"c":{"d":1}}}}"#.to_owned(), true),
        (r#"{"a":{"b":{"c":{"d":{}}}}}"#.to_owned(), false),
        (r#"{"a":[[[1]]]}"#.to_owned(), true),
        (r#"{"a":[[[[1]]]]}"#.to_owned(), false),
    ] {
        let json = with_props(&props);
        let parsed = parse_batch(json.as_bytes(), NOW).unwrap();
        assert_eq!(parsed.accepted.len() == 1, accepted, "{props}");
        if let Some(view) = parsed.accepted.first() {
            assert_eq!(view.props, Some(props.as_str()));
        } else {
            let reason = parsed.rejected[0].0.reason;
            assert!(
                matches!(
                    reason,
                    RejectReason::PropsTooLarge | RejectReason::PropsTooDeep
                ),
                "{reason:?}"
            );
        }
    }
}

#[test]
fn strings_with_escapes_are_decoded_and_raw_is_kept_as_sent() {
    let id = format!("{:032x}", 9);
    let event = format!(
        r#"{{ "id" : "{id}", "ts":{NOW}, "type":"custom", "name":"a\u002eb",
            "page":{{"url":"https:\/\/n.example\/\u00e9","title":"tab\there"}}, "props":{{"x": 1 }} }}"#
    );
    let json = format!(
        r#"{{"v":1,"site_key":"d\u0065mo","anonymous_id":"a","session_id":"s","seq":3,"sent_at":{NOW},"events":[{event}]}}"#
    );
    let parsed = parse_batch(json.as_bytes(), NOW).unwrap();
    assert_eq!(parsed.header.site_key, "demo");
    let view = &parsed.accepted[0];
    assert_eq!(view.raw, event);
    assert_eq!(view.name.as_deref(), Some("a.b"));
    assert_eq!(view.url, "https://n.example/é");
    assert_eq!(view.title, "tab\there");
    assert_eq!(view.props, Some(r#"{"x": 1 }"#));
    let from_raw: Event = serde_json::from_str(view.raw).unwrap();
    assert_eq!(view.to_event().unwrap(), from_raw);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_batch(&bytes, NOW);
    }

    #[test]
    fn round_trips(n in 1usize..20, seq in any::<u64>(), user in proptest::option::of("[a-zA-Z0-9 é@.\"\\\\]{1,20}")) {
        let mut h = header();
        h.seq = seq;
        h.user_id = user;
        let batch = Batch { header: h, events: (0..n as u128).map(|i| page_view(i, NOW)).collect() };
        let json = body(&batch);
        let parsed = parse_batch(&json, NOW).unwrap();
        let events: Vec<Event> = parsed.accepted.iter().map(|v| v.to_event().unwrap()).collect();
        prop_assert_eq!(events, batch.events);
        let header = &parsed.header;
        prop_assert_eq!(header.seq, batch.header.seq);
        prop_assert_eq!(header.user_id.as_deref(), batch.header.user_id.as_deref());
        prop_assert_eq!(header.reader_key(), batch.header.reader_key());
    }
}

/// What a map parsed from the same text gives for `key`, as [`EventView::prop`] reads it.
fn from_map(event: &Event, key: &str) -> Option<PropValue<'static>> {
    event.props.get(key).map(|v| match v {
        Value::Null => PropValue::Null,
        Value::Bool(b) => PropValue::Bool(*b),
        Value::Number(n) => PropValue::Num(n.as_f64()),
        Value::String(s) => PropValue::Str(s.clone().into()),
        Value::Array(_) | Value::Object(_) => PropValue::Other,
    })
}

#[test]
fn a_property_read_from_the_text_is_what_the_parsed_map_holds() {
    let props = r#"{ "a" : 1, "s":"x\u00e9\"y", "n":null, "t":true, "f":false, "big":18446744073709551615,
        "neg":-12, "x":1.5e3, "tiny":4.9e-324, "o":{"a":[1,{"b":2}]}, "l":[], "a":"again", "e":""}"#;
    let id = format!("{:032x}", 9);
    let event = format!(
        r#"{{"id":"{id}","ts":{NOW},"type":"custom","name":"n","page":{{"url":"https://n.example/"}},"props":{props}}}"#
    );
    let json = format!(
        r#"{{"v":1,"site_key":"demo","anonymous_id":"a","session_id":"s","seq":3,"sent_at":{NOW},"events":[{event}]}}"#
    );
    let parsed = parse_batch(json.as_bytes(), NOW).unwrap();
    let view = &parsed.accepted[0];
    let owned = view.to_event().unwrap();
    for key in [
        "a", "s", "n", "t", "f", "big", "neg", "x", "tiny", "o", "l", "e", "missing", "",
    ] {
        assert_eq!(view.prop(key), from_map(&owned, key), "{key}");
    }
    // The last of two members of one name, as the map keeps it.
    assert_eq!(view.prop("a"), Some(PropValue::Str("again".into())));
    let plain = body(&Batch {
        header: header(),
        events: vec![page_view(1, NOW)],
    });
    let none = parse_batch(&plain, NOW).unwrap();
    assert_eq!(none.accepted[0].prop("a"), None);
}

proptest! {
    #[test]
    fn properties_read_from_the_text_match_the_map(
        members in proptest::collection::vec(
            ("[a-c]{1,2}", prop_oneof![
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
                any::<i64>().prop_map(|i| json!(i)),
                any::<u64>().prop_map(|i| json!(i)),
                any::<bool>().prop_map(|b| json!(b)),
                "[a-zé\"\\\\\u{1F600}]{0,8}".prop_map(|s| json!(s)),
                Just(json!(null)),
                Just(json!([1, {"k": "v"}])),
            ]),
            0..8,
        )
    ) {
        // Built by hand so that a name may repeat.
        let props = format!(
            "{{{}}}",
            members.iter().map(|(k, v)| format!("{}: {v}", json!(k))).collect::<Vec<_>>().join(", ")
        );
        let id = format!("{:032x}", 9);
        let json = format!(
            r#"{{"v":1,"site_key":"demo","anonymous_id":"a","session_id":"s","seq":3,"sent_at":{NOW},"events":[{{"id":"{id}","ts":{NOW},"type":"custom","name":"n","page":{{"url":"https://n.example/"}},"props":{props}}}]}}"#
        );
        let parsed = parse_batch(json.as_bytes(), NOW).unwrap();
        prop_assert_eq!(parsed.accepted.len(), 1, "{}", props);
        let view = &parsed.accepted[0];
        let owned = view.to_event().unwrap();
        for key in ["a", "b", "c", "aa", "ab", "cc", "d"] {
            prop_assert_eq!(view.prop(key), from_map(&owned, key), "{} in {}", key, props);
        }
    }
}
