#!/usr/bin/env bash
# Runs Pulse on its embedded default: the gateway with the scorer in-process, the embedded store
# in ./data, the tracker and the demo site at http://127.0.0.1:8080/. Extra arguments go to the
# gateway (for example --listen 0.0.0.0:9000 or --data /tmp/pulse).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-tracker.sh
cargo build --release -p pulse-gateway --bin gateway
exec target/release/gateway --config examples/pulse.toml "$@"
