#!/usr/bin/env bash
# Every benchmark figure in one command: the micro benchmarks (divan) and the end-to-end
# harness (both runtimes and the Python original on the same mock servers).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench decode
cargo bench --bench scheduler
cargo run --release -p comfy-proxy-bench --bin e2e "$@"
