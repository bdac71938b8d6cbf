#!/usr/bin/env bash
# Checks the Helm chart (helm/siphon) with Helm's own engine, no cluster and
# no helm binary: lint, render every ci/*-values.yaml scenario, validate the
# manifests against Kubernetes schemas, assert siphon's requirements and the
# values schema. See scripts/check_chart.py.
#
# Keeps its Python tools in a venv at ~/.cache/siphon/chart-venv (override
# with SIPHON_CHART_VENV) and installs them only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SIPHON_CHART_VENV:-$HOME/.cache/siphon/chart-venv}"
# Pinned: helm-python-sdk is 0.x and its API may move.
REQUIREMENTS=(
  'helm-python-sdk==0.2.2'
  'kubernetes-validate==1.37.0'
  'pyyaml==6.0.3'
  'tomli>=2.0; python_version < "3.11"'
)
STAMP="$VENV/.siphon-requirements"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$VENV"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi

if [ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  echo "installing ${REQUIREMENTS[*]} into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s' "${REQUIREMENTS[*]}" >"$STAMP"
fi

exec "$VENV/bin/python" scripts/check_chart.py "$@"
