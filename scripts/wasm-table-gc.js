// Drops the function-table slots nothing can reach from wasm-bindgen's output, so that wasm-opt
// can then remove the functions only those slots kept: run by scripts/build-tracker.sh between
// wasm-bindgen and wasm-opt, on the module as text (binaryen's wasm-dis / wasm-as).
//
// Why: rustc links into the table every function whose address is taken anywhere, and before
// wasm-bindgen runs that includes its `__wbindgen_describe_*` exports, one for every import of
// js-sys and wasm-bindgen whether the tracker calls it or not. Those describe the closure shims
// of every closure-taking import (about 50 `invoke` shims), js-sys's JSPI task waker and a few
// `Display` impls. wasm-bindgen removes the describe functions but not their table slots, and
// wasm-opt keeps everything a table holds. The JavaScript never reads the table (it is not
// exported: closures are called through exports), so a slot matters only if the Wasm code can
// name its index.
//
// How: the tracker is linked with its table at an unusual base (`--table-base`, set in
// build-tracker.sh), so a function pointer is a number that seldom occurs by chance. A table
// index reaches the code only through a relocation, so every use of slot N is the number N
// verbatim: an `i32.const N` in a function or global, or four little-endian bytes N in a data
// segment (vtables, closures' function pointers). A slot whose number occurs nowhere is pointed
// at a function that traps. The test is conservative: a number that occurs by chance keeps its
// slot. Run it before wasm-opt, whose folding could turn a pointer into arithmetic.
//
// One kind of use is not counted: a constant in a trap-only function, one that cannot return
// (its body ends in `unreachable`, without a `return`) and makes no indirect call and no call
// to an import, nor does anything it calls. Those are core's and alloc's panic paths (bounds
// checks, `Vec::remove`, allocation failure): they write the `Display` functions of the panic
// message's arguments into their stack frame, then call `panic_fmt`, which calls the
// tracker's panic handler, which traps without reading them. Nothing can call through such a
// pointer before the trap (no indirect call runs), nor after it (Rust code never reads a stack
// slot it has not written). Were that ever wrong, a call through the pointer would trap at
// the slot's trapping function; it could never run another function. This is what drops
// `core::fmt` from the Wasm, which a stable toolchain cannot do otherwise (nightly's
// `panic_immediate_abort`).
//
// Usage: node wasm-table-gc.js IN.wat OUT.wat TABLE_BASE
'use strict';

const fs = require('fs');

const [input, output, baseArg] = process.argv.slice(2);
const base = Number(baseArg);
if (!input || !output || !Number.isInteger(base) || base < 1) {
    console.error('usage: node wasm-table-gc.js IN.wat OUT.wat TABLE_BASE');
    process.exit(2);
}

const lines = fs.readFileSync(input, 'utf8').split('\n');
const elemAt = lines.flatMap((line, i) => (line.startsWith(' (elem ') ? [i] : []));
if (elemAt.length !== 1) {
    console.error(`wasm-table-gc: expected one elem segment, found ${elemAt.length}`);
    process.exit(1);
}
const elem = /^ \(elem \(i32\.const (\d+)\) ((?:\$\S+ ?)+)\)$/.exec(lines[elemAt[0]]);
if (!elem || Number(elem[1]) !== base) {
    console.error(`wasm-table-gc: the elem segment does not start at the table base ${base}`);
    process.exit(1);
}
const slots = elem[2].trim().split(' ');
const used = new Set();
const note = (n) => {
    if (n >= base && n < base + slots.length) used.add(n - base);
};

// The bytes of a data segment's string as binaryen writes it.
function bytesOf(text) {
    const out = [];
    const named = { t: 9, n: 10, r: 13, '"': 34, "'": 39, '\\': 92 };
    for (let i = 0; i < text.length; ) {
        if (text[i] !== '\\') {
            out.push(...Buffer.from(text[i], 'utf8'));
            i += 1;
        } else if (text[i + 1] in named) {
            out.push(named[text[i + 1]]);
            i += 2;
        } else if (/^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
            out.push(parseInt(text.slice(i + 1, i + 3), 16));
            i += 3;
        } else {
            throw new Error(`wasm-table-gc: unknown escape in a data segment: ${text.slice(i, i + 4)}`);
        }
    }
    return Buffer.from(out);
}

// Functions: where each one's lines are, and what it calls.
const imports = new Set();
const funcs = new Map();
for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const imported = /^ \(import "[^"]*" "[^"]*" \(func (\$[^\s)]+)/.exec(line);
    if (imported) {
        imports.add(imported[1]);
        continue;
    }
    const head = /^ \(func (\$[^\s)]+)/.exec(line);
    if (!head) {
        continue;
    }
    // Names and code hold no string literals, and binaryen escapes parentheses in names (`\28`),
    // so the function ends where its parentheses balance, and a name ends at a space or `)`.
    let depth = 0;
    let end = i;
    for (; end < lines.length; end += 1) {
        for (const c of lines[end]) {
            depth += c === '(' ? 1 : c === ')' ? -1 : 0;
        }
        if (depth === 0) {
            break;
        }
    }
    const body = lines.slice(i + 1, end);
    const text = body.join('\n');
    // The last expression at the top level of the body (indented by two spaces).
    const last = body.filter((l) => /^  \(/.test(l)).pop();
    funcs.set(head[1], {
        from: i,
        to: end,
        calls: new Set([...text.matchAll(/\(call (\$[^\s)]+)/g)].map((m) => m[1])),
        indirect: /\bcall_indirect\b/.test(text),
        // (`return` and `return_call` alike; no other way out of a body whose last expression
        // traps: a `br` names a block inside it.)
        diverges: end > i + 1 && last === '  (unreachable)' && lines[end] === ' )' && !/\(return/.test(text),
    });
    i = end;
}
// Functions that may make an indirect call or call out to JavaScript, themselves or through a
// function they call.
const reaching = new Set([...funcs].filter(([, f]) => f.indirect).map(([name]) => name));
for (let grew = true; grew; ) {
    grew = false;
    for (const [name, f] of funcs) {
        if (!reaching.has(name) && [...f.calls].some((c) => imports.has(c) || reaching.has(c))) {
            reaching.add(name);
            grew = true;
        }
    }
}
const trapOnly = new Set();
let trapOnlyFuncs = 0;
for (const [name, f] of funcs) {
    if (f.diverges && !reaching.has(name)) {
        trapOnlyFuncs += 1;
        for (let i = f.from; i <= f.to; i += 1) {
            trapOnly.add(i);
        }
    }
}

lines.forEach((line, i) => {
    if (i === elemAt[0] || trapOnly.has(i)) {
        return;
    }
    if (line.startsWith(' (data ')) {
        const bytes = bytesOf(line.slice(line.indexOf('"') + 1, line.lastIndexOf('"')));
        for (let at = 0; at + 4 <= bytes.length; at += 1) {
            note(bytes.readUInt32LE(at));
        }
        return;
    }
    for (const m of line.matchAll(/\bi32\.const (\d+)\)/g)) {
        note(Number(m[1]));
    }
});

const dead = '$wasm_table_gc_dead_slot';
const kept = slots.map((name, i) => (used.has(i) ? name : dead));
lines[elemAt[0]] =
    ` (elem (i32.const ${base}) ${kept.join(' ')})\n` + ` (func ${dead}\n  (unreachable)\n )`;
fs.writeFileSync(output, lines.join('\n'));
console.log(
    `wasm-table-gc: ${slots.length - used.size} of ${slots.length} table slots unreachable ` +
        `(${trapOnlyFuncs} trap-only functions)`,
);
