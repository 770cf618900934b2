#!/usr/bin/env bash
# `make test`: start a private stack (var/test, its own ports), run pytest
# against it, tear it down. Arguments go to pytest; --unit runs only the pure
# tests that need no services.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# TEST_SLOT=N (0-9) runs another private stack beside this one: its own
# var/test-N and ports shifted by 100*N, so two suites can run at once.
slot=${TEST_SLOT:-0}
[[ $slot =~ ^[0-9]$ ]] || { echo "error: TEST_SLOT must be a digit 0-9, got '$slot'" >&2; exit 2; }
shift_by=$((slot * 100))
export FINSTREAM_IGNORE_DOTENV=1
export FINSTREAM_VAR=$ROOT/var/test$([ "$slot" = 0 ] || echo "-$slot")
export PG_PORT=$((55432 + shift_by))
export REDIS_PORT=$((56379 + shift_by))
export KAFKA_PORT=$((59092 + shift_by))
export KAFKA_CONTROLLER_PORT=$((59093 + shift_by))
export WEB_PORT=$((58000 + shift_by))
export PG_FSYNC=off  # a test database need not survive a power cut
unset DATABASE_URL TIMESCALE_URL REDIS_URL KAFKA_BOOTSTRAP_SERVERS
export DJANGO_SETTINGS_MODULE=finstream.settings
export READY_CONSUMERS=""

# pytest exits 5 when a selection (-k, -m, a path) collects nothing: say so
# and do not fail, so that `make test -- -k something` is usable.
exit_with() {
  if [ "$1" -eq 5 ]; then
    echo "pytest: no tests were collected for this selection" >&2
    exit 0
  fi
  exit "$1"
}

if [ "${1:-}" = --unit ]; then
  shift
  deploy/stack.sh install
  set +e
  var/venv/bin/python -m pytest -m "not services" "$@"
  exit_with "$?"
fi

FINSTREAM_INSTALL_BROWSER=1 deploy/stack.sh install
deploy/stack.sh down >/dev/null 2>&1 || true
rm -rf "$FINSTREAM_VAR"
trap 'deploy/stack.sh clean >/dev/null 2>&1 || true' EXIT
deploy/stack.sh infra
export TIMESCALE_URL=postgresql://finstream:finstream@127.0.0.1:$PG_PORT/finstream
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
echo "==> pytest"
set +e
var/venv/bin/python -m pytest "$@"
exit_with "$?"
