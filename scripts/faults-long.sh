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
#   FAULTS_BROKER_RESTARTS  broker restarts per broker run  (default 10)
#   BIGTX_ROWS      rows of the one huge transaction        (default 10000000)
#   BIGTX_KILLS     SIGKILLs in the middle of it            (default 3)
# Four runs, each printing its figures on a line starting with
# "FAULTS long:" or "BIGTX long:":
#   1. every fault but the broker restart, with the volume target;
#   2. broker restarts while nothing is in flight (the broker's log in S3,
#      slow, so no volume target);
#   3. broker restarts while busy: tansu 0.6.0 loses records of commits it
#      acknowledged when killed busy (docs/reliability.md), so this run
#      reports, per missing change, whether the broker kept it, and does
#      not decide the script's exit status;
#   4. one huge transaction, siphon killed in the middle of it.
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
failed=()
run() { # name, command...
  local name=$1
  shift
  echo "faults-long: $name" >&2
  "$@" || failed+=("$name")
}
restarts="${FAULTS_BROKER_RESTARTS:-10}"
run "every fault" "${test[@]}" --test faults long_run -- --ignored --nocapture "$@"
FAULTS_KILLS=0 FAULTS_CHANGES=0 FAULTS_ONLY=broker_restart_quiet FAULTS_EACH="$restarts" \
  run "quiet broker restarts" "${test[@]}" --test faults long_run -- --ignored --nocapture "$@"
FAULTS_KILLS=0 FAULTS_CHANGES=0 FAULTS_ONLY=broker_restart FAULTS_EACH="$restarts" \
  "${test[@]}" --test faults long_run -- --ignored --nocapture "$@" ||
  echo "faults-long: busy broker restarts failed (see which missing changes the broker kept)" >&2
run "huge transaction" "${test[@]}" --test bigtx huge_transaction_survives_repeated_sigkills -- --ignored --nocapture "$@"
echo "faults-long: finished in $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "faults-long: FAILED: ${failed[*]}" >&2
  exit 1
fi
