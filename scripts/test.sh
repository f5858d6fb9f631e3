#!/usr/bin/env bash
# Runs the whole test suite from a fresh machine: installs what the tests need, builds the Wasm
# tracker and the gateway, checks formatting and lints, then runs every test (unit, integration,
# headless Chromium end-to-end, crash).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/build-tracker.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Apart: the tracker builds the protocol without `std` (its Wasm is `no_std`); one command would
# unify the protocol's features and put std (and a second panic handler) in the tracker's graph.
cargo clippy -p pulse-tracker --target wasm32-unknown-unknown -- -D warnings
cargo clippy -p pulse-protocol --target wasm32-unknown-unknown -- -D warnings
cargo build --workspace --bins
cargo test --workspace
