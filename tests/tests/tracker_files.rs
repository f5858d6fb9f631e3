//! The tracker as the gateway binary serves it: embedded at build time (no `tracker_dir`), under
//! the stable names tags use (short cache, ETag, 304) and under content-hashed immutable names,
//! gzipped for clients that take it; the bytes are those `scripts/build-tracker.sh` built, with
//! the script pointed at the hashed Wasm.

use std::io::Read;

use pulse_e2e::{GatewayProcess, agent, demo_config, workspace_root};

/// One answer: status, the headers this test reads, and the body as sent.
struct Got {
    status: u16,
    header: std::collections::HashMap<String, String>,
    body: Vec<u8>,
}

fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap();
    Got {
        status: resp.status().as_u16(),
        header,
        body,
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// `'pulse_bg.<hash>.wasm'` as the served script names it.
fn wasm_name(script: &str) -> String {
    let at = script
        .find("'pulse_bg.")
        .expect("the script names its Wasm");
    script[at + 1..]
        .chars()
        .take_while(|c| *c != '\'')
        .collect()
}

#[test]
fn the_embedded_tracker_is_served_compressed_under_hashed_immutable_names() {
    let built = workspace_root().join("target/pulse-tracker");
    let js_built =
        std::fs::read_to_string(built.join("pulse.js")).expect("run scripts/build-tracker.sh");
    let wasm_built = std::fs::read(built.join("pulse_bg.wasm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // demo_config names no tracker_dir: the embedded copy is served.
    let gw = GatewayProcess::start(
        &demo_config(dir.path()),
        &dir.path().join("data"),
        "127.0.0.1:0",
    );

    // The stable name, plain: the built script, loading the Wasm by its content-hashed name.
    let plain = get(&format!("{}/pulse.js", gw.url), &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(plain.header["cache-control"], "public, max-age=300");
    assert_eq!(plain.header["vary"], "accept-encoding");
    assert_eq!(plain.header["access-control-allow-origin"], "*");
    assert!(!plain.header.contains_key("content-encoding"));
    let script = String::from_utf8(plain.body.clone()).unwrap();
    let wasm = wasm_name(&script);
    assert!(
        wasm.len() == "pulse_bg..wasm".len() + 16 && wasm != "pulse_bg.wasm",
        "{wasm}"
    );
    assert_eq!(
        script,
        js_built.replace(
            "var wasmFile = 'pulse_bg.wasm';",
            &format!("var wasmFile = '{wasm}';")
        ),
        "the served script is the built one, with the Wasm's hashed name"
    );

    // The same, gzipped, for a client that takes gzip.
    let packed = get(
        &format!("{}/pulse.js", gw.url),
        &[("accept-encoding", "gzip, deflate, br")],
    );
    assert_eq!(packed.status, 200);
    assert_eq!(packed.header["content-encoding"], "gzip");
    assert_eq!(packed.header["vary"], "accept-encoding");
    assert!(
        packed.body.len() < plain.body.len() / 2,
        "{} bytes",
        packed.body.len()
    );
    assert_eq!(gunzip(&packed.body), plain.body);

    // Revalidation of the stable name: 304 with the tag, in either encoding; a stale tag gets the file.
    for (tag, encoding) in [
        (&plain.header["etag"], None),
        (&packed.header["etag"], Some("gzip")),
    ] {
        let mut headers = vec![("if-none-match", tag.as_str())];
        headers.extend(encoding.map(|e| ("accept-encoding", e)));
        let again = get(&format!("{}/pulse.js", gw.url), &headers);
        assert_eq!(again.status, 304, "{tag}");
        assert!(again.body.is_empty());
        assert_eq!(&again.header["etag"], tag);
        assert_eq!(again.header["cache-control"], "public, max-age=300");
    }
    let stale = get(
        &format!("{}/pulse.js", gw.url),
        &[("if-none-match", "\"0123\"")],
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, plain.body);

    // The Wasm by its hashed name: the built bytes, immutable, gzipped when asked.
    let immutable = "public, max-age=31536000, immutable";
    let w = get(
        &format!("{}/{wasm}", gw.url),
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(w.status, 200);
    assert_eq!(w.header["content-type"], "application/wasm");
    assert_eq!(w.header["cache-control"], immutable);
    assert_eq!(w.header["content-encoding"], "gzip");
    assert_eq!(w.header["access-control-allow-origin"], "*");
    assert_eq!(w.header["cross-origin-resource-policy"], "cross-origin");
    assert_eq!(gunzip(&w.body), wasm_built);
    let w = get(&format!("{}/{wasm}", gw.url), &[]);
    assert_eq!(w.body, wasm_built);
    // The old name still answers (pages and CDN copies made before hashed names).
    let old = get(&format!("{}/pulse_bg.wasm", gw.url), &[]);
    assert_eq!(
        (old.status, &old.header["cache-control"][..]),
        (200, "public, max-age=300")
    );
    assert_eq!(old.body, wasm_built);

    // The script by its hashed name (from the ETag's hash): the same bytes, immutable.
    let js_hash = plain.header["etag"].trim_matches('"').to_owned();
    let hashed = get(&format!("{}/pulse.{js_hash}.js", gw.url), &[]);
    assert_eq!(hashed.status, 200);
    assert_eq!(hashed.header["cache-control"], immutable);
    assert_eq!(hashed.body, plain.body);

    // Another build's hashed name is not this build's file.
    let other = get(&format!("{}/pulse_bg.0123456789abcdef.wasm", gw.url), &[]);
    assert_eq!(other.status, 404);
    gw.stop();
}
