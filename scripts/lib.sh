# Shared by the scripts in this folder: paths, ports per profile, logging.
# Profiles: "run" (make run) and "test" (make test) use separate ports and state, so a test run
# never disturbs a running local stack.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${VIGIL_PROFILE:-run}"
# VIGIL_STATE: another state directory (and so another PostgreSQL cluster and broker storage),
# for a test that runs `make run`'s script beside a real one.
STATE="${VIGIL_STATE:-$ROOT/.vigil/$PROFILE}"
CACHE="${VIGIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil}"
# The local Kafka-compatible broker: nisshi (tansu's successor), SQLite storage. Built once with
# Debian's rustc 1.96 (install-deps.sh) into the cache; the project itself builds with rustup's.
NISSHI_VERSION="0.8.1"
NISSHI_BIN="$CACHE/nisshi-$NISSHI_VERSION/bin/nisshi"

case "$PROFILE" in
  run)  PG_PORT="${VIGIL_PG_PORT:-54320}"; KAFKA_PORT="${VIGIL_KAFKA_PORT:-9092}" ;;
  test) PG_PORT="${VIGIL_PG_PORT:-54329}"; KAFKA_PORT="${VIGIL_KAFKA_PORT:-19092}" ;;
  *) echo "unknown VIGIL_PROFILE=$PROFILE (run or test)" >&2; exit 2 ;;
esac

PG_HOST=127.0.0.1
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
PG_ADMIN_URL="postgres://postgres@$PG_HOST:$PG_PORT/postgres"

log() { printf '\033[1;34m[vigil %s]\033[0m %s\n' "$PROFILE" "$*" >&2; }
die() { printf '\033[1;31m[vigil %s] %s\033[0m\n' "$PROFILE" "$*" >&2; exit 1; }

# Is something listening on 127.0.0.1:$1?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  die "$3 did not open port $1 within $2 s"
}

# Is pid $1 alive and its command line contains $2? (A pid file can outlive its process, and the
# pid be reused.)
pid_is() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# SIGTERM, then SIGKILL after $2 seconds. Returns 1 if it had to kill.
stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid did not stop within $2 s; killing it."
  kill -9 "$pid" 2>/dev/null || true
  return 1
}

# Whole seconds (rounded up) of a duration as the services read it: 500ms, 10s, 10, 2m, 1h.
duration_s() {
  awk -v d="$1" 'BEGIN {
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    m = (u == "ms") ? 0.001 : (u == "m") ? 60 : (u == "h") ? 3600 : 1
    s = n * m; printf "%d\n", (s == int(s)) ? s : int(s) + 1 }'
}

# A `make run` of this checkout that is still running (scripts/run.sh writes its pid), or its
# services left behind by one that was killed: stopped, each service with its own shutdown bound
# (SHUTDOWN_TIMEOUT) plus a margin, so a later `make run` or `make stack-down` starts clean.
stop_earlier_run() {
  local dir="$STATE" pid name wait_s
  wait_s=$(( $(duration_s "${SHUTDOWN_TIMEOUT:-10s}") + 5 ))
  if [ -f "$dir/run.pid" ] && pid=$(cat "$dir/run.pid") && [ "$pid" != "$$" ] && pid_is "$pid" scripts/run.sh; then
    log "Another 'make run' (pid $pid) is running; stopping it first."
    stop_pid "$pid" $(( wait_s * 5 + 30 )) || true
  fi
  rm -f "$dir/run.pid"
  if [ -f "$dir/services.pids" ]; then
    while read -r name pid; do
      if pid_is "$pid" "$ROOT/target/"; then
        log "The $name of an earlier 'make run' (pid $pid) is still running; stopping it."
        stop_pid "$pid" "$wait_s" || true
      fi
    done <"$dir/services.pids"
    rm -f "$dir/services.pids"
  fi
}

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && echo "$d"
}

# PostgreSQL refuses to run as root: a root caller runs the cluster as the postgres user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where the project's own cluster lives. As root it must be somewhere the postgres user can
# reach whatever the clone's path, so it sits under postgres's home, one per clone and profile.
pg_datadir() {
  if [ "$(id -u)" = 0 ]; then
    local id
    id=$(printf '%s' "${VIGIL_STATE:-$ROOT}" | cksum | cut -d' ' -f1)
    echo "/var/lib/postgresql/vigil/$id-$PROFILE"
  else
    echo "$STATE/pgdata"
  fi
}

# The variables the tests read to find the test stack (after `stack.sh up` set PG_ADMIN_URL and
# KAFKA_BROKERS): make test, make chaos and make fuzz all run tests against it.
export_test_env() {
  export VIGIL_TEST_PG_ADMIN_URL="$PG_ADMIN_URL"
  export VIGIL_TEST_KAFKA_BROKERS="$KAFKA_BROKERS"
  export VIGIL_TEST_PYTHON="$CACHE/venv/bin/python"
  export VIGIL_TEST_BROKER_BIN="$NISSHI_BIN"
  export RUST_BACKTRACE=1
}
