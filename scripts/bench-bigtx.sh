#!/usr/bin/env bash
# Big-transaction benchmark: ONE PostgreSQL transaction of BIGTX_ROWS rows
# (default 10,000,000) through siphon into Kafka, with siphon's peak RSS and
# the pg_recvlogical drain time of the same transaction measured in the same
# run. Usage: BIGTX_ROWS=1000000 scripts/bench-bigtx.sh
# The long-run fault script calls it for "the 10M-row transaction"; it exits
# non-zero if siphon fails or does not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -j 2 --bin siphon --example bench_bigtx
exec target/release/examples/bench_bigtx "$@"
