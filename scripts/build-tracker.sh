#!/usr/bin/env bash
# Builds the browser tracker into target/pulse-tracker/{pulse.js,pulse_bg.wasm}, the folder the
# gateway serves at /pulse.js and /pulse_bg.wasm. Run from the repository root.
set -euo pipefail

target_dir="${CARGO_TARGET_DIR:-target}"
out_dir="target/pulse-tracker"

cargo build -p pulse-tracker --lib --target wasm32-unknown-unknown --profile wasm
wasm-bindgen --target no-modules --no-typescript --out-name pulse --out-dir "$out_dir" \
    "$target_dir/wasm32-unknown-unknown/wasm/pulse_tracker.wasm"

if command -v wasm-opt >/dev/null 2>&1; then
    wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        -o "$out_dir/pulse_bg.opt.wasm" "$out_dir/pulse_bg.wasm"
    mv "$out_dir/pulse_bg.opt.wasm" "$out_dir/pulse_bg.wasm"
fi

# Bootstrap: load pulse_bg.wasm from beside pulse.js, wherever that is served from. The script
# URL must be read synchronously while this file runs (currentScript is null afterwards).
cat >>"$out_dir/pulse.js" <<'JS'
;(function () {
  var script = document.currentScript;
  var src = script && script.src ? script.src : '/pulse.js';
  var wasm = src.replace(/pulse\.js(?=[?#]|$)/, 'pulse_bg.wasm');
  try {
    Promise.resolve(wasm_bindgen({ module_or_path: wasm })).catch(function (e) {
      console.warn('pulse: could not load the tracker', e);
    });
  } catch (e) {
    console.warn('pulse: could not load the tracker', e);
  }
})();
JS

for f in pulse.js pulse_bg.wasm; do
    raw=$(wc -c <"$out_dir/$f")
    gz=$(gzip -9 -c "$out_dir/$f" | wc -c)
    printf '%-14s %8d bytes raw %8d bytes gzip -9\n' "$f" "$raw" "$gz"
done
