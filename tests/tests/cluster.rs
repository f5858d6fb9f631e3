//! Real gateway processes in Kafka mode on a librdkafka mock cluster (TCP). Two sharing the
//! control topic: a change of the rate limits or of the bundle made through one gateway's admin
//! API is in force on the other within seconds; each sees the other alive and enforces its share
//! of the cluster's limits; a gateway that stops is no longer counted. One killed before its
//! write-behind: restarted, it brings reader state up to date from `pulse.events`, and again
//! after a second kill without counting anything twice. A site's dictionary trained on one
//! gateway is held by every gateway, one started later too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pulse_e2e::{
    GatewayProcess, agent, metric, metrics_text, page_view_batch, send_batch, workspace_root,
};
use pulse_gateway::now_ms;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("mock cluster");
    for topic in [
        "pulse.events",
        "pulse.deadletter",
        "pulse.decisions",
        "pulse.state",
    ] {
        cluster
            .create_topic(topic, PARTITIONS, 3)
            .expect("create topic");
    }
    cluster
        .create_topic("pulse.control", 1, 3)
        .expect("create the control topic");
    cluster
}

/// A gateway of the cluster: Kafka sink, the control topic, per-address limits off.
fn config(dir: &Path, brokers: &str) -> PathBuf {
    config_with(dir, brokers, "")
}

fn config_with(dir: &Path, brokers: &str, scorer: &str) -> PathBuf {
    let text = format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [scorer]\n{scorer}\n\n\
         [rate_limits]\nip_requests = {{ per_second = 0, burst = 0 }}\n\n\
         [sink]\nkind = \"kafka\"\n\n[sink.kafka]\nbrokers = {brokers:?}\nlinger_ms = 1\n\
         control_topic = \"pulse.control\"\n\n\
         [[sites]]\nkey = \"demo\"\norigins = []\nallow_same_origin = true\n",
    );
    let path = dir.join("pulse.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn admin(gw: &GatewayProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", gw.admin_url);
    let auth = format!("Bearer {}", gw.admin_token());
    let mut resp = match (method, body) {
        ("GET", _) => agent().get(&url).header("authorization", &auth).call(),
        ("DELETE", _) => agent().delete(&url).header("authorization", &auth).call(),
        ("PUT", Some(b)) => agent()
            .put(&url)
            .header("authorization", &auth)
            .send_json(b),
        _ => unreachable!(),
    }
    .expect("admin request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn live(gw: &GatewayProcess) -> f64 {
    metric(&metrics_text(gw), "pulse_gateway_live_gateways")
}

#[test]
fn two_gateways_share_limits_and_bundles_through_the_control_topic() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = GatewayProcess::start(
        &config(da.path(), &brokers),
        &da.path().join("data"),
        "127.0.0.1:0",
    );
    let b = GatewayProcess::start(
        &config(db.path(), &brokers),
        &db.path().join("data"),
        "127.0.0.1:0",
    );
    wait_until("both gateways to see two live gateways", || {
        live(&a) == 2.0 && live(&b) == 2.0
    });

    // Limits changed on A: published, and in force on B.
    let (status, answer) = admin(
        &a,
        "PUT",
        "/admin/limits",
        Some(json!({"global_requests": {"per_second": 10, "burst": 10}})),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"]["ok"], true, "{answer}");
    wait_until("B to have A's limits", || {
        admin(&b, "GET", "/admin/limits", None).1["global_requests"]
            == json!({"per_second": 10, "burst": 10})
    });
    // B's file has them too, so a restart alone would keep them.
    let file = std::fs::read_to_string(db.path().join("pulse.toml")).unwrap();
    assert!(file.contains("global_requests"), "{file}");

    // Each enforces half: B admits a burst of 5 (and what refills at 5/s meanwhile), then 429.
    let started = Instant::now();
    let (mut passed, mut refused) = (0u32, 0u32);
    for i in 0..30u64 {
        let batch = page_view_batch(
            "anon-cluster",
            i,
            u128::from(now_ms()) << 64 | u128::from(i),
            1,
            now_ms(),
        );
        let mut resp = send_batch(&b.url, &batch);
        match resp.status().as_u16() {
            200 => passed += 1,
            429 => {
                let body: Value =
                    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                assert_eq!(body["error"]["limit"], "global_requests", "{body}");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as u32;
    assert!(
        passed >= 5 && passed <= 5 + refill,
        "B passed {passed} of 30 (a share of 5, {refill} refilled)"
    );
    assert!(refused > 0);

    // A bundle activated on A (the meter with a limit of 5) becomes B's active bundle.
    let meter = std::fs::read_to_string(workspace_root().join("examples/bundles/meter.toml"))
        .unwrap()
        .replace("limit = 3", "limit = 5");
    let (status, answer) = admin(&a, "PUT", "/admin/bundle", Some(json!({"bundle": meter})));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"]["ok"], true, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    wait_until("B to activate A's bundle", || {
        admin(&b, "GET", "/admin/bundle", None).1["id"] == id.as_str()
    });

    // B stops cleanly: A counts itself alone again and enforces the whole limit.
    b.stop();
    wait_until("A to see one live gateway", || live(&a) == 1.0);
    a.stop();
}

#[test]
fn a_killed_gateway_brings_reader_state_up_to_date_from_kafka() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // Reader state is written behind only every 10 minutes: a kill loses all of it but what
    // the restore finds in pulse.events.
    let config = config_with(dir.path(), &brokers, "flush_interval_ms = 600000");
    let data = dir.path().join("data");
    let metered = |gw: &GatewayProcess| {
        admin(gw, "GET", "/admin/readers/ana", None).1["features"]["metered_pages"]["value"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let send = |gw: &GatewayProcess, seq: u64, id: u128| {
        let batch = page_view_batch("ana", seq, id, 1, now_ms());
        assert_eq!(send_batch(&gw.url, &batch).status().as_u16(), 200);
    };
    let base = u128::from(now_ms()) << 64;
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    for i in 0..2 {
        send(&gw, i, base + u128::from(i));
    }
    assert_eq!(metered(&gw), 2.0);
    gw.kill();

    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert_eq!(metered(&gw), 2.0, "both views, restored from kafka");
    send(&gw, 2, base + 2);
    assert_eq!(metered(&gw), 3.0);
    gw.kill();

    // Killed again before any write-behind: the restore reads the same events again (and the
    // new one), and dedupe by id keeps each counted once.
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert_eq!(metered(&gw), 3.0, "each view once");
    gw.stop();
    // A clean stop writes state and offsets: nothing left to read, the same count.
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");
    assert_eq!(metered(&gw), 3.0);
    gw.stop();
}

/// Erasing a reader in Kafka mode: the gateway asked forgets them, the other gateway too
/// (through the control topic), an erasure record (`pulse-schema: erasure.v1`) goes to
/// `pulse.events` keyed by the reader for consumers downstream, and a gateway restored from
/// the topic after a kill does not bring them back; another reader is untouched.
#[test]
fn an_erased_reader_is_forgotten_by_every_gateway_and_stays_so_after_a_restore() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers as _;

    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let configs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| config_with(d.path(), &brokers, "flush_interval_ms = 600000"))
        .collect();
    let data: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
    let gws: Vec<GatewayProcess> = (0..2)
        .map(|i| GatewayProcess::start(&configs[i], &data[i], "127.0.0.1:0"))
        .collect();
    let base = u128::from(now_ms()) << 64;
    // Both readers visit both gateways.
    for (n, reader) in ["eve", "bob"].iter().enumerate() {
        for (i, gw) in gws.iter().enumerate() {
            let id = base + (n as u128) * 16 + i as u128;
            let batch = page_view_batch(reader, i as u64, id, 1, now_ms());
            assert_eq!(send_batch(&gw.url, &batch).status().as_u16(), 200);
        }
    }
    let known = |gw: &GatewayProcess, reader: &str| {
        admin(gw, "GET", &format!("/admin/readers/{reader}"), None).0 == 200
    };
    assert!(gws.iter().all(|g| known(g, "eve") && known(g, "bob")));

    let (status, answer) = admin(&gws[0], "DELETE", "/admin/readers/eve", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], true, "{answer}");
    let record = answer["erasure_record"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(record.starts_with("pulse.events/"), "{answer}");
    assert!(!known(&gws[0], "eve"));
    wait_until("the other gateway to forget eve", || !known(&gws[1], "eve"));
    assert!(gws.iter().all(|g| known(g, "bob")), "bob untouched");

    // The erasure record, for consumers downstream.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "erasure-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["pulse.events"]).unwrap();
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while found.is_none() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let schema = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "pulse-schema")
                    .and_then(|h| h.value.map(<[u8]>::to_vec))
            });
            if schema.as_deref() == Some(b"erasure.v1".as_slice()) {
                let value: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                found = Some((m.key().map(<[u8]>::to_vec), value));
            }
        }
    }
    let (key, value) = found.expect("an erasure record on pulse.events");
    assert_eq!(
        key.as_deref(),
        Some(b"eve".as_slice()),
        "keyed by the reader"
    );
    assert_eq!(value["v"], 1);
    assert_eq!(value["erased"], "eve");

    // Killed before any write-behind, the first gateway restores from pulse.events: eve's
    // page views are there, and so is her erasure.
    let [first, second]: [GatewayProcess; 2] = gws.try_into().ok().unwrap();
    first.kill();
    let first = GatewayProcess::start(&configs[0], &data[0], "127.0.0.1:0");
    assert!(!known(&first, "eve"), "an erased reader is not restored");
    assert!(known(&first, "bob"), "bob restored");
    first.stop();
    second.stop();
}

/// The state changelog: states written behind are in `pulse.state` keyed by the reader (the
/// feature set before the state), an erased reader becomes a tombstone there, and a gateway on
/// a new machine (an empty data folder) restores reader state from it, counting nothing twice.
#[test]
fn a_gateway_on_a_new_machine_restores_reader_state_from_the_changelog() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), &brokers, "flush_interval_ms = 200");
    let gw = GatewayProcess::start(&config, &dir.path().join("first"), "127.0.0.1:0");
    let base = u128::from(now_ms()) << 64;
    for (n, reader) in ["ana", "bob"].iter().enumerate() {
        for i in 0..2u64 {
            let id = base + (n as u128) * 16 + u128::from(i);
            let batch = page_view_batch(reader, i, id, 1, now_ms());
            assert_eq!(send_batch(&gw.url, &batch).status().as_u16(), 200);
        }
    }
    let metered = |gw: &GatewayProcess, reader: &str| {
        admin(gw, "GET", &format!("/admin/readers/{reader}"), None).1["features"]
            ["metered_pages"]["value"]
            .as_f64()
    };
    assert_eq!(metered(&gw, "ana"), Some(2.0));
    assert_eq!(admin(&gw, "DELETE", "/admin/readers/bob", None).0, 200);
    gw.stop();

    // What the changelog holds: ana's state, bob's tombstone after his state, the metadata.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "changelog-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["pulse.state"]).unwrap();
    let mut last: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            last.insert(
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            );
        }
    }
    let ana = last.get(b"ana".as_slice()).cloned().flatten();
    assert!(ana.is_some_and(|v| v.len() > 8), "ana's state: {last:?}");
    assert_eq!(last.get(b"bob".as_slice()), Some(&None), "bob's tombstone");
    assert!(last.keys().any(|k| k.starts_with(b"\0pulse.meta/")));

    let gw = GatewayProcess::start(&config, &dir.path().join("second"), "127.0.0.1:0");
    let text = metrics_text(&gw);
    assert!(
        metric(
            &text,
            "pulse_gateway_restored_records{source=\"changelog\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(metered(&gw, "ana"), Some(2.0), "restored, each view once");
    assert_eq!(admin(&gw, "GET", "/admin/readers/bob", None).0, 404);
    let batch = page_view_batch("ana", 9, base + 99, 1, now_ms());
    assert_eq!(send_batch(&gw.url, &batch).status().as_u16(), 200);
    assert_eq!(metered(&gw, "ana"), Some(3.0));
    gw.stop();
}

/// A compact body of one page view by reader `r` of one of three articles.
fn compact_view(r: u64, dictionary: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut batch = page_view_batch(
        &format!("reader-{r}"),
        0,
        u128::from(now_ms()) << 32 | u128::from(r),
        1,
        now_ms(),
    );
    batch.events[0].page.url = format!("https://news.example/politics/budget-{}", r % 3);
    batch.events[0].page.title = format!("Budget talks, part {}", r % 3);
    let record = pulse_protocol::compact::encode_record(&pulse_protocol::WireBatch::from(&batch));
    pulse_protocol::compact::encode_body(&record, dictionary)
}

fn post_body(gw: &GatewayProcess, body: Vec<u8>) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("{}/v1/collect?k=demo", gw.url))
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .expect("POST /v1/collect");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn dictionary_of(gw: &GatewayProcess, hash: &str) -> Option<Vec<u8>> {
    let mut resp = agent()
        .get(format!("{}/v1/dictionary/{hash}?k=demo", gw.url))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("GET dictionary");
    (resp.status().as_u16() == 200).then(|| resp.body_mut().read_to_vec().unwrap())
}

/// A site's dictionary trained on one gateway reaches the others through the control topic (a
/// gateway started later too), so a body compressed against it is read wherever it lands.
#[test]
fn a_dictionary_trained_on_one_gateway_is_held_by_every_gateway() {
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |d: &tempfile::TempDir| {
        let path = config(d.path(), &brokers);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "\n[dictionary]\nmin_samples = 20\nsamples = 30\nmin_readers = 3\nbytes = 4096\n",
        );
        std::fs::write(&path, text).unwrap();
        GatewayProcess::start(&path, &d.path().join("data"), "127.0.0.1:0")
    };
    let (a, b) = (start(&dirs[0]), start(&dirs[1]));
    let mut named = None;
    for r in 0..200 {
        let (status, answer) = post_body(&a, compact_view(r, None));
        assert_eq!(status, 200, "{answer}");
        if let Some(hash) = answer["dictionary"].as_str() {
            named = Some(hash.to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let hash = named.expect("gateway A trains the site's dictionary");
    let bytes = dictionary_of(&a, &hash).expect("A serves it");
    wait_until("B to hold A's dictionary", || {
        dictionary_of(&b, &hash).as_ref() == Some(&bytes)
    });
    let c = start(&dirs[2]);
    wait_until("C, started later, to hold it", || {
        dictionary_of(&c, &hash).as_ref() == Some(&bytes)
    });
    let n = u32::from_str_radix(&hash, 16).unwrap();
    for gw in [&b, &c] {
        let (status, answer) = post_body(gw, compact_view(500, Some((n, &bytes))));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], 1);
        assert!(answer.get("dictionary").is_none(), "{answer}");
    }
}
