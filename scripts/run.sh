#!/usr/bin/env bash
# make run: installs what is missing, starts the local stack (PostgreSQL + nisshi), the four
# services and, unless VIGIL_SIMULATE=0, simulated traffic; prints a summary read from
# PostgreSQL every few seconds until Ctrl-C, then stops everything it started.
#
# Stopping: the broker and PostgreSQL run in sessions of their own, and so does every process
# this script starts, so a terminal's Ctrl-C reaches only this script. It then stops, in order,
# the simulator, the producer, the detector, the sink and the webhook (SIGTERM; each flushes to
# the broker and the database, both still up, within its SHUTDOWN_TIMEOUT), then what it started
# of the stack. It exits 0 when every one of them stopped cleanly, and non-zero when a service
# died, failed to stop in time, or did not start.
export VIGIL_PROFILE=run
source "$(dirname "$0")/lib.sh"

SIMULATE="${VIGIL_SIMULATE:-1}"
# The services listen on BASE+1 (webhook) .. BASE+4 (sink); Prometheus and Alertmanager start
# unless VIGIL_OBSERVABILITY=0; VIGIL_BUILD=0 uses the binaries as built. (The local_stack test
# runs this script with its own ports and VIGIL_STATE.)
PORT_BASE="${VIGIL_PORT_BASE:-3000}"
P_WEBHOOK=$((PORT_BASE + 1)); P_PRODUCER=$((PORT_BASE + 2)); P_DETECTOR=$((PORT_BASE + 3)); P_SINK=$((PORT_BASE + 4))
RUN_ENV="$ROOT/.vigil/run.env"
[ -n "${VIGIL_STATE:-}" ] && RUN_ENV="$STATE/run.env"
SCENARIO="${VIGIL_SCENARIO:-seed-validation}"
LOGS="$STATE/logs"
# Every service reads it (checked at start-up); this script waits that long plus a margin for
# each one to exit after SIGTERM, then kills it.
export SHUTDOWN_TIMEOUT="${SHUTDOWN_TIMEOUT:-10s}"
STOP_WAIT=$(( $(duration_s "$SHUTDOWN_TIMEOUT") + 5 ))

declare -A PID=()        # name -> pid of what this script started
NAMES=()                 # in start order
INTERRUPTED=0            # a signal asked for the stop: a normal end
SLEEPER=""               # the main loop's sleep, ended with the script
STARTED_PG=0; STARTED_BROKER=0

# Stops one process this script started; non-zero if it had to be killed or exited non-zero.
stop_one() {
  local name=$1 pid=${PID[$1]} rc=0 i
  kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < STOP_WAIT * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    log "The $name did not stop within $STOP_WAIT s and was killed (see $LOGS/$name.log)."
    return 1
  fi
  wait "$pid" 2>/dev/null || rc=$?
  if [ "$rc" != 0 ]; then
    log "The $name exited with status $rc while stopping (see $LOGS/$name.log)."
    return 1
  fi
}

finish() {
  local status=$? name failed=()
  # Stopping runs to its end whatever one step returns: under lib.sh's `set -e`, a step that
  # failed here (a sleeper already gone) once ended the script at once with status 1, with the
  # EXIT trap already cleared, so nothing was stopped and no stop was reported.
  set +e
  trap - EXIT TERM HUP
  trap '' INT # stopping is bounded; a second Ctrl-C must not cut the flush short
  [ -n "${SLEEPER:-}" ] && kill "$SLEEPER" 2>/dev/null
  [ "$INTERRUPTED" = 1 ] && status=0
  if [ "${#NAMES[@]}" -gt 0 ]; then
    log "Stopping the simulator and the services (each flushes what it holds, at most $STOP_WAIT s)."
  fi
  for name in simulator producer detector sink webhook; do
    [ -n "${PID[$name]:-}" ] || continue
    stop_one "$name" || failed+=("$name")
  done
  rm -f "$STATE/services.pids"
  "$ROOT/scripts/observability.sh" stop "$STATE" || true
  # Only what this run started: a stack that was already up (make stack-up, an earlier run
  # that was killed) stays up.
  [ "$STARTED_BROKER" = 1 ] && { "$ROOT/scripts/stack.sh" down-broker || failed+=("broker"); }
  [ "$STARTED_PG" = 1 ] && { "$ROOT/scripts/stack.sh" down-postgres || failed+=("postgres"); }
  [ "$(cat "$STATE/run.pid" 2>/dev/null)" = "$$" ] && rm -f "$STATE/run.pid"
  if [ "${#failed[@]}" -gt 0 ]; then
    [ "$status" = 0 ] && status=1
    printf '\033[1;31m[vigil %s] Stopped, but not cleanly: %s (logs in %s).\033[0m\n' "$PROFILE" "${failed[*]}" "$LOGS" >&2
  elif [ "$status" = 0 ]; then
    log "Stopped. Logs are in $LOGS."
  else
    printf '\033[1;31m[vigil %s] Stopped after a failure (status %s; logs in %s).\033[0m\n' "$PROFILE" "$status" "$LOGS" >&2
  fi
  exit "$status"
}
trap 'INTERRUPTED=1; exit 130' INT
trap 'INTERRUPTED=1; exit 143' TERM HUP
trap finish EXIT

# A session of its own (see the top); its output goes to its log.
start() { # name, then the command; environment is inherited
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
  NAMES+=("$name")
  echo "$name $!" >>"$STATE/services.pids"
}

# Exits (through finish, non-zero) if a started process is gone.
check_alive() {
  local name rc
  for name in "${NAMES[@]}"; do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      rc=0; wait "${PID[$name]}" 2>/dev/null || rc=$?
      unset "PID[$name]"
      die "The $name exited with status $rc (see $LOGS/$name.log)."
    fi
  done
}

"$ROOT/scripts/install-deps.sh" --with-prometheus
mkdir -p "$STATE" "$LOGS"
# A `make run` still running, or the services of one that was killed, would hold the ports and
# the consumer groups: stop them, then take over the same broker and database.
stop_earlier_run
echo $$ >"$STATE/run.pid"
: >"$STATE/services.pids"
port_open "$PG_PORT" || STARTED_PG=1
port_open "$KAFKA_PORT" || STARTED_BROKER=1
"$ROOT/scripts/stack.sh" up

if [ "${VIGIL_BUILD:-1}" != 0 ]; then
  log "Building the services (debug profile, shared with make test)."
  (cd "$ROOT" && cargo build --bins --locked) || die "cargo build failed"
fi
BIN="$ROOT/target/debug"

DB_NAME=vigil
psql "$PG_ADMIN_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
  || psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $DB_NAME" >/dev/null
DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/$DB_NAME"

# A webhook token of this checkout, created once.
TOKEN_FILE="$STATE/webhook.token"
[ -s "$TOKEN_FILE" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE"
WEBHOOK_TOKEN=$(cat "$TOKEN_FILE")

PRODUCER_URL="http://127.0.0.1:$P_PRODUCER"
WEBHOOK_URL="http://127.0.0.1:$P_WEBHOOK"
for port in $P_WEBHOOK $P_PRODUCER $P_DETECTOR $P_SINK; do
  port_open "$port" && die "port $port is taken by a process that is not this checkout's 'make run'; stop it first."
done

cat >"$RUN_ENV" <<ENV
DATABASE_URL=$DATABASE_URL
KAFKA_BROKERS=$KAFKA_BROKERS
PRODUCER_URL=$PRODUCER_URL
WEBHOOK_URL=$WEBHOOK_URL
WEBHOOK_TOKEN=$WEBHOOK_TOKEN
DETECTOR_OPS_URL=http://127.0.0.1:$P_DETECTOR
SINK_OPS_URL=http://127.0.0.1:$P_SINK
ENV

export KAFKA_BROKERS DATABASE_URL WEBHOOK_TOKEN RUST_LOG="${RUST_LOG:-info}"
start webhook  env WEBHOOK_BIND=0.0.0.0:$P_WEBHOOK "$BIN/webhook"
start sink     env SINK_BIND=0.0.0.0:$P_SINK CONSUMER_INSTANCE_ID=sink-local "$BIN/sink"
start detector env DETECTOR_BIND=0.0.0.0:$P_DETECTOR CONSUMER_INSTANCE_ID=detector-local "$BIN/detector"
start producer env PRODUCER_BIND=0.0.0.0:$P_PRODUCER "$BIN/producer"

for svc in "webhook $P_WEBHOOK" "producer $P_PRODUCER" "detector $P_DETECTOR" "sink $P_SINK"; do
  set -- $svc
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1 && break
    check_alive
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1 || die "$1 did not become ready (see $LOGS/$1.log)"
done

PROM_URL=""
if [ "${VIGIL_OBSERVABILITY:-1}" = 0 ]; then
  log "VIGIL_OBSERVABILITY=0: no Prometheus or Alertmanager; nothing scrapes the services."
elif "$ROOT/scripts/observability.sh" start "$STATE"; then
  # Its own ports (9090 and 9093, or the next free ones when Debian's services hold them).
  cat "$STATE/observability.env" >>"$RUN_ENV"
  PROMETHEUS_URL=""; ALERTMANAGER_URL=""
  source "$STATE/observability.env"
  PROM_URL="$PROMETHEUS_URL${ALERTMANAGER_URL:+ (Alertmanager $ALERTMANAGER_URL)}"
else
  log "Prometheus did not start (see $LOGS/prometheus.log): the services run unscraped."
fi

cat <<INFO

  Vigil is running (logs in $LOGS, variables in ${RUN_ENV#$ROOT/}):
    producer   $PRODUCER_URL   POST /ingest/transaction, /ingest/transactions
    webhook    $WEBHOOK_URL   POST /grafana/webhook (Bearer \$WEBHOOK_TOKEN), GET /alerts
    detector   http://127.0.0.1:$P_DETECTOR/metrics
    sink       http://127.0.0.1:$P_SINK/metrics
    postgres   $DATABASE_URL
    kafka      $KAFKA_BROKERS${PROM_URL:+
    prometheus $PROM_URL}

INFO

if [ "$SIMULATE" != 0 ]; then
  log "Simulating '$SCENARIO' in real time (90 minutes of history first, then live); VIGIL_SIMULATE=0 turns this off."
  # 90 minutes: the volume rules judge a series once its baseline has learned 60 minutes, each
  # joining it 15 minutes after it is judged, so a stop is reported from the first live minute.
  # Seed 2: a demo run without a statistically expected false amount alarm (see the detector's
  # README); VIGIL_SEED picks another.
  start simulator "$BIN/simulator" run --scenario "$SCENARIO" --start now-90m --speed 1 --loop \
    --seed "${VIGIL_SEED:-2}" --producer-url "$PRODUCER_URL" --ground-truth "$STATE/ground-truth.json"
fi
log "Ctrl-C stops everything."

# The status line, printed by psql itself. No command substitution in the loop: bash 5.2 parses a
# `$(...)` as it expands it, and a Ctrl-C landing then made the INT trap's own text fail to parse
# ("interrupt trap: unexpected EOF while looking for matching `)'"), ending make run with status 2.
summary() {
  psql "$DATABASE_URL" -Atqc "
    SELECT format('[%s] %s minutes stored | last %s: %s tx, denied %s%%, failed %s%%, reversed %s%% | anomalies: %s open, %s total',
      to_char(localtimestamp, 'HH24:MI:SS'), (SELECT count(*) FROM v_tx_minute),
      coalesce(to_char(m.minute AT TIME ZONE 'UTC', 'HH24:MI'), '--:--'), coalesce(m.total, 0),
      coalesce(round((m.denied_rate * 100)::numeric, 1), 0), coalesce(round((m.failed_rate * 100)::numeric, 1), 0),
      coalesce(round((m.reversed_rate * 100)::numeric, 1), 0),
      (SELECT count(*) FROM anomalies WHERE state <> 'resolved'), (SELECT count(*) FROM anomalies))
    FROM (SELECT 1) x LEFT JOIN LATERAL (SELECT * FROM v_tx_minute ORDER BY minute DESC LIMIT 1) m ON true" 2>/dev/null || true
}

while true; do
  check_alive
  summary
  # In the background, so a signal is handled at once, not after the sleep.
  sleep 5 &
  SLEEPER=$!
  wait "$SLEEPER" || true
  SLEEPER=""
done
