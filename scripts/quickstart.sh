#!/usr/bin/env bash
# One command from a fresh clone to events on screen: installs what is
# missing, builds siphon, starts a throwaway PostgreSQL, a tansu broker and a
# schema-registry stand-in on loopback, runs `siphon run` on a demo connector
# file, makes a few changes and prints the decoded events.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --bin siphon --example quickstart
exec target/debug/examples/quickstart "$@"
