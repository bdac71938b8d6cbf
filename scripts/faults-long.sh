#!/usr/bin/env bash
# The long fault run (docs/reliability.md): SIGKILLs and every other fault
# of tests/faults.rs many times under a sustained workload, then one check
# that a read_committed consumer got every change exactly once, in per-key
# order, and that every final row equals the table.
#
# Knobs (environment):
#   FAULTS_KILLS    SIGKILLs at random moments             (default 200)
#   FAULTS_EACH     times each other fault is injected      (default 10)
#   FAULTS_CHANGES  changes the workload makes at least     (default 5000000)
#   FAULTS_SEED     seed of the fault order and workload    (default random, printed)
#   FAULTS_PAUSE_MS pause between small transactions, ms    (default 5)
#   FAULTS_BROKER_RESTARTS  broker restarts, in a second run (default 10)
#   BIGTX_ROWS      rows of the one huge transaction        (default 10000000)
#   BIGTX_KILLS     SIGKILLs in the middle of it            (default 3)
# The first run injects every fault but the broker restart; the second
# restarts the broker (its log in S3, which is slow, so that run has no
# volume target) FAULTS_BROKER_RESTARTS times. Each prints its figures on
# the line starting with "FAULTS long:". The third streams one huge
# transaction, killing siphon in the middle of it, and prints "BIGTX long:".
# Everything runs in the release profile (siphon with its fail points
# compiled in, the harness and the proxy fast enough for millions of
# changes); arguments go to each test binary (e.g. --test-threads).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export FAULTS_KILLS="${FAULTS_KILLS:-200}"
export FAULTS_EACH="${FAULTS_EACH:-10}"
export FAULTS_CHANGES="${FAULTS_CHANGES:-5000000}"
start=$(date +%s)
test=(cargo test --release --locked --features failpoints)
"${test[@]}" --test faults long_run -- --ignored --nocapture "$@"
FAULTS_KILLS=0 FAULTS_CHANGES=0 FAULTS_ONLY=broker_restart FAULTS_EACH="${FAULTS_BROKER_RESTARTS:-10}" \
  "${test[@]}" --test faults long_run -- --ignored --nocapture "$@"
"${test[@]}" --test bigtx huge_transaction_survives_repeated_sigkills -- --ignored --nocapture "$@"
echo "faults-long: finished in $(( $(date +%s) - start ))s"
