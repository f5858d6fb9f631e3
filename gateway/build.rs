//! Embeds the built tracker (`scripts/build-tracker.sh` writes `target/pulse-tracker/pulse.js`
//! and `pulse_bg.wasm`; `PULSE_TRACKER_DIR` names another folder) in the gateway, named by
//! content hashes and gzipped once here (`src/statics/prepare.rs`, shared with run-time
//! serving). Without a built tracker the gateway still builds, says so here, and answers
//! `/pulse.js` with "the tracker is not built".

// The gateway uses all of it at run time (tracker_dir); this script, what it embeds.
#[allow(dead_code)]
#[path = "src/statics/prepare.rs"]
mod prepare;

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PULSE_TRACKER_DIR");
    let dir = match std::env::var_os("PULSE_TRACKER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pulse-tracker"),
    };
    // Watch the folder, not the two files: cargo counts a missing watched file as changed and
    // would rebuild the gateway on every build until the tracker is built. An empty folder is
    // watched fine and build-tracker.sh fills it, so make one (the target folder is ours).
    let _ = std::fs::create_dir_all(&dir);
    println!("cargo:rerun-if-changed={}", dir.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let code = match embed(&dir, &out) {
        Ok(code) => code,
        Err(why) => {
            println!(
                "cargo:warning=no tracker embedded ({why}): this gateway answers /pulse.js with 404 'the tracker is not built' unless server.tracker_dir names a built one; run scripts/build-tracker.sh, then build the gateway again"
            );
            "None".to_owned()
        }
    };
    std::fs::write(out.join("tracker.rs"), code).expect("write OUT_DIR/tracker.rs");
}

/// Writes the prepared files into `out` and returns the Rust expression that includes them.
fn embed(dir: &Path, out: &Path) -> Result<String, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let js = read("pulse.js")?;
    let wasm = read("pulse_bg.wasm")?;
    // The best compression: it is paid once per build, and every reader downloads the result.
    let p = prepare::prepare(&js, wasm, 9).map_err(|e| format!("gzip: {e}"))?;
    if !p.linked {
        println!(
            "cargo:warning=pulse.js has no line {:?} (built by an older scripts/build-tracker.sh?): it loads pulse_bg.wasm by that name, not by its hash",
            prepare::WASM_FILE_LINE
        );
    }
    let mut fields = Vec::new();
    for (name, bytes) in [
        ("js", &p.js),
        ("js_gzip", &p.js_gzip),
        ("wasm", &p.wasm),
        ("wasm_gzip", &p.wasm_gzip),
    ] {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        fields.push(format!(
            "{name}: include_bytes!({:?}),",
            path.display().to_string()
        ));
    }
    Ok(format!(
        "Some(Embedded {{ {} js_hash: {:?}, wasm_hash: {:?}, }})",
        fields.concat(),
        p.js_hash,
        p.wasm_hash,
    ))
}
