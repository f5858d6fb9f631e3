//! How the tracker's two files are made ready to serve: each named by a hash of its bytes,
//! `pulse.js` rewritten to load the Wasm by its hashed name, both gzipped once. Shared by the
//! gateway's build script (`gateway/build.rs`, which embeds the tracker in the binary) and by
//! `server.tracker_dir` serving at run time, so both name and compress alike. Pure: bytes in,
//! bytes out.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// The line of `pulse.js`'s bootstrap (appended by `scripts/build-tracker.sh`) that names the
/// Wasm file it loads from beside itself: the one place the name is rewritten.
pub(crate) const WASM_FILE_LINE: &str = "var wasmFile = 'pulse_bg.wasm';";

/// The tracker's files, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// `pulse.js`, loading the Wasm by its hashed name when `linked`.
    pub(crate) js: Vec<u8>,
    /// `js`, gzipped.
    pub(crate) js_gzip: Vec<u8>,
    /// The content hash of `js` (16 hex digits).
    pub(crate) js_hash: String,
    /// `pulse_bg.wasm`, as built.
    pub(crate) wasm: Vec<u8>,
    /// `wasm`, gzipped.
    pub(crate) wasm_gzip: Vec<u8>,
    /// The content hash of `wasm` (16 hex digits).
    pub(crate) wasm_hash: String,
    /// Whether `js` names the hashed Wasm. False for a `pulse.js` without the bootstrap line
    /// (not built by `scripts/build-tracker.sh`): it then loads `pulse_bg.wasm`, still served.
    pub(crate) linked: bool,
}

/// FNV-1a (64 bits) of `bytes` as 16 hex digits. Not a cryptographic hash: a name only has to
/// change when the bytes of our own build change, and this needs no dependency in the build
/// script.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `pulse.<hash>.js`.
pub(crate) fn js_name(hash: &str) -> String {
    format!("pulse.{hash}.js")
}

/// `pulse_bg.<hash>.wasm`.
pub(crate) fn wasm_name(hash: &str) -> String {
    format!("pulse_bg.{hash}.wasm")
}

/// `js` with its bootstrap's Wasm file name replaced by `wasm_file`; none unless the line
/// [`WASM_FILE_LINE`] occurs exactly once.
pub(crate) fn link_wasm(js: &[u8], wasm_file: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(js).ok()?;
    if text.matches(WASM_FILE_LINE).count() != 1 {
        return None;
    }
    let line = format!("var wasmFile = '{wasm_file}';");
    Some(text.replacen(WASM_FILE_LINE, &line, 1).into_bytes())
}

/// `bytes` gzipped at `level` (0–9).
pub(crate) fn gzip(bytes: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::new(level));
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Names, links and compresses the built `pulse.js` and `pulse_bg.wasm`.
pub(crate) fn prepare(js: &[u8], wasm: Vec<u8>, level: u32) -> std::io::Result<Prepared> {
    let wasm_hash = content_hash(&wasm);
    let linked_js = link_wasm(js, &wasm_name(&wasm_hash));
    let linked = linked_js.is_some();
    let js = linked_js.unwrap_or_else(|| js.to_vec());
    Ok(Prepared {
        js_gzip: gzip(&js, level)?,
        js_hash: content_hash(&js),
        js,
        wasm_gzip: gzip(&wasm, level)?,
        wasm_hash,
        wasm,
        linked,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const JS: &str =
        "glue();\n;(function () {\n  var wasmFile = 'pulse_bg.wasm';\n  load(wasmFile);\n})();\n";

    #[test]
    fn the_script_loads_the_wasm_by_its_hash_and_both_are_named_by_their_bytes() {
        let wasm = b"\0asm\x01\0\0\0 the tracker".to_vec();
        let p = prepare(JS.as_bytes(), wasm.clone(), 6).unwrap();
        assert!(p.linked);
        assert_eq!(p.wasm, wasm);
        assert_eq!(p.wasm_hash, content_hash(&wasm));
        let js = String::from_utf8(p.js.clone()).unwrap();
        assert!(
            js.contains(&format!("var wasmFile = 'pulse_bg.{}.wasm';", p.wasm_hash)),
            "{js}"
        );
        assert_eq!(p.js_hash, content_hash(js.as_bytes()));
        assert_eq!(p.js_hash.len(), 16);
        assert!(p.js_hash.bytes().all(|b| b.is_ascii_hexdigit()));
        // A different Wasm is another name, and so another script.
        let other = prepare(JS.as_bytes(), b"\0asm\x01\0\0\0 changed".to_vec(), 6).unwrap();
        assert_ne!(other.wasm_hash, p.wasm_hash);
        assert_ne!(other.js_hash, p.js_hash);
        // The gzipped copies are the same bytes.
        for (plain, packed) in [(&p.js, &p.js_gzip), (&p.wasm, &p.wasm_gzip)] {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(packed.as_slice())
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(&out, plain);
        }
    }

    #[test]
    fn a_script_without_exactly_one_bootstrap_line_is_served_as_it_is() {
        let p = prepare(b"/* tracker */", b"\0asm".to_vec(), 1).unwrap();
        assert!(!p.linked);
        assert_eq!(p.js, b"/* tracker */");
        let twice = format!("{JS}{JS}");
        assert_eq!(link_wasm(twice.as_bytes(), "x.wasm"), None);
        assert_eq!(link_wasm(&[0xff, 0xfe], "x.wasm"), None);
    }

    #[test]
    fn the_hash_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(content_hash(b""), "cbf29ce484222325");
        assert_eq!(content_hash(b"a"), "af63dc4c8601ec8c");
        assert_eq!(content_hash(b"foobar"), "85944171f73967e8");
        assert_eq!(js_name("ab"), "pulse.ab.js");
        assert_eq!(wasm_name("cd"), "pulse_bg.cd.wasm");
    }
}
