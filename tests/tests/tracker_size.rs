//! What a reader downloads for the tracker: `pulse.js` and `pulse_bg.wasm` as
//! `scripts/build-tracker.sh` built them into `target/pulse-tracker`, gzipped at the level the
//! gateway serves them (9), and the README's snippets that go into every page.

use std::io::Write;

use pulse_e2e::{readme_snippet, workspace_root};

/// Most bytes `pulse.js` and `pulse_bg.wasm` may take gzipped, together: issue 12's 35,000.
/// The tracker is at 33,771 (2,807 + 30,964) with page views on navigation, URL stripping,
/// consent, debug logs, first-paint decisions, marked clicks, forms, campaign sessions, the
/// site's compression dictionary and an optimal DEFLATE parse, since its Wasm became `no_std`
/// with a trapping panic handler, the build drops the function-table slots nothing reaches and
/// gives the imports one-letter names, and sending and fetching moved into two small helpers of
/// the bootstrap (tracker/README.md, "Size"; 37,693 before).
const TRACKER_GZIP_BUDGET: usize = 35_000;
/// Most bytes a snippet may take, as written in the README.
const SNIPPET_BUDGET: usize = 1_000;

fn gzip(bytes: &[u8]) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap().len()
}

#[test]
fn the_tracker_and_its_snippets_stay_within_budget() {
    let dir = workspace_root().join("target/pulse-tracker");
    let mut total = 0;
    for name in ["pulse.js", "pulse_bg.wasm"] {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/build-tracker.sh first",
                path.display()
            )
        });
        let gz = gzip(&bytes);
        println!("{name}: {} bytes, {gz} gzipped", bytes.len());
        total += gz;
    }
    println!("together: {total} bytes gzipped (budget {TRACKER_GZIP_BUDGET})");
    assert!(
        total <= TRACKER_GZIP_BUDGET,
        "the tracker grew to {total} bytes gzipped (budget {TRACKER_GZIP_BUDGET})"
    );
    for name in ["tag", "tag-from-cdn"] {
        let snippet = readme_snippet(name);
        println!("snippet {name}: {} bytes", snippet.len());
        assert!(
            snippet.len() <= SNIPPET_BUDGET,
            "snippet {name} is {} bytes (budget {SNIPPET_BUDGET})",
            snippet.len()
        );
    }
}
