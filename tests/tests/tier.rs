//! The split scoring tier on a librdkafka mock cluster (TCP): stateless gateways
//! (`cluster.role = "gateway"`) in front of scorers (`"scorer"`) that own the partitions of
//! `pulse.events` through a consumer group.
//!
//! - Two gateways and three scorers decide a run of traffic exactly as one process does, with
//!   each reader's requests alternating between the gateways.
//! - Under load, a scorer added and then one killed: the partitions move (restored from the
//!   state changelog, caught up from the events topic), no decision ever carries a wrong count
//!   (fallbacks only, while a partition moves), and at the end every reader's count is exactly
//!   the views acknowledged (none lost, none twice). The fallbacks are printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_e2e::{
    GatewayProcess, agent, metric, metrics_text, page_view_batch, send_batch, workspace_root,
};
use pulse_gateway::now_ms;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::Value;

const PARTITIONS: i32 = 6;
const TOKEN: &str = "tier-test-secret-0123456789";
/// The meter's limit: far above the views a reader sends, so `remaining` shows the exact count.
const LIMIT: u64 = 500;

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

/// A process of the tier: `role` is `all`, `gateway` or `scorer`.
fn config(dir: &Path, brokers: &str, role: &str) -> PathBuf {
    let meter = std::fs::read_to_string(workspace_root().join("examples/bundles/meter.toml"))
        .expect("the meter bundle")
        .replace("limit = 3", &format!("limit = {LIMIT}"))
        .replace("exact = 16", "exact = 1000");
    let bundle = dir.join("meter.toml");
    std::fs::write(&bundle, meter).expect("write the bundle");
    let text = format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [limits]\ndecision_deadline_ms = 300\n\n\
         [scorer]\npartitions = {PARTITIONS}\nbundle = {bundle:?}\nflush_interval_ms = 200\n\n\
         [rate_limits]\nip_requests = {{ per_second = 0, burst = 0 }}\n\n\
         [sink]\nkind = \"kafka\"\n\n[sink.kafka]\nbrokers = {brokers:?}\nlinger_ms = 1\n\
         control_topic = \"pulse.control\"\n\n\
         [cluster]\nrole = {role:?}\ntoken = {TOKEN:?}\nsession_timeout_ms = 4000\nrebalance_timeout_ms = 8000\n\n\
         [[sites]]\nkey = \"demo\"\norigins = []\nallow_same_origin = true\n",
    );
    let path = dir.join("pulse.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

struct Node {
    process: GatewayProcess,
    _dir: tempfile::TempDir,
}

fn start(brokers: &str, role: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), brokers, role);
    let process = GatewayProcess::start(&config, &dir.path().join("data"), "127.0.0.1:0");
    Node { process, _dir: dir }
}

fn cluster_view(gw: &GatewayProcess) -> Value {
    let mut resp = agent()
        .get(format!("{}/admin/cluster", gw.admin_url))
        .header("authorization", &format!("Bearer {}", gw.admin_token()))
        .call()
        .expect("GET /admin/cluster");
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// Every partition claimed by exactly one of `scorers` live scorers, as `gw` sees it.
fn settled(gw: &GatewayProcess, scorers: usize) -> bool {
    let view = cluster_view(gw);
    let live = view["scorers"].as_array().cloned().unwrap_or_default();
    let claimed: Vec<u64> = live
        .iter()
        .flat_map(|s| s["partitions"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_u64())
        .collect();
    let owners = live
        .iter()
        .filter(|s| s["partitions"].as_array().is_some_and(|p| !p.is_empty()))
        .count();
    let distinct: BTreeSet<u64> = claimed.iter().copied().collect();
    owners == scorers && claimed.len() == PARTITIONS as usize && distinct.len() == claimed.len()
}

fn wait_settled(gws: &[&GatewayProcess], scorers: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gws.iter().all(|g| settled(g, scorers)) {
        let views: Vec<Value> = gws.iter().map(|g| cluster_view(g)).collect();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {scorers} scorers to claim every partition: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One page view of `reader` (their `view`-th, ids unique to the run) through `url`: the
/// decision's action, remaining, reason and fallback; `None` when not acknowledged.
fn view(
    url: &str,
    reader: &str,
    view: u64,
    id: u128,
) -> Option<(String, Option<u64>, String, bool)> {
    let batch = page_view_batch(reader, view, id, 1, now_ms());
    let mut resp = send_batch(url, &batch);
    if resp.status().as_u16() != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let d = &body["decision"];
    Some((
        d["action"].as_str().unwrap_or_default().to_owned(),
        d["remaining"].as_u64(),
        d["reason"].as_str().unwrap_or_default().to_owned(),
        d["fallback"].as_bool().unwrap_or(false),
    ))
}

/// The decisions of a fixed run: 10 readers, 5 views each, round by round; request `i` goes to
/// `urls[i % urls.len()]`, so each reader's requests alternate between the gateways.
fn run(urls: &[String], base: u128) -> Vec<(String, Option<u64>, String, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    for v in 0..5u64 {
        for r in 0..10u128 {
            let reader = format!("reader-{r}");
            let id = base + r * 1000 + u128::from(v);
            let d = view(&urls[i % urls.len()], &reader, v, id).expect("acknowledged");
            out.push(d);
            i += 1;
        }
    }
    out
}

/// The records of `pulse.decisions`, read from the beginning until `want` arrived (or 30 s).
fn decision_records(brokers: &str, want: usize) -> Vec<Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tier-decisions")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("pulse.decisions", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(serde_json::from_slice(m.payload().unwrap_or_default()).unwrap());
        }
    }
    out
}

#[test]
fn two_gateways_and_three_scorers_decide_as_one_process() {
    let base = u128::from(now_ms()) << 64;
    let split = {
        let cluster = mock_cluster();
        let brokers = cluster.bootstrap_servers();
        let scorers: Vec<Node> = (0..3).map(|_| start(&brokers, "scorer")).collect();
        let gateways: Vec<Node> = (0..2).map(|_| start(&brokers, "gateway")).collect();
        wait_settled(&[&gateways[0].process, &gateways[1].process], 3);
        let urls: Vec<String> = gateways.iter().map(|g| g.process.url.clone()).collect();
        let decisions = run(&urls, base);
        // What operators see: every partition claimed, each scorer's ready.
        let seen = metrics_text(&gateways[0].process);
        assert_eq!(metric(&seen, "pulse_tier_live_scorers"), 3.0);
        assert_eq!(
            metric(&seen, "pulse_tier_claimed_partitions"),
            f64::from(PARTITIONS)
        );
        let ready: f64 = scorers
            .iter()
            .map(|s| {
                metric(
                    &metrics_text(&s.process),
                    "pulse_tier_owned_partitions{state=\"ready\"}",
                )
            })
            .sum();
        assert_eq!(ready, f64::from(PARTITIONS));
        // A gateway shows what the owner keeps of a reader.
        let mut resp = agent()
            .get(format!(
                "{}/admin/readers/reader-3",
                gateways[1].process.admin_url
            ))
            .header(
                "authorization",
                &format!("Bearer {}", gateways[1].process.admin_token()),
            )
            .call()
            .expect("GET /admin/readers/reader-3");
        let kept: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(kept["features"]["metered_pages"]["value"], 5.0, "{kept}");
        // The scorers log each decision with the features it read (the gateways log none).
        let logged = decision_records(&brokers, 50);
        assert_eq!(logged.len(), 50, "one record per decision");
        assert!(
            logged
                .iter()
                .all(|r| r["features"]["metered_pages"].is_number() && r["site"] == "demo"),
            "{logged:?}"
        );
        // Each reader's batches reach its scorer wherever they came in: the scorers track the
        // 10 sessions, none missing a batch, and count one that is (the gateways count none).
        let gaps = |name: &str| -> f64 {
            let sum = |nodes: &[Node]| -> f64 {
                nodes
                    .iter()
                    .map(|n| metric(&metrics_text(&n.process), name))
                    .sum()
            };
            assert_eq!(sum(&gateways), 0.0, "{name} on a gateway");
            sum(&scorers)
        };
        assert_eq!(gaps("pulse_gateway_tracked_sessions"), 10.0);
        assert_eq!(gaps("pulse_gateway_session_batches_lost_total"), 0.0);
        view(&gateways[0].process.url, "reader-0", 5 + 64 + 1, base + 999);
        let counted = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            gaps("pulse_gateway_session_batches_lost_total") == 2.0
        });
        assert!(counted, "batches 5 and 6 of reader-0 counted lost");
        // A scorer answers no pages itself.
        let refused = send_batch(
            &scorers[0].process.url,
            &page_view_batch("x", 0, base, 1, now_ms()),
        );
        assert_eq!(refused.status().as_u16(), 404);
        decisions
    };
    let one = {
        let cluster = mock_cluster();
        let brokers = cluster.bootstrap_servers();
        let gw = start(&brokers, "all");
        run(std::slice::from_ref(&gw.process.url), base)
    };
    assert!(
        split.iter().all(|d| !d.3),
        "no fallback in a settled tier: {split:?}"
    );
    assert_eq!(split, one, "the split tier decides as one process");
    for (i, d) in split.iter().enumerate() {
        let nth = (i / 10) as u64 + 1;
        assert_eq!(d.1, Some(LIMIT - nth), "decision {i}: {d:?}");
    }
}

/// What the load saw: per reader, the views acknowledged, and every decision with its time.
#[derive(Default)]
struct Seen {
    acked: Vec<u64>,
    decisions: Vec<(Instant, usize, u64, Option<u64>, bool)>,
}

#[test]
fn scorers_added_and_killed_under_load_move_partitions_without_a_wrong_count() {
    const READERS: usize = 12;
    let cluster = mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let mut scorers: Vec<Node> = (0..2).map(|_| start(&brokers, "scorer")).collect();
    let gateways: Vec<Node> = (0..2).map(|_| start(&brokers, "gateway")).collect();
    wait_settled(&[&gateways[0].process], 2);
    let urls: Vec<String> = gateways.iter().map(|g| g.process.url.clone()).collect();
    let seen = Arc::new(Mutex::new(Seen {
        acked: vec![0; READERS],
        decisions: Vec::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let base = u128::from(now_ms()) << 64;
    let load = {
        let (seen, stop, urls) = (Arc::clone(&seen), Arc::clone(&stop), urls.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            let mut id = base;
            while !stop.load(Ordering::Relaxed) {
                for r in 0..READERS {
                    let n = seen.lock().unwrap().acked[r];
                    id += 1;
                    let reader = format!("mover-{r}");
                    if let Some(d) = view(&urls[i % urls.len()], &reader, n, id) {
                        let mut s = seen.lock().unwrap();
                        s.acked[r] += 1;
                        s.decisions.push((Instant::now(), r, n, d.1, d.3));
                    }
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    let added = Instant::now();
    scorers.push(start(&brokers, "scorer"));
    wait_settled(&[&gateways[0].process], 3);
    let added_settled = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    let killed = Instant::now();
    scorers.remove(0).process.kill();
    wait_settled(&[&gateways[0].process, &gateways[1].process], 2);
    let killed_settled = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let seen = seen.lock().unwrap();
    let (mut fallbacks, mut before_any_move) = (Vec::new(), 0);
    for &(at, r, n, remaining, fallback) in &seen.decisions {
        if fallback {
            fallbacks.push(at);
            if at < added {
                before_any_move += 1;
            }
            continue;
        }
        assert_eq!(
            remaining,
            Some(LIMIT - (n + 1)),
            "reader {r}'s view {n} was decided on a wrong count"
        );
    }
    assert_eq!(before_any_move, 0, "fallbacks while no partition moved");
    // How many fallbacks each move caused, and for how long pages saw them (first to last).
    let window = |from: Instant, to: Instant| {
        let hit: Vec<&Instant> = fallbacks
            .iter()
            .filter(|t| **t >= from && **t < to)
            .collect();
        let ms = match (hit.first(), hit.last()) {
            (Some(a), Some(b)) => (**b - **a).as_millis(),
            _ => 0,
        };
        (hit.len(), ms)
    };
    let (add_n, add_ms) = window(added, killed);
    let (kill_n, kill_ms) = window(killed, Instant::now());
    println!(
        "tier figures: decisions {}, fallbacks {}; adding a scorer: {add_n} fallbacks over {add_ms} ms \
         (claims settled after {} ms); killing one: {kill_n} fallbacks over {kill_ms} ms (claims settled after {} ms)",
        seen.decisions.len(),
        fallbacks.len(),
        (added_settled - added).as_millis(),
        (killed_settled - killed).as_millis(),
    );
    // The fallbacks the pages saw are the ones the gateways counted.
    let counted: f64 = gateways
        .iter()
        .map(|g| {
            metric(
                &metrics_text(&g.process),
                "pulse_gateway_fallback_decisions_total",
            )
        })
        .sum();
    assert_eq!(counted, fallbacks.len() as f64);
    // Every view acknowledged counts once: one more view each shows the exact count.
    for r in 0..READERS {
        let n = seen.acked[r];
        let reader = format!("mover-{r}");
        let d = view(&urls[r % 2], &reader, n, base + (1 << 40) + r as u128).expect("acknowledged");
        assert!(!d.3, "settled: no fallback");
        assert_eq!(
            d.1,
            Some(LIMIT - (n + 1)),
            "reader {r}: {n} views acknowledged before"
        );
    }
}
