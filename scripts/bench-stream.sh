#!/usr/bin/env bash
# Streaming benchmark: siphon next to pg_recvlogical (PostgreSQL's emit
# ceiling) and a raw transactional producer (the broker's), measured in the
# same run. Usage: scripts/bench-stream.sh [--rows N]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -j 2 --bin siphon --example bench_stream
exec target/release/examples/bench_stream "$@"
