#!/usr/bin/env bash
# make clean (after make stack-down): removes the project's state: .vigil/ (broker storage, logs,
# the fault suite's runs, run.env) and the PostgreSQL clusters this checkout made for both
# profiles. Keeps target/ and the cache ($CACHE: the nisshi binary, the Python venv).
source "$(dirname "$0")/lib.sh"

for profile in run test; do
  dir=$(VIGIL_PROFILE=$profile bash -c 'source "$1/scripts/lib.sh"; pg_datadir' _ "$ROOT")
  port=$(VIGIL_PROFILE=$profile bash -c 'source "$1/scripts/lib.sh"; echo "$PG_PORT"' _ "$ROOT")
  if [ -f "$dir/postmaster.pid" ] && port_open "$port"; then
    die "PostgreSQL of the $profile profile is still running ($dir): run 'make stack-down' first"
  fi
  if [ -d "$dir" ]; then
    log "Removing the $profile profile's PostgreSQL cluster ($dir)."
    rm -rf "$dir"
  fi
done
if [ -d "$ROOT/.vigil" ]; then
  log "Removing $ROOT/.vigil."
  rm -rf "$ROOT/.vigil"
fi
log "Clean. (The build cache $CACHE and target/ are kept.)"
