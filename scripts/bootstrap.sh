#!/usr/bin/env bash
# Brings a fresh machine (Python 3.11+ and make) to a working checkout:
# uv (installed with pip when missing), .venv from uv.lock, and PostgreSQL server binaries
# (installed with apt-get when none are found) for the embedded source and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
elif "$PYTHON" -m uv --version >/dev/null 2>&1; then
  UV=("$PYTHON" -m uv)
else
  log "installing uv with pip"
  "$PYTHON" -m pip install --quiet uv \
    || "$PYTHON" -m pip install --quiet --user uv \
    || "$PYTHON" -m pip install --quiet --user --break-system-packages uv
  UV=("$PYTHON" -m uv)
fi

log "syncing .venv from uv.lock"
"${UV[@]}" sync --frozen --quiet --compile-bytecode

have_pg_server() {
  command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  if command -v pg_config >/dev/null 2>&1; then
    local bindir; bindir=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/initdb" ] && return 0
  fi
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null 2>&1
}

if ! have_pg_server; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    log "no PostgreSQL server binaries found: installing the postgresql package with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  else
    log "no PostgreSQL server binaries found and no apt-get: install PostgreSQL (initdb, pg_ctl) yourself"
    exit 1
  fi
fi
touch .venv/.bootstrapped
