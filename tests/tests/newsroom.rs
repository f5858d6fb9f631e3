//! The newsroom's figures over the online export, end to end: the real gateway with
//! `examples/bundles/reader-profile.toml` (twenty rules and the experiment
//! `meter-limit-2026-12`) takes known traffic (readers reading articles, with the tracker's
//! engagement events, a fifth of them subscribing, and one retried batch); while it runs,
//! `examples/analysis/export.py` pages through `GET /admin/export` for the event and decision
//! logs; `examples/analysis/newsroom.py` (the real DuckDB, from the venv `scripts/setup.sh
//! --test` makes) must then give exactly the figures this test computes from what it sent and
//! the decisions it was answered: top articles, engaged time, conversion by rule and by arm.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pulse_e2e::{GatewayProcess, analysis_python, demo_config_with_bundle, workspace_root};
use pulse_gateway::now_ms;
use pulse_protocol::{Batch, Event, EventId, EventType, PageContext};
use serde_json::{Value, json};

const READERS: usize = 48;
const ARTICLES: [&str; 4] = [
    "/news/budget",
    "/news/election",
    "/culture/film",
    "/sport/final",
];
const SITE: &str = "https://news.example";

/// What one reader sends and is answered, in order.
#[derive(Default)]
struct Reader {
    seq: u64,
    /// The rule (or reason) of every answer before the reader subscribed.
    rules: BTreeSet<String>,
    /// The first experiment arm an answer named.
    arm: Option<(String, String)>,
    subscribed: bool,
}

fn event(id: u128, kind: EventType, url: &str, title: &str, props: Value) -> Event {
    Event {
        id: EventId(id),
        ts: now_ms(),
        kind,
        name: (kind == EventType::Custom).then(|| "subscribe".to_owned()),
        page: PageContext {
            url: url.to_owned(),
            referrer: String::new(),
            title: title.to_owned(),
        },
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

fn batch(anon: &str, seq: u64, events: Vec<Event>) -> Batch {
    pulse_e2e::batch_of(anon, seq, events, now_ms())
}

/// Sends `batch`; returns the decision.
fn send(url: &str, batch: &Batch) -> Value {
    let mut resp = pulse_e2e::send_batch(url, batch);
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    answer["decision"].clone()
}

fn run(python: &Path, args: &[&str]) -> Output {
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn close(a: &Value, b: f64, what: &str) {
    let a = a
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {a} is no number"));
    assert!((a - b).abs() < 1e-9, "{what}: {a} != {b}");
}

#[test]
fn newsroom_figures_from_the_online_export() {
    let python = analysis_python();
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config_with_bundle(dir.path(), "reader-profile");
    let data = dir.path().join("data");
    let gw = GatewayProcess::start(&config, &data, "127.0.0.1:0");

    let mut readers: Vec<Reader> = (0..READERS).map(|_| Reader::default()).collect();
    // page → (page views, readers, engaged ms, each reader's deepest read)
    type Page = (u64, BTreeSet<usize>, u64, BTreeMap<usize, f64>);
    let mut pages: BTreeMap<&str, Page> = BTreeMap::new();
    let (mut id, mut stored, mut answers) = (1u128 << 70, 0u64, 0u64);
    let mut retry = None;
    let mut answered = |r: &mut Reader, decision: &Value| {
        answers += 1;
        let rule = decision["rule"].as_str().or(decision["reason"].as_str());
        if !r.subscribed {
            r.rules.insert(rule.expect("a rule or reason").to_owned());
        }
        if r.arm.is_none()
            && let Some(arm) = decision["experiment"]["arm"].as_str()
        {
            let experiment = decision["experiment"]["experiment"].as_str().unwrap();
            r.arm = Some((experiment.to_owned(), arm.to_owned()));
        }
    };

    for (i, r) in readers.iter_mut().enumerate() {
        let anon = format!("reader-{i:03}");
        // The front page: not an article.
        id += 1;
        let front = vec![event(
            id,
            EventType::PageView,
            &format!("{SITE}/"),
            "Front",
            json!({"content_type": "website"}),
        )];
        let d = send(&gw.url, &batch(&anon, r.seq, front));
        (r.seq, stored) = (r.seq + 1, stored + 1);
        answered(r, &d);
        // Articles 0..=i%4, the first read twice by every third reader; one campaign link.
        let mut reads: Vec<usize> = (0..=i % 4).collect();
        if i % 3 == 0 {
            reads.push(0);
        }
        for (n, &k) in reads.iter().enumerate() {
            let path = ARTICLES[k];
            let query = if n == 1 { "?utm_source=newsletter" } else { "" };
            let url = format!("{SITE}{path}{query}");
            let title = format!("Story {k}");
            let active = 1000 * (k as u64 + 1) + 10 * i as u64 + n as u64;
            let depth = ((i * 7 + k * 13 + n * 29) % 101) as f64;
            let events = vec![
                event(
                    id + 1,
                    EventType::PageView,
                    &url,
                    &title,
                    json!({"content_type": "article"}),
                ),
                event(
                    id + 2,
                    EventType::Engagement,
                    &url,
                    &title,
                    json!({"read_depth": depth, "active_ms": active}),
                ),
            ];
            id += 2;
            let b = batch(&anon, r.seq, events);
            let d = send(&gw.url, &b);
            (r.seq, stored) = (r.seq + 1, stored + 2);
            answered(r, &d);
            if retry.is_none() && i == 1 {
                retry = Some(b);
            }
            let p = pages.entry(path).or_default();
            p.0 += 1;
            p.1.insert(i);
            p.2 += active;
            let deepest = p.3.entry(i).or_insert(0.0);
            *deepest = deepest.max(depth);
        }
        if i % 5 == 0 {
            // Strictly after the decisions before it (the log's times are milliseconds).
            std::thread::sleep(Duration::from_millis(3));
            id += 1;
            r.subscribed = true;
            let thanks = vec![event(
                id,
                EventType::Custom,
                &format!("{SITE}/thanks"),
                "Thanks",
                json!({}),
            )];
            let d = send(&gw.url, &batch(&anon, r.seq, thanks));
            (r.seq, stored) = (r.seq + 1, stored + 1);
            answered(r, &d);
        }
    }
    // A batch the page retried: stored (and decided) twice, counted once.
    let retry = retry.unwrap();
    let d = send(&gw.url, &retry);
    stored += 2;
    answered(&mut readers[1], &d);

    // Online: page through the export while the gateway runs (decisions reach their log
    // within a second or two).
    let token = data.join("admin.token").display().to_string();
    let export = workspace_root()
        .join("examples/analysis/export.py")
        .display()
        .to_string();
    let fetch = |log: &str, file: &Path| -> String {
        let out = run(
            &python,
            &[
                &export,
                "--admin",
                &gw.admin_url,
                "--token-file",
                &token,
                "--log",
                log,
                "--page",
                "37",
                "--out",
                &file.display().to_string(),
            ],
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let events_file = dir.path().join("events.jsonl");
    let decisions_file = dir.path().join("decisions.jsonl");
    let said = fetch("events", &events_file);
    assert!(
        said.contains(&format!(
            "{stored} record(s) of events; next position: {stored}"
        )),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let said = fetch("decisions", &decisions_file);
        if said.contains(&format!("{answers} record(s) of decisions")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{said}: {answers} decisions answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let script = workspace_root()
        .join("examples/analysis/newsroom.py")
        .display()
        .to_string();
    let (ev, de) = (
        events_file.display().to_string(),
        decisions_file.display().to_string(),
    );
    let out = run(&python, &[&script, &ev, &de, "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["duplicates"], 2, "the retried batch");
    assert_eq!(report["events"], stored - 2);
    assert_eq!(report["decisions"], answers);

    // Top articles: by page views, then readers, then page; the front page is no article.
    let mut top: Vec<(&str, &Page)> = pages.iter().map(|(p, v)| (*p, v)).collect();
    top.sort_by(|a, b| (b.1.0, b.1.1.len(), a.0).cmp(&(a.1.0, a.1.1.len(), b.0)));
    let got = report["top_articles"].as_array().unwrap();
    assert_eq!(got.len(), ARTICLES.len(), "{report}");
    for (row, (path, p)) in got.iter().zip(&top) {
        assert_eq!(row["page"], format!("{SITE}{path}"), "{row}");
        assert_eq!(row["page_views"], p.0, "{row}");
        assert_eq!(row["readers"], p.1.len(), "{row}");
        let k = ARTICLES.iter().position(|a| a == path).unwrap();
        assert_eq!(row["title"], format!("Story {k}"), "{row}");
    }

    // Engaged time per article.
    let got = report["engagement"].as_array().unwrap();
    assert_eq!(got.len(), ARTICLES.len(), "{report}");
    for row in got {
        let path = row["page"].as_str().unwrap().strip_prefix(SITE).unwrap();
        let p = &pages[path];
        let secs = p.2 as f64 / 1000.0;
        close(&row["engaged_seconds"], secs, path);
        assert_eq!(row["readers"], p.3.len(), "{row}");
        close(&row["seconds_per_reader"], secs / p.3.len() as f64, path);
        let depth = p.3.values().sum::<f64>() / p.3.len() as f64;
        close(&row["read_depth"], depth, path);
    }

    // Conversion by rule: the readers each rule decided for before they converted.
    let mut by_rule: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &readers {
        for rule in &r.rules {
            let e = by_rule.entry(rule).or_default();
            e.0 += 1;
            e.1 += u64::from(r.subscribed);
        }
    }
    assert!(
        by_rule.len() >= 2,
        "the traffic reaches several rules: {by_rule:?}"
    );
    let got = report["by_rule"].as_array().unwrap();
    assert_eq!(got.len(), by_rule.len(), "{report}");
    for row in got {
        let rule = row["rule"].as_str().unwrap();
        let (n, converted) = by_rule[rule];
        assert_eq!(
            (row["readers"].as_u64(), row["conversions"].as_u64()),
            (Some(n), Some(converted)),
            "{rule}: {row}"
        );
        close(&row["rate"], converted as f64 / n as f64, rule);
    }

    // Conversion by experiment arm (conversion.py's estimate).
    let mut by_arm: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for r in &readers {
        if let Some(arm) = &r.arm {
            let e = by_arm.entry(arm.clone()).or_default();
            e.0 += 1;
            e.1 += u64::from(r.subscribed);
        }
    }
    assert!(!by_arm.is_empty(), "the experiment exposes readers");
    let got = report["by_arm"].as_array().unwrap();
    assert_eq!(got.len(), by_arm.len(), "{report}");
    for row in got {
        let key = (
            row["experiment"].as_str().unwrap().to_owned(),
            row["arm"].as_str().unwrap().to_owned(),
        );
        let (n, converted) = by_arm[&key];
        assert_eq!(
            (row["readers"].as_u64(), row["conversions"].as_u64()),
            (Some(n), Some(converted)),
            "{key:?}: {row}"
        );
    }
    gw.stop();

    // The tables, as a person reads them.
    let out = run(&python, &[&script, &ev, &de]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    for title in [
        "Top articles",
        "Engaged time",
        "Conversion (subscribe) by rule",
        "by experiment arm",
    ] {
        assert!(text.contains(title), "{title}: {text}");
    }

    // A record of a schema version it does not know is refused, not misread.
    let newer = dir.path().join("newer.jsonl");
    let text = std::fs::read_to_string(&events_file).unwrap();
    std::fs::write(&newer, text.replacen("{\"v\":1,", "{\"v\":2,", 1)).unwrap();
    let out = Command::new(&python)
        .args([&script, &newer.display().to_string(), &de])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("schema version 2"),
        "{out:?}"
    );
}
