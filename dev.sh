#!/usr/bin/env bash
# One entry point on a fresh machine (Debian, Python 3.10+):
#   ./dev.sh build [SPEC...]   set up .venv, then train, convert, package and locally invoke the built-in models
#   ./dev.sh test [PYTEST...]  set up .venv and node_modules with the test tools, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=${EDGEMAAS_VENV:-.venv}

setup() {
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "edgemaas needs Python 3.10 or newer as python3" >&2; exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { echo "python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
  fi
  local stamp="$VENV/.edgemaas-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
    touch "$stamp"
  fi
}

node_setup() {  # the Serverless Framework v3 CLI that tests/integration/test_serverless.py runs (package.json, package-lock.json)
  if ! command -v npm >/dev/null 2>&1; then
    echo "the tests need Node.js 18+ and npm (Serverless Framework CLI); on Debian: apt-get install nodejs npm" >&2; exit 1
  fi
  if [ ! -x node_modules/.bin/serverless ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  build) setup; exec "$VENV/bin/edgemaas" build "$@" ;;
  test) setup; node_setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: ./dev.sh build [SPEC...] | ./dev.sh test [PYTEST ARGS...]" >&2; exit 2 ;;
esac
