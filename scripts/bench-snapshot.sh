#!/usr/bin/env bash
# Snapshot benchmark: siphon's initial snapshot of a table next to
# `COPY … TO STDOUT (FORMAT binary)` into /dev/null on the same table, in the
# same run. Usage: scripts/bench-snapshot.sh [--rows N] [--threads N] [--chunk-pages N]
# (defaults 5000000, 4, 256)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -j 2 --bin siphon --example bench_snapshot
exec target/release/examples/bench_snapshot "$@"
