#!/usr/bin/env bash
# Runs siphon's whole test suite: unit tests, integration tests that start
# their own PostgreSQL clusters, tansu brokers and registry stand-ins on
# loopback, and the Helm chart checks. Installs what is missing first.
#
# Without arguments: builds once, then runs the whole suite on PostgreSQL 15
# (with the reference consumers' tests, consumers/tests) and the core set
# (CORE below) on each of PostgreSQL 16, 17 and 18, at most two version
# sets at a time (SIPHON_TEST_LANES), each set's output in its
# own log printed when it ends, and each set's time at the end; then the
# Helm chart checks.
#
# With arguments: `cargo test` with them on one server version,
# SIPHON_TEST_PG (15 when unset), e.g.
#   SIPHON_TEST_PG=17 scripts/test.sh --test e2e
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Each integration test runs a PostgreSQL cluster, a broker and siphon:
# two at a time per version set.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
# `failpoints` compiles in the fail points that tests/faults.rs arms to
# crash siphon at each step of the exactly-once protocol (src/failpoint.rs);
# release builds and the Docker image never have it.
CARGO_TEST=(cargo test --locked --features failpoints)

if [ $# -gt 0 ]; then
  echo "test: PostgreSQL ${SIPHON_TEST_PG:-15}: ${CARGO_TEST[*]} $*" >&2
  exec "${CARGO_TEST[@]}" "$@"
fi

# The integration tests every newer server version runs: end to end, the
# short fault run, snapshots, types, table shapes (partitioned, keyless, …),
# schema evolution, the version-specific
# tests, the replication protocol client and error classification.
CORE=(e2e faults snapshot types evolution shapes versions replication errors)
NEWER=(16 17 18)
LANES="${SIPHON_TEST_LANES:-2}"

# Build once; the newer versions' sets run the built test binaries
# directly (no cargo, so no waiting on its build-directory lock while the
# PostgreSQL 15 set runs under `cargo test`).
start=$(date +%s)
"${CARGO_TEST[@]}" --no-run
# The reference consumers (consumers/, a workspace member; their tests run
# the siphon binary built just above).
CONSUMERS_TEST=(cargo test --locked -p siphon-consumers)
"${CONSUMERS_TEST[@]}" --no-run
declare -A exe
while IFS=' ' read -r name path; do
  exe[$name]=$path
done < <("${CARGO_TEST[@]}" --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"]:
        print(t["name"], m["executable"])
')
for name in "${CORE[@]}"; do
  [ -n "${exe[$name]:-}" ] || { echo "test: no test binary for tests/$name.rs" >&2; exit 1; }
done
echo "test: build: $(( $(date +%s) - start ))s" >&2

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# One version set, output to its log; records status and time.
run_set() {
  local major=$1 log="$logs/pg$1.log" t0 rc=0
  t0=$(date +%s)
  if [ "$major" = 15 ]; then
    SIPHON_TEST_PG=15 "${CARGO_TEST[@]}" --no-fail-fast >"$log" 2>&1 || rc=$?
    SIPHON_TEST_PG=15 "${CONSUMERS_TEST[@]}" >>"$log" 2>&1 || rc=$?
  else
    for name in "${CORE[@]}"; do
      echo "== PostgreSQL $major: tests/$name.rs" >>"$log"
      SIPHON_TEST_PG=$major "${exe[$name]}" >>"$log" 2>&1 || rc=$?
    done
  fi
  echo "$rc $(( $(date +%s) - t0 ))" >"$logs/pg$major.result"
  echo "test: PostgreSQL $major: finished (exit $rc) in $(( $(date +%s) - t0 ))s" >&2
}

sets=(15 "${NEWER[@]}")
running=0
for major in "${sets[@]}"; do
  if [ "$running" -ge "$LANES" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  echo "test: PostgreSQL $major: started" >&2
  run_set "$major" &
  running=$((running + 1))
done
wait

failed=0
for major in "${sets[@]}"; do
  echo "================ PostgreSQL $major ================"
  cat "$logs/pg$major.log"
done
echo "================ summary ================"
for major in "${sets[@]}"; do
  rc=unknown secs=?
  [ -f "$logs/pg$major.result" ] && read -r rc secs <"$logs/pg$major.result"
  what=$([ "$major" = 15 ] && echo "whole suite" || echo "core set: ${CORE[*]}")
  if [ "$rc" = 0 ]; then status=ok; else status="FAILED (exit $rc)"; failed=1; fi
  echo "test: PostgreSQL $major ($what): $status in ${secs}s"
done
[ "$failed" = 0 ] || exit 1

# The Helm chart: lint and render with Helm's real engine for every values
# scenario, validate against Kubernetes schemas, assert what matters.
scripts/check-chart.sh
