#!/usr/bin/env bash
# Builds the browser tracker into target/pulse-tracker/{pulse.js,pulse_bg.wasm}: the folder the
# gateway's build embeds (gateway/build.rs; build the gateway after this script), and what
# server.tracker_dir may name. Run from the repository root.
set -euo pipefail

target_dir="${CARGO_TARGET_DIR:-target}"
out_dir="target/pulse-tracker"
tmp_dir="target/pulse-tracker.new"

for tool in wasm-opt wasm-dis wasm-as; do
    command -v "$tool" >/dev/null || { echo "build-tracker: $tool not found (Debian's binaryen): run scripts/setup.sh" >&2; exit 1; }
done
terser="$target_dir/tracker-node/node_modules/terser/bin/terser"
[ -f "$terser" ] && command -v node >/dev/null \
    || { echo "build-tracker: terser not found in $target_dir/tracker-node: run scripts/setup.sh" >&2; exit 1; }

# Without Wasm reference types (on by default since Rust 1.82): wasm-bindgen then keeps the page's
# objects in a JavaScript array instead of an externref table, which is smaller, and which
# Debian's wasm-opt (binaryen 108) handles (it broke the externref table: see below). Appended to
# RUSTFLAGS, which only the wasm32 target's crates see here (`--target`).
#
# --table-base: the function table starts at an unusual index, so that a function pointer is a
# number that seldom occurs by chance, for scripts/wasm-table-gc.js below (which needs it). Low
# enough that the table stays small (about 2,000 slots, nearly all empty: the browser holds
# them); a base where a pointer's number occurs by chance only costs the bytes that slot keeps.
table_base=1873
# The source paths panic locations keep in the data (a panic traps, but the locations stay):
# the crate registry's folder mapped out of them, so no path of the machine that built it is in
# what readers download (and 0.07 KB less). core's own paths (`/rustc/<commit>/library/...`)
# come precompiled and stay.
remap=""
for index in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
    if [ -d "$index" ]; then
        remap="$remap --remap-path-prefix=$index="
    fi
done
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=-reference-types -C link-arg=--table-base=$table_base $remap" \
    cargo build -p pulse-tracker --lib --target wasm32-unknown-unknown --profile wasm
rm -rf "$tmp_dir"
# --omit-default-module-path: the bootstrap below always names the Wasm; --encode-into always:
# strings go to the Wasm by TextEncoder.encodeInto, without the fallback (every browser that
# runs Wasm modules like this one has it).
wasm-bindgen --target no-modules --no-typescript --remove-name-section --remove-producers-section \
    --omit-default-module-path --encode-into always \
    --out-name pulse --out-dir "$tmp_dir" "$target_dir/wasm32-unknown-unknown/wasm/pulse_tracker.wasm"

# wasm-bindgen's JavaScript minified by terser (pinned in tracker/minify, installed by
# scripts/setup.sh under the target folder): a reader downloads every byte, and terser's output
# is about 800 bytes smaller gzipped than the same text without comments and indentation. Only
# local names are shortened: the import names the Wasm calls are properties, kept as they are.
node "$terser" "$tmp_dir/pulse.js" --compress --mangle -o "$tmp_dir/pulse.min.js"
mv "$tmp_dir/pulse.min.js" "$tmp_dir/pulse.js"

# The table slots nothing in the Wasm can name (those wasm-bindgen's describe functions left:
# the closure shims of every closure-taking js-sys import, a JSPI waker; and the `Display`
# functions only core's trapping panic paths name) pointed at one trapping function, so that
# wasm-opt drops what they kept: 1.6 KB gzipped, core::fmt among it. The script's head says why
# this is sound. wasm-dis and wasm-as come with wasm-opt (binaryen).
wasm_features="--enable-bulk-memory --enable-sign-ext --enable-mutable-globals
    --enable-nontrapping-float-to-int --enable-multivalue"
# shellcheck disable=SC2086 # the feature list is split on purpose
wasm-dis $wasm_features "$tmp_dir/pulse_bg.wasm" -o "$tmp_dir/pulse_bg.wat"
node scripts/wasm-table-gc.js "$tmp_dir/pulse_bg.wat" "$tmp_dir/pulse_bg.gc.wat" "$table_base"
# The imports' names (wasm-bindgen's, each with a 16-digit hash, in the Wasm and in pulse.js)
# made one or two letters in both: 1.5 KB gzipped.
node scripts/wasm-short-imports.js "$tmp_dir/pulse_bg.gc.wat" "$tmp_dir/pulse_bg.short.wat" "$tmp_dir/pulse.js"
# shellcheck disable=SC2086
wasm-as $wasm_features "$tmp_dir/pulse_bg.short.wat" -o "$tmp_dir/pulse_bg.wasm"
rm "$tmp_dir/pulse_bg.wat" "$tmp_dir/pulse_bg.gc.wat" "$tmp_dir/pulse_bg.short.wat"

# wasm-opt for size. With reference types on, Debian's binaryen (108) broke wasm-bindgen
# 0.2.130's output (its externref table became a funcref table: "WebAssembly.Table.set():
# function-typed object must be null" in Chromium); without them there is no such table. The
# features listed are the ones rustc's default wasm32 target uses besides reference types;
# wasm-opt refuses (and this script stops) on a module that needs another. Flattening and
# re-looping before -Oz, twice to a fixed point, saved 0.8 KB gzipped over a plain -Os, and
# merging functions that differ only in constants first 0.13 KB more; --low-memory-unused lets
# it fold constant addresses (rustc's code never uses the first 1,024 bytes: they are the far
# end of the 1 MiB stack).
# shellcheck disable=SC2086
wasm-opt --low-memory-unused --merge-similar-functions --flatten --rereloop -Oz -Oz --converge \
    $wasm_features "$tmp_dir/pulse_bg.wasm" -o "$tmp_dir/pulse_bg.opt.wasm"
mv "$tmp_dir/pulse_bg.opt.wasm" "$tmp_dir/pulse_bg.wasm"

# Bootstrap: load the Wasm from beside pulse.js, wherever that is served from (the gateway, a
# CDN folder), under whatever name the script has: the last path segment of the script's URL
# (its own file name) replaced, a query kept. The script URL must be read synchronously while
# this file runs (currentScript is null afterwards); it is left on the `pulse` stub (made here
# when a page loads the script without the snippet) as `pulse.src`, where the tracker finds its
# default endpoint. Two helpers cost less written here than the same in the Wasm:
# `pulse.s(url, body, keepalive, f)` POSTs a batch and calls `f(status, retryAfter, answer)`
# (the answer as parsed JSON, if it is), or `f(0)` when no answer came; `pulse.d(url, f)`
# fetches a dictionary and gives `f` its bytes in hex, nothing on failure. The gateway's build rewrites the wasmFile line (exactly this text) to the
# Wasm's content-hashed name. Written without comments or indentation: readers download it.
cat >>"$tmp_dir/pulse.js" <<'JS'
;(function () {
var wasmFile = 'pulse_bg.wasm';
var script = document.currentScript;
var src = script && script.src ? script.src : '/pulse.js';
var w = window, p = w.pulse = w.pulse || function () { (p.q = p.q || []).push(arguments) };
p.src = src;
p.s=(u,b,k,f)=>fetch(u,{method:'POST',body:b,keepalive:k,credentials:'omit',mode:'cors'}).then(r=>r.text().then(t=>{var a;try{a=JSON.parse(t)}catch(e){}return[r.status,r.headers.get('retry-after'),a]})).then(x=>f(...x),()=>f(0));
p.d=(u,f)=>fetch(u,{credentials:'omit'}).then(r=>r.ok&&r.arrayBuffer()).then(b=>b&&f(Array.from(new Uint8Array(b),x=>(x|256).toString(16).slice(1)).join('')),()=>0);
var warn = function (e) { console.warn('pulse: could not load the tracker', e) };
try {
Promise.resolve(wasm_bindgen({ module_or_path: src.replace(/[^\/?#]*(?=[?#]|$)/, wasmFile) })).catch(warn);
} catch (e) { warn(e) }
})();
JS

# Replace only what changed, each file at once: a new modification time makes the next cargo
# build embed the tracker again (and rebuild the gateway).
mkdir -p "$out_dir"
for f in pulse.js pulse_bg.wasm; do
    if cmp -s "$tmp_dir/$f" "$out_dir/$f"; then
        rm "$tmp_dir/$f"
    else
        mv "$tmp_dir/$f" "$out_dir/$f"
    fi
done
rm -rf "$tmp_dir"

for f in pulse.js pulse_bg.wasm; do
    raw=$(wc -c <"$out_dir/$f")
    gz=$(gzip -9 -c "$out_dir/$f" | wc -c)
    printf '%-14s %8d bytes raw %8d bytes gzip -9\n' "$f" "$raw" "$gz"
done
