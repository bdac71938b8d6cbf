#!/usr/bin/env bash
# Runs siphon's whole test suite: unit tests, integration tests that start
# their own PostgreSQL clusters, tansu brokers and registry stand-ins on
# loopback, and the Helm chart checks. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Each integration test runs a PostgreSQL cluster, a broker and siphon:
# two at a time fit a 2-core machine.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
# `failpoints` compiles in the fail points that tests/faults.rs arms to
# crash siphon at each step of the exactly-once protocol (src/failpoint.rs);
# release builds and the Docker image never have it.
cargo test --locked --features failpoints "$@"
# The Helm chart: lint and render with Helm's real engine for every values
# scenario, validate against Kubernetes schemas, assert what matters.
scripts/check-chart.sh
