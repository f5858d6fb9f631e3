use std::sync::Arc;

use crate::metrics::Metrics;

use super::*;

fn frames(events: &[&[u8]], dead: &[&[u8]]) -> Frames {
    let build = |records: &[&[u8]]| {
        let mut out = Vec::new();
        for r in records {
            let at = out.len();
            out.extend_from_slice(&[0; FRAME_HEADER]);
            out.extend_from_slice(r);
            let (head, payload) = out[at..].split_at_mut(FRAME_HEADER);
            frame_header(head, payload);
        }
        out
    };
    Frames {
        events: build(events),
        event_count: events.len() as u64,
        dead: build(dead),
        dead_count: dead.len() as u64,
    }
}

fn open(dir: &Path) -> EventLog {
    EventLog::open(dir, &LogSettings::default(), Arc::default(), Arc::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_durable_and_the_replay_point_follows_the_guards() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            log.append(frames(&[&[b'a', i], &[b'b', i]], &[])).await
        }));
    }
    let mut guards = Vec::new();
    for t in tasks {
        guards.push(t.await.unwrap().unwrap().applied.unwrap());
    }
    let held = guards.pop().unwrap();
    drop(guards);
    assert!(
        log.replay_point() < 40,
        "a held guard keeps the replay point back"
    );
    drop(held);
    assert_eq!(log.replay_point(), 40);
    let dead = log
        .append(frames(&[], &[b"{\"reason\":\"x\"}"]))
        .await
        .unwrap();
    assert!(dead.applied.is_none(), "no events, nothing to apply");
    log.close().unwrap();
    assert!(matches!(
        log.append(frames(&[b"late"], &[])).await,
        Err(LogError::Closed)
    ));
    drop(log);

    let files = LogFiles::open(dir.path()).unwrap();
    let all: Vec<_> = files.events_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
    let mut pairs: Vec<Vec<u8>> = all.into_iter().map(|e| e.bytes).collect();
    pairs.sort();
    assert_eq!(pairs.len(), 40);
    assert_eq!(files.events_from(38).count(), 2);
    let dead: Vec<_> = files.dead_letter_bytes().collect::<Result<_, _>>().unwrap();
    assert_eq!(dead, vec![b"{\"reason\":\"x\"}".to_vec()]);
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(matches!(
        LogFiles::open(dir.path()),
        Err(LogError::Locked(_))
    ));
    log.close().unwrap();
    drop(log);
    LogFiles::open(dir.path()).unwrap();
}

fn settings_with_queue(queue_bytes: usize) -> LogSettings {
    LogSettings {
        decisions: Some(DecisionLogSettings {
            queue_bytes,
            ..DecisionLogSettings::default()
        }),
        ..LogSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_written_without_waiting_and_read_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let log = EventLog::open(
        dir.path(),
        &settings_with_queue(64 * 1024),
        Arc::clone(&metrics),
        Arc::default(),
    )
    .unwrap();
    assert!(log.logs_decisions());
    // Idle writer: the first decision wakes it.
    assert!(log.log_decision(br#"{"n":0}"#));
    // And with events: decisions go after the group commit.
    log.append(frames(&[b"e1"], &[])).await.unwrap();
    assert!(log.log_decision(br#"{"n":1}"#));
    log.append(frames(&[b"e2"], &[])).await.unwrap();

    // Beside the running writer, without the lock: whole blocks only.
    assert!(matches!(
        LogFiles::open(dir.path()),
        Err(LogError::Locked(_))
    ));
    let (live, read_only) = LogFiles::open_or_read_only(dir.path()).unwrap();
    assert!(read_only);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<_> = live.decision_bytes().collect::<Result<_, _>>().unwrap();
        if got.len() == 2 {
            assert_eq!(got, vec![br#"{"n":0}"#.to_vec(), br#"{"n":1}"#.to_vec()]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "decisions never written: {got:?}"
        );
        log.nudge();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(live.events_from(0).count(), 2);
    assert!(
        metrics
            .text()
            .contains("pulse_gateway_decisions_logged_total 2")
    );

    // What does not fit in the queue is refused at once.
    assert!(!log.log_decision(&vec![b'x'; 64 * 1024]));
    assert!(log.log_decision(&vec![b'x'; 40 * 1024]));
    log.close().unwrap();
    assert!(!log.log_decision(b"{}"), "closed");
    drop(log);

    // What a crash mid-write leaves (a torn block at the end) ends the reading, no error.
    let events = dir.path().join("log/events");
    let last = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    io::Write::write_all(&mut f, b"PLB1\x01\x00\x00\x00\x10").unwrap();
    let files = LogFiles::read_only(dir.path());
    let all: Vec<_> = files.events_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 2);
    let decisions: Vec<_> = files.decision_bytes().collect::<Result<_, _>>().unwrap();
    assert_eq!(decisions.len(), 3, "written at close");
}

#[test]
fn no_decision_log_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(
        dir.path(),
        &LogSettings {
            decisions: None,
            ..LogSettings::default()
        },
        Arc::default(),
        Arc::default(),
    )
    .unwrap();
    assert!(!log.logs_decisions());
    assert!(!log.log_decision(b"{}"));
    assert!(!dir.path().join("log/decisions").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_retention_deletes_only_what_stored_state_holds() {
    let dir = tempfile::tempdir().unwrap();
    let settings = LogSettings {
        // A segment per group commit, and a cap every segment is over.
        event_segment_bytes: 1,
        events_max_bytes: Some(1),
        ..LogSettings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let log = EventLog::open(dir.path(), &settings, Arc::clone(&metrics), Arc::default()).unwrap();
    for i in 0..6u8 {
        // One at a time: six group commits, six segments of two events.
        drop(
            log.append(frames(&[&[b'e', i], &[b'f', i]], &[]))
                .await
                .unwrap(),
        );
    }
    let first_kept = || {
        LogFiles::read_only(dir.path())
            .events_from(0)
            .next()
            .map(|e| e.unwrap().seq)
    };
    // Nothing is in stored state yet: the cap deletes nothing.
    log.nudge();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(first_kept(), Some(0));
    // Stored state holds the first seven events: the three segments wholly before position 7
    // go (the one holding 6 and 7 stays), and everything from 7 on is kept.
    log.set_evictable_before(7);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while first_kept() != Some(6) {
        assert!(
            std::time::Instant::now() < deadline,
            "first kept: {:?}",
            first_kept()
        );
        log.nudge();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept: Vec<u64> = LogFiles::read_only(dir.path())
        .events_from(0)
        .map(|e| e.unwrap().seq)
        .collect();
    assert_eq!(kept, (6..12).collect::<Vec<_>>());
    assert!(
        metrics
            .text()
            .contains("pulse_gateway_events_evicted_total 6"),
        "{}",
        metrics.text()
    );
    log.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_before_schema_versions_still_read_as_version_one() {
    // A data folder of an earlier gateway: its records have no `"v"`.
    let legacy = br#"{"site":"demo","reader":"r","anonymous_id":"r","session_id":"s","seq":0,"received_at":5,"time":5,"event":{"id":"0000000000000000000000000000002a","ts":5,"type":"page_view","page":{"url":"https://n.example/a"}}}"#;
    let legacy_dead =
        br#"{"site":"demo","reason":"missing_name","index":0,"received_at":5,"raw":"{}"}"#;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(frames(&[legacy], &[legacy_dead])).await.unwrap();
    log.close().unwrap();
    drop(log);

    // It opens, and reads: as version 1, given `"v":1` on the way out (export, dump).
    let log = open(dir.path());
    log.close().unwrap();
    drop(log);
    let files = LogFiles::open(dir.path()).unwrap();
    let stored = files.events_from(0).next().unwrap().unwrap();
    assert_eq!(stored.bytes, legacy);
    assert_eq!(stored.record().unwrap().v, 1);
    let mut out = Vec::new();
    pulse_protocol::push_versioned(&mut out, &stored.bytes);
    assert!(out.starts_with(br#"{"v":1,"site":"demo","#));
    assert_eq!(
        serde_json::from_slice::<EventRecord>(&out).unwrap(),
        stored.record().unwrap()
    );
    let dead = files.dead_letters().unwrap();
    assert_eq!((dead[0].v, dead[0].reason.as_str()), (1, "missing_name"));
}
