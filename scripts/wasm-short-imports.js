// Gives the Wasm's imports short names, in the module (as text) and in wasm-bindgen's
// JavaScript that supplies them: run by scripts/build-tracker.sh after wasm-table-gc.js.
//
// Why: wasm-bindgen names every import after the Rust function and a 16-digit hash
// (`__wbg_get_unchecked_e6325ad374eff861`) under the module `./pulse_bg.js`, and each name is
// written twice, once in the Wasm's import section and once as a key of the imports object in
// `pulse.js`. The hashes do not compress: 1.5 KB of what a reader downloads, gzipped.
// Nothing else reads the names: the JavaScript passes the object to `WebAssembly.instantiate`
// and never looks a key up by name (each key is checked to occur exactly once).
//
// Usage: node wasm-short-imports.js IN.wat OUT.wat PULSE.js   (PULSE.js is rewritten in place)
'use strict';

const fs = require('fs');

const [input, output, script] = process.argv.slice(2);
if (!input || !output || !script) {
    console.error('usage: node wasm-short-imports.js IN.wat OUT.wat PULSE.js');
    process.exit(2);
}
const fail = (why) => {
    console.error(`wasm-short-imports: ${why}`);
    process.exit(1);
};

const MODULE = './pulse_bg.js';
const SHORT_MODULE = 'w';
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// Short names: a, b, …, z, A, …, Z, then two letters.
const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const shortName = (i) =>
    i < letters.length ? letters[i] : letters[Math.floor(i / letters.length) - 1] + letters[i % letters.length];

let js = fs.readFileSync(script, 'utf8');
let count = 0;
const wat = fs
    .readFileSync(input, 'utf8')
    .split('\n')
    .map((line) => {
        const m = /^ \(import "([^"]*)" "([^"]*)" /.exec(line);
        if (!m) return line;
        if (m[1] !== MODULE) fail(`an import from another module: ${line.trim()}`);
        const short = shortName(count);
        count += 1;
        // The key as terser writes it in the imports object: after `{` or `,`, before `:`.
        const key = new RegExp(`([{,])${escape(m[2])}:`, 'g');
        const found = js.match(key) || [];
        if (found.length !== 1) fail(`import ${m[2]} is a key ${found.length} times in ${script}`);
        if (js.split(m[2]).length !== 2) fail(`import ${m[2]} is named elsewhere in ${script}`);
        js = js.replace(key, `$1${short}:`);
        return line.replace(`(import "${MODULE}" "${m[2]}" `, `(import "${SHORT_MODULE}" "${short}" `);
    });
if (count === 0) fail(`no imports in ${input}`);
const moduleKey = JSON.stringify(MODULE);
if (js.split(moduleKey).length !== 2) fail(`${moduleKey} is not named exactly once in ${script}`);
js = js.replace(moduleKey, SHORT_MODULE);

fs.writeFileSync(output, wat.join('\n'));
fs.writeFileSync(script, js);
console.log(`wasm-short-imports: ${count} imports renamed`);
