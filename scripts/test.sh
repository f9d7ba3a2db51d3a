#!/usr/bin/env bash
# make test: installs what is missing, starts the test stack on its own ports (never the one
# `make run` uses), and runs every test of the workspace against it.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p vigil-producer).
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

start=$(date +%s)
"$ROOT/scripts/install-deps.sh" --with-python --with-prometheus --no-tansu

# On a fresh machine the broker's one-time build (about 11 min) runs beside the workspace's:
# each has long stretches that keep only one core busy. Its output goes to a log.
tansu_pid=""
if [ ! -x "$TANSU_BIN" ]; then
  tansu_log="$CACHE/tansu-install.log"
  log "Building the tansu broker in the background (log: $tansu_log)."
  "$ROOT/scripts/install-deps.sh" --only-tansu >"$tansu_log" 2>&1 &
  tansu_pid=$!
fi
tansu_done() {
  [ -n "$tansu_pid" ] || return 0
  if ! wait "$tansu_pid"; then
    tail -n 40 "$tansu_log" >&2 || true
    die "the tansu build failed (log: $tansu_log)"
  fi
  tansu_pid=""
  log "tansu is built."
}

cd "$ROOT"
log "Building the workspace and its tests."
if ! cargo build --workspace --all-targets --locked; then
  [ -n "$tansu_pid" ] && kill "$tansu_pid" 2>/dev/null
  die "cargo build failed"
fi
tansu_done
"$ROOT/scripts/stack.sh" up
export_test_env

# Each test makes its own database; drop those earlier runs left behind.
for db in $(psql "$PG_ADMIN_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'vigil\_test\_%'"); do
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
done
log "Running the tests."
# `-p NAME` selects packages; otherwise the whole workspace (`--exclude NAME` works with it).
scope=(--workspace)
for a in "$@"; do case "$a" in -p|--package|-p*|--package=*) scope=() ;; esac; done
cargo test "${scope[@]}" --locked --no-fail-fast "$@" -- --test-threads="${VIGIL_TEST_THREADS:-4}"
log "All tests passed in $(( $(date +%s) - start )) s."
