#!/usr/bin/env bash
# The local stack without Docker: a PostgreSQL cluster and a tansu broker owned by the project.
# Usage: VIGIL_PROFILE=run|test scripts/stack.sh up|down|status|env
# "up" is idempotent: what already runs is reused. "down" stops what "up" started.
source "$(dirname "$0")/lib.sh"

# Topics and partition counts (tansu does not auto-create topics).
TOPICS=("transactions:6" "tx-partials:1" "tx-minute:3" "anomalies:3" "detector-checkpoints:6" "detector-merge-checkpoints:1" "vigil-dead-letter:1")

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
  as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null \
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

kafka_up() {
  if port_open "$KAFKA_PORT"; then
    log "A broker is already listening on $KAFKA_BROKERS."
  else
    [ -x "$TANSU_BIN" ] || die "tansu is not installed (run scripts/install-deps.sh)"
    mkdir -p "$STATE/tansu"
    # No client can be a member while the broker is down: drop the membership tansu stored, so
    # a returning static member is not wedged (see tansu-forget-members.sh).
    "$ROOT/scripts/tansu-forget-members.sh" "$STATE/tansu"
    # tansu reads .env from its working directory; this one has none. Its SQLite URL is
    # relative to the working directory (an absolute one is mangled).
    log "Starting tansu on $KAFKA_BROKERS (SQLite storage in $STATE/tansu)."
    (
      cd "$STATE/tansu"
      exec env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u CLUSTER_ID \
        "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine "sqlite://tansu.db" >>tansu.log 2>&1
    ) &
    echo $! >"$STATE/tansu/tansu.pid"
    wait_port "$KAFKA_PORT" 60 "tansu"
  fi
  local existing t name parts
  existing=$("$TANSU_BIN" topic list --broker "tcp://$KAFKA_BROKERS" 2>/dev/null || true)
  for t in "${TOPICS[@]}"; do
    name=${t%%:*}; parts=${t##*:}
    if ! grep -qw -- "$name" <<<"$existing"; then
      "$TANSU_BIN" topic create "$name" --partitions "$parts" --broker "tcp://$KAFKA_BROKERS" >/dev/null 2>&1 \
        || log "Topic $name: create failed (it may exist already)."
    fi
  done
}

kafka_down() {
  local pidf="$STATE/tansu/tansu.pid"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    log "Stopping tansu."
    kill "$(cat "$pidf")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$pidf")" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

write_env() {
  mkdir -p "$STATE"
  cat >"$STATE/stack.env" <<ENV
VIGIL_PROFILE=$PROFILE
PG_ADMIN_URL=$PG_ADMIN_URL
KAFKA_BROKERS=$KAFKA_BROKERS
TANSU_BIN=$TANSU_BIN
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
  down) kafka_down; pg_down ;;
  status)
    port_open "$PG_PORT" && echo "postgres: up ($PG_HOST:$PG_PORT)" || echo "postgres: down"
    port_open "$KAFKA_PORT" && echo "kafka: up ($KAFKA_BROKERS)" || echo "kafka: down"
    ;;
  env) write_env; cat "$STATE/stack.env" ;;
  *) echo "usage: VIGIL_PROFILE=run|test $0 up|down|status|env" >&2; exit 2 ;;
esac
