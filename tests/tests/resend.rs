//! A batch sent again (`resent: true`: a retry, or a batch an earlier page parked and that was
//! delivered as the page went) is acknowledged whole, but the events reader state already holds
//! are not stored twice; its new events are. A batch not marked resent is stored as sent.

use pulse_e2e::{GatewayProcess, agent, demo_config, metric, metrics_text, page_view_batch};
use pulse_gateway::now_ms;
use serde_json::Value;

fn post(gw: &GatewayProcess, body: &Value) -> Value {
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(body).unwrap())
        .expect("POST /v1/collect");
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// Event ids of the reader's records in the event log.
fn stored(gw: &GatewayProcess, reader: &str) -> Vec<String> {
    let mut resp = agent()
        .get(format!(
            "{}/admin/export?log=events&limit=10000",
            gw.admin_url
        ))
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .call()
        .expect("export");
    resp.body_mut()
        .read_to_string()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["reader"] == reader)
        .map(|r| r["event"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_resent_batch_stores_only_what_reader_state_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(
        &demo_config(dir.path()),
        &dir.path().join("data"),
        "127.0.0.1:0",
    );
    let base = u128::from(now_ms()) << 64;
    let first = serde_json::to_value(page_view_batch("ana", 0, base, 2, now_ms())).unwrap();
    let answer = post(&gw, &first);
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["decision"]["remaining"], 1);

    // The same batch again, marked resent: acknowledged whole, stored once, counted once.
    let mut again = first.clone();
    again["resent"] = Value::Bool(true);
    let answer = post(&gw, &again);
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["decision"]["remaining"], 1, "{answer}");
    assert_eq!(stored(&gw, "ana").len(), 2);
    let seen = metrics_text(&gw);
    assert_eq!(
        metric(&seen, "pulse_gateway_resent_duplicate_events_total"),
        2.0
    );

    // A resent batch with one new event among the old: the new one is stored and counted.
    let mut mixed = serde_json::to_value(page_view_batch("ana", 1, base + 1, 2, now_ms())).unwrap();
    mixed["resent"] = Value::Bool(true);
    let answer = post(&gw, &mixed);
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["decision"]["remaining"], 0, "{answer}");
    let ids = stored(&gw, "ana");
    assert_eq!(ids.len(), 3, "{ids:?}");
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 3);

    // Not marked resent: stored as sent (the store is at least once; reader state counts once).
    let answer = post(&gw, &first);
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["decision"]["remaining"], 0);
    assert_eq!(stored(&gw, "ana").len(), 5);

    // `resent` must be a boolean.
    let mut bad = first.clone();
    bad["resent"] = Value::from(1);
    let resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .header("content-type", "application/json")
        .send(serde_json::to_vec(&bad).unwrap())
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);
}

/// Batches of a session that never arrive are counted in `/metrics` (the tracker numbers each
/// session's batches; a retry resends its number): lost once 64 later ones came, late when one
/// comes after that; retries and batches out of order count nothing.
#[test]
fn batches_missing_from_a_session_are_counted_lost_and_late() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(
        &demo_config(dir.path()),
        &dir.path().join("data"),
        "127.0.0.1:0",
    );
    let base = u128::from(now_ms()) << 64;
    let send = |seq: u64| {
        let batch = page_view_batch("cy", seq, base + u128::from(seq), 1, now_ms());
        post(&gw, &serde_json::to_value(batch).unwrap());
    };
    // Out of order and resent: nothing lost.
    for seq in [0, 2, 1, 2, 4] {
        send(seq);
    }
    let seen = metrics_text(&gw);
    assert_eq!(
        metric(&seen, "pulse_gateway_session_batches_lost_total"),
        0.0
    );
    assert_eq!(metric(&seen, "pulse_gateway_tracked_sessions"), 1.0);
    // 3 is missing; 100 moves the window past it and past 5..=36, which never entered it.
    send(100);
    let seen = metrics_text(&gw);
    assert_eq!(
        metric(&seen, "pulse_gateway_session_batches_lost_total"),
        1.0 + 32.0
    );
    send(3);
    let seen = metrics_text(&gw);
    assert_eq!(
        metric(&seen, "pulse_gateway_session_batches_late_total"),
        1.0
    );
    assert_eq!(
        metric(&seen, "pulse_gateway_session_batches_untracked_total"),
        0.0
    );
}
