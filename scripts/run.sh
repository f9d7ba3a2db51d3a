#!/usr/bin/env bash
# make run: installs what is missing, starts the local stack (PostgreSQL + tansu), the four
# services and, unless VIGIL_SIMULATE=0, simulated traffic; prints a summary read from
# PostgreSQL every few seconds until Ctrl-C, then stops everything it started.
export VIGIL_PROFILE=run
source "$(dirname "$0")/lib.sh"

SIMULATE="${VIGIL_SIMULATE:-1}"
SCENARIO="${VIGIL_SCENARIO:-seed-validation}"
LOGS="$STATE/logs"
PIDS=()

"$ROOT/scripts/install-deps.sh" --with-prometheus
if port_open "$KAFKA_PORT"; then
  # stack.sh clears tansu's stored group membership only when it starts the broker itself.
  log "The broker on $KAFKA_BROKERS was already running: if the detector or the sink gets no" \
    "partitions (tansu 0.6.0 can wedge a group whose member returns after its session timeout;" \
    "see scripts/tansu-forget-members.sh), stop with Ctrl-C, run 'scripts/stack.sh down' and start again."
fi
"$ROOT/scripts/stack.sh" up
mkdir -p "$LOGS"

log "Building the services (debug profile, shared with make test)."
(cd "$ROOT" && cargo build --bins --locked) || die "cargo build failed"
BIN="$ROOT/target/debug"

DB_NAME=vigil
psql "$PG_ADMIN_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
  || psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $DB_NAME" >/dev/null
DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/$DB_NAME"

# A webhook token of this checkout, created once.
TOKEN_FILE="$STATE/webhook.token"
[ -s "$TOKEN_FILE" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE"
WEBHOOK_TOKEN=$(cat "$TOKEN_FILE")

PRODUCER_URL="http://127.0.0.1:3002"
WEBHOOK_URL="http://127.0.0.1:3001"
for port in 3001 3002 3003 3004; do
  port_open "$port" && die "port $port is taken: is another 'make run' running? Stop it first."
done

cat >"$ROOT/.vigil/run.env" <<ENV
DATABASE_URL=$DATABASE_URL
KAFKA_BROKERS=$KAFKA_BROKERS
PRODUCER_URL=$PRODUCER_URL
WEBHOOK_URL=$WEBHOOK_URL
WEBHOOK_TOKEN=$WEBHOOK_TOKEN
DETECTOR_OPS_URL=http://127.0.0.1:3003
SINK_OPS_URL=http://127.0.0.1:3004
ENV

stop_all() {
  trap - INT TERM EXIT
  log "Stopping (SIGTERM, then waiting for each to flush)."
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/observability.sh" stop "$STATE" || true
  "$ROOT/scripts/stack.sh" down
  log "Stopped. Logs are in $LOGS."
  exit 0
}
trap stop_all INT TERM EXIT

start() { # name, then the command; environment is inherited
  local name=$1; shift
  "$@" >>"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}

export KAFKA_BROKERS DATABASE_URL WEBHOOK_TOKEN RUST_LOG="${RUST_LOG:-info}"
start webhook  env WEBHOOK_BIND=0.0.0.0:3001 "$BIN/webhook"
start sink     env SINK_BIND=0.0.0.0:3004 CONSUMER_INSTANCE_ID=sink-local "$BIN/sink"
start detector env DETECTOR_BIND=0.0.0.0:3003 CONSUMER_INSTANCE_ID=detector-local "$BIN/detector"
start producer env PRODUCER_BIND=0.0.0.0:3002 "$BIN/producer"

for svc in "webhook 3001" "producer 3002" "detector 3003" "sink 3004"; do
  set -- $svc
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$2/ready" >/dev/null 2>&1 || die "$1 did not become ready (see $LOGS/$1.log)"
done

PROM_URL=""
if port_open 9090; then
  log "Port 9090 is taken; not starting Prometheus."
elif "$ROOT/scripts/observability.sh" start "$STATE"; then
  PROM_URL="http://127.0.0.1:9090 (Alertmanager http://127.0.0.1:9093)"
fi

cat <<INFO

  Vigil is running (logs in $LOGS, variables in .vigil/run.env):
    producer   $PRODUCER_URL   POST /ingest/transaction, /ingest/transactions
    webhook    $WEBHOOK_URL   POST /grafana/webhook (Bearer \$WEBHOOK_TOKEN), GET /alerts
    detector   http://127.0.0.1:3003/metrics
    sink       http://127.0.0.1:3004/metrics
    postgres   $DATABASE_URL
    kafka      $KAFKA_BROKERS${PROM_URL:+
    prometheus $PROM_URL}

INFO

if [ "$SIMULATE" != 0 ]; then
  log "Simulating '$SCENARIO' in real time (30 minutes of history first, then live); VIGIL_SIMULATE=0 turns this off."
  # Seed 2: a demo run without a statistically expected false amount alarm (see the detector's
  # README); VIGIL_SEED picks another.
  start simulator "$BIN/simulator" run --scenario "$SCENARIO" --start now-30m --speed 1 --loop \
    --seed "${VIGIL_SEED:-2}" --producer-url "$PRODUCER_URL" --ground-truth "$STATE/ground-truth.json"
fi

summary() {
  psql "$DATABASE_URL" -Atqc "
    SELECT format('%s minutes stored | last %s: %s tx, denied %s%%, failed %s%%, reversed %s%% | anomalies: %s open, %s total',
      (SELECT count(*) FROM v_tx_minute),
      coalesce(to_char(m.minute AT TIME ZONE 'UTC', 'HH24:MI'), '--:--'), coalesce(m.total, 0),
      coalesce(round((m.denied_rate * 100)::numeric, 1), 0), coalesce(round((m.failed_rate * 100)::numeric, 1), 0),
      coalesce(round((m.reversed_rate * 100)::numeric, 1), 0),
      (SELECT count(*) FROM anomalies WHERE state <> 'resolved'), (SELECT count(*) FROM anomalies))
    FROM (SELECT 1) x LEFT JOIN LATERAL (SELECT * FROM v_tx_minute ORDER BY minute DESC LIMIT 1) m ON true" 2>/dev/null
}

while true; do
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || die "a service exited (see the logs in $LOGS)"
  done
  echo "[$(date +%H:%M:%S)] $(summary)"
  sleep 5
done
