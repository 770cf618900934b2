#!/usr/bin/env bash
# The local FinStream stack: installs what is missing and runs PostgreSQL,
# Redis, Apache Kafka (KRaft) and the app processes under supervisord.
#
#   deploy/stack.sh install        Debian packages, virtualenv, Kafka jars (idempotent)
#   deploy/stack.sh infra          start PostgreSQL, Redis and Kafka; create role, database, topics
#   deploy/stack.sh up             infra + migrations, seed data, admin, app processes; wait for /ready
#   deploy/stack.sh down           stop everything, keep data
#   deploy/stack.sh status         what runs, and /ready
#   deploy/stack.sh logs           follow every process's log
#   deploy/stack.sh clean          down, then remove the stack's var dir
#   deploy/stack.sh ctl ARGS...    supervisorctl with the stack's settings (ctl stop app:build_candles)
#
# Each stack lives in FINSTREAM_VAR (default: var/) with its own ports, so the
# test stack (var/test, other ports) never touches the one `make up` runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FINSTREAM_ROOT=$ROOT
# A .env beside the Makefile configures `make up` (not the test stack, whose
# ports and URLs deploy/test.sh sets). As in finstream/settings.py, a variable
# the environment already sets wins over the file's.
load_dotenv() {
  local file=$1 name names=()
  while IFS= read -r name; do
    [ -n "${!name+x}" ] || names+=("$name")
  done < <(sed -nE 's/^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=.*/\2/p' "$file")
  [ ${#names[@]} -gt 0 ] || return 0
  # shellcheck disable=SC1090
  eval "$(set -a; . "$file"; for name in "${names[@]}"; do printf 'export %s=%q\n' "$name" "${!name}"; done)"
}
case "${FINSTREAM_IGNORE_DOTENV:-}" in
  1 | [Tt]rue | TRUE | [Yy]es | YES | [Oo]n | ON) ;;
  *) if [ -f "$ROOT/.env" ]; then load_dotenv "$ROOT/.env"; fi ;;
esac
export FINSTREAM_VAR=${FINSTREAM_VAR:-$ROOT/var}
export PG_PORT=${PG_PORT:-5432}
export REDIS_PORT=${REDIS_PORT:-6379}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
export WEB_PORT=${WEB_PORT:-8000}
export KAFKA_HEAP=${KAFKA_HEAP:-512m}
# Each long-running command serves Prometheus metrics on METRICS_PORT_BASE + n.
export METRICS_PORT_BASE=${METRICS_PORT_BASE:-9100}
export METRICS_PORT_SIMULATOR=$((METRICS_PORT_BASE + 1))
export METRICS_PORT_BUILD_CANDLES=$((METRICS_PORT_BASE + 2))
export METRICS_PORT_INGEST_QUOTES=$((METRICS_PORT_BASE + 3))
export METRICS_PORT_DETECT_ANOMALIES=$((METRICS_PORT_BASE + 4))
export METRICS_PORT_RELAY_STREAMS=$((METRICS_PORT_BASE + 5))
export METRICS_PORT_CELERY_WORKER=$((METRICS_PORT_BASE + 6))
export PG_FSYNC=${PG_FSYNC:-on}
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export TIMESCALE_URL=${TIMESCALE_URL:-${DATABASE_URL:-postgresql://finstream:finstream@127.0.0.1:$PG_PORT/finstream}}

VENV=$ROOT/var/venv            # shared by every stack of this checkout
KAFKA_LIBS=$ROOT/var/kafka-libs
PY=$VENV/bin/python
SUPERVISOR_CONF=$ROOT/deploy/supervisord.conf

step() { printf '==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || fail "PostgreSQL server binaries not found under /usr/lib/postgresql: run \`make install\`"
  echo "$dir"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  fail "$1 did not open port $2 in $3 s: see $FINSTREAM_VAR/log/$1.log"
}

# --- install ---------------------------------------------------------------------
install_debian_packages() {
  local missing=()
  [ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
    || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v promtool >/dev/null || missing+=(prometheus)  # promtool checks deploy/prometheus in the tests
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # The browser tests drive Debian's Chromium; `make test` asks for it, `make up` does not need it.
  if [ "${FINSTREAM_INSTALL_BROWSER:-0}" = 1 ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
  fi
  if [ ${#missing[@]} -eq 0 ]; then
    step "Debian packages: all present"
    return
  fi
  step "Debian packages: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || fail "need root to install ${missing[*]}: run as root or install them yourself"
    SUDO=sudo
  else
    SUDO=
  fi
  $SUDO apt-get update -qq || fail "apt-get update failed"
  # The postgresql package would start a cluster of its own on 5432; ours runs from var/.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
  # Debian's prometheus package may start a server of its own on :9090; only promtool is wanted.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    $SUDO service prometheus stop >/dev/null 2>&1 || true
  fi
  if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    $SUDO pg_ctlcluster "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
  fi
  if command -v redis-cli >/dev/null && [ "$REDIS_PORT" = 6379 ] && redis-cli -p 6379 ping >/dev/null 2>&1 \
    && ! [ -f "$FINSTREAM_VAR/run/supervisord.pid" ]; then
    $SUDO service redis-server stop >/dev/null 2>&1 || true
  fi
}

install_python() {
  local stamp=$VENV/.requirements.sha
  local want
  want=$(sha256sum "$ROOT/requirements.lock" | cut -d' ' -f1)
  if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "Python virtualenv: up to date ($VENV)"
    return
  fi
  step "Python virtualenv: installing requirements.lock into $VENV"
  [ -x "$PY" ] || python3 -m venv "$VENV" || fail "could not create a virtualenv: is python3-venv installed?"
  "$PY" -m pip install -q --upgrade pip >/dev/null || fail "pip upgrade failed"
  "$PY" -m pip install -q -r "$ROOT/requirements.lock" || fail "pip install -r requirements.lock failed"
  echo "$want" >"$stamp"
}

install_kafka() {
  local stamp=$KAFKA_LIBS/.pom.sha
  local want
  want=$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "Kafka broker jars: up to date ($KAFKA_LIBS)"
    return
  fi
  step "Kafka broker jars: copying from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS" \
    || fail "mvn could not fetch the Kafka jars (deploy/kafka/pom.xml)"
  echo "$want" >"$stamp"
}

cmd_install() {
  mkdir -p "$ROOT/var"
  install_debian_packages
  install_python
  install_kafka
}

# --- infrastructure ----------------------------------------------------------------
ensure_port_free() { # name port
  if port_open "$2"; then
    fail "port $2 for $1 is taken by another process: stop it or choose another port (e.g. ${3}=$(( $2 + 10000 )) make up)"
  fi
}

prepare_postgres() {
  PGDATA=$FINSTREAM_VAR/pg/data
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$FINSTREAM_VAR" 2>/dev/null; then
    # The postgres user cannot reach this checkout (e.g. under /root): keep
    # the data in a directory it owns and link it from the stack's var dir.
    local outside
    outside=/var/lib/postgresql/finstream-$(echo -n "$FINSTREAM_VAR" | sha256sum | cut -c1-12)
    mkdir -p "$outside" && chown postgres: "$outside"
    [ -L "$FINSTREAM_VAR/pg" ] || { rm -rf "$FINSTREAM_VAR/pg"; ln -s "$outside" "$FINSTREAM_VAR/pg"; }
    # The link is for people; postgres itself cannot pass through this checkout to follow it.
    PGDATA=$outside/data
  else
    mkdir -p "$FINSTREAM_VAR/pg"
  fi
  [ "$(id -u)" = 0 ] && chown postgres: "$FINSTREAM_VAR/pg/" 2>/dev/null
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    step "PostgreSQL: initdb $PGDATA"
    as_postgres "$(pg_bin)/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >"$FINSTREAM_VAR/log/initdb.log" 2>&1 \
      || fail "initdb failed ($FINSTREAM_VAR/log/initdb.log): $(grep -m1 'error' "$FINSTREAM_VAR/log/initdb.log")"
  fi
  export PGDATA PG_BIN
  PG_BIN=$(pg_bin)
  PG_USER=$( [ "$(id -u)" = 0 ] && echo postgres || id -un )
  export PG_USER
}

prepare_kafka() {
  local dir=$FINSTREAM_VAR/kafka
  mkdir -p "$dir/data"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA@|$dir/data|g" \
    "$ROOT/deploy/kafka/server.properties" >"$dir/server.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    step "Kafka: formatting KRaft storage in $dir/data"
    local cluster_id
    cluster_id=$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >"$FINSTREAM_VAR/log/kafka-format.log" 2>&1 || fail "Kafka storage format failed: see $FINSTREAM_VAR/log/kafka-format.log"
  fi
}

supervisor_running() {
  [ -S "$FINSTREAM_VAR/run/supervisor.sock" ] && ctl pid >/dev/null 2>&1
}

ctl() { "$VENV/bin/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }

# The configuration the processes run with: every variable .env.example names, as this shell has
# it (from .env, the environment or the defaults above). supervisord hands its processes the
# environment it started with, so a changed configuration needs a new supervisord.
config_fingerprint() {
  local name
  for name in $(grep -oE '^# ?[A-Z][A-Z0-9_]*=|^[A-Z][A-Z0-9_]*=' "$ROOT/.env.example" | tr -d '# =' | sort -u); do
    printf '%s=%s\n' "$name" "${!name-}"
  done | sha256sum | cut -d' ' -f1
}

start_supervisor() {
  if supervisor_running; then
    return
  fi
  ensure_port_free PostgreSQL "$PG_PORT" PG_PORT
  ensure_port_free Redis "$REDIS_PORT" REDIS_PORT
  ensure_port_free Kafka "$KAFKA_PORT" KAFKA_PORT
  ensure_port_free "the Kafka controller" "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  step "supervisord: starting (config deploy/supervisord.conf, logs in $FINSTREAM_VAR/log)"
  rm -f "$FINSTREAM_VAR/run/supervisor.sock"
  "$VENV/bin/supervisord" -c "$SUPERVISOR_CONF" || fail "supervisord did not start: see $FINSTREAM_VAR/log/supervisord.log"
  config_fingerprint > "$FINSTREAM_VAR/run/config.sha"
  local i
  for ((i = 0; i < 100; i++)); do supervisor_running && return; sleep 0.1; done
  fail "supervisord did not answer: see $FINSTREAM_VAR/log/supervisord.log"
}

cmd_infra() {
  [ -x "$PY" ] && [ -f "$KAFKA_LIBS/.pom.sha" ] || cmd_install
  mkdir -p "$FINSTREAM_VAR"/{log,run,redis}
  export PG_USER PGDATA PG_BIN
  prepare_postgres
  prepare_kafka
  if supervisor_running && [ -f "$FINSTREAM_VAR/run/config.sha" ] \
      && [ "$(config_fingerprint)" != "$(cat "$FINSTREAM_VAR/run/config.sha")" ]; then
    step "The configuration (.env or the environment) changed since the stack started: restarting it"
    cmd_down
  fi
  start_supervisor
  # A running supervisord picks up an edited deploy/supervisord.conf; one that
  # started before the config named a new variable must be restarted.
  if ! ctl reread >/dev/null 2>&1; then
    step "supervisord: restarting it for the changed deploy/supervisord.conf"
    cmd_down
    start_supervisor
  fi
  ctl update >/dev/null
  step "PostgreSQL, Redis, Kafka: starting on ports $PG_PORT, $REDIS_PORT, $KAFKA_PORT"
  ctl start infra:* >/dev/null || true
  wait_port postgres "$PG_PORT" 60
  wait_port redis "$REDIS_PORT" 30
  wait_port kafka "$KAFKA_PORT" 90
  local i
  for ((i = 0; i < 100; i++)); do
    as_postgres "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.2
  done
  step "PostgreSQL: role and database finstream"
  psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'finstream'" | grep -q 1 \
    || psql_admin -c "CREATE ROLE finstream LOGIN CREATEDB PASSWORD 'finstream'"
  psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'finstream'" | grep -q 1 \
    || psql_admin -c "CREATE DATABASE finstream OWNER finstream"
  step "Kafka: topics"
  "$PY" "$ROOT/manage.py" kafka_topics
}

cmd_up() {
  cmd_install
  cmd_infra
  step "Django: migrations, seed symbols, alert rules, admin user"
  "$PY" "$ROOT/manage.py" bootstrap
  step "Static files: collectstatic"
  "$PY" "$ROOT/manage.py" collectstatic --noinput -v 0
  step "App processes: web, simulator, consumers, Celery worker and beat"
  ctl start app:* >/dev/null || true
  step "Waiting for http://127.0.0.1:$WEB_PORT/ready"
  local i body=""
  for ((i = 0; i < 120; i++)); do
    if body=$(curl -fsS "http://127.0.0.1:$WEB_PORT/ready" 2>/dev/null); then
      cat <<EOF

FinStream is up.
  Dashboard   http://127.0.0.1:$WEB_PORT/
  API docs    http://127.0.0.1:$WEB_PORT/api/docs/
  Live stream ws://127.0.0.1:$WEB_PORT/ws/stream
  REST API    http://127.0.0.1:$WEB_PORT/api/v1/symbols
  Admin       http://127.0.0.1:$WEB_PORT/admin/
  Health      http://127.0.0.1:$WEB_PORT/health   http://127.0.0.1:$WEB_PORT/ready
  Metrics     http://127.0.0.1:$WEB_PORT/metrics
  Kafka       $KAFKA_BOOTSTRAP_SERVERS   (kcat -b $KAFKA_BOOTSTRAP_SERVERS -C -t market.trades)
  PostgreSQL  $TIMESCALE_URL
Stop with \`make down\` (keeps data); \`make status\`, \`make logs\`.
EOF
      return
    fi
    sleep 1
  done
  curl -sS "http://127.0.0.1:$WEB_PORT/ready" || true
  echo
  ctl status || true
  fail "/ready did not turn green in 120 s: see the checks above and \`make logs\`"
}

cmd_down() {
  if supervisor_running; then
    step "Stopping every process (data stays in $FINSTREAM_VAR)"
    ctl stop app:* >/dev/null 2>&1 || true
    ctl stop infra:* >/dev/null 2>&1 || true
    ctl shutdown >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 300; i++)); do
      [ -f "$FINSTREAM_VAR/run/supervisord.pid" ] && kill -0 "$(cat "$FINSTREAM_VAR/run/supervisord.pid")" 2>/dev/null || break
      sleep 0.1
    done
  else
    step "Nothing running in $FINSTREAM_VAR"
  fi
}

cmd_status() {
  if ! supervisor_running; then
    echo "FinStream is not running (in $FINSTREAM_VAR). Start it with \`make up\`."
    return 3
  fi
  ctl status || true
  echo
  # Exit 0 only when /ready says ready (a script can wait on `make status`), 1 otherwise.
  local ready=0
  curl -sS --fail-with-body "http://127.0.0.1:$WEB_PORT/ready" || {
    ready=$?
    [ "$ready" -eq 22 ] || echo "web: /ready does not answer on port $WEB_PORT"
  }
  echo
  [ "$ready" -eq 0 ]
}

cmd_logs() {
  exec tail -n 50 -F "$FINSTREAM_VAR"/log/*.log
}

cmd_clean() {
  cmd_down
  step "Removing $FINSTREAM_VAR"
  [ -L "$FINSTREAM_VAR/pg" ] && rm -rf "$(readlink "$FINSTREAM_VAR/pg")"
  if [ "$FINSTREAM_VAR" = "$ROOT/var" ]; then
    # The virtualenv and Kafka jars are installs, not data: keep them.
    find "$FINSTREAM_VAR" -mindepth 1 -maxdepth 1 ! -name venv ! -name kafka-libs -exec rm -rf {} +
  else
    rm -rf "$FINSTREAM_VAR"
  fi
  true
}

case "${1:-}" in
  install) cmd_install ;;
  infra) cmd_infra ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
  clean) cmd_clean ;;
  ctl) shift; ctl "$@" ;;
  *) fail "usage: deploy/stack.sh install|infra|up|down|status|logs|clean|ctl SUPERVISORCTL-ARGS..." ;;
esac
