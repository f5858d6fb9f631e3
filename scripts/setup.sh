#!/usr/bin/env bash
# Installs what building (and, with --test, testing) Pulse needs, skipping what is present:
# the wasm32 target, wasm-bindgen-cli at the version in Cargo.lock, Debian's binaryen (wasm-opt,
# for the tracker's build), Node.js with terser from npm (the tracker's pulse.js), OpenSSL's
# headers and pkg-config (Debian's libssl-dev, pkg-config: librdkafka's TLS and SASL), and for
# tests Debian's
# chromium and chromium-driver, Debian's prometheus (for promtool), in a venv under the target
# folder DuckDB from PyPI (the analysis example's test), and Node.js with Segment's
# @segment/analytics-node from npm (the Segment door's test). Fails loudly, with the reason, when something cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup first)"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown || die "cannot add the wasm32 target (is rustup reachable?)"
fi

# The Kafka client (librdkafka, built from source) links the system's OpenSSL for TLS and SASL,
# found with pkg-config.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl 2>/dev/null; then
    need=()
    command -v pkg-config >/dev/null || need+=(pkg-config)
    need+=(libssl-dev)
    say "installing ${need[*]} (Debian packages): the Kafka client links OpenSSL for TLS and SASL"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v apt-get >/dev/null || die "apt-get not found: install OpenSSL's headers and pkg-config by hand (${need[*]})"
    $sudo apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null \
        || die "cannot install ${need[*]}"
    pkg-config --exists openssl || die "pkg-config still finds no openssl after installing ${need[*]}"
fi

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$want" ] || die "no wasm-bindgen version in Cargo.lock"
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (found '${have:-none}'); this takes several minutes"
    # --locked first; some registry mirrors lack a pinned dependency, then resolve afresh.
    cargo install wasm-bindgen-cli --version "$want" --locked \
        || cargo install wasm-bindgen-cli --version "$want" \
        || die "cannot install wasm-bindgen-cli $want"
fi

# scripts/build-tracker.sh shrinks the Wasm with wasm-opt (Debian's binaryen; tested with 108).
if ! command -v wasm-opt >/dev/null; then
    say "installing binaryen (Debian package) for wasm-opt, which scripts/build-tracker.sh runs"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v apt-get >/dev/null || die "apt-get not found: install binaryen (wasm-opt) by hand"
    $sudo apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq binaryen >/dev/null \
        || die "cannot install binaryen (wasm-opt)"
    command -v wasm-opt >/dev/null || die "binaryen is installed but wasm-opt is not on PATH"
fi

# scripts/build-tracker.sh minifies wasm-bindgen's JavaScript with terser, pinned (with its
# dependencies) in tracker/minify/package-lock.json, installed from npm under the target folder.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing nodejs and npm (Debian packages) for terser, which scripts/build-tracker.sh runs"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v apt-get >/dev/null || die "apt-get not found: install Node.js and npm by hand"
    $sudo apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null \
        || die "cannot install nodejs and npm"
fi
# Installs the npm packages pinned in SRC/package-lock.json into DEST, unless DEST holds that
# lock and MARK: npm_pinned SRC DEST MARK WHAT.
npm_pinned() {
    if ! cmp -s "$1/package-lock.json" "$2/package-lock.json" || [ ! -e "$2/$3" ]; then
        say "installing $4 (npm) into $2"
        rm -rf "$2"
        mkdir -p "$2"
        cp "$1/package.json" "$1/package-lock.json" "$2/"
        (cd "$2" && npm ci --no-audit --no-fund --silent) || die "cannot install $4 from npm into $2"
    fi
}
npm_pinned tracker/minify "${CARGO_TARGET_DIR:-target}/tracker-node" node_modules/terser/bin/terser \
    "terser, for scripts/build-tracker.sh"

if [ "${1:-}" = "--test" ]; then
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} (Debian packages) for the browser tests"
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
        $sudo apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
            || die "cannot install ${missing[*]}"
    fi

    # The metrics test lints /metrics with Prometheus' own promtool (Debian's prometheus
    # package ships it; the server it also installs is not started by the tests).
    if ! command -v promtool >/dev/null; then
        say "installing prometheus (Debian package) for promtool, the metrics test's linter"
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        command -v apt-get >/dev/null || die "apt-get not found: install promtool by hand"
        $sudo apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
            || die "cannot install prometheus (for promtool)"
        # Only promtool is needed: the Prometheus server the package starts under systemd would
        # hold 9090, the gateway's admin port.
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
            say "stopping and disabling the prometheus service the package started (only promtool is used)"
            $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    fi

    # examples/analysis/ reads the logs with DuckDB; its end-to-end test runs the script with
    # the version pinned there, from a venv of its own (tests/tests/analysis.rs finds it).
    venv="${CARGO_TARGET_DIR:-target}/pulse-venv"
    duckdb=$(sed -n 's/^duckdb==//p' examples/analysis/requirements.txt)
    [ -n "$duckdb" ] || die "no duckdb version pinned in examples/analysis/requirements.txt"
    if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$duckdb')" 2>/dev/null; then
        say "installing duckdb $duckdb (PyPI) into $venv for the analysis example's test"
        command -v python3 >/dev/null || die "python3 not found: install Python 3 (Debian: python3 python3-venv)"
        if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            command -v apt-get >/dev/null || die "python3 cannot make a venv: install its venv module"
            say "installing python3-venv (Debian) to make the venv"
            sudo=""
            [ "$(id -u)" = 0 ] || sudo="sudo"
            $sudo apt-get update -qq || die "apt-get update failed"
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null \
                || die "cannot install python3-venv"
            python3 -m venv "$venv" || die "cannot make a venv in $venv"
        fi
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r examples/analysis/requirements.txt \
            || die "cannot install duckdb $duckdb from PyPI into $venv"
    fi

    # tests/tests/segment.rs sends with Segment's own Node.js library, pinned (with its
    # dependencies) in tests/segment/package-lock.json, installed from npm under the target folder.
    # (Node.js and npm are installed above, for the tracker's build.)
    npm_pinned tests/segment "${CARGO_TARGET_DIR:-target}/segment-node" \
        node_modules/@segment/analytics-node "@segment/analytics-node, for the Segment test"
fi
say "ready"
