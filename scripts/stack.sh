#!/usr/bin/env bash
# The local stack without Docker: a PostgreSQL cluster and a nisshi broker owned by the project,
# each in a session of its own (a terminal's Ctrl-C does not reach them).
# Usage: VIGIL_PROFILE=run|test scripts/stack.sh up|down|status|env
#        scripts/stack.sh down-broker|down-postgres   (one of them, for `make run`'s stop)
# "up" is idempotent: what already runs is reused. "down" stops what "up" started.
source "$(dirname "$0")/lib.sh"

# Topics and partition counts (the broker does not auto-create topics).
TOPICS=("transactions:6" "tx-partials:1" "tx-minute:3" "anomalies:3" "detector-checkpoints:6" "detector-merge-checkpoints:1" "vigil-dead-letter:1" "transaction-verdicts:3" "detector-settings:1")

pg_up() {
  if port_open "$PG_PORT"; then
    log "PostgreSQL already listening on $PG_HOST:$PG_PORT."
    return
  fi
  local bin data
  bin=$(pg_bindir) || die "PostgreSQL is not installed (run scripts/install-deps.sh)"
  data=$(pg_datadir)
  if [ ! -f "$data/PG_VERSION" ]; then
    log "Creating a PostgreSQL cluster in $data."
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$(dirname "$data")"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $PG_PORT"
      echo "unix_socket_directories = ''"
      echo "max_connections = 300"
      echo "shared_buffers = 128MB"
      echo "fsync = on"
      echo "log_min_messages = warning"
    } | as_pg tee -a "$data/postgresql.conf" >/dev/null
  fi
  log "Starting PostgreSQL on $PG_HOST:$PG_PORT."
  # A session of its own (pg_ctl detaches the server too; setsid says so here): a terminal's
  # Ctrl-C must not stop the database while the services flush to it.
  as_pg setsid -w "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
    || { tail -n 20 "$data/server.log" >&2 || true; die "PostgreSQL did not start"; }
}

pg_down() {
  local bin data
  bin=$(pg_bindir) || return 0
  data=$(pg_datadir)
  if [ -f "$data/postmaster.pid" ]; then
    log "Stopping PostgreSQL."
    as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
  fi
}

# The broker's pid, if the one this profile started is running (its pid file names a live nisshi).
broker_pid() {
  local pidf="$STATE/nisshi/nisshi.pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  pid_is "$pid" nisshi && echo "$pid"
}

# Stops a tansu 0.6.0 broker an earlier version of this script started for this profile (it
# would hold the port; its storage in $STATE/tansu stays until `make clean`).
old_tansu_down() {
  local pidf="$STATE/tansu/tansu.pid" pid
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if pid_is "$pid" tansu; then
    log "Stopping the tansu broker an earlier version started (nisshi replaces it)."
    stop_pid "$pid" 10 || true
  fi
  rm -f "$pidf"
}

kafka_up() {
  old_tansu_down
  if port_open "$KAFKA_PORT"; then
    log "A broker is already listening on $KAFKA_BROKERS."
  else
    [ -x "$NISSHI_BIN" ] || die "nisshi is not installed (run scripts/install-deps.sh)"
    mkdir -p "$STATE/nisshi"
    # nisshi reads .env from its working directory; this one has none. Its SQLite URL is
    # relative to the working directory (an absolute one is mangled). setsid: a session of its
    # own, so a terminal's Ctrl-C (SIGINT to the foreground process group) never reaches the
    # broker while the services flush to it; `stack.sh down` stops it.
    log "Starting nisshi $NISSHI_VERSION on $KAFKA_BROKERS (SQLite storage in $STATE/nisshi)."
    (
      cd "$STATE/nisshi"
      exec env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u CLUSTER_ID \
        setsid "$NISSHI_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "sqlite://nisshi.db" >>nisshi.log 2>&1 </dev/null
    ) &
    echo $! >"$STATE/nisshi/nisshi.pid"
    wait_port "$KAFKA_PORT" 60 "nisshi"
  fi
  local existing t name parts
  existing=$("$NISSHI_BIN" topic list --broker "tcp://$KAFKA_BROKERS" 2>/dev/null || true)
  for t in "${TOPICS[@]}"; do
    name=${t%%:*}; parts=${t##*:}
    # `topic list` prints JSON: one {"name":"...", ...} per topic.
    if ! grep -qF -- "\"name\":\"$name\"" <<<"$existing"; then
      "$NISSHI_BIN" topic create "$name" --partitions "$parts" --broker "tcp://$KAFKA_BROKERS" >/dev/null 2>&1 \
        || log "Topic $name: create failed (it may exist already)."
    fi
  done
}

kafka_down() {
  local pid
  old_tansu_down
  if pid=$(broker_pid); then
    log "Stopping nisshi."
    stop_pid "$pid" 10 || true
  fi
  rm -f "$STATE/nisshi/nisshi.pid"
}

write_env() {
  mkdir -p "$STATE"
  cat >"$STATE/stack.env" <<ENV
VIGIL_PROFILE=$PROFILE
PG_ADMIN_URL=$PG_ADMIN_URL
KAFKA_BROKERS=$KAFKA_BROKERS
NISSHI_BIN=$NISSHI_BIN
PG_BINDIR=$(pg_bindir)
PG_DATADIR=$(pg_datadir)
ENV
}

case "${1:-}" in
  up)
    mkdir -p "$STATE"
    pg_up
    kafka_up
    write_env
    log "Stack is up: PostgreSQL $PG_ADMIN_URL, Kafka $KAFKA_BROKERS."
    ;;
  down)
    # The run profile's services first (a `make run` still running, or what a killed one left),
    # so they do not flush into a broker that is going away.
    [ "$PROFILE" = run ] && stop_earlier_run
    kafka_down; pg_down ;;
  down-broker) kafka_down ;;
  down-postgres) pg_down ;;
  status)
    port_open "$PG_PORT" && echo "postgres: up ($PG_HOST:$PG_PORT)" || echo "postgres: down"
    port_open "$KAFKA_PORT" && echo "kafka: up ($KAFKA_BROKERS)" || echo "kafka: down"
    ;;
  env) write_env; cat "$STATE/stack.env" ;;
  *) echo "usage: VIGIL_PROFILE=run|test $0 up|down|status|env" >&2; exit 2 ;;
esac
