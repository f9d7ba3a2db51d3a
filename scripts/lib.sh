# Shared by the scripts in this folder: paths, ports per profile, logging.
# Profiles: "run" (make run) and "test" (make test) use separate ports and state, so a test run
# never disturbs a running local stack.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${VIGIL_PROFILE:-run}"
STATE="$ROOT/.vigil/$PROFILE"
CACHE="${VIGIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil}"
TANSU_VERSION="0.6.0"
TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"

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
    id=$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
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
  export VIGIL_TEST_TANSU_BIN="$TANSU_BIN"
  export RUST_BACKTRACE=1
}
