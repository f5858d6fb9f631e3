use std::sync::Arc;

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
