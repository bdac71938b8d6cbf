#!/usr/bin/env bash
# Runs siphon's whole test suite: unit tests, and integration tests that
# start their own PostgreSQL clusters, tansu brokers and registry stand-ins
# on loopback. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Each integration test runs a PostgreSQL cluster, a broker and siphon:
# two at a time fit a 2-core machine.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --locked "$@"
